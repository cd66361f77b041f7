//! One builder per owned object of a tenant control plane, rendered from the handlebars
//! templates in `templates/` and read back into k8s-openapi types.
//!
//! Builders are pure: they take the tenant's spec, names, owner, images and config
//! hashes, and never talk to the API. The same input gives byte-identical objects, so
//! an operator restart or upgrade does not roll every tenant. Every object lives in the
//! tenant's namespace, carries [`TenantNames::labels`] and a controller owner reference
//! to its `TenantCluster`.
//!
//! Where to look: [`etcd`](etcd_statefulset) members, Service and NetworkPolicy in
//! `etcd.rs`; the apiserver in `apiserver.rs`; the controller-manager in
//! `controller_manager.rs`; the scheduler in `scheduler.rs`; Secrets in `secrets.rs`; the pod pieces every component
//! shares (flags, resources, the projected-file shape, config hash) in `pod.rs`.
//!
//! Each component's builder owns what its pods mount (its `mounted_files`); `pod.rs`
//! knows no component. This module is where the components are enumerated: a new
//! component's mounts are its builder's `mounted_files` plus one arm in
//! [`mounted_secret_names`] (the match has no wildcard, so a new [`Component`] fails to
//! compile until it has one), and its objects one field in [`ControlPlaneManifests`].

mod apiserver;
mod backup;
mod controller_manager;
mod etcd;
pub mod konnectivity;
mod leader_elected;
mod pod;
mod render;
mod scheduler;
mod secrets;

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::{Resource, ResourceExt};
use serde::Serialize;

use crate::api::{TenantCluster, TenantClusterSpec};
use crate::names::{Component, TenantNames};

pub use apiserver::{
    APISERVER_PORT, AUDIT_POLICY_KEY, apiserver_config_map, apiserver_deployment, apiserver_service,
};
pub use backup::{
    PKI_COPY_CLUSTER_CA_PREFIX, backup_claim, backup_claim_name, backup_cronjob, pki_backup_parts,
    pki_backup_secret, seeds_from_pki_backup,
};
pub use controller_manager::{CONTROLLER_MANAGER_PORT, controller_manager_deployment};
pub use etcd::{
    ETCD_CLIENT_PORT, ETCD_METRICS_PORT, ETCD_PEER_PORT, INITIAL_CLUSTER_KEY, INITIAL_CLUSTER_STATE_KEY,
    etcd_client_urls, etcd_config_map, etcd_image_tag, etcd_network_policy, etcd_peer_url, etcd_service,
    etcd_statefulset,
};
pub use pod::{CONFIG_HASH_ANNOTATION, config_hash};
pub use scheduler::{SCHEDULER_PORT, scheduler_deployment};
pub use secrets::{
    CA_CERT_KEY, CLUSTER_NAME_LABEL, ENCRYPTION_CONFIG_KEY, KUBECONFIG_KEY, SERVICE_ACCOUNT_PRIVATE_KEY_KEY,
    SERVICE_ACCOUNT_PUBLIC_KEY_KEY, TLS_CERT_KEY, TLS_PRIVATE_KEY_KEY, ca_secret, encryption_config_secret,
    kubeconfig_secret, service_account_key_secret, tls_secret,
};

/// Image repository used when the spec names none.
pub const DEFAULT_IMAGE_REPOSITORY: &str = "registry.k8s.io";

/// Why a manifest could not be built. `UnsupportedVersion` and `MissingMetadata` come
/// from the input; the others mean a template and its builder disagree (a bug, caught
/// by the unit tests).
#[derive(Debug, thiserror::Error)]
pub enum ResourceError {
    /// The spec's Kubernetes version has no known etcd pairing or does not parse.
    #[error("unsupported Kubernetes version {version:?}: {reason}")]
    UnsupportedVersion { version: String, reason: String },
    /// The TenantCluster lacks a field every owned object needs.
    #[error("TenantCluster has no metadata.{0}")]
    MissingMetadata(&'static str),
    /// A compiled-in template or partial does not parse.
    #[error("manifest templates failed to register: {0}")]
    TemplateRegistry(String),
    /// A template referenced a value its builder did not provide.
    #[error("rendering template {template}: {source}")]
    Render {
        template: &'static str,
        #[source]
        source: handlebars::RenderError,
    },
    /// A template rendered YAML that is not a valid object of its kind.
    #[error("template {template} rendered an invalid object: {source}")]
    Decode {
        template: &'static str,
        #[source]
        source: serde_yaml_ng::Error,
    },
}

/// The TenantCluster that owns every built object: its derived names and its uid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TenantOwner {
    /// Names derived from the TenantCluster's name and namespace.
    pub names: TenantNames,
    /// `metadata.uid` of the TenantCluster, for owner references and the etcd cluster token.
    pub uid: String,
}

