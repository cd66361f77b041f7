//! The `TenantCluster` API (`nestor.dev/v1alpha1`): the contract between a
//! platform team and the operator. Everything here is plain data; admission
//! rules live next to the types (OpenAPI and CEL, see `validation`) so the
//! apiserver rejects a bad spec before the operator ever sees it.
//!
//! JSON names follow the Kubernetes convention for initialisms (`serviceCIDR`, `podCIDR`,
//! `certSANs`). Defaults are declared once, on the serde fields, and show up in the CRD
//! schema, so the apiserver stores the same values the operator would assume.

mod backup;
mod crd;
pub mod validation;

pub use backup::{
    BackupDestination, BackupSpec, LastBackup, RestorePki, RestoreSource, RestoreSpec, S3Destination,
    VolumeDestination,
};
pub use crd::{crd, crd_yaml};
pub use validation::{SUPPORTED_MINOR_VERSIONS, SpecError, validate};

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use validation::rules;

/// API group of every Nestor resource.
pub const GROUP: &str = "nestor.dev";
/// Served and stored version.
pub const VERSION: &str = "v1alpha1";

/// Desired state of one tenant control plane.
#[derive(CustomResource, Clone, Debug, Deserialize, Serialize, KubeSchema, PartialEq)]
#[kube(
    group = "nestor.dev",
    version = "v1alpha1",
    kind = "TenantCluster",
    plural = "tenantclusters",
    singular = "tenantcluster",
    shortname = "tc",
    category = "nestor",
    namespaced,
    status = "TenantClusterStatus",
    printcolumn = r#"{"name":"Version","type":"string","jsonPath":".spec.version"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Endpoint","type":"string","jsonPath":".status.endpoint"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    validation = rules::name_is_dns_label(),
    validation = rules::name_length()
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = rules::restore_immutable())]
pub struct TenantClusterSpec {
    /// Kubernetes version of the tenant control plane, MAJOR.MINOR.PATCH without a leading
    /// "v", for example "1.34.2". Supported: 1.30 through 1.35. Upgrades go one minor version
    /// at a time; downgrades are refused.
    #[schemars(length(max = 16))]
    #[x_kube(
        validation = rules::version_format(),
        validation = rules::version_supported(),
        validation = rules::version_no_downgrade(),
        validation = rules::version_no_skipped_minor()
    )]
    pub version: String,
    /// The tenant's etcd cluster.
    #[serde(default)]
    pub etcd: EtcdSpec,
    /// The tenant's kube-apiserver.
    #[serde(default)]
    pub api_server: ApiServerSpec,
    /// The tenant's kube-controller-manager.
    #[serde(default)]
    pub controller_manager: ControllerManagerSpec,
    /// The tenant's kube-scheduler.
    #[serde(default)]
    pub scheduler: SchedulerSpec,
    /// How the tenant API is exposed and the tenant's own address ranges.
    #[serde(default)]
    pub network: NetworkSpec,
    /// The addons the operator keeps inside the tenant (kube-proxy, CoreDNS); each can be
    /// turned off for tenants that bring their own.
    #[serde(default)]
    pub addons: AddonsSpec,
    /// Registry and repository prefix for the control-plane images
    /// (`<imageRepository>/kube-apiserver:v<version>`), without tag or digest. Defaults to
    /// registry.k8s.io.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 255))]
    #[x_kube(validation = rules::image_repository())]
    pub image_repository: Option<String>,
    /// Key algorithm and certificate lifetimes of the tenant PKI.
    #[serde(default)]
    pub pki: PkiSpec,
    /// When true the operator observes the cluster but changes nothing.
    #[serde(default)]
    pub paused: bool,
    /// Scheduled etcd snapshots to a volume claim or an S3-compatible bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupSpec>,
    /// Start the tenant's etcd from a snapshot (and keep the backed-up PKI). Only at
    /// creation; immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<RestoreSpec>,
}

/// The tenant's etcd members.
#[derive(Clone, Debug, Deserialize, Serialize, KubeSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EtcdSpec {
    /// Number of members: 1, 3 or 5 (an odd number keeps a quorum).
    #[serde(default = "default_etcd_replicas")]
    #[schemars(range(min = 1, max = 5))]
    #[x_kube(validation = rules::etcd_replicas())]
    pub replicas: i32,
    /// Where members keep their data.
    #[serde(default)]
    pub storage: EtcdStorage,
    /// Compute resources of each member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// etcd's space quota (`--quota-backend-bytes`), in bytes: past it, etcd raises the
    /// `NOSPACE` alarm and refuses writes until the operator has freed space. 16 MiB to
    /// 8 GiB; etcd's own default (2 GiB) when unset. Keep it below the volume size. A
    /// change restarts the members one at a time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = rules::quota_backend_bytes())]
    pub quota_backend_bytes: Option<i64>,
}

