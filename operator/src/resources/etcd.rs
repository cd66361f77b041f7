//! The tenant's etcd: headless Service, StatefulSet and the NetworkPolicy that fences
//! it, plus the member URLs the apiserver dials. Member DNS names come from
//! [`TenantNames::etcd_member_host`]; the etcd flags are built here.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, ResourceRequirements, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;
use serde::Serialize;

use super::pod::{ProjectedFile, flags, resources_or_default};
use super::render::{ETCD_NETWORK_POLICY, ETCD_SERVICE, ETCD_STATEFULSET, render};
use super::secrets::{CA_CERT_KEY, TLS_CERT_KEY, TLS_PRIVATE_KEY_KEY};
use super::{MetadataContext, ResourceError, TenantInputs};
use crate::api::TenantCluster;
use crate::names::{Component, NAMESPACE_NAME_LABEL, OPERATOR_POD_LABEL, TenantNames};

/// Port etcd serves clients (the apiserver) on, over mutual TLS.
pub const ETCD_CLIENT_PORT: i32 = 2379;
/// Port etcd members talk to each other on, over mutual TLS.
pub const ETCD_PEER_PORT: i32 = 2380;
/// Plain-HTTP port for `/health` and `/metrics`: the kubelet's probes cannot present
/// a client certificate.
pub const ETCD_METRICS_PORT: i32 = 2381;

const DATA_MOUNT_PATH: &str = "/var/lib/etcd";
/// A directory below the mount point: etcd insists on mode 0700 for its data
/// directory, which it can only set on a directory it creates itself.
const DATA_DIR: &str = "/var/lib/etcd/data";
const PKI_MOUNT_PATH: &str = "/etc/etcd/pki";
const SERVER_CERT: &str = "server.crt";
const SERVER_KEY: &str = "server.key";
const CLIENT_CA_CERT: &str = "ca.crt";
const PEER_CERT: &str = "peer.crt";
const PEER_KEY: &str = "peer.key";
const PEER_CA_CERT: &str = "peer-ca.crt";
const DEFAULT_STORAGE_SIZE: &str = "1Gi";

/// The `registry.k8s.io/etcd` tag kubeadm pairs with Kubernetes `1.<minor>`
/// (cmd/kubeadm/app/constants, SupportedEtcdVersion), or `None` for a minor Nestor
/// does not run. 1.35 stays on the 3.6.5 build the local images are made from. 1.30 to 1.32
/// take 1.33's newer 3.5 patch rather than kubeadm's 3.5.12 or 3.5.15: the same etcd from
/// 1.30 up to 1.33, so an upgrade through them never moves etcd back a patch.
pub fn etcd_image_tag(kubernetes_minor: u32) -> Option<&'static str> {
    match kubernetes_minor {
        30..=33 => Some("3.5.21-0"),
        34 | 35 => Some("3.6.5-0"),
        _ => None,
    }
}

/// `https://<member host>:2379` for every member, in ordinal order: the apiserver's `--etcd-servers`.
pub fn etcd_client_urls(names: &TenantNames, replicas: i32) -> Vec<String> {
    (0..replicas)
        .map(|ordinal| format!("https://{}:{ETCD_CLIENT_PORT}", names.etcd_member_host(ordinal)))
        .collect()
}

/// `https://<member host>:2380`: the peer URL member `ordinal` advertises, and the one
/// the operator registers when it re-adds that member (see [`crate::etcd::membership`]).
pub fn etcd_peer_url(names: &TenantNames, ordinal: i32) -> String {
    format!("https://{}:{ETCD_PEER_PORT}", names.etcd_member_host(ordinal))
}

/// `<member name>=https://<member host>:2380,...` for members `0..members`: the
/// membership a member without data starts from. etcd ignores it once a member has
/// data. A member joining a running cluster must list exactly the current members,
/// itself included, which is why it follows the member list while etcd is scaled
/// (see [`crate::etcd::scaling`]) rather than the spec.
fn initial_cluster(names: &TenantNames, members: i32) -> String {
    (0..members)
        .map(|ordinal| format!("{}={}", names.etcd_member_name(ordinal), etcd_peer_url(names, ordinal)))
        .collect::<Vec<_>>()
        .join(",")
}

