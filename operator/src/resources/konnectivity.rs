//! konnectivity-server, the apiserver's sidecar of the tunnel to the nodes
//! (sigs.k8s.io/apiserver-network-proxy): its container's flags, its files, and the
//! egress selector that makes the apiserver send `cluster` traffic through it.
//!
//! The layout is the one Kamaji, k0smotron and the Kubernetes docs use: the server runs
//! in the apiserver's pod and serves the apiserver on a Unix socket in an in-memory
//! emptyDir they share (`--mode=grpc`, no TCP frontend); it serves the agents on
//! [`AGENT_PORT`], a second port of the apiserver Service (the tenant endpoint). Agents
//! present a bound ServiceAccount token of audience [`AUDIENCE`], which the server checks
//! with a TokenReview through its own apiserver on localhost, as
//! `system:konnectivity-server` (bound to `system:auth-delegator` inside the tenant, see
//! `tenant_api::tunnel`). Both of its certificates are leaves of the tenant PKI, renewed
//! like every other; a renewal rolls the apiserver pods, whose config hash covers them.
//!
//! Whether a tenant runs it is [`tunnel_active`]: only tenants nodes can join have nodes
//! an agent could run on.

use crate::api::{NodeRouting, TenantClusterSpec};
use crate::names::TenantNames;

use super::pod::ProjectedFile;
use super::secrets::{CA_CERT_KEY, TLS_CERT_KEY, TLS_PRIVATE_KEY_KEY};

/// The port agents connect to, in the pod and on the apiserver Service.
pub const AGENT_PORT: i32 = 8132;
/// The server's admin port (pprof is off; bound to localhost).
pub const ADMIN_PORT: i32 = 8133;
/// The server's health port: `/healthz`, `/readyz` and `/metrics`, where the operator
/// reads how many agents each server has (`health::tunnel`).
pub const HEALTH_PORT: i32 = 8134;
/// Name of the agents' port on the apiserver Service.
pub const AGENT_PORT_NAME: &str = "konnectivity";
/// The audience of the agents' ServiceAccount tokens.
pub const AUDIENCE: &str = "system:konnectivity-server";
/// Namespace of the agents' ServiceAccount inside the tenant.
pub const AGENT_NAMESPACE: &str = "kube-system";
/// The agents' ServiceAccount (and DaemonSet) inside the tenant.
pub const AGENT_NAME: &str = "konnectivity-agent";
/// The sidecar's container name.
pub const SERVER_CONTAINER: &str = "konnectivity-server";
/// The directory of the Unix socket, shared by the apiserver and the server.
pub const SOCKET_DIR: &str = "/run/konnectivity";
/// The socket the apiserver's egress selector dials.
pub const SOCKET_PATH: &str = "/run/konnectivity/konnectivity-server.socket";
/// Key of the egress selector configuration in the apiserver ConfigMap.
pub const EGRESS_SELECTOR_KEY: &str = "egress-selector-configuration.yaml";
/// Key of the server's kubeconfig (file paths, no secret) in the apiserver ConfigMap.
pub const SERVER_KUBECONFIG_KEY: &str = "konnectivity-server.kubeconfig";
/// Where the server's certificates are mounted.
pub const SERVER_PKI_DIR: &str = "/etc/kubernetes/konnectivity";
/// The release the images of Kubernetes 1.34 and 1.35 use: konnectivity's minor follows
/// Kubernetes' (v0.34.0 for 1.34), but the Go module proxy refused v0.35.0, so 1.35
/// runs v0.34.0 too. Its agent protocol and the apiserver's gRPC client
/// (konnectivity-client, which both Kubernetes releases vendor at v0.31.2) are the same.
pub const KONNECTIVITY_VERSION: &str = "v0.34.0";

const CA_CERT: &str = "ca.crt";
const SERVING_CERT: &str = "server.crt";
const SERVING_KEY: &str = "server.key";
const CLIENT_CERT: &str = "client.crt";
const CLIENT_KEY: &str = "client.key";

/// Whether the tenant runs the tunnel: `spec.network.tunnel.enabled` and nodes can join.
pub fn tunnel_active(spec: &TenantClusterSpec) -> bool {
    spec.network.tunnel.enabled && crate::tenant_api::join::nodes_can_join(spec)
}

