//! The TenantCluster controller: validate → probe → build → apply → heal and scale →
//! observe → status.
//!
//! Each pass runs the whole pipeline for one TenantCluster. The probe comes before the
//! build because etcd's member list decides how many members the build renders while
//! `spec.etcd.replicas` is being reached (see [`crate::health::scaling`]). Validation and
//! building are pure (no client), applying and status writing are skipped when
//! they would change nothing, so a steady tenant costs reads only. Errors split
//! into permanent (reported on the object, retried slowly) and transient
//! (retried with per-object exponential backoff); see [`crate::error`].
//!
//! The pure stages live elsewhere: [`crate::api::validation`] checks the spec and
//! [`crate::desired`] builds every object from the spec and the Secrets observed.
//!
//! What brings a pass: a change to the TenantCluster other than its status (see
//! [`pass_inputs`] for the status facts that count), a change to any owned object, the
//! health monitor ([`monitor`]), and the pass's own requeue. Pods and volume claims are
//! watched into caches but bring no pass: their workloads' status does.

pub mod apply;
pub mod backoff;
pub mod compact;
pub mod conditions;
pub mod monitor;
pub mod observe;
pub mod status;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{DeleteParams, ListParams, PartialObjectMeta, Preconditions};
use kube::runtime::controller::{self, Action, Error as ControllerError};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{self, finalizer};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{Controller, watcher};
use kube::{Api, Client, Resource, ResourceExt};

use crate::api::{Phase, TenantCluster};
use crate::desired::{DesiredObject, DesiredState, ObservedSecrets, desired_state_with_etcd};
use crate::error::{Error, Result};
use crate::health::membership::{self, MemberRepair, MembershipError};
use crate::health::scaling::{self, ScalingInput, ScalingStep};
use crate::health::{
    EtcdProbe, HealthSettings, HealthTracker, HealthVerdicts, PodRestart, ProbeCredentialsCache, ProbeReport,
    apiserver_address, probe_tenant, replace_etcd_member, scale_etcd,
};
use crate::metrics::{Metrics, WriteVerb};
use crate::names::{FINALIZER, MAX_TENANT_NAME_LENGTH, OPERATOR_NAMESPACE_ENV, TENANT_LABEL, TenantNames};
use crate::reconcile::apply::{ApplyOutcome, Existing, patch_status};
use crate::reconcile::backoff::{PERMANENT_ERROR_REQUEUE, RetryBackoff};
use crate::reconcile::compact::Compact;
use crate::reconcile::conditions::{Clock, ConditionStatus, ConditionUpdate, types};
use crate::reconcile::observe::{OwnedCache, read, read_rollout, read_tenant_secrets};
use crate::reconcile::status::{StatusChange, component_conditions, compute_status};

/// `reportingController` of the Events Nestor publishes.
pub const EVENT_REPORTER: &str = "nestor-operator";

/// Label selector for the owned-object watches. Every object the builders create
/// carries it (see [`TenantNames::labels`]); without the filter the controller would
/// cache every Secret of the meta cluster.
pub const OWNED_OBJECTS_SELECTOR: &str = "app.kubernetes.io/managed-by=nestor";

