//! The actions a pass takes on what the probes found: restart an apiserver pod that
//! stopped answering, release a leader Lease held by a stranger to its component,
//! replace an etcd member that lost its data, take one etcd
//! scaling step, and keep etcd inside its space quota. The decisions are pure and live elsewhere ([`crate::health`] for the
//! debounce, the wedged pod and the Lease, [`crate::etcd::membership`] and
//! [`crate::etcd::scaling`] and [`crate::etcd::maintenance`] for etcd); this module carries them out against the meta
//! cluster and tenant etcd, and says so in Events. None of them fails the pass: a
//! failed action is logged, and the next pass decides again from what it sees.

use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolumeClaim, Pod};
use kube::Api;
use kube::api::{DeleteParams, Preconditions};
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::ObjectRef;

use super::context::Context;
use super::events::{publish, truncate_note};
use crate::api::TenantCluster;
use crate::etcd::maintenance::{
    self, MemberSpace, SpaceInput, SpaceMemory, SpacePlan, SpaceStep, StepOutcome,
};
use crate::etcd::membership::{self, EtcdObservation, MemberRepair, MembershipError};
use crate::etcd::scaling::ScalingStep;
use crate::health::lease::{LEASE_NAMESPACE, LeaseRelease, Released};
use crate::health::{HealthVerdicts, PodRestart, ProbeReport};
use crate::metrics::{MemberSpaceSample, WriteVerb};
use crate::names::TenantNames;

/// After an etcd member replacement, no other for this many broken-member thresholds.
const MEMBER_REPAIR_COOLDOWN_FACTOR: u32 = 3;

/// Feeds a probe pass to the tenant's debounce state and, unless the tenant is
/// paused, restarts an apiserver pod that stopped answering, releases the leader
/// Leases held by strangers to their component, and replaces an etcd
/// member (of the `etcd_members` the StatefulSet runs) that lost its data. Probe
/// failures are results, not errors: this never fails the pass. Also returns etcd's
/// cluster ID when etcd answered healthy, and whether an etcd member was replaced.
pub(super) async fn heal(
    tenant: &TenantCluster,
    names: &TenantNames,
    report: Option<&ProbeReport>,
    etcd_members: i32,
    ctx: &Context,
) -> (HealthVerdicts, Option<String>, bool) {
    let key = ObjectRef::from_obj(tenant);
    let (Some(interval), Some(report)) = (ctx.health_settings.interval, report) else {
        return (HealthVerdicts::default(), None, false);
    };
    let (verdicts, restart) = ctx.health.record(&key, report, ctx.clock.now(), &ctx.health_settings);
    if let Some(restart) = restart {
        if tenant.spec.paused {
            tracing::info!(pod = %restart.name, error = %restart.error, "apiserver pod not answering; paused, not restarting it");
        } else {
            restart_apiserver_pod(tenant, names, &restart, ctx).await;
        }
    }
    if !report.lease_releases.is_empty() {
        if tenant.spec.paused {
            tracing::info!("leader Lease held by a stranger; paused, not releasing it");
        } else {
            release_leader_leases(tenant, names, &report.lease_releases, ctx).await;
        }
    }
    let etcd_healthy = report.etcd.as_ref().is_some_and(crate::health::ProbeOutcome::is_healthy);
    let cluster_id = report.etcd_members.as_ref().filter(|_| etcd_healthy).and_then(|seen| seen.cluster_id());
    // Only once the cluster formed (and the members' ConfigMap, applied earlier in this
    // pass, says `existing`): a re-added member must join, not bootstrap.
    let formed = tenant.status.as_ref().is_some_and(|status| status.etcd_cluster_id.is_some());
    if let (Some(observation), true, false) = (&report.etcd_members, formed, tenant.spec.paused) {
        let threshold = membership::broken_threshold(interval);
        let now = ctx.clock.now();
        let cooling_down = ctx
            .member_repairs
            .lock()
            .map(|repairs| {
                repairs.get(&key).is_some_and(|last| {
                    now.duration_since(*last)
                        < jiff::SignedDuration::try_from(threshold * MEMBER_REPAIR_COOLDOWN_FACTOR)
                            .unwrap_or_default()
                })
            })
            .unwrap_or(false);
        let repair =
            membership::decide(names, etcd_members, observation, now, threshold).filter(|_| !cooling_down);
        if let Some(repair) = repair {
            replace_etcd_member_pod(tenant, names, &repair, ctx).await;
            if let Ok(mut repairs) = ctx.member_repairs.lock() {
                repairs.insert(key.clone(), now);
            }
            return (verdicts, cluster_id, true);
        }
    }
    (verdicts, cluster_id, false)
}

