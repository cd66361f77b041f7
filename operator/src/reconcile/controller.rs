//! The controller run: the watches that bring passes (the TenantClusters, each owned
//! kind, and the health monitor's requests), the owned-object caches the passes read,
//! the queue of passes waiting for their turn, and the finalizer around each pass.
//!
//! What brings a pass: a change to the TenantCluster other than its status (see
//! [`pass_inputs`] for the status facts that count), a change to any owned object, the
//! health monitor ([`super::monitor`]), and the pass's own requeue. Pods and volume
//! claims are watched into caches but bring no pass: their workloads' status does.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::PartialObjectMeta;
use kube::runtime::controller::{self, Action, Error as ControllerError};
use kube::runtime::finalizer::{self, finalizer};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{Controller, watcher};
use kube::{Api, Client, Resource, ResourceExt};

use super::backoff::PERMANENT_ERROR_REQUEUE;
use super::cleanup::cleanup_tenant;
use super::compact::Compact;
use super::context::Context;
use super::events::{report_deferral, report_permanent_error};
use super::monitor;
use super::observe::{self, OwnedCache};
use super::pass::apply_tenant;
use super::scope;
use crate::api::TenantCluster;
use crate::error::{Error, Result};
use crate::metrics::WriteVerb;
use crate::names::{FINALIZER, TENANT_LABEL};

/// Label selector for the owned-object watches. Every object the builders create
/// carries it (see [`TenantNames::labels`]); without the filter the controller would
/// cache every Secret of the meta cluster.
pub const OWNED_OBJECTS_SELECTOR: &str = "app.kubernetes.io/managed-by=nestor";

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
    let watch_namespace = ctx.watch_namespace.clone();
    let namespace = watch_namespace.as_deref();
    // The health monitor asks for passes through this channel (see [`monitor`](super::monitor)).
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
    // Overlapping scopes (see [`super::scope`]): a namespace-scoped operator announces
    // its namespace, one that watches every namespace keeps the announcements.
    let scope_task = match namespace {
        Some(namespace) => tokio::spawn(scope::hold_scope_lease(
            client.clone(),
            namespace.to_string(),
            crate::leader::default_identity(),
        )),
        None => {
            let (leases, lease_changes) =
                reflected_watch::<Lease>(&client, None, scope::SCOPE_LEASE_SELECTOR, clear_managed_fields);
            *ctx.scope_leases.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(leases);
            keep_current(lease_changes)
        }
    };
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
        // A backup Job belongs to the CronJob, not the tenant: mapped by its labels.
        .watches_stream(backup_job_changes(&client, namespace), |job| {
            let labels = job.metadata.labels.as_ref()?;
            let tenant = labels.get(TENANT_LABEL)?;
            let namespace = job.metadata.namespace.as_deref()?;
            Some(ObjectRef::<TenantCluster>::new(tenant).within(namespace))
        })
        // Unbounded here: passes wait for their turn in `reconcile` (see `Context::passes`).
        .with_config(controller::Config::default().concurrency(0))
        .reconcile_on(probe_requests)
        .graceful_shutdown_on(shutdown);
    ctx.metrics.watch_tenants(controller.store());
    ctx.health.watch_tenants(controller.store());
    // A node that joined changes nothing in the meta cluster; the approver, which sees
    // its serving CSR first, asks for the pass that looks at the tenant's addons.
    let approver =
        tokio::spawn(super::inside::approve_serving_certificates(ctx.clone(), probe_trigger.clone()));
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
    approver.abort();
    for watch in cache_watches {
        watch.abort();
    }
    scope_task.abort();
    if let Some(namespace) = namespace {
        scope::release_scope_lease(client.clone(), namespace).await;
    }
}

/// Metadata of the tenants' backup Jobs: a Job that finishes changes its
/// resourceVersion, which brings the tenant's pass that records the outcome.
fn backup_job_changes(
    client: &Client,
    namespace: Option<&str>,
) -> impl futures::Stream<Item = Result<PartialObjectMeta<Job>, watcher::Error>> + Send + 'static {
    use kube::runtime::WatchStreamExt;
    let selector = format!(
        "{OWNED_OBJECTS_SELECTOR},{}={}",
        crate::names::COMPONENT_LABEL,
        crate::names::Component::Backup.label()
    );
    watcher(
        scoped_api::<PartialObjectMeta<Job>>(client, namespace),
        watcher::Config::default().labels(&selector),
    )
    .default_backoff()
    .touched_objects()
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
    status.and_then(|status| status.version.as_deref()).hash(&mut hasher);
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
    if let Some(holder) = ctx.claimed_elsewhere(&tenant) {
        if ctx.note_deferred(&tenant, true) {
            report_deferral(&tenant, &holder, &ctx).await;
        }
        // Nothing is read or written; look again once the other operator's Lease could
        // have gone stale.
        return Ok(Action::requeue(scope::SCOPE_LEASE_DURATION));
    }
    if ctx.deferred.lock().is_ok_and(|deferred| deferred.contains(&ObjectRef::from_obj(tenant.as_ref()))) {
        ctx.note_deferred(&tenant, false);
        tracing::info!(
            namespace = tenant.namespace(),
            name = tenant.name_any(),
            "the namespace-scoped operator is gone: reconciling this tenant again"
        );
    }
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

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;
    use crate::names::{Component, TenantNames};
    use crate::reconcile::test_support::tenant;

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
}
