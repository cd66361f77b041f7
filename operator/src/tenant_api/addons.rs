//! The addons a tenant needs to run Services and cluster DNS, applied inside it (pure:
//! spec in, objects out): kube-proxy (a DaemonSet in iptables mode) and CoreDNS (a
//! Deployment, and the `kube-dns` Service at the tenth address of the Service range).
//! Both follow the tenant's version, never the operator's: kube-proxy's image is the
//! tenant's Kubernetes version, CoreDNS's the one kubeadm pairs with that minor.
//!
//! Each can be turned off (`spec.addons.kubeProxy.enabled`, `spec.addons.coreDNS.enabled`)
//! for tenants that bring Cilium or a DNS of their own; what Nestor applied is then deleted
//! (see [`AddonObjects::disabled`]).
//!
//! Ownership: the operator owns every field it sets, the Corefile included, and puts
//! them back when edited (the same as kubeadm's `upgrade apply` does). A tenant that
//! wants its own Corefile turns CoreDNS off and runs its own.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use serde_json::json;

use super::join::cluster_dns_address;
use super::tunnel::{TunnelEndpoint, add_tunnel_agent};
use crate::api::TenantClusterSpec;

/// The CoreDNS version kubeadm pairs with Kubernetes 1.34 and 1.35
/// (cmd/kubeadm/app/constants: CoreDNSVersion), the one `hack/` builds.
pub const COREDNS_VERSION: &str = "v1.12.1";
/// Label on every addon object, for the kube-proxy and CoreDNS selectors.
const APP_LABEL: &str = "k8s-app";
/// Marks what Nestor applied, so turning an addon off deletes only that.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "nestor");

/// Everything [`addon_objects`] needs besides the spec.
#[derive(Clone, Debug)]
pub struct AddonInputs<'a> {
    /// The URL kube-proxy on the nodes reaches the apiserver at (the node endpoint when
    /// there is one).
    pub apiserver_url: &'a str,
    /// The version kube-proxy and konnectivity-agent run: the one the whole control plane
    /// runs (status.version), never newer than an apiserver (version-skew policy);
    /// spec.version for a new tenant.
    pub kube_proxy_version: &'a str,
    /// Where konnectivity-agent dials the servers; `None` while the apiserver Service's
    /// `konnectivity` port has no node port yet (see [`super::tunnel`]).
    pub tunnel: Option<&'a TunnelEndpoint>,
}

/// The addons' objects by kind (server-side apply needs the kind's API).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AddonObjects {
    /// kube-proxy's and CoreDNS's service accounts.
    pub service_accounts: Vec<ServiceAccount>,
    /// `system:coredns`.
    pub cluster_roles: Vec<ClusterRole>,
    /// kube-proxy as `system:node-proxier`, CoreDNS as `system:coredns`.
    pub cluster_role_bindings: Vec<ClusterRoleBinding>,
    /// kube-proxy's configuration and kubeconfig, the Corefile.
    pub config_maps: Vec<ConfigMap>,
    /// kube-proxy.
    pub daemon_sets: Vec<DaemonSet>,
    /// CoreDNS.
    pub deployments: Vec<Deployment>,
    /// `kube-dns`.
    pub services: Vec<Service>,
    /// The addons turned off, whose workloads are deleted: `kube-proxy`, `coredns`,
    /// `konnectivity-agent`.
    pub disabled: Vec<&'static str>,
}

/// The image of kube-proxy for the tenant's version.
pub fn kube_proxy_image(spec: &TenantClusterSpec, version: &str) -> String {
    format!("{}/kube-proxy:v{}", repository(spec), version.trim_start_matches('v'))
}

/// The CoreDNS image: kubeadm's `coredns/coredns` path on registry.k8s.io, `coredns`
/// elsewhere (as kubeadm's GetDNSImage does for a custom repository).
pub fn coredns_image(spec: &TenantClusterSpec) -> String {
    let repository = repository(spec);
    if repository == "registry.k8s.io" {
        format!("{repository}/coredns/coredns:{COREDNS_VERSION}")
    } else {
        format!("{repository}/coredns:{COREDNS_VERSION}")
    }
}

