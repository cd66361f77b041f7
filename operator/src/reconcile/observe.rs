//! Reads what a tenant's control plane looks like in the meta cluster right now:
//! which of its Secrets exist and how ready its workloads are. Reads only; the
//! result feeds the pure status computation in [`super::status`].

use std::collections::{BTreeSet, HashMap};
use std::fmt::Debug;
use std::sync::Arc;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{ListParams, PartialObjectMeta};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;

use super::compact::Compact;
use crate::desired::ObservedRollout;
use crate::error::{Error, Result};
use crate::names::{TENANT_LABEL, TenantNames};

/// Rollout state of one workload (StatefulSet or Deployment).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkloadReadiness {
    /// Replicas asked for.
    pub desired: i32,
    /// Replicas ready (StatefulSet) or available (Deployment).
    pub ready: i32,
    /// Replicas running the current template.
    pub updated: i32,
    /// The workload controller has seen the latest spec.
    pub observed_latest: bool,
}

impl WorkloadReadiness {
    /// Every replica runs the latest template and is ready.
    pub fn is_ready(&self) -> bool {
        self.observed_latest && self.ready >= self.desired && self.updated >= self.desired
    }

    /// As many replicas ready as asked for while a rolling update replaces them. The
    /// apiserver Deployment rolls with `maxUnavailable: 0` (the controller-manager's
    /// default strategy rounds to the same for up to three replicas), so an upgrade or a
    /// certificate roll keeps this true throughout: the component serves.
    /// This includes the moment right after a template change, before the workload's
    /// controller observed it: nothing was replaced yet.
    pub fn is_rolling_with_all_ready(&self) -> bool {
        self.ready >= self.desired && !self.is_ready()
    }

    /// Readiness of a StatefulSet, from its spec and status.
    pub fn from_statefulset(statefulset: &StatefulSet) -> Self {
        let desired = statefulset.spec.as_ref().and_then(|spec| spec.replicas).unwrap_or(1);
        let status = statefulset.status.as_ref();
        Self {
            desired,
            ready: status.and_then(|status| status.ready_replicas).unwrap_or(0),
            updated: status.and_then(|status| status.updated_replicas).unwrap_or(0),
            observed_latest: observed_latest(
                statefulset.metadata.generation,
                status.and_then(|status| status.observed_generation),
            ),
        }
    }

    /// Readiness of a Deployment, from its spec and status.
    pub fn from_deployment(deployment: &Deployment) -> Self {
        let desired = deployment.spec.as_ref().and_then(|spec| spec.replicas).unwrap_or(1);
        let status = deployment.status.as_ref();
        Self {
            desired,
            ready: status.and_then(|status| status.available_replicas).unwrap_or(0),
            updated: status.and_then(|status| status.updated_replicas).unwrap_or(0),
            observed_latest: observed_latest(
                deployment.metadata.generation,
                status.and_then(|status| status.observed_generation),
            ),
        }
    }
}

fn observed_latest(generation: Option<i64>, observed_generation: Option<i64>) -> bool {
    match (generation, observed_generation) {
        (Some(generation), Some(observed)) => observed >= generation,
        (None, _) => true,
        (Some(_), None) => false,
    }
}

/// The live state of one tenant's control plane.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observation {
    /// Names of the Secrets carrying the tenant label.
    pub secrets: BTreeSet<String>,
    /// The etcd StatefulSet, if it exists.
    pub etcd: Option<WorkloadReadiness>,
    /// The kube-apiserver Deployment, if it exists.
    pub apiserver: Option<WorkloadReadiness>,
    /// The kube-controller-manager Deployment, if it exists.
    pub controller_manager: Option<WorkloadReadiness>,
    /// The kube-scheduler Deployment, if it exists.
    pub scheduler: Option<WorkloadReadiness>,
    /// Which versions the three Deployments run.
    pub rollout: ObservedRollout,
}