impl TenantOwner {
    /// Owner from explicit parts (tests, or a caller that already has them).
    pub fn new(names: TenantNames, uid: impl Into<String>) -> Self {
        Self { names, uid: uid.into() }
    }

    /// Owner of a TenantCluster read from the API; fails when name, namespace or uid is missing.
    pub fn from_tenant_cluster(tenant_cluster: &TenantCluster) -> Result<Self, ResourceError> {
        let namespace = tenant_cluster.namespace().ok_or(ResourceError::MissingMetadata("namespace"))?;
        let name = tenant_cluster.metadata.name.clone().ok_or(ResourceError::MissingMetadata("name"))?;
        let uid = tenant_cluster.uid().ok_or(ResourceError::MissingMetadata("uid"))?;
        Ok(Self { names: TenantNames::new(name, namespace), uid })
    }

    /// Template context for an object's `metadata` (see `templates/partials/metadata.yaml`).
    fn metadata(&self, name: String, component: Component) -> MetadataContext {
        MetadataContext {
            name,
            namespace: self.names.namespace.clone(),
            labels: self.names.labels(component),
            owner: OwnerContext {
                api_version: TenantCluster::api_version(&()).into_owned(),
                kind: TenantCluster::kind(&()).into_owned(),
                name: self.names.tenant.clone(),
                uid: self.uid.clone(),
            },
        }
    }
}

#[derive(Serialize)]
struct MetadataContext {
    name: String,
    namespace: String,
    labels: BTreeMap<String, String>,
    owner: OwnerContext,
}

#[derive(Serialize)]
struct OwnerContext {
    api_version: String,
    kind: String,
    name: String,
    uid: String,
}

/// Full image references of the control-plane containers; the caller decides them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageSet {
    /// For example `registry.k8s.io/etcd:3.6.5-0`.
    pub etcd: String,
    /// For example `registry.k8s.io/kube-apiserver:v1.34.2`.
    pub apiserver: String,
    /// For example `registry.k8s.io/kube-controller-manager:v1.34.2`.
    pub controller_manager: String,
    /// For example `registry.k8s.io/kube-scheduler:v1.34.2`.
    pub scheduler: String,
    /// The apiserver's konnectivity-server sidecar, for example
    /// `registry.k8s.io/kas-network-proxy/proxy-server:v0.34.0` (see [`konnectivity`]).
    pub konnectivity_server: String,
    /// The operator's own image, which runs the backup agent and the etcd restore
    /// (see [`crate::backup::agent_image`]); rendered only for tenants with
    /// `spec.backup` or `spec.restore`.
    pub agent: String,
}

impl ImageSet {
    /// The images kubeadm would use for the spec's version, from `spec.imageRepository`
    /// (default [`DEFAULT_IMAGE_REPOSITORY`]), with etcd paired by [`etcd_image_tag`].
    pub fn for_spec(spec: &TenantClusterSpec) -> Result<Self, ResourceError> {
        let repository = image_repository(spec);
        let version = spec.version.trim_start_matches('v');
        let minor = kubernetes_minor(version)?;
        let etcd_tag = etcd_image_tag(minor).ok_or_else(|| ResourceError::UnsupportedVersion {
            version: spec.version.clone(),
            reason: format!("no etcd version is paired with Kubernetes 1.{minor}"),
        })?;
        Ok(Self {
            etcd: format!("{repository}/etcd:{etcd_tag}"),
            apiserver: format!("{repository}/kube-apiserver:v{version}"),
            controller_manager: format!("{repository}/kube-controller-manager:v{version}"),
            scheduler: format!("{repository}/kube-scheduler:v{version}"),
            konnectivity_server: konnectivity::konnectivity_image(repository, "proxy-server", version),
            agent: crate::backup::agent_image().to_string(),
        })
    }