/// Takes one scaling step (see [`crate::etcd::scaling`]): a gateway call through
/// the etcd healthcheck client certificate, or the deletion of a removed member's
/// claim. A failure changes nothing the next pass cannot decide again from the
/// member list, so it is logged, not propagated.
pub(super) async fn run_scaling_step(
    tenant: &TenantCluster,
    names: &TenantNames,
    step: &ScalingStep,
    ctx: &Context,
) {
    tracing::info!(step = %step.describe(names), "scaling etcd");
    let note = match step {
        ScalingStep::DeleteClaim { claim, .. } => {
            let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &names.namespace);
            match claims.delete(claim, &DeleteParams::background()).await {
                Ok(_) => {
                    ctx.metrics.record_write("PersistentVolumeClaim", WriteVerb::Delete);
                    step.describe(names)
                }
                Err(kube::Error::Api(status)) if status.code == 404 => return,
                Err(error) => {
                    tracing::warn!(%claim, %error, "cannot delete the removed etcd member's claim");
                    return;
                }
            }
        }
        _ => {
            match crate::etcd::take_scaling_step(&ctx.client, names, step, ctx.health_settings.timeout).await
            {
                Ok(note) => {
                    let verb = match step {
                        ScalingStep::Remove { .. } => WriteVerb::Delete,
                        _ => WriteVerb::Apply,
                    };
                    ctx.metrics.record_write("EtcdMember", verb);
                    note
                }
                Err(error) => {
                    // Promotion fails until the learner caught up; that is expected.
                    tracing::info!(%error, step = %step.describe(names), "etcd scaling step not taken");
                    return;
                }
            }
        }
    };
    tracing::info!(%note, "scaled etcd");
    let event = Event {
        type_: EventType::Normal,
        reason: step.event_reason().into(),
        note: Some(truncate_note(note)),
        action: "Scale".into(),
        secondary: None,
    };
    publish(tenant, &event, ctx).await;
}

/// Replaces a broken etcd member: member remove and add through a healthy member,
/// then deletes its pod (UID precondition) so it restarts empty and joins.
async fn replace_etcd_member_pod(
    tenant: &TenantCluster,
    names: &TenantNames,
    repair: &MemberRepair,
    ctx: &Context,
) {
    tracing::warn!(member = %repair.pod_name, reason = %repair.reason, "replacing etcd member");
    let new_id =
        match crate::etcd::replace_member(&ctx.client, names, repair, ctx.health_settings.timeout).await {
            Ok(new_id) => new_id,
            Err(error) => {
                // A failed remove changed nothing; a failed add leaves the member unlisted,
                // which the next pass sees and completes with an add.
                if !matches!(error, MembershipError::Remove { .. } | MembershipError::Credentials) {
                    ctx.metrics.record_write("EtcdMember", WriteVerb::Delete);
                }
                tracing::warn!(member = %repair.pod_name, %error, "cannot replace etcd member");
                return;
            }
        };
    if repair.old_member_id.is_some() {
        ctx.metrics.record_write("EtcdMember", WriteVerb::Delete);
    }
    ctx.metrics.record_write("EtcdMember", WriteVerb::Apply);
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &names.namespace);
    let params = DeleteParams {
        preconditions: Some(Preconditions { uid: Some(repair.pod_uid.clone()), resource_version: None }),
        ..DeleteParams::default()
    };
    match pods.delete(&repair.pod_name, &params).await {
        Ok(_) => ctx.metrics.record_write("Pod", WriteVerb::Delete),
        // Gone or replaced meanwhile: its replacement starts with the new membership anyway.
        Err(kube::Error::Api(status)) if matches!(status.code, 404 | 409) => {}
        Err(error) => {
            tracing::warn!(pod = %repair.pod_name, %error, "cannot delete the replaced etcd member's pod")
        }
    }
    let old = repair.old_member_id.map_or_else(|| "none".to_string(), |id| format!("{id:x}"));
    let note = format!(
        "etcd member {} replaced: old ID {old}, new ID {new_id:x}; {}",
        repair.pod_name, repair.reason
    );
    tracing::warn!(member = %repair.pod_name, %note, "replaced etcd member");
    let event = Event {
        type_: EventType::Warning,
        reason: "EtcdMemberReplaced".into(),
        note: Some(truncate_note(note)),
        action: "Heal".into(),
        secondary: None,
    };
    publish(tenant, &event, ctx).await;
}

