//! What every pass shares: the meta cluster client, metrics, the Event recorder, probe
//! history and credentials, and the bound on passes in flight ([`Context`]).

use std::sync::Arc;

use k8s_openapi::api::coordination::v1::Lease;
use kube::Client;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};

use super::backoff::RetryBackoff;
use super::conditions::Clock;
use super::events::EVENT_REPORTER;
use super::observe::OwnedCache;
use crate::api::TenantCluster;
use crate::health::{HealthSettings, HealthTracker, ProbeCredentialsCache};
use crate::metrics::Metrics;
use crate::names::OPERATOR_NAMESPACE_ENV;

/// Default bound on passes in flight. Unbounded, 1000 new tenants start 1000 passes at
/// once: each holds its desired state in memory and a share of the apiserver, so all of
/// them finish late and together (the scale benchmark saw 34 of 530 tenants applied after
/// 140 s, RSS 183 MiB and climbing). Bounded, memory stays flat and 16 passes in flight
/// still keep the meta apiserver busy. The bound is Nestor's own, first come first
/// served: see [`Context::passes`].
pub const DEFAULT_CONCURRENCY: u16 = 16;

/// Everything a reconcile needs besides the object.
pub struct Context {
    /// Client for the meta cluster.
    pub client: Client,
    /// Counters and histograms, shared with `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Publishes Kubernetes Events about TenantClusters.
    pub recorder: Recorder,
    /// Source of condition timestamps.
    pub clock: Arc<dyn Clock>,
    /// Retry delays of failing objects.
    pub backoff: RetryBackoff,
    /// The one namespace watched, or all namespaces when `None`.
    pub watch_namespace: Option<String>,
    /// The operator's own namespace (from [`OPERATOR_NAMESPACE_ENV`]), which each
    /// tenant's etcd NetworkPolicy admits; `None` for an operator run as a host process.
    pub operator_namespace: Option<String>,
    /// Probe interval and timeout; see [`crate::health`].
    pub health_settings: HealthSettings,
    /// Probe history (debounce state, failing pods) of every tenant.
    pub health: HealthTracker,
    /// Credentials the probes use, kept from each pass for the monitor's probes.
    pub probe_credentials: ProbeCredentialsCache,
    /// Bounds the passes in flight (see [`DEFAULT_CONCURRENCY`]), in the order they
    /// were asked for: tokio's semaphore hands out permits first come first served.
    /// kube-runtime's own bound does not: while every slot is busy it keeps the passes
    /// that fell due in a hash set and takes the first in the set's iteration order,
    /// so under a steady stream of new requests a tenant whose key sits late in that
    /// order waits as long as the stream lasts. The scale benchmark showed tenants whose
    /// status had not been written since their first pass, minutes earlier, while
    /// their workloads' changes had long asked for a pass. Closed when [`super::run`] shuts
    /// down, so a context serves one controller run.
    pub(super) passes: tokio::sync::Semaphore,
    /// When each tenant last had an etcd member replaced: a replaced member needs time
    /// to join (its pod may crash-loop once or twice first), and replacing it again
    /// meanwhile would only start the join over.
    pub member_repairs:
        std::sync::Mutex<std::collections::HashMap<ObjectRef<TenantCluster>, jiff::Timestamp>>,
    /// What the etcd space maintenance did for each tenant (see [`crate::etcd::maintenance`]).
    pub etcd_space: crate::etcd::maintenance::SpaceTracker,
    /// The owned objects as the running controller's watches see them; replaced each
    /// time [`super::run`] starts (a stale store would compare against objects long gone).
    pub(super) owned: std::sync::RwLock<Option<OwnedCache>>,
    /// The TenantClusters as the running controller's watch sees them; replaced each
    /// time [`super::run`] starts.
    pub(super) tenants: std::sync::RwLock<Option<Store<TenantCluster>>>,
    /// Whether every store of `owned` holds its first complete list: `None` while not
    /// yet, `Some(false)` when a watch is gone. One task per run waits for the stores
    /// and publishes it here, because kube-runtime's `Store::wait_until_ready` wakes
    /// only the last task that polled it: with a pass and the health monitor both
    /// waiting at start-up, the pass was never woken, and a restarted operator sat
    /// idle with its tenant unreconciled (seen in `restarted_operator_neither_...`).
    pub(super) owned_filled: tokio::sync::watch::Sender<Option<bool>>,
    /// When the objects inside each tenant were last applied (see [`super::inside`]).
    pub inside: super::inside::InsideTracker,
    /// The scope Leases of namespace-scoped operators, for an operator that watches
    /// every namespace (see [`super::scope`]); `None` otherwise and outside a run.
    pub(super) scope_leases: std::sync::RwLock<Option<Store<Lease>>>,
    /// The tenants this operator leaves to a namespace-scoped one, so that it says so
    /// once per tenant, not once per pass.
    pub(super) deferred: std::sync::Mutex<std::collections::HashSet<ObjectRef<TenantCluster>>>,
}