    /// The same images with the controller-manager at Kubernetes `version` (with or
    /// without a leading `v`) instead of the spec's: during an upgrade it stays at the
    /// version every apiserver replica runs (see [`crate::desired`]).
    pub fn with_controller_manager_at(mut self, spec: &TenantClusterSpec, version: &str) -> Self {
        let version = version.trim_start_matches('v');
        self.controller_manager = format!("{}/kube-controller-manager:v{version}", image_repository(spec));
        self
    }

    /// The same images with the scheduler at Kubernetes `version` (with or without a
    /// leading `v`): like the controller-manager, it stays at the version every
    /// apiserver replica runs during an upgrade.
    pub fn with_scheduler_at(mut self, spec: &TenantClusterSpec, version: &str) -> Self {
        let version = version.trim_start_matches('v');
        self.scheduler = format!("{}/kube-scheduler:v{version}", image_repository(spec));
        self
    }
}

/// `spec.imageRepository` without a trailing slash, or [`DEFAULT_IMAGE_REPOSITORY`].
fn image_repository(spec: &TenantClusterSpec) -> &str {
    spec.image_repository.as_deref().unwrap_or(DEFAULT_IMAGE_REPOSITORY).trim_end_matches('/')
}

/// The Kubernetes version (no leading `v`) in the tag of an image reference such as
/// `nestor.local/kube-apiserver:v1.35.4`; `None` for a reference without a tag.
pub fn image_version(image: &str) -> Option<&str> {
    let (_, last_segment) = image.rsplit_once('/').unwrap_or(("", image));
    let (_, tag) = last_segment.split_once(':')?;
    Some(tag.trim_start_matches('v')).filter(|version| !version.is_empty())
}

/// The minor of a `1.<minor>.<patch>` version (no leading `v`).
fn kubernetes_minor(version: &str) -> Result<u32, ResourceError> {
    let unsupported = |reason: &str| ResourceError::UnsupportedVersion {
        version: version.to_string(),
        reason: reason.to_string(),
    };
    let mut parts = version.split('.');
    if parts.next() != Some("1") {
        return Err(unsupported("expected 1.<minor>.<patch>"));
    }
    parts
        .next()
        .and_then(|minor| minor.parse().ok())
        .ok_or_else(|| unsupported("expected 1.<minor>.<patch> with a numeric minor"))
}

/// Hashes of what each component's pods mount (see [`config_hash`] and
/// [`mounted_secret_names`]); they land in the pod-template annotation
/// [`CONFIG_HASH_ANNOTATION`], so new certificates or configuration roll the pods.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigHashes {
    /// Over the Secrets `mounted_secret_names(names, Component::Etcd)`.
    pub etcd: String,
    /// Over the apiserver's Secrets and its ConfigMap ([`apiserver_config_map`]).
    pub apiserver: String,
    /// Over the Secrets `mounted_secret_names(names, Component::ControllerManager)`.
    pub controller_manager: String,
    /// Over the Secrets `mounted_secret_names(names, Component::Scheduler)`.
    pub scheduler: String,
}

/// Names of the Secrets whose content `component`'s pods mount, sorted: hash exactly
/// these (with [`config_hash`]) for that component's entry of [`ConfigHashes`]. The
/// apiserver also mounts its ConfigMap ([`apiserver_config_map`]).
pub fn mounted_secret_names(names: &TenantNames, component: Component) -> Vec<String> {
    let files = match component {
        Component::Etcd => etcd::mounted_files(names),
        Component::ApiServer => apiserver::mounted_files(names),
        Component::ControllerManager => controller_manager::mounted_files(names),
        Component::Scheduler => scheduler::mounted_files(names),
        Component::Pki | Component::Backup => Vec::new(),
    };
    let unique: BTreeSet<String> = files.into_iter().map(|file| file.secret).collect();
    unique.into_iter().collect()
}