impl Default for EtcdSpec {
    fn default() -> Self {
        Self {
            replicas: default_etcd_replicas(),
            storage: EtcdStorage::default(),
            resources: None,
            quota_backend_bytes: None,
        }
    }
}

impl EtcdSpec {
    /// The space quota the members should run with: the spec's, or etcd's default.
    pub fn quota_bytes(&self) -> u64 {
        self.quota_backend_bytes
            .and_then(|bytes| u64::try_from(bytes).ok())
            .unwrap_or(crate::etcd::maintenance::DEFAULT_QUOTA_BYTES)
    }
}

fn default_etcd_replicas() -> i32 {
    3
}

/// etcd data volume: a PersistentVolumeClaim per member, or an emptyDir when `ephemeral`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, KubeSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = rules::storage_class_immutable())]
pub struct EtcdStorage {
    /// Keep data in an emptyDir that dies with the pod (tests and throwaway clusters only).
    /// Immutable.
    #[serde(default)]
    #[x_kube(validation = rules::immutable(
        "spec.etcd.storage.ephemeral",
        "switching between emptyDir and volume claims would lose the etcd data"
    ))]
    pub ephemeral: bool,
    /// Size of each member's volume claim. Defaults to 1Gi.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = rules::storage_size())]
    pub size: Option<Quantity>,
    /// StorageClass of the volume claims; the meta cluster's default when unset. Immutable,
    /// including setting or removing it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    #[x_kube(validation = rules::storage_class_name())]
    pub storage_class_name: Option<String>,
}

/// The tenant's kube-apiserver replicas.
#[derive(Clone, Debug, Deserialize, Serialize, KubeSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ApiServerSpec {
    /// Number of kube-apiserver pods, 1 to 10.
    #[serde(default = "default_one")]
    #[schemars(range(min = 1, max = 10))]
    pub replicas: i32,
    /// Extra `--flag=value` arguments (flag names without the leading dashes); they override
    /// Nestor's defaults of the same name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "extra_args_schema")]
    pub extra_args: BTreeMap<String, String>,
    /// Extra subject alternative names (DNS names or IPs) for the serving certificate.
    #[serde(default, rename = "certSANs", skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = validation::MAX_CERT_SANS), inner(length(max = 253)))]
    #[x_kube(validation = rules::cert_sans(), merge_strategy = ListMerge::Set)]
    pub cert_sans: Vec<String>,
    /// Compute resources of each pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

impl Default for ApiServerSpec {
    fn default() -> Self {
        Self { replicas: 1, extra_args: BTreeMap::new(), cert_sans: Vec::new(), resources: None }
    }
}

fn default_one() -> i32 {
    1
}

/// `extraArgs`: a bounded string map, so the apiserver's CEL cost estimate of the enclosing
/// object stays finite.
fn extra_args_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "maxProperties": validation::MAX_EXTRA_ARGS,
        "additionalProperties": {
            "type": "string",
            "maxLength": validation::MAX_EXTRA_ARG_VALUE_LENGTH,
        },
        // The builders strip leading dashes and write --key=value: an empty key, or one of
        // dashes only, would be `--=value`, which the component refuses at start-up. The
        // apiserver prefixes the message with the exact path (spec.apiServer.extraArgs...).
        "x-kubernetes-validations": [{
            "rule": "self.all(key, key.matches('[^-]'))",
            "message": "spec.<component>.extraArgs: every key must name a flag (an empty key, or one of dashes only, is no flag)",
        }],
    })
}

/// A leader-elected control-plane component's pods: kube-controller-manager and
/// kube-scheduler take the same settings.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LeaderElectedSpec {
    /// Number of pods (one leads, the rest wait), 1 to 10.
    #[serde(default = "default_one")]
    #[schemars(range(min = 1, max = 10))]
    pub replicas: i32,
    /// Extra `--flag=value` arguments (flag names without the leading dashes); they override
    /// Nestor's defaults of the same name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "extra_args_schema")]
    pub extra_args: BTreeMap<String, String>,
    /// Compute resources of each pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

impl Default for LeaderElectedSpec {
    fn default() -> Self {
        Self { replicas: 1, extra_args: BTreeMap::new(), resources: None }
    }
}

/// The tenant's kube-controller-manager pods.
pub type ControllerManagerSpec = LeaderElectedSpec;
/// The tenant's kube-scheduler pods.
pub type SchedulerSpec = LeaderElectedSpec;

/// The addons inside the tenant (see `tenant_api::addons`).
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AddonsSpec {
    /// kube-proxy in iptables mode, a DaemonSet on every node.
    #[serde(default)]
    pub kube_proxy: KubeProxyAddon,
    /// CoreDNS, with the `kube-dns` Service at the tenth address of `serviceCIDR`.
    #[serde(default, rename = "coreDNS")]
    pub core_dns: CoreDnsAddon,
}

