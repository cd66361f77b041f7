//! Shared fixtures and assertions for the resource builders' unit tests.

use k8s_openapi::api::core::v1::{Container, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::{ConfigHashes, ImageSet, TenantInputs, TenantOwner};
use crate::api::TenantClusterSpec;
use crate::names::{Component, TenantNames};

/// A spec with every default, version 1.34.2.
pub(crate) fn spec() -> TenantClusterSpec {
    serde_json::from_value(serde_json::json!({"version": "1.34.2"})).expect("minimal spec deserializes")
}

/// Owned inputs for tenant `team-a` in namespace `tenants`; tests change fields, then call `inputs`.
pub(crate) struct Fixture {
    pub(crate) owner: TenantOwner,
    pub(crate) spec: TenantClusterSpec,
    pub(crate) images: ImageSet,
    pub(crate) config_hashes: ConfigHashes,
}

impl Default for Fixture {
    fn default() -> Self {
        let spec = spec();
        let images = ImageSet::for_spec(&spec).expect("default version is supported");
        Self {
            owner: TenantOwner::new(TenantNames::new("team-a", "tenants"), "0c9d2b7e-uid"),
            spec,
            images,
            config_hashes: ConfigHashes {
                etcd: "etcd-hash".into(),
                apiserver: "apiserver-hash".into(),
                controller_manager: "controller-manager-hash".into(),
                scheduler: "scheduler-hash".into(),
            },
        }
    }
}

impl Fixture {
    pub(crate) fn inputs(&self) -> TenantInputs<'_> {
        TenantInputs {
            owner: &self.owner,
            spec: &self.spec,
            images: &self.images,
            config_hashes: &self.config_hashes,
            etcd_members: super::EtcdMembers::settled(self.spec.etcd.replicas),
            operator_namespace: Some("nestor-system"),
        }
    }
}

/// Namespace, labels and a controller owner reference to the TenantCluster.
pub(crate) fn assert_owned_by_tenant(metadata: &ObjectMeta, owner: &TenantOwner, component: Component) {
    let name = metadata.name.as_deref().unwrap_or("<unnamed>");
    assert_eq!(metadata.namespace.as_deref(), Some(owner.names.namespace.as_str()), "{name}: namespace");
    let labels = metadata.labels.clone().unwrap_or_default();
    for (key, value) in owner.names.labels(component) {
        assert_eq!(labels.get(&key), Some(&value), "{name}: label {key}");
    }
    let references = metadata.owner_references.as_deref().unwrap_or_default();
    assert_eq!(references.len(), 1, "{name}: one owner reference");
    let reference = &references[0];
    assert_eq!(reference.api_version, "nestor.dev/v1alpha1", "{name}");
    assert_eq!(reference.kind, "TenantCluster", "{name}");
    assert_eq!(reference.name, owner.names.tenant, "{name}");
    assert_eq!(reference.uid, owner.uid, "{name}");
    assert_eq!(reference.controller, Some(true), "{name}");
    assert_eq!(reference.block_owner_deletion, Some(true), "{name}");
}

/// The container called `name` in `template`.
pub(crate) fn container<'a>(template: &'a PodTemplateSpec, name: &str) -> &'a Container {
    template
        .spec
        .as_ref()
        .and_then(|spec| spec.containers.iter().find(|container| container.name == name))
        .unwrap_or_else(|| panic!("no container {name}"))
}

/// The value of `--name=value` in a container's `args`, if the flag is there.
pub(crate) fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    let prefix = format!("--{name}=");
    args.iter().find_map(|arg| arg.strip_prefix(&prefix))
}

/// The file paths projected into volume `volume` of `template`.
pub(crate) fn projected_paths(template: &PodTemplateSpec, volume: &str) -> Vec<String> {
    let volumes = template.spec.as_ref().and_then(|spec| spec.volumes.as_ref()).expect("volumes");
    let projected = volumes
        .iter()
        .find(|candidate| candidate.name == volume)
        .and_then(|volume| volume.projected.as_ref())
        .unwrap_or_else(|| panic!("no projected volume {volume}"));
    projected
        .sources
        .iter()
        .flatten()
        .filter_map(|source| source.secret.as_ref())
        .flat_map(|secret| secret.items.iter().flatten().map(|item| item.path.clone()))
        .collect()
}

/// The restricted Pod Security Standard, plus no service-account token and no
/// Service environment variables, on the pod and on every container.
pub(crate) fn assert_restricted_pod(template: &PodTemplateSpec) {
    let spec = template.spec.as_ref().expect("pod spec");
    assert_eq!(spec.automount_service_account_token, Some(false));
    assert_eq!(spec.enable_service_links, Some(false));
    let pod = spec.security_context.as_ref().expect("pod security context");
    assert_eq!(pod.run_as_non_root, Some(true));
    assert_eq!(pod.run_as_user, Some(65532));
    assert_eq!(pod.fs_group, Some(65532));
    assert_eq!(pod.seccomp_profile.as_ref().map(|p| p.type_.as_str()), Some("RuntimeDefault"));
    assert!(!spec.containers.is_empty());
    let all_containers = spec.containers.iter().chain(spec.init_containers.iter().flatten());
    for container in all_containers {
        let context = container.security_context.as_ref().unwrap_or_else(|| panic!("{}", container.name));
        assert_eq!(context.run_as_non_root, Some(true), "{}", container.name);
        assert_eq!(context.read_only_root_filesystem, Some(true), "{}", container.name);
        assert_eq!(context.allow_privilege_escalation, Some(false), "{}", container.name);
        let dropped = context.capabilities.as_ref().and_then(|c| c.drop.clone()).unwrap_or_default();
        assert_eq!(dropped, ["ALL"], "{}", container.name);
        assert_eq!(
            context.seccomp_profile.as_ref().map(|p| p.type_.as_str()),
            Some("RuntimeDefault"),
            "{}",
            container.name
        );
        assert!(
            container.resources.as_ref().and_then(|r| r.requests.as_ref()).is_some(),
            "{}",
            container.name
        );
        assert_eq!(container.image_pull_policy.as_deref(), Some("IfNotPresent"), "{}", container.name);
    }
}
