//! `nestor backup-agent`: the program a tenant's backup CronJob runs (the operator's
//! own image). It picks a healthy voting member, streams a snapshot from it through
//! etcd's gateway, checks it, writes it and its metadata to the store, deletes the
//! snapshots beyond `retain`, and reports as JSON in its termination message
//! ([`super::report`]). It never changes etcd's membership and holds no lock, so a
//! member replacement or a scaling step going on meanwhile is not blocked; a member
//! that is not a healthy voter is simply not chosen.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use hyper::Method;

use super::report::{AgentReport, TERMINATION_LOG, failure};
use super::snapshot;
use super::store::{self, SnapshotMetadata, StoreConfig};
use crate::etcd::gateway::{HealthResponse, StatusResponse};
use crate::names::TenantNames;
use crate::resources::ETCD_CLIENT_PORT;
use crate::transport::TlsClient;

/// Where the store is, as the CronJob's container passes it.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// A mounted directory (the backup volume claim).
    #[arg(long, conflicts_with = "s3_endpoint")]
    pub directory: Option<PathBuf>,
    /// The volume claim's name, for the location reported.
    #[arg(long, default_value = "")]
    pub claim: String,
    /// S3 endpoint URL; credentials from NESTOR_S3_ACCESS_KEY_ID and NESTOR_S3_SECRET_ACCESS_KEY.
    #[arg(long)]
    pub s3_endpoint: Option<String>,
    /// S3 bucket.
    #[arg(long, default_value = "")]
    pub s3_bucket: String,
    /// S3 region.
    #[arg(long, default_value = store::DEFAULT_REGION)]
    pub s3_region: String,
    /// Key prefix of the tenant's snapshots (the agent's; a restore names a whole key).
    #[arg(long, default_value = "")]
    pub prefix: String,
}

impl StoreArgs {
    /// The store configuration, with the S3 secret from the environment.
    pub fn config(&self) -> Result<StoreConfig, String> {
        match (&self.directory, &self.s3_endpoint) {
            (Some(directory), None) => Ok(StoreConfig::Directory(directory.clone())),
            (None, Some(endpoint)) => {
                let env = |name: &str| std::env::var(name).map_err(|_| format!("{name} is not set"));
                Ok(StoreConfig::S3 {
                    endpoint: endpoint.clone(),
                    bucket: self.s3_bucket.clone(),
                    region: self.s3_region.clone(),
                    access_key: env(store::ACCESS_KEY_ENV)?,
                    secret_key: env(store::SECRET_KEY_ENV)?,
                })
            }
            _ => Err("exactly one of --directory and --s3-endpoint is needed".into()),
        }
    }

    /// How the location of `key` is reported.
    pub fn location(&self, key: &str) -> String {
        match &self.s3_endpoint {
            Some(_) => format!("s3://{}/{key}.db", self.s3_bucket),
            None => format!("pvc://{}/{key}.db", self.claim),
        }
    }
}

/// `nestor backup-agent` (hidden: the CronJob runs it).
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// The TenantCluster.
    #[arg(long)]
    pub tenant: String,
    /// Its namespace.
    #[arg(long)]
    pub namespace: String,
    /// Number of etcd members to consider (ordinals 0..N).
    #[arg(long)]
    pub members: i32,
    /// The tenant's Kubernetes version, recorded in the metadata.
    #[arg(long, default_value = "")]
    pub kubernetes_version: String,
    /// Snapshots to keep.
    #[arg(long, default_value_t = 7)]
    pub retain: usize,
    /// Directory with the etcd client certificate: ca.crt, tls.crt, tls.key.
    #[arg(long, default_value = "/etc/nestor/etcd")]
    pub tls_dir: PathBuf,
    /// Scratch directory for the snapshot before it is uploaded.
    #[arg(long, default_value = "/scratch")]
    pub scratch: PathBuf,
    /// Where the JSON report goes.
    #[arg(long, default_value = TERMINATION_LOG)]
    pub report_file: PathBuf,
    /// Seconds to wait for a member's answer (and for each part of the snapshot stream).
    #[arg(long, default_value_t = 30)]
    pub timeout_seconds: u64,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// Runs one backup and writes its report; fails (exit code 1) when the backup did, so
