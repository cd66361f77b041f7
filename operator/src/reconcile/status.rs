//! Computes a TenantCluster's status from what was observed (pure).
//!
//! Input: the object (current status, generation, deletion, pause), an
//! [`Observation`] and "now". Output: the desired status and the changes worth an
//! Event. The reconciler writes the status only when it differs from the current
//! one, so a steady tenant costs no writes.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;
use kube::{Resource, ResourceExt};

use crate::api::{Phase, TenantCluster, TenantClusterStatus};
use crate::etcd::scaling::ScalingProgress;
use crate::health::{HealthVerdicts, Verdict};
use crate::names::TenantNames;
use crate::reconcile::conditions::{
    ConditionStatus, ConditionUpdate, find_condition, is_condition_true, phase_from_conditions, reason,
    set_condition, summarize_ready, types,
};
use crate::reconcile::observe::{Observation, WorkloadReadiness};

/// Secrets that make up the tenant PKI; PKIReady needs all of them.
pub fn pki_secrets(names: &TenantNames) -> Vec<String> {
    vec![
        names.cluster_ca_secret(),
        names.front_proxy_ca_secret(),
        names.etcd_ca_secret(),
        names.service_account_key_secret(),
        names.apiserver_serving_secret(),
        names.apiserver_kubelet_client_secret(),
        names.apiserver_etcd_client_secret(),
        names.front_proxy_client_secret(),
        names.etcd_server_secret(),
        names.etcd_peer_secret(),
        names.etcd_healthcheck_client_secret(),
    ]
}

/// Secrets holding kubeconfigs; KubeconfigReady needs all of them.
pub fn kubeconfig_secrets(names: &TenantNames) -> Vec<String> {
    vec![
        names.admin_kubeconfig_secret(),
        names.admin_in_cluster_kubeconfig_secret(),
        names.controller_manager_kubeconfig_secret(),
        names.scheduler_kubeconfig_secret(),
    ]
}

/// A change worth telling humans about with an Event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StatusChange {
    /// An existing condition flipped status (a condition appearing for the first time is not a flip).
    ConditionFlipped {
        /// Condition type, for example `EtcdReady`.
        type_: String,
        /// The new status.
        status: ConditionStatus,
        /// The new reason.
        reason: String,
        /// The new message.
        message: String,
    },
    /// The phase changed (including the first phase a new tenant gets).
    PhaseChanged {
        /// The previous phase; `None` for a new tenant.
        from: Option<Phase>,
        /// The new phase.
        to: Phase,
    },
    /// A new generation whose `spec.version` differs from the running version: the
    /// pass that first sees a version bump (or, rarely, another spec change made while
    /// an upgrade still rolls, which announces the same upgrade again).
    UpgradeStarted {
        /// The version the control plane runs.
        from: String,
        /// `spec.version`.
        to: String,
    },
    /// Every apiserver, controller-manager and scheduler replica runs a new version.
    Upgraded {
        /// The version they ran before.
        from: String,
        /// The version they run now.
        to: String,
    },
}

/// The component conditions (everything but Ready) for an observation, the
/// debounced probe verdicts (see [`with_probe`]) and an etcd scaling in progress
/// (see [`with_scaling`]).
pub fn component_conditions(
    names: &TenantNames,
    observation: &Observation,
    health: &HealthVerdicts,
    etcd_scaling: Option<&ScalingProgress>,
) -> Vec<ConditionUpdate> {
    let apiserver = with_probe(
        workload_condition(
            types::API_SERVER_READY,
            "kube-apiserver Deployment",
            observation.apiserver.as_ref(),
            true,
        ),
        health.apiserver.as_ref(),
    );
    let apiserver_ready = apiserver.status == ConditionStatus::True;
    // With probes off there are no verdicts at all; with them on the apiserver has one.
    let probes_on = health.apiserver.is_some();
    let controller_manager = leader_condition(
        &CONTROLLER_MANAGER,
        observation.controller_manager.as_ref(),
        apiserver_ready,
        health.controller_manager.as_ref(),
        probes_on,
    );
    let scheduler = leader_condition(
        &SCHEDULER,
        observation.scheduler.as_ref(),
        apiserver_ready,
        health.scheduler.as_ref(),
        probes_on,
    );
    vec![
        secrets_condition(types::PKI_READY, &pki_secrets(names), observation),
        with_scaling(
            with_probe(
                workload_condition(types::ETCD_READY, "etcd StatefulSet", observation.etcd.as_ref(), false),
                health.etcd.as_ref(),
            ),
            etcd_scaling,
        ),
        apiserver,
        controller_manager,
        scheduler,
        secrets_condition(types::KUBECONFIG_READY, &kubeconfig_secrets(names), observation),
    ]
}

/// TunnelReady (pure), for tenants nodes can join: with the tunnel on, the debounced
/// verdict of the servers' agents (`None`, kept as it is, until a probe concluded); with
/// it off, True with reason `TunnelDisabled`. `None` for tenants nodes cannot join.
pub fn tunnel_condition(
    spec: &crate::api::TenantClusterSpec,
    verdict: Option<&Verdict>,
) -> Option<ConditionUpdate> {
    match crate::resources::konnectivity::node_routing(spec)? {
        crate::api::NodeRouting::Direct => Some(ConditionUpdate::new(
            types::TUNNEL_READY,
            ConditionStatus::True,
            reason::TUNNEL_DISABLED,
            "spec.network.tunnel.enabled is false: the apiservers dial the nodes directly",
        )),
        crate::api::NodeRouting::Tunnel => {
            let verdict = verdict?;
            Some(if verdict.healthy {
                ConditionUpdate::new(
                    types::TUNNEL_READY,
                    ConditionStatus::True,
                    reason::READY,
                    verdict.message.clone(),
                )
            } else {
                ConditionUpdate::new(
                    types::TUNNEL_READY,
                    ConditionStatus::False,
                    reason::AGENTS_MISSING,
                    verdict.message.clone(),
                )
            })
        }
    }
}

/// How [`with_probe`] starts the message of a ready workload whose probe fails.
const PROBE_FAILED_PREFIX: &str = "probe failed: ";

/// Combines a workload condition with the component's probe verdict: True needs
/// both. A ready workload whose probe fails is False with reason `ProbeFailed` and
/// the probe's message; otherwise the probe's message follows the workload's, so
/// `kubectl describe` shows what was actually checked.
pub fn with_probe(mut update: ConditionUpdate, verdict: Option<&Verdict>) -> ConditionUpdate {
    let Some(verdict) = verdict else { return update };
    if update.status == ConditionStatus::True && !verdict.healthy {
        update.status = ConditionStatus::False;
        update.reason = reason::PROBE_FAILED;
        update.message = format!("{PROBE_FAILED_PREFIX}{} ({})", verdict.message, update.message);
    } else {
        let label = if verdict.healthy { "probe" } else { "probe failed" };
        update.message = format!("{}; {label}: {}", update.message, verdict.message);
    }
    update
}

