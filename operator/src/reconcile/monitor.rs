//! The health monitor: probes every tenant on the probe interval, and the tenants
//! coming up every second, between reconciliations; asks for a reconciliation only
//! when a probe disagrees with the tenant's status or something may need healing.
//!
//! Why a loop of its own: a wedged component changes no object, so no watch event
//! brings its tenant back to the reconciler, and something must look on a timer.
//! That used to be the reconciler itself, requeued every interval. But a full pass
//! reads every owned object (about 20 requests) to find, nearly always, that nothing
//! changed; with many tenants those passes took every concurrency slot, and tenants
//! not applied yet waited behind them (the scale benchmark stalled at ~150 of 1000).
//! A probe reads nothing of the meta cluster: the pods come from the controller's
//! cache and the credentials from the last pass; it only calls the tenant's endpoints.
//!
//! The monitor only reads. Every decision that acts (debouncing, restarting a
//! wedged apiserver pod, replacing an etcd member, maintaining etcd's space,
//! releasing a leader Lease held by a stranger, writing status) stays in the
//! reconciler, which kube-runtime runs once per tenant at a time: two writers
//! deciding from the same history could restart a pod twice.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::channel::mpsc::UnboundedSender;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};

use super::conditions::{ConditionStatus, find_condition, is_condition_true, types};
use super::observe::{OwnedCache, PodsByTenant, read, tenant_pods};
use super::{Context, names_of};
use crate::api::{TenantCluster, TenantClusterStatus};
use crate::etcd::membership;
use crate::health::{EtcdProbe, ProbeOutcome, ProbeReport, apiserver_address, probe_tenant};

/// Tenants probed at once. A probe is mostly waiting on the network (reads of the
/// meta cluster, HTTPS to the tenant with a timeout), so more than the reconciler's
/// bound; low enough that 1000 tenants do not open 1000 connections at once.
pub const PROBE_CONCURRENCY: usize = 32;

/// How often a tenant that is coming up (see [`coming_up`]) is probed.
pub const COMING_UP_INTERVAL: Duration = Duration::from_secs(1);
/// How long after its creation a tenant that is not Ready counts as coming up. Past
/// it, a tenant still not Ready is failing, and is probed at the usual interval.
pub const COMING_UP_WINDOW: Duration = Duration::from_secs(300);

/// Runs until the task is dropped: every `interval` (the probe interval; nothing
/// runs when probes are off), probes each tenant in `store` and sends the ones that
/// need a reconciliation to `trigger`. Between those rounds, probes the tenants that
/// are coming up every [`COMING_UP_INTERVAL`].
pub async fn run(
    ctx: Arc<Context>,
    store: Store<TenantCluster>,
    trigger: UnboundedSender<ObjectRef<TenantCluster>>,
) {
    let Some(interval) = ctx.health_settings.interval else { return };
    let mut ticker = tokio::time::interval(interval.min(COMING_UP_INTERVAL));
    // A round slower than the tick (thousands of tenants) delays the next one rather
    // than starting rounds back to back.
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_full_round: Option<tokio::time::Instant> = None;
    loop {
        let tick = ticker.tick().await;
        let full_round = last_full_round.is_none_or(|at| tick.duration_since(at) >= interval);
        let mut tenants = store.state();
        if full_round {
            last_full_round = Some(tick);
            let live: std::collections::HashSet<(String, String)> = tenants
                .iter()
                .map(|tenant| (tenant.namespace().unwrap_or_default(), tenant.name_any()))
                .collect();
            ctx.probe_credentials
                .retain(|namespace, name| live.contains(&(namespace.to_string(), name.to_string())));
        } else {
            let now = ctx.clock.now();
            tenants.retain(|tenant| coming_up(tenant, now));
        }
        // Left to a namespace-scoped operator (see [`super::scope`]): its monitor probes them.
        tenants.retain(|tenant| ctx.claimed_elsewhere(tenant).is_none());
        if tenants.is_empty() {
            // Most fast rounds: no tenant is coming up, so no pod is worth grouping.
            continue;
        }
        let cache = ctx.owned_cache().await;
        let pods = cache.as_ref().map(|cache| PodsByTenant::from_store(&cache.pods));
        futures::stream::iter(tenants)
            .map(|tenant| check(tenant, cache.as_ref(), pods.as_ref(), &ctx))
            .buffer_unordered(PROBE_CONCURRENCY)
            .for_each(|due| {
                if let Some(key) = due {
                    // Closed only when the controller stopped, and this task with it.
                    let _ = trigger.unbounded_send(key);
                }
                futures::future::ready(())
            })
            .await;
    }
}

