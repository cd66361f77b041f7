//! The node end of the konnectivity tunnel, applied inside the tenant (pure: spec in,
//! objects out): konnectivity-agent, a DaemonSet on every node that dials the
//! konnectivity-server beside each apiserver on the tenant endpoint's host and the
//! Service's `konnectivity` port, and keeps one connection to each server
//! (`--server-count` = apiserver replicas, learnt from the servers). Through those
//! connections the apiservers reach kubelets, pods and Services on the nodes; nothing
//! in the meta cluster dials a node. See `resources::konnectivity` for the server end.
//!
//! Like kube-proxy, the agent follows the version the whole control plane runs
//! (status.version), never the operator's. Its token is a bound ServiceAccount token of
//! audience `system:konnectivity-server`, which the server checks with a TokenReview as
//! `system:konnectivity-server`, bound here to `system:auth-delegator`.

use k8s_openapi::api::apps::v1::DaemonSet;
use serde_json::json;

use super::addons::{AddonObjects, addon_labels, typed};
use crate::api::TenantClusterSpec;
use crate::pki::KONNECTIVITY_SERVER;
use crate::resources::konnectivity::{
    AGENT_NAME, AGENT_NAMESPACE, AUDIENCE, HEALTH_PORT, konnectivity_image, tunnel_active,
};

/// Where the agents dial the servers: the tenant endpoint's host and the node port (or,
/// behind a LoadBalancer, the port) of the apiserver Service's `konnectivity` port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TunnelEndpoint {
    /// Host name or IP, the node endpoint's host.
    pub host: String,
    /// The port the nodes reach.
    pub port: i32,
}

const TOKEN_DIR: &str = "/var/run/secrets/tokens";
const TOKEN_FILE: &str = "konnectivity-agent-token";
const AGENT_ADMIN_PORT: i32 = 8133;

/// Adds the agent's objects to `objects` when the tenant runs the tunnel and its endpoint
/// is known, or names the agent for deletion when the tunnel is off.
pub fn add_tunnel_agent(
    objects: &mut AddonObjects,
    spec: &TenantClusterSpec,
    endpoint: Option<&TunnelEndpoint>,
    version: &str,
) {
    if !tunnel_active(spec) {
        objects.disabled.push(AGENT_NAME);
        return;
    }
    // The server's identity may review tokens, whatever the state of the agents.
    objects.cluster_role_bindings.push(typed(json!({
        "metadata": {"name": "system:konnectivity-server", "labels": labels()},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:auth-delegator"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": KONNECTIVITY_SERVER}],
    })));
    objects.service_accounts.push(typed(json!({
        "metadata": {"name": AGENT_NAME, "namespace": AGENT_NAMESPACE, "labels": labels()},
    })));
    if let Some(endpoint) = endpoint {
        objects.daemon_sets.push(agent_daemon_set(spec, endpoint, version));
    }
}

fn labels() -> serde_json::Value {
    serde_json::to_value(addon_labels(AGENT_NAME)).unwrap_or_default()
}

/// The image of the agent for Kubernetes `version`.
pub fn agent_image(spec: &TenantClusterSpec, version: &str) -> String {
    let repository = spec.image_repository.as_deref().unwrap_or(crate::resources::DEFAULT_IMAGE_REPOSITORY);
    konnectivity_image(repository, "proxy-agent", version)
}

