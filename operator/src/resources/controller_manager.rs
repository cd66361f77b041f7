//! The tenant's kube-controller-manager Deployment. Flags follow kubeadm; it signs
//! kubelet certificates with the cluster CA and service-account tokens with the
//! service-account key. `spec.controllerManager.extraArgs` overrides any flag.
//!
//! It starts together with the apiserver, not after it, like every leader-elected
//! component (see [`super::leader_elected`]).

use k8s_openapi::api::apps::v1::Deployment;

use super::leader_elected::{CA_CERT, FRONT_PROXY_CA_CERT, LeaderElected, leader_elected_deployment};
use super::pod::ProjectedFile;
use super::secrets::{KUBECONFIG_KEY, SERVICE_ACCOUNT_PRIVATE_KEY_KEY, TLS_CERT_KEY, TLS_PRIVATE_KEY_KEY};
use super::{ResourceError, TenantInputs};
use crate::names::{Component, TenantNames};

/// Secure port of the controller-manager's health and metrics endpoints.
pub const CONTROLLER_MANAGER_PORT: i32 = 10257;

const CREDENTIALS_MOUNT_PATH: &str = "/etc/kubernetes/controller-manager";
const KUBECONFIG: &str = "controller-manager.conf";
const CA_KEY: &str = "ca.key";
const SERVICE_ACCOUNT_PRIVATE_KEY: &str = "sa.key";

/// Every Secret file the controller-manager mounts: its kubeconfig, the cluster CA
/// pair (it signs kubelet certificates), the front-proxy CA certificate (it
/// authenticates requests proxied by the apiserver) and the service-account signing key.
pub(super) fn mounted_files(names: &TenantNames) -> Vec<ProjectedFile> {
    let cluster_ca = names.cluster_ca_secret();
    vec![
        ProjectedFile::new(names.controller_manager_kubeconfig_secret(), KUBECONFIG_KEY, KUBECONFIG),
        ProjectedFile::new(cluster_ca.clone(), TLS_CERT_KEY, CA_CERT),
        ProjectedFile::new(cluster_ca, TLS_PRIVATE_KEY_KEY, CA_KEY),
        ProjectedFile::new(names.front_proxy_ca_secret(), TLS_CERT_KEY, FRONT_PROXY_CA_CERT),
        ProjectedFile::new(
            names.service_account_key_secret(),
            SERVICE_ACCOUNT_PRIVATE_KEY_KEY,
            SERVICE_ACCOUNT_PRIVATE_KEY,
        ),
    ]
}

/// The controller-manager as [`LeaderElected`] describes it: its own flags sign kubelet
/// certificates and service-account tokens, and allocate node pod ranges.
fn controller_manager<'a>(input: &'a TenantInputs<'_>) -> LeaderElected<'a> {
    let names = input.names();
    let network = &input.spec.network;
    let credential = |file: &str| format!("{CREDENTIALS_MOUNT_PATH}/{file}");
    LeaderElected {
        component: Component::ControllerManager,
        name: names.controller_manager(),
        binary: "kube-controller-manager",
        credentials_mount_path: CREDENTIALS_MOUNT_PATH,
        kubeconfig: KUBECONFIG,
        port: CONTROLLER_MANAGER_PORT,
        replicas: input.spec.controller_manager.replicas,
        config_hash: input.config_hashes.controller_manager.clone(),
        image: input.images.controller_manager.clone(),
        own_flags: vec![
            ("use-service-account-credentials", "true".to_string()),
            ("controllers", "*,bootstrapsigner,tokencleaner".to_string()),
            ("cluster-signing-cert-file", credential(CA_CERT)),
            ("cluster-signing-key-file", credential(CA_KEY)),
            ("root-ca-file", credential(CA_CERT)),
            ("service-account-private-key-file", credential(SERVICE_ACCOUNT_PRIVATE_KEY)),
            ("cluster-name", input.owner.names.tenant.clone()),
            ("service-cluster-ip-range", network.service_cidr.clone()),
            // Node pod ranges, as kubeadm does when a pod subnet is set: simple CNIs
            // (flannel, kindnet) read them from Node.spec.podCIDR.
            ("cluster-cidr", network.pod_cidr.clone()),
            ("allocate-node-cidrs", "true".to_string()),
        ],
        extra_args: &input.spec.controller_manager.extra_args,
        resources: input.spec.controller_manager.resources.as_ref(),
        credential_files: mounted_files(names),
    }
}