/// kube-proxy.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KubeProxyAddon {
    /// Off for tenants whose CNI replaces kube-proxy (Cilium, for example); what Nestor
    /// applied is then deleted from the tenant.
    #[serde(default = "default_true")]
    pub enabled: bool,
}

impl Default for KubeProxyAddon {
    fn default() -> Self {
        Self { enabled: true }
    }
}

/// CoreDNS.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CoreDnsAddon {
    /// Off for tenants that run a DNS of their own; what Nestor applied is then deleted.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Number of CoreDNS pods, 1 to 10 (kubeadm runs 2).
    #[serde(default = "default_coredns_replicas")]
    #[schemars(range(min = 1, max = 10))]
    pub replicas: i32,
}

impl Default for CoreDnsAddon {
    fn default() -> Self {
        Self { enabled: true, replicas: default_coredns_replicas() }
    }
}

fn default_true() -> bool {
    true
}

fn default_coredns_replicas() -> i32 {
    2
}

/// How the tenant apiserver's Service is exposed.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum ServiceType {
    #[default]
    ClusterIP,
    NodePort,
    LoadBalancer,
}

/// Exposure of the tenant API and the tenant's own address plan.
#[derive(Clone, Debug, Deserialize, Serialize, KubeSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = rules::node_port_needs_node_port_service(),
    validation = rules::tunnel_node_port_needs_node_port_service(),
    validation = rules::tunnel_node_port_differs(),
    validation = rules::pod_and_service_cidrs_disjoint()
)]
pub struct NetworkSpec {
    /// Type of the apiserver Service in the meta cluster.
    #[serde(default)]
    pub service_type: ServiceType,
    /// Host name or IP that clients outside the meta cluster use; it goes into
    /// the serving certificate and the admin kubeconfig.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    #[x_kube(validation = rules::dns_name_or_ip("spec.network.externalHost"))]
    pub external_host: Option<String>,
    /// Fixed node port, only when `serviceType` is NodePort (30000-32767).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 30000, max = 32767))]
    pub node_port: Option<i32>,
    /// The tenant's Service CIDR: IPv4 /12 to /24 or IPv6 /108 to /120. Immutable.
    #[serde(default = "default_service_cidr", rename = "serviceCIDR")]
    #[schemars(length(max = 64))]
    #[x_kube(
        validation = rules::cidr("spec.network.serviceCIDR"),
        validation = rules::service_cidr_size(),
        validation = rules::immutable(
            "spec.network.serviceCIDR",
            "Services and the apiserver's certificate hold addresses from it"
        )
    )]
    pub service_cidr: String,
    /// The tenant's Pod CIDR; must not overlap the Service CIDR. Immutable.
    #[serde(default = "default_pod_cidr", rename = "podCIDR")]
    #[schemars(length(max = 64))]
    #[x_kube(
        validation = rules::cidr("spec.network.podCIDR"),
        validation = rules::immutable("spec.network.podCIDR", "running Pods hold addresses from it")
    )]
    pub pod_cidr: String,
    /// The tenant's cluster domain, a DNS subdomain. Immutable.
    #[serde(default = "default_cluster_domain")]
    #[schemars(length(max = 253))]
    #[x_kube(
        validation = rules::cluster_domain(),
        validation = rules::immutable(
            "spec.network.clusterDomain",
            "in-cluster DNS names and certificates are built from it"
        )
    )]
    pub cluster_domain: String,
    /// How the apiservers reach the nodes (kubelets for logs, exec, attach and
    /// port-forward; webhooks, aggregated APIs and Service proxying served on the nodes):
    /// through a konnectivity tunnel the nodes open (the default), or directly.
    #[serde(default)]
    pub tunnel: TunnelSpec,
}

impl Default for NetworkSpec {
    fn default() -> Self {
        Self {
            service_type: ServiceType::default(),
            external_host: None,
            node_port: None,
            service_cidr: default_service_cidr(),
            pod_cidr: default_pod_cidr(),
            cluster_domain: default_cluster_domain(),
            tunnel: TunnelSpec::default(),
        }
    }
}

/// The konnectivity tunnel: a konnectivity-server beside each apiserver, an agent on each
/// node that dials it on the tenant endpoint's host. Only tenants nodes can join (an
/// `externalHost` behind a NodePort or LoadBalancer Service) run it.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TunnelSpec {
    /// On (the default): the apiservers reach the nodes only through the connections the
    /// nodes' agents open, so nodes behind NAT or a firewall need only reach the tenant
    /// endpoint. Off: the apiservers dial nodes and pods directly, which needs a route
    /// from the meta cluster's pods to them.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Fixed node port of the agents' port when `serviceType` is NodePort (30000-32767,
    /// not `nodePort`); Kubernetes chooses one when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 30000, max = 32767))]
    pub node_port: Option<i32>,
}

