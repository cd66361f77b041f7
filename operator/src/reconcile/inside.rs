//! The pass's step inside the tenant cluster: keeps there what joining nodes read (see
//! [`crate::tenant_api::join`]) and the addons (see [`crate::tenant_api::addons`]),
//! through the tenant's own apiserver, and reports the addons as AddonsReady.
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

use super::conditions::{ConditionStatus, ConditionUpdate, reason, types};
use super::context::Context;
use super::observe::{OwnedCache, read};
use crate::api::TenantCluster;
use crate::desired::DesiredState;
use crate::health::{ProbeOutcome, ProbeReport, apiserver_address};
use crate::kubeconfig::ClientCredentials;
use crate::names::TenantNames;
use crate::resources::konnectivity::AGENT_PORT_NAME;
use crate::tenant_api::addons::{self, AddonInputs, addon_objects};
use crate::tenant_api::join::{JoinInputs, join_objects, node_endpoint};
use crate::tenant_api::serving_csr::Decision;
use crate::tenant_api::tunnel::TunnelEndpoint;
use crate::tenant_api::{addon_state, apply_addon_objects, apply_join_objects, tenant_client};
use k8s_openapi::api::core::v1::Service;

/// How often the objects inside a tenant are applied again when nothing changed, by
/// default (`nestor operator --inside-resync`): the longest a deleted or edited one
/// stays so.
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
pub struct InsideTracker {
    applied: Mutex<HashMap<ObjectRef<TenantCluster>, Applied>>,
    resync: Duration,
}

impl Default for InsideTracker {
    fn default() -> Self {
        Self::with_resync(INSIDE_RESYNC)
    }
}

impl InsideTracker {
    /// A tracker that re-applies unchanged objects every `resync`.
    pub fn with_resync(resync: Duration) -> Self {
        Self { applied: Mutex::default(), resync }
    }

    /// How often unchanged objects are applied again; a tenant whose objects are inside
    /// comes back this often, since nothing in the meta cluster brings it.
    pub fn resync(&self) -> Duration {
        self.resync
    }

    /// Whether objects hashing to `fingerprint` are due for `key` at `now`.
    fn due(&self, key: &ObjectRef<TenantCluster>, fingerprint: u64, now: Instant) -> bool {
        let applied = self.applied.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        applied.get(key).is_none_or(|applied| {
            applied.fingerprint != fingerprint || now.duration_since(applied.at) >= self.resync
        })
    }

    fn record(&self, key: ObjectRef<TenantCluster>, fingerprint: u64, now: Instant, client: kube::Client) {
        self.applied
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(key, Applied { fingerprint, at: now, client });
    }