fn repository(spec: &TenantClusterSpec) -> &str {
    spec.image_repository.as_deref().unwrap_or("registry.k8s.io").trim_end_matches('/')
}

/// Every addon object of the tenant (pure).
pub fn addon_objects(spec: &TenantClusterSpec, inputs: &AddonInputs<'_>) -> AddonObjects {
    let mut objects = AddonObjects::default();
    if spec.addons.kube_proxy.enabled {
        add_kube_proxy(&mut objects, spec, inputs);
    } else {
        objects.disabled.push("kube-proxy");
    }
    if spec.addons.core_dns.enabled {
        add_coredns(&mut objects, spec);
    } else {
        objects.disabled.push("coredns");
    }
    add_tunnel_agent(&mut objects, spec, inputs.tunnel, inputs.kube_proxy_version);
    objects
}

fn labels(app: &str) -> serde_json::Value {
    json!({APP_LABEL: app, MANAGED_BY.0: MANAGED_BY.1})
}

pub(super) fn typed<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
    // The literals below are well-formed objects of T; a mistake is a bug caught by the tests.
    serde_json::from_value(value).expect("addon object literal")
}

fn add_kube_proxy(objects: &mut AddonObjects, spec: &TenantClusterSpec, inputs: &AddonInputs<'_>) {
    let config = serde_yaml_ng::to_string(&json!({
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "clusterCIDR": spec.network.pod_cidr,
        "bindAddress": "0.0.0.0",
        "clientConnection": {"kubeconfig": "/var/lib/kube-proxy/kubeconfig.conf"},
        "conntrack": {"maxPerCore": 0},
    }))
    .unwrap_or_default();
    let kubeconfig = serde_yaml_ng::to_string(&json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "default", "cluster": {
            "certificate-authority": "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt",
            "server": inputs.apiserver_url,
        }}],
        "contexts": [{"name": "default", "context": {"cluster": "default", "namespace": "default", "user": "default"}}],
        "current-context": "default",
        "users": [{"name": "default", "user": {"tokenFile": "/var/run/secrets/kubernetes.io/serviceaccount/token"}}],
    }))
    .unwrap_or_default();
    objects.service_accounts.push(typed(json!({
        "metadata": {"name": "kube-proxy", "namespace": "kube-system", "labels": labels("kube-proxy")},
    })));
    objects.cluster_role_bindings.push(typed(json!({
        "metadata": {"name": "kubeadm:node-proxier", "labels": labels("kube-proxy")},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:node-proxier"},
        "subjects": [{"kind": "ServiceAccount", "name": "kube-proxy", "namespace": "kube-system"}],
    })));
    objects.config_maps.push(typed(json!({
        "metadata": {"name": "kube-proxy", "namespace": "kube-system", "labels": labels("kube-proxy")},
        "data": {"config.conf": config, "kubeconfig.conf": kubeconfig},
    })));
    objects.daemon_sets.push(typed(json!({
        "metadata": {"name": "kube-proxy", "namespace": "kube-system", "labels": labels("kube-proxy")},
        "spec": {
            "selector": {"matchLabels": {APP_LABEL: "kube-proxy"}},
            "updateStrategy": {"type": "RollingUpdate"},
            "template": {
                "metadata": {"labels": labels("kube-proxy")},
                "spec": {
                    "priorityClassName": "system-node-critical",
                    "hostNetwork": true,
                    "serviceAccountName": "kube-proxy",
                    "nodeSelector": {"kubernetes.io/os": "linux"},
                    "tolerations": [{"operator": "Exists"}],
                    "containers": [{
                        "name": "kube-proxy",
                        "image": kube_proxy_image(spec, inputs.kube_proxy_version),
                        "command": ["/usr/local/bin/kube-proxy", "--config=/var/lib/kube-proxy/config.conf", "--hostname-override=$(NODE_NAME)"],
                        "env": [{"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
                        "securityContext": {"privileged": true},
                        "volumeMounts": [
                            {"name": "kube-proxy", "mountPath": "/var/lib/kube-proxy"},
                            {"name": "xtables-lock", "mountPath": "/run/xtables.lock"},
                            {"name": "lib-modules", "mountPath": "/lib/modules", "readOnly": true},
                        ],
                    }],
                    "volumes": [
                        {"name": "kube-proxy", "configMap": {"name": "kube-proxy"}},
                        {"name": "xtables-lock", "hostPath": {"path": "/run/xtables.lock", "type": "FileOrCreate"}},
                        {"name": "lib-modules", "hostPath": {"path": "/lib/modules"}},
                    ],
                },
            },
        },
    })));
}

fn add_coredns(objects: &mut AddonObjects, spec: &TenantClusterSpec) {
    let domain = &spec.network.cluster_domain;
    let corefile = format!(
        ".:53 {{\n    errors\n    health {{\n       lameduck 5s\n    }}\n    ready\n    kubernetes {domain} in-addr.arpa ip6.arpa {{\n       pods insecure\n       fallthrough in-addr.arpa ip6.arpa\n       ttl 30\n    }}\n    prometheus :9153\n    forward . /etc/resolv.conf {{\n       max_concurrent 1000\n    }}\n    cache 30 {{\n       disable success {domain}\n       disable denial {domain}\n    }}\n    loop\n    reload\n    loadbalance\n}}\n"
    );
    let dns_address = cluster_dns_address(&spec.network.service_cidr).map(|address| address.to_string());
    objects.service_accounts.push(typed(json!({
        "metadata": {"name": "coredns", "namespace": "kube-system", "labels": labels("kube-dns")},
    })));
    objects.cluster_roles.push(typed(json!({
        "metadata": {"name": "system:coredns", "labels": labels("kube-dns")},
        "rules": [
            {"apiGroups": [""], "resources": ["endpoints", "services", "pods", "namespaces"], "verbs": ["list", "watch"]},
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
        ],
    })));
    objects.cluster_role_bindings.push(typed(json!({
        "metadata": {"name": "system:coredns", "labels": labels("kube-dns")},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:coredns"},
        "subjects": [{"kind": "ServiceAccount", "name": "coredns", "namespace": "kube-system"}],
    })));
    objects.config_maps.push(typed(json!({
        "metadata": {"name": "coredns", "namespace": "kube-system", "labels": labels("kube-dns")},
        "data": {"Corefile": corefile},
    })));
    let probe = |path: &str, port: i32| json!({"httpGet": {"path": path, "port": port, "scheme": "HTTP"}, "periodSeconds": 10, "timeoutSeconds": 5});
    objects.deployments.push(typed(json!({
        "metadata": {"name": "coredns", "namespace": "kube-system", "labels": labels("kube-dns")},
        "spec": {
            "replicas": spec.addons.core_dns.replicas,
            "selector": {"matchLabels": {APP_LABEL: "kube-dns"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
            "template": {
                "metadata": {"labels": labels("kube-dns")},
                "spec": {
                    "priorityClassName": "system-cluster-critical",
                    "serviceAccountName": "coredns",
                    "nodeSelector": {"kubernetes.io/os": "linux"},
                    "tolerations": [
                        {"key": "CriticalAddonsOnly", "operator": "Exists"},
                        {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"},
                    ],
                    "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{
                        "weight": 100,
                        "podAffinityTerm": {"labelSelector": {"matchLabels": {APP_LABEL: "kube-dns"}}, "topologyKey": "kubernetes.io/hostname"},
                    }]}},
                    "containers": [{
                        "name": "coredns",
                        "image": coredns_image(spec),
                        "args": ["-conf", "/etc/coredns/Corefile"],
                        "resources": {"limits": {"memory": "170Mi"}, "requests": {"cpu": "100m", "memory": "70Mi"}},
                        "ports": [
                            {"name": "dns", "containerPort": 53, "protocol": "UDP"},
                            {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"},
                            {"name": "metrics", "containerPort": 9153, "protocol": "TCP"},
                        ],
                        "livenessProbe": probe("/health", 8080),
                        "readinessProbe": probe("/ready", 8181),
                        "securityContext": {
                            "allowPrivilegeEscalation": false,
                            "capabilities": {"add": ["NET_BIND_SERVICE"], "drop": ["ALL"]},
                            "readOnlyRootFilesystem": true,
                        },
                        "volumeMounts": [{"name": "config-volume", "mountPath": "/etc/coredns", "readOnly": true}],
                    }],
                    "dnsPolicy": "Default",
                    "volumes": [{"name": "config-volume", "configMap": {"name": "coredns", "items": [{"key": "Corefile", "path": "Corefile"}]}}],
                },
            },
        },
    })));
    objects.services.push(typed(json!({
        "metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": labels("kube-dns"),
                     "annotations": {"prometheus.io/port": "9153", "prometheus.io/scrape": "true"}},
        "spec": {
            "selector": {APP_LABEL: "kube-dns"},
            "clusterIP": dns_address,
            "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
                {"name": "metrics", "port": 9153, "protocol": "TCP", "targetPort": 9153},
            ],
        },
    })));
}