/// Re-check interval of a Ready tenant: a safety net, since changes to owned
/// objects trigger a reconcile on their own.
const READY_RESYNC: Duration = Duration::from_secs(600);
/// How long the finalizer waits for the etcd StatefulSet (and its pods) to go
/// before it deletes the claims; past it the pass fails and is retried.
const STATEFULSET_DELETION_TIMEOUT: Duration = Duration::from_secs(60);
/// After an etcd member replacement, no other for this many broken-member thresholds.
const MEMBER_REPAIR_COOLDOWN_FACTOR: u32 = 3;
/// Shortest re-check interval of a tenant that is still converging; see
/// [`converging_resync`] for how it grows.
const CONVERGING_RESYNC: Duration = Duration::from_secs(30);
/// Re-check interval while etcd is being scaled: each step is one quick etcd call,
/// and the next one waits for this pass's result.
const SCALING_RESYNC: Duration = Duration::from_secs(2);

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
    /// their workloads' changes had long asked for a pass. Closed when [`run`] shuts
    /// down, so a context serves one controller run.
    passes: tokio::sync::Semaphore,
    /// When each tenant last had an etcd member replaced: a replaced member needs time
    /// to join (its pod may crash-loop once or twice first), and replacing it again
    /// meanwhile would only start the join over.
    pub member_repairs:
        std::sync::Mutex<std::collections::HashMap<ObjectRef<TenantCluster>, jiff::Timestamp>>,
    /// The owned objects as the running controller's watches see them; replaced each
    /// time [`run`] starts (a stale store would compare against objects long gone).
    owned: std::sync::RwLock<Option<OwnedCache>>,
    /// The TenantClusters as the running controller's watch sees them; replaced each
    /// time [`run`] starts.
    tenants: std::sync::RwLock<Option<Store<TenantCluster>>>,
    /// Whether every store of `owned` holds its first complete list: `None` while not
    /// yet, `Some(false)` when a watch is gone. One task per run waits for the stores
    /// and publishes it here, because kube-runtime's `Store::wait_until_ready` wakes
    /// only the last task that polled it: with a pass and the health monitor both
    /// waiting at start-up, the pass was never woken, and a restarted operator sat
    /// idle with its tenant unreconciled (seen in `restarted_operator_neither_...`).
    owned_filled: tokio::sync::watch::Sender<Option<bool>>,
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
            owned: std::sync::RwLock::new(None),
            tenants: std::sync::RwLock::new(None),
            owned_filled: tokio::sync::watch::Sender::new(None),
        }
    }

    /// The newest copy of `tenant` the running controller holds (`None`: it is gone),
    /// or `tenant` itself outside a controller run. A pass may wait a while for its
    /// turn (see [`Context::passes`]), and the tenant may change meanwhile.
    fn newest(&self, tenant: Arc<TenantCluster>) -> Option<Arc<TenantCluster>> {
        let store = self.tenants.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        match store.as_ref() {
            Some(store) => store.get(&ObjectRef::from_obj(tenant.as_ref())),
            None => Some(tenant),
        }
    }

    /// The owned-object cache of the running controller, once every store is filled;
    /// `None` outside a controller run (reads go to the API then).
    async fn owned_cache(&self) -> Option<OwnedCache> {
        let cache = self.owned.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()?;
        let mut filled = self.owned_filled.subscribe();
        let filled = *filled.wait_for(Option::is_some).await.ok()?;
        filled.and_then(|filled| filled.then_some(cache))
    }

    /// The same context with another bound on passes in flight (at least one).
    pub fn with_concurrency(mut self, concurrency: u16) -> Self {
        self.passes = tokio::sync::Semaphore::new(concurrency.max(1).into());
        self
    }

    /// The same context with other probe settings.
    pub fn with_health_settings(mut self, settings: HealthSettings) -> Self {
        self.health_settings = settings;
        self
    }
}

/// Server-side applies one desired object (skipped when the live object already matches).
/// Secrets are compared with `listed_secrets`, read at the start of the pass; the other
/// kinds are read one by one. A Secret of key material the pass loaded is only updated,
/// never re-created: see [`Error::KeyMaterialGone`].
async fn apply_object(
    object: &DesiredObject,
    desired: &DesiredState,
    listed_secrets: &[Secret],
    cache: Option<&OwnedCache>,
    ctx: &Context,
) -> Result<ApplyOutcome> {
    let (client, metrics) = (&ctx.client, ctx.metrics.as_ref());
    let existing =
        if desired.loaded_key_secrets.contains(object.name()) { Existing::Only } else { Existing::OrCreate };
    let outcome = match object {
        DesiredObject::Secret(object) => {
            let live = listed_secrets.iter().find(|secret| secret.metadata.name == object.metadata.name);
            apply::apply_over(client, object, live, existing, metrics).await
        }
        DesiredObject::ConfigMap(object) => {
            apply_read(client, cache.map(|c| &c.config_maps), object, existing, metrics).await
        }
        DesiredObject::Service(object) => {
            apply_read(client, cache.map(|c| &c.services), object, existing, metrics).await
        }
        DesiredObject::StatefulSet(object) => {
            apply_read(client, cache.map(|c| &c.statefulsets), object, existing, metrics).await
        }
        DesiredObject::Deployment(object) => {
            apply_read(client, cache.map(|c| &c.deployments), object, existing, metrics).await
        }
        DesiredObject::NetworkPolicy(object) => {
            apply_read(client, cache.map(|c| &c.network_policies), object, existing, metrics).await
        }
    }?;
    if outcome == ApplyOutcome::Missing {
        return Err(Error::KeyMaterialGone { secret: object.name().to_string() });
    }
    Ok(outcome)
}

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

