//! `nestor backup`, `nestor backups` and `nestor restore`: a backup now, the stored
//! snapshots, and a TenantCluster created from one (see docs/backup.md).

use std::time::{Duration, Instant};

use clap::Args;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{ListParams, ObjectMeta, PostParams};
use kube::{Resource, ResourceExt};

use crate::api::{BackupDestination, RestorePki, RestoreSource, RestoreSpec, TenantCluster};
use crate::backup::keep::backup_selector;
use crate::backup::report::{self, AGENT_CONTAINER};
use crate::backup::store::{self, StoreConfig};
use crate::cli::cluster::{CliError, ClusterArgs, Session};
use crate::cli::view::resource_ref;
use crate::cli::wait::{Goal, wait_for};
use crate::names::TenantNames;

/// Arguments of `nestor backup`.
#[derive(Debug, Args)]
pub struct BackupArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Name of the TenantCluster (it must have spec.backup).
    pub name: String,
    /// How long to wait for the backup (Go duration).
    #[arg(long, default_value = "10m", value_parser = crate::duration::parse_duration)]
    pub timeout: Duration,
}

/// Arguments of `nestor backups`.
#[derive(Debug, Args)]
pub struct BackupsArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Name of the TenantCluster (it must have spec.backup).
    pub name: String,
}

/// Arguments of `nestor restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// The TenantCluster whose backup to restore (its spec.backup names the store).
    pub name: String,
    /// The snapshot's key, as `nestor backups` or status.lastBackup.key shows it.
    #[arg(long = "from", value_name = "KEY")]
    pub from: String,
    /// Name of the new TenantCluster (default: NAME, which must not exist any more).
    #[arg(long = "as", value_name = "NEW")]
    pub new_name: Option<String>,
    /// The TenantCluster NAME as saved YAML (`nestor get NAME -o yaml`), when it was deleted.
    #[arg(long, value_name = "FILE")]
    pub spec: Option<std::path::PathBuf>,
    /// Wait until the new TenantCluster is Ready.
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits (Go duration).
    #[arg(long, default_value = "15m", value_parser = crate::duration::parse_duration, requires = "wait")]
    pub timeout: Duration,
}

fn usage(text: impl Into<String>) -> CliError {
    CliError::Usage(text.into())
}