/// Deletes the leader Leases the probe found held by strangers to their component
/// (see [`crate::health::lease::foreign_holder`]), each on the condition that it is
/// still the version the probe read, so that the component's own pods take it on
/// their next try instead of waiting out its `leaseDurationSeconds`. A Lease renewed
/// or taken since, or gone, is left alone.
async fn release_leader_leases(
    tenant: &TenantCluster,
    names: &TenantNames,
    releases: &[LeaseRelease],
    ctx: &Context,
) {
    // Refreshed by this pass's probe: no request to the meta cluster.
    let credentials = ctx.probe_credentials.get(&ctx.client, names).await;
    for release in releases {
        let lease = format!("{LEASE_NAMESPACE}/{}", release.lease.name);
        match credentials.release_lease(names, release, ctx.health_settings.timeout).await {
            Ok(Released::Deleted) => {
                let note = format!(
                    "leader Lease {lease} was held by {}, which is not a {} pod of this tenant; \
                     deleted so that its own pods can take it at once",
                    release.holder, release.lease.holder
                );
                tracing::info!(%lease, holder = %release.holder, "released leader Lease");
                // The Lease (in the tenant) as the related object: Events of one reason
                // merge into a series that keeps its first note, and the controller
                // manager's and the scheduler's are released together after a restore.
                let secondary = Some(ObjectReference {
                    api_version: Some("coordination.k8s.io/v1".into()),
                    kind: Some("Lease".into()),
                    name: Some(release.lease.name.into()),
                    namespace: Some(LEASE_NAMESPACE.into()),
                    ..ObjectReference::default()
                });
                let event = Event {
                    type_: EventType::Normal,
                    reason: "LeaderLeaseReleased".into(),
                    note: Some(truncate_note(note)),
                    action: "Heal".into(),
                    secondary,
                };
                publish(tenant, &event, ctx).await;
            }
            Ok(outcome) => {
                tracing::debug!(%lease, holder = %release.holder, ?outcome, "leader Lease changed since probed; kept")
            }
            Err(error) => {
                tracing::warn!(%lease, holder = %release.holder, %error, "cannot release leader Lease")
            }
        }
    }
}

/// Grace period when deleting a wedged apiserver pod (not 0: that would remove the
/// pod object before the kubelet has stopped its containers).
const WEDGED_POD_GRACE_SECONDS: u32 = 1;

/// Deletes an apiserver pod whose `/livez` failed for too long; its Deployment
/// recreates it. Conditioned on the UID, so a replacement that took the name is safe.
async fn restart_apiserver_pod(
    tenant: &TenantCluster,
    names: &TenantNames,
    restart: &PodRestart,
    ctx: &Context,
) {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &names.namespace);
    let params = DeleteParams {
        preconditions: Some(Preconditions { uid: Some(restart.uid.clone()), resource_version: None }),
        // A process that has not answered for this long drains nothing: skip the
        // apiserver's shutdown delay and free its resources for the replacement.
        grace_period_seconds: Some(WEDGED_POD_GRACE_SECONDS),
        ..DeleteParams::default()
    };
    let reason = format!(
        "pod {} did not answer /livez for {}s while Running ({}); deleted so its Deployment replaces it",
        restart.name,
        restart.failing_for.as_secs(),
        restart.error
    );
    match pods.delete(&restart.name, &params).await {
        Ok(_) => {
            ctx.metrics.record_write("Pod", WriteVerb::Delete);
            tracing::warn!(pod = %restart.name, %reason, "restarted apiserver pod");
            let event = Event {
                type_: EventType::Warning,
                reason: "RestartedAPIServerPod".into(),
                note: Some(truncate_note(reason)),
                action: "Heal".into(),
                secondary: None,
            };
            publish(tenant, &event, ctx).await;
        }
        // Gone or replaced meanwhile: nothing left to heal.
        Err(kube::Error::Api(status)) if matches!(status.code, 404 | 409) => {}
        Err(error) => {
            tracing::warn!(pod = %restart.name, %error, "cannot delete the unresponsive apiserver pod")
        }
    }
}