/// How many etcd members the builders render. Equal to `spec.etcd.replicas` at rest;
/// while the operator scales etcd one member at a time (see
/// [`crate::etcd::scaling`]) they follow the member list instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EtcdMembers {
    /// The StatefulSet's replicas, and the members the ConfigMap's initial-cluster names.
    pub running: i32,
    /// The members the apiserver's `--etcd-servers` names.
    pub serving: i32,
}

impl EtcdMembers {
    /// A cluster at rest with `replicas` members.
    pub fn settled(replicas: i32) -> Self {
        Self { running: replicas, serving: replicas }
    }
}

/// Everything the control-plane builders read.
#[derive(Clone, Copy, Debug)]
pub struct TenantInputs<'a> {
    /// The owning TenantCluster.
    pub owner: &'a TenantOwner,
    /// Its desired state (validated and defaulted by the API).
    pub spec: &'a TenantClusterSpec,
    /// Container images, usually [`ImageSet::for_spec`].
    pub images: &'a ImageSet,
    /// Pod-template config hashes, one per component.
    pub config_hashes: &'a ConfigHashes,
    /// etcd members to render (`spec.etcd.replicas` unless etcd is being scaled).
    pub etcd_members: EtcdMembers,
    /// The namespace the operator's pods run in, which the etcd NetworkPolicy admits on
    /// the client port; `None` when unknown (an operator run as a host process), and then
    /// the operator's pod label is admitted from any namespace.
    pub operator_namespace: Option<&'a str>,
}

impl TenantInputs<'_> {
    fn names(&self) -> &TenantNames {
        &self.owner.names
    }
}

/// Every non-Secret object of a tenant control plane, in the order the reconciler
/// should apply them: etcd first (the apiserver cannot start without it), then the
/// apiserver, then the controller-manager and the scheduler. Secrets come from the PKI; see [`tls_secret`]
/// and its siblings. Each field holds what the builder of the same name returns.
#[derive(Clone, Debug, PartialEq)]
pub struct ControlPlaneManifests {
    pub etcd_service: Service,
    pub etcd_network_policy: NetworkPolicy,
    pub etcd_statefulset: StatefulSet,
    pub apiserver_config_map: ConfigMap,
    pub apiserver_service: Service,
    pub apiserver_deployment: Deployment,
    pub controller_manager_deployment: Deployment,
    pub scheduler_deployment: Deployment,
}

/// Builds every object of [`ControlPlaneManifests`].
pub fn control_plane_manifests(input: &TenantInputs<'_>) -> Result<ControlPlaneManifests, ResourceError> {
    Ok(ControlPlaneManifests {
        etcd_service: etcd_service(input)?,
        etcd_network_policy: etcd_network_policy(input)?,
        etcd_statefulset: etcd_statefulset(input)?,
        apiserver_config_map: apiserver_config_map(input.owner)?,
        apiserver_service: apiserver_service(input)?,
        apiserver_deployment: apiserver_deployment(input)?,
        controller_manager_deployment: controller_manager_deployment(input)?,
        scheduler_deployment: scheduler_deployment(input)?,
    })
}

