//! Every name Nestor derives from a TenantCluster: owned objects, Secrets,
//! labels and DNS names. One place, so "what is the etcd peer Service called"
//! has exactly one answer.

use std::collections::BTreeMap;

/// Longest TenantCluster name: `<name>-controller-manager` must stay a DNS-1123
/// label, and the StatefulSet's controller-revision-hash label
/// `<name>-etcd-<10 chars>` must stay within 63 characters.
pub const MAX_TENANT_NAME_LENGTH: usize = 40;

/// Field manager used for every server-side apply.
pub const FIELD_MANAGER: &str = "nestor-operator";
/// Label key and value on the operator's own pods (`deploy/operator.yaml`); each
/// tenant's etcd NetworkPolicy admits pods carrying it on the client port, since the
/// operator probes, scales and repairs etcd itself.
pub const OPERATOR_POD_LABEL: (&str, &str) = ("app.kubernetes.io/name", "nestor-operator");
/// Environment variable holding the operator's namespace, filled from the downward API
/// in `deploy/operator.yaml`; unset when the operator runs as a host process.
pub const OPERATOR_NAMESPACE_ENV: &str = "POD_NAMESPACE";
/// Label the API server puts on every namespace, holding its name.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";
/// Finalizer that holds deletion until owned data is cleaned up.
pub const FINALIZER: &str = "nestor.dev/cleanup";

/// Label naming the TenantCluster an object belongs to.
pub const TENANT_LABEL: &str = "nestor.dev/tenant-cluster";
/// Label naming the tenant a backup claim or PKI copy belongs to. Not [`TENANT_LABEL`]:
/// what carries that is deleted with the tenant (its volume claims by that selector),
/// and these outlive it unless `spec.backup.deleteWithCluster`.
pub const BACKUP_OF_LABEL: &str = "nestor.dev/backup-of";
/// Label naming the control-plane component of an object.
pub const COMPONENT_LABEL: &str = "app.kubernetes.io/component";

/// Control-plane components that own workloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Component {
    Etcd,
    ApiServer,
    ControllerManager,
    Scheduler,
    Pki,
    /// The backup CronJob, its Jobs and pods, the backup claim and the PKI copy.
    Backup,
}

impl Component {
    /// Value of the `app.kubernetes.io/component` label.
    pub fn label(self) -> &'static str {
        match self {
            Component::Etcd => "etcd",
            Component::ApiServer => "kube-apiserver",
            Component::ControllerManager => "kube-controller-manager",
            Component::Scheduler => "kube-scheduler",
            Component::Pki => "pki",
            Component::Backup => "backup",
        }
    }
}

/// Names derived from one TenantCluster's name and namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TenantNames {
    pub tenant: String,
    pub namespace: String,
}

impl TenantNames {
    pub fn new(tenant: impl Into<String>, namespace: impl Into<String>) -> Self {
        Self { tenant: tenant.into(), namespace: namespace.into() }
    }

    fn derived(&self, suffix: &str) -> String {
        format!("{}-{suffix}", self.tenant)
    }

    // --- workloads and Services ---
    /// etcd StatefulSet and its headless Service (peer and client DNS).
    pub fn etcd(&self) -> String {
        self.derived("etcd")
    }
    /// kube-apiserver Deployment and Service.
    pub fn apiserver(&self) -> String {
        self.derived("apiserver")
    }
    /// kube-controller-manager Deployment.
    pub fn controller_manager(&self) -> String {
        self.derived("controller-manager")
    }
    /// kube-scheduler Deployment.
    pub fn scheduler(&self) -> String {
        self.derived("scheduler")
    }
    /// The backup CronJob, and the default name of the backup volume claim.
    pub fn backup(&self) -> String {
        self.derived("backup")
    }
    /// The PKI copy kept for restores (CAs, service-account key, encryption config),
    /// not owned by the TenantCluster.
    pub fn pki_backup_secret(&self) -> String {
        self.derived("pki-backup")
    }
    /// NetworkPolicy that admits only the tenant's apiserver to its etcd.
    pub fn etcd_network_policy(&self) -> String {
        self.derived("etcd")
    }

    /// DNS name of etcd member `ordinal` inside the meta cluster.
    pub fn etcd_member_host(&self, ordinal: i32) -> String {
        format!("{}-{ordinal}.{}.{}.svc", self.etcd(), self.etcd(), self.namespace)
    }
    /// Pod name (and etcd member name) of member `ordinal`.
    pub fn etcd_member_name(&self, ordinal: i32) -> String {
        format!("{}-{ordinal}", self.etcd())
    }
    /// Volume claim holding member `ordinal`'s data: the StatefulSet names it
    /// `<claim template>-<pod>`, the template being `data` (templates/etcd-statefulset.yaml).
    pub fn etcd_data_claim(&self, ordinal: i32) -> String {
        format!("data-{}", self.etcd_member_name(ordinal))
    }
    /// In-cluster DNS name of the apiserver Service.
    pub fn apiserver_service_host(&self) -> String {
        format!("{}.{}.svc", self.apiserver(), self.namespace)
    }

