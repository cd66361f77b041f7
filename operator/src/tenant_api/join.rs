//! What `kubeadm join` reads inside a tenant, built the way `kubeadm init` leaves it
//! (pure: spec and CA in, objects out). With these in place a machine joins a Nestor
//! tenant with the stock `kubeadm join <endpoint> --token … --discovery-token-ca-cert-hash …`
//! that `nestor join` prints.
//!
//! kubeadm's own sources name each piece (paths in k8s.io/kubernetes):
//! - `kube-public/cluster-info` and the Role that lets anonymous discovery read it
//!   (cmd/kubeadm/app/phases/bootstraptoken/clusterinfo); the controller-manager's
//!   bootstrapsigner adds a `jws-kubeconfig-<token id>` signature per token. Server-side
//!   apply owns only the `kubeconfig` key, so the signatures stay.
//! - `kube-system/kubeadm-config` (a ClusterConfiguration) and `kube-system/kubelet-config`
//!   (a KubeletConfiguration), each with a Role readable by bootstrapping and joined nodes
//!   (cmd/kubeadm/app/util/config, cmd/kubeadm/app/componentconfigs);
//! - the bindings for TLS bootstrap: bootstrap tokens may create CSRs, their node client
//!   CSRs and the nodes' renewals are approved automatically
//!   (cmd/kubeadm/app/phases/bootstraptoken/node/tlsbootstrap.go); `kubeadm:get-nodes`;
//! - the apiserver's kubelet client may use the kubelet API (logs, exec, port-forward).
//!
//! Kubelet *serving* certificates are requested through CSRs too (`serverTLSBootstrap`),
//! and no binding here approves them: an approver must check their names against the
//! Node, which Kubernetes does not do by itself.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use kube::api::ObjectMeta;
use serde_json::json;

use crate::api::{ServiceType, TenantClusterSpec};

/// The group every bootstrap token Nestor creates authenticates as (besides
/// `system:bootstrappers`), as kubeadm's default node token does.
pub const BOOTSTRAP_GROUP: &str = "system:bootstrappers:kubeadm:default-node-token";
/// The group of every joined node.
pub const NODES_GROUP: &str = "system:nodes";
/// The common name of the apiserver's kubelet client certificate (see [`crate::pki`]).
pub const APISERVER_KUBELET_CLIENT: &str = "kube-apiserver-kubelet-client";

/// Everything [`join_objects`] needs besides the spec.
#[derive(Clone, Debug)]
pub struct JoinInputs<'a> {
    /// The tenant's name, kubeadm's `clusterName`.
    pub cluster_name: &'a str,
    /// The tenant CA certificate (PEM), what discovery pins by its hash.
    pub ca_pem: &'a str,
    /// The URL nodes reach the apiserver at; `None` when nodes cannot reach it (a
    /// ClusterIP Service, or no external host): `cluster-info` is left out then.
    pub node_endpoint: Option<&'a str>,
}

/// The objects inside the tenant, split by scope: the server-side apply of each kind
/// needs its own API.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct JoinObjects {
    /// `cluster-info`, `kubeadm-config`, `kubelet-config`.
    pub config_maps: Vec<ConfigMap>,
    /// Who may read them.
    pub roles: Vec<Role>,
    /// Bindings of those roles.
    pub role_bindings: Vec<RoleBinding>,
    /// `kubeadm:get-nodes`.
    pub cluster_roles: Vec<ClusterRole>,
    /// TLS bootstrap, node reads, and the apiserver's access to kubelets.
    pub cluster_role_bindings: Vec<ClusterRoleBinding>,
    /// The `kubernetes` Service's endpoint at the node endpoint.
    pub endpoint_slices: Vec<EndpointSlice>,
}

/// Whether nodes can join the tenant: its endpoint is meant for clients outside the meta
/// cluster (an external host behind a NodePort or LoadBalancer Service).
pub fn nodes_can_join(spec: &TenantClusterSpec) -> bool {
    spec.network.external_host.is_some() && spec.network.service_type != ServiceType::ClusterIP
}