/// the Job records a failure and retries with its backoff.
pub async fn run(args: AgentArgs) -> anyhow::Result<()> {
    let report = match backup(&args).await {
        Ok(report) => report,
        Err(report) => report,
    };
    let json = serde_json::to_string(&report)?;
    println!("{json}");
    if let Err(error) = std::fs::write(&args.report_file, &json) {
        eprintln!("cannot write the report to {}: {error}", args.report_file.display());
    }
    if report.succeeded() {
        Ok(())
    } else {
        anyhow::bail!("backup failed: {}: {}", report.reason, report.message)
    }
}

/// A member that answered healthy.
struct Candidate {
    name: String,
    host: String,
    ip: std::net::IpAddr,
    status: StatusResponse,
}

async fn backup(args: &AgentArgs) -> Result<AgentReport, AgentReport> {
    let started = Instant::now();
    let failed = |reason: &str| {
        let reason = reason.to_string();
        move |message: String| AgentReport::failed(&reason, message)
    };
    let timeout = Duration::from_secs(args.timeout_seconds);
    let names = TenantNames::new(&args.tenant, &args.namespace);
    let read = |file: &str| {
        let path = args.tls_dir.join(file);
        std::fs::read(&path).map_err(|error| format!("{}: {error}", path.display()))
    };
    let tls = TlsClient::new(
        &read("ca.crt").map_err(failed(failure::FAILED))?,
        &read("tls.crt").map_err(failed(failure::FAILED))?,
        &read("tls.key").map_err(failed(failure::FAILED))?,
    )
    .map_err(|error| AgentReport::failed(failure::FAILED, error.to_string()))?;

    // The store first: an unreachable one fails before etcd is asked for anything.
    let store_config = args.store.config().map_err(failed(failure::FAILED))?;
    let object_store = store::open(&store_config).map_err(failed(failure::STORE_UNREACHABLE))?;
    store::list(object_store.as_ref(), &args.store.prefix).await.map_err(|error| {
        AgentReport::failed(failure::STORE_UNREACHABLE, format!("{store_config:?}: {error}"))
    })?;

    let candidate = choose_member(&tls, &names, args.members, timeout)
        .await
        .map_err(failed(failure::ETCD_UNAVAILABLE))?;
    let now = jiff::Timestamp::now();
    let prefix = &args.store.prefix;
    let key = store::new_key(prefix, &args.tenant, now);
    std::fs::create_dir_all(&args.scratch).map_err(|error| {
        AgentReport::failed(failure::FAILED, format!("{}: {error}", args.scratch.display()))
    })?;
    let file_path = args.scratch.join("snapshot.db");
    let mut file = tokio::fs::File::create(&file_path)
        .await
        .map_err(|error| AgentReport::failed(failure::FAILED, format!("{}: {error}", file_path.display())))?;
    let taken =
        snapshot::take(&tls, candidate.ip, &candidate.host, &mut file, timeout).await.map_err(|error| {
            AgentReport::failed(failure::FAILED, format!("snapshot from {}: {error}", candidate.name))
        })?;
    drop(file);
    let snapshot_seconds = started.elapsed().as_secs_f64();

    let metadata = SnapshotMetadata {
        key: key.clone(),
        tenant: args.tenant.clone(),
        namespace: args.namespace.clone(),
        etcd_cluster_id: format!("{:x}", candidate.status.header.cluster_id),
        member: candidate.name.clone(),
        revision: candidate.status.header.revision as i64,
        size: taken.verified.size as i64,
        sha256: taken.verified.sha256.clone(),
        kubernetes_version: args.kubernetes_version.clone(),
        etcd_version: candidate.status.version.clone(),
        time: now.to_string(),
    };
    let unreachable = |error: String| AgentReport::failed(failure::STORE_UNREACHABLE, error);
    store::upload(object_store.clone(), &file_path, &store::snapshot_path(&key))
        .await
        .map_err(unreachable)?;
    // The metadata last: it marks the snapshot complete.
    let json = serde_json::to_vec_pretty(&metadata)
        .map_err(|error| AgentReport::failed(failure::FAILED, error.to_string()))?;
    use object_store::ObjectStoreExt;
    object_store.put(&store::metadata_path(&key), bytes::Bytes::from(json).into()).await.map_err(
        |error| {
            AgentReport::failed(
                failure::STORE_UNREACHABLE,
                format!("write metadata: {}", store::with_causes(&error)),
            )
        },
    )?;
    let _ = std::fs::remove_file(&file_path);

    let listed = store::list(object_store.as_ref(), prefix).await.map_err(unreachable)?;
    // Only this tenant's series: another tenant given the same prefix keeps its snapshots.
    let listed = store::series_of(listed, prefix, &args.tenant);
    let mut deleted = Vec::new();
    for old in store::beyond_retention(&listed, args.retain, &key) {
        store::delete(object_store.as_ref(), &old).await.map_err(unreachable)?;
        deleted.push(old);
    }
    eprintln!(
        "snapshot {key} of {} bytes (revision {}) from {} in {snapshot_seconds:.1}s, stored in {:.1}s in all; deleted {deleted:?}",
        metadata.size,
        metadata.revision,
        candidate.name,
        started.elapsed().as_secs_f64()
    );
    Ok(AgentReport {
        result: "Succeeded".into(),
        key: key.clone(),
        size: metadata.size,
        revision: metadata.revision,
        location: args.store.location(&key),
        time: metadata.time,
        seconds: started.elapsed().as_secs_f64(),
        deleted,
        ..AgentReport::default()
    })
}