/// Runs the controller until `shutdown` resolves, then finishes in-flight reconciles.
pub async fn run(ctx: Arc<Context>, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    // Graceful shutdown waits for every pass kube-runtime started, and those include the
    // passes waiting for their turn (see `Context::passes`): at scale, hundreds. Closing
    // the semaphore drops the waiting ones and lets the running ones finish.
    let shutdown = {
        let ctx = ctx.clone();
        async move {
            shutdown.await;
            ctx.passes.close();
        }
    };
    let client = ctx.client.clone();
    let namespace = ctx.watch_namespace.as_deref();
    // The health monitor asks for passes through this channel (see [`monitor`]).
    let (probe_trigger, probe_requests) = futures::channel::mpsc::unbounded();
    let (config_maps, config_map_events) = owned_watch::<ConfigMap>(&client, namespace);
    let (services, service_events) = owned_watch::<Service>(&client, namespace);
    let (statefulsets, statefulset_events) = owned_watch::<StatefulSet>(&client, namespace);
    let (deployments, deployment_events) = owned_watch::<Deployment>(&client, namespace);
    let (network_policies, network_policy_events) = owned_watch::<NetworkPolicy>(&client, namespace);
    // Pods and claims trigger no pass. Pod changes reach the reconciler through their
    // StatefulSet's or Deployment's status and the health monitor probes on its own
    // clock; the pods are pruned to what the probes read (see [`observe::prune_pod`]).
    // Claims are kept as metadata, for etcd scaling (see [`observe::observe_etcd`]).
    let (pods, pod_changes) = reflected_watch(&client, namespace, TENANT_LABEL, observe::prune_pod);
    let (claims, claim_changes) = reflected_watch(
        &client,
        namespace,
        TENANT_LABEL,
        clear_managed_fields::<PartialObjectMeta<PersistentVolumeClaim>>,
    );
    let owned =
        OwnedCache { config_maps, services, statefulsets, deployments, network_policies, pods, claims };
    ctx.owned_filled.send_replace(None);
    let filled = {
        let (ctx, owned) = (ctx.clone(), owned.clone());
        tokio::spawn(async move {
            let filled = owned.ready().await;
            ctx.owned_filled.send_replace(Some(filled));
        })
    };
    let cache_watches = [keep_current(pod_changes), keep_current(claim_changes), filled];
    *ctx.owned.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(owned);
    let (tenants, tenant_writer) = kube::runtime::reflector::store();
    *ctx.tenants.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(tenants.clone());
    let tenant_changes = {
        use kube::runtime::WatchStreamExt;
        watcher(scoped_api::<TenantCluster>(&client, namespace), watcher::Config::default())
            .default_backoff()
            // Nothing reads them, and every tenant carries one entry per writer.
            .modify(clear_managed_fields::<TenantCluster>)
            .reflect(tenant_writer)
            .applied_objects()
            .predicate_filter(pass_inputs, Default::default())
    };
    let controller = Controller::for_stream(tenant_changes, tenants)
        .owns_stream(secret_changes(&client, namespace))
        .owns_stream(config_map_events)
        .owns_stream(service_events)
        .owns_stream(statefulset_events)
        .owns_stream(deployment_events)
        .owns_stream(network_policy_events)
        // Unbounded here: passes wait for their turn in `reconcile` (see `Context::passes`).
        .with_config(controller::Config::default().concurrency(0))
        .reconcile_on(probe_requests)
        .graceful_shutdown_on(shutdown);
    ctx.metrics.watch_tenants(controller.store());
    ctx.health.watch_tenants(controller.store());
    let monitor = tokio::spawn(monitor::run(ctx.clone(), controller.store(), probe_trigger));
    controller
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(object = %object, "reconciled"),
                // Already logged by `error_policy`, or harmless (object deleted meanwhile).
                Err(error @ (ControllerError::ReconcilerFailed(..) | ControllerError::ObjectNotFound(_))) => {
                    tracing::debug!(%error, "reconcile not completed");
                }
                // Watch failures (CRD not installed, RBAC missing, API down): the controller
                // retries them itself, but an operator that sees nothing must say why.
                Err(error) => tracing::warn!(%error, "watch failed"),
            }
        })
        .await;
    monitor.abort();
    for watch in cache_watches {
        watch.abort();
    }
}