/// Whether `tenant` is coming up: created less than [`COMING_UP_WINDOW`] ago and not
/// Ready yet (pure). Its components turn healthy one after another within seconds,
/// and some of those steps change no object the operator watches: an apiserver
/// behind its Service becomes reachable a moment after its pod is Ready, and a
/// controller manager and a scheduler win their first elections seconds after the
/// apiserver serves.
/// Probed only on the usual interval, a new tenant waited up to that interval for
/// its `Ready`. A probe costs no request to the meta cluster, and a pass follows only
/// when it finds something the status does not say yet.
pub fn coming_up(tenant: &TenantCluster, now: jiff::Timestamp) -> bool {
    let young = tenant.meta().creation_timestamp.as_ref().is_some_and(|created| {
        Duration::try_from(now.duration_since(created.0)).unwrap_or_default() < COMING_UP_WINDOW
    });
    let ready =
        tenant.status.as_ref().is_some_and(|status| is_condition_true(&status.conditions, types::READY));
    young && !ready && tenant.meta().deletion_timestamp.is_none()
}

/// Probes one tenant; returns its key when it needs a reconciliation. Its pods come
/// from `pods` (the round's cache, grouped) and its apiserver Service from `cache`,
/// or both by a request outside a controller run; its credentials are those the
/// last pass left (see [`crate::health::ProbeCredentialsCache`]).
async fn check(
    tenant: Arc<TenantCluster>,
    cache: Option<&OwnedCache>,
    pods: Option<&PodsByTenant>,
    ctx: &Context,
) -> Option<ObjectRef<TenantCluster>> {
    if tenant.meta().deletion_timestamp.is_some() {
        return None;
    }
    let status = tenant.status.as_ref()?;
    // While etcd is being scaled the reconciler comes back every few seconds anyway,
    // and probes expecting the old or the new size would both disagree.
    if status.etcd_members.is_some_and(|members| members != tenant.spec.etcd.replicas) {
        return None;
    }
    let names = names_of(&tenant).ok()?;
    let members = status.etcd_members.unwrap_or(tenant.spec.etcd.replicas);
    let pods = match pods {
        Some(pods) => Ok(pods.of(&names)),
        None => tenant_pods(&ctx.client, None, &names).await.map_err(|error| error.to_string()),
    };
    let credentials = ctx.probe_credentials.get(&ctx.client, &names).await;
    let service = read(&ctx.client, cache.map(|cache| &cache.services), &names.namespace, &names.apiserver())
        .await
        .map(|service| apiserver_address(service.as_ref()))
        .map_err(|error| format!("cannot read the apiserver Service: {error}"));
    let mut report = probe_tenant(
        &names,
        &credentials,
        service,
        pods,
        EtcdProbe { members, expected: members },
        ctx.clock.now(),
        ctx.health_settings.timeout,
    )
    .await;
    let broken_member = report.etcd_members.as_ref().is_some_and(|observation| {
        // Broken for any time at all: the reconciler applies the real threshold.
        membership::decide(&names, members, observation, ctx.clock.now(), Duration::ZERO).is_some()
    });
    // A space maintenance step is due (a fragmented member, the NOSPACE alarm): the
    // pass takes it, unless the tenant is paused. Reading the plan also refreshes the
    // etcd space gauges.
    let space_due = report.etcd_members.as_ref().is_some_and(|observation| {
        let (_, _, plan) = super::heal::space_plan(&tenant, &names, observation, ctx);
        plan.step.is_some() && !tenant.spec.paused
    });
    if tenant.spec.paused {
        // Observed only: the pass would release no leader Lease.
        report.lease_releases.clear();
    }
    let reason = reconcile_reason(status, &report, broken_member).or(space_due.then_some("etcd-space"));
    ctx.metrics.record_health_probe(reason);
    if let Some(reason) = reason {
        tracing::debug!(
            namespace = names.namespace,
            name = tenant.name_any(),
            reason,
            "probe asks for a pass"
        );
    }
    reason.map(|_| ObjectRef::from_obj(tenant.as_ref()))
}

