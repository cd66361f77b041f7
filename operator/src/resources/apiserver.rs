//! The tenant's kube-apiserver: its Deployment, its Service (the tenant API endpoint)
//! and its ConfigMap (the audit policy). Flags follow kubeadm and the CIS benchmark;
//! `spec.apiServer.extraArgs` overrides any of them.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, ResourceRequirements, Service};
use serde::Serialize;

use super::etcd::etcd_client_urls;
use super::konnectivity::{self, tunnel_active};
use super::pod::{ProjectedFile, flags, resources_or_default};
use super::render::{APISERVER_CONFIG, APISERVER_DEPLOYMENT, APISERVER_SERVICE, render};
use super::secrets::{
    CA_CERT_KEY, ENCRYPTION_CONFIG_KEY, SERVICE_ACCOUNT_PRIVATE_KEY_KEY, SERVICE_ACCOUNT_PUBLIC_KEY_KEY,
    TLS_CERT_KEY, TLS_PRIVATE_KEY_KEY,
};
use super::{MetadataContext, ResourceError, TenantInputs, TenantOwner};
use crate::api::ServiceType;
use crate::names::{Component, TenantNames};

/// Port the apiserver serves on, in the pod and on its Service.
pub const APISERVER_PORT: i32 = 6443;
/// Key of the audit policy in the apiserver ConfigMap.
pub const AUDIT_POLICY_KEY: &str = "audit-policy.yaml";
/// How long a terminating apiserver keeps serving (with /readyz failing) before it
/// stops listening. A rollout or scale-down removes the pod from the Service's
/// endpoints while the pod is already terminating; until every kube-proxy has
/// synced, connections still reach it. Without this delay the old apiserver closes
/// its listener at once and those clients get "connection refused".
pub const SHUTDOWN_DELAY_SECONDS: i64 = 10;
/// The apiserver's own default request timeout (`--request-timeout`): after the
/// shutdown delay it drains requests in flight for at most this long.
const REQUEST_DRAIN_SECONDS: i64 = 60;

const PKI_MOUNT_PATH: &str = "/etc/kubernetes/pki";
const ENCRYPTION_CONFIG_MOUNT_PATH: &str = "/etc/kubernetes/encryption";
const CONFIG_MOUNT_PATH: &str = "/etc/kubernetes/config";
const AUDIT_LOG_MOUNT_PATH: &str = "/var/log/kubernetes/audit";

// File names inside the pki mount, as kubeadm lays them out.
const CA_CERT: &str = "ca.crt";
const SERVING_CERT: &str = "apiserver.crt";
const SERVING_KEY: &str = "apiserver.key";
const KUBELET_CLIENT_CERT: &str = "apiserver-kubelet-client.crt";
const KUBELET_CLIENT_KEY: &str = "apiserver-kubelet-client.key";
const FRONT_PROXY_CA_CERT: &str = "front-proxy-ca.crt";
const FRONT_PROXY_CLIENT_CERT: &str = "front-proxy-client.crt";
const FRONT_PROXY_CLIENT_KEY: &str = "front-proxy-client.key";
const SERVICE_ACCOUNT_PRIVATE_KEY: &str = "sa.key";
const SERVICE_ACCOUNT_PUBLIC_KEY: &str = "sa.pub";
const ETCD_CA_CERT: &str = "etcd-ca.crt";
const ETCD_CLIENT_CERT: &str = "apiserver-etcd-client.crt";
const ETCD_CLIENT_KEY: &str = "apiserver-etcd-client.key";

