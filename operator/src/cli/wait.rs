//! `nestor wait`: polls a TenantCluster once a second until it is Ready (or gone),
//! printing a progress line on stderr whenever its phase or a condition changes.
//! `upgrade --wait` and `delete` reuse [`wait_for`].
//!
//! Polling rather than a watch: one GET a second is negligible load, and it survives
//! API server restarts and dropped connections without resume logic.

use std::collections::BTreeMap;
use std::time::Duration;

use clap::{Args, ValueEnum};
use tokio::time::Instant;

use crate::api::TenantCluster;
use crate::cli::cluster::{CliError, ClusterArgs, Session};
use crate::cli::format::human_duration;
use crate::cli::view::{is_ready, not_ready_summary, progress_changes, progress_snapshot, resource_ref};

/// Default `--timeout` of the waiting verbs.
pub const DEFAULT_TIMEOUT: &str = "5m";

/// Time between two polls.
const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Arguments of `nestor wait`.
#[derive(Debug, Args)]
pub struct WaitArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,

    /// Name of the TenantCluster.
    pub name: String,

    /// The state to wait for.
    #[arg(long = "for", value_enum)]
    pub condition: WaitCondition,

    /// Give up after this long (Go duration: 90s, 5m, 1h).
    #[arg(long, default_value = DEFAULT_TIMEOUT, value_parser = crate::duration::parse_duration)]
    pub timeout: Duration,
}

/// `--for`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum WaitCondition {
    /// The Ready condition is True for the current spec.
    Ready,
    /// The object no longer exists (its finalizer is done).
    Deleted,
}

/// What a wait is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Goal {
    /// Ready for the current generation.
    Ready,
    /// Ready and running this Kubernetes version.
    ReadyAt(String),
    /// Gone.
    Deleted,
}

impl Goal {
    fn describe(&self) -> String {
        match self {
            Goal::Ready => "be Ready".into(),
            Goal::ReadyAt(version) => format!("be Ready at version {version}"),
            Goal::Deleted => "be deleted".into(),
        }
    }

    fn reached(&self, tenant: &TenantCluster) -> bool {
        match self {
            Goal::Ready => is_ready(tenant),
            Goal::ReadyAt(version) => {
                is_ready(tenant)
                    && tenant.status.as_ref().and_then(|status| status.version.as_deref())
                        == Some(version.as_str())
            }
            Goal::Deleted => false,
        }
    }

    /// What is still missing, for the timeout message.
    fn missing(&self, tenant: &TenantCluster) -> String {
        match self {
            Goal::Deleted => {
                let phase =
                    crate::cli::view::phase_text(tenant.status.as_ref().and_then(|status| status.phase));
                let finalizers = tenant.metadata.finalizers.clone().unwrap_or_default().join(", ");
                let deleting =
                    if tenant.metadata.deletion_timestamp.is_some() { "deleting" } else { "not deleting" };
                format!("{deleting}, phase {phase}; finalizers: {finalizers}")
            }
            Goal::ReadyAt(_) if is_ready(tenant) => format!(
                "running version {}",
                tenant.status.as_ref().and_then(|status| status.version.as_deref()).unwrap_or("unknown")
            ),
            Goal::Ready | Goal::ReadyAt(_) => not_ready_summary(tenant),
        }
    }
}

/// Polls `name` until `goal` holds, printing changes on stderr as `[12s] EtcdReady=True`.
/// A missing object is an error unless the goal is [`Goal::Deleted`].
pub async fn wait_for(session: &Session, name: &str, goal: &Goal, timeout: Duration) -> Result<(), CliError> {
    let started = Instant::now();
    let deadline = started + timeout;
    let mut last_seen: BTreeMap<String, String> = BTreeMap::new();
    loop {
        let elapsed = human_duration(started.elapsed());
        let tenant = session.tenants().get_opt(name).await.map_err(|error| session.error(name, error))?;
        let Some(tenant) = tenant else {
            if *goal == Goal::Deleted {
                eprintln!("[{elapsed}] gone");
                return Ok(());
            }
            return Err(CliError::NotFound { name: name.to_string(), namespace: session.namespace.clone() });
        };
        let snapshot = progress_snapshot(&tenant);
        for change in progress_changes(&last_seen, &snapshot) {
            eprintln!("[{elapsed}] {change}");
        }
        last_seen = snapshot;
        if goal.reached(&tenant) {
            return Ok(());
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(CliError::TimedOut(format!(
                "timed out after {} waiting for {name} to {} ({})",
                human_duration(timeout),
                goal.describe(),
                goal.missing(&tenant)
            )));
        }
        tokio::time::sleep(POLL_INTERVAL.min(deadline - now)).await;
    }
}

/// Runs `nestor wait`.
pub async fn run(args: WaitArgs) -> anyhow::Result<()> {
    let session = args.cluster.connect().await?;
    let goal = match args.condition {
        WaitCondition::Ready => Goal::Ready,
        WaitCondition::Deleted => Goal::Deleted,
    };
    wait_for(&session, &args.name, &goal, args.timeout).await?;
    if goal != Goal::Deleted {
        println!("{} condition met", resource_ref(&args.name));
    }
    Ok(())
}