/// EtcdReady while etcd is being scaled: reason `Scaling` and the progress first in
/// the message. Its status says whether every voting member is healthy (this pass,
/// not debounced): a scaling that proceeds keeps the tenant Ready, since the tenant
/// is served throughout (a new member is a learner until it caught up, a member goes
/// only after the quorum shrank), while the StatefulSet is briefly short of a Ready
/// pod at every step. A scaling that waits on an unhealthy member is False.
pub fn with_scaling(mut update: ConditionUpdate, progress: Option<&ScalingProgress>) -> ConditionUpdate {
    let Some(progress) = progress else { return update };
    update.status = ConditionStatus::from_bool(progress.healthy);
    update.reason = reason::SCALING;
    update.message = format!("{} ({})", progress.message(), update.message);
    update
}

/// EtcdReady of `updates` when etcd's `NOSPACE` alarm holds and the operator cannot
/// free enough (`problem`, see [`crate::etcd::maintenance::SpacePlan`]): False with
/// reason `QuotaExceeded` and what the user must do first in the message.
pub fn with_space(mut updates: Vec<ConditionUpdate>, problem: Option<&str>) -> Vec<ConditionUpdate> {
    let Some(problem) = problem else { return updates };
    for update in updates.iter_mut().filter(|update| update.type_ == types::ETCD_READY) {
        update.status = ConditionStatus::False;
        update.reason = reason::QUOTA_EXCEEDED;
        update.message = format!("{problem} ({})", update.message);
    }
    updates
}

fn secrets_condition(type_: &'static str, required: &[String], observation: &Observation) -> ConditionUpdate {
    let missing: Vec<&str> =
        required.iter().filter(|name| !observation.secrets.contains(*name)).map(String::as_str).collect();
    if missing.is_empty() {
        ConditionUpdate::new(type_, ConditionStatus::True, reason::READY, "all Secrets exist")
    } else {
        ConditionUpdate::new(
            type_,
            ConditionStatus::False,
            reason::NOT_FOUND,
            format!("missing Secrets: {}", missing.join(", ")),
        )
    }
}

/// A component that works through the apiserver as the leader of its Lease: the
/// kube-controller-manager or the kube-scheduler.
struct LeaderComponent {
    /// Its condition type.
    type_: &'static str,
    /// Its workload, as the condition's messages name it.
    workload: &'static str,
}

const CONTROLLER_MANAGER: LeaderComponent = LeaderComponent {
    type_: types::CONTROLLER_MANAGER_READY,
    workload: "kube-controller-manager Deployment",
};
const SCHEDULER: LeaderComponent =
    LeaderComponent { type_: types::SCHEDULER_READY, workload: "kube-scheduler Deployment" };

/// ControllerManagerReady or SchedulerReady: True only for a component that can be
/// doing its work, which it does through the apiserver, as the leader of its Lease.
///
/// Its pods' readiness is their own `/healthz`, which says neither that they reached
/// the apiserver nor that one leads. On the workload alone a new tenant's controller
/// manager was Ready before its apiserver; the first Lease probe then found no Lease
/// ("never became leader") and took it back with a Warning Event, until it led. So:
///
/// - not found, or at 0 replicas (`ScaledToZero`: 0 of 0 replicas ready would
///   otherwise be Ready, and a cluster without a controller manager reconciles
///   nothing, one without a scheduler runs no new pod), it is False;
/// - while `apiserver_ready` is false it is False (`WaitingForAPIServer`);
/// - then the Lease probe decides ([`with_probe`]): True once it saw a fresh Lease.
///   While probes run (`probes_on`) but the Lease probe has not concluded yet, it is
///   False (`WaitingForLeader`). With probes off the workload decides.
///
/// A failing Lease probe of a component that never led is start-up, not failure;
/// only the previous status can tell, so [`compute_status`] relabels it (see
/// [`starting_leader`]).
fn leader_condition(
    component: &LeaderComponent,
    readiness: Option<&WorkloadReadiness>,
    apiserver_ready: bool,
    verdict: Option<&Verdict>,
    probes_on: bool,
) -> ConditionUpdate {
    let LeaderComponent { type_, workload: what } = *component;
    let readiness = match readiness {
        None => return workload_condition(type_, what, None, true),
        Some(readiness) if readiness.desired == 0 => {
            return ConditionUpdate::new(
                type_,
                ConditionStatus::False,
                reason::SCALED_TO_ZERO,
                format!("{what} scaled to 0 replicas"),
            );
        }
        Some(readiness) => readiness,
    };
    let workload = workload_condition(type_, what, Some(readiness), true);
    if !apiserver_ready {
        return ConditionUpdate::new(
            type_,
            ConditionStatus::False,
            reason::WAITING_FOR_API_SERVER,
            format!("waiting for the apiserver ({})", workload.message),
        );
    }
    match verdict {
        None if workload.status == ConditionStatus::True && probes_on => ConditionUpdate::new(
            type_,
            ConditionStatus::False,
            reason::WAITING_FOR_LEADER,
            format!("waiting for a leader: its Lease not probed yet ({})", workload.message),
        ),
        verdict => with_probe(workload, verdict),
    }
}

/// `update` for ControllerManagerReady or SchedulerReady given the condition `before`
/// this pass: a failing Lease probe (`ProbeFailed`) of a component that was neither
/// Ready nor failing before is one that has not led yet, such as a new tenant's whose
/// first election is still under way. It is reported as starting
/// (`WaitingForLeader`), not failing; once it was Ready, a failing probe is a failure.
fn starting_leader(mut update: ConditionUpdate, before: Option<&Condition>) -> ConditionUpdate {
    let led_or_failed = before.is_some_and(|before| {
        before.status == ConditionStatus::True.as_str() || before.reason == reason::PROBE_FAILED
    });
    let leader_elected = [CONTROLLER_MANAGER.type_, SCHEDULER.type_].contains(&update.type_);
    if leader_elected && update.reason == reason::PROBE_FAILED && !led_or_failed {
        update.reason = reason::WAITING_FOR_LEADER;
        let probe = update.message.strip_prefix(PROBE_FAILED_PREFIX).unwrap_or(&update.message);
        update.message = format!("waiting for a leader: {probe}");
    }
    update
}

/// `surge_rollout`: the workload replaces pods by surging (a Deployment), so a rolling
/// update with every wanted replica ready still serves and stays True. A StatefulSet
/// deletes each member before recreating it; counting it ready between two members
/// would only make the condition flap.
fn workload_condition(
    type_: &'static str,
    what: &str,
    readiness: Option<&WorkloadReadiness>,
    surge_rollout: bool,
) -> ConditionUpdate {
    match readiness {
        None => ConditionUpdate::new(
            type_,
            ConditionStatus::False,
            reason::NOT_FOUND,
            format!("{what} not found"),
        ),
        Some(readiness) if readiness.is_ready() => ConditionUpdate::new(
            type_,
            ConditionStatus::True,
            reason::READY,
            format!("{}/{} replicas ready", readiness.ready, readiness.desired),
        ),
        Some(readiness) if surge_rollout && readiness.is_rolling_with_all_ready() => ConditionUpdate::new(
            type_,
            ConditionStatus::True,
            reason::ROLLING_UPDATE,
            format!(
                "{}/{} replicas ready, rolling update: {} updated{}",
                readiness.ready,
                readiness.desired,
                readiness.updated,
                if readiness.observed_latest { "" } else { ", latest spec not yet observed" }
            ),
        ),
        Some(readiness) => ConditionUpdate::new(
            type_,
            ConditionStatus::False,
            reason::PROGRESSING,
            format!(
                "{}/{} replicas ready, {} updated{}",
                readiness.ready,
                readiness.desired,
                readiness.updated,
                if readiness.observed_latest { "" } else { ", latest spec not yet observed" }
            ),
        ),
    }
}

