//! TenantCluster status conditions and the phase derived from them (pure).
//!
//! Status hygiene matters for an operator: a `lastTransitionTime` that moves on
//! every pass turns each status write into a watch event and each event into
//! another reconcile. So transition times move only when a condition's status
//! flips, and [`status_equivalent`] lets the reconciler skip writes that would
//! change nothing but timestamps. Time comes from a [`Clock`] so tests are exact.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use crate::api::{Phase, TenantClusterStatus};

/// Condition types a TenantCluster reports, one per stage of the control plane.
pub mod types {
    /// Every certificate authority and leaf certificate exists and is current.
    pub const PKI_READY: &str = "PKIReady";
    /// The etcd StatefulSet has all members ready.
    pub const ETCD_READY: &str = "EtcdReady";
    /// The kube-apiserver Deployment has all replicas available.
    pub const API_SERVER_READY: &str = "APIServerReady";
    /// The kube-controller-manager Deployment has all replicas available, the apiserver
    /// is Ready and (with probes on) a controller manager holds a fresh leader Lease.
    pub const CONTROLLER_MANAGER_READY: &str = "ControllerManagerReady";
    /// The kube-scheduler Deployment has all replicas available, the apiserver is Ready
    /// and (with probes on) a scheduler holds a fresh leader Lease.
    pub const SCHEDULER_READY: &str = "SchedulerReady";
    /// The admin kubeconfig Secret exists.
    pub const KUBECONFIG_READY: &str = "KubeconfigReady";
    /// The addons inside the tenant (kube-proxy, CoreDNS) are available on its nodes.
    /// Not part of `Ready`: a control plane without nodes is ready, and its addons cannot
    /// run before a node joins.
    pub const ADDONS_READY: &str = "AddonsReady";
    /// The konnectivity tunnel carries the apiservers' traffic to every node: each
    /// konnectivity-server has an agent of every Ready node. Not part of `Ready`, like
    /// AddonsReady. Only on tenants nodes can join.
    pub const TUNNEL_READY: &str = "TunnelReady";
    /// The scheduled backups (`spec.backup`) succeed on time. Not part of `Ready`: a
    /// failing backup does not stop the control plane from serving.
    pub const BACKUP_READY: &str = "BackupReady";
    /// The tenant's etcd was restored from `spec.restore.from` and formed. Only on
    /// tenants created with `spec.restore`; not part of `Ready` (EtcdReady is).
    pub const RESTORED: &str = "Restored";
    /// Summary: every other condition is True.
    pub const READY: &str = "Ready";

    /// The component conditions that make up `Ready`, in reporting order.
    pub const COMPONENTS: [&str; 6] = [
        PKI_READY,
        ETCD_READY,
        API_SERVER_READY,
        CONTROLLER_MANAGER_READY,
        SCHEDULER_READY,
        KUBECONFIG_READY,
    ];
}

