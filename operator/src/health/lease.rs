//! The probe of a leader-elected component, kube-controller-manager or kube-scheduler:
//! its leader-election Lease ([`CONTROLLER_MANAGER_LEASE`], [`SCHEDULER_LEASE`] in the
//! tenant's `kube-system`) must be renewed on time, by one of the component's own pods.
//! A controller manager that runs but cannot renew (wedged, or cut off from the
//! apiserver) stops reconciling the tenant's workloads, a scheduler stops binding its
//! pods; their pods still look Ready.
//!
//! Who holds the Lease matters as much as when it was renewed. A tenant restored from
//! an etcd snapshot starts with the source tenant's Leases, held by the source's pods:
//! fresh for up to `leaseDuration` after the snapshot, so the Lease looked healthy while
//! the new controller manager had not led at all, and the new pods waited out the
//! foreign Lease before they could lead. Any Lease held by an identity that is not a
//! pod of the component (a ghost) blocks the real pods the same way, for as long as its
//! `leaseDurationSeconds` says. So a Lease held by a stranger is unhealthy whatever its
//! age ([`verdict`]), and the pass deletes it ([`release_for`] decides, [`release`]
//! sends the DELETE), so the component's pods take it on their next try (2 s).

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

/// The verdict on a Lease's freshness at `now` (pure). Whether its holder is one of
/// the component's pods is [`verdict`]'s to judge; a Lease held by nobody is unhealthy.
pub fn freshness(lease: &Lease, now: Timestamp) -> ProbeOutcome {
    let Some(spec) = &lease.spec else {
        return ProbeOutcome::Unhealthy("leader Lease has no spec".into());
    };
    // A leader that steps down empties the identity: nobody leads until a pod takes it.
    let Some(holder) = spec.holder_identity.as_deref().filter(|holder| !holder.is_empty()) else {
        return ProbeOutcome::Unhealthy("leader Lease held by nobody".into());
    };
    let Some(renewed) = spec.renew_time.as_ref().map(|time| time.0) else {
        return ProbeOutcome::Unhealthy(format!("leader Lease held by {holder} was never renewed"));
    };
    let duration = spec
        .lease_duration_seconds
        .and_then(|seconds| u64::try_from(seconds).ok())
        .map_or(DEFAULT_LEASE_DURATION, Duration::from_secs);
    // A renewal "in the future" (clock skew) is as fresh as one right now.
    let age = Duration::try_from(now.duration_since(renewed)).unwrap_or_default();
    let holder_short = holder_pod(holder);
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

/// The pod name in a leader-election identity: kube-controller-manager and
/// kube-scheduler identify as `<hostname>_<uuid>`, and a pod's hostname is its name.
pub fn holder_pod(identity: &str) -> &str {
    identity.split('_').next().unwrap_or(identity)
}

/// The holder of `lease` when it is someone, but none of `pods`, the names of the
/// component's pods (pure).
///
/// Judged against the pods the operator sees right now, which a Deployment roll
/// replaces; why that does not flap the condition nor disturb a roll:
/// - `pods` are every pod of the component, terminating ones included, so a leader
///   that is shutting down is still the component's own;
/// - a pod object disappears only after the kubelet stopped its containers, so a
///   holder whose pod is gone renews no more: its Lease only makes the new pod wait
///   out `leaseDuration` (15 s). Releasing it shortens the roll's leaderless gap;
/// - a Ready condition turns False only after two unhealthy probes spanning two
///   intervals (20 s, see [`super::debounce`]); a roll's dead holder lasts until the
///   next pass releases it, and the new pod takes the Lease within its 2 s retry;
/// - a Lease deleted under a live leader anyway (a pod not in the operator's cache
///   yet) costs nothing: client-go's leader finds it missing on its next renewal and
///   creates it again, still the leader. And the deletion is conditioned on the
///   resourceVersion the probe read: a Lease renewed or taken since is never deleted.
///
/// Waiting until no current pod could plausibly hold the Lease (say, until it
/// expires) was the other choice; it would keep the restored Lease's false positive
/// and the new pods' wait, the two things this check is for.
pub fn foreign_holder<'a>(lease: &'a Lease, pods: &[String]) -> Option<&'a str> {
    let holder = lease.spec.as_ref()?.holder_identity.as_deref().filter(|holder| !holder.is_empty())?;
    let pod = holder_pod(holder);
    (!pods.iter().any(|name| name == pod)).then_some(holder)
}