/// The desired status of `tenant` after applying `component_updates`.
///
/// `running_version` is the version every apiserver, controller-manager and scheduler
/// replica runs ([`ObservedRollout::control_plane_version`]); `None` while they roll (or when
/// not observed), which keeps `status.version` where it was. So `status.version`
/// reaches a new `spec.version` only once the whole upgrade rolled out; until then the
/// Ready message names the upgrade in progress.
///
/// A controller manager or scheduler whose Lease probe fails before it ever led is
/// reported as starting, not failing ([`starting_leader`]): a new tenant's
/// ControllerManagerReady and SchedulerReady go from False to True once, with no
/// Warning Event.
///
/// `ready_override` replaces the computed Ready summary; the reconciler uses it to
/// report a permanent error. A paused tenant keeps its computed Ready status but
/// says so in the reason, so `kubectl describe` shows why nothing happens.
///
/// [`ObservedRollout::control_plane_version`]: crate::desired::ObservedRollout::control_plane_version
pub fn compute_status(
    tenant: &TenantCluster,
    component_updates: &[ConditionUpdate],
    running_version: Option<&str>,
    ready_override: Option<ConditionUpdate>,
    now: Timestamp,
) -> (TenantClusterStatus, Vec<StatusChange>) {
    let current = tenant.status.clone().unwrap_or_default();
    let generation = tenant.metadata.generation;
    let spec_version = tenant.spec.version.trim_start_matches('v');
    let version = running_version.map(str::to_string).or_else(|| current.version.clone());
    let upgrading = version.as_deref().filter(|running| *running != spec_version);
    let mut conditions = current.conditions.clone();
    for update in component_updates {
        let update = starting_leader(update.clone(), find_condition(&conditions, update.type_));
        set_condition(&mut conditions, &update, generation, now);
    }
    let overridden = ready_override.is_some();
    let mut ready = ready_override.unwrap_or_else(|| summarize_ready(&conditions));
    if let (Some(running), false) = (upgrading, overridden) {
        ready.message = format!("{}; upgrading {running} -> {spec_version}", ready.message);
    }
    if tenant.spec.paused {
        ready.reason = reason::PAUSED;
        ready.message = format!("spec.paused is set; observing only ({})", ready.message);
    }
    set_condition(&mut conditions, &ready, generation, now);

    let deleting = tenant.meta().deletion_timestamp.is_some();
    let phase = phase_from_conditions(current.phase, &conditions, deleting);

    let mut changes: Vec<StatusChange> = conditions
        .iter()
        .filter_map(|condition| {
            let before = find_condition(&current.conditions, &condition.type_)?;
            (before.status != condition.status).then(|| StatusChange::ConditionFlipped {
                type_: condition.type_.clone(),
                status: match condition.status.as_str() {
                    "True" => ConditionStatus::True,
                    "False" => ConditionStatus::False,
                    _ => ConditionStatus::Unknown,
                },
                reason: condition.reason.clone(),
                message: condition.message.clone(),
            })
        })
        .collect();
    if current.phase != Some(phase) {
        changes.push(StatusChange::PhaseChanged { from: current.phase, to: phase });
    }
    // A new generation is the first pass to see a spec change; the running version
    // differing from it then means this change asked for an upgrade.
    if let Some(running) = upgrading
        && current.observed_generation != generation
        && current.version.as_deref() == Some(running)
    {
        changes.push(StatusChange::UpgradeStarted { from: running.to_string(), to: spec_version.into() });
    }
    if let (Some(before), Some(after)) = (&current.version, &version)
        && before != after
    {
        changes.push(StatusChange::Upgraded { from: before.clone(), to: after.clone() });
    }

    let names = TenantNames::new(tenant.name_any(), tenant.namespace().unwrap_or_default());
    let status = TenantClusterStatus {
        phase: Some(phase),
        observed_generation: generation,
        version,
        kubeconfig_secret_name: if is_condition_true(&conditions, types::KUBECONFIG_READY) {
            Some(names.admin_kubeconfig_secret())
        } else {
            current.kubeconfig_secret_name.clone()
        },
        // INTEGRATION POINT (lead): endpoint comes from the apiserver Service builder and
        // certificatesExpireAt from the PKI; carried over until those are wired.
        endpoint: current.endpoint.clone(),
        certificates_expire_at: current.certificates_expire_at.clone(),
        // Set by the reconciler the first time etcd answered healthy, then never cleared.
        etcd_cluster_id: current.etcd_cluster_id.clone(),
        // Set by the reconciler when the member list matches the spec.
        etcd_members: current.etcd_members,
        // Set by the backup step from the newest successful backup Job.
        last_backup: current.last_backup.clone(),
        // What the spec asks for: the apiserver pods carry it from the same pass on.
        node_routing: crate::resources::konnectivity::node_routing(&tenant.spec),
        conditions,
    };
    (status, changes)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use kube::api::ObjectMeta;

    use super::*;
    use crate::api::TenantClusterSpec;
    use crate::desired::{DeploymentVersion, ObservedRollout};
    use crate::reconcile::conditions::status_equivalent;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_750_000_000 + second).expect("valid")
    }

    fn tenant(status: Option<TenantClusterStatus>) -> TenantCluster {
        let spec: TenantClusterSpec =
            serde_json::from_value(serde_json::json!({"version": "1.34.2"})).expect("spec");
        TenantCluster {
            metadata: ObjectMeta {
                name: Some("team-a".into()),
                namespace: Some("tenants".into()),
                generation: Some(4),
                ..ObjectMeta::default()
            },
            spec,
            status,
        }
    }

    fn names() -> TenantNames {
        TenantNames::new("team-a", "tenants")
    }

    fn ready_workload(replicas: i32) -> Option<WorkloadReadiness> {
        Some(WorkloadReadiness {
            desired: replicas,
            ready: replicas,
            updated: replicas,
            observed_latest: true,
        })
    }

    fn rolled_out(version: &str) -> Option<DeploymentVersion> {
        Some(DeploymentVersion {
            template: Some(version.into()),
            rolled_out: Some(version.into()),
            replicas: 1,
            available: 1,
        })
    }

    fn healthy_observation() -> Observation {
        let names = names();
        Observation {
            secrets: pki_secrets(&names).into_iter().chain(kubeconfig_secrets(&names)).collect(),
            etcd: ready_workload(3),
            apiserver: ready_workload(1),
            controller_manager: ready_workload(1),
            scheduler: ready_workload(1),
            rollout: ObservedRollout {
                apiserver: rolled_out("1.34.2"),
                controller_manager: rolled_out("1.34.2"),
                scheduler: rolled_out("1.34.2"),
            },
        }
    }

    /// One pass over `observation` without probe verdicts or etcd scaling: its component
    /// conditions and the version its rollout shows as running, through `compute_status`.
    fn pass(
        tenant: &TenantCluster,
        observation: &Observation,
        now: Timestamp,
    ) -> (TenantClusterStatus, Vec<StatusChange>) {
        let updates = component_conditions(&names(), observation, &HealthVerdicts::default(), None);
        compute_status(tenant, &updates, observation.rollout.control_plane_version(), None, now)
    }

    #[test]
    fn new_tenant_with_nothing_built_is_provisioning_with_every_component_false() {
        let (status, changes) = pass(&tenant(None), &Observation::default(), at(0));

        assert_eq!(status.phase, Some(Phase::Provisioning));
        assert_eq!(status.observed_generation, Some(4));
        let types: Vec<&str> = status.conditions.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(
            types,
            [
                "PKIReady",
                "EtcdReady",
                "APIServerReady",
                "ControllerManagerReady",
                "SchedulerReady",
                "KubeconfigReady",
                "Ready"
            ]
        );
        assert!(status.conditions.iter().all(|c| c.status == "False"));
        let etcd = find_condition(&status.conditions, types::ETCD_READY).expect("present");
        assert_eq!(etcd.message, "etcd StatefulSet not found");
        // First appearance of conditions is not an Event; the first phase is.
        assert_eq!(changes, [StatusChange::PhaseChanged { from: None, to: Phase::Provisioning }]);
        assert_eq!(status.version, None);
    }

    #[test]
    fn a_controller_manager_at_zero_replicas_is_not_ready() {
        let mut observation = healthy_observation();
        observation.controller_manager =
            Some(WorkloadReadiness { desired: 0, ready: 0, updated: 0, observed_latest: true });
        let (status, _) = pass(&tenant(None), &observation, at(0));
        let condition = find_condition(&status.conditions, types::CONTROLLER_MANAGER_READY).expect("present");
        assert_eq!((condition.status.as_str(), condition.reason.as_str()), ("False", "ScaledToZero"));
        assert_ne!(status.phase, Some(Phase::Ready));

        let mut observation = healthy_observation();
        observation.scheduler =
            Some(WorkloadReadiness { desired: 0, ready: 0, updated: 0, observed_latest: true });
        let (status, _) = pass(&tenant(None), &observation, at(0));
        let condition = find_condition(&status.conditions, types::SCHEDULER_READY).expect("present");
        assert_eq!((condition.status.as_str(), condition.reason.as_str()), ("False", "ScaledToZero"));
        assert_eq!(condition.message, "kube-scheduler Deployment scaled to 0 replicas");
        assert_ne!(status.phase, Some(Phase::Ready));
    }

    #[test]
    fn a_tenant_without_a_scheduler_is_not_ready() {
        let mut observation = healthy_observation();
        observation.scheduler = None;
        let (status, _) = pass(&tenant(None), &observation, at(0));
        let condition = find_condition(&status.conditions, types::SCHEDULER_READY).expect("present");
        assert_eq!(
            (condition.status.as_str(), condition.reason.as_str(), condition.message.as_str()),
            ("False", "NotFound", "kube-scheduler Deployment not found")
        );
        let ready = find_condition(&status.conditions, types::READY).expect("present");
        assert_eq!((ready.status.as_str(), ready.message.as_str()), ("False", "not ready: SchedulerReady"));
    }

    #[test]
    fn healthy_observation_makes_the_tenant_ready_and_reports_flips() {
        let (provisioning, _) = pass(&tenant(None), &Observation::default(), at(0));
        let (status, changes) = pass(&tenant(Some(provisioning)), &healthy_observation(), at(60));

        assert_eq!(status.phase, Some(Phase::Ready));
        assert_eq!(status.version.as_deref(), Some("1.34.2"));
        assert_eq!(status.kubeconfig_secret_name.as_deref(), Some("team-a-kubeconfig"));
        assert!(
            status.conditions.iter().all(|c| c.status == "True" && c.last_transition_time == Time(at(60)))
        );
        assert_eq!(changes.len(), 8, "seven condition flips and one phase change: {changes:?}");
        assert_eq!(
            changes.last(),
            Some(&StatusChange::PhaseChanged { from: Some(Phase::Provisioning), to: Phase::Ready })
        );
    }

    #[test]
    fn steady_tenant_computes_an_equivalent_status_and_no_changes() {
        let (first, _) = pass(&tenant(None), &healthy_observation(), at(0));
        let (second, changes) = pass(&tenant(Some(first.clone())), &healthy_observation(), at(3600));
        assert!(changes.is_empty(), "{changes:?}");
        assert_eq!(second, first, "transition times must not move on a steady pass");
        assert!(status_equivalent(Some(&first), &second));
    }

    #[test]
    fn a_quota_too_small_for_the_live_data_turns_etcd_ready_false_and_says_what_to_do() {
        let updates = vec![
            ConditionUpdate::new(
                types::ETCD_READY,
                ConditionStatus::False,
                reason::PROBE_FAILED,
                "alarm NOSPACE",
            ),
            ConditionUpdate::new(types::API_SERVER_READY, ConditionStatus::True, reason::READY, "ok"),
        ];
        assert_eq!(with_space(updates.clone(), None), updates, "nothing to say");
        let problem = "live data 20.0 MiB exceeds quota 16.0 MiB: raise spec.etcd.quotaBackendBytes";
        let said = with_space(updates.clone(), Some(problem));
        assert_eq!(said[0].reason, reason::QUOTA_EXCEEDED);
        assert_eq!(said[0].status, ConditionStatus::False);
        assert_eq!(said[0].message, format!("{problem} (alarm NOSPACE)"));
        assert_eq!(said[1], updates[1], "only EtcdReady");
    }

    #[test]
    fn losing_etcd_after_ready_degrades_the_tenant() {
        let (ready, _) = pass(&tenant(None), &healthy_observation(), at(0));
        let mut observation = healthy_observation();
        observation.etcd =
            Some(WorkloadReadiness { desired: 3, ready: 1, updated: 3, observed_latest: true });
        let (status, changes) = pass(&tenant(Some(ready)), &observation, at(10));

        assert_eq!(status.phase, Some(Phase::Degraded));
        let etcd = find_condition(&status.conditions, types::ETCD_READY).expect("present");
        assert_eq!(etcd.message, "1/3 replicas ready, 3 updated");
        assert!(
            changes.contains(&StatusChange::PhaseChanged { from: Some(Phase::Ready), to: Phase::Degraded })
        );
        assert!(changes.iter().any(|change| matches!(change,
            StatusChange::ConditionFlipped { type_, status: ConditionStatus::False, .. } if type_ == "EtcdReady")));
        // The running version stays what it was while the apiserver is still up.
        assert_eq!(status.version.as_deref(), Some("1.34.2"));
    }

    #[test]
    fn ready_override_reports_a_permanent_error() {
        let override_ready = ConditionUpdate::new(
            types::READY,
            ConditionStatus::False,
            reason::INVALID_SPEC,
            "invalid spec: spec.etcd.replicas: must be 1, 3 or 5",
        );
        let (status, _) = compute_status(&tenant(None), &[], None, Some(override_ready), at(0));
        let ready = find_condition(&status.conditions, types::READY).expect("present");
        assert_eq!(ready.reason, "InvalidSpec");
        assert_eq!(status.conditions.len(), 1, "component conditions untouched when none were observed");
    }

    #[test]
    fn paused_tenant_says_so_in_the_ready_reason() {
        let mut paused = tenant(None);
        paused.spec.paused = true;
        let (status, _) = pass(&paused, &healthy_observation(), at(0));
        let ready = find_condition(&status.conditions, types::READY).expect("present");
        assert_eq!(ready.status, "True");
        assert_eq!(ready.reason, "Paused");
        assert!(ready.message.starts_with("spec.paused is set"), "{}", ready.message);
    }

    #[test]
    fn deleting_tenant_is_in_phase_deleting() {
        let mut deleting = tenant(None);
        deleting.metadata.deletion_timestamp = Some(Time(at(0)));
        let (status, _) = compute_status(&deleting, &[], None, None, at(0));
        assert_eq!(status.phase, Some(Phase::Deleting));
    }
    fn verdict(healthy: bool, message: &str) -> Option<Verdict> {
        Some(Verdict { healthy, message: message.into() })
    }

    #[test]
    fn a_failing_probe_turns_a_ready_workload_false_with_its_message() {
        let health = HealthVerdicts {
            etcd: verdict(true, "1/1 members healthy, leader team-a-etcd-0, member list has 1"),
            apiserver: verdict(false, "pod team-a-apiserver-x: /livez: no answer within 2s"),
            controller_manager: None,
            scheduler: None,
            tunnel: None,
        };
        let updates = component_conditions(&names(), &healthy_observation(), &health, None);
        let apiserver = updates.iter().find(|u| u.type_ == types::API_SERVER_READY).expect("present");
        assert_eq!(apiserver.status, ConditionStatus::False);
        assert_eq!(apiserver.reason, "ProbeFailed");
        assert_eq!(
            apiserver.message,
            "probe failed: pod team-a-apiserver-x: /livez: no answer within 2s (1/1 replicas ready)"
        );
        let etcd = updates.iter().find(|u| u.type_ == types::ETCD_READY).expect("present");
        assert_eq!(etcd.status, ConditionStatus::True);
        assert_eq!(
            etcd.message,
            "3/3 replicas ready; probe: 1/1 members healthy, leader team-a-etcd-0, member list has 1"
        );
        let manager = updates.iter().find(|u| u.type_ == types::CONTROLLER_MANAGER_READY).expect("present");
        assert_eq!(
            (manager.status, manager.reason, manager.message.as_str()),
            (ConditionStatus::False, "WaitingForAPIServer", "waiting for the apiserver (1/1 replicas ready)"),
            "the apiserver's probe fails: the controller manager cannot be doing its work"
        );

        let (ready, _) = pass(&tenant(None), &healthy_observation(), at(0));
        let (status, changes) = compute_status(&tenant(Some(ready)), &updates, None, None, at(30));
        assert_eq!(status.phase, Some(Phase::Degraded));
        assert!(changes.iter().any(|change| matches!(change,
            StatusChange::ConditionFlipped { type_, status: ConditionStatus::False, .. } if type_ == "APIServerReady")));
    }

    #[test]
    fn a_workload_not_ready_keeps_its_reason_and_shows_the_probe() {
        let mut observation = healthy_observation();
        observation.apiserver =
            Some(WorkloadReadiness { desired: 1, ready: 0, updated: 1, observed_latest: true });
        let health = HealthVerdicts {
            apiserver: verdict(false, "/readyz: connection refused"),
            ..HealthVerdicts::default()
        };
        let updates = component_conditions(&names(), &observation, &health, None);
        let apiserver = updates.iter().find(|u| u.type_ == types::API_SERVER_READY).expect("present");
        assert_eq!(apiserver.reason, "Progressing");
        assert_eq!(
            apiserver.message,
            "0/1 replicas ready, 1 updated; probe failed: /readyz: connection refused"
        );
    }

    fn controller_manager_of(updates: &[ConditionUpdate]) -> (ConditionStatus, &'static str, String) {
        let update =
            updates.iter().find(|update| update.type_ == types::CONTROLLER_MANAGER_READY).expect("present");
        (update.status, update.reason, update.message.clone())
    }

    #[test]
    fn without_probes_a_ready_controller_manager_waits_for_the_apiserver() {
        let mut observation = healthy_observation();
        observation.apiserver =
            Some(WorkloadReadiness { desired: 1, ready: 0, updated: 1, observed_latest: true });
        let updates = component_conditions(&names(), &observation, &HealthVerdicts::default(), None);
        assert_eq!(
            controller_manager_of(&updates),
            (
                ConditionStatus::False,
                "WaitingForAPIServer",
                "waiting for the apiserver (1/1 replicas ready)".to_string()
            ),
            "its Deployment is available, the apiserver is not"
        );

        let updates =
            component_conditions(&names(), &healthy_observation(), &HealthVerdicts::default(), None);
        assert_eq!(
            controller_manager_of(&updates),
            (ConditionStatus::True, "Ready", "1/1 replicas ready".to_string()),
            "probes off: Deployment available and apiserver Ready"
        );
    }

    #[test]
    fn with_probes_a_controller_manager_is_ready_only_once_its_lease_was_seen() {
        let apiserver_probed = HealthVerdicts {
            apiserver: verdict(true, "/readyz ok through the Service, /livez ok on 1 pods"),
            ..HealthVerdicts::default()
        };
        let updates = component_conditions(&names(), &healthy_observation(), &apiserver_probed, None);
        assert_eq!(
            controller_manager_of(&updates),
            (
                ConditionStatus::False,
                "WaitingForLeader",
                "waiting for a leader: its Lease not probed yet (1/1 replicas ready)".to_string()
            )
        );

        let led = HealthVerdicts {
            controller_manager: verdict(
                true,
                "leader Lease fresh: held by cm-0, renewed within its 15s duration",
            ),
            ..apiserver_probed
        };
        let updates = component_conditions(&names(), &healthy_observation(), &led, None);
        let (status, reason, message) = controller_manager_of(&updates);
        assert_eq!((status, reason), (ConditionStatus::True, "Ready"));
        assert_eq!(
            message,
            "1/1 replicas ready; probe: leader Lease fresh: held by cm-0, renewed within its 15s duration"
        );
    }

    /// A new tenant's start-up as the passes see it: the controller-manager's and the
    /// scheduler's Deployments are available before the apiserver is, and their first
    /// Lease probes find no Lease; here the scheduler wins its election a pass later.
    #[test]
    fn a_new_tenants_controller_manager_and_scheduler_start_without_claiming_ready_or_a_warning() {
        let never_led = "no leader Lease: the controller manager never became leader";
        let scheduler_never_led = "no leader Lease: the scheduler never became leader";
        let lease_fresh = "leader Lease fresh: held by cm-0, renewed within its 15s duration";
        let scheduler_fresh = "leader Lease fresh: held by sched-0, renewed within its 15s duration";
        let apiserver_starting = {
            let mut observation = healthy_observation();
            observation.apiserver =
                Some(WorkloadReadiness { desired: 1, ready: 0, updated: 1, observed_latest: true });
            observation
        };
        let probed = |controller_manager: Option<Verdict>, scheduler: Option<Verdict>| HealthVerdicts {
            etcd: verdict(true, "1/1 members healthy"),
            apiserver: verdict(true, "/readyz ok"),
            controller_manager,
            scheduler,
            tunnel: None,
        };
        let passes: [(Observation, HealthVerdicts); 5] = [
            (Observation::default(), HealthVerdicts::default()),
            (
                apiserver_starting,
                HealthVerdicts {
                    etcd: verdict(true, "1/1 members healthy"),
                    apiserver: verdict(false, "/readyz: connection refused"),
                    controller_manager: None,
                    scheduler: None,
                    tunnel: None,
                },
            ),
            (healthy_observation(), probed(verdict(false, never_led), verdict(false, scheduler_never_led))),
            (healthy_observation(), probed(verdict(true, lease_fresh), verdict(false, scheduler_never_led))),
            (healthy_observation(), probed(verdict(true, lease_fresh), verdict(true, scheduler_fresh))),
        ];

        let mut tenant = tenant(None);
        let mut seen = Vec::new();
        let mut seen_scheduler = Vec::new();
        let mut phases = Vec::new();
        let mut all_changes = Vec::new();
        for (second, (observation, health)) in (0..).step_by(10).zip(&passes) {
            let updates = component_conditions(&names(), observation, health, None);
            let (status, changes) = compute_status(
                &tenant,
                &updates,
                observation.rollout.control_plane_version(),
                None,
                at(second),
            );
            let manager =
                find_condition(&status.conditions, types::CONTROLLER_MANAGER_READY).expect("present");
            seen.push((manager.status.clone(), manager.reason.clone(), manager.message.clone()));
            let scheduler = find_condition(&status.conditions, types::SCHEDULER_READY).expect("present");
            seen_scheduler.push((
                scheduler.status.clone(),
                scheduler.reason.clone(),
                scheduler.message.clone(),
            ));
            phases.push(status.phase);
            all_changes.extend(changes);
            tenant.status = Some(status);
        }

        let as_str = |seen: &[(String, String, String)]| -> Vec<(String, String, String)> { seen.to_vec() };
        let expect = |rows: &[(&str, &str, &str)]| -> Vec<(String, String, String)> {
            rows.iter().map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string())).collect()
        };
        assert_eq!(
            as_str(&seen),
            expect(&[
                ("False", "NotFound", "kube-controller-manager Deployment not found"),
                ("False", "WaitingForAPIServer", "waiting for the apiserver (1/1 replicas ready)"),
                (
                    "False",
                    "WaitingForLeader",
                    "waiting for a leader: no leader Lease: the controller manager never became leader \
                     (1/1 replicas ready)"
                ),
                (
                    "True",
                    "Ready",
                    "1/1 replicas ready; probe: leader Lease fresh: held by cm-0, renewed within its 15s duration"
                ),
                (
                    "True",
                    "Ready",
                    "1/1 replicas ready; probe: leader Lease fresh: held by cm-0, renewed within its 15s duration"
                ),
            ])
        );
        let scheduler_waiting = "waiting for a leader: no leader Lease: the scheduler never became leader \
                                 (1/1 replicas ready)";
        assert_eq!(
            as_str(&seen_scheduler),
            expect(&[
                ("False", "NotFound", "kube-scheduler Deployment not found"),
                ("False", "WaitingForAPIServer", "waiting for the apiserver (1/1 replicas ready)"),
                ("False", "WaitingForLeader", scheduler_waiting),
                ("False", "WaitingForLeader", scheduler_waiting),
                (
                    "True",
                    "Ready",
                    "1/1 replicas ready; probe: leader Lease fresh: held by sched-0, renewed within its 15s duration"
                ),
            ])
        );
        assert_eq!(
            phases,
            [Some(Phase::Provisioning); 4].into_iter().chain([Some(Phase::Ready)]).collect::<Vec<_>>(),
            "Ready only once the scheduler leads too"
        );
        // The reconciler publishes a Warning for every flip to False and for Degraded.
        let warnings: Vec<&StatusChange> = all_changes
            .iter()
            .filter(|change| {
                matches!(
                    change,
                    StatusChange::ConditionFlipped { status: ConditionStatus::False, .. }
                        | StatusChange::PhaseChanged { to: Phase::Degraded, .. }
                )
            })
            .collect();
        assert!(warnings.is_empty(), "a normal start-up warns of nothing: {warnings:?}");
        assert!(all_changes.contains(&StatusChange::ConditionFlipped {
            type_: "ControllerManagerReady".into(),
            status: ConditionStatus::True,
            reason: "Ready".into(),
            message: format!("1/1 replicas ready; probe: {lease_fresh}"),
        }));
        assert!(all_changes.contains(&StatusChange::ConditionFlipped {
            type_: "SchedulerReady".into(),
            status: ConditionStatus::True,
            reason: "Ready".into(),
            message: format!("1/1 replicas ready; probe: {scheduler_fresh}"),
        }));
        assert_eq!(tenant.status.as_ref().and_then(|status| status.phase), Some(Phase::Ready));
    }

    /// ControllerManagerReady after each of `probes` (second, Lease probe outcome), fed
    /// through the debounce (10 s interval) and the status as a pass does, on `tenant`;
    /// also the flips to False and to Degraded among the changes (each a Warning Event).
    fn controller_manager_through_probes(
        mut tenant: TenantCluster,
        probes: &[(i64, crate::health::ProbeOutcome)],
    ) -> (Vec<(String, String, String)>, Vec<StatusChange>) {
        let settings = crate::health::HealthSettings::default();
        let mut health = crate::health::TenantHealth::default();
        let (mut seen, mut warnings) = (Vec::new(), Vec::new());
        for (second, outcome) in probes {
            let report = crate::health::ProbeReport {
                etcd: Some(crate::health::ProbeOutcome::Healthy("1/1 members healthy".into())),
                apiserver: Some(crate::health::ProbeOutcome::Healthy("/readyz ok".into())),
                controller_manager: Some(outcome.clone()),
                scheduler: Some(crate::health::ProbeOutcome::Healthy("fresh".into())),
                ..crate::health::ProbeReport::default()
            };
            let (verdicts, _) = health.record(&report, at(*second), &settings);
            let updates = component_conditions(&names(), &healthy_observation(), &verdicts, None);
            let (status, changes) = compute_status(&tenant, &updates, None, None, at(*second));
            let manager =
                find_condition(&status.conditions, types::CONTROLLER_MANAGER_READY).expect("present");
            seen.push((manager.status.clone(), manager.reason.clone(), manager.message.clone()));
            warnings.extend(changes.into_iter().filter(|change| {
                matches!(
                    change,
                    StatusChange::ConditionFlipped { status: ConditionStatus::False, .. }
                        | StatusChange::PhaseChanged { to: Phase::Degraded, .. }
                )
            }));
            tenant.status = Some(status);
        }
        (seen, warnings)
    }

    /// A tenant restored from a snapshot starts with the source tenant's Lease, held by
    /// a pod of the source: not Ready (it was, on freshness alone), and not a failure
    /// either, until its own controller manager leads after the pass released the Lease.
    #[test]
    fn a_restored_tenants_foreign_lease_is_waiting_for_a_leader_until_its_own_pod_leads() {
        use crate::health::ProbeOutcome::{Healthy, Unhealthy};
        let foreign = "leader Lease held by team-src-controller-manager-77b9, which is not a controller \
                       manager pod of this tenant";
        let (seen, warnings) = controller_manager_through_probes(
            tenant(None),
            &[
                (0, Unhealthy(foreign.into())),
                (1, Unhealthy("no leader Lease: the controller manager never became leader".into())),
                (3, Healthy("leader Lease fresh: held by cm-0, renewed within its 15s duration".into())),
            ],
        );
        let waiting = ("False".to_string(), "WaitingForLeader".to_string());
        assert_eq!(
            seen[0],
            (
                waiting.0.clone(),
                waiting.1.clone(),
                format!("waiting for a leader: {foreign} (1/1 replicas ready)")
            )
        );
        assert_eq!((seen[1].0.clone(), seen[1].1.clone()), waiting);
        assert_eq!((seen[2].0.as_str(), seen[2].1.as_str()), ("True", "Ready"), "led at once: {seen:?}");
        assert!(warnings.is_empty(), "a restore warns of nothing: {warnings:?}");
    }

    /// A Deployment roll replaces the leading pod: for a moment the Lease names a pod
    /// that is gone (a stranger, released by the pass), then no Lease, then the new pod
    /// leads. The debounce (two probes over 20 s) keeps the condition True throughout.
    #[test]
    fn a_roll_that_briefly_leaves_the_lease_to_a_gone_pod_does_not_flap_the_condition() {
        use crate::health::ProbeOutcome::{Healthy, Unhealthy};
        let (ready, _) = pass(&tenant(None), &healthy_observation(), at(0));
        let (seen, warnings) = controller_manager_through_probes(
            tenant(Some(ready)),
            &[
                (0, Healthy("leader Lease fresh: held by cm-0, renewed within its 15s duration".into())),
                (
                    10,
                    Unhealthy(
                        "leader Lease held by cm-0, which is not a controller manager pod of this tenant"
                            .into(),
                    ),
                ),
                (11, Unhealthy("no leader Lease: the controller manager never became leader".into())),
                (13, Healthy("leader Lease fresh: held by cm-1, renewed within its 15s duration".into())),
            ],
        );
        assert!(seen.iter().all(|(status, _, _)| status == "True"), "{seen:#?}");
        assert!(seen[3].2.ends_with("held by cm-1, renewed within its 15s duration"), "{seen:#?}");
        assert!(warnings.is_empty(), "{warnings:?}");
    }

    #[test]
    fn a_controller_manager_that_led_and_then_fails_its_probe_is_probe_failed_and_stays_so() {
        let (ready, _) = pass(&tenant(None), &healthy_observation(), at(0));
        let stale = HealthVerdicts {
            apiserver: verdict(true, "/readyz ok"),
            controller_manager: verdict(
                false,
                "leader Lease stale: held by cm-0, not renewed within its 15s duration",
            ),
            ..HealthVerdicts::default()
        };
        let updates = component_conditions(&names(), &healthy_observation(), &stale, None);
        let (failed, changes) = compute_status(&tenant(Some(ready)), &updates, None, None, at(30));
        let manager = find_condition(&failed.conditions, types::CONTROLLER_MANAGER_READY).expect("present");
        assert_eq!((manager.status.as_str(), manager.reason.as_str()), ("False", "ProbeFailed"));
        assert!(changes.iter().any(|change| matches!(change,
            StatusChange::ConditionFlipped { type_, status: ConditionStatus::False, .. } if type_ == "ControllerManagerReady")));

        let (still, changes) = compute_status(&tenant(Some(failed)), &updates, None, None, at(60));
        let manager = find_condition(&still.conditions, types::CONTROLLER_MANAGER_READY).expect("present");
        assert_eq!(manager.reason, "ProbeFailed", "a failure does not turn into start-up on the next pass");
        assert!(changes.is_empty(), "{changes:?}");
    }

    #[test]
    fn a_scheduler_that_led_and_then_fails_its_probe_is_probe_failed_with_a_warning() {
        let (ready, _) = pass(&tenant(None), &healthy_observation(), at(0));
        let stale = HealthVerdicts {
            apiserver: verdict(true, "/readyz ok"),
            controller_manager: verdict(
                true,
                "leader Lease fresh: held by cm-0, renewed within its 15s duration",
            ),
            scheduler: verdict(
                false,
                "leader Lease stale: held by sched-0, not renewed within its 15s duration",
            ),
            ..HealthVerdicts::default()
        };
        let updates = component_conditions(&names(), &healthy_observation(), &stale, None);
        let (failed, changes) = compute_status(&tenant(Some(ready)), &updates, None, None, at(30));
        let scheduler = find_condition(&failed.conditions, types::SCHEDULER_READY).expect("present");
        assert_eq!((scheduler.status.as_str(), scheduler.reason.as_str()), ("False", "ProbeFailed"));
        assert_eq!(
            scheduler.message,
            "probe failed: leader Lease stale: held by sched-0, not renewed within its 15s duration \
             (1/1 replicas ready)"
        );
        let manager = find_condition(&failed.conditions, types::CONTROLLER_MANAGER_READY).expect("present");
        assert_eq!(manager.status, "True", "the controller-manager is judged by its own Lease");
        assert!(changes.iter().any(|change| matches!(change,
            StatusChange::ConditionFlipped { type_, status: ConditionStatus::False, .. } if type_ == "SchedulerReady")));
        assert!(
            changes.contains(&StatusChange::PhaseChanged { from: Some(Phase::Ready), to: Phase::Degraded })
        );
    }

    /// A Ready tenant at 1.34.2 whose spec was just bumped to 1.35.4 (generation 5).
    fn bumped_to_1_35() -> TenantCluster {
        let (ready, _) = pass(&tenant(None), &healthy_observation(), at(0));
        let mut bumped = tenant(Some(ready));
        bumped.spec.version = "1.35.4".into();
        bumped.metadata.generation = Some(5);
        bumped
    }

    #[test]
    fn an_upgrade_is_announced_once_and_the_version_moves_only_when_everything_rolled_out() {
        let bumped = bumped_to_1_35();
        // The apiserver rolls with every replica still available: Ready stays True.
        let mut rolling = healthy_observation();
        rolling.apiserver =
            Some(WorkloadReadiness { desired: 2, ready: 3, updated: 1, observed_latest: true });
        rolling.rollout.apiserver = Some(DeploymentVersion {
            template: Some("1.35.4".into()),
            rolled_out: None,
            replicas: 1,
            available: 1,
        });
        let (first, changes) = pass(&bumped, &rolling, at(10));
        assert_eq!(
            changes,
            [StatusChange::UpgradeStarted { from: "1.34.2".into(), to: "1.35.4".into() }],
            "nothing flips, one upgrade announced"
        );
        assert_eq!(first.version.as_deref(), Some("1.34.2"), "still the running version");
        assert_eq!(first.phase, Some(Phase::Ready));
        let apiserver = find_condition(&first.conditions, types::API_SERVER_READY).expect("present");
        assert_eq!((apiserver.status.as_str(), apiserver.reason.as_str()), ("True", "RollingUpdate"));
        assert_eq!(apiserver.message, "3/2 replicas ready, rolling update: 1 updated");
        let ready = find_condition(&first.conditions, types::READY).expect("present");
        assert_eq!(ready.status, "True");
        assert_eq!(ready.message, "control plane is ready; upgrading 1.34.2 -> 1.35.4");

        // Next pass, same generation: the apiserver finished, the controller-manager rolls.
        let mut seen = bumped.clone();
        seen.status = Some(first);
        let mut apiserver_done = healthy_observation();
        apiserver_done.rollout.apiserver = rolled_out("1.35.4");
        apiserver_done.rollout.controller_manager = Some(DeploymentVersion {
            template: Some("1.35.4".into()),
            rolled_out: None,
            replicas: 1,
            available: 1,
        });
        let (second, changes) = pass(&seen, &apiserver_done, at(40));
        assert!(changes.is_empty(), "announced once: {changes:?}");
        assert_eq!(second.version.as_deref(), Some("1.34.2"), "the controller-manager still rolls");

        // The controller-manager rolled out, the scheduler still runs the old version.
        seen.status = Some(second);
        let mut scheduler_rolling = healthy_observation();
        scheduler_rolling.rollout = ObservedRollout {
            apiserver: rolled_out("1.35.4"),
            controller_manager: rolled_out("1.35.4"),
            scheduler: Some(DeploymentVersion {
                template: Some("1.35.4".into()),
                rolled_out: None,
                replicas: 1,
                available: 1,
            }),
        };
        let (before_scheduler, changes) = pass(&seen, &scheduler_rolling, at(55));
        assert!(changes.is_empty(), "{changes:?}");
        assert_eq!(before_scheduler.version.as_deref(), Some("1.34.2"), "the scheduler still rolls");

        // All three rolled out: the version moves, once.
        seen.status = Some(before_scheduler);
        let mut done = healthy_observation();
        done.rollout = ObservedRollout {
            apiserver: rolled_out("1.35.4"),
            controller_manager: rolled_out("1.35.4"),
            scheduler: rolled_out("1.35.4"),
        };
        let (third, changes) = pass(&seen, &done, at(70));
        assert_eq!(changes, [StatusChange::Upgraded { from: "1.34.2".into(), to: "1.35.4".into() }]);
        assert_eq!(third.version.as_deref(), Some("1.35.4"));
        let ready = find_condition(&third.conditions, types::READY).expect("present");
        assert_eq!(ready.message, "control plane is ready");
        assert_eq!(ready.last_transition_time, Time(at(0)), "Ready never flipped during the upgrade");
    }

    #[test]
    fn only_deployments_stay_ready_through_a_rolling_update() {
        let mut observation = healthy_observation();
        let rolling = Some(WorkloadReadiness { desired: 3, ready: 3, updated: 1, observed_latest: true });
        observation.etcd = rolling.clone();
        observation.controller_manager = rolling.clone();
        observation.scheduler = rolling;
        // Right after a template change the Deployment controller has not seen it yet.
        observation.apiserver =
            Some(WorkloadReadiness { desired: 1, ready: 1, updated: 1, observed_latest: false });
        let updates = component_conditions(&names(), &observation, &HealthVerdicts::default(), None);
        let status_of = |type_: &str| {
            let update = updates.iter().find(|update| update.type_ == type_).expect("present");
            (update.status, update.reason)
        };
        assert_eq!(status_of(types::ETCD_READY), (ConditionStatus::False, "Progressing"));
        assert_eq!(status_of(types::CONTROLLER_MANAGER_READY), (ConditionStatus::True, "RollingUpdate"));
        assert_eq!(status_of(types::SCHEDULER_READY), (ConditionStatus::True, "RollingUpdate"));
        assert_eq!(status_of(types::API_SERVER_READY), (ConditionStatus::True, "RollingUpdate"));
        let apiserver =
            updates.iter().find(|update| update.type_ == types::API_SERVER_READY).expect("present");
        assert_eq!(
            apiserver.message,
            "1/1 replicas ready, rolling update: 1 updated, latest spec not yet observed"
        );
    }

    #[test]
    fn versions_that_differ_between_the_deployments_are_no_running_version() {
        let mixed = ObservedRollout {
            apiserver: rolled_out("1.35.4"),
            controller_manager: rolled_out("1.34.2"),
            scheduler: rolled_out("1.35.4"),
        };
        assert_eq!(mixed.control_plane_version(), None);
        let scheduler_behind = ObservedRollout {
            apiserver: rolled_out("1.35.4"),
            controller_manager: rolled_out("1.35.4"),
            scheduler: rolled_out("1.34.2"),
        };
        assert_eq!(scheduler_behind.control_plane_version(), None);
        let no_scheduler = ObservedRollout { scheduler: None, ..scheduler_behind.clone() };
        assert_eq!(no_scheduler.control_plane_version(), None, "no scheduler runs any version");
        let (status, changes) =
            compute_status(&bumped_to_1_35(), &[], mixed.control_plane_version(), None, at(5));
        assert_eq!(status.version.as_deref(), Some("1.34.2"));
        assert!(!changes.iter().any(|change| matches!(change, StatusChange::Upgraded { .. })), "{changes:?}");
    }

    #[test]
    fn tunnel_ready_follows_the_verdict_or_says_the_tunnel_is_off() {
        let mut spec: crate::api::TenantClusterSpec = serde_json::from_value(serde_json::json!({
            "version": "1.34.2",
            "network": {"serviceType": "NodePort", "externalHost": "10.200.0.1"},
        }))
        .expect("spec");
        let missing = Verdict { healthy: false, message: "agents missing: 1 node(s), a: 0 agent(s)".into() };
        let update = tunnel_condition(&spec, Some(&missing)).expect("a joinable tenant");
        assert_eq!((update.status, update.reason), (ConditionStatus::False, reason::AGENTS_MISSING));
        assert_eq!(update.message, missing.message);
        assert_eq!(tunnel_condition(&spec, None), None, "no verdict yet: left as it is");
        spec.network.tunnel.enabled = false;
        let off = tunnel_condition(&spec, Some(&missing)).expect("off is reported");
        assert_eq!((off.status, off.reason), (ConditionStatus::True, reason::TUNNEL_DISABLED));
        spec.network.service_type = crate::api::ServiceType::ClusterIP;
        assert_eq!(tunnel_condition(&spec, None), None, "no nodes can join: no condition");
    }
}