/// Why `report` calls for a reconciliation of a tenant whose status is `status`, or
/// `None` when the status already says what the probe saw (pure).
///
/// A pass is due when a conclusive probe disagrees with its component's condition
/// (the pass debounces it, so a single odd probe costs a pass, not a flap), when the
/// tunnel's probe agrees with TunnelReady's status but not with its message (see
/// [`tunnel_message_moved`]), when an
/// apiserver pod fails `/livez` while etcd is healthy (the pass counts how long, and
/// restarts it past the threshold), when a leader Lease is held by a stranger to its
/// component (the pass releases it; the condition may already say False, as a
/// restored tenant's waiting for its first leader does), when an etcd member looks
/// broken while the quorum is healthy (the pass may replace it), and when etcd's
/// cluster ID is known but not recorded yet. A tenant whose etcd does not answer at all calls for none of
/// these on its own: its conditions already say so, and passes could not heal it.
pub fn reconcile_reason(
    status: &TenantClusterStatus,
    report: &ProbeReport,
    broken_etcd_member: bool,
) -> Option<&'static str> {
    let disagrees = |type_: &str, outcome: Option<&ProbeOutcome>| {
        let healthy = match outcome {
            Some(ProbeOutcome::Healthy(_)) => true,
            Some(ProbeOutcome::Unhealthy(_)) => false,
            Some(ProbeOutcome::Inconclusive(_)) | None => return false,
        };
        let shown = find_condition(&status.conditions, type_).map(|condition| condition.status.as_str());
        shown != Some(ConditionStatus::from_bool(healthy).as_str())
    };
    let etcd_healthy = report.etcd.as_ref().is_some_and(ProbeOutcome::is_healthy);
    if disagrees(types::ETCD_READY, report.etcd.as_ref()) {
        Some("etcd")
    } else if disagrees(types::API_SERVER_READY, report.apiserver.as_ref()) {
        Some("apiserver")
    } else if disagrees(types::CONTROLLER_MANAGER_READY, report.controller_manager.as_ref()) {
        Some("controller-manager")
    } else if disagrees(types::SCHEDULER_READY, report.scheduler.as_ref()) {
        Some("scheduler")
    } else if disagrees(types::TUNNEL_READY, report.tunnel.as_ref()) {
        Some("tunnel")
    } else if tunnel_message_moved(status, report.tunnel.as_ref()) {
        Some("tunnel-message")
    } else if etcd_healthy && report.apiserver_pods.iter().any(|pod| pod.livez.is_err()) {
        Some("apiserver-pod")
    } else if !report.lease_releases.is_empty() {
        Some("leader-lease")
    } else if broken_etcd_member {
        Some("etcd-member")
    } else if etcd_healthy && status.etcd_cluster_id.is_none() {
        Some("etcd-cluster-id")
    } else {
        None
    }
}