/// The URL nodes join at: the tenant endpoint when [`nodes_can_join`], else none.
pub fn node_endpoint<'a>(spec: &TenantClusterSpec, endpoint: &'a str) -> Option<&'a str> {
    nodes_can_join(spec).then_some(endpoint)
}

/// The EndpointSlice of the `default/kubernetes` Service at the node endpoint (pure): pods
/// on the nodes reach the apiserver there, through kube-proxy, as clients outside the meta
/// cluster do. The apiservers of a joinable tenant do not write their own pod addresses
/// (`--endpoint-reconciler-type=none`, see `resources::apiserver`); `None` when the
/// endpoint's host is not an IP address (an EndpointSlice holds addresses, not names).
pub fn kubernetes_endpoint_slice(node_endpoint: &str) -> Option<EndpointSlice> {
    let uri: http::Uri = node_endpoint.parse().ok()?;
    let host = uri.host()?.trim_start_matches('[').trim_end_matches(']');
    let address: std::net::IpAddr = host.parse().ok()?;
    let port = i32::from(uri.port_u16().unwrap_or(443));
    let mut labels = BTreeMap::from([
        ("kubernetes.io/service-name".to_string(), "kubernetes".to_string()),
        ("endpointslice.kubernetes.io/managed-by".to_string(), "nestor.dev".to_string()),
    ]);
    labels.extend(metadata(None, "").labels.unwrap_or_default());
    Some(EndpointSlice {
        metadata: ObjectMeta {
            name: Some("kubernetes".into()),
            namespace: Some("default".into()),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        address_type: if address.is_ipv4() { "IPv4" } else { "IPv6" }.into(),
        endpoints: vec![Endpoint {
            addresses: vec![address.to_string()],
            conditions: Some(EndpointConditions { ready: Some(true), ..EndpointConditions::default() }),
            ..Endpoint::default()
        }],
        ports: Some(vec![EndpointPort {
            name: Some("https".into()),
            port: Some(port),
            protocol: Some("TCP".into()),
            ..EndpointPort::default()
        }]),
    })
}

/// Every object `kubeadm join` reads in the tenant (pure).
pub fn join_objects(spec: &TenantClusterSpec, inputs: &JoinInputs<'_>) -> JoinObjects {
    let mut objects = JoinObjects::default();
    if let Some(endpoint) = inputs.node_endpoint {
        objects.endpoint_slices.extend(kubernetes_endpoint_slice(endpoint));
        objects.config_maps.push(config_map(
            "kube-public",
            "cluster-info",
            "kubeconfig",
            cluster_info(inputs.ca_pem, endpoint),
        ));
        objects.roles.push(read_config_map_role(
            "kube-public",
            "kubeadm:bootstrap-signer-clusterinfo",
            "cluster-info",
        ));
        objects.role_bindings.push(role_binding(
            "kube-public",
            "kubeadm:bootstrap-signer-clusterinfo",
            vec![subject("User", "system:anonymous")],
        ));
    }
    objects.config_maps.push(config_map(
        "kube-system",
        "kubeadm-config",
        "ClusterConfiguration",
        cluster_configuration(spec, inputs),
    ));
    objects.config_maps.push(config_map(
        "kube-system",
        "kubelet-config",
        "kubelet",
        kubelet_configuration(spec),
    ));
    let joining = || vec![subject("Group", BOOTSTRAP_GROUP), subject("Group", NODES_GROUP)];
    for (role, config_map) in
        [("kubeadm:nodes-kubeadm-config", "kubeadm-config"), ("kubeadm:kubelet-config", "kubelet-config")]
    {
        objects.roles.push(read_config_map_role("kube-system", role, config_map));
        objects.role_bindings.push(role_binding("kube-system", role, joining()));
    }
    objects.cluster_roles.push(ClusterRole {
        metadata: metadata(None, "kubeadm:get-nodes"),
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["nodes".into()]),
            verbs: vec!["get".into()],
            ..PolicyRule::default()
        }]),
        ..ClusterRole::default()
    });
    let bootstrap = || vec![subject("Group", BOOTSTRAP_GROUP)];
    objects.cluster_role_bindings = vec![
        cluster_role_binding("kubeadm:get-nodes", "kubeadm:get-nodes", bootstrap()),
        cluster_role_binding("kubeadm:kubelet-bootstrap", "system:node-bootstrapper", bootstrap()),
        cluster_role_binding(
            "kubeadm:node-autoapprove-bootstrap",
            "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
            bootstrap(),
        ),
        cluster_role_binding(
            "kubeadm:node-autoapprove-certificate-rotation",
            "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
            vec![subject("Group", NODES_GROUP)],
        ),
        // kubeadm binds the apiserver's kubelet client so; Nestor's also carries
        // system:masters, and the binding keeps the permission explicit should it not.
        cluster_role_binding(
            "nestor:apiserver-kubelet-api-admin",
            "system:kubelet-api-admin",
            vec![subject("User", APISERVER_KUBELET_CLIENT)],
        ),
    ];
    objects
}