/// How the apiservers reach the nodes, for `status.nodeRouting`; `None` while nodes
/// cannot join.
pub fn node_routing(spec: &TenantClusterSpec) -> Option<NodeRouting> {
    crate::tenant_api::join::nodes_can_join(spec).then_some(if spec.network.tunnel.enabled {
        NodeRouting::Tunnel
    } else {
        NodeRouting::Direct
    })
}

/// The konnectivity release paired with Kubernetes `1.<minor>` (see [`KONNECTIVITY_VERSION`]).
pub fn konnectivity_tag(minor: u32) -> String {
    if minor >= 34 { KONNECTIVITY_VERSION.to_string() } else { format!("v0.{minor}.0") }
}

/// The image of `component` (`proxy-server` or `proxy-agent`) for Kubernetes `version`,
/// at upstream's path under `repository` (`registry.k8s.io/kas-network-proxy/proxy-agent`).
pub fn konnectivity_image(repository: &str, component: &str, version: &str) -> String {
    let minor = version.trim_start_matches('v').split('.').nth(1).and_then(|minor| minor.parse().ok());
    let tag = minor.map_or_else(|| KONNECTIVITY_VERSION.to_string(), konnectivity_tag);
    format!("{}/kas-network-proxy/{component}:{tag}", repository.trim_end_matches('/'))
}

/// The server's files: the tenant CA (its kubeconfig verifies the apiserver), its serving
/// certificate towards the agents and its client certificate towards the apiserver.
pub(super) fn mounted_files(names: &TenantNames) -> Vec<ProjectedFile> {
    let serving = names.konnectivity_server_serving_secret();
    let client = names.konnectivity_server_client_secret();
    vec![
        ProjectedFile::new(client.clone(), CA_CERT_KEY, CA_CERT),
        ProjectedFile::new(serving.clone(), TLS_CERT_KEY, SERVING_CERT),
        ProjectedFile::new(serving, TLS_PRIVATE_KEY_KEY, SERVING_KEY),
        ProjectedFile::new(client.clone(), TLS_CERT_KEY, CLIENT_CERT),
        ProjectedFile::new(client, TLS_PRIVATE_KEY_KEY, CLIENT_KEY),
    ]
}

/// The server's flags. `--server-count` is the apiserver replicas: each agent keeps
/// connecting through the Service until it holds a connection to that many distinct
/// servers, so every apiserver can reach every node.
pub(super) fn server_args(spec: &TenantClusterSpec, config_dir: &str) -> Vec<String> {
    let pki = |file: &str| format!("{SERVER_PKI_DIR}/{file}");
    vec![
        "--mode=grpc".to_string(),
        format!("--uds-name={SOCKET_PATH}"),
        "--delete-existing-uds-file=true".to_string(),
        // No TCP frontend: the apiserver dials the socket.
        "--server-port=0".to_string(),
        format!("--agent-port={AGENT_PORT}"),
        format!("--admin-port={ADMIN_PORT}"),
        "--admin-bind-address=127.0.0.1".to_string(),
        format!("--health-port={HEALTH_PORT}"),
        format!("--cluster-cert={}", pki(SERVING_CERT)),
        format!("--cluster-key={}", pki(SERVING_KEY)),
        format!("--server-count={}", spec.api_server.replicas),
        format!("--agent-namespace={AGENT_NAMESPACE}"),
        format!("--agent-service-account={AGENT_NAME}"),
        format!("--authentication-audience={AUDIENCE}"),
        format!("--kubeconfig={config_dir}/{SERVER_KUBECONFIG_KEY}"),
        // A kubelet is dialed through the agent on its own node (agents announce their
        // node's address); anything else (a Service or pod address) through any agent.
        "--proxy-strategies=destHost,default".to_string(),
        "--keepalive-time=30s".to_string(),
    ]
}

/// The apiserver's egress selector: `cluster` traffic (kubelets, pods and Services: logs,
/// exec, port-forward, proxy subresources, webhooks and APIServices backed by Services)
/// goes through the server's socket; `controlplane` and `etcd` stay direct.
pub fn egress_selector_configuration() -> String {
    format!(
        "apiVersion: apiserver.k8s.io/v1beta1\n\
         kind: EgressSelectorConfiguration\n\
         egressSelections:\n\
         - name: cluster\n  \
           connection:\n    \
             proxyProtocol: GRPC\n    \
             transport:\n      \
               uds:\n        \
                 udsName: {SOCKET_PATH}\n"
    )
}

