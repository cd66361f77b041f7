//! The pass's backup step ([`keep_backups`]), the PKI a restored tenant starts from
//! ([`pki_seeds`]) and what goes when a tenant with `deleteWithCluster` is deleted
//! ([`delete_kept_objects`]).
//!
//! The backup Job's outcome reaches the status only through this step: the agent
//! writes no status, the operator reads the finished Job's pod (see [`super::report`]).
//! The Jobs carry the tenant's labels and the controller watches them, so a Job that
//! finishes brings a pass at once.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret};
use kube::api::{DeleteParams, ListParams};
use kube::{Api, Client, ResourceExt};

use super::report::{self, JobOutcome, RESTORE_CONTAINER, failure, newest_outcome};
use crate::api::{BackupSpec, LastBackup, RestoreSpec, TenantCluster};
use crate::desired::{DesiredState, SecretData, pki_was_established};
use crate::error::{Error, Result};
use crate::names::{COMPONENT_LABEL, Component, TENANT_LABEL, TenantNames};
use crate::reconcile::Context;
use crate::reconcile::apply::{Existing, apply};
use crate::reconcile::conditions::{ConditionStatus, ConditionUpdate, reason, types};

/// How long after its scheduled time a backup may take before `BackupReady` says
/// `Overdue`: the CronJob starts within a minute, the snapshot and upload take the rest.
pub const OVERDUE_GRACE: Duration = Duration::from_secs(600);

/// How often a restore that has not formed etcd yet is looked at.
const RESTORE_RECHECK: Duration = Duration::from_secs(10);

/// What the backup step found, for the status.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BackupStep {
    /// A newer successful backup than `status.lastBackup` holds.
    pub last_backup: Option<LastBackup>,
    /// `BackupReady` and `Restored`, for the tenants that have them.
    pub conditions: Vec<ConditionUpdate>,
    /// When to look again (the next backup's deadline).
    pub recheck: Option<Duration>,
}

/// The backup step: applies the CronJob, the claim and the PKI copy (unless paused),
/// reads the finished Jobs, and follows a restore. Failures are logged and reported
/// in the conditions; they never fail the pass (the tenant is otherwise untouched).
pub async fn keep_backups(
    tenant: &TenantCluster,
    names: &TenantNames,
    desired: Option<&DesiredState>,
    listed_secrets: &[Secret],
    etcd_formed: bool,
    ctx: &Context,
) -> BackupStep {
    let mut step = BackupStep::default();
    let now = ctx.clock.now();
    if let Some(backup) = &tenant.spec.backup {
        let conflict = match desired {
            Some(desired) => apply_backup_objects(names, backup, desired, listed_secrets, ctx).await,
            None => None,
        };
        let (outcome, failed_jobs) = match read_jobs(&ctx.client, names).await {
            Ok(found) => found,
            Err(error) => {
                tracing::warn!(%error, "cannot read the backup Jobs");
                (None, 0)
            }
        };
        let current = tenant.status.as_ref().and_then(|status| status.last_backup.as_ref());
        let newer = outcome
            .as_ref()
            .and_then(|outcome| outcome.report.last_backup())
            .filter(|found| current.is_none_or(|current| found.time.0 > current.time.0));
        let last = newer.as_ref().or(current);
        let created = tenant.metadata.creation_timestamp.as_ref().map_or(now, |time| time.0);
        let (condition, recheck) = match conflict {
            // Backups go on (the snapshots are sound) but cannot be restored with the
            // copy as it is: say so until someone moves the old copy away.
            Some(message) => (
                ConditionUpdate::new(
                    types::BACKUP_READY,
                    ConditionStatus::False,
                    reason::PKI_COPY_CONFLICT,
                    message,
                ),
                Some(Duration::from_secs(60)),
            ),
            None => backup_condition(backup, outcome.as_ref(), last, created, now),
        };
        ctx.metrics.record_backup(
            &names.namespace,
            &names.tenant,
            last.map(|last| (last.time.0, last.size)),
            failed_jobs,
            now,
        );
        step.conditions.push(condition);
        step.recheck = recheck;
        step.last_backup = newer;
    } else if tenant.status.as_ref().is_some_and(|status| status.last_backup.is_some()) {
        // spec.backup was removed: the CronJob goes (the claim, the PKI copy and the
        // snapshots stay, as when the tenant is deleted).
        let cronjobs: Api<CronJob> = Api::namespaced(ctx.client.clone(), &names.namespace);
        if let Err(error) = cronjobs.delete(&names.backup(), &DeleteParams::background()).await
            && !is_not_found(&error)
        {
            tracing::warn!(%error, "cannot delete the backup CronJob");
        }
        ctx.metrics.forget_backup(&names.namespace, &names.tenant);
    }
    if let Some(restore) = &tenant.spec.restore {
        step.conditions.push(restore_condition(
            restore,
            etcd_formed,
            &restore_pods(&ctx.client, names, etcd_formed).await,
        ));
        if !etcd_formed {
            // An init container that refuses the snapshot changes no watched object.
            step.recheck = Some(step.recheck.map_or(RESTORE_RECHECK, |recheck| recheck.min(RESTORE_RECHECK)));
        }
    }
    step
}

fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(response) if response.code == 404)
}

/// Applies the backup claim, the PKI copy and the CronJob. Returns why the PKI copy was
/// left alone, when it holds another cluster CA than the tenant's.
async fn apply_backup_objects(
    names: &TenantNames,
    backup: &BackupSpec,
    desired: &DesiredState,
    listed_secrets: &[Secret],
    ctx: &Context,
) -> Option<String> {
    let metrics = ctx.metrics.as_ref();
    if let Some(claim) = crate::resources::backup_claim(names, backup) {
        // Only created: a bound claim's spec is mostly immutable, and one that exists
        // (named by claimName) is used as it is.
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &names.namespace);
        match claims.get_opt(claim.metadata.name.as_deref().unwrap_or_default()).await {
            Ok(Some(_)) => {}
            Ok(None) => {
                if let Err(error) = apply(&ctx.client, &claim, Existing::OrCreate, metrics).await {
                    tracing::warn!(%error, "cannot create the backup volume claim");
                }
            }
            Err(error) => tracing::warn!(%error, "cannot read the backup volume claim"),
        }
    }
    let existing: BTreeMap<String, BTreeMap<String, k8s_openapi::ByteString>> = listed_secrets
        .iter()
        .chain(desired.secrets())
        .filter_map(|secret| Some((secret.metadata.name.clone()?, secret.data.clone()?)))
        .collect();
    let mut conflict = None;
    if let Some(copy) = crate::resources::pki_backup_secret(names, &existing) {
        let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &names.namespace);
        match secrets.get_opt(&names.pki_backup_secret()).await {
            Ok(live) if live.as_ref().is_some_and(|live| other_cluster_ca(live, &copy)) => {
                let message = format!(
                    "Secret {} holds another cluster CA than this tenant's (that of an earlier tenant of the same name,                      which older snapshots need): it is kept, not overwritten; rename it (and pass the new name as                      spec.restore.pki.secretName to restore those snapshots), then the operator writes this tenant's copy",
                    names.pki_backup_secret()
                );
                tracing::warn!("{message}");
                conflict = Some(message);
            }
            Ok(_) => {
                if let Err(error) = apply(&ctx.client, &copy, Existing::OrCreate, metrics).await {
                    tracing::warn!(%error, "cannot write the PKI copy");
                }
            }
            Err(error) => tracing::warn!(%error, "cannot read the PKI copy"),
        }
    }
    if let Some(cronjob) = &desired.backup_cronjob
        && let Err(error) = apply(&ctx.client, cronjob, Existing::OrCreate, metrics).await
    {
        tracing::warn!(%error, "cannot apply the backup CronJob");
    }
    conflict
}

/// Whether the live PKI copy holds a cluster CA other than the one in `copy` (pure):
/// then overwriting it would orphan every snapshot taken under the old CA.
pub fn other_cluster_ca(live: &Secret, copy: &Secret) -> bool {
    let ca = |secret: &Secret| -> BTreeMap<String, Vec<u8>> {
        secret
            .data
            .iter()
            .flatten()
            .filter(|(key, _)| key.starts_with(crate::resources::PKI_COPY_CLUSTER_CA_PREFIX))
            .map(|(key, value)| (key.clone(), value.0.clone()))
            .collect()
    };
    let live_ca = ca(live);
    !live_ca.is_empty() && live_ca != ca(copy)
}