/// The tenth address of the Service range: the cluster DNS Service's, as kubeadm picks it.
pub fn cluster_dns_address(service_cidr: &str) -> Option<std::net::IpAddr> {
    let (network, _) = service_cidr.split_once('/')?;
    match network.parse().ok()? {
        std::net::IpAddr::V4(v4) => Some(std::net::Ipv4Addr::from(u32::from(v4).checked_add(10)?).into()),
        std::net::IpAddr::V6(v6) => Some(std::net::Ipv6Addr::from(u128::from(v6).checked_add(10)?).into()),
    }
}

/// The discovery kubeconfig: one unnamed cluster, no user, as kubeadm writes it.
fn cluster_info(ca_pem: &str, endpoint: &str) -> String {
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    yaml(&json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "", "cluster": {"certificate-authority-data": ca, "server": endpoint}}],
        "contexts": null,
        "current-context": "",
        "preferences": {},
        "users": null,
    }))
}

/// kubeadm's ClusterConfiguration as `kubeadm join` reads it: a concrete version (an
/// empty one makes kubeadm look it up on the internet), the image repository (the pause
/// image), the endpoint and the network.
fn cluster_configuration(spec: &TenantClusterSpec, inputs: &JoinInputs<'_>) -> String {
    let endpoint = inputs.node_endpoint.map(|url| url.trim_start_matches("https://").to_string());
    yaml(&json!({
        "apiVersion": "kubeadm.k8s.io/v1beta4",
        "kind": "ClusterConfiguration",
        "clusterName": inputs.cluster_name,
        "kubernetesVersion": format!("v{}", spec.version.trim_start_matches('v')),
        "imageRepository": spec.image_repository.as_deref().unwrap_or("registry.k8s.io"),
        "controlPlaneEndpoint": endpoint.unwrap_or_default(),
        "certificatesDir": "/etc/kubernetes/pki",
        "networking": {
            "dnsDomain": spec.network.cluster_domain,
            "serviceSubnet": spec.network.service_cidr,
            "podSubnet": spec.network.pod_cidr,
        },
    }))
}

/// The kubelet configuration every joining node starts from: kubeadm's defaults plus
/// serving certificates from the tenant CA (`serverTLSBootstrap`), so the apiserver can
/// verify every kubelet it calls.
fn kubelet_configuration(spec: &TenantClusterSpec) -> String {
    let cluster_dns: Vec<String> = cluster_dns_address(&spec.network.service_cidr)
        .into_iter()
        .map(|address| address.to_string())
        .collect();
    yaml(&json!({
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "authentication": {
            "anonymous": {"enabled": false},
            "webhook": {"enabled": true, "cacheTTL": "0s"},
            "x509": {"clientCAFile": "/etc/kubernetes/pki/ca.crt"},
        },
        "authorization": {"mode": "Webhook", "webhook": {"cacheAuthorizedTTL": "0s", "cacheUnauthorizedTTL": "0s"}},
        "cgroupDriver": "systemd",
        "clusterDNS": cluster_dns,
        "clusterDomain": spec.network.cluster_domain,
        "rotateCertificates": true,
        "serverTLSBootstrap": true,
        "staticPodPath": "/etc/kubernetes/manifests",
    }))
}

fn yaml(value: &serde_json::Value) -> String {
    serde_yaml_ng::to_string(value).unwrap_or_default()
}

