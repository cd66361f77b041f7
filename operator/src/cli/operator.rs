//! `nestor operator`: runs the TenantCluster controller with its HTTP endpoints and,
//! unless disabled, behind leader election.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use futures::FutureExt;
use tokio::net::TcpListener;

use crate::health::HealthSettings;
use crate::http::{self, Readiness, ServerState};
use crate::leader::{LeaderElector, LeaseConfig, default_identity};
use crate::metrics::Metrics;
use crate::reconcile::conditions::SystemClock;
use crate::reconcile::{self, Context};

/// Arguments of `nestor operator`.
#[derive(Debug, Args)]
pub struct OperatorArgs {
    /// Address of the /metrics, /healthz and /readyz endpoints.
    #[arg(long, default_value = "0.0.0.0:8080", env = "NESTOR_METRICS_ADDR")]
    pub metrics_addr: SocketAddr,

    /// Elect one active replica through a Lease (the default).
    #[arg(long = "leader-election", overrides_with = "no_leader_election")]
    leader_election_flag: bool,

    /// Run without leader election: for local runs with a single replica only.
    #[arg(long = "no-leader-election", overrides_with = "leader_election_flag")]
    no_leader_election: bool,

    /// Namespace of the Lease; defaults to the namespace of the kubeconfig context or the pod.
    #[arg(long, env = "NESTOR_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,

    /// Name of the Lease.
    #[arg(long, default_value = "nestor-operator", env = "NESTOR_LEASE_NAME")]
    pub lease_name: String,

    /// Watch TenantClusters (and their objects) in this namespace only; all namespaces
    /// when unset. Lets several operators share a meta cluster, one namespace each.
    #[arg(long = "watch-namespace", env = "NESTOR_WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,

    /// Image of the backup Jobs and the etcd restore init containers: this operator's own
    /// image (they run `nestor backup-agent` and `nestor etcd-restore`).
    #[arg(long, env = "NESTOR_AGENT_IMAGE", default_value = crate::backup::DEFAULT_AGENT_IMAGE)]
    pub agent_image: String,

    /// How often each tenant's etcd, apiserver, controller-manager and scheduler leases are probed
    /// (Go duration); `0s` turns probes, healing and etcd scaling off.
    #[arg(long, env = "NESTOR_HEALTH_INTERVAL", default_value = "10s", value_parser = go_duration)]
    pub health_interval: Duration,

    /// Reconciliations in flight at most: bounds the operator's memory and its share of the
    /// meta apiserver when many tenants change at once. Waiting ones run first come, first
    /// served.
    #[arg(long, env = "NESTOR_MAX_CONCURRENT_RECONCILES", default_value_t = reconcile::DEFAULT_CONCURRENCY)]
    pub max_concurrent_reconciles: u16,

    /// Timeout of one probe request.
    #[arg(long, env = "NESTOR_HEALTH_TIMEOUT", default_value = "5s", value_parser = go_duration)]
    pub health_timeout: Duration,

    /// How often the objects the operator keeps inside each tenant (join objects, addons)
    /// are applied again when nothing changed: the longest a deleted or edited one stays so.
    #[arg(long, env = "NESTOR_INSIDE_RESYNC", default_value = "5m", value_parser = go_duration)]
    pub inside_resync: Duration,
}

fn go_duration(text: &str) -> Result<Duration, String> {
    crate::duration::parse_duration(text).map_err(|error| error.to_string())
}

impl OperatorArgs {
    /// Whether to take part in leader election (the last of the two flags wins).
    pub fn leader_election(&self) -> bool {
        !self.no_leader_election
    }
}

/// Runs until SIGTERM or Ctrl-C (then drains in-flight reconciles and returns `Ok`),
/// or until leadership is lost (returns the error so the process exits non-zero and
/// Kubernetes restarts it as a fresh candidate).
pub async fn run(args: OperatorArgs) -> anyhow::Result<()> {
    let shutdown = shutdown_signal().boxed().shared();
    let metrics = Arc::new(Metrics::new());
    let readiness = Arc::new(Readiness::default());

    let listener = TcpListener::bind(args.metrics_addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.metrics_addr))?;
    tracing::info!(address = %args.metrics_addr, "serving /metrics, /healthz and /readyz");
    let server_state = ServerState { metrics: metrics.clone(), readiness: readiness.clone() };
    let server = tokio::spawn(http::serve(listener, server_state, shutdown.clone()));

    let config = kube::Config::infer().await.context("cannot configure the Kubernetes client")?;
    let client = crate::metrics::counting_client(config, metrics.clone())
        .context("cannot configure the Kubernetes client")?;
    crate::backup::set_agent_image(&args.agent_image);
    let health = HealthSettings::new(args.health_interval, args.health_timeout);
    let ctx = Arc::new(
        Context::new(client, metrics, Arc::new(SystemClock), args.watch_namespace.clone())
            .with_health_settings(health)
            .with_concurrency(args.max_concurrent_reconciles)
            .with_inside_resync(args.inside_resync),
    );

    if args.leader_election() {
        run_as_candidate(&args, ctx, &readiness, shutdown).await?;
    } else {
        tracing::warn!("leader election disabled: run a single replica only");
        readiness.set(true);
        reconcile::run(ctx, shutdown).await;
    }

    match server.await {
        Ok(result) => result.context("metrics server failed")?,
        Err(error) => tracing::warn!(%error, "metrics server task ended abnormally"),
    }
    tracing::info!("stopped");
    Ok(())
}

async fn run_as_candidate(
    args: &OperatorArgs,
    ctx: Arc<Context>,
    readiness: &Readiness,
    shutdown: impl Future<Output = ()> + Clone + Send + Sync + 'static,
) -> anyhow::Result<()> {
    let config = LeaseConfig {
        name: args.lease_name.clone(),
        namespace: args.lease_namespace.clone().unwrap_or_else(|| ctx.client.default_namespace().to_string()),
        identity: default_identity(),
    };
    tracing::info!(lease = %config.name, namespace = %config.namespace, identity = %config.identity, "standing by for the lease");
    let elector = LeaderElector::new(ctx.client.clone(), config).await?;
    readiness.set(true);

    tokio::select! {
        () = elector.acquire() => {}
        () = shutdown.clone() => return Ok(()),
    }
    tokio::select! {
        () = reconcile::run(ctx, shutdown) => {}
        // Stop writing at once: dropping the controller future cancels in-flight reconciles.
        lost = elector.hold() => return Err(lost.into()),
    }
    if let Err(error) = elector.release().await {
        tracing::warn!(%error, "cannot release the lease; the next leader waits for it to expire");
    }
    Ok(())
}

/// Resolves on SIGTERM (how Kubernetes stops a pod) or Ctrl-C.
async fn shutdown_signal() {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
    tracing::info!("shutdown requested, finishing in-flight work");
}