/// The selector of a tenant's backup Jobs and their pods.
pub fn backup_selector(names: &TenantNames) -> String {
    format!("{TENANT_LABEL}={},{COMPONENT_LABEL}={}", names.tenant, Component::Backup.label())
}

/// The newest finished backup Job with its report, and how many failed Jobs are kept.
async fn read_jobs(client: &Client, names: &TenantNames) -> Result<(Option<JobOutcome>, usize)> {
    let selector = ListParams::default().labels(&backup_selector(names));
    let jobs = Api::<Job>::namespaced(client.clone(), &names.namespace).list(&selector).await?.items;
    let failed = jobs.iter().filter(|job| report::job_finished(job).is_some_and(|(_, ok)| !ok)).count();
    if !jobs.iter().any(|job| report::job_finished(job).is_some()) {
        return Ok((None, failed));
    }
    let pods = Api::<Pod>::namespaced(client.clone(), &names.namespace).list(&selector).await?.items;
    Ok((newest_outcome(&jobs, &pods), failed))
}

/// `BackupReady` and when to look again (pure). A failed newest Job says why; a
/// backup the schedule wanted more than [`OVERDUE_GRACE`] ago and that did not succeed
/// is `Overdue`.
pub fn backup_condition(
    backup: &BackupSpec,
    outcome: Option<&JobOutcome>,
    last: Option<&LastBackup>,
    created: jiff::Timestamp,
    now: jiff::Timestamp,
) -> (ConditionUpdate, Option<Duration>) {
    let update =
        |status, reason, message: String| ConditionUpdate::new(types::BACKUP_READY, status, reason, message);
    let last_text = last.map_or("none yet".to_string(), |last| {
        format!("{} ({} bytes, revision {}, at {})", last.key, last.size, last.revision, last.time.0)
    });
    if backup.suspend {
        return (
            update(
                ConditionStatus::False,
                reason::SUSPENDED,
                format!("spec.backup.suspend is set; last backup: {last_text}"),
            ),
            None,
        );
    }
    if let Some(outcome) = outcome
        && !outcome.report.succeeded()
        && last.is_none_or(|last| outcome.finished > last.time.0)
    {
        let why = match outcome.report.reason.as_str() {
            failure::STORE_UNREACHABLE => reason::STORE_UNREACHABLE,
            failure::ETCD_UNAVAILABLE => reason::ETCD_UNAVAILABLE,
            _ => reason::FAILED,
        };
        let message = format!(
            "backup Job {} failed: {}; last backup: {last_text}",
            outcome.job, outcome.report.message
        );
        return (update(ConditionStatus::False, why, message), Some(Duration::from_secs(60)));
    }
    let cron = match crate::api::validation::parse_schedule(&backup.schedule) {
        Ok(cron) => cron,
        Err(error) => {
            return (
                update(ConditionStatus::False, reason::FAILED, format!("spec.backup.schedule: {error}")),
                None,
            );
        }
    };
    let since = last.map_or(created, |last| last.time.0);
    let Ok(due) = cron.find_next_occurrence(&since.to_zoned(jiff::tz::TimeZone::UTC), false) else {
        return (
            update(
                ConditionStatus::Unknown,
                reason::PENDING,
                format!("spec.backup.schedule {:?} never fires", backup.schedule),
            ),
            None,
        );
    };
    let due = due.timestamp();
    let deadline =
        due.checked_add(jiff::SignedDuration::try_from(OVERDUE_GRACE).unwrap_or_default()).unwrap_or(due);
    if now > deadline {
        let message =
            format!("no backup succeeded since {since}: one was due at {due}; last backup: {last_text}");
        return (update(ConditionStatus::False, reason::OVERDUE, message), Some(Duration::from_secs(60)));
    }
    let recheck =
        Duration::try_from(deadline.duration_since(now)).ok().map(|left| left + Duration::from_secs(1));
    match last {
        Some(_) => (
            update(
                ConditionStatus::True,
                reason::SUCCEEDED,
                format!("last backup {last_text}; next due at {due}"),
            ),
            recheck,
        ),
        None => (
            update(ConditionStatus::Unknown, reason::PENDING, format!("the first backup is due at {due}")),
            recheck,
        ),
    }
}

