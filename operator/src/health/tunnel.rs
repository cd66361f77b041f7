//! The konnectivity tunnel's probe (condition TunnelReady): how many agents each
//! konnectivity-server beside an apiserver has, against how many Ready nodes the tenant
//! has. Each server reports its agents on its health port's `/metrics`
//! (`konnectivity_network_proxy_server_ready_backend_connections`, one per connected
//! agent); the nodes come from the tenant apiserver. Every server needs an agent of every
//! node: the apiserver behind it reaches a node only through that node's agent.
//!
//! [`verdict`] is pure; [`probe`] does the requests.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hyper::{Method, StatusCode};
use k8s_openapi::api::core::v1::{Node, Pod};

use super::ProbeOutcome;
use crate::resources::konnectivity::{AGENT_PORT, HEALTH_PORT, SERVER_CONTAINER};
use crate::transport::TlsClient;

/// The gauge of connected agents on a server's `/metrics`.
pub const AGENTS_METRIC: &str = "konnectivity_network_proxy_server_ready_backend_connections";
/// Bound on a `/metrics` answer (a server's is a few KiB).
const MAX_METRICS_BYTES: usize = 1 << 20;

/// A konnectivity-server to ask: the apiserver pod it runs in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerTarget {
    /// The apiserver pod's name.
    pub pod: String,
    /// Its address.
    pub ip: IpAddr,
}

/// The servers among the tenant's apiserver `pods` (pure): running pods with a started
/// konnectivity-server container; none when the tenant runs no tunnel.
pub fn servers(pods: &[Pod]) -> Vec<ServerTarget> {
    let mut servers: Vec<ServerTarget> =
        pods.iter()
            .filter(|pod| pod.metadata.deletion_timestamp.is_none())
            .filter_map(|pod| {
                let status = pod.status.as_ref()?;
                let started =
                    status.container_statuses.iter().flatten().any(|container| {
                        container.name == SERVER_CONTAINER && container.started == Some(true)
                    });
                (started && status.phase.as_deref() == Some("Running")).then_some(())?;
                Some(ServerTarget {
                    pod: pod.metadata.name.clone()?,
                    ip: status.pod_ip.as_deref()?.parse().ok()?,
                })
            })
            .collect();
    servers.sort_by(|a, b| a.pod.cmp(&b.pod));
    servers
}

/// The agents a server's `/metrics` text reports (pure); `None` without the gauge.
pub fn agents_in_metrics(text: &str) -> Option<u64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            let name = name.split('{').next()?.trim();
            (name == AGENTS_METRIC).then(|| value.trim().parse::<f64>().ok())?
        })
        .map(|value| value.max(0.0) as u64)
}

/// TunnelReady's verdict (pure) from the Ready `nodes` and each server's agents (or why
/// they could not be read). Healthy when every server has at least one agent per node;
/// with no node, healthy with nothing to carry. The messages name each server's count,
/// never a time, so a steady tunnel never rewrites its condition.
pub fn verdict(nodes: usize, servers: &[(String, Result<u64, String>)]) -> ProbeOutcome {
    if servers.is_empty() {
        return ProbeOutcome::Inconclusive("no konnectivity-server is running yet".into());
    }
    if let Some((pod, Err(error))) = servers.iter().find(|(_, agents)| agents.is_err()) {
        return ProbeOutcome::Inconclusive(format!("cannot read the agents of the server in {pod}: {error}"));
    }
    let counts: Vec<String> = servers
        .iter()
        .map(|(pod, agents)| format!("{pod}: {} agent(s)", agents.as_ref().copied().unwrap_or_default()))
        .collect();
    let short =
        servers.iter().filter(|(_, agents)| agents.as_ref().is_ok_and(|count| (*count as usize) < nodes));
    if nodes == 0 {
        ProbeOutcome::Healthy(format!("no node has joined; {} server(s) wait for agents", servers.len()))
    } else if short.count() == 0 {
        ProbeOutcome::Healthy(format!(
            "agents of {nodes} node(s) connected to every server ({})",
            counts.join(", ")
        ))
    } else {
        ProbeOutcome::Unhealthy(format!(
            "agents missing: {nodes} node(s), {}; the nodes must reach the tenant endpoint's tunnel port \
             (Service port konnectivity, {AGENT_PORT})",
            counts.join(", ")
        ))
    }
}