/// The server's kubeconfig: its own apiserver on localhost (the serving certificate
/// carries 127.0.0.1), with its client certificate from the mounted files.
pub fn server_kubeconfig(apiserver_port: i32) -> String {
    let pki = |file: &str| format!("{SERVER_PKI_DIR}/{file}");
    format!(
        "apiVersion: v1\n\
         kind: Config\n\
         clusters:\n\
         - name: local\n  \
           cluster:\n    \
             server: https://127.0.0.1:{apiserver_port}\n    \
             certificate-authority: {ca}\n\
         users:\n\
         - name: konnectivity-server\n  \
           user:\n    \
             client-certificate: {cert}\n    \
             client-key: {key}\n\
         contexts:\n\
         - name: local\n  \
           context:\n    \
             cluster: local\n    \
             user: konnectivity-server\n\
         current-context: local\n",
        ca = pki(CA_CERT),
        cert = pki(CLIENT_CERT),
        key = pki(CLIENT_KEY),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::test_support::spec;

    #[test]
    fn the_tunnel_runs_only_where_nodes_can_join_and_it_is_on() {
        let mut spec = spec();
        assert!(!tunnel_active(&spec), "a ClusterIP tenant has no nodes");
        assert_eq!(node_routing(&spec), None);
        spec.network.service_type = crate::api::ServiceType::NodePort;
        spec.network.external_host = Some("10.200.0.1".into());
        assert!(tunnel_active(&spec), "on by default");
        assert_eq!(node_routing(&spec), Some(NodeRouting::Tunnel));
        spec.network.tunnel.enabled = false;
        assert!(!tunnel_active(&spec));
        assert_eq!(node_routing(&spec), Some(NodeRouting::Direct));
    }

    #[test]
    fn images_follow_the_kubernetes_minor() {
        assert_eq!(
            konnectivity_image("nestor.local", "proxy-agent", "1.34.2"),
            "nestor.local/kas-network-proxy/proxy-agent:v0.34.0"
        );
        assert_eq!(
            konnectivity_image("registry.k8s.io/", "proxy-server", "v1.33.4"),
            "registry.k8s.io/kas-network-proxy/proxy-server:v0.33.0"
        );
        assert_eq!(konnectivity_tag(35), KONNECTIVITY_VERSION, "v0.35.0 is not served: v0.34.0");
    }

    #[test]
    fn the_egress_selector_sends_cluster_traffic_to_the_socket() {
        let config: serde_json::Value =
            serde_yaml_ng::from_str(&egress_selector_configuration()).expect("yaml");
        assert_eq!(config["kind"], "EgressSelectorConfiguration");
        let selection = &config["egressSelections"][0];
        assert_eq!(selection["name"], "cluster");
        assert_eq!(selection["connection"]["proxyProtocol"], "GRPC");
        assert_eq!(selection["connection"]["transport"]["uds"]["udsName"], SOCKET_PATH);
        let kubeconfig: serde_json::Value = serde_yaml_ng::from_str(&server_kubeconfig(6443)).expect("yaml");
        assert_eq!(kubeconfig["clusters"][0]["cluster"]["server"], "https://127.0.0.1:6443");
        assert_eq!(kubeconfig["users"][0]["user"]["client-key"], "/etc/kubernetes/konnectivity/client.key");
    }

    #[test]
    fn the_server_counts_the_apiserver_replicas_and_checks_the_agents_tokens() {
        let mut spec = spec();
        spec.api_server.replicas = 2;
        let args = server_args(&spec, "/etc/kubernetes/config");
        for expected in [
            "--server-count=2",
            "--authentication-audience=system:konnectivity-server",
            "--agent-service-account=konnectivity-agent",
            "--agent-namespace=kube-system",
            "--server-port=0",
            "--agent-port=8132",
            "--kubeconfig=/etc/kubernetes/config/konnectivity-server.kubeconfig",
        ] {
            assert!(args.iter().any(|arg| arg == expected), "{expected} in {args:?}");
        }
    }
}