/// The etcd pods while a restore runs (none once etcd formed).
async fn restore_pods(client: &Client, names: &TenantNames, etcd_formed: bool) -> Vec<Pod> {
    if etcd_formed {
        return Vec::new();
    }
    let selector = format!("{TENANT_LABEL}={},{COMPONENT_LABEL}={}", names.tenant, Component::Etcd.label());
    match Api::<Pod>::namespaced(client.clone(), &names.namespace)
        .list(&ListParams::default().labels(&selector))
        .await
    {
        Ok(pods) => pods.items,
        Err(error) => {
            tracing::warn!(%error, "cannot read the etcd pods");
            Vec::new()
        }
    }
}

/// Why a member's restore init container failed, if it did: its termination message.
fn restore_failure(pod: &Pod) -> Option<String> {
    let status = pod
        .status
        .as_ref()?
        .init_container_statuses
        .iter()
        .flatten()
        .find(|status| status.name == RESTORE_CONTAINER)?;
    let terminated = [status.state.as_ref(), status.last_state.as_ref()]
        .into_iter()
        .flatten()
        .filter_map(|state| state.terminated.as_ref())
        .find(|terminated| terminated.exit_code != 0)?;
    let message = terminated.message.as_deref().unwrap_or_default().trim();
    let message = message.lines().last().unwrap_or(message);
    Some(format!("{}: {}", pod.name_any(), if message.is_empty() { "exited with an error" } else { message }))
}

/// `Restored` (pure): True once etcd formed from the snapshot; False with the first
/// member's refusal while none started; else restoring.
pub fn restore_condition(restore: &RestoreSpec, etcd_formed: bool, pods: &[Pod]) -> ConditionUpdate {
    let key = &restore.from.key;
    if etcd_formed {
        return ConditionUpdate::new(
            types::RESTORED,
            ConditionStatus::True,
            reason::RESTORED,
            format!("etcd restored from snapshot {key}"),
        );
    }
    let mut failures: Vec<String> = pods.iter().filter_map(restore_failure).collect();
    failures.sort();
    match failures.first() {
        Some(failure) => ConditionUpdate::new(
            types::RESTORED,
            ConditionStatus::False,
            reason::RESTORE_FAILED,
            format!("snapshot {key} refused, no etcd member started on it: {failure}"),
        ),
        None => ConditionUpdate::new(
            types::RESTORED,
            ConditionStatus::False,
            reason::RESTORING,
            format!("etcd members restoring snapshot {key}"),
        ),
    }
}

/// The tenant Secrets a restored tenant starts from (`spec.restore.pki`), by name:
/// empty without `spec.restore.pki` or once the tenant has its PKI. A missing or
/// incomplete copy is a permanent error naming the field: a CA is never generated in
/// its place.
pub async fn pki_seeds(
    tenant: &TenantCluster,
    names: &TenantNames,
    listed_secrets: &[Secret],
    client: &Client,
) -> Result<BTreeMap<String, SecretData>> {
    let Some(pki) = tenant.spec.restore.as_ref().and_then(|restore| restore.pki.as_ref()) else {
        return Ok(BTreeMap::new());
    };
    let has_ca = listed_secrets
        .iter()
        .any(|secret| secret.metadata.name.as_deref() == Some(&names.cluster_ca_secret()));
    if has_ca || pki_was_established(tenant) {
        return Ok(BTreeMap::new());
    }
    let field = "spec.restore.pki.secretName".to_string();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &names.namespace);
    let copy = secrets.get_opt(&pki.secret_name).await?.ok_or_else(|| Error::InvalidSpec {
        field: field.clone(),
        reason: format!(
            "Secret {}/{} does not exist: without it the restored tenant would need a new CA, which Nestor never generates silently",
            names.namespace, pki.secret_name
        ),
    })?;
    let seeds = crate::resources::seeds_from_pki_backup(names, &copy.data.unwrap_or_default()).map_err(
        |missing| Error::InvalidSpec {
            field,
            reason: format!(
                "Secret {}/{} lacks {}: not a complete PKI copy",
                names.namespace,
                pki.secret_name,
                missing.join(", ")
            ),
        },
    )?;
    Ok(seeds
        .into_iter()
        .map(|(name, data)| (name, data.into_iter().map(|(key, value)| (key, value.0)).collect()))
        .collect())
}