/// What the etcd scaling reads of the meta cluster besides the etcd probe.
/// The owned objects of every watched tenant, as the controller's watches last saw them
/// (see [`super::run`]): the watches that trigger passes also fill these stores, so a
/// pass compares and observes without a GET per object. At 1000 tenants those GETs were
/// most of the meta apiserver's work (about 15 of a pass's 24 requests). Secrets are
/// not cached: their data is the PKI, and one list per pass reads them.
///
/// The tenants' pods and volume claims are cached too, without triggering passes:
/// every probe read its tenant's pods, and every pass its claims, one list each. At
/// 1000 tenants those lists were the largest share of the meta apiserver's requests
/// (each one filters the whole namespace in its watch cache).
#[derive(Clone)]
pub struct OwnedCache {
    /// ConfigMaps carrying the managed-by label.
    pub config_maps: Store<Compact<ConfigMap>>,
    /// Services carrying the managed-by label.
    pub services: Store<Compact<Service>>,
    /// StatefulSets carrying the managed-by label.
    pub statefulsets: Store<Compact<StatefulSet>>,
    /// Deployments carrying the managed-by label.
    pub deployments: Store<Compact<Deployment>>,
    /// NetworkPolicies carrying the managed-by label.
    pub network_policies: Store<Compact<NetworkPolicy>>,
    /// Pods carrying the tenant label, pruned to what the probes read (see
    /// [`prune_pod`]).
    pub pods: Store<Pod>,
    /// Volume claims carrying the tenant label, metadata only. The StatefulSet's claim
    /// template carries the selector labels, not the managed-by label.
    pub claims: Store<PartialObjectMeta<PersistentVolumeClaim>>,
}

impl OwnedCache {
    /// Waits until every store holds its first complete list. `false` when a watch is
    /// gone (the controller is stopping): the caller reads from the API instead.
    ///
    /// Awaited by one task per run only. kube-runtime's readiness wakes only the
    /// last of several waiters, so everything else must go through
    /// `Context::owned_cache`, which hears the answer on a watch channel.
    pub async fn ready(&self) -> bool {
        let (config_maps, services, statefulsets, deployments, network_policies, pods, claims) = futures::join!(
            self.config_maps.wait_until_ready(),
            self.services.wait_until_ready(),
            self.statefulsets.wait_until_ready(),
            self.deployments.wait_until_ready(),
            self.network_policies.wait_until_ready(),
            self.pods.wait_until_ready(),
            self.claims.wait_until_ready(),
        );
        config_maps.is_ok()
            && services.is_ok()
            && statefulsets.is_ok()
            && deployments.is_ok()
            && network_policies.is_ok()
            && pods.is_ok()
            && claims.is_ok()
    }
}

/// Drops what no probe reads from a cached pod: the spec, annotations, managedFields,
/// owner references and most of each container's status. A tenant pod shrinks from
/// several KiB to a few hundred bytes, and 1000 tenants hold 3000 of them.
pub fn prune_pod(pod: &mut Pod) {
    pod.spec = None;
    pod.metadata.managed_fields = None;
    pod.metadata.annotations = None;
    pod.metadata.owner_references = None;
    if let Some(status) = pod.status.as_mut() {
        let kept = k8s_openapi::api::core::v1::PodStatus {
            phase: status.phase.take(),
            pod_ip: status.pod_ip.take(),
            conditions: status.conditions.take().map(|conditions| {
                conditions.into_iter().filter(|condition| condition.type_ == "Ready").collect()
            }),
            container_statuses: status.container_statuses.take().map(|containers| {
                containers
                    .into_iter()
                    .map(|container| k8s_openapi::api::core::v1::ContainerStatus {
                        name: container.name,
                        ready: container.ready,
                        started: container.started,
                        restart_count: container.restart_count,
                        ..Default::default()
                    })
                    .collect()
            }),
            ..Default::default()
        };
        *status = kept;
    }
}

/// The tenant an owned object belongs to, as (namespace, tenant): its namespace and
/// its tenant label. The one statement of that rule, for [`tenant_pods`] and
/// [`PodsByTenant`] alike.
fn tenant_of(meta: &ObjectMeta) -> Option<(&str, &str)> {
    Some((meta.namespace.as_deref()?, meta.labels.as_ref()?.get(TENANT_LABEL)?.as_str()))
}

/// Whether `object` is in the tenant of `names` (see [`tenant_of`]).
fn in_tenant<K: Resource>(object: &K, names: &TenantNames) -> bool {
    tenant_of(object.meta()) == Some((names.namespace.as_str(), names.tenant.as_str()))
}

