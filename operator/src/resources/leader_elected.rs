//! What the leader-elected control-plane components share: kube-controller-manager and
//! kube-scheduler run as a Deployment of the same shape (one template,
//! `templates/leader-elected-deployment.yaml`), authenticate and authorize through their
//! own kubeconfig, serve `/healthz` on a secure port the kubelet probes, and elect a
//! leader through a Lease. Each component's builder adds its own flags and credentials.
//!
//! Both are given both client CA files (as kubeadm gives them), so their start-up reads
//! nothing from the apiserver: they serve `/healthz` at once and wait in leader election
//! until the apiserver answers. Without them the read of the
//! `extension-apiserver-authentication` ConfigMap is fatal while the apiserver is still
//! starting, and the kubelet's crash-loop backoff then starts them seconds late.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ResourceRequirements;
use serde::Serialize;

use super::pod::{ProjectedFile, flags, resources_or_default};
use super::render::{LEADER_ELECTED_DEPLOYMENT, render};
use super::{MetadataContext, ResourceError, TenantInputs};
use crate::names::Component;

/// The cluster CA certificate's file name in every component's credentials mount.
pub(super) const CA_CERT: &str = "ca.crt";
/// The front-proxy CA certificate's file name there.
pub(super) const FRONT_PROXY_CA_CERT: &str = "front-proxy-ca.crt";

/// One leader-elected component, as its builder describes it.
pub(super) struct LeaderElected<'a> {
    /// Which component (labels, names).
    pub component: Component,
    /// The Deployment's name.
    pub name: String,
    /// The binary, also the container's name.
    pub binary: &'static str,
    /// Where its credentials are mounted.
    pub credentials_mount_path: &'static str,
    /// Its kubeconfig's file name there.
    pub kubeconfig: &'static str,
    /// Its secure port.
    pub port: i32,
    /// `spec.<component>.replicas`.
    pub replicas: i32,
    /// The hash of what its pods mount.
    pub config_hash: String,
    /// Its image.
    pub image: String,
    /// Flags of its own, besides the shared ones.
    pub own_flags: Vec<(&'static str, String)>,
    /// `spec.<component>.extraArgs`, which override any flag.
    pub extra_args: &'a BTreeMap<String, String>,
    /// `spec.<component>.resources`.
    pub resources: Option<&'a ResourceRequirements>,
    /// Every Secret file it mounts.
    pub credential_files: Vec<ProjectedFile>,
}

#[derive(Serialize)]
struct Mounts {
    credentials: &'static str,
}

#[derive(Serialize)]
struct DeploymentContext {
    metadata: MetadataContext,
    selector: BTreeMap<String, String>,
    replicas: i32,
    config_hash: String,
    image: String,
    binary: &'static str,
    args: Vec<String>,
    port: i32,
    resources: ResourceRequirements,
    mounts: Mounts,
    credential_files: Vec<ProjectedFile>,
}

/// The component's flags: the shared ones, its own, then `extraArgs` over both.
pub(super) fn args(component: &LeaderElected<'_>) -> Vec<String> {
    let credential = |file: &str| format!("{}/{file}", component.credentials_mount_path);
    let mut defaults = BTreeMap::from([
        ("kubeconfig", credential(component.kubeconfig)),
        ("authentication-kubeconfig", credential(component.kubeconfig)),
        ("authorization-kubeconfig", credential(component.kubeconfig)),
        // Both given, so start-up needs no apiserver (see the module doc).
        ("client-ca-file", credential(CA_CERT)),
        ("requestheader-client-ca-file", credential(FRONT_PROXY_CA_CERT)),
        // Reachable from the kubelet's probe, which runs outside the pod's loopback.
        ("bind-address", "0.0.0.0".to_string()),
        ("secure-port", component.port.to_string()),
        ("leader-elect", "true".to_string()),
        ("profiling", "false".to_string()),
    ]);
    defaults.extend(component.own_flags.iter().cloned());
    flags(defaults, component.extra_args)
}

/// The component's Deployment: `replicas` pods, one of which leads at a time.
pub(super) fn leader_elected_deployment(
    input: &TenantInputs<'_>,
    component: LeaderElected<'_>,
) -> Result<Deployment, ResourceError> {
    let names = input.names();
    let context = DeploymentContext {
        metadata: input.owner.metadata(component.name.clone(), component.component),
        selector: names.selector_labels(component.component),
        replicas: component.replicas,
        config_hash: component.config_hash.clone(),
        image: component.image.clone(),
        binary: component.binary,
        args: args(&component),
        port: component.port,
        resources: resources_or_default(component.resources),
        mounts: Mounts { credentials: component.credentials_mount_path },
        credential_files: component.credential_files,
    };
    render(LEADER_ELECTED_DEPLOYMENT, &context)
}