/// Asks each server for its agents and the tenant apiserver (at `address`, as the admin)
/// for its Ready nodes, then judges with [`verdict`].
pub async fn probe(
    admin: &TlsClient,
    address: SocketAddr,
    server_name: &str,
    servers: &[ServerTarget],
    timeout: Duration,
) -> ProbeOutcome {
    let scrapes = futures::future::join_all(servers.iter().map(|server| async move {
        (server.pod.clone(), agents_of(SocketAddr::new(server.ip, HEALTH_PORT as u16), timeout).await)
    }));
    let nodes = ready_nodes(admin, address, server_name, timeout);
    let (scrapes, nodes) = futures::join!(scrapes, nodes);
    match nodes {
        Ok(nodes) => verdict(nodes, &scrapes),
        Err(error) => ProbeOutcome::Inconclusive(format!("cannot count the tenant's nodes: {error}")),
    }
}

async fn ready_nodes(
    admin: &TlsClient,
    address: SocketAddr,
    server_name: &str,
    timeout: Duration,
) -> Result<usize, String> {
    let response = admin
        .request(address, server_name, Method::GET, "/api/v1/nodes", None, timeout)
        .await
        .map_err(|error| error.to_string())?;
    if response.status != StatusCode::OK {
        return Err(format!("HTTP {}: {}", response.status.as_u16(), response.summary()));
    }
    let nodes: kube::core::ObjectList<Node> =
        serde_json::from_slice(&response.body).map_err(|error| error.to_string())?;
    Ok(nodes
        .items
        .iter()
        .filter(|node| {
            node.status.as_ref().and_then(|status| status.conditions.as_ref()).is_some_and(|conditions| {
                conditions.iter().any(|condition| condition.type_ == "Ready" && condition.status == "True")
            })
        })
        .count())
}

/// `GET /metrics` over plain HTTP/1.0 (the health port serves no TLS), within `timeout`.
async fn agents_of(address: SocketAddr, timeout: Duration) -> Result<u64, String> {
    // tokio's readiness calls (its `net` feature only): the request is one small write,
    // the answer is read until the server closes (HTTP/1.0).
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(address).await?;
        let request = b"GET /metrics HTTP/1.0\r\nHost: konnectivity-server\r\n\r\n";
        let mut written = 0;
        while written < request.len() {
            stream.writable().await?;
            match stream.try_write(&request[written..]) {
                Ok(count) => written += count,
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(error) => return Err(error),
            }
        }
        let mut body = Vec::new();
        let mut buffer = [0u8; 16 * 1024];
        while body.len() < MAX_METRICS_BYTES {
            stream.readable().await?;
            match stream.try_read(&mut buffer) {
                Ok(0) => break,
                Ok(count) => body.extend_from_slice(&buffer[..count]),
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(error) => return Err(error),
            }
        }
        Ok::<_, std::io::Error>(body)
    };
    let body = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("{address}: no answer within {}s", timeout.as_secs()))?
        .map_err(|error| format!("{address}: {error}"))?;
    let text = String::from_utf8_lossy(&body);
    if !text.starts_with("HTTP/1.") || !text.lines().next().is_some_and(|line| line.contains(" 200")) {
        return Err(format!("{address}: {}", text.lines().next().unwrap_or("empty answer")));
    }
    agents_in_metrics(&text).ok_or_else(|| format!("{address}: no {AGENTS_METRIC}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agents_gauge_is_read_from_the_metrics_text() {
        let text = "# HELP konnectivity_network_proxy_server_ready_backend_connections Number\n\
                    # TYPE konnectivity_network_proxy_server_ready_backend_connections gauge\n\
                    konnectivity_network_proxy_server_ready_backend_connections 2\n\
                    konnectivity_network_proxy_server_ready_backends{proxy_strategy=\"default\"} 2\n";
        assert_eq!(agents_in_metrics(text), Some(2));
        assert_eq!(agents_in_metrics("other_metric 1\n"), None);
    }

    #[test]
    fn every_server_needs_an_agent_of_every_node() {
        let servers = |counts: &[u64]| -> Vec<(String, Result<u64, String>)> {
            counts.iter().enumerate().map(|(index, count)| (format!("api-{index}"), Ok(*count))).collect()
        };
        assert!(verdict(0, &servers(&[0])).is_healthy(), "no node, nothing to carry");
        let healthy = verdict(2, &servers(&[2, 2]));
        assert_eq!(
            healthy,
            ProbeOutcome::Healthy(
                "agents of 2 node(s) connected to every server (api-0: 2 agent(s), api-1: 2 agent(s))".into()
            )
        );
        let ProbeOutcome::Unhealthy(message) = verdict(2, &servers(&[2, 1])) else {
            panic!("one server short")
        };
        assert!(message.contains("api-1: 1 agent(s)") && message.contains("tunnel port"), "{message}");
        assert!(matches!(verdict(1, &[]), ProbeOutcome::Inconclusive(_)));
        let unreadable = vec![("api-0".to_string(), Err("refused".to_string()))];
        assert!(matches!(verdict(1, &unreadable), ProbeOutcome::Inconclusive(_)));
    }
}
