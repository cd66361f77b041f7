//! The tenant's kube-scheduler Deployment. Flags follow kubeadm; it binds the tenant's
//! pods to its nodes, which no pod of a tenant without one ever gets.
//! `spec.scheduler.extraArgs` overrides any flag.
//!
//! Like every leader-elected component (see [`super::leader_elected`]) it starts
//! together with the apiserver and waits in leader election (Lease
//! `kube-system/kube-scheduler`) until the apiserver answers.

use k8s_openapi::api::apps::v1::Deployment;

use super::leader_elected::{CA_CERT, FRONT_PROXY_CA_CERT, LeaderElected, leader_elected_deployment};
use super::pod::ProjectedFile;
use super::secrets::{KUBECONFIG_KEY, TLS_CERT_KEY};
use super::{ResourceError, TenantInputs};
use crate::names::{Component, TenantNames};

/// Secure port of the scheduler's health and metrics endpoints.
pub const SCHEDULER_PORT: i32 = 10259;

const CREDENTIALS_MOUNT_PATH: &str = "/etc/kubernetes/scheduler";
const KUBECONFIG: &str = "scheduler.conf";

/// Every Secret file the scheduler mounts: its kubeconfig, the cluster CA certificate
/// (it authenticates client certificates) and the front-proxy CA certificate (it
/// authenticates requests proxied by the apiserver). No private key but its own.
pub(super) fn mounted_files(names: &TenantNames) -> Vec<ProjectedFile> {
    vec![
        ProjectedFile::new(names.scheduler_kubeconfig_secret(), KUBECONFIG_KEY, KUBECONFIG),
        ProjectedFile::new(names.cluster_ca_secret(), TLS_CERT_KEY, CA_CERT),
        ProjectedFile::new(names.front_proxy_ca_secret(), TLS_CERT_KEY, FRONT_PROXY_CA_CERT),
    ]
}

/// The scheduler as [`LeaderElected`] describes it: no flags of its own beyond the shared ones.
fn scheduler<'a>(input: &'a TenantInputs<'_>) -> LeaderElected<'a> {
    let names = input.names();
    LeaderElected {
        component: Component::Scheduler,
        name: names.scheduler(),
        binary: "kube-scheduler",
        credentials_mount_path: CREDENTIALS_MOUNT_PATH,
        kubeconfig: KUBECONFIG,
        port: SCHEDULER_PORT,
        replicas: input.spec.scheduler.replicas,
        config_hash: input.config_hashes.scheduler.clone(),
        image: input.images.scheduler.clone(),
        own_flags: Vec::new(),
        extra_args: &input.spec.scheduler.extra_args,
        resources: input.spec.scheduler.resources.as_ref(),
        credential_files: mounted_files(names),
    }
}