impl Context {
    /// A context with a fresh backoff table and probe history, and the default probe
    /// settings (see [`Context::with_health_settings`]).
    pub fn new(
        client: Client,
        metrics: Arc<Metrics>,
        clock: Arc<dyn Clock>,
        watch_namespace: Option<String>,
    ) -> Self {
        let reporter =
            Reporter { controller: EVENT_REPORTER.into(), instance: std::env::var("POD_NAME").ok() };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            clock,
            backoff: RetryBackoff::default(),
            watch_namespace,
            operator_namespace: std::env::var(OPERATOR_NAMESPACE_ENV).ok().filter(|ns| !ns.is_empty()),
            health_settings: HealthSettings::default(),
            health: HealthTracker::default(),
            probe_credentials: ProbeCredentialsCache::default(),
            passes: tokio::sync::Semaphore::new(DEFAULT_CONCURRENCY.into()),
            member_repairs: Default::default(),
            etcd_space: Default::default(),
            owned: std::sync::RwLock::new(None),
            tenants: std::sync::RwLock::new(None),
            owned_filled: tokio::sync::watch::Sender::new(None),
            scope_leases: std::sync::RwLock::new(None),
            inside: Default::default(),
            deferred: Default::default(),
        }
    }

    /// The newest copy of `tenant` the running controller holds (`None`: it is gone),
    /// or `tenant` itself outside a controller run. A pass may wait a while for its
    /// turn (see [`Context::passes`]), and the tenant may change meanwhile.
    pub(super) fn newest(&self, tenant: Arc<TenantCluster>) -> Option<Arc<TenantCluster>> {
        let store = self.tenants.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        match store.as_ref() {
            Some(store) => store.get(&ObjectRef::from_obj(tenant.as_ref())),
            None => Some(tenant),
        }
    }

    /// The owned-object cache of the running controller, once every store is filled;
    /// `None` outside a controller run (reads go to the API then).
    pub(super) async fn owned_cache(&self) -> Option<OwnedCache> {
        let cache = self.owned.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()?;
        let mut filled = self.owned_filled.subscribe();
        let filled = *filled.wait_for(Option::is_some).await.ok()?;
        filled.and_then(|filled| filled.then_some(cache))
    }

    /// The operator that reconciles `tenant` instead of this one: the holder of a fresh
    /// scope Lease in its namespace, for an operator that watches every namespace (see
    /// [`super::scope`]). `None`: this operator reconciles it.
    pub(super) fn claimed_elsewhere(&self, tenant: &TenantCluster) -> Option<String> {
        let leases = self.scope_leases.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let namespace = tenant.metadata.namespace.as_deref()?;
        super::scope::claimed_by(leases.as_ref()?, namespace, self.clock.now())
    }

    /// Records whether `tenant` is left to another operator; true when that just
    /// changed to "left" (time to say so).
    pub(super) fn note_deferred(&self, tenant: &TenantCluster, deferred: bool) -> bool {
        let key = ObjectRef::from_obj(tenant);
        let mut set = self.deferred.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let changed = if deferred { set.insert(key) } else { set.remove(&key) };
        self.metrics.set_tenants_deferred(set.len());
        changed && deferred
    }

    /// The same context with another bound on passes in flight (at least one).
    pub fn with_concurrency(mut self, concurrency: u16) -> Self {
        self.passes = tokio::sync::Semaphore::new(concurrency.max(1).into());
        self
    }

    /// The same context with another interval for re-applying what is kept inside each
    /// tenant (see [`super::inside`]); at least a second.
    pub fn with_inside_resync(mut self, resync: std::time::Duration) -> Self {
        self.inside =
            super::inside::InsideTracker::with_resync(resync.max(std::time::Duration::from_secs(1)));
        self
    }

    /// The same context with other probe settings.
    pub fn with_health_settings(mut self, settings: HealthSettings) -> Self {
        self.health_settings = settings;
        self
    }
}