fn metadata(namespace: Option<&str>, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: namespace.map(Into::into),
        labels: Some(BTreeMap::from([("app.kubernetes.io/managed-by".to_string(), "nestor".to_string())])),
        ..ObjectMeta::default()
    }
}

fn config_map(namespace: &str, name: &str, key: &str, value: String) -> ConfigMap {
    ConfigMap {
        metadata: metadata(Some(namespace), name),
        data: Some(BTreeMap::from([(key.to_string(), value)])),
        ..ConfigMap::default()
    }
}

fn read_config_map_role(namespace: &str, name: &str, config_map: &str) -> Role {
    Role {
        metadata: metadata(Some(namespace), name),
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["configmaps".into()]),
            resource_names: Some(vec![config_map.into()]),
            verbs: vec!["get".into()],
            ..PolicyRule::default()
        }]),
    }
}

fn subject(kind: &str, name: &str) -> Subject {
    Subject {
        kind: kind.into(),
        name: name.into(),
        api_group: Some("rbac.authorization.k8s.io".into()),
        namespace: None,
    }
}

fn role_binding(namespace: &str, role: &str, subjects: Vec<Subject>) -> RoleBinding {
    RoleBinding {
        metadata: metadata(Some(namespace), role),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: role.into(),
        },
        subjects: Some(subjects),
    }
}