    // --- Secrets ---
    pub fn cluster_ca_secret(&self) -> String {
        self.derived("ca")
    }
    pub fn front_proxy_ca_secret(&self) -> String {
        self.derived("front-proxy-ca")
    }
    pub fn etcd_ca_secret(&self) -> String {
        self.derived("etcd-ca")
    }
    pub fn service_account_key_secret(&self) -> String {
        self.derived("sa")
    }
    pub fn apiserver_serving_secret(&self) -> String {
        self.derived("apiserver-serving")
    }
    pub fn apiserver_kubelet_client_secret(&self) -> String {
        self.derived("apiserver-kubelet-client")
    }
    pub fn apiserver_etcd_client_secret(&self) -> String {
        self.derived("apiserver-etcd-client")
    }
    pub fn front_proxy_client_secret(&self) -> String {
        self.derived("front-proxy-client")
    }
    /// konnectivity-server's certificate towards the agents (the tunnel port).
    pub fn konnectivity_server_serving_secret(&self) -> String {
        self.derived("konnectivity-server")
    }
    /// konnectivity-server's client certificate towards its own apiserver (TokenReviews).
    pub fn konnectivity_server_client_secret(&self) -> String {
        self.derived("konnectivity-client")
    }
    pub fn etcd_server_secret(&self) -> String {
        self.derived("etcd-server")
    }
    pub fn etcd_peer_secret(&self) -> String {
        self.derived("etcd-peer")
    }
    pub fn etcd_healthcheck_client_secret(&self) -> String {
        self.derived("etcd-healthcheck-client")
    }
    /// Encryption-at-rest configuration with the tenant's generated key.
    pub fn encryption_config_secret(&self) -> String {
        self.derived("encryption-config")
    }
    /// Admin kubeconfig, key `value` (the Cluster API convention).
    pub fn admin_kubeconfig_secret(&self) -> String {
        self.derived("kubeconfig")
    }
    /// Admin kubeconfig that uses the in-cluster Service DNS name.
    pub fn admin_in_cluster_kubeconfig_secret(&self) -> String {
        self.derived("kubeconfig-internal")
    }
    pub fn controller_manager_kubeconfig_secret(&self) -> String {
        self.derived("controller-manager-kubeconfig")
    }
    pub fn scheduler_kubeconfig_secret(&self) -> String {
        self.derived("scheduler-kubeconfig")
    }

    // --- labels ---
    /// Labels on every object owned by this tenant.
    pub fn labels(&self, component: Component) -> BTreeMap<String, String> {
        let mut labels = self.selector_labels(component);
        labels.insert("app.kubernetes.io/managed-by".into(), "nestor".into());
        labels.insert("app.kubernetes.io/part-of".into(), "nestor".into());
        labels
    }
    /// The stable subset of `labels` used in selectors (immutable on workloads).
    pub fn selector_labels(&self, component: Component) -> BTreeMap<String, String> {
        BTreeMap::from([
            (TENANT_LABEL.to_string(), self.tenant.clone()),
            (COMPONENT_LABEL.to_string(), component.label().to_string()),
            ("app.kubernetes.io/instance".to_string(), self.tenant.clone()),
        ])
    }
    /// `selector_labels` as a label selector string (`key=value,...`), for list calls.
    pub fn component_selector(&self, component: Component) -> String {
        self.selector_labels(component)
            .into_iter()
            .map(|(key, value)| format!("{key}={value}"))
            .collect::<Vec<_>>()
            .join(",")
    }
    /// Selector matching everything this tenant owns.
    pub fn tenant_selector(&self) -> String {
        format!("{TENANT_LABEL}={}", self.tenant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_component_selector_is_the_selector_labels_joined() {
        let names = TenantNames::new("team-a", "tenants");
        assert_eq!(
            names.component_selector(Component::ApiServer),
            "app.kubernetes.io/component=kube-apiserver,app.kubernetes.io/instance=team-a,\
             nestor.dev/tenant-cluster=team-a"
        );
    }

    #[test]
    fn longest_tenant_name_keeps_every_derived_label_valid() {
        let names = TenantNames::new("a".repeat(MAX_TENANT_NAME_LENGTH), "tenants");
        // Services and Deployments must be DNS-1123 labels.
        for name in [names.etcd(), names.apiserver(), names.controller_manager(), names.scheduler()] {
            assert!(name.len() <= 63, "{name} is {} characters", name.len());
        }
        // StatefulSet controller-revision-hash label value: <sts>-<10 char hash>.
        assert!(names.etcd().len() + 11 <= 63);
    }

    #[test]
    fn etcd_member_host_is_the_headless_service_dns_name() {
        let names = TenantNames::new("team-a", "tenants");
        assert_eq!(names.etcd_member_host(2), "team-a-etcd-2.team-a-etcd.tenants.svc");
    }
}