/// Certificates and keys in the pki volume. Only the certificate of each CA is
/// projected, never its key: the apiserver signs nothing.
fn pki_files(names: &TenantNames) -> Vec<ProjectedFile> {
    let serving = names.apiserver_serving_secret();
    let kubelet_client = names.apiserver_kubelet_client_secret();
    let front_proxy_client = names.front_proxy_client_secret();
    let service_account = names.service_account_key_secret();
    let etcd_client = names.apiserver_etcd_client_secret();
    vec![
        ProjectedFile::new(names.cluster_ca_secret(), TLS_CERT_KEY, CA_CERT),
        ProjectedFile::new(serving.clone(), TLS_CERT_KEY, SERVING_CERT),
        ProjectedFile::new(serving, TLS_PRIVATE_KEY_KEY, SERVING_KEY),
        ProjectedFile::new(kubelet_client.clone(), TLS_CERT_KEY, KUBELET_CLIENT_CERT),
        ProjectedFile::new(kubelet_client, TLS_PRIVATE_KEY_KEY, KUBELET_CLIENT_KEY),
        ProjectedFile::new(names.front_proxy_ca_secret(), TLS_CERT_KEY, FRONT_PROXY_CA_CERT),
        ProjectedFile::new(front_proxy_client.clone(), TLS_CERT_KEY, FRONT_PROXY_CLIENT_CERT),
        ProjectedFile::new(front_proxy_client, TLS_PRIVATE_KEY_KEY, FRONT_PROXY_CLIENT_KEY),
        ProjectedFile::new(
            service_account.clone(),
            SERVICE_ACCOUNT_PRIVATE_KEY_KEY,
            SERVICE_ACCOUNT_PRIVATE_KEY,
        ),
        ProjectedFile::new(service_account, SERVICE_ACCOUNT_PUBLIC_KEY_KEY, SERVICE_ACCOUNT_PUBLIC_KEY),
        ProjectedFile::new(etcd_client.clone(), TLS_CERT_KEY, ETCD_CLIENT_CERT),
        ProjectedFile::new(etcd_client.clone(), TLS_PRIVATE_KEY_KEY, ETCD_CLIENT_KEY),
        ProjectedFile::new(etcd_client, CA_CERT_KEY, ETCD_CA_CERT),
    ]
}

fn encryption_config_files(names: &TenantNames) -> Vec<ProjectedFile> {
    vec![ProjectedFile::new(names.encryption_config_secret(), ENCRYPTION_CONFIG_KEY, ENCRYPTION_CONFIG_KEY)]
}

/// Every Secret file the apiserver pods mount, the konnectivity-server sidecar's
/// included (its certificates roll the pods like the apiserver's own).
pub(super) fn mounted_files(names: &TenantNames) -> Vec<ProjectedFile> {
    let mut files = pki_files(names);
    files.extend(encryption_config_files(names));
    files.extend(konnectivity::mounted_files(names));
    files
}

