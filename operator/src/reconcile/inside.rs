//! The pass's step inside the tenant cluster: keeps there what joining nodes read (see
//! [`crate::tenant_api::join`]), through the tenant's own apiserver.
//!
//! Applied when what Nestor keeps there changed, and otherwise every
//! [`INSIDE_RESYNC`] to put back what someone changed or deleted inside the tenant (the
//! operator cannot afford a watch into every tenant). Only while the apiserver answers:
//! a tenant that is starting is served on the pass that sees it ready. A failure is
//! logged and tried on the next pass; it never fails the pass, since the tenant's
//! control plane in the meta cluster does not depend on it.
//!
//! Between passes, [`approve_serving_certificates`] approves the kubelet serving
//! certificates of joined nodes, through the client the last apply used.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kube::runtime::reflector::ObjectRef;

use super::context::Context;
use super::observe::{OwnedCache, read};
use crate::api::TenantCluster;
use crate::desired::DesiredState;
use crate::health::{ProbeOutcome, ProbeReport, apiserver_address};
use crate::kubeconfig::ClientCredentials;
use crate::names::TenantNames;
use crate::tenant_api::join::{JoinInputs, join_objects, node_endpoint};
use crate::tenant_api::serving_csr::Decision;
use crate::tenant_api::{apply_join_objects, tenant_client};

/// How often the objects inside a tenant are applied again when nothing changed: the
/// longest a deleted or edited one stays so.
pub const INSIDE_RESYNC: Duration = Duration::from_secs(300);

/// How often pending kubelet serving CSRs are looked for inside each tenant whose join
/// objects are in place: a node that just joined waits at most this long for the
/// serving certificate that `kubectl logs` and `exec` need.
pub const SERVING_CSR_INTERVAL: Duration = Duration::from_secs(10);
/// Tenants whose serving CSRs are looked at concurrently.
const SERVING_CSR_CONCURRENCY: usize = 8;

/// What was applied inside a tenant: a hash of the objects, when, and the client that
/// did it (kept for the serving-CSR approver, which then needs no handshake per round).
struct Applied {
    fingerprint: u64,
    at: Instant,
    client: kube::Client,
}

/// When each tenant's objects were last applied inside it, and what they were.
#[derive(Default)]
pub struct InsideTracker {
    applied: Mutex<HashMap<ObjectRef<TenantCluster>, Applied>>,
}

impl InsideTracker {
    /// Whether objects hashing to `fingerprint` are due for `key` at `now`.
    fn due(&self, key: &ObjectRef<TenantCluster>, fingerprint: u64, now: Instant) -> bool {
        let applied = self.applied.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        applied.get(key).is_none_or(|applied| {
            applied.fingerprint != fingerprint || now.duration_since(applied.at) >= INSIDE_RESYNC
        })
    }

    fn record(&self, key: ObjectRef<TenantCluster>, fingerprint: u64, now: Instant, client: kube::Client) {
        self.applied
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(key, Applied { fingerprint, at: now, client });
    }

    /// The clients of every tenant whose join objects are in place.
    fn clients(&self) -> Vec<(ObjectRef<TenantCluster>, kube::Client)> {
        let applied = self.applied.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        applied.iter().map(|(key, applied)| (key.clone(), applied.client.clone())).collect()
    }

    /// Forgets a deleted tenant.
    pub fn forget(&self, key: &ObjectRef<TenantCluster>) {
        self.applied.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(key);
    }
}

/// Applies the join objects inside `tenant` when they are due and its apiserver answers.
pub(super) async fn keep_inside(
    tenant: &TenantCluster,
    names: &TenantNames,
    desired: &DesiredState,
    cache: Option<&OwnedCache>,
    report: Option<&ProbeReport>,
    ctx: &Context,
) {
    let serving = report.and_then(|report| report.apiserver.as_ref()).is_some_and(ProbeOutcome::is_healthy);
    if !serving {
        return;
    }
    let Ok(credentials) = ClientCredentials::from_kubeconfig(&desired.kubeconfigs.admin_in_cluster) else {
        return;
    };
    let inputs = JoinInputs {
        cluster_name: &names.tenant,
        ca_pem: &credentials.ca_pem,
        node_endpoint: node_endpoint(&tenant.spec, &desired.endpoint),
    };
    let objects = join_objects(&tenant.spec, &inputs);
    let fingerprint = {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        format!("{objects:?}").hash(&mut hasher);
        hasher.finish()
    };
    let key = ObjectRef::from_obj(tenant);
    let now = Instant::now();
    if !ctx.inside.due(&key, fingerprint, now) {
        return;
    }
    let service = match read(
        &ctx.client,
        cache.map(|cache| &cache.services),
        &names.namespace,
        &names.apiserver(),
    )
    .await
    {
        Ok(service) => service,
        Err(error) => {
            tracing::info!(%error, "cannot read the apiserver Service; the join objects wait for the next pass");
            return;
        }
    };
    let Some(address) = apiserver_address(service.as_ref()) else { return };
    let client = match tenant_client(&desired.kubeconfigs.admin_in_cluster, address) {
        Ok(client) => client,
        Err(error) => {
            tracing::warn!(%error, "cannot build a client for the tenant; the join objects wait for the next pass");
            return;
        }
    };
    match apply_join_objects(&client, &objects).await {
        Ok(count) => {
            tracing::info!(objects = count, "applied the join objects inside the tenant");
            ctx.inside.record(key, fingerprint, now, client);
        }
        Err(error) => {
            tracing::warn!(%error, "cannot apply the join objects inside the tenant; retried on the next pass")
        }
    }
}

/// Runs until the task is dropped: every [`SERVING_CSR_INTERVAL`], approves the kubelet
/// serving CSRs that pass [`crate::tenant_api::serving_csr::decide`] in every tenant whose
/// join objects are in place (one LIST per tenant when none is pending).
pub async fn approve_serving_certificates(ctx: std::sync::Arc<Context>) {
    use futures::StreamExt;
    let mut ticker = tokio::time::interval(SERVING_CSR_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        futures::stream::iter(ctx.inside.clients())
            .for_each_concurrent(SERVING_CSR_CONCURRENCY, |(key, client)| async move {
                let round = tokio::time::timeout(
                    crate::tenant_api::REQUEST_TIMEOUT,
                    crate::tenant_api::serving_csr::approve_serving_csrs(&client),
                );
                match round.await {
                    Ok(Ok(decisions)) => {
                        for (csr, decision) in decisions {
                            match decision {
                                Decision::Approve { node } => {
                                    tracing::info!(tenant = %key, %csr, %node, "approved a kubelet serving certificate")
                                }
                                Decision::Leave(reason) => {
                                    tracing::info!(tenant = %key, %csr, %reason, "left a kubelet serving CSR pending")
                                }
                            }
                        }
                    }
                    Ok(Err(error)) => tracing::debug!(tenant = %key, %error, "cannot look at serving CSRs"),
                    Err(_) => tracing::debug!(tenant = %key, "serving CSRs: the tenant did not answer in time"),
                }
            })
            .await;
    }
}