/// Which addons are not ready and why, from the live workloads (pure): `None` when all
/// enabled ones are available, or when no node has joined (they cannot run yet, which is
/// no fault). Each entry names the addon and its state.
pub fn not_ready(
    spec: &TenantClusterSpec,
    nodes: usize,
    kube_proxy: Option<&DaemonSet>,
    coredns: Option<&Deployment>,
) -> Option<String> {
    if nodes == 0 {
        return None;
    }
    let mut problems = Vec::new();
    if spec.addons.kube_proxy.enabled {
        match kube_proxy.and_then(|daemon_set| daemon_set.status.as_ref()) {
            None => problems.push("kube-proxy: DaemonSet not found".to_string()),
            Some(status) if status.number_available.unwrap_or(0) < status.desired_number_scheduled => {
                problems.push(format!(
                    "kube-proxy: {} of {} nodes available",
                    status.number_available.unwrap_or(0),
                    status.desired_number_scheduled
                ))
            }
            Some(_) => {}
        }
    }
    if spec.addons.core_dns.enabled {
        match coredns.and_then(|deployment| deployment.status.as_ref()) {
            None => problems.push("coredns: Deployment not found".to_string()),
            Some(status) if status.available_replicas.unwrap_or(0) < 1 => problems.push(format!(
                "coredns: {} of {} replicas available",
                status.available_replicas.unwrap_or(0),
                spec.addons.core_dns.replicas
            )),
            Some(_) => {}
        }
    }
    (!problems.is_empty()).then(|| problems.join("; "))
}