fn agent_daemon_set(spec: &TenantClusterSpec, endpoint: &TunnelEndpoint, version: &str) -> DaemonSet {
    typed(json!({
        "metadata": {"name": AGENT_NAME, "namespace": AGENT_NAMESPACE, "labels": labels()},
        "spec": {
            "selector": {"matchLabels": {"k8s-app": AGENT_NAME}},
            "updateStrategy": {"type": "RollingUpdate"},
            "template": {
                "metadata": {"labels": labels()},
                "spec": {
                    "priorityClassName": "system-node-critical",
                    "serviceAccountName": AGENT_NAME,
                    "nodeSelector": {"kubernetes.io/os": "linux"},
                    "tolerations": [{"operator": "Exists"}],
                    "securityContext": {"runAsNonRoot": true, "runAsUser": 65534, "runAsGroup": 65534,
                                        "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [{
                        "name": AGENT_NAME,
                        "image": agent_image(spec, version),
                        "command": ["/usr/local/bin/proxy-agent"],
                        "args": [
                            "--logtostderr=true",
                            "--ca-cert=/var/run/secrets/kubernetes.io/serviceaccount/ca.crt",
                            format!("--proxy-server-host={}", endpoint.host),
                            format!("--proxy-server-port={}", endpoint.port),
                            format!("--admin-server-port={AGENT_ADMIN_PORT}"),
                            format!("--health-server-port={HEALTH_PORT}"),
                            format!("--service-account-token-path={TOKEN_DIR}/{TOKEN_FILE}"),
                            // The servers pick the agent on a kubelet's own node (destHost).
                            "--agent-identifiers=ipv4=$(HOST_IP)",
                            // Keeps looking for servers, so a new replica count is followed.
                            "--sync-forever=true",
                            "--keepalive-time=30s",
                        ],
                        "env": [{"name": "HOST_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}}],
                        "livenessProbe": {"httpGet": {"path": "/healthz", "port": HEALTH_PORT},
                                          "periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 6},
                        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
                        "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                                            "capabilities": {"drop": ["ALL"]}},
                        "volumeMounts": [{"name": TOKEN_FILE, "mountPath": TOKEN_DIR, "readOnly": true}],
                    }],
                    "volumes": [{"name": TOKEN_FILE, "projected": {"sources": [{"serviceAccountToken": {
                        "path": TOKEN_FILE, "audience": AUDIENCE, "expirationSeconds": 3600,
                    }}]}}],
                },
            },
        },
    }))
}

/// Whether the agents run on every node (pure): `None` when they do, or when there is no
/// node yet; else what is missing.
pub fn agents_not_ready(nodes: usize, agents: Option<&DaemonSet>) -> Option<String> {
    if nodes == 0 {
        return None;
    }
    match agents.and_then(|daemon_set| daemon_set.status.as_ref()) {
        None => Some(format!("{AGENT_NAME}: DaemonSet not found")),
        Some(status) if status.number_available.unwrap_or(0) < status.desired_number_scheduled => {
            Some(format!(
                "{AGENT_NAME}: {} of {} nodes available",
                status.number_available.unwrap_or(0),
                status.desired_number_scheduled
            ))
        }
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(extra: serde_json::Value) -> TenantClusterSpec {
        let mut value = json!({"version": "1.34.2", "imageRepository": "nestor.local",
            "network": {"serviceType": "NodePort", "externalHost": "10.200.0.1", "nodePort": 31443}});
        if let (Some(base), Some(extra)) = (value.as_object_mut(), extra.as_object()) {
            base.extend(extra.clone());
        }
        serde_json::from_value(value).expect("spec")
    }

    fn endpoint() -> TunnelEndpoint {
        TunnelEndpoint { host: "10.200.0.1".into(), port: 31444 }
    }

    #[test]
    fn the_agent_dials_the_tenant_endpoint_with_a_token_for_the_server() {
        let mut objects = AddonObjects::default();
        add_tunnel_agent(&mut objects, &spec(json!({})), Some(&endpoint()), "1.34.2");
        assert!(objects.disabled.is_empty());
        let daemon_set = &objects.daemon_sets[0];
        let pod = daemon_set.spec.as_ref().expect("spec").template.spec.as_ref().expect("pod");
        let container = &pod.containers[0];
        assert_eq!(container.image.as_deref(), Some("nestor.local/kas-network-proxy/proxy-agent:v0.34.0"));
        let args = container.args.clone().expect("args");
        for expected in ["--proxy-server-host=10.200.0.1", "--proxy-server-port=31444"] {
            assert!(args.iter().any(|arg| arg == expected), "{expected} in {args:?}");
        }
        let token = pod.volumes.as_ref().expect("volumes")[0].projected.as_ref().expect("projected");
        let token =
            token.sources.as_ref().expect("sources")[0].service_account_token.as_ref().expect("token");
        assert_eq!(token.audience.as_deref(), Some("system:konnectivity-server"));
        let binding = &objects.cluster_role_bindings[0];
        assert_eq!(binding.role_ref.name, "system:auth-delegator");
        assert_eq!(binding.subjects.as_ref().expect("subjects")[0].name, "system:konnectivity-server");
    }

    #[test]
    fn the_agent_follows_the_version_it_is_given() {
        let mut objects = AddonObjects::default();
        add_tunnel_agent(&mut objects, &spec(json!({"version": "1.35.4"})), Some(&endpoint()), "1.33.4");
        let pod = objects.daemon_sets[0].spec.as_ref().expect("spec").template.spec.clone().expect("pod");
        assert_eq!(
            pod.containers[0].image.as_deref(),
            Some("nestor.local/kas-network-proxy/proxy-agent:v0.33.0")
        );
    }

    #[test]
    fn with_the_tunnel_off_the_agent_is_named_for_deletion() {
        let mut objects = AddonObjects::default();
        add_tunnel_agent(
            &mut objects,
            &spec(
                json!({"network": {"serviceType": "NodePort", "externalHost": "10.200.0.1", "tunnel": {"enabled": false}}}),
            ),
            Some(&endpoint()),
            "1.34.2",
        );
        assert!(objects.daemon_sets.is_empty() && objects.service_accounts.is_empty());
        assert_eq!(objects.disabled, vec![AGENT_NAME]);
        let mut unknown_port = AddonObjects::default();
        add_tunnel_agent(&mut unknown_port, &spec(json!({})), None, "1.34.2");
        assert!(unknown_port.daemon_sets.is_empty(), "no DaemonSet until the port is known");
        assert_eq!(unknown_port.cluster_role_bindings.len(), 1);
    }
}