/// What a pass reads of its TenantCluster: a change to any of these triggers a pass,
/// a change to the rest of the status (conditions, phase, messages) does not. Without
/// this filter every status write came back as one more pass of the same tenant,
/// which at 1000 tenants was a large share of all passes. Deletion bumps the
/// generation; it is hashed too so the finalizer runs even if that ever changes.
///
/// Three status facts are inputs of the next pass, so a pass that records one brings
/// the next at once: the etcd size settled at (the apiserver's `--etcd-servers` follow
/// it at the end of a scale-up), etcd's cluster ID (members join instead of
/// bootstrapping) and the proof that the PKI was established (see
/// [`crate::desired::pki_was_established`]).
fn pass_inputs(tenant: &TenantCluster) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let meta = tenant.meta();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    meta.generation.hash(&mut hasher);
    meta.deletion_timestamp.is_some().hash(&mut hasher);
    meta.labels.hash(&mut hasher);
    meta.annotations.hash(&mut hasher);
    let status = tenant.status.as_ref();
    status.and_then(|status| status.etcd_members).hash(&mut hasher);
    status.and_then(|status| status.etcd_cluster_id.as_deref()).hash(&mut hasher);
    crate::desired::pki_was_established(tenant).hash(&mut hasher);
    Some(hasher.finish())
}

/// Changes to the owned Secrets, metadata only: a change triggers its owner's pass,
/// which lists the Secrets with their data itself. The meta apiserver then sends
/// about 300 bytes per event instead of the whole certificate and key, and the
/// operator parses no key material it would drop.
fn secret_changes(
    client: &Client,
    namespace: Option<&str>,
) -> impl futures::Stream<Item = Result<PartialObjectMeta<Secret>, watcher::Error>> + Send + 'static {
    use kube::runtime::WatchStreamExt;
    let secrets = scoped_api::<PartialObjectMeta<Secret>>(client, namespace);
    watcher(secrets, watcher::Config::default().labels(OWNED_OBJECTS_SELECTOR))
        .default_backoff()
        .touched_objects()
}

/// A watch of the owned objects of kind `K` that keeps them in a store, in compact
/// form (see [`OwnedCache`] and [`Compact`]), and yields each change, to trigger the
/// owner's pass.
fn owned_watch<K>(
    client: &Client,
    namespace: Option<&str>,
) -> (Store<Compact<K>>, impl futures::Stream<Item = Result<Compact<K>, watcher::Error>> + Send + 'static)
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()> + Send + Sync + 'static,
{
    // The apply stage compares only the fields Nestor sets; managedFields are about a
    // third of each cached object.
    reflected_watch(client, namespace, OWNED_OBJECTS_SELECTOR, clear_managed_fields::<Compact<K>>)
}

/// A watch of the objects of kind `K` whose labels match `selector`, kept in a store
/// after `prune` dropped what no reader of the store needs. The stream yields each
/// change once the store holds it, so a pass it triggers reads the new object; it
/// must be polled for the store to stay current (see [`keep_current`]).
fn reflected_watch<K>(
    client: &Client,
    namespace: Option<&str>,
    selector: &str,
    prune: impl FnMut(&mut K) + Send + 'static,
) -> (Store<K>, impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static)
where
    K: CachedKind,
{
    use kube::runtime::WatchStreamExt;
    let (reader, writer) = kube::runtime::reflector::store();
    let config = watcher::Config::default().labels(selector);
    let changes = watcher(scoped_api::<K>(client, namespace), config)
        .default_backoff()
        .modify(prune)
        .reflect(writer)
        .touched_objects();
    (reader, changes)
}

/// Runs a watch whose changes trigger no pass, only to keep its store current.
fn keep_current<K>(
    changes: impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(changes.for_each(|_| futures::future::ready(())))
}

fn clear_managed_fields<K: Resource>(object: &mut K) {
    object.managed_fields_mut().clear();
}

/// What the operator can keep in a watch-fed store.
trait CachedKind:
    Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
    + Clone
    + serde::de::DeserializeOwned
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
}

impl<K> CachedKind for K where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static
{
}

/// An Api over one namespace, or over all of them.
fn scoped_api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    }
}