/// Runs `nestor backup`: a Job from the tenant's backup CronJob, waited for.
pub async fn run_backup(args: BackupArgs) -> anyhow::Result<()> {
    let session = args.cluster.connect().await?;
    let tenant = session.get_tenant(&args.name).await?;
    if tenant.spec.backup.is_none() {
        return Err(usage(format!(
            "{} has no spec.backup: set spec.backup.schedule and spec.backup.destination first",
            resource_ref(&args.name)
        ))
        .into());
    }
    let names = TenantNames::new(&args.name, &session.namespace);
    let cronjob = session
        .namespaced::<CronJob>()
        .get_opt(&names.backup())
        .await
        .map_err(|error| CliError::Api(error.to_string()))?
        .ok_or_else(|| {
            CliError::Unexpected(format!(
                "cronjob {:?} does not exist yet: is the operator running?",
                names.backup()
            ))
        })?;
    let template = cronjob.spec.as_ref().map(|spec| spec.job_template.clone()).unwrap_or_default();
    let started = Instant::now();
    let job_name = format!("{}-now-{}", names.backup(), jiff::Timestamp::now().as_second());
    let mut metadata = template.metadata.unwrap_or_default();
    metadata.name = Some(job_name.clone());
    metadata.namespace = Some(session.namespace.clone());
    metadata
        .annotations
        .get_or_insert_default()
        .insert("cronjob.kubernetes.io/instantiate".into(), "manual".into());
    // Owned by the CronJob, as its scheduled Jobs are: it goes with the tenant.
    metadata.owner_references = Some(vec![OwnerReference {
        api_version: CronJob::api_version(&()).into_owned(),
        kind: CronJob::kind(&()).into_owned(),
        name: names.backup(),
        uid: cronjob.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }]);
    let job = Job { metadata, spec: template.spec, status: None };
    session
        .namespaced::<Job>()
        .create(&PostParams::default(), &job)
        .await
        .map_err(|error| CliError::Api(error.to_string()))?;
    eprintln!("[0s] job {job_name} created");
    let deadline = started + args.timeout;
    let mut last_phase = String::new();
    loop {
        let elapsed = format!("{}s", started.elapsed().as_secs());
        let job = session
            .namespaced::<Job>()
            .get(&job_name)
            .await
            .map_err(|error| CliError::Api(error.to_string()))?;
        let pods = session
            .namespaced::<Pod>()
            .list(&ListParams::default().labels(&format!("job-name={job_name}")))
            .await
            .map_err(|error| CliError::Api(error.to_string()))?
            .items;
        let phase = pods
            .iter()
            .map(|pod| {
                format!(
                    "pod {} {}",
                    pod.name_any(),
                    pod.status.as_ref().and_then(|status| status.phase.clone()).unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        if phase != last_phase && !phase.is_empty() {
            eprintln!("[{elapsed}] {phase}");
            last_phase = phase;
        }
        if let Some((_, succeeded)) = report::job_finished(&job) {
            let outcome = report::newest_outcome(std::slice::from_ref(&job), &pods);
            let report = outcome.map(|outcome| outcome.report).unwrap_or_default();
            if succeeded {
                println!(
                    "backup {} taken: {} bytes, etcd revision {}, at {} ({:.1}s in the agent, {}s in all)",
                    report.key,
                    report.size,
                    report.revision,
                    report.location,
                    report.seconds,
                    started.elapsed().as_secs()
                );
                if !report.member.is_empty() {
                    println!("from etcd member {}", report.member);
                }
                if !report.passed_over.is_empty() {
                    println!("passed over: {}", report.passed_over.join("; "));
                }
                if !report.deleted.is_empty() {
                    println!("deleted by retention (spec.backup.retain): {}", report.deleted.join(", "));
                }
                return Ok(());
            }
            return Err(CliError::Unexpected(format!(
                "backup failed ({}): {}",
                report.reason, report.message
            ))
            .into());
        }
        if Instant::now() >= deadline {
            return Err(CliError::TimedOut(format!(
                "timed out after {}s waiting for job {job_name}",
                args.timeout.as_secs()
            ))
            .into());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Runs `nestor backups`.
pub async fn run_backups(args: BackupsArgs) -> anyhow::Result<()> {
    let session = args.cluster.connect().await?;
    let tenant = session.get_tenant(&args.name).await?;
    let backup = tenant
        .spec
        .backup
        .clone()
        .ok_or_else(|| usage(format!("{} has no spec.backup", resource_ref(&args.name))))?;
    let names = TenantNames::new(&args.name, &session.namespace);
    let prefix = store::prefix(&backup.destination, &names);
    if backup.destination.s3.is_some() {
        let config = s3_config(&session, &backup.destination).await?;
        let object_store = store::open(&config)
            .map_err(|error| CliError::Unexpected(format!("spec.backup.destination.s3: {error}")))?;
        let snapshots = store::list(object_store.as_ref(), &prefix)
            .await
            .map_err(|error| CliError::Unexpected(format!("spec.backup.destination.s3: {error}")))?;
        println!("{:<60} {:>12}  {:>10}  TIME", "KEY", "SIZE", "REVISION");
        for snapshot in snapshots {
            let metadata = store::read_metadata(object_store.as_ref(), &snapshot.key).await.ok();
            println!(
                "{:<60} {:>12}  {:>10}  {}",
                snapshot.key,
                snapshot.size,
                metadata.as_ref().map_or("-".into(), |metadata| metadata.revision.to_string()),
                metadata.map_or("(incomplete: no metadata)".into(), |metadata| metadata.time)
            );
        }
        return Ok(());
    }
    // A volume claim can only be read from a pod that mounts it: list what the backup
    // Jobs the CronJob keeps reported, and say where the rest are.
    let claim = crate::resources::backup_claim_name(&names, &backup.destination).unwrap_or_default();
    let selector = ListParams::default().labels(&backup_selector(&names));
    let pods = session
        .namespaced::<Pod>()
        .list(&selector)
        .await
        .map_err(|error| CliError::Api(error.to_string()))?
        .items;
    let mut reports: Vec<report::AgentReport> = pods
        .iter()
        .filter_map(|pod| report::pod_report(pod, AGENT_CONTAINER))
        .filter(report::AgentReport::succeeded)
        .collect();
    if let Some(last) = tenant.status.as_ref().and_then(|status| status.last_backup.as_ref())
        && !reports.iter().any(|report| report.key == last.key)
    {
        reports.push(report::AgentReport {
            result: "Succeeded".into(),
            key: last.key.clone(),
            size: last.size,
            revision: last.revision,
            time: last.time.0.to_string(),
            ..Default::default()
        });
    }
    reports.sort_by(|a, b| a.key.cmp(&b.key));
    println!("{:<60} {:>12}  {:>10}  TIME", "KEY", "SIZE", "REVISION");
    for report in reports {
        println!("{:<60} {:>12}  {:>10}  {}", report.key, report.size, report.revision, report.time);
    }
    eprintln!(
        "volume claim {claim}: the newest backups the cluster still knows of; up to spec.backup.retain ({}) are kept under {prefix}/ in the claim (mount it in a pod to see them all)",
        backup.retain
    );
    Ok(())
}

async fn s3_config(session: &Session, destination: &BackupDestination) -> Result<StoreConfig, CliError> {
    let s3 = destination.s3.as_ref().ok_or_else(|| usage("spec.backup.destination.s3 is not set"))?;
    let secret_name = s3.credentials_secret.clone().unwrap_or_default();
    let secret = session
        .namespaced::<Secret>()
        .get_opt(&secret_name)
        .await
        .map_err(|error| CliError::Api(error.to_string()))?
        .ok_or_else(|| {
            CliError::Unexpected(format!(
                "spec.backup.destination.s3.credentialsSecret: secret {secret_name:?} not found"
            ))
        })?;
    let value = |key: &str| {
        secret
            .data
            .as_ref()
            .and_then(|data| data.get(key))
            .map(|value| String::from_utf8_lossy(&value.0).to_string())
            .ok_or_else(|| {
                CliError::Unexpected(format!(
                    "spec.backup.destination.s3.credentialsSecret: secret {secret_name:?} has no key {key}"
                ))
            })
    };
    Ok(StoreConfig::S3 {
        endpoint: s3.endpoint.clone(),
        bucket: s3.bucket.clone(),
        region: s3.region.clone().unwrap_or_else(|| store::DEFAULT_REGION.into()),
        access_key: value(store::ACCESS_KEY_SECRET_KEY)?,
        secret_key: value(store::SECRET_KEY_SECRET_KEY)?,
    })
}

/// The TenantCluster `new_name` restoring `key` from `source`'s backup (pure): the
/// same spec, `spec.restore.from` the source's store (its own claim, named), and its
/// PKI copy.
pub fn restored_tenant(
    source: &TenantCluster,
    source_names: &TenantNames,
    new_name: &str,
    key: &str,
) -> Result<TenantCluster, CliError> {
    let backup = source.spec.backup.as_ref().ok_or_else(|| {
        usage(format!(
            "{} has no spec.backup: nothing says where its snapshots are",
            resource_ref(&source_names.tenant)
        ))
    })?;
    let mut destination = backup.destination.clone();
    if let Some(volume) = destination.volume.as_mut() {
        volume.claim_name = crate::resources::backup_claim_name(source_names, &backup.destination);
    }
    if let Some(s3) = destination.s3.as_mut() {
        // The key names the whole path; the prefix is for listing only.
        s3.prefix = None;
    }
    let mut spec = source.spec.clone();
    spec.restore = Some(RestoreSpec {
        from: RestoreSource { destination, key: key.to_string() },
        pki: Some(RestorePki { secret_name: source_names.pki_backup_secret() }),
    });
    if let (Some(backup), true) = (spec.backup.as_mut(), new_name != source_names.tenant) {
        // The new tenant backs up beside the old one's snapshots, not over them.
        if let Some(volume) = backup.destination.volume.as_mut() {
            volume.claim_name = None;
        }
        if let Some(s3) = backup.destination.s3.as_mut() {
            s3.prefix = None;
        }
    }
    Ok(TenantCluster {
        metadata: ObjectMeta {
            name: Some(new_name.to_string()),
            namespace: Some(source_names.namespace.clone()),
            labels: source.metadata.labels.clone(),
            ..ObjectMeta::default()
        },
        spec,
        status: None,
    })
}

/// Runs `nestor restore`.
pub async fn run_restore(args: RestoreArgs) -> anyhow::Result<()> {
    let session = args.cluster.connect().await?;
    let new_name = args.new_name.clone().unwrap_or_else(|| args.name.clone());
    let source = match &args.spec {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|error| usage(format!("--spec {}: {error}", path.display())))?;
            serde_yaml_ng::from_str::<TenantCluster>(&text)
                .map_err(|error| usage(format!("--spec {}: {error}", path.display())))?
        }
        None => session
            .tenants()
            .get_opt(&args.name)
            .await
            .map_err(|error| session.error(&args.name, error))?
            .ok_or_else(|| {
                usage(format!(
                    "{} not found: it was deleted; pass its saved YAML with --spec (nestor get {} -o yaml)",
                    resource_ref(&args.name),
                    args.name
                ))
            })?,
    };
    let names = TenantNames::new(&args.name, &session.namespace);
    if session.tenants().get_opt(&new_name).await.map_err(|error| session.error(&new_name, error))?.is_some()
    {
        return Err(usage(format!(
            "{} exists: delete it first, or restore with --as NEW",
            resource_ref(&new_name)
        ))
        .into());
    }
    let restored = restored_tenant(&source, &names, &new_name, &args.from)?;
    session
        .tenants()
        .create(&PostParams::default(), &restored)
        .await
        .map_err(|error| session.error(&new_name, error))?;
    println!("{} created from snapshot {}", resource_ref(&new_name), args.from);
    if args.wait {
        wait_for(&session, &new_name, &Goal::Ready, args.timeout).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restore_reads_the_source_store_and_keeps_its_pki() {
        let source: TenantCluster = serde_json::from_value(serde_json::json!({
            "apiVersion": "nestor.dev/v1alpha1", "kind": "TenantCluster",
            "metadata": {"name": "team-a", "namespace": "tenants"},
            "spec": {"version": "1.34.2", "backup": {"schedule": "@daily", "destination": {"volume": {}}}}
        }))
        .expect("tenant");
        let names = TenantNames::new("team-a", "tenants");
        let restored =
            restored_tenant(&source, &names, "team-b", "tenants/team-a/team-a-1").expect("restorable");
        let restore = restored.spec.restore.expect("restore");
        assert_eq!(restore.from.key, "tenants/team-a/team-a-1");
        assert_eq!(
            restore.from.destination.volume.expect("volume").claim_name.as_deref(),
            Some("team-a-backup")
        );
        assert_eq!(restore.pki.expect("pki").secret_name, "team-a-pki-backup");
        assert_eq!(restored.spec.backup.expect("kept").destination.volume.expect("volume").claim_name, None);

        let mut plain = source.clone();
        plain.spec.backup = None;
        let error = restored_tenant(&plain, &names, "team-a", "k").expect_err("no store");
        assert!(error.to_string().contains("spec.backup"), "{error}");
    }
}