fn apiserver_args(input: &TenantInputs<'_>) -> Vec<String> {
    let names = input.names();
    let network = &input.spec.network;
    let pki = |file: &str| format!("{PKI_MOUNT_PATH}/{file}");
    let defaults = BTreeMap::from([
        ("advertise-address", "$(POD_IP)".to_string()),
        ("secure-port", APISERVER_PORT.to_string()),
        ("etcd-servers", etcd_client_urls(names, input.etcd_members.serving).join(",")),
        ("etcd-cafile", pki(ETCD_CA_CERT)),
        ("etcd-certfile", pki(ETCD_CLIENT_CERT)),
        ("etcd-keyfile", pki(ETCD_CLIENT_KEY)),
        ("client-ca-file", pki(CA_CERT)),
        ("tls-cert-file", pki(SERVING_CERT)),
        ("tls-private-key-file", pki(SERVING_KEY)),
        ("tls-min-version", "VersionTLS12".to_string()),
        ("kubelet-client-certificate", pki(KUBELET_CLIENT_CERT)),
        ("kubelet-client-key", pki(KUBELET_CLIENT_KEY)),
        // Kubelets serve certificates from the tenant CA (serverTLSBootstrap, approved
        // against their Node by tenant_api::serving_csr): verify every kubelet called (CIS 1.2.5).
        ("kubelet-certificate-authority", pki(CA_CERT)),
        ("kubelet-preferred-address-types", "InternalIP,ExternalIP,Hostname".to_string()),
        ("proxy-client-cert-file", pki(FRONT_PROXY_CLIENT_CERT)),
        ("proxy-client-key-file", pki(FRONT_PROXY_CLIENT_KEY)),
        ("requestheader-client-ca-file", pki(FRONT_PROXY_CA_CERT)),
        ("requestheader-allowed-names", "front-proxy-client".to_string()),
        ("requestheader-extra-headers-prefix", "X-Remote-Extra-".to_string()),
        ("requestheader-group-headers", "X-Remote-Group".to_string()),
        ("requestheader-username-headers", "X-Remote-User".to_string()),
        ("service-account-issuer", format!("https://kubernetes.default.svc.{}", network.cluster_domain)),
        ("service-account-key-file", pki(SERVICE_ACCOUNT_PUBLIC_KEY)),
        ("service-account-signing-key-file", pki(SERVICE_ACCOUNT_PRIVATE_KEY)),
        ("service-cluster-ip-range", network.service_cidr.clone()),
        ("authorization-mode", "Node,RBAC".to_string()),
        ("enable-admission-plugins", "NodeRestriction".to_string()),
        ("enable-bootstrap-token-auth", "true".to_string()),
        ("allow-privileged", "true".to_string()),
        ("profiling", "false".to_string()),
        ("audit-log-path", format!("{AUDIT_LOG_MOUNT_PATH}/audit.log")),
        ("audit-log-maxage", "30".to_string()),
        ("audit-log-maxbackup", "10".to_string()),
        ("audit-log-maxsize", "100".to_string()),
        ("audit-policy-file", format!("{CONFIG_MOUNT_PATH}/{AUDIT_POLICY_KEY}")),
        ("encryption-provider-config", format!("{ENCRYPTION_CONFIG_MOUNT_PATH}/{ENCRYPTION_CONFIG_KEY}")),
        ("shutdown-delay-duration", format!("{SHUTDOWN_DELAY_SECONDS}s")),
        // --anonymous-auth stays at its default (true): the kubelet's probes of
        // /livez and /readyz are anonymous, as in kubeadm.
    ]);
    let mut defaults = defaults;
    if crate::tenant_api::join::nodes_can_join(input.spec) {
        // Pods on the nodes reach the apiserver through the `kubernetes` Service; its
        // endpoint must be the node endpoint, not a pod address in the meta cluster that
        // nodes cannot reach. The operator writes that endpoint inside the tenant
        // (tenant_api::join::kubernetes_endpoint_slice) instead of each apiserver.
        defaults.insert("endpoint-reconciler-type", "none".to_string());
    }
    if tunnel_active(input.spec) {
        // Kubelets, pods and Services on the nodes only through the konnectivity tunnel.
        defaults.insert(
            "egress-selector-config-file",
            format!("{CONFIG_MOUNT_PATH}/{}", konnectivity::EGRESS_SELECTOR_KEY),
        );
    }
    flags(defaults, &input.spec.api_server.extra_args)
}

#[derive(Serialize)]
struct ConfigMapContext {
    metadata: MetadataContext,
    audit_policy_key: &'static str,
    egress_selector_key: &'static str,
    egress_selector: String,
    konnectivity_kubeconfig_key: &'static str,
    konnectivity_kubeconfig: String,
}

/// ConfigMap `names.apiserver()` with the audit policy (key [`AUDIT_POLICY_KEY`]):
/// request metadata for everything except probe endpoints, never bodies; and the
/// konnectivity tunnel's egress selector and server kubeconfig (read only by a tenant
/// that runs the tunnel). It depends only on the owner, so the caller can hash it into
/// `ConfigHashes::apiserver` before building the Deployment.
pub fn apiserver_config_map(owner: &TenantOwner) -> Result<ConfigMap, ResourceError> {
    let context = ConfigMapContext {
        metadata: owner.metadata(owner.names.apiserver(), Component::ApiServer),
        audit_policy_key: AUDIT_POLICY_KEY,
        egress_selector_key: konnectivity::EGRESS_SELECTOR_KEY,
        egress_selector: konnectivity::egress_selector_configuration(),
        konnectivity_kubeconfig_key: konnectivity::SERVER_KUBECONFIG_KEY,
        konnectivity_kubeconfig: konnectivity::server_kubeconfig(APISERVER_PORT),
    };
    render(APISERVER_CONFIG, &context)
}