/// Key of the etcd ConfigMap holding `new` or `existing`, read by every member as
/// `ETCD_INITIAL_CLUSTER_STATE` when its container starts.
pub const INITIAL_CLUSTER_STATE_KEY: &str = "initial-cluster-state";
/// Key of the etcd ConfigMap holding the initial cluster, read by every member as
/// `ETCD_INITIAL_CLUSTER` when its container starts.
pub const INITIAL_CLUSTER_KEY: &str = "initial-cluster";

/// ConfigMap `names.etcd()`: the bootstrap state members start with. The state is
/// `new` until the cluster formed once (`formed`), `existing` ever after, so a member
/// that lost its data and was re-added by the operator, or one added by a scale-up,
/// joins the running cluster instead of trying to bootstrap a new one. The initial
/// cluster names `input.etcd_members.running` members: every member at rest, exactly
/// the members etcd knows while it is being scaled. Both live outside the pod template
/// on purpose: changing them must not roll the StatefulSet, and a changed ConfigMap
/// restarts no pod (a member reads it when its container starts).
pub fn etcd_config_map(input: &TenantInputs<'_>, formed: bool) -> ConfigMap {
    let names = input.names();
    let state = if formed { "existing" } else { "new" };
    let initial_cluster = initial_cluster(names, input.etcd_members.running);
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(names.etcd()),
            namespace: Some(names.namespace.clone()),
            labels: Some(names.labels(Component::Etcd)),
            // The same reference the templates write (partial `metadata`).
            owner_references: Some(vec![OwnerReference {
                api_version: TenantCluster::api_version(&()).into_owned(),
                kind: TenantCluster::kind(&()).into_owned(),
                name: names.tenant.clone(),
                uid: input.owner.uid.clone(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([
            (INITIAL_CLUSTER_STATE_KEY.to_string(), state.to_string()),
            (INITIAL_CLUSTER_KEY.to_string(), initial_cluster),
        ])),
        ..ConfigMap::default()
    }
}

/// The member's own host name, with the pod name filled in by the kubelet from the
/// `POD_NAME` variable. Must equal [`TenantNames::etcd_member_host`] for that pod
/// (a test checks it); the names module cannot express "this pod's ordinal".
fn own_member_host(names: &TenantNames) -> String {
    format!("$(POD_NAME).{}.{}.svc", names.etcd(), names.namespace)
}

/// Secret files every member mounts: its serving and peer pairs, and the etcd CA
/// that signed the clients and peers it accepts.
pub(super) fn mounted_files(names: &TenantNames) -> Vec<ProjectedFile> {
    let server = names.etcd_server_secret();
    let peer = names.etcd_peer_secret();
    vec![
        ProjectedFile::new(server.clone(), TLS_CERT_KEY, SERVER_CERT),
        ProjectedFile::new(server.clone(), TLS_PRIVATE_KEY_KEY, SERVER_KEY),
        ProjectedFile::new(server, CA_CERT_KEY, CLIENT_CA_CERT),
        ProjectedFile::new(peer.clone(), TLS_CERT_KEY, PEER_CERT),
        ProjectedFile::new(peer.clone(), TLS_PRIVATE_KEY_KEY, PEER_KEY),
        ProjectedFile::new(peer, CA_CERT_KEY, PEER_CA_CERT),
    ]
}

fn etcd_args(input: &TenantInputs<'_>) -> Vec<String> {
    let names = input.names();
    let own_host = own_member_host(names);
    let pki = |file: &str| format!("{PKI_MOUNT_PATH}/{file}");
    let mut defaults = BTreeMap::from([
        ("name", "$(POD_NAME)".to_string()),
        ("data-dir", DATA_DIR.to_string()),
        ("listen-client-urls", format!("https://0.0.0.0:{ETCD_CLIENT_PORT}")),
        ("advertise-client-urls", format!("https://{own_host}:{ETCD_CLIENT_PORT}")),
        ("listen-peer-urls", format!("https://0.0.0.0:{ETCD_PEER_PORT}")),
        ("initial-advertise-peer-urls", format!("https://{own_host}:{ETCD_PEER_PORT}")),
        // No --initial-cluster nor --initial-cluster-state: both come from the ConfigMap
        // (see etcd_config_map), etcd refuses a flag given both ways, and a flag here
        // would roll every member whenever the membership changes.
        // Unique per TenantCluster incarnation: members of a deleted and re-created
        // tenant with the same name never mistake each other for peers.
        ("initial-cluster-token", input.owner.uid.clone()),
        ("cert-file", pki(SERVER_CERT)),
        ("key-file", pki(SERVER_KEY)),
        ("trusted-ca-file", pki(CLIENT_CA_CERT)),
        ("client-cert-auth", "true".to_string()),
        ("peer-cert-file", pki(PEER_CERT)),
        ("peer-key-file", pki(PEER_KEY)),
        ("peer-trusted-ca-file", pki(PEER_CA_CERT)),
        ("peer-client-cert-auth", "true".to_string()),
        ("listen-metrics-urls", format!("http://0.0.0.0:{ETCD_METRICS_PORT}")),
        ("snapshot-count", "10000".to_string()),
        // No --auto-compaction-*: the apiserver already compacts every five minutes
        // (--etcd-compaction-interval), a second compactor would only log conflicts.
    ]);
    // Only when set: an unset quota renders the flags of before, so tenants that never
    // set it do not roll when the operator is upgraded (etcd's default applies).
    if let Some(quota) = input.spec.etcd.quota_backend_bytes {
        defaults.insert("quota-backend-bytes", quota.to_string());
    }
    // The spec has no etcd extraArgs; the override mechanism is shared with the other components.
    flags(defaults, &BTreeMap::new())
}

#[derive(Serialize)]
struct EtcdPorts {
    client: i32,
    peer: i32,
    metrics: i32,
}

const PORTS: EtcdPorts =
    EtcdPorts { client: ETCD_CLIENT_PORT, peer: ETCD_PEER_PORT, metrics: ETCD_METRICS_PORT };

#[derive(Serialize)]
struct ServiceContext {
    metadata: MetadataContext,
    selector: BTreeMap<String, String>,
    ports: EtcdPorts,
}

/// Headless Service `names.etcd()`: per-member DNS names for the peer and client URLs.
pub fn etcd_service(input: &TenantInputs<'_>) -> Result<Service, ResourceError> {
    let names = input.names();
    let context = ServiceContext {
        metadata: input.owner.metadata(names.etcd(), Component::Etcd),
        selector: names.selector_labels(Component::Etcd),
        ports: PORTS,
    };
    render(ETCD_SERVICE, &context)
}

#[derive(Serialize)]
struct StatefulSetContext {
    metadata: MetadataContext,
    selector: BTreeMap<String, String>,
    service_name: String,
    replicas: i32,
    config_hash: String,
    image: String,
    args: Vec<String>,
    ports: EtcdPorts,
    resources: ResourceRequirements,
    data_mount_path: &'static str,
    pki_mount_path: &'static str,
    pki_files: Vec<ProjectedFile>,
    ephemeral: bool,
    storage_size: String,
    storage_class_name: Option<String>,
    config_map: String,
    initial_cluster_state_key: &'static str,
    initial_cluster_key: &'static str,
    /// The restore init container (`spec.restore`), if any.
    init_containers: Vec<serde_json::Value>,
    /// Volumes the init container needs beyond the member's own.
    extra_volumes: Vec<serde_json::Value>,
}

/// StatefulSet `names.etcd()`: `input.etcd_members.running` members (`spec.etcd.replicas`
/// unless etcd is being scaled), bootstrapped together,
/// mutual TLS for clients and peers, data on a claim per member (or an emptyDir when
/// `spec.etcd.storage.ephemeral`). The claim template is immutable once created.
pub fn etcd_statefulset(input: &TenantInputs<'_>) -> Result<StatefulSet, ResourceError> {
    let names = input.names();
    let storage = &input.spec.etcd.storage;
    let (init_containers, extra_volumes) = match &input.spec.restore {
        Some(restore) => {
            // The same bootstrap variables as the etcd container: the member restores
            // with the initial cluster it then starts with.
            let config_map_env = |name: &str, key: &str| serde_json::json!({"name": name, "valueFrom": {"configMapKeyRef": {"name": names.etcd(), "key": key}}});
            let env = serde_json::json!([
                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                config_map_env("ETCD_INITIAL_CLUSTER_STATE", INITIAL_CLUSTER_STATE_KEY),
                config_map_env("ETCD_INITIAL_CLUSTER", INITIAL_CLUSTER_KEY),
            ]);
            let (container, volumes) = super::backup::restore_init_container(
                input,
                restore,
                DATA_MOUNT_PATH,
                DATA_DIR,
                &own_member_host(names),
                ETCD_PEER_PORT,
                env,
            );
            (vec![container], volumes)
        }
        None => (Vec::new(), Vec::new()),
    };
    let context = StatefulSetContext {
        metadata: input.owner.metadata(names.etcd(), Component::Etcd),
        selector: names.selector_labels(Component::Etcd),
        service_name: names.etcd(),
        replicas: input.etcd_members.running,
        config_hash: input.config_hashes.etcd.clone(),
        image: input.images.etcd.clone(),
        args: etcd_args(input),
        ports: PORTS,
        resources: resources_or_default(input.spec.etcd.resources.as_ref()),
        data_mount_path: DATA_MOUNT_PATH,
        pki_mount_path: PKI_MOUNT_PATH,
        pki_files: mounted_files(names),
        ephemeral: storage.ephemeral,
        storage_size: storage.size.as_ref().map_or(DEFAULT_STORAGE_SIZE, |size| size.0.as_str()).to_string(),
        storage_class_name: storage.storage_class_name.clone(),
        config_map: names.etcd(),
        initial_cluster_state_key: INITIAL_CLUSTER_STATE_KEY,
        initial_cluster_key: INITIAL_CLUSTER_KEY,
        init_containers,
        extra_volumes,
    };
    render(ETCD_STATEFULSET, &context)
}

#[derive(Serialize)]
struct NetworkPolicyContext {
    metadata: MetadataContext,
    etcd_selector: BTreeMap<String, String>,
    apiserver_selector: BTreeMap<String, String>,
    operator_selector: BTreeMap<String, String>,
    operator_namespace_selector: NamespaceSelector,
    /// The tenant's backup pods, admitted on the client port when `spec.backup` is set.
    backup_selector: Option<BTreeMap<String, String>>,
    ports: EtcdPorts,
}

/// A `namespaceSelector`; without labels it renders as `{}`, which selects every namespace.
#[derive(Serialize)]
struct NamespaceSelector {
    #[serde(rename = "matchLabels", skip_serializing_if = "BTreeMap::is_empty")]
    match_labels: BTreeMap<String, String>,
}

/// NetworkPolicy `names.etcd_network_policy()`: clients only from this tenant's
/// apiserver pods and from the operator's pods (label [`OPERATOR_POD_LABEL`] in
/// `input.operator_namespace`, or in any namespace when that is unknown), peers only
/// from this tenant's etcd pods.
pub fn etcd_network_policy(input: &TenantInputs<'_>) -> Result<NetworkPolicy, ResourceError> {
    let names = input.names();
    let (operator_label, operator_name) = OPERATOR_POD_LABEL;
    let context = NetworkPolicyContext {
        metadata: input.owner.metadata(names.etcd_network_policy(), Component::Etcd),
        etcd_selector: names.selector_labels(Component::Etcd),
        apiserver_selector: names.selector_labels(Component::ApiServer),
        operator_selector: BTreeMap::from([(operator_label.to_string(), operator_name.to_string())]),
        operator_namespace_selector: NamespaceSelector {
            match_labels: input
                .operator_namespace
                .map(|namespace| (NAMESPACE_NAME_LABEL.to_string(), namespace.to_string()))
                .into_iter()
                .collect(),
        },
        backup_selector: input.spec.backup.as_ref().map(|_| names.selector_labels(Component::Backup)),
        ports: PORTS,
    };
    render(ETCD_NETWORK_POLICY, &context)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    use super::*;
    use crate::resources::test_support::*;

    #[test]
    fn image_tags_follow_kubeadm_pairing() {
        assert_eq!(etcd_image_tag(33), Some("3.5.21-0"));
        assert_eq!(etcd_image_tag(34), Some("3.6.5-0"));
        assert_eq!(etcd_image_tag(35), Some("3.6.5-0"));
        assert_eq!(etcd_image_tag(30), Some("3.5.21-0"));
        assert_eq!(etcd_image_tag(32), Some("3.5.21-0"));
        assert_eq!(etcd_image_tag(29), None);
    }

    #[test]
    fn headless_service_publishes_members_before_they_are_ready() {
        let fixture = Fixture::default();
        let service = etcd_service(&fixture.inputs()).expect("builds");
        let spec = service.spec.expect("spec");
        assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
        assert_eq!(spec.publish_not_ready_addresses, Some(true));
        let ports: Vec<(Option<String>, i32)> =
            spec.ports.unwrap_or_default().into_iter().map(|port| (port.name, port.port)).collect();
        assert_eq!(ports, [(Some("client".into()), 2379), (Some("peer".into()), 2380)]);
        assert_eq!(spec.selector, Some(fixture.owner.names.selector_labels(Component::Etcd)));
    }

    /// The whole rendered object, to pin the output format: a change here rolls or
    /// re-applies every tenant's Service, so it should be deliberate.
    #[test]
    fn headless_service_snapshot() {
        let fixture = Fixture::default();
        let service = etcd_service(&fixture.inputs()).expect("builds");
        let expected = "\
apiVersion: v1
kind: Service
metadata:
  labels:
    app.kubernetes.io/component: etcd
    app.kubernetes.io/instance: team-a
    app.kubernetes.io/managed-by: nestor
    app.kubernetes.io/part-of: nestor
    nestor.dev/tenant-cluster: team-a
  name: team-a-etcd
  namespace: tenants
  ownerReferences:
  - apiVersion: nestor.dev/v1alpha1
    blockOwnerDeletion: true
    controller: true
    kind: TenantCluster
    name: team-a
    uid: 0c9d2b7e-uid
spec:
  clusterIP: None
  ports:
  - name: client
    port: 2379
    protocol: TCP
    targetPort: 2379
  - name: peer
    port: 2380
    protocol: TCP
    targetPort: 2380
  publishNotReadyAddresses: true
  selector:
    app.kubernetes.io/component: etcd
    app.kubernetes.io/instance: team-a
    nestor.dev/tenant-cluster: team-a
";
        assert_eq!(serde_yaml_ng::to_string(&service).expect("serializes"), expected);
    }

    fn initial_cluster_of(config_map: &ConfigMap) -> Option<&str> {
        config_map.data.as_ref()?.get(INITIAL_CLUSTER_KEY).map(String::as_str)
    }

    #[test]
    fn initial_cluster_lists_every_member_by_its_dns_name() {
        let mut fixture = Fixture::default();
        fixture.spec.etcd.replicas = 3;
        let statefulset = etcd_statefulset(&fixture.inputs()).expect("builds");
        let spec = statefulset.spec.expect("spec");
        assert_eq!(spec.replicas, Some(3));
        assert_eq!(spec.pod_management_policy.as_deref(), Some("Parallel"));
        assert_eq!(spec.service_name.as_deref(), Some("team-a-etcd"));
        let config_map = etcd_config_map(&fixture.inputs(), false);
        assert_eq!(
            initial_cluster_of(&config_map),
            Some(
                "team-a-etcd-0=https://team-a-etcd-0.team-a-etcd.tenants.svc:2380,\
                 team-a-etcd-1=https://team-a-etcd-1.team-a-etcd.tenants.svc:2380,\
                 team-a-etcd-2=https://team-a-etcd-2.team-a-etcd.tenants.svc:2380"
            )
        );
        let etcd = container(&spec.template, "etcd");
        let args = etcd.args.clone().expect("args");
        assert_eq!(flag(&args, "initial-cluster"), None, "from the ConfigMap, not a flag");
        assert_eq!(flag(&args, "initial-cluster-state"), None, "from the ConfigMap, not a flag");
        let from_config_map: Vec<(String, String)> = etcd
            .env
            .iter()
            .flatten()
            .filter_map(|env| {
                let key = env.value_from.as_ref()?.config_map_key_ref.as_ref()?;
                assert_eq!(key.name, "team-a-etcd");
                Some((env.name.clone(), key.key.clone()))
            })
            .collect();
        assert_eq!(
            from_config_map,
            [
                ("ETCD_INITIAL_CLUSTER_STATE".to_string(), INITIAL_CLUSTER_STATE_KEY.to_string()),
                ("ETCD_INITIAL_CLUSTER".to_string(), INITIAL_CLUSTER_KEY.to_string()),
            ]
        );
        assert_eq!(
            flag(&args, "advertise-client-urls"),
            Some("https://$(POD_NAME).team-a-etcd.tenants.svc:2379")
        );
        assert_eq!(flag(&args, "initial-cluster-token"), Some(fixture.owner.uid.as_str()));
        assert_eq!(flag(&args, "client-cert-auth"), Some("true"));
        assert_eq!(flag(&args, "peer-client-cert-auth"), Some("true"));
        assert_eq!(flag(&args, "listen-metrics-urls"), Some("http://0.0.0.0:2381"));
    }

    #[test]
    fn single_member_cluster_names_only_itself() {
        let mut fixture = Fixture::default();
        fixture.spec.etcd.replicas = 1;
        let config_map = etcd_config_map(&fixture.inputs(), false);
        assert_eq!(
            initial_cluster_of(&config_map),
            Some("team-a-etcd-0=https://team-a-etcd-0.team-a-etcd.tenants.svc:2380")
        );
        assert_eq!(
            config_map.data.as_ref().and_then(|data| data.get(INITIAL_CLUSTER_STATE_KEY)).map(String::as_str),
            Some("new")
        );
    }

    #[test]
    fn while_scaling_the_members_follow_the_member_list_and_the_template_stays() {
        let mut fixture = Fixture::default();
        fixture.spec.etcd.replicas = 3;
        let at_rest = etcd_statefulset(&fixture.inputs()).expect("builds");
        let mut inputs = fixture.inputs();
        // Member 1 was just added to a one-member cluster.
        inputs.etcd_members = super::super::EtcdMembers { running: 2, serving: 1 };
        let scaling = etcd_statefulset(&inputs).expect("builds");
        assert_eq!(scaling.spec.as_ref().and_then(|spec| spec.replicas), Some(2));
        assert_eq!(
            scaling.spec.as_ref().map(|spec| &spec.template),
            at_rest.spec.as_ref().map(|spec| &spec.template),
            "no member rolls for a membership change"
        );
        let config_map = etcd_config_map(&inputs, true);
        assert_eq!(
            initial_cluster_of(&config_map),
            Some(
                "team-a-etcd-0=https://team-a-etcd-0.team-a-etcd.tenants.svc:2380,\
                 team-a-etcd-1=https://team-a-etcd-1.team-a-etcd.tenants.svc:2380"
            )
        );
        assert_eq!(
            config_map.data.as_ref().and_then(|data| data.get(INITIAL_CLUSTER_STATE_KEY)).map(String::as_str),
            Some("existing")
        );
    }

    #[test]
    fn the_quota_flag_is_rendered_only_when_set() {
        let mut fixture = Fixture::default();
        let args = |statefulset: &StatefulSet| -> Vec<String> {
            let template = statefulset.spec.as_ref().and_then(|spec| spec.template.spec.as_ref());
            template.and_then(|pod| pod.containers[0].args.clone()).unwrap_or_default()
        };
        let unset = etcd_statefulset(&fixture.inputs()).expect("builds");
        assert!(!args(&unset).iter().any(|arg| arg.starts_with("--quota-backend-bytes")), "etcd's default");
        fixture.spec.etcd.quota_backend_bytes = Some(67_108_864);
        let set = etcd_statefulset(&fixture.inputs()).expect("builds");
        assert!(args(&set).contains(&"--quota-backend-bytes=67108864".to_string()), "{:?}", args(&set));
    }

    #[test]
    fn own_member_host_matches_the_names_module_for_every_pod() {
        let names = TenantNames::new("team-a", "tenants");
        for ordinal in 0..5 {
            let filled = own_member_host(&names).replace("$(POD_NAME)", &names.etcd_member_name(ordinal));
            assert_eq!(filled, names.etcd_member_host(ordinal));
        }
    }

    #[test]
    fn client_urls_name_every_member() {
        let names = TenantNames::new("team-a", "tenants");
        assert_eq!(
            etcd_client_urls(&names, 2),
            [
                "https://team-a-etcd-0.team-a-etcd.tenants.svc:2379",
                "https://team-a-etcd-1.team-a-etcd.tenants.svc:2379"
            ]
        );
    }

    #[test]
    fn persistent_storage_uses_a_claim_template_with_size_and_class() {
        let mut fixture = Fixture::default();
        fixture.spec.etcd.storage.size = Some(Quantity("2Gi".into()));
        fixture.spec.etcd.storage.storage_class_name = Some("local-path".into());
        let spec = etcd_statefulset(&fixture.inputs()).expect("builds").spec.expect("spec");
        let claims = spec.volume_claim_templates.expect("claim templates");
        assert_eq!(claims.len(), 1);
        assert_eq!(claims[0].metadata.name.as_deref(), Some("data"));
        let claim_spec = claims[0].spec.as_ref().expect("claim spec");
        assert_eq!(claim_spec.storage_class_name.as_deref(), Some("local-path"));
        let requests = claim_spec.resources.as_ref().and_then(|r| r.requests.as_ref()).expect("requests");
        assert_eq!(requests.get("storage"), Some(&Quantity("2Gi".into())));
        let volumes = spec.template.spec.as_ref().and_then(|s| s.volumes.clone()).unwrap_or_default();
        assert!(volumes.iter().all(|volume| volume.name != "data"), "data comes from the claim");
    }

    #[test]
    fn storage_defaults_to_one_gibibyte_and_the_default_class() {
        let fixture = Fixture::default();
        let spec = etcd_statefulset(&fixture.inputs()).expect("builds").spec.expect("spec");
        let claims = spec.volume_claim_templates.expect("claim templates");
        let claim_spec = claims[0].spec.as_ref().expect("claim spec");
        assert_eq!(claim_spec.storage_class_name, None);
        let requests = claim_spec.resources.as_ref().and_then(|r| r.requests.as_ref()).expect("requests");
        assert_eq!(requests.get("storage"), Some(&Quantity("1Gi".into())));
    }

    #[test]
    fn ephemeral_storage_uses_an_empty_dir_and_no_claims() {
        let mut fixture = Fixture::default();
        fixture.spec.etcd.storage.ephemeral = true;
        let spec = etcd_statefulset(&fixture.inputs()).expect("builds").spec.expect("spec");
        assert_eq!(spec.volume_claim_templates, None);
        let volumes = spec.template.spec.as_ref().and_then(|s| s.volumes.clone()).unwrap_or_default();
        let data = volumes.iter().find(|volume| volume.name == "data").expect("data volume");
        assert!(data.empty_dir.is_some());
    }

    #[test]
    fn members_mount_their_server_and_peer_certificates_read_only() {
        let fixture = Fixture::default();
        let spec = etcd_statefulset(&fixture.inputs()).expect("builds").spec.expect("spec");
        let etcd = container(&spec.template, "etcd");
        let pki_mount =
            etcd.volume_mounts.iter().flatten().find(|mount| mount.name == "pki").expect("pki mount");
        assert_eq!(pki_mount.read_only, Some(true));
        let args = etcd.args.clone().expect("args");
        // Every file a flag names is projected into the mount.
        let projected = projected_paths(&spec.template, "pki");
        for name in [
            "cert-file",
            "key-file",
            "trusted-ca-file",
            "peer-cert-file",
            "peer-key-file",
            "peer-trusted-ca-file",
        ] {
            let path = flag(&args, name).expect(name);
            let file = path.strip_prefix(&format!("{}/", pki_mount.mount_path)).expect("under the pki mount");
            assert!(projected.contains(&file.to_string()), "{name}: {file} is not projected");
        }
    }

    #[test]
    fn probes_use_the_plain_http_metrics_listener() {
        let fixture = Fixture::default();
        let spec = etcd_statefulset(&fixture.inputs()).expect("builds").spec.expect("spec");
        let etcd = container(&spec.template, "etcd");
        for probe in [&etcd.startup_probe, &etcd.liveness_probe, &etcd.readiness_probe] {
            let http_get = probe.as_ref().and_then(|p| p.http_get.as_ref()).expect("httpGet probe");
            assert_eq!(http_get.port, IntOrString::Int(ETCD_METRICS_PORT));
            assert_eq!(http_get.scheme.as_deref(), Some("HTTP"));
        }
    }

    /// Each ingress rule as (pod selector, namespace selector, ports); one source per rule.
    type IngressRule = (BTreeMap<String, String>, Option<BTreeMap<String, String>>, Vec<IntOrString>);

    fn ingress_rules(policy: NetworkPolicy) -> Vec<IngressRule> {
        let spec = policy.spec.expect("spec");
        spec.ingress
            .unwrap_or_default()
            .into_iter()
            .map(|rule| {
                let peers = rule.from.unwrap_or_default();
                assert_eq!(peers.len(), 1, "one source per rule");
                let selector = peers[0].pod_selector.clone().and_then(|s| s.match_labels).unwrap_or_default();
                let namespaces = peers[0].namespace_selector.clone().map(|selector| {
                    assert!(selector.match_expressions.is_none());
                    selector.match_labels.unwrap_or_default()
                });
                let ports = rule.ports.unwrap_or_default().into_iter().filter_map(|p| p.port).collect();
                (selector, namespaces, ports)
            })
            .collect()
    }

    fn operator_pods() -> BTreeMap<String, String> {
        BTreeMap::from([("app.kubernetes.io/name".to_string(), "nestor-operator".to_string())])
    }

    #[test]
    fn network_policy_admits_only_the_tenants_apiserver_the_operator_and_peers() {
        let fixture = Fixture::default();
        let names = &fixture.owner.names;
        let policy = etcd_network_policy(&fixture.inputs()).expect("builds");
        let spec = policy.spec.clone().expect("spec");
        assert_eq!(
            spec.pod_selector.and_then(|s| s.match_labels),
            Some(names.selector_labels(Component::Etcd))
        );
        assert_eq!(spec.policy_types, Some(vec!["Ingress".to_string()]));
        assert_eq!(
            ingress_rules(policy),
            [
                // No namespace selector: the tenant's own namespace only.
                (names.selector_labels(Component::ApiServer), None, vec![IntOrString::Int(2379)]),
                (
                    operator_pods(),
                    Some(BTreeMap::from([(
                        "kubernetes.io/metadata.name".to_string(),
                        "nestor-system".to_string()
                    )])),
                    vec![IntOrString::Int(2379)]
                ),
                (names.selector_labels(Component::Etcd), None, vec![IntOrString::Int(2380)]),
            ]
        );
    }

    #[test]
    fn network_policy_admits_the_operator_from_any_namespace_when_its_own_is_unknown() {
        let fixture = Fixture::default();
        let inputs = TenantInputs { operator_namespace: None, ..fixture.inputs() };
        let rules = ingress_rules(etcd_network_policy(&inputs).expect("builds"));
        // An empty namespace selector (`{}`) selects every namespace; a missing one would
        // mean the tenant's namespace only.
        assert_eq!(rules[1], (operator_pods(), Some(BTreeMap::new()), vec![IntOrString::Int(2379)]));
        let rendered = serde_json::to_value(etcd_network_policy(&inputs).expect("builds")).expect("json");
        assert_eq!(rendered["spec"]["ingress"][1]["from"][0]["namespaceSelector"], serde_json::json!({}));
        // Everything else is as with a known namespace.
        let known = ingress_rules(etcd_network_policy(&fixture.inputs()).expect("builds"));
        assert_eq!((&rules[0], &rules[2]), (&known[0], &known[2]));
    }

    /// The operator's pods and its namespace variable in `deploy/operator.yaml` are
    /// what the policy (and the reconciler) expect; a renamed label would shut the
    /// deployed operator out of every tenant's etcd.
    #[test]
    fn the_deployed_operator_carries_the_admitted_label_and_knows_its_namespace() {
        use k8s_openapi::api::apps::v1::Deployment;
        let deployment: Deployment =
            serde_yaml_ng::from_str(include_str!("../../../deploy/operator.yaml")).expect("a Deployment");
        let template = deployment.spec.expect("spec").template;
        let (label, value) = OPERATOR_POD_LABEL;
        let labels = template.metadata.and_then(|metadata| metadata.labels).unwrap_or_default();
        assert_eq!(labels.get(label).map(String::as_str), Some(value));
        let operator = &template.spec.expect("pod spec").containers[0];
        let namespace_env = operator
            .env
            .iter()
            .flatten()
            .find(|env| env.name == crate::names::OPERATOR_NAMESPACE_ENV)
            .expect("the namespace variable is set");
        let field =
            namespace_env.value_from.as_ref().and_then(|from| from.field_ref.as_ref()).expect("fieldRef");
        assert_eq!(field.field_path, "metadata.namespace");
    }
}