/// The verdict on `lease`, the Lease of `component`, at `now` (pure): unhealthy when
/// held by a stranger to `pods` (the names of the component's pods; `None` when they
/// could not be listed, and only freshness counts), otherwise its [`freshness`].
pub fn verdict(
    lease: &Lease,
    component: LeaderLease,
    pods: Option<&[String]>,
    now: Timestamp,
) -> ProbeOutcome {
    match pods.and_then(|pods| foreign_holder(lease, pods)) {
        // No age here either: the same stranger gives the same message on every probe.
        Some(holder) => ProbeOutcome::Unhealthy(format!(
            "leader Lease held by {}, which is not a {} pod of this tenant",
            holder_pod(holder),
            component.holder
        )),
        None => freshness(lease, now),
    }
}

/// A Lease held by a stranger to its component, which the pass deletes ([`release`])
/// so that the component's own pods can take it at once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseRelease {
    /// Which Lease.
    pub lease: LeaderLease,
    /// Its `holderIdentity` when read.
    pub holder: String,
    /// Its `resourceVersion` when read: the deletion's precondition, so a Lease a real
    /// pod renewed or took since is never deleted.
    pub resource_version: String,
    /// The tenant apiserver Service's address it was read through.
    pub address: SocketAddr,
}

/// The release `lease` (the Lease of `component`, read through `address`) calls for:
/// one when its holder is a stranger to `pods` (see [`foreign_holder`]) and it has a
/// resourceVersion to condition the deletion on (pure).
pub fn release_for(
    component: LeaderLease,
    lease: &Lease,
    pods: &[String],
    address: SocketAddr,
) -> Option<LeaseRelease> {
    let holder = foreign_holder(lease, pods)?;
    let resource_version = lease.metadata.resource_version.clone().filter(|version| !version.is_empty())?;
    Some(LeaseRelease { lease: component, holder: holder.to_string(), resource_version, address })
}

/// What a release found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Released {
    /// The Lease was deleted.
    Deleted,
    /// It was gone already.
    Gone,
    /// It changed since the probe read it (renewed or taken): kept.
    Changed,
}

/// Deletes the Lease `release` names through the tenant apiserver's Service, as the
/// admin user, on the condition that it is still the version the probe read.
pub async fn release(
    admin: &TlsClient,
    server_name: &str,
    release: &LeaseRelease,
    timeout: Duration,
) -> Result<Released, String> {
    let body = delete_options(&release.resource_version);
    let path = lease_path(release.lease);
    match admin.request(release.address, server_name, Method::DELETE, &path, Some(&body), timeout).await {
        Err(error) => Err(format!("cannot delete the leader Lease: {error}")),
        Ok(response) => release_outcome(&response),
    }
}

/// The body of the DELETE: a precondition on `resource_version`.
fn delete_options(resource_version: &str) -> String {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "DeleteOptions",
        "preconditions": {"resourceVersion": resource_version},
    })
    .to_string()
}

/// What the apiserver's answer to the DELETE says (pure).
fn release_outcome(response: &Response) -> Result<Released, String> {
    match response.status {
        StatusCode::OK | StatusCode::ACCEPTED => Ok(Released::Deleted),
        StatusCode::NOT_FOUND => Ok(Released::Gone),
        // A failed precondition: the Lease was written since it was read.
        StatusCode::CONFLICT => Ok(Released::Changed),
        status => {
            Err(format!("cannot delete the leader Lease: HTTP {}: {}", status.as_u16(), response.summary()))
        }
    }
}

/// The Lease's path on the tenant apiserver.
fn lease_path(lease: LeaderLease) -> String {
    format!("/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases/{}", lease.name)
}

/// What a Lease probe found: the verdict, and the release the pass should send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseProbe {
    /// The verdict on the component.
    pub outcome: ProbeOutcome,
    /// Set when a stranger holds the Lease (see [`release_for`]).
    pub release: Option<LeaseRelease>,
}

impl LeaseProbe {
    fn outcome(outcome: ProbeOutcome) -> Self {
        Self { outcome, release: None }
    }
}

