//! One pass over a live (not deleting) tenant, the whole pipeline on one screen:
//!
//! 1. validate the spec (pure: [`validate`], [`crate::api::validation`]);
//! 2. observe: the tenant's Secrets (read once, with their data), its etcd workload,
//!    and the probes of the running control plane ([`probe_health`]), which give the
//!    etcd scaling plan ([`crate::etcd::scaling::plan`]);
//! 3. build every object from the spec and what was observed (pure: [`crate::desired`]);
//! 4. apply them with server-side apply, skipping those already as built ([`super::apply`]);
//! 5. heal, scale and keep etcd's space ([`super::heal`]), and keep what nodes need
//!    inside the tenant ([`super::inside`]);
//! 6. observe the workloads and write the status once, if it changed ([`super::status`]);
//!    then say when to come back.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;

use super::apply::{apply_object, patch_status};
use super::conditions::ConditionStatus;
use super::context::Context;
use super::events::publish_changes;
use super::heal::{heal, keep_etcd_space, run_scaling_step};
use super::inside::keep_inside;
use super::names_of;
use super::observe::{self, OwnedCache, read, read_rollout, read_tenant_secrets};
use super::status::{component_conditions, compute_status, with_space};
use crate::api::{Phase, TenantCluster};
use crate::desired::{DesiredState, ObservedSecrets, desired_state_with_etcd};
use crate::error::{Error, Result};
use crate::etcd::maintenance::SpacePlan;
use crate::etcd::scaling::{self, ScalingInput, ScalingPlan};
use crate::health::{EtcdProbe, ProbeReport, apiserver_address, probe_tenant};
use crate::names::{MAX_TENANT_NAME_LENGTH, TenantNames};

/// Re-check interval of a Ready tenant: a safety net, since changes to owned
/// objects trigger a reconcile on their own.
const READY_RESYNC: Duration = Duration::from_secs(600);
/// Shortest re-check interval of a tenant that is still converging; see
/// [`converging_resync`] for how it grows.
const CONVERGING_RESYNC: Duration = Duration::from_secs(30);
/// Re-check interval while etcd is being scaled or its space maintained: each step is
/// one etcd call, and the next one waits for this pass's result.
const SCALING_RESYNC: Duration = Duration::from_secs(2);
/// Re-check interval while the addons inside the tenant are not available on its nodes.
const ADDONS_RESYNC: Duration = Duration::from_secs(15);

/// Checks what the API server's admission rules cannot express. Pure.
///
/// Admission already enforces most of the spec (see [`crate::api`]); this catches
/// objects admitted under an older CRD and cross-field rules CEL cannot state.
pub fn validate(tenant: &TenantCluster) -> Result<()> {
    let name = tenant.name_any();
    if name.len() > MAX_TENANT_NAME_LENGTH {
        return Err(Error::InvalidSpec {
            field: "metadata.name".into(),
            reason: format!(
                "{} characters is too long: derived object names must stay DNS labels (at most {MAX_TENANT_NAME_LENGTH})",
                name.len()
            ),
        });
    }
    crate::api::validation::validate(&tenant.spec).map_err(Error::Spec)
}

