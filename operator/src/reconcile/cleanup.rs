//! What runs when a TenantCluster is deleted, before its finalizer is removed. Nothing
//! here reads the tenant cluster itself: it may already be gone.

use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::Api;
use kube::api::{DeleteParams, ListParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;

use super::apply::patch_status;
use super::context::Context;
use super::events::publish_changes;
use super::names_of;
use super::status::compute_status;
use crate::api::TenantCluster;
use crate::error::{Error, Result};
use crate::metrics::WriteVerb;

/// How long the finalizer waits for the etcd StatefulSet (and its pods) to go
/// before it deletes the claims; past it the pass fails and is retried.
const STATEFULSET_DELETION_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs before the finalizer is removed. Owned objects carry owner references, so the
/// garbage collector deletes them. etcd's volume claims do not (the StatefulSet
/// retains them, so a StatefulSet deleted by hand never takes the tenant's data with
/// it): deleting the TenantCluster is the one moment they are deleted, here.
///
/// The StatefulSet goes first: while it exists, its controller recreates a claim
/// deleted under a pod that was not scheduled yet, and that claim would outlive
/// the tenant.
pub(super) async fn cleanup_tenant(tenant: &TenantCluster, ctx: &Context) -> Result<Action> {
    let names = names_of(tenant)?;
    let (desired, changes) = compute_status(tenant, &[], None, None, ctx.clock.now());
    if patch_status(&ctx.client, tenant, &desired, &ctx.metrics).await? {
        publish_changes(tenant, &changes, ctx).await;
    }
    ctx.health.forget(&ObjectRef::from_obj(tenant));
    ctx.inside.forget(&ObjectRef::from_obj(tenant));
    if let Ok(mut repairs) = ctx.member_repairs.lock() {
        repairs.remove(&ObjectRef::from_obj(tenant));
    }
    ctx.etcd_space.forget(&names.namespace, &names.tenant);
    ctx.metrics.forget_etcd_space(&names.namespace, &names.tenant);

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
    // The backup claim and the PKI copy carry no tenant label: they stay, unless asked.
    crate::backup::delete_kept_objects(tenant, &names, &ctx.client).await?;
    ctx.metrics.forget_backup(&names.namespace, &names.tenant);
    Ok(Action::await_change())
}