/// Condition reasons (CamelCase, as the Kubernetes API conventions ask).
pub mod reason {
    /// Everything the condition covers is in place.
    pub const READY: &str = "Ready";
    /// Objects exist but are not ready yet.
    pub const PROGRESSING: &str = "Progressing";
    /// A rolling update replaces the replicas while as many as asked for are ready.
    pub const ROLLING_UPDATE: &str = "RollingUpdate";
    /// An object the condition covers does not exist (yet).
    pub const NOT_FOUND: &str = "NotFound";
    /// One or more component conditions are not True.
    pub const COMPONENTS_NOT_READY: &str = "ComponentsNotReady";
    /// The spec is invalid; see the message.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// A certificate authority Secret disappeared while its certificates are in use.
    pub const CA_MISSING: &str = "CAMissing";
    /// The API server rejected an object Nestor built.
    pub const API_REJECTED: &str = "APIRejected";
    /// Another permanent reconcile failure.
    pub const RECONCILE_FAILED: &str = "ReconcileFailed";
    /// `spec.paused` is set: the operator observes but does not change anything.
    pub const PAUSED: &str = "Paused";
    /// The workload looks ready but the operator's own probe of the component fails.
    pub const PROBE_FAILED: &str = "ProbeFailed";
    /// etcd is being scaled to `spec.etcd.replicas`, one member at a time.
    pub const SCALING: &str = "Scaling";
    /// The controller-manager (or scheduler) Deployment is at 0 replicas: left so by an
    /// older operator, which held a new tenant's controller-manager at 0 until its
    /// apiserver served, or scaled down by hand. The next pass scales it back to
    /// `spec.controllerManager.replicas` (`spec.scheduler.replicas`).
    pub const SCALED_TO_ZERO: &str = "ScaledToZero";
    /// The controller manager (or scheduler) waits for the apiserver to be Ready: it
    /// works only through it.
    pub const WAITING_FOR_API_SERVER: &str = "WaitingForAPIServer";
    /// The controller manager (or scheduler) runs and the apiserver is Ready, but none
    /// has led yet (a new tenant's first leader election), or its Lease was not probed yet.
    pub const WAITING_FOR_LEADER: &str = "WaitingForLeader";
    /// EtcdReady False: etcd's `NOSPACE` alarm holds and compaction and
    /// defragmentation cannot free enough: the live data needs a larger quota.
    pub const QUOTA_EXCEEDED: &str = "QuotaExceeded";
    /// AddonsReady False: an enabled addon is not available on the tenant's nodes.
    pub const ADDONS_NOT_READY: &str = "AddonsNotReady";
    /// AddonsReady True while no node has joined: applied, waiting for a node to run on.
    pub const NO_NODES: &str = "NoNodes";
    /// AddonsReady True when every addon is turned off.
    pub const ADDONS_DISABLED: &str = "AddonsDisabled";
    /// Some konnectivity-server lacks the agent of some node.
    pub const AGENTS_MISSING: &str = "AgentsMissing";
    /// `spec.network.tunnel.enabled` is false: the apiservers dial the nodes directly.
    pub const TUNNEL_DISABLED: &str = "TunnelDisabled";
    /// BackupReady True: the newest backup Job succeeded and the next is not due yet.
    pub const SUCCEEDED: &str = "Succeeded";
    /// BackupReady Unknown: no backup has run yet, and none is overdue.
    pub const PENDING: &str = "Pending";
    /// BackupReady False: the schedule wanted a backup that did not succeed in time.
    pub const OVERDUE: &str = "Overdue";
    /// BackupReady False: `spec.backup.suspend` is set.
    pub const SUSPENDED: &str = "Suspended";
    /// BackupReady False: the newest backup Job failed; the message is its agent's.
    pub const FAILED: &str = "Failed";
    /// BackupReady False: no healthy voting etcd member to take a snapshot from.
    pub const ETCD_UNAVAILABLE: &str = "EtcdUnavailable";
    /// BackupReady False: the store refused or did not answer.
    pub const STORE_UNREACHABLE: &str = "StoreUnreachable";
    /// BackupReady False: the PKI copy (`<tenant>-pki-backup`) holds another cluster CA,
    /// the one older snapshots need; it is kept, not overwritten.
    pub const PKI_COPY_CONFLICT: &str = "PKICopyConflict";
    /// Restored False: the members are restoring the snapshot (or waiting to).
    pub const RESTORING: &str = "Restoring";
    /// Restored False: a member refused the snapshot or could not restore it; no member
    /// started on it.
    pub const RESTORE_FAILED: &str = "RestoreFailed";
    /// Restored True.
    pub const RESTORED: &str = "Restored";
}

/// Source of "now", injected so condition tests are deterministic.
pub trait Clock: Send + Sync {
    /// The current instant.
    fn now(&self) -> Timestamp;
}

/// The system's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// A clock that always reads the same instant (tests, dry runs).
#[derive(Clone, Copy, Debug)]
pub struct FixedClock(pub Timestamp);

impl Clock for FixedClock {
    fn now(&self) -> Timestamp {
        self.0
    }
}

/// Status of a condition, as the API spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionStatus {
    /// The condition holds.
    True,
    /// The condition does not hold.
    False,
    /// Nestor cannot tell (yet).
    Unknown,
}

impl ConditionStatus {
    /// The API's spelling: "True", "False" or "Unknown".
    pub fn as_str(self) -> &'static str {
        match self {
            ConditionStatus::True => "True",
            ConditionStatus::False => "False",
            ConditionStatus::Unknown => "Unknown",
        }
    }

    /// `True` when `ready`, `False` otherwise.
    pub fn from_bool(ready: bool) -> Self {
        if ready { ConditionStatus::True } else { ConditionStatus::False }
    }
}

/// The desired content of one condition; timestamps are filled in by [`set_condition`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConditionUpdate {
    /// One of [`types`].
    pub type_: &'static str,
    /// True, False or Unknown.
    pub status: ConditionStatus,
    /// One of [`reason`].
    pub reason: &'static str,
    /// Human-readable detail.
    pub message: String,
}