/// A healthy voting member, a follower when there is one (the leader has the most to
/// do). Members that do not answer, learners and members without a leader are skipped.
async fn choose_member(
    tls: &TlsClient,
    names: &TenantNames,
    members: i32,
    timeout: Duration,
) -> Result<Candidate, String> {
    let mut healthy = Vec::new();
    let mut problems = Vec::new();
    for ordinal in 0..members.max(1) {
        let name = names.etcd_member_name(ordinal);
        let host = names.etcd_member_host(ordinal);
        match ask_member(tls, &host, timeout).await {
            Ok((ip, health, status)) if health.is_healthy() && !status.is_learner && status.leader != 0 => {
                healthy.push(Candidate { name, host, ip, status });
            }
            Ok((_, health, status)) => problems.push(format!(
                "{name}: healthy={} learner={} leader={} {}",
                health.health, status.is_learner, status.leader, health.reason
            )),
            Err(error) => problems.push(format!("{name}: {error}")),
        }
    }
    let follower =
        healthy.iter().position(|candidate| candidate.status.leader != candidate.status.header.member_id);
    match follower {
        Some(index) => Ok(healthy.swap_remove(index)),
        None => {
            healthy.pop().ok_or_else(|| format!("no healthy voting etcd member: {}", problems.join("; ")))
        }
    }
}

async fn ask_member(
    tls: &TlsClient,
    host: &str,
    timeout: Duration,
) -> Result<(std::net::IpAddr, HealthResponse, StatusResponse), String> {
    let address = tokio::net::lookup_host((host, ETCD_CLIENT_PORT as u16))
        .await
        .map_err(|error| format!("resolve {host}: {error}"))?
        .next()
        .ok_or_else(|| format!("resolve {host}: no address"))?;
    let health = tls
        .request(address, host, Method::GET, "/health", None, timeout)
        .await
        .map_err(|error| error.to_string())?;
    let health: HealthResponse =
        serde_json::from_slice(&health.body).map_err(|error| format!("/health: {error}"))?;
    let status = tls
        .request(address, host, Method::POST, "/v3/maintenance/status", Some("{}"), timeout)
        .await
        .map_err(|error| error.to_string())?;
    if !status.status.is_success() {
        return Err(format!("/v3/maintenance/status: HTTP {}: {}", status.status.as_u16(), status.summary()));
    }
    let status: StatusResponse =
        serde_json::from_slice(&status.body).map_err(|error| format!("/v3/maintenance/status: {error}"))?;
    Ok((address.ip(), health, status))
}
