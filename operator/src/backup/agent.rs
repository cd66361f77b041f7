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

/// What asking one member gave: its address and answers, or why it gave none.
struct Asked {
    name: String,
    host: String,
    answer: Result<(std::net::IpAddr, HealthResponse, StatusResponse), String>,
}

/// The member a snapshot is streamed from, and why each other one was not.
#[derive(Debug)]
struct Chosen {
    name: String,
    host: String,
    ip: std::net::IpAddr,
    status: StatusResponse,
    /// `<member>: <why not>` for every other member, by name.
    passed_over: Vec<String>,
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

    let asked = ask_members(&tls, &names, args.members, timeout).await;
    let candidate = choose_member(asked).map_err(failed(failure::ETCD_UNAVAILABLE))?;
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
        "snapshot {key} of {} bytes (revision {}) from {} in {snapshot_seconds:.1}s, stored in {:.1}s in all; deleted {deleted:?}; passed over {:?}",
        metadata.size,
        metadata.revision,
        candidate.name,
        started.elapsed().as_secs_f64(),
        candidate.passed_over
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
        member: candidate.name,
        passed_over: candidate.passed_over,
        ..AgentReport::default()
    })
}

/// Asks members 0..`members` for their health and status, one after the other.
async fn ask_members(tls: &TlsClient, names: &TenantNames, members: i32, timeout: Duration) -> Vec<Asked> {
    let mut asked = Vec::new();
    for ordinal in 0..members.max(1) {
        let host = names.etcd_member_host(ordinal);
        let answer = ask_member(tls, &host, timeout).await;
        asked.push(Asked { name: names.etcd_member_name(ordinal), host, answer });
    }
    asked
}

/// A healthy voting member among those `asked`, a follower when there is one (the
/// leader has the most to do). During a scaling step or a member replacement the list
/// holds members that are not there yet or are learners: they are passed over, never
/// waited for, so the backup neither waits on the change nor holds it up.
fn choose_member(asked: Vec<Asked>) -> Result<Chosen, String> {
    let mut fit = Vec::new();
    let mut passed_over = Vec::new();
    for member in asked {
        match member.answer {
            Ok((ip, health, status)) => match unfit(&health, &status) {
                None => {
                    fit.push(Chosen { name: member.name, host: member.host, ip, status, passed_over: vec![] })
                }
                Some(why) => passed_over.push(format!("{}: {why}", member.name)),
            },
            Err(error) => passed_over.push(format!("{}: {error}", member.name)),
        }
    }
    let leads = |candidate: &Chosen| candidate.status.leader == candidate.status.header.member_id;
    let Some(index) = fit.iter().position(|candidate| !leads(candidate)).or(fit.len().checked_sub(1)) else {
        return Err(format!("no healthy voting etcd member: {}", passed_over.join("; ")));
    };
    let mut chosen = fit.remove(index);
    for other in &fit {
        let role = if leads(other) { "leader" } else { "follower" };
        passed_over.push(format!("{}: {role}, not needed", other.name));
    }
    passed_over.sort();
    chosen.passed_over = passed_over;
    Ok(chosen)
}