/// One pass over one TenantCluster.
#[tracing::instrument(skip_all, fields(namespace = tenant.namespace(), name = tenant.name_any()))]
async fn reconcile(tenant: Arc<TenantCluster>, ctx: Arc<Context>) -> Result<Action> {
    let waiting = ctx.metrics.pass_waiting();
    // Closed when the controller shuts down: a pass still waiting then is dropped.
    let Ok(_turn) = ctx.passes.acquire().await else { return Ok(Action::await_change()) };
    waiting.started();
    let Some(tenant) = ctx.newest(tenant) else {
        // Deleted while this pass waited: its finalizer ran, nothing is left to do.
        return Ok(Action::await_change());
    };
    let started = Instant::now();
    // Boxed: the pipeline's future is large, and a pass waiting for its turn should
    // hold no more than its tenant (1000 new tenants wait at once).
    let result = Box::pin(reconcile_with_finalizer(tenant.clone(), &ctx)).await;
    ctx.metrics.record_reconcile(started.elapsed());
    match &result {
        Ok(_) => ctx.backoff.reset(&ObjectRef::from_obj(tenant.as_ref())),
        Err(error) if error.is_permanent() => report_permanent_error(&tenant, error, &ctx).await,
        Err(_) => {}
    }
    result
}

/// Requeue policy for failed passes: slow for permanent errors, backoff for transient ones.
fn error_policy(tenant: Arc<TenantCluster>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.record_error(error);
    let delay = if error.is_permanent() {
        PERMANENT_ERROR_REQUEUE
    } else {
        ctx.backoff.next_delay(&ObjectRef::from_obj(tenant.as_ref()))
    };
    tracing::warn!(
        namespace = tenant.namespace(),
        name = tenant.name_any(),
        %error,
        permanent = error.is_permanent(),
        retry_in = ?delay,
        "reconcile failed"
    );
    Action::requeue(delay)
}

async fn reconcile_with_finalizer(tenant: Arc<TenantCluster>, ctx: &Context) -> Result<Action> {
    let namespace = tenant.namespace().ok_or(Error::MissingObjectKey("metadata.namespace"))?;
    let api: Api<TenantCluster> = Api::namespaced(ctx.client.clone(), &namespace);
    let has_finalizer = tenant.finalizers().iter().any(|name| name == FINALIZER);
    let deleting = tenant.meta().deletion_timestamp.is_some();

    let result = finalizer(&api, FINALIZER, tenant.clone(), |event| async move {
        match event {
            finalizer::Event::Apply(tenant) => apply_tenant(&tenant, ctx).await,
            finalizer::Event::Cleanup(tenant) => cleanup_tenant(&tenant, ctx).await,
        }
    })
    .await;

    // `finalizer` patches the object itself; count those writes like ours.
    let finalizer_written = match &result {
        _ if !has_finalizer && !deleting => true,
        Ok(_) | Err(finalizer::Error::RemoveFinalizer(_)) => has_finalizer && deleting,
        Err(_) => false,
    };
    if finalizer_written {
        ctx.metrics.record_write("TenantCluster", WriteVerb::PatchFinalizer);
    }
    let action = result.map_err(Error::from)?;
    // A new tenant: `finalizer` only added the finalizer and would wait for the watch
    // to bring the tenant back. The finalizer is stored now, so the pass goes on: one
    // pass for a new tenant instead of two, which halves the work of a burst.
    if !has_finalizer && !deleting {
        return apply_tenant(&tenant, ctx).await;
    }
    Ok(action)
}

/// [`apply::apply_over`] of `object` against its live copy: from `store` when the
/// controller caches the kind, else read by a GET (see [`read`]).
async fn apply_read<K>(
    client: &Client,
    store: Option<&Store<Compact<K>>>,
    object: &K,
    existing: Existing,
    metrics: &Metrics,
) -> Result<ApplyOutcome>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let namespace =
        object.meta().namespace.as_deref().ok_or(Error::MissingObjectKey("metadata.namespace"))?;
    let name = object.meta().name.as_deref().ok_or(Error::MissingObjectKey("metadata.name"))?;
    let live = read(client, store, namespace, name).await?;
    apply::apply_over(client, object, live.as_ref(), existing, metrics).await
}