impl ConditionUpdate {
    /// Shorthand constructor.
    pub fn new(
        type_: &'static str,
        status: ConditionStatus,
        reason: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self { type_, status, reason, message: message.into() }
    }
}

/// What [`set_condition`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionChange {
    /// The condition was already exactly as requested.
    Unchanged,
    /// Reason, message or observedGeneration changed; the status did not.
    Updated,
    /// The condition is new or its status flipped; lastTransitionTime moved to now.
    Transitioned,
}

/// Sets the condition of `update.type_` in `conditions`, keeping its position and its
/// `lastTransitionTime` unless the status flips. New conditions are appended.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    update: &ConditionUpdate,
    observed_generation: Option<i64>,
    now: Timestamp,
) -> ConditionChange {
    // The API serializes times to the second; storing sub-second precision would make
    // the in-memory status differ from what a later read returns.
    let now = Time(Timestamp::from_second(now.as_second()).unwrap_or(now));
    let status = update.status.as_str();
    match conditions.iter_mut().find(|condition| condition.type_ == update.type_) {
        None => {
            conditions.push(Condition {
                type_: update.type_.to_string(),
                status: status.to_string(),
                reason: update.reason.to_string(),
                message: update.message.clone(),
                observed_generation,
                last_transition_time: now,
            });
            ConditionChange::Transitioned
        }
        Some(existing) => {
            let flipped = existing.status != status;
            let change = if flipped {
                ConditionChange::Transitioned
            } else if existing.reason != update.reason
                || existing.message != update.message
                || existing.observed_generation != observed_generation
            {
                ConditionChange::Updated
            } else {
                ConditionChange::Unchanged
            };
            if flipped {
                existing.last_transition_time = now;
                existing.status = status.to_string();
            }
            existing.reason = update.reason.to_string();
            existing.message.clone_from(&update.message);
            existing.observed_generation = observed_generation;
            change
        }
    }
}

/// The condition of the given type, if present.
pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|condition| condition.type_ == type_)
}

/// True when the condition of the given type exists and has status "True".
pub fn is_condition_true(conditions: &[Condition], type_: &str) -> bool {
    find_condition(conditions, type_).is_some_and(|condition| condition.status == "True")
}

/// The `Ready` summary of the component conditions: True only when every component is True.
pub fn summarize_ready(conditions: &[Condition]) -> ConditionUpdate {
    let not_ready: Vec<&str> = types::COMPONENTS
        .iter()
        .copied()
        .filter(|component| !is_condition_true(conditions, component))
        .collect();
    if not_ready.is_empty() {
        ConditionUpdate::new(types::READY, ConditionStatus::True, reason::READY, "control plane is ready")
    } else {
        ConditionUpdate::new(
            types::READY,
            ConditionStatus::False,
            reason::COMPONENTS_NOT_READY,
            format!("not ready: {}", not_ready.join(", ")),
        )
    }
}

/// The lifecycle phase for `conditions`, given the phase previously recorded.
///
/// Provisioning until the first time Ready is True; Degraded when Ready falls back
/// to False after that, or as soon as any condition reports a missing CA (which
/// cannot heal by waiting); Deleting once the object has a deletionTimestamp.
pub fn phase_from_conditions(previous: Option<Phase>, conditions: &[Condition], deleting: bool) -> Phase {
    if deleting {
        return Phase::Deleting;
    }
    // Lost or corrupt PKI state needs a human; the cluster is not merely converging.
    const BROKEN_PKI: [&str; 4] = [reason::CA_MISSING, "CAInvalid", "KeyMissing", "KeyInvalid"];
    if conditions
        .iter()
        .any(|condition| BROKEN_PKI.contains(&condition.reason.as_str()) && condition.status != "True")
    {
        return Phase::Degraded;
    }
    if is_condition_true(conditions, types::READY) {
        return Phase::Ready;
    }
    match previous {
        Some(Phase::Ready | Phase::Degraded) => Phase::Degraded,
        Some(Phase::Provisioning | Phase::Deleting) | None => Phase::Provisioning,
    }
}