/// Deployment `names.scheduler()`: `spec.scheduler.replicas` pods, one of which leads
/// at a time.
pub fn scheduler_deployment(input: &TenantInputs<'_>) -> Result<Deployment, ResourceError> {
    leader_elected_deployment(input, scheduler(input))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::core::v1::ResourceRequirements;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    use super::*;
    use crate::resources::test_support::*;

    fn args_of(deployment: Deployment) -> Vec<String> {
        container(&deployment.spec.expect("spec").template, "kube-scheduler").args.clone().expect("args")
    }

    #[test]
    fn flags_point_at_the_mounted_credentials() {
        let fixture = Fixture::default();
        let deployment = scheduler_deployment(&fixture.inputs()).expect("builds");
        let spec = deployment.spec.expect("spec");
        assert_eq!(spec.replicas, Some(1));
        let scheduler = container(&spec.template, "kube-scheduler");
        assert_eq!(scheduler.image.as_deref(), Some("registry.k8s.io/kube-scheduler:v1.34.2"));
        assert_eq!(scheduler.command.as_deref(), Some(&["kube-scheduler".to_string()][..]));
        let args = scheduler.args.clone().expect("args");
        let projected = projected_paths(&spec.template, "credentials");
        for name in [
            "kubeconfig",
            "authentication-kubeconfig",
            "authorization-kubeconfig",
            "client-ca-file",
            "requestheader-client-ca-file",
        ] {
            let path = flag(&args, name).expect(name);
            let file = path.strip_prefix(&format!("{CREDENTIALS_MOUNT_PATH}/")).expect("under the mount");
            assert!(projected.contains(&file.to_string()), "{name}: {file} is not projected");
        }
        assert_eq!(flag(&args, "leader-elect"), Some("true"));
        assert_eq!(flag(&args, "secure-port"), Some("10259"));
        assert_eq!(flag(&args, "bind-address"), Some("0.0.0.0"));
        assert_eq!(flag(&args, "profiling"), Some("false"));
        assert_eq!(projected.len(), 3, "its kubeconfig and two CA certificates, no other key: {projected:?}");
    }

    #[test]
    fn replicas_and_resources_follow_the_spec() {
        let mut fixture = Fixture::default();
        fixture.spec.scheduler.replicas = 3;
        fixture.spec.scheduler.resources = Some(ResourceRequirements {
            requests: Some(BTreeMap::from([("cpu".to_string(), Quantity("50m".into()))])),
            ..ResourceRequirements::default()
        });
        let spec = scheduler_deployment(&fixture.inputs()).expect("builds").spec.expect("spec");
        assert_eq!(spec.replicas, Some(3));
        let resources = container(&spec.template, "kube-scheduler").resources.clone().expect("resources");
        assert_eq!(resources.requests.expect("requests").get("cpu"), Some(&Quantity("50m".into())));

        let defaults = Fixture::default();
        let spec = scheduler_deployment(&defaults.inputs()).expect("builds").spec.expect("spec");
        let resources = container(&spec.template, "kube-scheduler").resources.clone().expect("resources");
        assert!(resources.requests.is_some_and(|requests| !requests.is_empty()), "default requests");
    }

    #[test]
    fn extra_args_override_a_default_flag() {
        let mut fixture = Fixture::default();
        fixture.spec.scheduler.extra_args = BTreeMap::from([
            ("--secure-port".to_string(), "10260".to_string()),
            ("v".to_string(), "4".to_string()),
        ]);
        let args = args_of(scheduler_deployment(&fixture.inputs()).expect("builds"));
        assert_eq!(args.iter().filter(|arg| arg.starts_with("--secure-port=")).count(), 1);
        assert_eq!(flag(&args, "secure-port"), Some("10260"));
        assert_eq!(flag(&args, "v"), Some("4"));
        // The controller-manager's extraArgs are its own.
        let mut other = Fixture::default();
        other.spec.controller_manager.extra_args = BTreeMap::from([("v".to_string(), "9".to_string())]);
        assert_eq!(flag(&args_of(scheduler_deployment(&other.inputs()).expect("builds")), "v"), None);
    }

    #[test]
    fn startup_liveness_and_readiness_probes_are_https_healthz_on_the_secure_port() {
        let fixture = Fixture::default();
        let deployment = scheduler_deployment(&fixture.inputs()).expect("builds");
        let template = deployment.spec.expect("spec").template;
        let scheduler = container(&template, "kube-scheduler");
        let port = scheduler.ports.as_ref().and_then(|ports| ports.first()).expect("a port");
        assert_eq!(port.container_port, SCHEDULER_PORT);
        for (kind, probe) in [
            ("startup", &scheduler.startup_probe),
            ("liveness", &scheduler.liveness_probe),
            ("readiness", &scheduler.readiness_probe),
        ] {
            let http_get = probe.as_ref().and_then(|p| p.http_get.as_ref()).expect(kind);
            assert_eq!(http_get.path.as_deref(), Some("/healthz"), "{kind}");
            assert_eq!(http_get.port, IntOrString::Int(SCHEDULER_PORT), "{kind}");
            assert_eq!(http_get.scheme.as_deref(), Some("HTTPS"), "{kind}");
        }
    }

    #[test]
    fn the_pod_carries_the_schedulers_config_hash_and_is_restricted() {
        let fixture = Fixture::default();
        let template = scheduler_deployment(&fixture.inputs()).expect("builds").spec.expect("spec").template;
        let annotations = template.metadata.as_ref().and_then(|m| m.annotations.clone()).unwrap_or_default();
        assert_eq!(
            annotations.get(crate::resources::CONFIG_HASH_ANNOTATION),
            Some(&"scheduler-hash".to_string())
        );
        assert_restricted_pod(&template);
    }
}