/// The tenant's pods: from the cache when there is one (pruned, see [`prune_pod`]),
/// else by a list.
pub async fn tenant_pods(
    client: &Client,
    cache: Option<&OwnedCache>,
    names: &TenantNames,
) -> Result<Vec<Pod>> {
    match cache {
        Some(cache) => Ok(cache
            .pods
            .state()
            .into_iter()
            .filter(|pod| in_tenant(pod.as_ref(), names))
            .map(|pod| (*pod).clone())
            .collect()),
        None => {
            let pods: Api<Pod> = Api::namespaced(client.clone(), &names.namespace);
            Ok(pods.list(&ListParams::default().labels(&names.tenant_selector())).await?.items)
        }
    }
}

/// The cached pods grouped by tenant, for a round of probes over many tenants: one
/// pass over the pod store instead of one per tenant. With 1000 tenants coming up,
/// probed every second, the per-tenant scans read 3000 pods 1000 times a second.
pub struct PodsByTenant(HashMap<(String, String), Vec<Arc<Pod>>>);

impl PodsByTenant {
    /// Groups the pods in `store` by tenant (see [`tenant_of`]).
    pub fn from_store(store: &Store<Pod>) -> Self {
        let mut by_tenant: HashMap<(String, String), Vec<Arc<Pod>>> = HashMap::new();
        for pod in store.state() {
            let Some((namespace, tenant)) = tenant_of(&pod.metadata) else { continue };
            let key = (namespace.to_string(), tenant.to_string());
            by_tenant.entry(key).or_default().push(pod);
        }
        Self(by_tenant)
    }

    /// The pods of the tenant of `names`: what [`tenant_pods`] reads from the cache.
    pub fn of(&self, names: &TenantNames) -> Vec<Pod> {
        let key = (names.namespace.clone(), names.tenant.clone());
        self.0.get(&key).map(|pods| pods.iter().map(|pod| (**pod).clone()).collect()).unwrap_or_default()
    }
}

/// The object `namespace/name` from `store` when there is one (parsed again, see
/// [`Compact`]), else by a GET.
pub async fn read<K>(
    client: &Client,
    store: Option<&Store<Compact<K>>>,
    namespace: &str,
    name: &str,
) -> Result<Option<K>>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope> + Clone + DeserializeOwned + Debug,
{
    match store {
        Some(store) => store
            .get(&ObjectRef::new(name).within(namespace))
            .map(|object| object.decode())
            .transpose()
            .map_err(|source| Error::Serialization { kind: K::kind(&()).into_owned(), source }),
        None => Ok(Api::<K>::namespaced(client.clone(), namespace).get_opt(name).await?),
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EtcdWorkload {
    /// The etcd StatefulSet's `spec.replicas`; `None` when it does not exist.
    pub statefulset_replicas: Option<i32>,
    /// The tenant's volume claims that exist and are not being deleted.
    pub claims: Vec<String>,
}

/// Reads the etcd StatefulSet's replicas and the tenant's volume claims (names only).
pub async fn observe_etcd(
    client: &Client,
    cache: Option<&OwnedCache>,
    names: &TenantNames,
) -> Result<EtcdWorkload> {
    let statefulsets = cache.map(|cache| &cache.statefulsets);
    let statefulset = read(client, statefulsets, &names.namespace, &names.etcd()).await?;
    let claims: Vec<PartialObjectMeta<PersistentVolumeClaim>> = match cache {
        Some(cache) => cache
            .claims
            .state()
            .into_iter()
            .filter(|claim| in_tenant(claim.as_ref(), names))
            .map(|claim| (*claim).clone())
            .collect(),
        None => {
            let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &names.namespace);
            claims.list_metadata(&ListParams::default().labels(&names.tenant_selector())).await?.items
        }
    };
    let claims = claims
        .into_iter()
        .filter(|claim| claim.metadata.deletion_timestamp.is_none())
        .filter_map(|claim| claim.metadata.name)
        .collect();
    Ok(EtcdWorkload {
        statefulset_replicas: statefulset.and_then(|statefulset| statefulset.spec?.replicas),
        claims,
    })
}

/// Reads the tenant's Secrets with their data: the build stage keeps existing CAs
/// and keys and re-issues only what is missing, stale or mismatched, and the apply
/// stage compares each desired Secret with its listed one instead of reading it again.
pub async fn read_tenant_secrets(client: &Client, names: &TenantNames) -> Result<Vec<Secret>> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &names.namespace);
    Ok(secrets.list(&ListParams::default().labels(&names.tenant_selector())).await?.items)
}