fn cluster_role_binding(name: &str, role: &str, subjects: Vec<Subject>) -> ClusterRoleBinding {
    ClusterRoleBinding {
        metadata: metadata(None, name),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: role.into(),
        },
        subjects: Some(subjects),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(network: serde_json::Value) -> TenantClusterSpec {
        serde_json::from_value(
            json!({"version": "1.34.2", "imageRepository": "nestor.local", "network": network}),
        )
        .expect("spec")
    }

    const CA: &str = "-----BEGIN CERTIFICATE-----\nQ0E=\n-----END CERTIFICATE-----\n";

    fn inputs(endpoint: Option<&str>) -> JoinInputs<'_> {
        JoinInputs { cluster_name: "team-a", ca_pem: CA, node_endpoint: endpoint }
    }

    fn config_map_value(objects: &JoinObjects, name: &str, key: &str) -> serde_json::Value {
        let map =
            objects.config_maps.iter().find(|map| map.metadata.name.as_deref() == Some(name)).expect(name);
        let text = map.data.as_ref().and_then(|data| data.get(key)).expect(key);
        serde_yaml_ng::from_str(text).expect("yaml")
    }

    #[test]
    fn nodes_join_only_at_an_endpoint_meant_for_them() {
        let endpoint = "https://node.example:30443";
        assert_eq!(node_endpoint(&spec(json!({})), endpoint), None, "no external host");
        assert_eq!(
            node_endpoint(&spec(json!({"externalHost": "node.example"})), endpoint),
            None,
            "ClusterIP"
        );
        let node_port =
            spec(json!({"externalHost": "node.example", "serviceType": "NodePort", "nodePort": 30443}));
        assert_eq!(node_endpoint(&node_port, endpoint), Some(endpoint));
        let balanced = spec(json!({"externalHost": "10.0.0.5", "serviceType": "LoadBalancer"}));
        assert_eq!(node_endpoint(&balanced, endpoint), Some(endpoint));
    }

    #[test]
    fn cluster_info_is_a_discovery_kubeconfig_readable_anonymously() {
        let objects = join_objects(&spec(json!({})), &inputs(Some("https://node.example:30443")));
        let info = config_map_value(&objects, "cluster-info", "kubeconfig");
        assert_eq!(info["clusters"][0]["cluster"]["server"], "https://node.example:30443");
        assert_eq!(
            info["clusters"][0]["cluster"]["certificate-authority-data"],
            "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tClEwRT0KLS0tLS1FTkQgQ0VSVElGSUNBVEUtLS0tLQo="
        );
        assert!(info["users"].is_null(), "no credentials in a public ConfigMap");
        let binding = objects
            .role_bindings
            .iter()
            .find(|binding| binding.metadata.namespace.as_deref() == Some("kube-public"))
            .expect("kube-public binding");
        assert_eq!(binding.subjects.as_ref().expect("subjects")[0].name, "system:anonymous");
        let without = join_objects(&spec(json!({})), &inputs(None));
        assert!(without.config_maps.iter().all(|map| map.metadata.name.as_deref() != Some("cluster-info")));
    }

    #[test]
    fn kubeadm_config_names_a_concrete_version_and_the_network() {
        let spec = spec(
            json!({"serviceCIDR": "10.112.0.0/16", "podCIDR": "10.120.0.0/16", "clusterDomain": "team.local"}),
        );
        let objects = join_objects(&spec, &inputs(Some("https://node.example:30443")));
        let config = config_map_value(&objects, "kubeadm-config", "ClusterConfiguration");
        assert_eq!(config["kubernetesVersion"], "v1.34.2");
        assert_eq!(config["imageRepository"], "nestor.local");
        assert_eq!(config["controlPlaneEndpoint"], "node.example:30443");
        assert_eq!(config["networking"]["serviceSubnet"], "10.112.0.0/16");
        assert_eq!(config["networking"]["podSubnet"], "10.120.0.0/16");
        let kubelet = config_map_value(&objects, "kubelet-config", "kubelet");
        assert_eq!(kubelet["clusterDNS"][0], "10.112.0.10");
        assert_eq!(kubelet["clusterDomain"], "team.local");
        assert_eq!(kubelet["serverTLSBootstrap"], true);
        assert_eq!(kubelet["authentication"]["anonymous"]["enabled"], false);
    }

    #[test]
    fn tls_bootstrap_is_bound_as_kubeadm_binds_it_and_serving_csrs_are_not() {
        let objects = join_objects(&spec(json!({})), &inputs(None));
        let bound: BTreeMap<&str, &str> = objects
            .cluster_role_bindings
            .iter()
            .map(|binding| {
                (
                    binding.role_ref.name.as_str(),
                    binding.subjects.as_ref().expect("subjects")[0].name.as_str(),
                )
            })
            .collect();
        assert_eq!(bound["system:node-bootstrapper"], BOOTSTRAP_GROUP);
        assert_eq!(
            bound["system:certificates.k8s.io:certificatesigningrequests:nodeclient"],
            BOOTSTRAP_GROUP
        );
        assert_eq!(
            bound["system:certificates.k8s.io:certificatesigningrequests:selfnodeclient"],
            NODES_GROUP
        );
        assert_eq!(bound["system:kubelet-api-admin"], APISERVER_KUBELET_CLIENT);
        assert!(
            !bound.keys().any(|role| role.contains("selfnodeserver")),
            "serving CSRs need a check against the Node"
        );
    }

    #[test]
    fn the_kubernetes_service_points_at_the_node_endpoint() {
        let objects = join_objects(&spec(json!({})), &inputs(Some("https://10.200.0.1:30050")));
        let slice = &objects.endpoint_slices[0];
        assert_eq!(slice.metadata.name.as_deref(), Some("kubernetes"));
        assert_eq!(slice.endpoints[0].addresses, vec!["10.200.0.1".to_string()]);
        assert_eq!(slice.ports.as_ref().expect("ports")[0].port, Some(30050));
        assert_eq!(slice.address_type, "IPv4");
        assert!(kubernetes_endpoint_slice("https://node.example:30050").is_none(), "a name is no address");
        assert!(join_objects(&spec(json!({})), &inputs(None)).endpoint_slices.is_empty());
    }

    #[test]
    fn the_dns_address_is_the_tenth_of_the_service_range() {
        assert_eq!(
            cluster_dns_address("10.96.0.0/12").map(|ip| ip.to_string()).as_deref(),
            Some("10.96.0.10")
        );
        assert_eq!(
            cluster_dns_address("fd00:10::/108").map(|ip| ip.to_string()).as_deref(),
            Some("fd00:10::a")
        );
        assert_eq!(cluster_dns_address("nonsense"), None);
    }

    #[test]
    fn building_is_deterministic() {
        let spec = spec(json!({}));
        assert_eq!(
            join_objects(&spec, &inputs(Some("https://a:1"))),
            join_objects(&spec, &inputs(Some("https://a:1")))
        );
    }
}