/// The space maintenance's view of a probe (see [`crate::etcd::maintenance`]): the
/// members that answered and the plan from them and what earlier passes did. Reads
/// only; the monitor uses it to ask for a pass, the pass to act.
pub(super) fn space_plan(
    tenant: &TenantCluster,
    names: &TenantNames,
    observation: &EtcdObservation,
    ctx: &Context,
) -> (Vec<MemberSpace>, SpaceMemory, SpacePlan) {
    let members = maintenance::member_spaces(observation);
    let listed = observation.member_list.as_ref().map(|list| list.members.as_slice()).unwrap_or_default();
    let learners = listed.iter().filter(|member| member.is_learner).count();
    let memory = ctx.etcd_space.get(&names.namespace, &names.tenant);
    let plan = maintenance::plan(&SpaceInput {
        members: &members,
        voters: listed.len() - learners,
        learners,
        wanted_quota: tenant.spec.etcd.quota_bytes(),
        pods: &observation.pods,
        ephemeral: tenant.spec.etcd.storage.ephemeral,
        memory: &memory,
        now: ctx.clock.now(),
    });
    ctx.metrics.record_etcd_space(
        &names.namespace,
        &names.tenant,
        &members
            .iter()
            .map(|member| MemberSpaceSample {
                member: member.target.name.clone(),
                db_size: member.db_size,
                in_use: member.in_use,
                quota: member.quota.unwrap_or(tenant.spec.etcd.quota_bytes()),
            })
            .collect::<Vec<_>>(),
        plan.nospace,
    );
    (members, memory, plan)
}

/// Keeps the tenant's etcd inside its quota: takes the one step the space plan calls
/// for (compact, defragment a member, disarm the alarm, restart a member on an old
/// quota), says so in an Event, and says once per alarm when the live data needs a
/// larger quota. `None` when etcd was not probed, or the pass must leave etcd alone
/// (paused, or a membership change in this pass).
pub(super) async fn keep_etcd_space(
    tenant: &TenantCluster,
    names: &TenantNames,
    report: Option<&ProbeReport>,
    membership_changing: bool,
    ctx: &Context,
) -> Option<SpacePlan> {
    let observation = report?.etcd_members.as_ref()?;
    let (_, memory, plan) = space_plan(tenant, names, observation, ctx);
    if tenant.spec.paused || membership_changing {
        return None;
    }
    match &plan.waiting {
        Some(waiting) if plan.nospace => tracing::info!(%waiting, "etcd NOSPACE recovery waits"),
        Some(waiting) => tracing::debug!(%waiting, "etcd space maintenance waits"),
        None => {}
    }
    let result = match &plan.step {
        None => None,
        Some(SpaceStep::RestartMember { pod, uid, quota, wanted }) => {
            restart_member_for_quota(tenant, names, pod, uid, (*quota, *wanted), ctx).await;
            None
        }
        Some(step) => Some(take_space_step(tenant, names, step, ctx).await),
    };
    if let Some(problem) = plan.problem.as_ref().filter(|_| !memory.quota_reported) {
        tracing::warn!(%problem, "etcd space exhausted");
        let event = Event {
            type_: EventType::Warning,
            reason: "EtcdQuotaExceeded".into(),
            note: Some(truncate_note(problem.clone())),
            action: "Maintain".into(),
            secondary: None,
        };
        publish(tenant, &event, ctx).await;
    }
    let memory = maintenance::remember(memory, &plan, result.as_ref(), ctx.clock.now());
    ctx.etcd_space.set(&names.namespace, &names.tenant, memory);
    Some(plan)
}