/// Reads the tenant's apiserver, controller-manager and scheduler Deployments: the
/// build stage moves the controller-manager and the scheduler to a new version only
/// after the apiserver.
pub async fn read_rollout(
    client: &Client,
    cache: Option<&OwnedCache>,
    names: &TenantNames,
) -> Result<ObservedRollout> {
    let deployments = cache.map(|cache| &cache.deployments);
    let apiserver = read(client, deployments, &names.namespace, &names.apiserver()).await?;
    let controller_manager = read(client, deployments, &names.namespace, &names.controller_manager()).await?;
    let scheduler = read(client, deployments, &names.namespace, &names.scheduler()).await?;
    Ok(ObservedRollout::from_deployments(apiserver.as_ref(), controller_manager.as_ref(), scheduler.as_ref()))
}

/// Reads the tenant's workloads; `secrets` are the names of the Secrets that exist
/// (the pass knows them: those it listed and those it applied). From the cache, a
/// workload this pass just applied may still show its previous state; the watch event
/// of that apply brings the next pass, which sees it.
pub async fn observe(
    client: &Client,
    cache: Option<&OwnedCache>,
    names: &TenantNames,
    secrets: BTreeSet<String>,
) -> Result<Observation> {
    let deployments = cache.map(|cache| &cache.deployments);
    let apiserver = read(client, deployments, &names.namespace, &names.apiserver()).await?;
    let controller_manager = read(client, deployments, &names.namespace, &names.controller_manager()).await?;
    let scheduler = read(client, deployments, &names.namespace, &names.scheduler()).await?;
    let statefulsets = cache.map(|cache| &cache.statefulsets);
    let etcd = read(client, statefulsets, &names.namespace, &names.etcd()).await?;
    Ok(Observation {
        secrets,
        etcd: etcd.as_ref().map(WorkloadReadiness::from_statefulset),
        apiserver: apiserver.as_ref().map(WorkloadReadiness::from_deployment),
        controller_manager: controller_manager.as_ref().map(WorkloadReadiness::from_deployment),
        scheduler: scheduler.as_ref().map(WorkloadReadiness::from_deployment),
        rollout: ObservedRollout::from_deployments(
            apiserver.as_ref(),
            controller_manager.as_ref(),
            scheduler.as_ref(),
        ),
    })
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStatus, StatefulSetSpec, StatefulSetStatus};
    use kube::api::ObjectMeta;

    use super::*;

    fn statefulset(replicas: i32, ready: i32, updated: i32, generation: i64, observed: i64) -> StatefulSet {
        StatefulSet {
            metadata: ObjectMeta { generation: Some(generation), ..ObjectMeta::default() },
            spec: Some(StatefulSetSpec { replicas: Some(replicas), ..StatefulSetSpec::default() }),
            status: Some(StatefulSetStatus {
                ready_replicas: Some(ready),
                updated_replicas: Some(updated),
                observed_generation: Some(observed),
                ..StatefulSetStatus::default()
            }),
        }
    }

    #[test]
    fn statefulset_is_ready_only_with_all_members_ready_on_the_latest_spec() {
        assert!(WorkloadReadiness::from_statefulset(&statefulset(3, 3, 3, 2, 2)).is_ready());
        assert!(!WorkloadReadiness::from_statefulset(&statefulset(3, 2, 3, 2, 2)).is_ready());
        assert!(!WorkloadReadiness::from_statefulset(&statefulset(3, 3, 1, 2, 2)).is_ready(), "rolling");
        assert!(
            !WorkloadReadiness::from_statefulset(&statefulset(3, 3, 3, 3, 2)).is_ready(),
            "spec not seen"
        );
    }

    #[test]
    fn pruned_pods_keep_what_the_probes_read() {
        use k8s_openapi::api::core::v1::{ContainerStatus, PodCondition, PodSpec, PodStatus};
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "team-a-etcd-0", "namespace": "tenants", "uid": "u1",
                "labels": {"nestor.dev/tenant-cluster": "team-a"},
                "annotations": {"big": "x"},
                "managedFields": [{"manager": "kubelet"}],
            },
            "spec": {"containers": [{"name": "etcd", "image": "nestor.local/etcd:3.6.5"}]},
            "status": {
                "phase": "Running", "podIP": "10.200.0.7",
                "conditions": [
                    {"type": "Ready", "status": "True", "lastTransitionTime": "2026-11-30T00:00:00Z"},
                    {"type": "PodScheduled", "status": "True"},
                ],
                "containerStatuses": [{
                    "name": "etcd", "ready": true, "started": true, "restartCount": 2,
                    "image": "nestor.local/etcd:3.6.5", "imageID": "sha256:abc",
                }],
            },
        }))
        .expect("pod");
        let mut pruned = pod.clone();
        prune_pod(&mut pruned);
        assert_eq!(pruned.spec, None::<PodSpec>);
        assert_eq!(pruned.metadata.annotations, None);
        assert_eq!(pruned.metadata.managed_fields, None);
        assert_eq!(pruned.metadata.labels, pod.metadata.labels);
        let status = pruned.status.as_ref().expect("status");
        assert_eq!(status.phase.as_deref(), Some("Running"));
        assert_eq!(status.pod_ip.as_deref(), Some("10.200.0.7"));
        let conditions: &Vec<PodCondition> = status.conditions.as_ref().expect("conditions");
        assert_eq!(conditions.len(), 1);
        assert_eq!(
            conditions[0].last_transition_time,
            pod.status.as_ref().unwrap().conditions.as_ref().unwrap()[0].last_transition_time
        );
        let containers: &Vec<ContainerStatus> = status.container_statuses.as_ref().expect("containers");
        assert_eq!(
            (containers[0].started, containers[0].ready, containers[0].restart_count),
            (Some(true), true, 2)
        );
        assert_eq!(containers[0].image, "");
        // What the probes derive from a pod is the same before and after.
        assert_eq!(crate::health::probe_target(&pruned), crate::health::probe_target(&pod));
        assert_eq!(
            crate::etcd::membership::MemberPod::from_pod(&pruned),
            crate::etcd::membership::MemberPod::from_pod(&pod)
        );
        let _ = PodStatus::default();
    }

    #[test]
    fn pods_are_grouped_by_namespace_and_tenant() {
        let pod = |namespace: &str, name: &str, tenant: Option<&str>| Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(namespace.into()),
                labels: tenant.map(|tenant| [(TENANT_LABEL.to_string(), tenant.to_string())].into()),
                ..ObjectMeta::default()
            },
            ..Pod::default()
        };
        let (store, mut writer) = kube::runtime::reflector::store();
        for pod in [
            pod("tenants", "team-a-etcd-0", Some("team-a")),
            pod("tenants", "team-a-apiserver-x", Some("team-a")),
            pod("tenants", "team-b-etcd-0", Some("team-b")),
            pod("other", "team-a-etcd-0", Some("team-a")),
            pod("tenants", "unlabelled", None),
        ] {
            writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(pod));
        }
        let grouped = PodsByTenant::from_store(&store);
        let mut team_a: Vec<_> = grouped
            .of(&TenantNames::new("team-a", "tenants"))
            .into_iter()
            .filter_map(|pod| pod.metadata.name)
            .collect();
        team_a.sort();
        assert_eq!(team_a, ["team-a-apiserver-x", "team-a-etcd-0"]);
        assert_eq!(grouped.of(&TenantNames::new("team-a", "other")).len(), 1, "another namespace");
        assert!(grouped.of(&TenantNames::new("team-c", "tenants")).is_empty());
    }

    #[test]
    fn deployment_without_status_is_not_ready() {
        let deployment = Deployment {
            metadata: ObjectMeta { generation: Some(1), ..ObjectMeta::default() },
            spec: Some(DeploymentSpec { replicas: Some(2), ..DeploymentSpec::default() }),
            status: None,
        };
        let readiness = WorkloadReadiness::from_deployment(&deployment);
        assert_eq!(readiness, WorkloadReadiness { desired: 2, ready: 0, updated: 0, observed_latest: false });
        assert!(!readiness.is_ready());

        let available = Deployment {
            status: Some(DeploymentStatus {
                available_replicas: Some(2),
                updated_replicas: Some(2),
                observed_generation: Some(1),
                ..DeploymentStatus::default()
            }),
            ..deployment
        };
        assert!(WorkloadReadiness::from_deployment(&available).is_ready());
    }
}