#[cfg(test)]
pub(crate) mod test_support;

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;

    #[test]
    fn images_follow_the_spec_version_and_repository() {
        let mut spec = spec();
        spec.version = "1.34.2".into();
        spec.image_repository = Some("registry.example/k8s/".into());
        let images = ImageSet::for_spec(&spec).expect("1.34 is supported");
        assert_eq!(images.etcd, "registry.example/k8s/etcd:3.6.5-0");
        assert_eq!(images.apiserver, "registry.example/k8s/kube-apiserver:v1.34.2");
        assert_eq!(images.controller_manager, "registry.example/k8s/kube-controller-manager:v1.34.2");
        assert_eq!(images.scheduler, "registry.example/k8s/kube-scheduler:v1.34.2");
    }

    #[test]
    fn images_default_to_registry_k8s_io() {
        let mut spec = spec();
        spec.version = "1.33.4".into();
        let images = ImageSet::for_spec(&spec).expect("1.33 is supported");
        assert_eq!(images.etcd, "registry.k8s.io/etcd:3.5.21-0");
        assert_eq!(images.apiserver, "registry.k8s.io/kube-apiserver:v1.33.4");
    }

    #[test]
    fn the_controller_manager_can_be_held_at_another_version() {
        let mut spec = spec();
        spec.version = "1.35.4".into();
        spec.image_repository = Some("nestor.local".into());
        let images =
            ImageSet::for_spec(&spec).expect("1.35 is supported").with_controller_manager_at(&spec, "1.34.2");
        assert_eq!(images.apiserver, "nestor.local/kube-apiserver:v1.35.4");
        assert_eq!(images.controller_manager, "nestor.local/kube-controller-manager:v1.34.2");
        assert_eq!(image_version(&images.apiserver), Some("1.35.4"));
        assert_eq!(image_version(&images.controller_manager), Some("1.34.2"));
        assert_eq!(images.scheduler, "nestor.local/kube-scheduler:v1.35.4", "held separately");
        let images = images.with_scheduler_at(&spec, "v1.34.2");
        assert_eq!(images.scheduler, "nestor.local/kube-scheduler:v1.34.2");
        assert_eq!(images.apiserver, "nestor.local/kube-apiserver:v1.35.4");
        assert_eq!(image_version("localhost:5000/kube-apiserver"), None, "a registry port is no tag");
        assert_eq!(image_version("localhost:5000/kube-apiserver:v1.34.2"), Some("1.34.2"));
    }

    #[test]
    fn unpaired_or_malformed_versions_are_rejected() {
        for version in ["1.20.0", "2.34.0", "1.x.0", ""] {
            let mut spec = spec();
            spec.version = version.into();
            let error = ImageSet::for_spec(&spec).expect_err(version);
            assert!(matches!(error, ResourceError::UnsupportedVersion { .. }), "{version}: {error}");
        }
    }

    #[test]
    fn owner_comes_from_the_tenant_cluster_metadata() {
        let mut tenant_cluster = TenantCluster::new("team-a", spec());
        assert!(matches!(
            TenantOwner::from_tenant_cluster(&tenant_cluster),
            Err(ResourceError::MissingMetadata("namespace"))
        ));
        tenant_cluster.metadata.namespace = Some("tenants".into());
        tenant_cluster.metadata.uid = Some("uid-1".into());
        let owner = TenantOwner::from_tenant_cluster(&tenant_cluster).expect("complete metadata");
        assert_eq!(owner, TenantOwner::new(TenantNames::new("team-a", "tenants"), "uid-1"));
    }

    #[test]
    fn every_object_is_owned_labelled_and_namespaced() {
        let fixture = Fixture::default();
        let manifests = control_plane_manifests(&fixture.inputs()).expect("builds");
        let names = &fixture.owner.names;
        let objects: [(&k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta, Component); 8] = [
            (&manifests.etcd_service.metadata, Component::Etcd),
            (&manifests.etcd_network_policy.metadata, Component::Etcd),
            (&manifests.etcd_statefulset.metadata, Component::Etcd),
            (&manifests.apiserver_config_map.metadata, Component::ApiServer),
            (&manifests.apiserver_service.metadata, Component::ApiServer),
            (&manifests.apiserver_deployment.metadata, Component::ApiServer),
            (&manifests.controller_manager_deployment.metadata, Component::ControllerManager),
            (&manifests.scheduler_deployment.metadata, Component::Scheduler),
        ];
        for (metadata, component) in objects {
            assert_owned_by_tenant(metadata, &fixture.owner, component);
        }
        assert_eq!(manifests.etcd_service.metadata.name.as_deref(), Some(names.etcd().as_str()));
        assert_eq!(manifests.etcd_statefulset.metadata.name.as_deref(), Some(names.etcd().as_str()));
        assert_eq!(
            manifests.etcd_network_policy.metadata.name.as_deref(),
            Some(names.etcd_network_policy().as_str())
        );
        assert_eq!(manifests.apiserver_service.metadata.name.as_deref(), Some(names.apiserver().as_str()));
        assert_eq!(manifests.apiserver_deployment.metadata.name.as_deref(), Some(names.apiserver().as_str()));
        assert_eq!(
            manifests.controller_manager_deployment.metadata.name.as_deref(),
            Some(names.controller_manager().as_str())
        );
        assert_eq!(manifests.scheduler_deployment.metadata.name.as_deref(), Some(names.scheduler().as_str()));
    }

    #[test]
    fn the_same_input_renders_byte_identical_json() {
        let fixture = Fixture::default();
        let first = control_plane_manifests(&fixture.inputs()).expect("builds");
        let second = control_plane_manifests(&fixture.inputs()).expect("builds");
        let as_json = |manifests: &ControlPlaneManifests| {
            [
                serde_json::to_string(&manifests.etcd_service),
                serde_json::to_string(&manifests.etcd_network_policy),
                serde_json::to_string(&manifests.etcd_statefulset),
                serde_json::to_string(&manifests.apiserver_config_map),
                serde_json::to_string(&manifests.apiserver_service),
                serde_json::to_string(&manifests.apiserver_deployment),
                serde_json::to_string(&manifests.controller_manager_deployment),
                serde_json::to_string(&manifests.scheduler_deployment),
            ]
            .map(|json| json.expect("serializes"))
        };
        assert_eq!(as_json(&first), as_json(&second));
    }

    #[test]
    fn every_pod_is_restricted_and_carries_its_config_hash() {
        let fixture = Fixture::default();
        let manifests = control_plane_manifests(&fixture.inputs()).expect("builds");
        let hashes = &fixture.config_hashes;
        let templates = [
            (manifests.etcd_statefulset.spec.expect("spec").template, &hashes.etcd),
            (manifests.apiserver_deployment.spec.expect("spec").template, &hashes.apiserver),
            (
                manifests.controller_manager_deployment.spec.expect("spec").template,
                &hashes.controller_manager,
            ),
            (manifests.scheduler_deployment.spec.expect("spec").template, &hashes.scheduler),
        ];
        for (template, hash) in templates {
            let annotations =
                template.metadata.as_ref().and_then(|m| m.annotations.clone()).unwrap_or_default();
            assert_eq!(annotations.get(CONFIG_HASH_ANNOTATION), Some(hash));
            assert_restricted_pod(&template);
        }
    }

    #[test]
    fn mounted_secrets_are_the_ones_each_component_needs() {
        let names = TenantNames::new("team-a", "tenants");
        assert_eq!(
            mounted_secret_names(&names, Component::Etcd),
            [names.etcd_peer_secret(), names.etcd_server_secret()]
        );
        let mut controller_manager = vec![
            names.cluster_ca_secret(),
            names.controller_manager_kubeconfig_secret(),
            names.front_proxy_ca_secret(),
            names.service_account_key_secret(),
        ];
        controller_manager.sort();
        assert_eq!(mounted_secret_names(&names, Component::ControllerManager), controller_manager);
        let mut scheduler = vec![
            names.cluster_ca_secret(),
            names.front_proxy_ca_secret(),
            names.scheduler_kubeconfig_secret(),
        ];
        scheduler.sort();
        assert_eq!(mounted_secret_names(&names, Component::Scheduler), scheduler);
        let apiserver = mounted_secret_names(&names, Component::ApiServer);
        for expected in [
            names.cluster_ca_secret(),
            names.front_proxy_ca_secret(),
            names.service_account_key_secret(),
            names.apiserver_serving_secret(),
            names.apiserver_kubelet_client_secret(),
            names.apiserver_etcd_client_secret(),
            names.front_proxy_client_secret(),
            names.encryption_config_secret(),
            names.konnectivity_server_serving_secret(),
            names.konnectivity_server_client_secret(),
        ] {
            assert!(apiserver.contains(&expected), "apiserver mounts {expected}");
        }
        assert_eq!(apiserver.len(), 10);
        assert!(mounted_secret_names(&names, Component::Pki).is_empty());
    }
}