/// The pipeline for a live (not deleting) tenant; see the module comment.
///
/// etcd is probed before the build: while etcd is being scaled, its member list
/// decides how many members the StatefulSet and the etcd ConfigMap name (see
/// [`crate::etcd::scaling`]).
pub(super) async fn apply_tenant(tenant: &TenantCluster, ctx: &Context) -> Result<Action> {
    // 1. validate
    let names = names_of(tenant)?;
    if !tenant.spec.paused {
        validate(tenant)?;
    }

    // 2. observe and probe. The one read of the tenant's Secrets with their data: the
    // build keeps what exists, the apply compares with it, the probes take their
    // credentials from it.
    let cache = ctx.owned_cache().await;
    let listed_secrets = read_tenant_secrets(&ctx.client, &names).await?;
    let etcd_workload = observe::observe_etcd(&ctx.client, cache.as_ref(), &names).await?;
    let report = probe_health(tenant, &names, &etcd_workload, &listed_secrets, cache.as_ref(), ctx).await?;
    let plan = scaling::plan(
        &names,
        &ScalingInput {
            wanted: tenant.spec.etcd.replicas,
            statefulset_replicas: etcd_workload.statefulset_replicas,
            settled: tenant.status.as_ref().and_then(|status| status.etcd_members),
            observation: report.as_ref().and_then(|report| report.etcd_members.as_ref()),
            claims: &etcd_workload.claims,
        },
    );

    // 3 and 4. build and apply (a paused tenant is observed only); a restored tenant
    // starts from the PKI copy its spec names, never from a new CA
    let built = if tenant.spec.paused {
        tracing::debug!("paused, observing only");
        None
    } else {
        let seeds = crate::backup::pki_seeds(tenant, &names, &listed_secrets, &ctx.client).await?;
        Some(build_and_apply(tenant, &names, &listed_secrets, &seeds, cache.as_ref(), &plan, ctx).await?)
    };

    // 5. heal, scale and keep etcd's space: one membership change per pass, the next
    // pass sees its result first; space maintenance only while the membership rests
    let (health, etcd_cluster_id, repaired) = heal(tenant, &names, report.as_ref(), plan.members, ctx).await;
    if let (Some(step), false, false) = (&plan.step, repaired, tenant.spec.paused) {
        run_scaling_step(tenant, &names, step, ctx).await;
    }
    let membership_changing = repaired || plan.step.is_some() || plan.progress.is_some();
    let space = keep_etcd_space(tenant, &names, report.as_ref(), membership_changing, ctx).await;

    // 5b. inside the tenant: what nodes need to join it
    let addons = match &built {
        Some(desired) => keep_inside(tenant, &names, desired, cache.as_ref(), report.as_ref(), ctx).await,
        None => None,
    };

    // 5c. backups: the CronJob and what outlives the tenant, the finished Jobs, a restore
    let etcd_formed = etcd_cluster_id.is_some()
        || tenant.status.as_ref().is_some_and(|status| status.etcd_cluster_id.is_some());
    let backups =
        crate::backup::keep_backups(tenant, &names, built.as_ref(), &listed_secrets, etcd_formed, ctx).await;

    // 6. observe the workloads, write the status once
    let observation =
        observe::observe(&ctx.client, cache.as_ref(), &names, secret_names(&listed_secrets, built.as_ref()))
            .await?;
    let problem = space.as_ref().and_then(|space| space.problem.as_deref());
    let mut updates =
        with_space(component_conditions(&names, &observation, &health, plan.progress.as_ref()), problem);
    // Addons not running on nodes that exist: nothing in the meta cluster moves when they
    // come up, so look again soon.
    let addons_waiting = addons.as_ref().is_some_and(|update| update.status == ConditionStatus::False);
    let inside_kept = addons.is_some();
    updates.extend(addons);
    updates.extend(super::status::tunnel_condition(&tenant.spec, health.tunnel.as_ref()));
    updates.extend(backups.conditions.iter().cloned());
    let running_version = observation.rollout.control_plane_version();
    let (mut status, changes) = compute_status(tenant, &updates, running_version, None, ctx.clock.now());
    if let Some(desired) = &built {
        record_build_facts(&mut status, desired);
    }
    // Recorded once and kept: from then on etcd members join rather than bootstrap.
    if status.etcd_cluster_id.is_none() {
        status.etcd_cluster_id = etcd_cluster_id;
    }
    if plan.settled {
        status.etcd_members = Some(tenant.spec.etcd.replicas);
    }
    if let Some(last_backup) = backups.last_backup {
        status.last_backup = Some(last_backup);
    }
    if patch_status(&ctx.client, tenant, &status, &ctx.metrics).await? {
        publish_changes(tenant, &changes, ctx).await;
    }
    let next = next_check(tenant, &status, built.as_ref(), &plan, ctx.clock.now());
    // Space maintenance moves no watched object either: one step per pass, come back soon.
    let next = if space.as_ref().is_some_and(SpacePlan::busy) { next.min(SCALING_RESYNC) } else { next };
    // Drift inside the tenant is repaired on the inside step's own period.
    let next = if inside_kept { next.min(ctx.inside.resync()) } else { next };
    // A backup that does not come by its deadline changes nothing watched: look then.
    let next = backups.recheck.map_or(next, |recheck| next.min(recheck));
    Ok(Action::requeue(if addons_waiting { next.min(ADDONS_RESYNC) } else { next }))
}

