//! The kube-apiserver probes: `/readyz` through the tenant's Service (what clients
//! see) and `/livez` on each started pod by IP (so one wedged replica is found even
//! while another answers through the Service). Both authenticate with the admin
//! kubeconfig's client certificate and trust only the tenant cluster CA.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hyper::{Method, StatusCode};

use super::ProbeOutcome;
use crate::transport::{Response, TlsClient};

/// What a probe of one apiserver pod found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodProbe {
    /// Pod name.
    pub name: String,
    /// Pod UID: deletion is conditioned on it, so a replacement with the same name is never hit.
    pub uid: String,
    /// `Ok` when `/livez` answered 200, else the one-line failure.
    pub livez: Result<(), String>,
}

/// A started, running apiserver pod to probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodTarget {
    /// Pod name.
    pub name: String,
    /// Pod UID.
    pub uid: String,
    /// Pod IP.
    pub ip: IpAddr,
}

/// `/readyz` through the Service at `address`.
pub async fn probe_service(
    client: &TlsClient,
    address: SocketAddr,
    server_name: &str,
    timeout: Duration,
) -> ProbeOutcome {
    match client.request(address, server_name, Method::GET, "/readyz", None, timeout).await {
        Ok(response) if response.status == StatusCode::OK => ProbeOutcome::Healthy("/readyz ok".into()),
        Ok(response) => ProbeOutcome::Unhealthy(format!("/readyz: {}", failure_summary(&response))),
        Err(error) => ProbeOutcome::Unhealthy(format!("/readyz: {error}")),
    }
}

/// `/livez` on every target, concurrently.
pub async fn probe_pods(
    client: &TlsClient,
    targets: &[PodTarget],
    port: u16,
    server_name: &str,
    timeout: Duration,
) -> Vec<PodProbe> {
    futures::future::join_all(targets.iter().map(|target| async move {
        let address = SocketAddr::new(target.ip, port);
        let livez = match client.request(address, server_name, Method::GET, "/livez", None, timeout).await {
            Ok(response) if response.status == StatusCode::OK => Ok(()),
            Ok(response) => Err(format!("/livez: {}", failure_summary(&response))),
            Err(error) => Err(format!("/livez: {error}")),
        };
        PodProbe { name: target.name.clone(), uid: target.uid.clone(), livez }
    }))
    .await
}

/// The verdict on the apiserver from the Service probe and the pod probes (pure).
pub fn verdict(service: &ProbeOutcome, pods: &[PodProbe]) -> ProbeOutcome {
    let failing: Vec<String> = pods
        .iter()
        .filter_map(|pod| pod.livez.as_ref().err().map(|error| format!("pod {}: {error}", pod.name)))
        .collect();
    match service {
        ProbeOutcome::Healthy(message) if failing.is_empty() => {
            ProbeOutcome::Healthy(format!("{message} through the Service, /livez ok on {} pods", pods.len()))
        }
        ProbeOutcome::Healthy(_) => ProbeOutcome::Unhealthy(failing.join("; ")),
        ProbeOutcome::Unhealthy(message) | ProbeOutcome::Inconclusive(message) => {
            let mut problems = vec![message.clone()];
            problems.extend(failing);
            ProbeOutcome::Unhealthy(problems.join("; "))
        }
    }
}

/// `HTTP <code>` and the failed checks of a `/readyz` or `/livez` answer (lines
/// starting with `[-]`), or the first line of the body when none are listed.
fn failure_summary(response: &Response) -> String {
    let body = String::from_utf8_lossy(&response.body);
    let failed: Vec<&str> = body.lines().map(str::trim).filter(|line| line.starts_with("[-]")).collect();
    let detail = if failed.is_empty() { response.summary() } else { failed.join(", ") };
    format!("HTTP {}: {detail}", response.status.as_u16())
}

#[cfg(test)]
mod tests {
    use hyper::body::Bytes;

    use super::*;

    fn pod(name: &str, livez: Result<(), &str>) -> PodProbe {
        PodProbe { name: name.into(), uid: format!("uid-{name}"), livez: livez.map_err(str::to_string) }
    }

    #[test]
    fn healthy_service_and_pods_are_healthy() {
        let outcome =
            verdict(&ProbeOutcome::Healthy("/readyz ok".into()), &[pod("a", Ok(())), pod("b", Ok(()))]);
        assert_eq!(
            outcome,
            ProbeOutcome::Healthy("/readyz ok through the Service, /livez ok on 2 pods".into())
        );
    }

    #[test]
    fn one_wedged_pod_is_found_while_the_service_answers() {
        let outcome = verdict(
            &ProbeOutcome::Healthy("/readyz ok".into()),
            &[pod("a", Ok(())), pod("b", Err("/livez: no answer from 10.200.0.9:6443 within 2s"))],
        );
        assert_eq!(
            outcome,
            ProbeOutcome::Unhealthy("pod b: /livez: no answer from 10.200.0.9:6443 within 2s".into())
        );
    }

    #[test]
    fn failing_service_is_unhealthy_with_every_problem() {
        let outcome = verdict(
            &ProbeOutcome::Unhealthy("/readyz: HTTP 500: [-]etcd failed".into()),
            &[pod("a", Err("x"))],
        );
        assert_eq!(outcome, ProbeOutcome::Unhealthy("/readyz: HTTP 500: [-]etcd failed; pod a: x".into()));
    }

    #[test]
    fn failure_summary_lists_failed_checks() {
        let body = "[+]ping ok\n[-]etcd failed: reason withheld\n[+]log ok\n[-]poststarthook/rbac failed\nreadyz check failed\n";
        let response = Response { status: StatusCode::INTERNAL_SERVER_ERROR, body: Bytes::from(body) };
        assert_eq!(
            failure_summary(&response),
            "HTTP 500: [-]etcd failed: reason withheld, [-]poststarthook/rbac failed"
        );
        let forbidden =
            Response { status: StatusCode::FORBIDDEN, body: Bytes::from("{\"kind\":\"Status\"}") };
        assert_eq!(failure_summary(&forbidden), "HTTP 403: {\"kind\":\"Status\"}");
    }
}