/// Why a member that answered cannot give the snapshot, `None` when it can. A learner is
/// being added: it may still be catching up with the leader and it counts toward no
/// quorum. A member without a leader is cut off from the cluster. Both can answer
/// `/health` as healthy.
fn unfit(health: &HealthResponse, status: &StatusResponse) -> Option<String> {
    if status.is_learner {
        Some("learner (being added, not a voter)".into())
    } else if status.leader == 0 {
        Some("no leader".into())
    } else if !health.is_healthy() {
        Some(format!("unhealthy: {}", health.reason))
    } else {
        None
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::etcd::gateway::ResponseHeader;

    const LEADER: u64 = 1;

    /// Member `ordinal` (id ordinal + 1) answering: healthy or not, learner or not,
    /// following `leader` (0: none).
    fn answered(ordinal: u64, healthy: bool, learner: bool, leader: u64) -> Asked {
        let health = HealthResponse {
            health: healthy.to_string(),
            reason: if healthy { String::new() } else { "RAFT NO LEADER".into() },
        };
        let status = StatusResponse {
            header: ResponseHeader { member_id: ordinal + 1, cluster_id: 7, revision: 42 },
            leader,
            is_learner: learner,
            ..StatusResponse::default()
        };
        Asked {
            name: format!("team-a-etcd-{ordinal}"),
            host: format!("team-a-etcd-{ordinal}.team-a-etcd.tenants.svc"),
            answer: Ok((std::net::IpAddr::from([10, 0, 0, ordinal as u8]), health, status)),
        }
    }

    fn silent(ordinal: u64, error: &str) -> Asked {
        Asked {
            name: format!("team-a-etcd-{ordinal}"),
            host: format!("team-a-etcd-{ordinal}.team-a-etcd.tenants.svc"),
            answer: Err(error.into()),
        }
    }

    #[test]
    fn a_follower_is_chosen_over_the_leader() {
        let chosen = choose_member(vec![
            answered(0, true, false, LEADER),
            answered(1, true, false, LEADER),
            answered(2, true, false, LEADER),
        ])
        .expect("a member");
        assert_eq!(chosen.name, "team-a-etcd-1");
        assert_eq!(chosen.host, "team-a-etcd-1.team-a-etcd.tenants.svc");
        assert_eq!(
            chosen.passed_over,
            ["team-a-etcd-0: leader, not needed", "team-a-etcd-2: follower, not needed"]
        );
    }

    /// Scaling 1 -> 3 with member 1 added as a learner and member 2 not started: a
    /// healthy learner that follows the leader is what a follower looks like but for
    /// `isLearner`; the leader, the only voter, is chosen.
    #[test]
    fn during_a_scaling_step_learners_and_unstarted_members_are_passed_over() {
        let chosen = choose_member(vec![
            answered(0, true, false, LEADER),
            answered(1, true, true, LEADER),
            silent(2, "resolve team-a-etcd-2.team-a-etcd.tenants.svc: failed to lookup address"),
        ])
        .expect("the leader");
        assert_eq!(chosen.name, "team-a-etcd-0");
        assert_eq!(chosen.status.header.member_id, LEADER);
        assert_eq!(
            chosen.passed_over,
            [
                "team-a-etcd-1: learner (being added, not a voter)",
                "team-a-etcd-2: resolve team-a-etcd-2.team-a-etcd.tenants.svc: failed to lookup address",
            ]
        );
    }

    /// A member replacement: the replaced member has no data yet and no leader, or does
    /// not answer; a healthy follower is still there.
    #[test]
    fn during_a_member_replacement_a_healthy_follower_is_chosen() {
        let chosen = choose_member(vec![
            silent(0, "connection refused"),
            answered(1, false, false, 0),
            answered(2, true, false, 3),
            answered(3, true, false, 3),
        ])
        .expect("a follower");
        assert_eq!(chosen.name, "team-a-etcd-3");
        assert_eq!(chosen.passed_over.len(), 3, "{:?}", chosen.passed_over);
        assert!(chosen.passed_over.contains(&"team-a-etcd-1: no leader".to_string()));
    }

    #[test]
    fn an_unhealthy_voter_is_never_chosen() {
        let chosen = choose_member(vec![answered(0, false, false, LEADER), answered(1, true, false, LEADER)])
            .expect("1");
        assert_eq!(chosen.name, "team-a-etcd-1");
        assert_eq!(chosen.passed_over, ["team-a-etcd-0: unhealthy: RAFT NO LEADER"]);
    }

    #[test]
    fn without_a_healthy_voter_every_member_is_named() {
        let error = choose_member(vec![answered(0, true, true, LEADER), silent(1, "timed out")])
            .expect_err("no voter");
        assert_eq!(
            error,
            "no healthy voting etcd member: team-a-etcd-0: learner (being added, not a voter); team-a-etcd-1: timed out"
        );
    }
}