/// Builds every object of the tenant (pure, [`crate::desired`]) and applies those that
/// differ from the live ones.
async fn build_and_apply(
    tenant: &TenantCluster,
    names: &TenantNames,
    listed_secrets: &[Secret],
    seeds: &std::collections::BTreeMap<String, crate::desired::SecretData>,
    cache: Option<&OwnedCache>,
    plan: &ScalingPlan,
    ctx: &Context,
) -> Result<DesiredState> {
    let mut observed = ObservedSecrets::from_secrets(listed_secrets);
    for (name, data) in seeds {
        if !observed.contains(name) {
            tracing::info!(secret = %name, "seeding from the PKI copy (spec.restore.pki)");
            observed.insert(name.clone(), data.clone());
        }
    }
    let rollout = read_rollout(&ctx.client, cache, names).await?;
    let desired = desired_state_with_etcd(
        tenant,
        &observed,
        &rollout,
        ctx.clock.now(),
        plan.members,
        ctx.operator_namespace.as_deref(),
    )?;
    // Seeded Secrets are loaded, not generated, yet do not exist: they are created.
    let mut desired = desired;
    desired.loaded_key_secrets.retain(|name| !seeds.contains_key(name));
    for issued in &desired.issued {
        tracing::info!(secret = %issued.secret_name, reason = %issued.reason, "issuing certificate");
    }
    let spec_version = Some(tenant.spec.version.trim_start_matches('v'));
    if desired.controller_manager_version.as_deref() != spec_version
        || desired.scheduler_version.as_deref() != spec_version
    {
        // The Deployment status changes as the apiserver rolls, which brings us back here.
        tracing::info!(
            controller_manager = desired.controller_manager_version.as_deref().unwrap_or("not applied"),
            scheduler = desired.scheduler_version.as_deref().unwrap_or("not applied"),
            "holding the controller-manager and the scheduler until every apiserver replica runs {}",
            tenant.spec.version
        );
    }
    for object in &desired.objects {
        apply_object(object, &desired, listed_secrets, cache, ctx).await?;
    }
    // What was just applied is what the meta cluster holds: the monitor's next
    // probe needs no read, even after this tenant's very first pass.
    ctx.probe_credentials.refresh(names, desired.secrets());
    Ok(desired)
}

/// When the pass should come back on its own (pure). Probes between passes are the
/// health monitor's (see [`super::monitor`]): it asks for a pass when one finds
/// something the status does not say, so this is a safety net, except for the
/// renewal of a certificate and the next etcd scaling step, which no watch brings.
fn next_check(
    tenant: &TenantCluster,
    status: &crate::api::TenantClusterStatus,
    built: Option<&DesiredState>,
    plan: &ScalingPlan,
    now: jiff::Timestamp,
) -> Duration {
    let resync = match status.phase {
        Some(Phase::Ready) => READY_RESYNC,
        _ if tenant.spec.paused => READY_RESYNC,
        _ => converging_resync(&status.conditions, now),
    };
    let renewal = built.map(|desired| until(desired.renewal_due_at, now));
    let resync = renewal.map_or(resync, |renewal| resync.min(renewal));
    // A membership change moves no watched object: come back soon to take the next step.
    let scaling = !tenant.spec.paused && (plan.step.is_some() || plan.progress.is_some());
    if scaling { resync.min(SCALING_RESYNC) } else { resync }
}

/// Re-check interval of a tenant that is not Ready: as long as its conditions have
/// stood still, between [`CONVERGING_RESYNC`] and [`READY_RESYNC`] (pure). A condition's
/// `lastTransitionTime` moves only when its value flips, so the newest one says when
/// the tenant last changed.
///
/// Why it grows: this requeue is a safety net, not what moves a tenant along. A change
/// to an owned object (a workload's ready count included) brings a pass through the
/// watches, and the health monitor asks for one when a probe disagrees with a
/// condition. A tenant that has not changed for ten minutes is waiting on something
/// outside Nestor (an image, a node, a volume), and re-reading it every 30 s finds the
/// same. At scale those re-reads were most of the work: 817 tenants that never become
/// Ready (the scale benchmark's simulated pods) asked for 27 passes/s, more than the
/// operator completes, and new tenants waited behind them. Growing with the stillness,
/// a stuck tenant is re-read 30, 60, 120, 240, 480 and 960 s after its last change,
/// then every 600 s like a Ready one.
fn converging_resync(conditions: &[Condition], now: jiff::Timestamp) -> Duration {
    let last_change = conditions.iter().map(|condition| condition.last_transition_time.0).max();
    let still = last_change
        .map_or(Duration::ZERO, |at| Duration::try_from(now.duration_since(at)).unwrap_or_default());
    still.clamp(CONVERGING_RESYNC, READY_RESYNC)
}

/// Time from `now` until `at`, at least one second (a due renewal is retried, not spun on).
fn until(at: jiff::Timestamp, now: jiff::Timestamp) -> Duration {
    let remaining = at.duration_since(now);
    Duration::try_from(remaining).unwrap_or_default().max(Duration::from_secs(1))
}

/// The names of the tenant's Secrets after the apply stage: those listed at the start
/// of the pass and those it applied.
fn secret_names(listed: &[Secret], built: Option<&DesiredState>) -> std::collections::BTreeSet<String> {
    let applied =
        built.into_iter().flat_map(DesiredState::secrets).filter_map(|secret| secret.metadata.name.clone());
    listed.iter().filter_map(|secret| secret.metadata.name.clone()).chain(applied).collect()
}