/// Labels an addon object carries (for tests and selectors).
pub fn addon_labels(app: &str) -> BTreeMap<String, String> {
    serde_json::from_value(labels(app)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(extra: serde_json::Value) -> TenantClusterSpec {
        let mut value = json!({"version": "1.34.2", "imageRepository": "nestor.local"});
        if let (Some(base), Some(extra)) = (value.as_object_mut(), extra.as_object()) {
            base.extend(extra.clone());
        }
        serde_json::from_value(value).expect("spec")
    }

    fn inputs() -> AddonInputs<'static> {
        AddonInputs { apiserver_url: "https://10.200.0.1:30443", kube_proxy_version: "1.34.2", tunnel: None }
    }

    #[test]
    fn both_addons_follow_the_tenant_version_and_repository() {
        let objects = addon_objects(&spec(json!({})), &inputs());
        let proxy = &objects.daemon_sets[0];
        let container =
            &proxy.spec.as_ref().expect("spec").template.spec.as_ref().expect("pod").containers[0];
        assert_eq!(container.image.as_deref(), Some("nestor.local/kube-proxy:v1.34.2"));
        let dns = &objects.deployments[0];
        let container = &dns.spec.as_ref().expect("spec").template.spec.as_ref().expect("pod").containers[0];
        assert_eq!(container.image.as_deref(), Some("nestor.local/coredns:v1.12.1"));
        let upstream = spec(json!({"imageRepository": null}));
        assert_eq!(coredns_image(&upstream), "registry.k8s.io/coredns/coredns:v1.12.1");
        assert_eq!(
            kube_proxy_image(&spec(json!({"version": "1.35.4"})), "1.35.4"),
            "nestor.local/kube-proxy:v1.35.4"
        );
    }

    #[test]
    fn kube_proxy_reaches_the_node_endpoint_and_knows_the_pod_range() {
        let objects = addon_objects(&spec(json!({"network": {"podCIDR": "10.120.0.0/16"}})), &inputs());
        let config_map = objects
            .config_maps
            .iter()
            .find(|map| map.metadata.name.as_deref() == Some("kube-proxy"))
            .expect("cm");
        let data = config_map.data.as_ref().expect("data");
        assert!(data["kubeconfig.conf"].contains("https://10.200.0.1:30443"), "{}", data["kubeconfig.conf"]);
        let config: serde_json::Value = serde_yaml_ng::from_str(&data["config.conf"]).expect("yaml");
        assert_eq!(config["mode"], "iptables");
        assert_eq!(config["clusterCIDR"], "10.120.0.0/16");
    }

    #[test]
    fn dns_is_served_at_the_tenth_service_address_for_the_cluster_domain() {
        let objects = addon_objects(
            &spec(json!({"network": {"serviceCIDR": "10.112.0.0/16", "clusterDomain": "team.local"}})),
            &inputs(),
        );
        let service = &objects.services[0];
        assert_eq!(service.spec.as_ref().and_then(|spec| spec.cluster_ip.as_deref()), Some("10.112.0.10"));
        let corefile = &objects
            .config_maps
            .iter()
            .find(|map| map.metadata.name.as_deref() == Some("coredns"))
            .expect("cm")
            .data
            .as_ref()
            .expect("data")["Corefile"];
        assert!(corefile.contains("kubernetes team.local in-addr.arpa ip6.arpa"), "{corefile}");
    }

    #[test]
    fn a_disabled_addon_is_not_built_and_is_named_for_deletion() {
        let objects = addon_objects(&spec(json!({"addons": {"kubeProxy": {"enabled": false}}})), &inputs());
        assert!(objects.daemon_sets.is_empty());
        assert_eq!(objects.disabled, vec!["kube-proxy", "konnectivity-agent"], "no nodes can join");
        assert_eq!(objects.deployments.len(), 1, "CoreDNS still on");
        let none = addon_objects(
            &spec(json!({"addons": {"kubeProxy": {"enabled": false}, "coreDNS": {"enabled": false}}})),
            &inputs(),
        );
        assert_eq!(none.disabled, vec!["kube-proxy", "coredns", "konnectivity-agent"]);
        assert!(none.services.is_empty() && none.deployments.is_empty() && none.config_maps.is_empty());
    }

    #[test]
    fn readiness_names_the_addon_that_is_not_ready_once_nodes_exist() {
        let spec = spec(json!({}));
        assert_eq!(not_ready(&spec, 0, None, None), None, "no node: nothing can run yet");
        let message = not_ready(&spec, 1, None, None).expect("not ready");
        assert!(
            message.contains("kube-proxy: DaemonSet not found") && message.contains("coredns"),
            "{message}"
        );
        let proxy: DaemonSet = typed(
            json!({"status": {"desiredNumberScheduled": 2, "numberAvailable": 1, "currentNumberScheduled": 2, "numberMisscheduled": 0, "numberReady": 1}}),
        );
        let dns: Deployment = typed(json!({"status": {"availableReplicas": 2}}));
        assert_eq!(
            not_ready(&spec, 2, Some(&proxy), Some(&dns)).as_deref(),
            Some("kube-proxy: 1 of 2 nodes available")
        );
    }

    #[test]
    fn building_is_deterministic_and_labelled() {
        let spec = spec(json!({}));
        assert_eq!(addon_objects(&spec, &inputs()), addon_objects(&spec, &inputs()));
        assert_eq!(addon_labels("kube-dns").get(MANAGED_BY.0).map(String::as_str), Some(MANAGED_BY.1));
    }
}
