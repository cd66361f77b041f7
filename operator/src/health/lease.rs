//! The probe of a leader-elected component, kube-controller-manager or kube-scheduler:
//! its leader-election Lease ([`CONTROLLER_MANAGER_LEASE`], [`SCHEDULER_LEASE`] in the
//! tenant's `kube-system`) must be renewed on time. A controller manager that runs
//! but cannot renew (wedged, or cut off from the apiserver) stops reconciling the
//! tenant's workloads, a scheduler stops binding its pods; their pods still look Ready.

use std::net::SocketAddr;
use std::time::Duration;

use hyper::{Method, StatusCode};
use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;

use super::ProbeOutcome;
use crate::transport::{Response, TlsClient};

/// Namespace of the leader Leases in the tenant.
pub const LEASE_NAMESPACE: &str = "kube-system";

/// A leader-election Lease in the tenant's [`LEASE_NAMESPACE`], and who holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaderLease {
    /// The Lease's name, the component's default `--leader-elect-resource-name`.
    pub name: &'static str,
    /// The component that holds it, as the probe's messages name it.
    pub holder: &'static str,
}

/// The kube-controller-manager's Lease.
pub const CONTROLLER_MANAGER_LEASE: LeaderLease =
    LeaderLease { name: "kube-controller-manager", holder: "controller manager" };
/// The kube-scheduler's Lease.
pub const SCHEDULER_LEASE: LeaderLease = LeaderLease { name: "kube-scheduler", holder: "scheduler" };
/// Slack on top of `leaseDurationSeconds`: the holder renews every 2 s and may miss
/// one round under load, and the tenant's and the operator's clocks may differ a little.
pub const FRESHNESS_MARGIN: Duration = Duration::from_secs(10);
/// `leaseDurationSeconds` assumed when the Lease does not say (the default of both
/// kube-controller-manager and kube-scheduler).
const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(15);

/// The verdict on a Lease's freshness at `now` (pure).
pub fn freshness(lease: &Lease, now: Timestamp) -> ProbeOutcome {
    let Some(spec) = &lease.spec else {
        return ProbeOutcome::Unhealthy("leader Lease has no spec".into());
    };
    let holder = spec.holder_identity.as_deref().unwrap_or("nobody");
    let Some(renewed) = spec.renew_time.as_ref().map(|time| time.0) else {
        return ProbeOutcome::Unhealthy(format!("leader Lease held by {holder} was never renewed"));
    };
    let duration = spec
        .lease_duration_seconds
        .and_then(|seconds| u64::try_from(seconds).ok())
        .map_or(DEFAULT_LEASE_DURATION, Duration::from_secs);
    // A renewal "in the future" (clock skew) is as fresh as one right now.
    let age = Duration::try_from(now.duration_since(renewed)).unwrap_or_default();
    let holder_short = holder.split('_').next().unwrap_or(holder);
    // The messages end up in a status condition: no ages in them, or every probe
    // would rewrite the status of a perfectly steady tenant.
    if age <= duration + FRESHNESS_MARGIN {
        ProbeOutcome::Healthy(format!(
            "leader Lease fresh: held by {holder_short}, renewed within its {}s duration",
            duration.as_secs()
        ))
    } else {
        ProbeOutcome::Unhealthy(format!(
            "leader Lease stale: held by {holder_short}, not renewed within its {}s duration",
            duration.as_secs()
        ))
    }
}

/// The Lease's path on the tenant apiserver.
fn lease_path(lease: LeaderLease) -> String {
    format!("/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases/{}", lease.name)
}

/// Reads `lease` from the tenant apiserver's Service at `address` as the admin user
/// (`admin`: the credentials of the admin kubeconfig) and judges it. One plain HTTPS
/// GET on the probes' own transport: building a Kubernetes client from the kubeconfig
/// for every probe parsed it, built a TLS configuration and a pooled HTTP client, and
/// dropped them all ten seconds later, for every tenant. Failing to reach the tenant
/// apiserver is inconclusive: that is the apiserver's failure, already reported by
/// its own probe, and says nothing about the Lease's holder.
pub async fn probe(
    admin: &TlsClient,
    address: SocketAddr,
    server_name: &str,
    lease: LeaderLease,
    now: Timestamp,
    timeout: Duration,
) -> ProbeOutcome {
    match admin.request(address, server_name, Method::GET, &lease_path(lease), None, timeout).await {
        Err(error) => ProbeOutcome::Inconclusive(format!("cannot read the leader Lease: {error}")),
        Ok(response) => judge_response(&response, lease, now),
    }
}