/// With `spec.backup.deleteWithCluster`, deletes what outlives the tenant otherwise:
/// the backup claim, the PKI copy and, for S3, the snapshots under the prefix.
pub async fn delete_kept_objects(tenant: &TenantCluster, names: &TenantNames, client: &Client) -> Result<()> {
    let Some(backup) = tenant.spec.backup.as_ref().filter(|backup| backup.delete_with_cluster) else {
        return Ok(());
    };
    let ignore_missing = |result: std::result::Result<_, kube::Error>| match result {
        Err(error) if !is_not_found(&error) => Err(error),
        _ => Ok(()),
    };
    if let Some(claim) = crate::resources::backup_claim_name(names, &backup.destination) {
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &names.namespace);
        ignore_missing(claims.delete(&claim, &DeleteParams::background()).await.map(|_| ()))?;
    }
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &names.namespace);
    ignore_missing(
        secrets.delete(&names.pki_backup_secret(), &DeleteParams::background()).await.map(|_| ()),
    )?;
    if let Some(s3) = &backup.destination.s3 {
        let credentials = secrets.get_opt(s3.credentials_secret.as_deref().unwrap_or_default()).await?;
        let value = |key: &str| {
            credentials
                .as_ref()
                .and_then(|secret| secret.data.as_ref()?.get(key))
                .map(|value| String::from_utf8_lossy(&value.0).to_string())
                .unwrap_or_default()
        };
        let config = super::store::StoreConfig::S3 {
            endpoint: s3.endpoint.clone(),
            bucket: s3.bucket.clone(),
            region: s3.region.clone().unwrap_or_else(|| super::store::DEFAULT_REGION.into()),
            access_key: value(super::store::ACCESS_KEY_SECRET_KEY),
            secret_key: value(super::store::SECRET_KEY_SECRET_KEY),
        };
        let prefix = super::store::prefix(&backup.destination, names);
        let deleted = async {
            let store = super::store::open(&config)?;
            for snapshot in super::store::list(store.as_ref(), &prefix).await? {
                super::store::delete(store.as_ref(), &snapshot.key).await?;
            }
            Ok::<_, String>(())
        };
        // A store that stays unreachable must not keep the tenant from going: logged.
        if let Err(error) = deleted.await {
            tracing::warn!(%error, "cannot delete the tenant's snapshots (spec.backup.deleteWithCluster)");
        }
    }
    tracing::info!("deleted the tenant's backups (spec.backup.deleteWithCluster)");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn at(second: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_750_000_000 + second).expect("valid")
    }

    fn spec(schedule: &str) -> BackupSpec {
        serde_json::from_value(serde_json::json!({"schedule": schedule, "destination": {"volume": {}}}))
            .expect("spec")
    }

    #[test]
    fn backup_ready_follows_the_newest_job_and_the_schedule() {
        // 1_750_000_000 is 2025-06-15T15:06:40Z; hourly backups are due at minute 0.
        let hourly = spec("0 * * * *");
        let (pending, recheck) = backup_condition(&hourly, None, None, at(0), at(60));
        assert_eq!((pending.status, pending.reason), (ConditionStatus::Unknown, reason::PENDING));
        assert!(pending.message.contains("2025-06-15T16:00:00Z"), "{}", pending.message);
        assert!(recheck.is_some());

        // Due at 16:00, overdue from 16:10 on.
        let (still_due, _) = backup_condition(&hourly, None, None, at(0), at(3600));
        assert_eq!(still_due.reason, reason::PENDING);
        let (overdue, _) = backup_condition(&hourly, None, None, at(0), at(4000));
        assert_eq!((overdue.status, overdue.reason), (ConditionStatus::False, reason::OVERDUE));

        let last =
            LastBackup { time: Time(at(3200)), key: "k".into(), size: 10, revision: 3, location: "l".into() };
        let (ready, _) = backup_condition(&hourly, None, Some(&last), at(0), at(3600));
        assert_eq!((ready.status, ready.reason), (ConditionStatus::True, reason::SUCCEEDED));

        let failed = JobOutcome {
            job: "b-2".into(),
            finished: at(3300),
            report: report::AgentReport::failed(failure::STORE_UNREACHABLE, "connection refused"),
        };
        let (unreachable, _) = backup_condition(&hourly, Some(&failed), Some(&last), at(0), at(3600));
        assert_eq!(
            (unreachable.status, unreachable.reason),
            (ConditionStatus::False, reason::STORE_UNREACHABLE)
        );
        assert!(unreachable.message.contains("connection refused"));
        let older_failure = JobOutcome { finished: at(3100), ..failed };
        let (ready, _) = backup_condition(&hourly, Some(&older_failure), Some(&last), at(0), at(3600));
        assert_eq!(ready.status, ConditionStatus::True, "a success after the failure counts");

        let mut suspended = hourly.clone();
        suspended.suspend = true;
        assert_eq!(backup_condition(&suspended, None, None, at(0), at(0)).0.reason, reason::SUSPENDED);
    }

    #[test]
    fn a_pki_copy_of_another_cluster_ca_is_not_overwritten() {
        let secret = |pairs: &[(&str, &[u8])]| Secret {
            data: Some(
                pairs
                    .iter()
                    .map(|(key, value)| (key.to_string(), k8s_openapi::ByteString(value.to_vec())))
                    .collect(),
            ),
            ..Secret::default()
        };
        let ours = secret(&[("cluster-ca.tls.crt", b"ca-1"), ("service-account.key", b"sa-1")]);
        let rotated_key = secret(&[("cluster-ca.tls.crt", b"ca-1"), ("service-account.key", b"sa-2")]);
        let earlier_tenant = secret(&[("cluster-ca.tls.crt", b"ca-0"), ("service-account.key", b"sa-0")]);
        assert!(!other_cluster_ca(&ours, &ours));
        assert!(!other_cluster_ca(&rotated_key, &ours), "the same CA: updated");
        assert!(other_cluster_ca(&earlier_tenant, &ours), "another CA: kept");
        assert!(!other_cluster_ca(&secret(&[]), &ours), "an empty copy is filled");
    }

    #[test]
    fn restored_says_which_member_refused_the_snapshot() {
        use k8s_openapi::api::core::v1::{
            ContainerState, ContainerStateTerminated, ContainerStatus, PodStatus,
        };
        let restore: RestoreSpec = serde_json::from_value(serde_json::json!({
            "from": {"destination": {"volume": {}}, "key": "ns/t/t-1"}
        }))
        .expect("spec");
        let refused = Pod {
            metadata: kube::api::ObjectMeta { name: Some("t-etcd-0".into()), ..Default::default() },
            status: Some(PodStatus {
                init_container_statuses: Some(vec![ContainerStatus {
                    name: RESTORE_CONTAINER.into(),
                    last_state: Some(ContainerState {
                        terminated: Some(ContainerStateTerminated {
                            exit_code: 1,
                            message: Some("snapshot ns/t/t-1 does not match its metadata".into()),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let condition = restore_condition(&restore, false, std::slice::from_ref(&refused));
        assert_eq!((condition.status, condition.reason), (ConditionStatus::False, reason::RESTORE_FAILED));
        assert!(
            condition.message.contains("t-etcd-0: snapshot ns/t/t-1 does not match"),
            "{}",
            condition.message
        );
        assert_eq!(restore_condition(&restore, false, &[]).reason, reason::RESTORING);
        assert_eq!(restore_condition(&restore, true, &[refused]).status, ConditionStatus::True);
    }
}