/// Deployment `names.controller_manager()`: `spec.controllerManager.replicas` pods, one
/// of which leads at a time.
pub fn controller_manager_deployment(input: &TenantInputs<'_>) -> Result<Deployment, ResourceError> {
    leader_elected_deployment(input, controller_manager(input))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    use super::*;
    use crate::resources::test_support::*;

    #[test]
    fn flags_point_at_the_mounted_credentials() {
        let fixture = Fixture::default();
        let deployment = controller_manager_deployment(&fixture.inputs()).expect("builds");
        let spec = deployment.spec.expect("spec");
        assert_eq!(spec.replicas, Some(1));
        let manager = container(&spec.template, "kube-controller-manager");
        let args = manager.args.clone().expect("args");
        let projected = projected_paths(&spec.template, "credentials");
        for name in [
            "kubeconfig",
            "authentication-kubeconfig",
            "authorization-kubeconfig",
            "client-ca-file",
            "requestheader-client-ca-file",
            "cluster-signing-cert-file",
            "cluster-signing-key-file",
            "root-ca-file",
            "service-account-private-key-file",
        ] {
            let path = flag(&args, name).expect(name);
            let file = path.strip_prefix(&format!("{CREDENTIALS_MOUNT_PATH}/")).expect("under the mount");
            assert!(projected.contains(&file.to_string()), "{name}: {file} is not projected");
        }
        assert_eq!(flag(&args, "cluster-name"), Some("team-a"));
        assert_eq!(flag(&args, "cluster-cidr"), Some("10.244.0.0/16"));
        assert_eq!(flag(&args, "controllers"), Some("*,bootstrapsigner,tokencleaner"));
        assert_eq!(flag(&args, "bind-address"), Some("0.0.0.0"));
    }

    #[test]
    fn extra_args_override_a_default_flag() {
        let mut fixture = Fixture::default();
        fixture.spec.controller_manager.extra_args =
            BTreeMap::from([("allocate-node-cidrs".to_string(), "false".to_string())]);
        let deployment = controller_manager_deployment(&fixture.inputs()).expect("builds");
        let args = container(&deployment.spec.expect("spec").template, "kube-controller-manager")
            .args
            .clone()
            .expect("args");
        assert_eq!(args.iter().filter(|arg| arg.starts_with("--allocate-node-cidrs=")).count(), 1);
        assert_eq!(flag(&args, "allocate-node-cidrs"), Some("false"));
    }

    #[test]
    fn startup_liveness_and_readiness_probes_are_https_healthz_on_the_secure_port() {
        let fixture = Fixture::default();
        let deployment = controller_manager_deployment(&fixture.inputs()).expect("builds");
        let template = deployment.spec.expect("spec").template;
        let manager = container(&template, "kube-controller-manager");
        for (kind, probe) in [
            ("startup", &manager.startup_probe),
            ("liveness", &manager.liveness_probe),
            ("readiness", &manager.readiness_probe),
        ] {
            let http_get = probe.as_ref().and_then(|p| p.http_get.as_ref()).expect(kind);
            assert_eq!(http_get.path.as_deref(), Some("/healthz"), "{kind}");
            assert_eq!(http_get.port, IntOrString::Int(CONTROLLER_MANAGER_PORT), "{kind}");
            assert_eq!(http_get.scheme.as_deref(), Some("HTTPS"), "{kind}");
        }
    }
}