/// The verdict on the apiserver's answer to the GET of `lease` (pure).
fn judge_response(response: &Response, lease: LeaderLease, now: Timestamp) -> ProbeOutcome {
    match response.status {
        StatusCode::OK => match serde_json::from_slice::<Lease>(&response.body) {
            Ok(lease) => freshness(&lease, now),
            Err(error) => ProbeOutcome::Inconclusive(format!("cannot read the leader Lease: {error}")),
        },
        StatusCode::NOT_FOUND => {
            ProbeOutcome::Unhealthy(format!("no leader Lease: the {} never became leader", lease.holder))
        }
        status => ProbeOutcome::Inconclusive(format!(
            "cannot read the leader Lease: HTTP {}: {}",
            status.as_u16(),
            response.summary()
        )),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

    use super::*;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_750_000_000 + second).expect("valid")
    }

    fn lease(renewed: Option<i64>, duration: Option<i32>) -> Lease {
        Lease {
            spec: Some(LeaseSpec {
                holder_identity: Some("team-a-controller-manager-5f7c_0d3b".into()),
                renew_time: renewed.map(|second| MicroTime(at(second))),
                lease_duration_seconds: duration,
                ..LeaseSpec::default()
            }),
            ..Lease::default()
        }
    }

    fn response(status: StatusCode, body: &str) -> Response {
        Response { status, body: hyper::body::Bytes::from(body.to_string()) }
    }

    #[test]
    fn the_path_names_each_components_lease() {
        assert_eq!(
            lease_path(CONTROLLER_MANAGER_LEASE),
            "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/kube-controller-manager"
        );
        assert_eq!(
            lease_path(SCHEDULER_LEASE),
            "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/kube-scheduler"
        );
    }

    #[test]
    fn the_apiserver_answer_decides_between_fresh_missing_and_unknown() {
        let cm = CONTROLLER_MANAGER_LEASE;
        let lease = serde_json::to_string(&lease(Some(0), Some(15))).expect("serializes");
        assert!(matches!(
            judge_response(&response(StatusCode::OK, &lease), cm, at(3)),
            ProbeOutcome::Healthy(_)
        ));
        assert!(matches!(
            judge_response(&response(StatusCode::OK, &lease), cm, at(60)),
            ProbeOutcome::Unhealthy(_)
        ));
        assert_eq!(
            judge_response(&response(StatusCode::NOT_FOUND, "{}"), cm, at(3)),
            ProbeOutcome::Unhealthy("no leader Lease: the controller manager never became leader".into())
        );
        assert_eq!(
            judge_response(&response(StatusCode::NOT_FOUND, "{}"), SCHEDULER_LEASE, at(3)),
            ProbeOutcome::Unhealthy("no leader Lease: the scheduler never became leader".into())
        );
        assert_eq!(
            judge_response(&response(StatusCode::FORBIDDEN, "forbidden\n"), cm, at(3)),
            ProbeOutcome::Inconclusive("cannot read the leader Lease: HTTP 403: forbidden".into())
        );
        assert!(matches!(
            judge_response(&response(StatusCode::OK, "not json"), SCHEDULER_LEASE, at(3)),
            ProbeOutcome::Inconclusive(_)
        ));
    }

    #[test]
    fn renewed_within_duration_plus_margin_is_fresh() {
        assert_eq!(
            freshness(&lease(Some(0), Some(15)), at(3)),
            ProbeOutcome::Healthy(
                "leader Lease fresh: held by team-a-controller-manager-5f7c, renewed within its 15s duration"
                    .into()
            )
        );
        assert_eq!(
            freshness(&lease(Some(0), Some(15)), at(3)),
            freshness(&lease(Some(0), Some(15)), at(9)),
            "the message carries no age, so a steady tenant's status does not change between probes"
        );
        assert!(
            matches!(freshness(&lease(Some(0), Some(15)), at(25)), ProbeOutcome::Healthy(_)),
            "15 + 10 s"
        );
    }

    #[test]
    fn renewed_longer_ago_is_stale() {
        assert_eq!(
            freshness(&lease(Some(0), Some(15)), at(26)),
            ProbeOutcome::Unhealthy(
                "leader Lease stale: held by team-a-controller-manager-5f7c, not renewed within its 15s duration"
                    .into()
            )
        );
        assert!(matches!(freshness(&lease(Some(0), Some(60)), at(69)), ProbeOutcome::Healthy(_)));
        assert!(matches!(freshness(&lease(Some(0), Some(60)), at(71)), ProbeOutcome::Unhealthy(_)));
    }

    #[test]
    fn missing_duration_uses_the_default_and_future_renewals_are_fresh() {
        assert!(matches!(freshness(&lease(Some(0), None), at(25)), ProbeOutcome::Healthy(_)));
        assert!(matches!(freshness(&lease(Some(0), None), at(26)), ProbeOutcome::Unhealthy(_)));
        assert!(matches!(freshness(&lease(Some(0), Some(-5)), at(26)), ProbeOutcome::Unhealthy(_)));
        assert!(
            matches!(freshness(&lease(Some(30), Some(15)), at(0)), ProbeOutcome::Healthy(_)),
            "clock skew"
        );
    }

    #[test]
    fn never_renewed_or_empty_lease_is_unhealthy() {
        assert!(
            matches!(freshness(&lease(None, Some(15)), at(0)), ProbeOutcome::Unhealthy(m) if m.contains("never renewed"))
        );
        assert!(matches!(freshness(&Lease::default(), at(0)), ProbeOutcome::Unhealthy(_)));
    }
}