    /// The client of `key`'s last apply.
    fn client(&self, key: &ObjectRef<TenantCluster>) -> Option<kube::Client> {
        let applied = self.applied.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        applied.get(key).map(|applied| applied.client.clone())
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

/// Applies the join objects and the addons inside `tenant` when they are due and its
/// apiserver answers, and says whether the addons run (condition AddonsReady; `None`
/// when the tenant could not be asked, which keeps the condition as it was).
pub(super) async fn keep_inside(
    tenant: &TenantCluster,
    names: &TenantNames,
    desired: &DesiredState,
    cache: Option<&OwnedCache>,
    report: Option<&ProbeReport>,
    ctx: &Context,
) -> Option<ConditionUpdate> {
    let serving = report.and_then(|report| report.apiserver.as_ref()).is_some_and(ProbeOutcome::is_healthy);
    if !serving {
        return None;
    }
    let credentials = ClientCredentials::from_kubeconfig(&desired.kubeconfigs.admin_in_cluster).ok()?;
    let node_endpoint = node_endpoint(&tenant.spec, &desired.endpoint);
    let services = cache.map(|cache| &cache.services);
    let service = match read(&ctx.client, services, &names.namespace, &names.apiserver()).await {
        Ok(service) => service,
        Err(error) => {
            tracing::info!(%error, "cannot read the apiserver Service; the tenant is reached on the next pass");
            return None;
        }
    };
    let tunnel = node_endpoint.and_then(|endpoint| tunnel_endpoint(endpoint, service.as_ref()?));
    let join = join_objects(
        &tenant.spec,
        &JoinInputs { cluster_name: &names.tenant, ca_pem: &credentials.ca_pem, node_endpoint },
    );
    let addons = addon_objects(
        &tenant.spec,
        &AddonInputs {
            apiserver_url: node_endpoint.unwrap_or(desired.endpoint.as_str()),
            kube_proxy_version: tenant
                .status
                .as_ref()
                .and_then(|status| status.version.as_deref())
                .unwrap_or(&tenant.spec.version),
            tunnel: tunnel.as_ref(),
        },
    );
    let fingerprint = {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        format!("{join:?}{addons:?}").hash(&mut hasher);
        hasher.finish()
    };
    let key = ObjectRef::from_obj(tenant);
    let now = Instant::now();
    let client = if ctx.inside.due(&key, fingerprint, now) {
        let client = connect(desired, service.as_ref())?;
        let applied = async {
            Ok::<_, kube::Error>(
                apply_join_objects(&client, &join).await? + apply_addon_objects(&client, &addons).await?,
            )
        };
        match applied.await {
            Ok(count) => {
                tracing::info!(objects = count, "applied the join objects and addons inside the tenant");
                ctx.inside.record(key, fingerprint, now, client.clone());
            }
            Err(error) => {
                tracing::warn!(%error, "cannot apply inside the tenant; retried on the next pass");
                return None;
            }
        }
        client
    } else {
        ctx.inside.client(&key)?
    };
    addons_condition(&tenant.spec, &client).await
}

/// Where the nodes' agents dial the konnectivity servers: the node endpoint's host and
/// the `konnectivity` port of the apiserver Service as the nodes reach it (its node port,
/// or behind a LoadBalancer the port itself); `None` while Kubernetes has not given the
/// node port yet.
fn tunnel_endpoint(node_endpoint: &str, service: &Service) -> Option<TunnelEndpoint> {
    let uri: http::Uri = node_endpoint.parse().ok()?;
    let host = uri.host()?.trim_start_matches('[').trim_end_matches(']').to_string();
    let spec = service.spec.as_ref()?;
    let port = spec.ports.as_ref()?.iter().find(|port| port.name.as_deref() == Some(AGENT_PORT_NAME))?;
    let port = match spec.type_.as_deref() {
        Some("NodePort") => port.node_port?,
        _ => port.port,
    };
    Some(TunnelEndpoint { host, port })
}

/// A client for the tenant's apiserver through its Service (see [`tenant_client`]).
fn connect(desired: &DesiredState, service: Option<&Service>) -> Option<kube::Client> {
    let address = apiserver_address(service)?;
    match tenant_client(&desired.kubeconfigs.admin_in_cluster, address) {
        Ok(client) => Some(client),
        Err(error) => {
            tracing::warn!(%error, "cannot build a client for the tenant");
            None
        }
    }
}

/// AddonsReady from the tenant's nodes and addon workloads.
async fn addons_condition(
    spec: &crate::api::TenantClusterSpec,
    client: &kube::Client,
) -> Option<ConditionUpdate> {
    if !spec.addons.kube_proxy.enabled && !spec.addons.core_dns.enabled {
        let message = "kube-proxy and CoreDNS are turned off in spec.addons";
        return Some(ConditionUpdate::new(
            types::ADDONS_READY,
            ConditionStatus::True,
            reason::ADDONS_DISABLED,
            message,
        ));
    }
    let (nodes, kube_proxy, coredns) = match addon_state(client).await {
        Ok(state) => state,
        Err(error) => {
            tracing::debug!(%error, "cannot read the addons' state inside the tenant");
            return None;
        }
    };
    Some(match addons::not_ready(spec, nodes, kube_proxy.as_ref(), coredns.as_ref()) {
        Some(problems) => ConditionUpdate::new(
            types::ADDONS_READY,
            ConditionStatus::False,
            reason::ADDONS_NOT_READY,
            problems,
        ),
        None if nodes == 0 => ConditionUpdate::new(
            types::ADDONS_READY,
            ConditionStatus::True,
            reason::NO_NODES,
            "addons applied; they run once a node joins (nestor join)",
        ),
        None => ConditionUpdate::new(
            types::ADDONS_READY,
            ConditionStatus::True,
            reason::READY,
            format!("addons available on {nodes} node(s)"),
        ),
    })
}

/// Runs until the task is dropped: every [`SERVING_CSR_INTERVAL`], approves the kubelet
/// serving CSRs that pass [`crate::tenant_api::serving_csr::decide`] in every tenant whose
/// join objects are in place (one LIST per tenant when none is pending). A tenant one was
/// approved in (a node just joined) is sent to `trigger` for a pass: its addons now have
/// a node to run on, and nothing in the meta cluster would bring that pass.
pub async fn approve_serving_certificates(
    ctx: std::sync::Arc<Context>,
    trigger: futures::channel::mpsc::UnboundedSender<ObjectRef<TenantCluster>>,
) {
    use futures::StreamExt;
    let mut ticker = tokio::time::interval(SERVING_CSR_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        futures::stream::iter(ctx.inside.clients())
            .for_each_concurrent(SERVING_CSR_CONCURRENCY, |(key, client)| {
                let trigger = &trigger;
                async move {
                let round = tokio::time::timeout(
                    crate::tenant_api::REQUEST_TIMEOUT,
                    crate::tenant_api::serving_csr::approve_serving_csrs(&client),
                );
                match round.await {
                    Ok(Ok(decisions)) => {
                        if decisions.iter().any(|(_, decision)| matches!(decision, Decision::Approve { .. })) {
                            // Closed only when the controller stopped, and this task with it.
                            let _ = trigger.unbounded_send(key.clone());
                        }
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
            }})
            .await;
    }
}