/// Reads `lease` from the tenant apiserver's Service at `address` as the admin user
/// (`admin`: the credentials of the admin kubeconfig) and judges it against `pods`,
/// the names of the component's pods (see [`verdict`]). One plain HTTPS
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
    pods: Option<&[String]>,
    now: Timestamp,
    timeout: Duration,
) -> LeaseProbe {
    match admin.request(address, server_name, Method::GET, &lease_path(lease), None, timeout).await {
        Err(error) => {
            LeaseProbe::outcome(ProbeOutcome::Inconclusive(format!("cannot read the leader Lease: {error}")))
        }
        Ok(response) => judge_response(&response, lease, pods, address, now),
    }
}

/// The verdict on the apiserver's answer to the GET of `lease` (pure).
fn judge_response(
    response: &Response,
    lease: LeaderLease,
    pods: Option<&[String]>,
    address: SocketAddr,
    now: Timestamp,
) -> LeaseProbe {
    let outcome = match response.status {
        StatusCode::OK => match serde_json::from_slice::<Lease>(&response.body) {
            Ok(read) => {
                return LeaseProbe {
                    outcome: verdict(&read, lease, pods, now),
                    release: pods.and_then(|pods| release_for(lease, &read, pods, address)),
                };
            }
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
    };
    LeaseProbe::outcome(outcome)
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

    const ADDRESS: SocketAddr =
        SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 96, 0, 10)), 6443);

    /// The pods of a tenant whose controller manager is the one [`lease`] names.
    fn own_pods() -> Vec<String> {
        vec!["team-a-controller-manager-5f7c".into(), "team-a-controller-manager-9d1e".into()]
    }

    fn held_by(holder: &str, version: Option<&str>) -> Lease {
        let mut lease = lease(Some(0), Some(3600));
        lease.metadata.resource_version = version.map(str::to_string);
        if let Some(spec) = lease.spec.as_mut() {
            spec.holder_identity = Some(holder.into());
        }
        lease
    }

    fn judge(status: StatusCode, body: &str, lease: LeaderLease, now: Timestamp) -> ProbeOutcome {
        let pods = own_pods();
        judge_response(&response(status, body), lease, Some(&pods), ADDRESS, now).outcome
    }

    #[test]
    fn the_apiserver_answer_decides_between_fresh_missing_and_unknown() {
        let cm = CONTROLLER_MANAGER_LEASE;
        let lease = serde_json::to_string(&lease(Some(0), Some(15))).expect("serializes");
        assert!(matches!(judge(StatusCode::OK, &lease, cm, at(3)), ProbeOutcome::Healthy(_)));
        assert!(matches!(judge(StatusCode::OK, &lease, cm, at(60)), ProbeOutcome::Unhealthy(_)));
        assert_eq!(
            judge(StatusCode::NOT_FOUND, "{}", cm, at(3)),
            ProbeOutcome::Unhealthy("no leader Lease: the controller manager never became leader".into())
        );
        assert_eq!(
            judge(StatusCode::NOT_FOUND, "{}", SCHEDULER_LEASE, at(3)),
            ProbeOutcome::Unhealthy("no leader Lease: the scheduler never became leader".into())
        );
        assert_eq!(
            judge(StatusCode::FORBIDDEN, "forbidden\n", cm, at(3)),
            ProbeOutcome::Inconclusive("cannot read the leader Lease: HTTP 403: forbidden".into())
        );
        assert!(matches!(
            judge(StatusCode::OK, "not json", SCHEDULER_LEASE, at(3)),
            ProbeOutcome::Inconclusive(_)
        ));
    }

    #[test]
    fn a_lease_held_by_a_stranger_is_unhealthy_however_fresh_and_is_released() {
        let cm = CONTROLLER_MANAGER_LEASE;
        let ghost = held_by("ghost_0", Some("4711"));
        let expected = ProbeOutcome::Unhealthy(
            "leader Lease held by ghost, which is not a controller manager pod of this tenant".into(),
        );
        assert_eq!(verdict(&ghost, cm, Some(&own_pods()), at(1)), expected);
        assert_eq!(
            verdict(&ghost, cm, Some(&own_pods()), at(7)),
            expected,
            "no age in the message: a steady status is not rewritten"
        );
        // A restored tenant: the Lease of the source tenant's pod, renewed a second ago.
        let restored = held_by("team-src-controller-manager-77b9_5e0c-41aa", Some("12"));
        assert!(matches!(
            verdict(&restored, cm, Some(&own_pods()), at(1)),
            ProbeOutcome::Unhealthy(message) if message.contains("team-src-controller-manager-77b9, which is not")
        ));

        let body = serde_json::to_string(&ghost).expect("serializes");
        let pods = own_pods();
        let probe = judge_response(&response(StatusCode::OK, &body), cm, Some(&pods), ADDRESS, at(1));
        assert_eq!(probe.outcome, expected);
        assert_eq!(
            probe.release,
            Some(LeaseRelease {
                lease: cm,
                holder: "ghost_0".into(),
                resource_version: "4711".into(),
                address: ADDRESS,
            })
        );
    }

    #[test]
    fn a_lease_held_by_one_of_the_components_pods_is_judged_by_its_age_and_kept() {
        let cm = CONTROLLER_MANAGER_LEASE;
        // Either pod of a roll, the one going as much as the one coming.
        for holder in ["team-a-controller-manager-5f7c_0d3b", "team-a-controller-manager-9d1e_77aa"] {
            let lease = held_by(holder, Some("5"));
            assert!(verdict(&lease, cm, Some(&own_pods()), at(1)).is_healthy(), "{holder}");
            assert_eq!(release_for(cm, &lease, &own_pods(), ADDRESS), None, "{holder}");
        }
        // A pod whose name merely starts like the holder's is another pod.
        let lease = held_by("team-a-controller-manager-5f7c-x_0d3b", Some("5"));
        assert!(release_for(cm, &lease, &own_pods(), ADDRESS).is_some());
    }

    #[test]
    fn without_the_pods_only_freshness_counts_and_nothing_is_released() {
        let cm = CONTROLLER_MANAGER_LEASE;
        let ghost = held_by("ghost_0", Some("4711"));
        assert!(verdict(&ghost, cm, None, at(1)).is_healthy());
        let body = serde_json::to_string(&ghost).expect("serializes");
        let probe = judge_response(&response(StatusCode::OK, &body), cm, None, ADDRESS, at(1));
        assert_eq!(probe.release, None, "pods not listed: no stranger can be told apart");
        // Listed but none running (scaled to zero, a restore before its pods exist): a stranger.
        assert!(release_for(cm, &ghost, &[], ADDRESS).is_some());
    }

    #[test]
    fn a_lease_without_holder_or_version_is_not_released() {
        let cm = CONTROLLER_MANAGER_LEASE;
        assert_eq!(release_for(cm, &held_by("", Some("9")), &own_pods(), ADDRESS), None, "released already");
        assert_eq!(release_for(cm, &held_by("ghost_0", None), &own_pods(), ADDRESS), None, "no precondition");
        assert_eq!(release_for(cm, &Lease::default(), &own_pods(), ADDRESS), None);
        assert_eq!(
            verdict(&held_by("", Some("9")), cm, Some(&own_pods()), at(1)),
            ProbeOutcome::Unhealthy("leader Lease held by nobody".into()),
            "a leader that stepped down leads no more"
        );
    }

    #[test]
    fn the_release_is_conditioned_on_the_version_read() {
        let body: serde_json::Value = serde_json::from_str(&delete_options("4711")).expect("json");
        assert_eq!(body["kind"], "DeleteOptions");
        assert_eq!(body["preconditions"]["resourceVersion"], "4711");
        assert_eq!(release_outcome(&response(StatusCode::OK, "{}")), Ok(Released::Deleted));
        assert_eq!(release_outcome(&response(StatusCode::NOT_FOUND, "{}")), Ok(Released::Gone));
        assert_eq!(
            release_outcome(&response(StatusCode::CONFLICT, "Precondition failed")),
            Ok(Released::Changed),
            "renewed or taken since it was read: kept"
        );
        assert_eq!(
            release_outcome(&response(StatusCode::FORBIDDEN, "forbidden")),
            Err("cannot delete the leader Lease: HTTP 403: forbidden".into())
        );
    }

    #[test]
    fn the_pod_is_the_identity_before_the_first_underscore() {
        assert_eq!(holder_pod("team-a-scheduler-6c9d-x2k4_0d3b-11"), "team-a-scheduler-6c9d-x2k4");
        assert_eq!(holder_pod("ghost"), "ghost");
        assert_eq!(holder_pod("a_b_c"), "a");
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