/// True when two statuses differ at most in condition `lastTransitionTime`s, i.e.
/// writing `desired` over `current` would only churn timestamps.
pub fn status_equivalent(current: Option<&TenantClusterStatus>, desired: &TenantClusterStatus) -> bool {
    let Some(current) = current else {
        return *desired == TenantClusterStatus::default();
    };
    let without_times = |status: &TenantClusterStatus| {
        let mut status = status.clone();
        for condition in &mut status.conditions {
            condition.last_transition_time = Time(Timestamp::UNIX_EPOCH);
        }
        status
    };
    without_times(current) == without_times(desired)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_750_000_000 + second).expect("valid timestamp")
    }

    fn update(type_: &'static str, status: ConditionStatus, reason: &'static str) -> ConditionUpdate {
        ConditionUpdate::new(type_, status, reason, format!("{type_} is {status:?}"))
    }

    fn conditions_with(entries: &[(&'static str, ConditionStatus, &'static str)]) -> Vec<Condition> {
        let mut conditions = Vec::new();
        for (type_, status, reason) in entries {
            set_condition(&mut conditions, &update(type_, *status, reason), Some(1), at(0));
        }
        conditions
    }

    #[test]
    fn new_condition_is_appended_with_now_as_transition_time() {
        let mut conditions = Vec::new();
        let change = set_condition(
            &mut conditions,
            &update(types::ETCD_READY, ConditionStatus::False, reason::PROGRESSING),
            Some(3),
            at(10),
        );
        assert_eq!(change, ConditionChange::Transitioned);
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].type_, "EtcdReady");
        assert_eq!(conditions[0].status, "False");
        assert_eq!(conditions[0].reason, "Progressing");
        assert_eq!(conditions[0].observed_generation, Some(3));
        assert_eq!(conditions[0].last_transition_time, Time(at(10)));
    }

    #[test]
    fn transition_time_is_kept_when_status_stays_and_moves_when_it_flips() {
        let mut conditions = Vec::new();
        let progressing = update(types::ETCD_READY, ConditionStatus::False, reason::PROGRESSING);
        set_condition(&mut conditions, &progressing, Some(1), at(0));

        let same = set_condition(&mut conditions, &progressing, Some(1), at(60));
        assert_eq!(same, ConditionChange::Unchanged);
        assert_eq!(conditions[0].last_transition_time, Time(at(0)));

        let mut not_found = update(types::ETCD_READY, ConditionStatus::False, reason::NOT_FOUND);
        not_found.message = "StatefulSet missing".into();
        let updated = set_condition(&mut conditions, &not_found, Some(2), at(120));
        assert_eq!(updated, ConditionChange::Updated);
        assert_eq!(conditions[0].last_transition_time, Time(at(0)), "status did not flip");
        assert_eq!(conditions[0].reason, "NotFound");
        assert_eq!(conditions[0].message, "StatefulSet missing");
        assert_eq!(conditions[0].observed_generation, Some(2));

        let ready = update(types::ETCD_READY, ConditionStatus::True, reason::READY);
        let flipped = set_condition(&mut conditions, &ready, Some(2), at(180));
        assert_eq!(flipped, ConditionChange::Transitioned);
        assert_eq!(conditions[0].status, "True");
        assert_eq!(conditions[0].last_transition_time, Time(at(180)));
    }

    #[test]
    fn observed_generation_alone_counts_as_an_update() {
        let mut conditions = conditions_with(&[(types::PKI_READY, ConditionStatus::True, reason::READY)]);
        let change = set_condition(
            &mut conditions,
            &update(types::PKI_READY, ConditionStatus::True, reason::READY),
            Some(7),
            at(5),
        );
        assert_eq!(change, ConditionChange::Updated);
        assert_eq!(conditions[0].observed_generation, Some(7));
    }

    #[test]
    fn setting_one_condition_leaves_the_others_and_their_order_alone() {
        let mut conditions = conditions_with(&[
            (types::PKI_READY, ConditionStatus::True, reason::READY),
            (types::ETCD_READY, ConditionStatus::False, reason::PROGRESSING),
        ]);
        let before_pki = conditions[0].clone();
        set_condition(
            &mut conditions,
            &update(types::ETCD_READY, ConditionStatus::True, reason::READY),
            Some(1),
            at(9),
        );
        assert_eq!(conditions[0], before_pki);
        assert_eq!(conditions[1].type_, "EtcdReady");
        assert_eq!(conditions.len(), 2);
    }

    #[test]
    fn subsecond_clock_readings_are_truncated_like_the_api_does() {
        let mut conditions = Vec::new();
        let precise =
            at(42).checked_add(k8s_openapi::jiff::SignedDuration::from_millis(750)).expect("in range");
        set_condition(
            &mut conditions,
            &update(types::READY, ConditionStatus::False, reason::PROGRESSING),
            None,
            precise,
        );
        assert_eq!(conditions[0].last_transition_time, Time(at(42)));
    }

    #[test]
    fn ready_summary_lists_components_that_are_not_true() {
        let all_true: Vec<_> =
            types::COMPONENTS.iter().map(|type_| (*type_, ConditionStatus::True, reason::READY)).collect();
        let ready = summarize_ready(&conditions_with(&all_true));
        assert_eq!(ready.status, ConditionStatus::True);

        let mut partial = all_true.clone();
        partial[1] = (types::ETCD_READY, ConditionStatus::False, reason::PROGRESSING);
        partial.remove(5); // KubeconfigReady absent
        let not_ready = summarize_ready(&conditions_with(&partial));
        assert_eq!(not_ready.status, ConditionStatus::False);
        assert_eq!(not_ready.reason, reason::COMPONENTS_NOT_READY);
        assert_eq!(not_ready.message, "not ready: EtcdReady, KubeconfigReady");
    }

    #[test]
    fn phase_is_provisioning_until_first_ready() {
        let not_ready = conditions_with(&[(types::READY, ConditionStatus::False, reason::PROGRESSING)]);
        assert_eq!(phase_from_conditions(None, &not_ready, false), Phase::Provisioning);
        assert_eq!(phase_from_conditions(Some(Phase::Provisioning), &not_ready, false), Phase::Provisioning);
        assert_eq!(phase_from_conditions(None, &[], false), Phase::Provisioning);

        let ready = conditions_with(&[(types::READY, ConditionStatus::True, reason::READY)]);
        assert_eq!(phase_from_conditions(Some(Phase::Provisioning), &ready, false), Phase::Ready);
    }

    #[test]
    fn phase_is_degraded_when_ready_falls_back_after_having_been_true() {
        let not_ready =
            conditions_with(&[(types::READY, ConditionStatus::False, reason::COMPONENTS_NOT_READY)]);
        assert_eq!(phase_from_conditions(Some(Phase::Ready), &not_ready, false), Phase::Degraded);
        assert_eq!(phase_from_conditions(Some(Phase::Degraded), &not_ready, false), Phase::Degraded);

        let ready = conditions_with(&[(types::READY, ConditionStatus::True, reason::READY)]);
        assert_eq!(phase_from_conditions(Some(Phase::Degraded), &ready, false), Phase::Ready);
    }

    #[test]
    fn missing_ca_degrades_even_before_the_first_ready() {
        let conditions = conditions_with(&[
            (types::PKI_READY, ConditionStatus::False, reason::CA_MISSING),
            (types::READY, ConditionStatus::False, reason::CA_MISSING),
        ]);
        assert_eq!(phase_from_conditions(None, &conditions, false), Phase::Degraded);
    }

    #[test]
    fn deletion_wins_over_everything() {
        let ready = conditions_with(&[(types::READY, ConditionStatus::True, reason::READY)]);
        assert_eq!(phase_from_conditions(Some(Phase::Ready), &ready, true), Phase::Deleting);
    }

    #[test]
    fn statuses_differing_only_in_transition_times_are_equivalent() {
        let mut current = TenantClusterStatus {
            phase: Some(Phase::Provisioning),
            observed_generation: Some(1),
            conditions: conditions_with(&[(types::ETCD_READY, ConditionStatus::False, reason::PROGRESSING)]),
            ..TenantClusterStatus::default()
        };
        let mut desired = current.clone();
        desired.conditions[0].last_transition_time = Time(at(999));
        assert!(status_equivalent(Some(&current), &desired));

        desired.conditions[0].message = "2/3 members ready".into();
        assert!(!status_equivalent(Some(&current), &desired));

        current.conditions[0].message = "2/3 members ready".into();
        desired.observed_generation = Some(2);
        assert!(!status_equivalent(Some(&current), &desired));
    }

    #[test]
    fn missing_status_is_equivalent_only_to_an_empty_one() {
        assert!(status_equivalent(None, &TenantClusterStatus::default()));
        let desired =
            TenantClusterStatus { phase: Some(Phase::Provisioning), ..TenantClusterStatus::default() };
        assert!(!status_equivalent(None, &desired));
    }
}