#[derive(Serialize)]
struct ServiceContext {
    metadata: MetadataContext,
    selector: BTreeMap<String, String>,
    service_type: ServiceType,
    port: i32,
    node_port: Option<i32>,
    tunnel: Option<TunnelPortContext>,
}

#[derive(Serialize)]
struct TunnelPortContext {
    name: &'static str,
    port: i32,
    node_port: Option<i32>,
}

/// Service `names.apiserver()` of `spec.network.serviceType`, port 6443 named `https`;
/// `spec.network.nodePort` applies to NodePort and LoadBalancer Services. A tenant that
/// runs the tunnel has a second port, `konnectivity` (8132), the agents' (node port
/// `spec.network.tunnel.nodePort` when set).
pub fn apiserver_service(input: &TenantInputs<'_>) -> Result<Service, ResourceError> {
    let names = input.names();
    let network = &input.spec.network;
    let node_port = match network.service_type {
        ServiceType::ClusterIP => None,
        ServiceType::NodePort | ServiceType::LoadBalancer => network.node_port,
    };
    let tunnel = tunnel_active(input.spec).then_some(TunnelPortContext {
        name: konnectivity::AGENT_PORT_NAME,
        port: konnectivity::AGENT_PORT,
        node_port: match network.service_type {
            ServiceType::NodePort => network.tunnel.node_port,
            ServiceType::ClusterIP | ServiceType::LoadBalancer => None,
        },
    });
    let context = ServiceContext {
        metadata: input.owner.metadata(names.apiserver(), Component::ApiServer),
        selector: names.selector_labels(Component::ApiServer),
        service_type: network.service_type,
        port: APISERVER_PORT,
        node_port,
        tunnel,
    };
    render(APISERVER_SERVICE, &context)
}

#[derive(Serialize)]
struct Mounts {
    pki: &'static str,
    encryption_config: &'static str,
    config: &'static str,
    audit_log: &'static str,
}

#[derive(Serialize)]
struct DeploymentContext {
    metadata: MetadataContext,
    selector: BTreeMap<String, String>,
    replicas: i32,
    config_hash: String,
    image: String,
    args: Vec<String>,
    port: i32,
    termination_grace_period_seconds: i64,
    resources: ResourceRequirements,
    mounts: Mounts,
    pki_files: Vec<ProjectedFile>,
    encryption_config_files: Vec<ProjectedFile>,
    config_map_name: String,
    konnectivity: Option<KonnectivityContext>,
}

/// The konnectivity-server sidecar, when the tenant runs the tunnel.
#[derive(Serialize)]
struct KonnectivityContext {
    image: String,
    args: Vec<String>,
    agent_port: i32,
    health_port: i32,
    socket_dir: &'static str,
    pki_dir: &'static str,
    pki_files: Vec<ProjectedFile>,
}