/// Runs one gateway step of the space maintenance; an Event says what it did.
async fn take_space_step(
    tenant: &TenantCluster,
    names: &TenantNames,
    step: &SpaceStep,
    ctx: &Context,
) -> Result<StepOutcome, String> {
    let (label, reason) = match step {
        SpaceStep::Compact { .. } => ("compact", "EtcdCompacted"),
        SpaceStep::Defragment { .. } => ("defragment", "EtcdDefragmented"),
        SpaceStep::Disarm { .. } => ("disarm", "EtcdAlarmDisarmed"),
        SpaceStep::RestartMember { .. } => ("restart", "EtcdMemberRestarted"),
    };
    if let SpaceStep::Defragment { member, why } = step {
        tracing::info!(member = %member.target.name, role = member.role(), %why, "defragmenting etcd member");
    }
    let result = crate::etcd::take_space_step(&ctx.client, names, step, ctx.health_settings.timeout).await;
    ctx.metrics.record_etcd_space_step(label, result.is_ok());
    let event = match &result {
        Ok(outcome) => {
            if let StepOutcome::Defragmented { before, after, took, .. } = outcome {
                ctx.metrics.record_defragmentation(*took, before.saturating_sub(*after));
            }
            let note = match (step, outcome) {
                (SpaceStep::Defragment { why, .. }, _) => format!("{}; was {why}", outcome.describe()),
                (SpaceStep::Disarm { largest: (size, quota), .. }, _) => format!(
                    "{}; largest database {} of quota {}",
                    outcome.describe(),
                    maintenance::mib(*size),
                    maintenance::mib(*quota)
                ),
                _ => outcome.describe(),
            };
            tracing::info!(%note, "etcd space maintenance");
            // The member's pod as the related object: Events of one reason are merged into
            // a series that keeps its first note, so each member gets its own, with the
            // bytes it freed.
            let secondary = match step {
                SpaceStep::Defragment { member, .. } => Some(ObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: Some(member.target.name.clone()),
                    namespace: Some(names.namespace.clone()),
                    ..ObjectReference::default()
                }),
                _ => None,
            };
            Event {
                type_: EventType::Normal,
                reason: reason.into(),
                note: Some(truncate_note(note)),
                action: "Maintain".into(),
                secondary,
            }
        }
        Err(error) => {
            tracing::warn!(step = label, %error, "etcd space maintenance step failed");
            Event {
                type_: EventType::Warning,
                reason: "EtcdMaintenanceFailed".into(),
                note: Some(truncate_note(format!("etcd {label} failed: {error}"))),
                action: "Maintain".into(),
                secondary: None,
            }
        }
    };
    publish(tenant, &event, ctx).await;
    result
}

/// Deletes an etcd member's pod (UID precondition) so that it restarts with the
/// StatefulSet's new quota flag; see [`crate::etcd::maintenance`] for when.
async fn restart_member_for_quota(
    tenant: &TenantCluster,
    names: &TenantNames,
    pod: &str,
    uid: &str,
    (quota, wanted): (u64, u64),
    ctx: &Context,
) {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &names.namespace);
    let params = DeleteParams {
        preconditions: Some(Preconditions { uid: Some(uid.to_string()), resource_version: None }),
        ..DeleteParams::default()
    };
    let deleted = match pods.delete(pod, &params).await {
        Ok(_) => true,
        Err(kube::Error::Api(status)) if matches!(status.code, 404 | 409) => return,
        Err(error) => {
            tracing::warn!(%pod, %error, "cannot restart etcd member for its new quota");
            false
        }
    };
    ctx.metrics.record_etcd_space_step("restart", deleted);
    if !deleted {
        return;
    }
    ctx.metrics.record_write("Pod", WriteVerb::Delete);
    let note = format!(
        "etcd member {pod} restarted to take quota {} (runs with {}): the NOSPACE alarm keeps it \
         unready, so the StatefulSet's rolling update would wait for it forever",
        maintenance::mib(wanted),
        maintenance::mib(quota)
    );
    tracing::info!(%note, "restarted etcd member");
    let event = Event {
        type_: EventType::Normal,
        reason: "EtcdMemberRestarted".into(),
        note: Some(truncate_note(note)),
        action: "Maintain".into(),
        secondary: None,
    };
    publish(tenant, &event, ctx).await;
}