/// Probes the tenant (see [`probe_tenant`]); `None` when probes are off. etcd members
/// are probed up to the larger of the spec and the live StatefulSet, so a scaling sees
/// the members it adds and removes. The probe credentials come from `listed_secrets`,
/// and replace what the monitor's probes reuse (see [`ProbeCredentialsCache`]); the
/// pass reads nothing more for its probe.
async fn probe_health(
    tenant: &TenantCluster,
    names: &TenantNames,
    etcd: &observe::EtcdWorkload,
    listed_secrets: &[Secret],
    cache: Option<&OwnedCache>,
    ctx: &Context,
) -> Result<Option<ProbeReport>> {
    if ctx.health_settings.interval.is_none() {
        ctx.health.forget(&ObjectRef::from_obj(tenant));
        return Ok(None);
    }
    let wanted = tenant.spec.etcd.replicas;
    let running = etcd.statefulset_replicas.unwrap_or(wanted);
    let service =
        read(&ctx.client, cache.map(|cache| &cache.services), &names.namespace, &names.apiserver()).await?;
    let credentials = ctx.probe_credentials.refresh(names, listed_secrets);
    let pods = observe::tenant_pods(&ctx.client, cache, names).await.map_err(|error| error.to_string());
    let report = probe_tenant(
        names,
        &credentials,
        Ok(apiserver_address(service.as_ref())),
        pods,
        EtcdProbe { members: wanted.max(running), expected: running },
        ctx.clock.now(),
        ctx.health_settings.timeout,
    )
    .await;
    tracing::debug!(?report, "probed");
    Ok(Some(report))
}

/// Status fields only the build stage knows. Written after the Secrets were applied,
/// so `certificatesExpireAt` also proves the PKI exists (see [`crate::desired`]).
fn record_build_facts(status: &mut crate::api::TenantClusterStatus, desired: &DesiredState) {
    status.endpoint = Some(desired.endpoint.clone());
    status.certificates_expire_at = Some(Time(desired.certificates_expire_at));
}

#[cfg(test)]
mod tests {
    use kube::api::ObjectMeta;

    use super::*;
    use crate::reconcile::test_support::tenant;

    #[test]
    fn a_converging_tenant_is_resynced_as_long_as_it_has_stood_still() {
        let at = |second: i64| jiff::Timestamp::from_second(1_750_000_000 + second).expect("valid");
        let changed_at = |seconds: &[i64]| -> Vec<Condition> {
            seconds
                .iter()
                .map(|&second| Condition {
                    type_: "EtcdReady".into(),
                    status: "False".into(),
                    reason: "Test".into(),
                    message: String::new(),
                    observed_generation: Some(1),
                    last_transition_time: Time(at(second)),
                })
                .collect()
        };
        assert_eq!(converging_resync(&[], at(0)), CONVERGING_RESYNC, "no status yet");
        assert_eq!(converging_resync(&changed_at(&[0]), at(5)), CONVERGING_RESYNC, "just changed");
        assert_eq!(converging_resync(&changed_at(&[0]), at(120)), Duration::from_secs(120));
        assert_eq!(
            converging_resync(&changed_at(&[0, 100]), at(120)),
            CONVERGING_RESYNC,
            "the newest change counts"
        );
        assert_eq!(converging_resync(&changed_at(&[0]), at(86_400)), READY_RESYNC, "capped");
        assert_eq!(converging_resync(&changed_at(&[60]), at(0)), CONVERGING_RESYNC, "clock behind");
    }

    #[test]
    fn secret_names_are_the_listed_and_the_applied() {
        let secret = |name: &str| Secret {
            metadata: ObjectMeta { name: Some(name.into()), ..ObjectMeta::default() },
            ..Secret::default()
        };
        let listed = [secret("old"), secret("kept")];
        assert_eq!(
            secret_names(&listed, None),
            ["kept".to_string(), "old".to_string()].into_iter().collect()
        );
    }

    #[test]
    fn validate_rejects_names_too_long_for_derived_objects() {
        assert!(validate(&tenant("team-a")).is_ok());
        let error = validate(&tenant(&"a".repeat(MAX_TENANT_NAME_LENGTH + 1))).expect_err("too long");
        assert!(error.is_permanent());
        assert!(matches!(&error, Error::InvalidSpec { field, .. } if field == "metadata.name"), "{error}");
    }

    #[test]
    fn renewal_requeue_is_the_time_left_and_never_zero() {
        let now = jiff::Timestamp::from_second(1_750_000_000).expect("valid");
        let later = now.checked_add(jiff::SignedDuration::from_secs(90)).expect("valid");
        assert_eq!(until(later, now), Duration::from_secs(90));
        assert_eq!(until(now, later), Duration::from_secs(1), "an overdue renewal retries in 1 s");
    }
}