/// Deployment `names.apiserver()`: `spec.apiServer.replicas` apiservers talking to
/// every etcd member over mutual TLS, with audit logging and Secret encryption at rest.
pub fn apiserver_deployment(input: &TenantInputs<'_>) -> Result<Deployment, ResourceError> {
    let names = input.names();
    let context = DeploymentContext {
        metadata: input.owner.metadata(names.apiserver(), Component::ApiServer),
        selector: names.selector_labels(Component::ApiServer),
        replicas: input.spec.api_server.replicas,
        config_hash: input.config_hashes.apiserver.clone(),
        image: input.images.apiserver.clone(),
        args: apiserver_args(input),
        port: APISERVER_PORT,
        // The kubelet must not kill the apiserver before its delay and drain are over.
        termination_grace_period_seconds: SHUTDOWN_DELAY_SECONDS + REQUEST_DRAIN_SECONDS,
        resources: resources_or_default(input.spec.api_server.resources.as_ref()),
        mounts: Mounts {
            pki: PKI_MOUNT_PATH,
            encryption_config: ENCRYPTION_CONFIG_MOUNT_PATH,
            config: CONFIG_MOUNT_PATH,
            audit_log: AUDIT_LOG_MOUNT_PATH,
        },
        pki_files: pki_files(names),
        encryption_config_files: encryption_config_files(names),
        config_map_name: names.apiserver(),
        konnectivity: tunnel_active(input.spec).then(|| KonnectivityContext {
            image: input.images.konnectivity_server.clone(),
            args: konnectivity::server_args(input.spec, CONFIG_MOUNT_PATH),
            agent_port: konnectivity::AGENT_PORT,
            health_port: konnectivity::HEALTH_PORT,
            socket_dir: konnectivity::SOCKET_DIR,
            pki_dir: konnectivity::SERVER_PKI_DIR,
            pki_files: konnectivity::mounted_files(names),
        }),
    };
    render(APISERVER_DEPLOYMENT, &context)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    use super::*;
    use crate::resources::test_support::*;

    fn args(input: &TenantInputs<'_>) -> Vec<String> {
        let deployment = apiserver_deployment(input).expect("builds");
        container(&deployment.spec.expect("spec").template, "kube-apiserver").args.clone().expect("args")
    }

    #[test]
    fn apiserver_dials_every_etcd_member() {
        let mut fixture = Fixture::default();
        fixture.spec.etcd.replicas = 3;
        let args = args(&fixture.inputs());
        assert_eq!(
            flag(&args, "etcd-servers"),
            Some(
                "https://team-a-etcd-0.team-a-etcd.tenants.svc:2379,\
                 https://team-a-etcd-1.team-a-etcd.tenants.svc:2379,\
                 https://team-a-etcd-2.team-a-etcd.tenants.svc:2379"
            )
        );
    }

    #[test]
    fn defaults_follow_kubeadm_and_cis() {
        let fixture = Fixture::default();
        let args = args(&fixture.inputs());
        assert_eq!(flag(&args, "authorization-mode"), Some("Node,RBAC"));
        assert_eq!(flag(&args, "enable-admission-plugins"), Some("NodeRestriction"));
        assert_eq!(flag(&args, "profiling"), Some("false"));
        assert_eq!(
            flag(&args, "service-account-issuer"),
            Some("https://kubernetes.default.svc.cluster.local")
        );
        assert_eq!(flag(&args, "service-cluster-ip-range"), Some("10.96.0.0/12"));
        assert_eq!(flag(&args, "requestheader-allowed-names"), Some("front-proxy-client"));
        assert_eq!(flag(&args, "advertise-address"), Some("$(POD_IP)"));
        assert_eq!(flag(&args, "anonymous-auth"), None, "probes rely on the default (enabled)");
        assert_eq!(flag(&args, "shutdown-delay-duration"), Some("10s"));
        let mut sorted = args.clone();
        sorted.sort();
        assert_eq!(args, sorted, "flags are rendered in a stable order");
    }

    #[test]
    fn extra_args_override_a_default_flag_and_add_new_ones() {
        let mut fixture = Fixture::default();
        fixture.spec.api_server.extra_args = BTreeMap::from([
            ("profiling".to_string(), "true".to_string()),
            ("--v".to_string(), "4".to_string()),
        ]);
        let args = args(&fixture.inputs());
        assert_eq!(args.iter().filter(|arg| arg.starts_with("--profiling=")).count(), 1);
        assert_eq!(flag(&args, "profiling"), Some("true"));
        assert_eq!(flag(&args, "v"), Some("4"));
    }

    #[test]
    fn a_terminating_apiserver_is_not_killed_before_its_shutdown_delay_is_over() {
        let fixture = Fixture::default();
        let deployment = apiserver_deployment(&fixture.inputs()).expect("builds");
        let grace = deployment.spec.expect("spec").template.spec.expect("pod spec");
        let grace = grace.termination_grace_period_seconds.expect("grace period");
        assert!(grace > SHUTDOWN_DELAY_SECONDS, "grace {grace} s vs delay {SHUTDOWN_DELAY_SECONDS} s");
    }

    #[test]
    fn every_file_a_flag_names_is_mounted() {
        let fixture = Fixture::default();
        let deployment = apiserver_deployment(&fixture.inputs()).expect("builds");
        let template = deployment.spec.expect("spec").template;
        let apiserver = container(&template, "kube-apiserver");
        let args = apiserver.args.clone().expect("args");
        let mounts: BTreeMap<&str, &str> = apiserver
            .volume_mounts
            .iter()
            .flatten()
            .map(|mount| (mount.mount_path.as_str(), mount.name.as_str()))
            .collect();
        let file_flags = [
            "etcd-cafile",
            "etcd-certfile",
            "etcd-keyfile",
            "client-ca-file",
            "tls-cert-file",
            "tls-private-key-file",
            "kubelet-client-certificate",
            "kubelet-client-key",
            "proxy-client-cert-file",
            "proxy-client-key-file",
            "requestheader-client-ca-file",
            "service-account-key-file",
            "service-account-signing-key-file",
            "encryption-provider-config",
        ];
        for name in file_flags {
            let path = flag(&args, name).expect(name);
            let (directory, file) = path.rsplit_once('/').expect("absolute path");
            let volume =
                mounts.get(directory).unwrap_or_else(|| panic!("{name}: {directory} is not mounted"));
            assert!(projected_paths(&template, volume).contains(&file.to_string()), "{name}: {file} missing");
        }
        // The audit policy comes from the ConfigMap, under the key the flag names.
        let policy = flag(&args, "audit-policy-file").expect("audit policy");
        assert_eq!(mounts.get(CONFIG_MOUNT_PATH), Some(&"config"));
        assert_eq!(policy, format!("{CONFIG_MOUNT_PATH}/{AUDIT_POLICY_KEY}"));
    }

    #[test]
    fn config_map_holds_a_metadata_level_audit_policy() {
        let fixture = Fixture::default();
        let config_map = apiserver_config_map(&fixture.owner).expect("builds");
        assert_owned_by_tenant(&config_map.metadata, &fixture.owner, Component::ApiServer);
        let policy = config_map.data.as_ref().and_then(|d| d.get(AUDIT_POLICY_KEY)).expect("policy");
        let policy: serde_json::Value = serde_yaml_ng::from_str(policy).expect("policy is YAML");
        assert_eq!(policy["kind"], "Policy");
        assert_eq!(policy["apiVersion"], "audit.k8s.io/v1");
        let rules = policy["rules"].as_array().expect("rules");
        assert_eq!(rules.last().map(|rule| &rule["level"]), Some(&serde_json::json!("Metadata")));
    }

    #[test]
    fn probes_are_https_on_the_serving_port() {
        let fixture = Fixture::default();
        let deployment = apiserver_deployment(&fixture.inputs()).expect("builds");
        let template = deployment.spec.expect("spec").template;
        let apiserver = container(&template, "kube-apiserver");
        let paths = [
            (&apiserver.startup_probe, "/livez"),
            (&apiserver.liveness_probe, "/livez"),
            (&apiserver.readiness_probe, "/readyz"),
        ];
        for (probe, path) in paths {
            let http_get = probe.as_ref().and_then(|p| p.http_get.as_ref()).expect("httpGet probe");
            assert_eq!(http_get.path.as_deref(), Some(path));
            assert_eq!(http_get.port, IntOrString::Int(APISERVER_PORT));
            assert_eq!(http_get.scheme.as_deref(), Some("HTTPS"));
        }
        assert_eq!(apiserver.image.as_deref(), Some(fixture.images.apiserver.as_str()));
        assert_eq!(apiserver.image_pull_policy.as_deref(), Some("IfNotPresent"));
    }

    #[test]
    fn cluster_ip_service_has_no_node_port_even_when_one_is_given() {
        let mut fixture = Fixture::default();
        fixture.spec.network.node_port = Some(31443);
        let spec = apiserver_service(&fixture.inputs()).expect("builds").spec.expect("spec");
        assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
        let ports = spec.ports.expect("ports");
        assert_eq!(ports.len(), 1);
        assert_eq!(ports[0].name.as_deref(), Some("https"));
        assert_eq!(ports[0].port, 6443);
        assert_eq!(ports[0].target_port, Some(IntOrString::Int(6443)));
        assert_eq!(ports[0].node_port, None);
        assert_eq!(spec.selector, Some(fixture.owner.names.selector_labels(Component::ApiServer)));
    }

    #[test]
    fn node_port_service_carries_the_node_port() {
        let mut fixture = Fixture::default();
        fixture.spec.network.service_type = ServiceType::NodePort;
        fixture.spec.network.node_port = Some(31443);
        let spec = apiserver_service(&fixture.inputs()).expect("builds").spec.expect("spec");
        assert_eq!(spec.type_.as_deref(), Some("NodePort"));
        assert_eq!(spec.ports.expect("ports")[0].node_port, Some(31443));
    }

    fn joinable(fixture: &mut Fixture) {
        fixture.spec.network.service_type = ServiceType::NodePort;
        fixture.spec.network.external_host = Some("10.200.0.1".into());
        fixture.spec.network.node_port = Some(31443);
    }

    #[test]
    fn a_joinable_tenant_runs_konnectivity_server_beside_each_apiserver() {
        let mut fixture = Fixture::default();
        joinable(&mut fixture);
        fixture.spec.network.tunnel.node_port = Some(31444);
        fixture.spec.api_server.replicas = 2;
        let deployment = apiserver_deployment(&fixture.inputs()).expect("builds");
        let template = deployment.spec.expect("spec").template;
        let apiserver = container(&template, "kube-apiserver");
        let args = apiserver.args.clone().expect("args");
        assert_eq!(
            flag(&args, "egress-selector-config-file"),
            Some("/etc/kubernetes/config/egress-selector-configuration.yaml")
        );
        let server = container(&template, konnectivity::SERVER_CONTAINER);
        assert_eq!(server.image.as_deref(), Some("registry.k8s.io/kas-network-proxy/proxy-server:v0.34.0"));
        let server_args = server.args.clone().expect("args");
        assert!(server_args.contains(&"--server-count=2".to_string()), "{server_args:?}");
        // Both containers see the socket's directory.
        for container in [apiserver, server] {
            let mounts = container.volume_mounts.as_ref().expect("mounts");
            assert!(
                mounts.iter().any(|mount| mount.mount_path == konnectivity::SOCKET_DIR),
                "{} mounts the socket",
                container.name
            );
        }
        // Its certificates, and only those, in a volume of its own.
        let paths = projected_paths(&template, "konnectivity-pki");
        assert_eq!(paths, ["ca.crt", "server.crt", "server.key", "client.crt", "client.key"]);
        let service = apiserver_service(&fixture.inputs()).expect("builds").spec.expect("spec");
        let ports = service.ports.expect("ports");
        assert_eq!(ports.len(), 2);
        assert_eq!(ports[1].name.as_deref(), Some("konnectivity"));
        assert_eq!(ports[1].port, 8132);
        assert_eq!(ports[1].node_port, Some(31444));
    }

    #[test]
    fn with_the_tunnel_off_or_no_nodes_the_apiserver_dials_directly() {
        let mut fixture = Fixture::default();
        let no_sidecar = |fixture: &Fixture| {
            let deployment = apiserver_deployment(&fixture.inputs()).expect("builds");
            let pod = deployment.spec.expect("spec").template.spec.expect("pod");
            let args = pod.containers[0].args.clone().expect("args");
            let ports =
                apiserver_service(&fixture.inputs()).expect("svc").spec.expect("spec").ports.expect("ports");
            pod.containers.len() == 1
                && flag(&args, "egress-selector-config-file").is_none()
                && ports.len() == 1
        };
        assert!(no_sidecar(&fixture), "a ClusterIP tenant has no nodes");
        joinable(&mut fixture);
        assert!(!no_sidecar(&fixture), "on by default");
        fixture.spec.network.tunnel.enabled = false;
        assert!(no_sidecar(&fixture), "off");
    }

    #[test]
    fn node_port_service_without_a_port_lets_kubernetes_choose() {
        let mut fixture = Fixture::default();
        fixture.spec.network.service_type = ServiceType::NodePort;
        let spec = apiserver_service(&fixture.inputs()).expect("builds").spec.expect("spec");
        assert_eq!(spec.ports.expect("ports")[0].node_port, None);
    }
}