impl Default for TunnelSpec {
    fn default() -> Self {
        Self { enabled: true, node_port: None }
    }
}

/// How the apiservers reach the nodes, as the status reports it.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum NodeRouting {
    /// Through the konnectivity tunnel.
    Tunnel,
    /// Directly: the apiservers dial the nodes' addresses themselves.
    Direct,
}

fn default_service_cidr() -> String {
    "10.96.0.0/12".into()
}
fn default_pod_cidr() -> String {
    "10.244.0.0/16".into()
}
fn default_cluster_domain() -> String {
    "cluster.local".into()
}

/// Key algorithm of every key Nestor generates for a tenant.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum KeyAlgorithm {
    #[default]
    #[serde(rename = "ECDSA-P256")]
    EcdsaP256,
    #[serde(rename = "RSA-2048")]
    Rsa2048,
}

impl KeyAlgorithm {
    /// The spec's spelling (the serde name above), as users write it in
    /// `spec.pki.keyAlgorithm`; not the Rust variant name.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyAlgorithm::EcdsaP256 => "ECDSA-P256",
            KeyAlgorithm::Rsa2048 => "RSA-2048",
        }
    }
}

impl std::fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Tenant PKI settings. CAs live ten years; these durations apply to leaf certificates.
#[derive(Clone, Debug, Deserialize, Serialize, KubeSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = rules::renew_before_shorter_than_validity())]
pub struct PkiSpec {
    /// Key algorithm for new keys. Existing keys are kept until their certificate is re-issued.
    #[serde(default)]
    pub key_algorithm: KeyAlgorithm,
    /// Lifetime of leaf certificates, a Go-style duration in hours, minutes and seconds such
    /// as "8760h" or "90m".
    #[serde(default = "default_certificate_validity")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = rules::duration("spec.pki.certificateValidity"))]
    pub certificate_validity: String,
    /// Re-issue a leaf certificate when it expires within this duration; shorter than
    /// `certificateValidity`.
    #[serde(default = "default_renew_before")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = rules::duration("spec.pki.renewBefore"))]
    pub renew_before: String,
}

impl Default for PkiSpec {
    fn default() -> Self {
        Self {
            key_algorithm: KeyAlgorithm::default(),
            certificate_validity: default_certificate_validity(),
            renew_before: default_renew_before(),
        }
    }
}

fn default_certificate_validity() -> String {
    "8760h".into()
}
fn default_renew_before() -> String {
    "720h".into()
}

/// Coarse lifecycle state, for humans and printer columns; conditions carry the detail.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub enum Phase {
    Provisioning,
    Ready,
    Degraded,
    Deleting,
}

/// Observed state, written by the operator only.
#[derive(Clone, Debug, Default, Deserialize, Serialize, KubeSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TenantClusterStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// PKIReady, EtcdReady, APIServerReady, ControllerManagerReady, SchedulerReady, KubeconfigReady,
    /// AddonsReady, TunnelReady, BackupReady, Restored and Ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// Kubernetes version the control plane runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// URL of the tenant apiserver, as written into the admin kubeconfig.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Secret (key `value`) holding the admin kubeconfig.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig_secret_name: Option<String>,
    /// Earliest `notAfter` among the tenant's leaf certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificates_expire_at: Option<Time>,
    /// etcd's cluster ID, recorded the first time every member answered healthy. Its
    /// presence means the cluster formed: members (re)started from then on join it
    /// (`--initial-cluster-state=existing`) rather than bootstrap a new one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd_cluster_id: Option<String>,
    /// How the apiservers reach the tenant's nodes: `Tunnel` (konnectivity) or `Direct`.
    /// Unset while nodes cannot join (no `externalHost` behind a NodePort or LoadBalancer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_routing: Option<NodeRouting>,
    /// Voting etcd members the cluster last settled at: `spec.etcd.replicas` once a
    /// scaling finished. While etcd is scaled one member at a time, the scaling goes
    /// from this size, and the apiserver keeps naming at most this many members.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd_members: Option<i32>,
    /// The last successful backup (`spec.backup`), from the finished backup Job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup: Option<LastBackup>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_algorithms_display_as_the_spec_spells_them() {
        for algorithm in [KeyAlgorithm::EcdsaP256, KeyAlgorithm::Rsa2048] {
            let serde_name = serde_json::to_value(algorithm).expect("serializes");
            assert_eq!(serde_name.as_str(), Some(algorithm.as_str()), "{algorithm:?}");
            assert_eq!(algorithm.to_string(), algorithm.as_str());
        }
        assert_eq!(KeyAlgorithm::EcdsaP256.to_string(), "ECDSA-P256");
        assert_eq!(KeyAlgorithm::Rsa2048.to_string(), "RSA-2048");
    }
}