/// validate → probe → build → apply → heal and scale → observe → status, for a live
/// (not deleting) tenant.
///
/// etcd is probed before the build: while etcd is being scaled, its member list
/// decides how many members the StatefulSet and the etcd ConfigMap name (see
/// [`crate::health::scaling`]).
async fn apply_tenant(tenant: &TenantCluster, ctx: &Context) -> Result<Action> {
    let names = names_of(tenant)?;
    if !tenant.spec.paused {
        validate(tenant)?;
    }
    let cache = ctx.owned_cache().await;
    // The one read of the tenant's Secrets with their data: the build keeps what
    // exists, the apply compares with it, the probes take their credentials from it.
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
    let built = if tenant.spec.paused {
        tracing::debug!("paused, observing only");
        None
    } else {
        let observed = ObservedSecrets::from_secrets(&listed_secrets);
        let rollout = read_rollout(&ctx.client, cache.as_ref(), &names).await?;
        let desired = desired_state_with_etcd(
            tenant,
            &observed,
            &rollout,
            ctx.clock.now(),
            plan.members,
            ctx.operator_namespace.as_deref(),
        )?;
        for issued in &desired.issued {
            tracing::info!(secret = %issued.secret_name, reason = %issued.reason, "issuing certificate");
        }
        if desired.controller_manager_version.as_deref() != Some(tenant.spec.version.trim_start_matches('v'))
        {
            // The Deployment status changes as the apiserver rolls, which brings us back here.
            tracing::info!(
                controller_manager = desired.controller_manager_version.as_deref().unwrap_or("not applied"),
                "holding the controller-manager until every apiserver replica runs {}",
                tenant.spec.version
            );
        }
        for object in &desired.objects {
            apply_object(object, &desired, &listed_secrets, cache.as_ref(), ctx).await?;
        }
        // What was just applied is what the meta cluster holds: the monitor's next
        // probe needs no read, even after this tenant's very first pass.
        ctx.probe_credentials.refresh(&names, desired.secrets());
        Some(desired)
    };

    let (health, etcd_cluster_id, repaired) = heal(tenant, &names, report.as_ref(), plan.members, ctx).await;
    // One membership change per pass: the next pass sees its result first.
    if let (Some(step), false, false) = (&plan.step, repaired, tenant.spec.paused) {
        run_scaling_step(tenant, &names, step, ctx).await;
    }
    let observation =
        observe::observe(&ctx.client, cache.as_ref(), &names, secret_names(&listed_secrets, built.as_ref()))
            .await?;
    let updates = component_conditions(&names, &observation, &health, plan.progress.as_ref());
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
    if patch_status(&ctx.client, tenant, &status, &ctx.metrics).await? {
        publish_changes(tenant, &changes, ctx).await;
    }
    let resync = match status.phase {
        Some(Phase::Ready) => READY_RESYNC,
        _ if tenant.spec.paused => READY_RESYNC,
        _ => converging_resync(&status.conditions, ctx.clock.now()),
    };
    let renewal = built.as_ref().map(|desired| until(desired.renewal_due_at, ctx.clock.now()));
    let resync = renewal.map_or(resync, |renewal| resync.min(renewal));
    // A membership change moves no watched object: come back soon to take the next step.
    let scaling = !tenant.spec.paused && (plan.step.is_some() || plan.progress.is_some());
    let resync = if scaling { resync.min(SCALING_RESYNC) } else { resync };
    // Probes between passes are the health monitor's (see [`monitor`]): it asks for a
    // pass when one finds something this status does not say.
    Ok(Action::requeue(resync))
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

/// Feeds a probe pass to the tenant's debounce state and, unless the tenant is
/// paused, restarts an apiserver pod that stopped answering and replaces an etcd
/// member (of the `etcd_members` the StatefulSet runs) that lost its data. Probe
/// failures are results, not errors: this never fails the pass. Also returns etcd's
/// cluster ID when etcd answered healthy, and whether an etcd member was replaced.
async fn heal(
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

/// Takes one scaling step (see [`crate::health::scaling`]): a gateway call through
/// the etcd healthcheck client certificate, or the deletion of a removed member's
/// claim. A failure changes nothing the next pass cannot decide again from the
/// member list, so it is logged, not propagated.
async fn run_scaling_step(tenant: &TenantCluster, names: &TenantNames, step: &ScalingStep, ctx: &Context) {
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
        _ => match scale_etcd(&ctx.client, names, step, ctx.health_settings.timeout).await {
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
        },
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
    let new_id = match replace_etcd_member(&ctx.client, names, repair, ctx.health_settings.timeout).await {
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

/// Status fields only the build stage knows. Written after the Secrets were applied,
/// so `certificatesExpireAt` also proves the PKI exists (see [`crate::desired`]).
fn record_build_facts(status: &mut crate::api::TenantClusterStatus, desired: &DesiredState) {
    status.endpoint = Some(desired.endpoint.clone());
    status.certificates_expire_at = Some(Time(desired.certificates_expire_at));
}

/// Runs before the finalizer is removed. Owned objects carry owner references, so the
/// garbage collector deletes them. etcd's volume claims do not (the StatefulSet
/// retains them, so a StatefulSet deleted by hand never takes the tenant's data with
/// it): deleting the TenantCluster is the one moment they are deleted, here.
///
/// The StatefulSet goes first: while it exists, its controller recreates a claim
/// deleted under a pod that was not scheduled yet, and that claim would outlive
/// the tenant.
async fn cleanup_tenant(tenant: &TenantCluster, ctx: &Context) -> Result<Action> {
    let names = names_of(tenant)?;
    let (desired, changes) = compute_status(tenant, &[], None, None, ctx.clock.now());
    if patch_status(&ctx.client, tenant, &desired, &ctx.metrics).await? {
        publish_changes(tenant, &changes, ctx).await;
    }
    ctx.health.forget(&ObjectRef::from_obj(tenant));
    if let Ok(mut repairs) = ctx.member_repairs.lock() {
        repairs.remove(&ObjectRef::from_obj(tenant));
    }

    let statefulsets: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &names.namespace);
    if statefulsets.get_opt(&names.etcd()).await?.is_some() {
        statefulsets.delete(&names.etcd(), &DeleteParams::foreground()).await?;
        ctx.metrics.record_write("StatefulSet", WriteVerb::Delete);
        let gone = async {
            while statefulsets.get_opt(&names.etcd()).await?.is_some() {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Ok::<_, kube::Error>(())
        };
        tokio::time::timeout(STATEFULSET_DELETION_TIMEOUT, gone).await.map_err(|_| Error::Timeout {
            operation: format!("deletion of StatefulSet {}", names.etcd()),
            after: STATEFULSET_DELETION_TIMEOUT,
        })??;
    }

    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &names.namespace);
    let selector = ListParams::default().labels(&names.tenant_selector());
    if !claims.list_metadata(&selector).await?.items.is_empty() {
        claims.delete_collection(&DeleteParams::background(), &selector).await?;
        ctx.metrics.record_write("PersistentVolumeClaim", WriteVerb::Delete);
        tracing::info!("deleted the tenant's etcd volume claims");
    }
    Ok(Action::await_change())
}

/// Writes a permanent error into the Ready condition and, when that changed the
/// status, publishes a Warning Event. Failures here are logged, not propagated:
/// the original error is what the caller reports.
async fn report_permanent_error(tenant: &TenantCluster, error: &Error, ctx: &Context) {
    let ready = ConditionUpdate::new(
        types::READY,
        ConditionStatus::False,
        error.condition_reason(),
        error.to_string(),
    );
    let (desired, _) = compute_status(tenant, &[], None, Some(ready), ctx.clock.now());
    match patch_status(&ctx.client, tenant, &desired, &ctx.metrics).await {
        Ok(true) => {
            let event = Event {
                type_: EventType::Warning,
                reason: error.condition_reason().into(),
                note: Some(truncate_note(error.to_string())),
                action: "Reconcile".into(),
                secondary: None,
            };
            publish(tenant, &event, ctx).await;
        }
        Ok(false) => {}
        Err(status_error) => tracing::warn!(error = %status_error, "cannot record permanent error in status"),
    }
}

async fn publish_changes(tenant: &TenantCluster, changes: &[StatusChange], ctx: &Context) {
    for change in changes {
        let event = match change {
            StatusChange::ConditionFlipped { type_, status, reason: _, message } => Event {
                type_: if *status == ConditionStatus::True { EventType::Normal } else { EventType::Warning },
                reason: if *status == ConditionStatus::True { type_.clone() } else { format!("Not{type_}") },
                note: Some(truncate_note(message.clone())),
                action: "Reconcile".into(),
                secondary: None,
            },
            StatusChange::UpgradeStarted { from, to } => Event {
                type_: EventType::Normal,
                reason: "Upgrading".into(),
                note: Some(format!(
                    "Upgrading {from} -> {to}: kube-apiserver first, kube-controller-manager once every \
                     apiserver replica runs {to}"
                )),
                action: "Upgrade".into(),
                secondary: None,
            },
            StatusChange::Upgraded { from, to } => Event {
                type_: EventType::Normal,
                reason: "Upgraded".into(),
                note: Some(format!(
                    "Upgraded {from} -> {to}: every kube-apiserver and kube-controller-manager replica \
                     runs {to}"
                )),
                action: "Upgrade".into(),
                secondary: None,
            },
            StatusChange::PhaseChanged { from, to } => Event {
                type_: if *to == Phase::Degraded { EventType::Warning } else { EventType::Normal },
                reason: format!("{to:?}"),
                note: Some(match from {
                    Some(from) => format!("phase changed from {from:?} to {to:?}"),
                    None => format!("phase is {to:?}"),
                }),
                action: "Reconcile".into(),
                secondary: None,
            },
        };
        publish(tenant, &event, ctx).await;
    }
}

async fn publish(tenant: &TenantCluster, event: &Event, ctx: &Context) {
    ctx.metrics.record_write("Event", WriteVerb::PublishEvent);
    if let Err(error) = ctx.recorder.publish(event, &tenant.object_ref(&())).await {
        // An Event is a courtesy to humans; failing to send one must not fail the pass.
        tracing::warn!(%error, reason = %event.reason, "cannot publish event");
    }
}

/// Events notes are limited to 1 kB.
fn truncate_note(mut note: String) -> String {
    const MAX_NOTE_BYTES: usize = 1024;
    if note.len() > MAX_NOTE_BYTES {
        let mut end = MAX_NOTE_BYTES - 3;
        while !note.is_char_boundary(end) {
            end -= 1;
        }
        note.truncate(end);
        note.push_str("...");
    }
    note
}

fn names_of(tenant: &TenantCluster) -> Result<TenantNames> {
    let name = tenant.meta().name.clone().ok_or(Error::MissingObjectKey("metadata.name"))?;
    let namespace = tenant.namespace().ok_or(Error::MissingObjectKey("metadata.namespace"))?;
    Ok(TenantNames::new(name, namespace))
}

#[cfg(test)]
mod tests {
    use kube::api::ObjectMeta;

    use super::*;
    use crate::api::TenantClusterSpec;
    use crate::names::Component;

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

    fn tenant(name: &str) -> TenantCluster {
        let spec: TenantClusterSpec =
            serde_json::from_value(serde_json::json!({"version": "1.34.2"})).expect("spec");
        TenantCluster {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("tenants".into()),
                ..ObjectMeta::default()
            },
            spec,
            status: None,
        }
    }

    #[test]
    fn owned_object_selector_matches_the_labels_builders_set() {
        let (key, value) = OWNED_OBJECTS_SELECTOR.split_once('=').expect("key=value");
        let labels = TenantNames::new("team-a", "tenants").labels(Component::Etcd);
        assert_eq!(labels.get(key).map(String::as_str), Some(value));
    }

    #[test]
    fn status_changes_alone_do_not_trigger_a_pass() {
        let mut before = tenant("team-a");
        before.metadata.generation = Some(1);
        let mut status_only = before.clone();
        status_only.status =
            Some(crate::api::TenantClusterStatus { observed_generation: Some(1), ..Default::default() });
        status_only.metadata.resource_version = Some("2".into());
        assert_eq!(pass_inputs(&before), pass_inputs(&status_only));

        let mut spec_changed = before.clone();
        spec_changed.metadata.generation = Some(2);
        assert_ne!(pass_inputs(&before), pass_inputs(&spec_changed));
        let mut deleting = before.clone();
        deleting.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
        assert_ne!(pass_inputs(&before), pass_inputs(&deleting));
        let mut annotated = before.clone();
        annotated.metadata.annotations = Some([("a".to_string(), "b".to_string())].into());
        assert_ne!(pass_inputs(&before), pass_inputs(&annotated));

        // The status facts the next pass builds from do trigger one.
        let with = |change: fn(&mut crate::api::TenantClusterStatus)| {
            let mut tenant = status_only.clone();
            change(tenant.status.as_mut().expect("status"));
            tenant
        };
        let settled = with(|status| status.etcd_members = Some(3));
        assert_ne!(pass_inputs(&status_only), pass_inputs(&settled), "etcd size settled");
        let formed = with(|status| status.etcd_cluster_id = Some("c1".into()));
        assert_ne!(pass_inputs(&status_only), pass_inputs(&formed), "etcd cluster ID recorded");
        let established = with(|status| status.kubeconfig_secret_name = Some("team-a-kubeconfig".into()));
        assert_ne!(pass_inputs(&status_only), pass_inputs(&established), "PKI established");
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

    #[test]
    fn long_event_notes_are_truncated_on_a_char_boundary() {
        let note = truncate_note("é".repeat(600));
        assert!(note.len() <= 1024, "{}", note.len());
        assert!(note.ends_with("..."));
        assert_eq!(truncate_note("short".into()), "short");
    }
}