/// Whether a conclusive tunnel probe `outcome` says something other than TunnelReady's
/// message (pure). That message is the probe's verdict word for word, and names each
/// konnectivity-server with its agents and never a time, so a steady tunnel never
/// differs from it. When it does, the servers or their agents changed while the status
/// held: after an apiserver roll, True kept naming the replaced pod. The pass that
/// followed the roll had seen the new server before its agent connected (0 agents, a
/// candidate the debouncer held), and the next probes agreed with True, so no pass came
/// until the tenant's resync, minutes later.
fn tunnel_message_moved(status: &TenantClusterStatus, outcome: Option<&ProbeOutcome>) -> bool {
    let message = match outcome {
        Some(ProbeOutcome::Healthy(message) | ProbeOutcome::Unhealthy(message)) => message,
        Some(ProbeOutcome::Inconclusive(_)) | None => return false,
    };
    find_condition(&status.conditions, types::TUNNEL_READY).is_some_and(|shown| shown.message != *message)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    use super::*;
    use crate::health::PodProbe;

    fn condition(type_: &str, status: bool) -> Condition {
        Condition {
            type_: type_.into(),
            status: ConditionStatus::from_bool(status).as_str().into(),
            reason: "Test".into(),
            message: String::new(),
            observed_generation: Some(1),
            last_transition_time: Time(jiff::Timestamp::UNIX_EPOCH),
        }
    }

    fn ready_status() -> TenantClusterStatus {
        TenantClusterStatus {
            conditions: vec![
                condition(types::ETCD_READY, true),
                condition(types::API_SERVER_READY, true),
                condition(types::CONTROLLER_MANAGER_READY, true),
                condition(types::SCHEDULER_READY, true),
            ],
            etcd_cluster_id: Some("c1".into()),
            ..TenantClusterStatus::default()
        }
    }

    fn healthy_report() -> ProbeReport {
        let ok = || Some(ProbeOutcome::Healthy("ok".into()));
        ProbeReport {
            etcd: ok(),
            apiserver: ok(),
            controller_manager: ok(),
            scheduler: ok(),
            tunnel: None,
            apiserver_pods: vec![PodProbe { name: "a".into(), uid: "a".into(), livez: Ok(()) }],
            etcd_members: None,
            lease_releases: Vec::new(),
        }
    }

    #[test]
    fn a_tenant_is_coming_up_while_young_and_not_ready() {
        let at = |second: i64| jiff::Timestamp::from_second(1_750_000_000 + second).expect("valid");
        let tenant = |ready: Option<bool>| {
            let mut tenant = TenantCluster::new(
                "team-a",
                serde_json::from_value(serde_json::json!({"version": "1.34.2"})).expect("spec"),
            );
            tenant.metadata.creation_timestamp = Some(Time(at(0)));
            tenant.status = ready.map(|ready| TenantClusterStatus {
                conditions: vec![condition(types::READY, ready)],
                ..TenantClusterStatus::default()
            });
            tenant
        };
        assert!(coming_up(&tenant(None), at(5)), "no status yet");
        assert!(coming_up(&tenant(Some(false)), at(5)));
        assert!(!coming_up(&tenant(Some(true)), at(5)), "Ready");
        assert!(!coming_up(&tenant(Some(false)), at(300)), "past the window: failing, not coming up");
        let mut deleted = tenant(Some(false));
        deleted.metadata.deletion_timestamp = Some(Time(at(4)));
        assert!(!coming_up(&deleted, at(5)), "being deleted");
    }

    #[test]
    fn a_probe_that_agrees_with_the_status_asks_for_nothing() {
        assert_eq!(reconcile_reason(&ready_status(), &healthy_report(), false), None);
    }

    #[test]
    fn a_component_whose_probe_disagrees_asks_for_a_pass() {
        let mut report = healthy_report();
        report.controller_manager = Some(ProbeOutcome::Unhealthy("lease expired".into()));
        assert_eq!(reconcile_reason(&ready_status(), &report, false), Some("controller-manager"));

        let mut report = healthy_report();
        report.scheduler = Some(ProbeOutcome::Unhealthy("no leader Lease".into()));
        assert_eq!(reconcile_reason(&ready_status(), &report, false), Some("scheduler"));
        let mut starting = ready_status();
        starting.conditions[3] = condition(types::SCHEDULER_READY, false);
        assert_eq!(reconcile_reason(&starting, &healthy_report(), false), Some("scheduler"), "it led");

        let mut status = ready_status();
        status.conditions[0] = condition(types::ETCD_READY, false);
        assert_eq!(reconcile_reason(&status, &healthy_report(), false), Some("etcd"), "came up");
        status.conditions.remove(0);
        assert_eq!(reconcile_reason(&status, &healthy_report(), false), Some("etcd"), "never shown");
    }

    #[test]
    fn inconclusive_probes_ask_for_nothing() {
        let mut report = healthy_report();
        report.controller_manager = Some(ProbeOutcome::Inconclusive("apiserver not ready".into()));
        report.scheduler = Some(ProbeOutcome::Inconclusive("apiserver not ready".into()));
        report.apiserver = None;
        assert_eq!(reconcile_reason(&ready_status(), &report, false), None);
    }

    #[test]
    fn a_failing_apiserver_pod_asks_for_a_pass_only_while_etcd_is_healthy() {
        let mut report = healthy_report();
        report.apiserver_pods[0].livez = Err("no answer".into());
        assert_eq!(reconcile_reason(&ready_status(), &report, false), Some("apiserver-pod"));
        let mut status = ready_status();
        status.conditions[0] = condition(types::ETCD_READY, false);
        report.etcd = Some(ProbeOutcome::Unhealthy("no leader".into()));
        assert_eq!(reconcile_reason(&status, &report, false), None, "a restart would not help");
    }

    #[test]
    fn a_tenant_down_and_shown_down_asks_for_nothing() {
        // What the scale benchmark's simulated pods look like: nothing answers.
        let status = TenantClusterStatus {
            conditions: vec![
                condition(types::ETCD_READY, false),
                condition(types::API_SERVER_READY, false),
                condition(types::CONTROLLER_MANAGER_READY, false),
                condition(types::SCHEDULER_READY, false),
            ],
            ..TenantClusterStatus::default()
        };
        let report = ProbeReport {
            etcd: Some(ProbeOutcome::Unhealthy("0 of 1 members answered".into())),
            apiserver: Some(ProbeOutcome::Unhealthy("no route".into())),
            controller_manager: Some(ProbeOutcome::Inconclusive("apiserver not ready".into())),
            scheduler: Some(ProbeOutcome::Inconclusive("apiserver not ready".into())),
            tunnel: None,
            apiserver_pods: vec![PodProbe {
                name: "a".into(),
                uid: "a".into(),
                livez: Err("no route".into()),
            }],
            etcd_members: None,
            lease_releases: Vec::new(),
        };
        assert_eq!(reconcile_reason(&status, &report, false), None);
    }

    #[test]
    fn a_leader_lease_held_by_a_stranger_asks_for_a_pass_even_when_the_condition_says_false() {
        use crate::health::lease::{CONTROLLER_MANAGER_LEASE, LeaseRelease};
        // A restored tenant: its controller manager never led, and the probe agrees.
        let mut status = ready_status();
        status.conditions[2] = condition(types::CONTROLLER_MANAGER_READY, false);
        let mut report = healthy_report();
        report.controller_manager = Some(ProbeOutcome::Unhealthy("held by a stranger".into()));
        assert_eq!(reconcile_reason(&status, &report, false), None);
        report.lease_releases.push(LeaseRelease {
            lease: CONTROLLER_MANAGER_LEASE,
            holder: "team-src-controller-manager-77b9_5e0c".into(),
            resource_version: "12".into(),
            address: "10.96.0.10:6443".parse().expect("address"),
        });
        assert_eq!(reconcile_reason(&status, &report, false), Some("leader-lease"));
    }

    #[test]
    fn a_tunnel_probe_naming_other_servers_asks_for_a_pass_though_the_status_holds() {
        let before_the_roll = "agents of 1 node(s) connected to every server (api-old: 1 agent(s))";
        let after_the_roll = "agents of 1 node(s) connected to every server (api-new: 1 agent(s))";
        let mut status = ready_status();
        status
            .conditions
            .push(Condition { message: before_the_roll.into(), ..condition(types::TUNNEL_READY, true) });
        let mut report = healthy_report();
        report.tunnel = Some(ProbeOutcome::Healthy(before_the_roll.into()));
        assert_eq!(reconcile_reason(&status, &report, false), None, "a steady tunnel");
        report.tunnel = Some(ProbeOutcome::Healthy(after_the_roll.into()));
        assert_eq!(reconcile_reason(&status, &report, false), Some("tunnel-message"));
        report.tunnel = Some(ProbeOutcome::Inconclusive("the tenant apiserver is not ready".into()));
        assert_eq!(reconcile_reason(&status, &report, false), None, "nothing concluded");
        report.tunnel =
            Some(ProbeOutcome::Unhealthy("agents missing: 1 node(s), api-new: 0 agent(s)".into()));
        assert_eq!(reconcile_reason(&status, &report, false), Some("tunnel"), "the status flips first");
        // Shown False: a probe short of agents on other servers is news too.
        let shown_false = "agents missing: 1 node(s), api-old: 0 agent(s)";
        status.conditions.pop();
        status
            .conditions
            .push(Condition { message: shown_false.into(), ..condition(types::TUNNEL_READY, false) });
        assert_eq!(reconcile_reason(&status, &report, false), Some("tunnel-message"));
        report.tunnel = Some(ProbeOutcome::Unhealthy(shown_false.into()));
        assert_eq!(reconcile_reason(&status, &report, false), None);
    }

    #[test]
    fn a_broken_member_or_an_unrecorded_cluster_id_asks_for_a_pass() {
        assert_eq!(reconcile_reason(&ready_status(), &healthy_report(), true), Some("etcd-member"));
        let status = TenantClusterStatus { etcd_cluster_id: None, ..ready_status() };
        assert_eq!(reconcile_reason(&status, &healthy_report(), false), Some("etcd-cluster-id"));
    }
}
