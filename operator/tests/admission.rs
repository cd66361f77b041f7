//! Admission of TenantClusters by a real kube-apiserver: the CRD's OpenAPI and CEL rules
//! reject bad specs with messages that name the field, fill in defaults, and guard updates.
//!
//! Needs a reachable cluster through KUBECONFIG (the Makefile starts the meta cluster first)
//! and fails, rather than skips, without one. Each test works in a namespace of its own, so
//! the tests run in parallel; the namespace is deleted at the end even when the test fails.
//!
//! No controllers are involved, so a bare etcd and kube-apiserver on loopback are enough for
//! development (`--authorization-mode=AlwaysAllow`, a token auth file, a self-signed serving
//! certificate); without a namespace controller the test namespaces then stay Terminating,
//! which is harmless because each run picks fresh names.
//!
//! Of the shared harness (`support`) only the bounded poll is used: these tests keep their
//! own `in_namespace`, without the harness's one-test-at-a-time lock (no operator runs, so
//! they may run in parallel) and without its operator-test namespace prefix.

mod support;

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures::FutureExt;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, Resource};
use nestor::api::{TenantCluster, TenantClusterSpec};
use serde_json::{Value, json};

/// Field manager of the CRD this suite installs.
const FIELD_MANAGER: &str = "nestor-admission-tests";
/// How long the apiserver may take to establish the CRD and serve its endpoint.
const CRD_READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A client for the cluster KUBECONFIG names, with the CRD installed and served.
async fn client_with_crd() -> Client {
    let client = Client::try_default()
        .await
        .expect("admission tests need a cluster: set KUBECONFIG or start the meta cluster");
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = nestor::api::crd();
    let name = crd.metadata.name.clone().expect("generated CRD has a name");
    crds.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&crd)).await.unwrap_or_else(
        |error| panic!("could not apply the generated CRD (is the cluster up and the CRD valid?): {error}"),
    );
    tokio::time::timeout(CRD_READY_TIMEOUT, await_condition(crds, &name, conditions::is_crd_established()))
        .await
        .expect("CRD not established in time")
        .expect("watching the CRD failed");
    client
}

/// Runs `body` with TenantClusters of a fresh namespace, then deletes the namespace.
async fn in_namespace<F, Fut>(test: &str, body: F)
where
    F: FnOnce(Api<DynamicObject>) -> Fut,
    Fut: Future<Output = ()>,
{
    let client = client_with_crd().await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let namespace_name = format!("nestor-admission-{test}-{:08x}", rand::random::<u32>());
    let namespace: Namespace =
        serde_json::from_value(json!({ "metadata": { "name": namespace_name } })).expect("namespace object");
    namespaces.create(&PostParams::default(), &namespace).await.expect("create test namespace");

    let tenants = tenant_api(client, &namespace_name).await;
    let outcome = AssertUnwindSafe(body(tenants)).catch_unwind().await;
    let cleanup = namespaces.delete(&namespace_name, &DeleteParams::default()).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    cleanup.expect("delete test namespace");
}

/// TenantClusters of `namespace` as raw JSON, so tests can send what a user would write,
/// including values the Rust types cannot hold. Waits until the resource is served there:
/// a freshly established CRD can answer 404 for a moment.
async fn tenant_api(client: Client, namespace: &str) -> Api<DynamicObject> {
    let resource = ApiResource::erase::<TenantCluster>(&());
    let api = Api::namespaced_with(client, namespace, &resource);
    let what = format!("TenantClusters to be served in {namespace}");
    support::poll(&what, CRD_READY_TIMEOUT, Duration::from_millis(250), &mut async || {
        api.list(&ListParams::default()).await.map(drop).map_err(|error| {
            eprintln!("waiting for TenantClusters to be served: {error}");
            error.to_string()
        })
    })
    .await;
    api
}

/// A TenantCluster object named `name` with `spec`, as raw JSON.
fn tenant(name: &str, spec: Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": TenantCluster::api_version(&()),
        "kind": TenantCluster::kind(&()),
        "metadata": { "name": name },
        "spec": spec,
    }))
    .expect("TenantCluster JSON")
}

/// Asserts the apiserver refuses the result with 422 Invalid, and that its message names
/// `field` and contains `why`. Returns the message.
#[track_caller]
fn assert_invalid(result: Result<DynamicObject, kube::Error>, field: &str, why: &str) -> String {
    let status = match result {
        Ok(object) => {
            panic!("apiserver accepted an invalid TenantCluster (expected {field}: {why}): {object:?}")
        }
        Err(kube::Error::Api(status)) => status,
        Err(other) => panic!("expected a validation error for {field}, got: {other}"),
    };
    assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"), "{}", status.message);
    assert!(status.message.contains(field), "message does not name {field}: {}", status.message);
    assert!(status.message.contains(why), "message does not say {why:?}: {}", status.message);
    status.message
}

/// Creating `spec` under `name` is refused with a message naming `field` and saying `why`.
async fn assert_create_rejected(name: &str, spec: Value, field: &str, why: &str) {
    let test = name.replace('.', "-");
    let (name, field, why) = (name.to_owned(), field.to_owned(), why.to_owned());
    in_namespace(&test[..test.len().min(30)], |tenants| async move {
        let message =
            assert_invalid(tenants.create(&PostParams::default(), &tenant(&name, spec)).await, &field, &why);
        eprintln!("rejected as expected: {message}");
    })
    .await;
}

/// `count` distinct DNS names for `certSANs`.
fn numbered_sans(count: usize) -> Vec<String> {
    (0..count).map(|i| format!("san{i}.example")).collect()
}

/// One test per bad spec: `name` is the object's name, then the spec, the field the message
/// must name, and a phrase of the reason.
macro_rules! rejects {
    ($($test:ident: $name:expr, $spec:tt, $field:expr, $why:expr;)+) => {$(
        #[tokio::test]
        async fn $test() {
            assert_create_rejected($name, json!($spec), $field, $why).await;
        }
    )+};
}

rejects! {
    rejects_an_extra_arg_that_names_no_flag:
        "empty-flag", {"version": "1.34.2", "apiServer": {"extraArgs": {"": "x"}}},
        "spec.apiServer.extraArgs", "every key must name a flag";
    rejects_a_scheduler_extra_arg_of_dashes_only:
        "dashes-flag", {"version": "1.34.2", "scheduler": {"extraArgs": {"--": "x"}}},
        "spec.scheduler.extraArgs", "every key must name a flag";
    rejects_name_longer_than_40_characters:
        "this-name-is-far-too-long-for-a-tenant-cl", {"version": "1.34.2"},
        "metadata.name", "must be at most 40 characters";
    rejects_name_with_dots:
        "tenant.example", {"version": "1.34.2"},
        "metadata.name", "must be a DNS-1123 label";
    rejects_version_with_leading_v:
        "leading-v", {"version": "v1.34.2"},
        "spec.version", "without a leading 'v'";
    rejects_version_without_patch:
        "no-patch", {"version": "1.34"},
        "spec.version", "MAJOR.MINOR.PATCH";
    rejects_version_newer_than_supported:
        "too-new", {"version": "1.36.0"},
        "spec.version", "supported Kubernetes version: 1.30 through 1.35";
    rejects_version_older_than_supported:
        "too-old", {"version": "1.29.9"},
        "spec.version", "supported Kubernetes version: 1.30 through 1.35";
    rejects_even_etcd_replicas:
        "even-etcd", {"version": "1.34.2", "etcd": {"replicas": 2}},
        "spec.etcd.replicas", "must be 1, 3 or 5";
    rejects_zero_apiserver_replicas:
        "no-apiserver", {"version": "1.34.2", "apiServer": {"replicas": 0}},
        "spec.apiServer.replicas", "greater than or equal to 1";
    rejects_too_many_apiserver_replicas:
        "many-apiservers", {"version": "1.34.2", "apiServer": {"replicas": 11}},
        "spec.apiServer.replicas", "less than or equal to 10";
    rejects_zero_controller_manager_replicas:
        "no-kcm", {"version": "1.34.2", "controllerManager": {"replicas": 0}},
        "spec.controllerManager.replicas", "greater than or equal to 1";
    rejects_zero_scheduler_replicas:
        "no-scheduler", {"version": "1.34.2", "scheduler": {"replicas": 0}},
        "spec.scheduler.replicas", "greater than or equal to 1";
    rejects_too_many_scheduler_replicas:
        "many-schedulers", {"version": "1.34.2", "scheduler": {"replicas": 11}},
        "spec.scheduler.replicas", "less than or equal to 10";
    rejects_node_port_without_node_port_service:
        "stray-node-port", {"version": "1.34.2", "network": {"nodePort": 30080}},
        "spec.network.nodePort", "only be set when spec.network.serviceType is NodePort";
    rejects_node_port_out_of_range:
        "low-node-port", {"version": "1.34.2", "network": {"serviceType": "NodePort", "nodePort": 8080}},
        "spec.network.nodePort", "greater than or equal to 30000";
    rejects_unknown_service_type:
        "ingress", {"version": "1.34.2", "network": {"serviceType": "Ingress"}},
        "spec.network.serviceType", "supported values";
    rejects_service_cidr_that_is_no_cidr:
        "bad-service-cidr", {"version": "1.34.2", "network": {"serviceCIDR": "10.96.0.0"}},
        "spec.network.serviceCIDR", "must be a CIDR";
    rejects_service_cidr_with_host_bits:
        "host-bits", {"version": "1.34.2", "network": {"serviceCIDR": "10.96.0.1/12"}},
        "spec.network.serviceCIDR", "host bits zero";
    rejects_too_wide_ipv4_service_cidr:
        "wide-services", {"version": "1.34.2", "network": {"serviceCIDR": "10.0.0.0/8"}},
        "spec.network.serviceCIDR", "prefix length from /12 to /24";
    rejects_too_wide_ipv6_service_cidr:
        "wide-v6-services", {"version": "1.34.2", "network": {"serviceCIDR": "fd00:10:96::/64"}},
        "spec.network.serviceCIDR", "/108 to /120 (IPv6)";
    rejects_pod_cidr_that_is_no_cidr:
        "bad-pod-cidr", {"version": "1.34.2", "network": {"podCIDR": "pods"}},
        "spec.network.podCIDR", "must be a CIDR";
    rejects_pod_cidr_overlapping_service_cidr:
        "overlap", {"version": "1.34.2", "network": {"podCIDR": "10.96.0.0/16"}},
        "spec.network.podCIDR", "must not overlap spec.network.serviceCIDR";
    rejects_cluster_domain_that_is_no_subdomain:
        "bad-domain", {"version": "1.34.2", "network": {"clusterDomain": "Cluster_Local"}},
        "spec.network.clusterDomain", "DNS-1123 subdomain";
    rejects_external_host_that_is_no_host:
        "bad-host", {"version": "1.34.2", "network": {"externalHost": "https://api.example.com"}},
        "spec.network.externalHost", "DNS name (optionally starting with '*.') or an IP address";
    rejects_cert_san_that_is_no_host:
        "bad-san", {"version": "1.34.2", "apiServer": {"certSANs": ["api.example.com", "api example"]}},
        "spec.apiServer.certSANs", "DNS names (optionally starting with '*.') or IP addresses";
    rejects_more_than_32_cert_sans:
        "many-sans", {"version": "1.34.2", "apiServer": {"certSANs": numbered_sans(33)}},
        "spec.apiServer.certSANs", "must have at most 32 items";
    rejects_image_repository_with_tag:
        "tagged-repo", {"version": "1.34.2", "imageRepository": "registry.k8s.io/kube:latest"},
        "spec.imageRepository", "no tag or digest";
    rejects_malformed_certificate_validity:
        "one-year", {"version": "1.34.2", "pki": {"certificateValidity": "1y"}},
        "spec.pki.certificateValidity", "duration in hours, minutes and seconds";
    rejects_empty_renew_before:
        "no-renewal", {"version": "1.34.2", "pki": {"renewBefore": ""}},
        "spec.pki.renewBefore", "duration in hours, minutes and seconds";
    rejects_renew_before_not_shorter_than_validity:
        "renew-too-early",
        {"version": "1.34.2", "pki": {"certificateValidity": "24h", "renewBefore": "1440m"}},
        "spec.pki.renewBefore", "must be shorter than spec.pki.certificateValidity";
    rejects_unknown_key_algorithm:
        "dsa", {"version": "1.34.2", "pki": {"keyAlgorithm": "DSA-1024"}},
        "spec.pki.keyAlgorithm", "supported values";
    rejects_storage_class_that_is_no_name:
        "bad-class", {"version": "1.34.2", "etcd": {"storage": {"storageClassName": "Fast Disks"}}},
        "spec.etcd.storage.storageClassName", "DNS-1123 subdomain";
    rejects_negative_storage_size:
        "negative-size", {"version": "1.34.2", "etcd": {"storage": {"size": "-1Gi"}}},
        "spec.etcd.storage.size", "positive quantity";
    rejects_storage_size_that_is_no_quantity:
        "bad-size", {"version": "1.34.2", "etcd": {"storage": {"size": "lots"}}},
        "spec.etcd.storage.size", "positive quantity";
    rejects_quota_below_the_range:
        "small-quota", {"version": "1.34.2", "etcd": {"quotaBackendBytes": 1048576}},
        "spec.etcd.quotaBackendBytes", "between 16777216 (16 MiB) and 8589934592 (8 GiB) bytes";
    rejects_quota_above_the_range:
        "large-quota", {"version": "1.34.2", "etcd": {"quotaBackendBytes": 17179869184_i64}},
        "spec.etcd.quotaBackendBytes", "between 16777216 (16 MiB) and 8589934592 (8 GiB) bytes";
    rejects_missing_version:
        "no-version", {},
        "spec.version", "Required value";
    rejects_tunnel_node_port_without_node_port_service:
        "tunnel-port", {"version": "1.34.2", "network": {"serviceType": "LoadBalancer", "externalHost": "192.0.2.1", "tunnel": {"nodePort": 31444}}},
        "spec.network.tunnel.nodePort", "may only be set when spec.network.serviceType is NodePort";
    rejects_tunnel_node_port_equal_to_the_apiservers:
        "tunnel-same-port", {"version": "1.34.2", "network": {"serviceType": "NodePort", "nodePort": 31444, "tunnel": {"nodePort": 31444}}},
        "spec.network.tunnel.nodePort", "must differ from spec.network.nodePort";
    rejects_a_backup_schedule_that_does_not_parse:
        "bad-cron", {"version": "1.34.2", "backup": {"schedule": "every day", "destination": {"volume": {}}}},
        "spec.backup.schedule", "must be a 5-field cron expression";
    rejects_a_backup_schedule_with_a_minute_out_of_range:
        "cron-minute", {"version": "1.34.2", "backup": {"schedule": "61 3 * * *", "destination": {"volume": {}}}},
        "spec.backup.schedule", "must be a 5-field cron expression";
    rejects_a_backup_schedule_with_seconds:
        "cron-seconds", {"version": "1.34.2", "backup": {"schedule": "0 0 3 * * *", "destination": {"volume": {}}}},
        "spec.backup.schedule", "must be a 5-field cron expression";
    rejects_a_bucket_without_credentials:
        "no-credentials", {"version": "1.34.2", "backup": {"schedule": "@daily", "destination": {"s3": {"endpoint": "http://10.200.0.1:9343", "bucket": "nestor-backups"}}}},
        "spec.backup.destination.s3.credentialsSecret", "is required";
    rejects_two_backup_destinations:
        "two-stores", {"version": "1.34.2", "backup": {"schedule": "@daily", "destination": {"volume": {}, "s3": {"endpoint": "http://10.200.0.1:9343", "bucket": "nestor-backups", "credentialsSecret": "s3"}}}},
        "spec.backup.destination", "exactly one of volume and s3";
    rejects_a_backup_without_a_destination:
        "no-store", {"version": "1.34.2", "backup": {"schedule": "@daily", "destination": {}}},
        "spec.backup.destination", "exactly one of volume and s3";
    rejects_a_zero_retain:
        "no-retain", {"version": "1.34.2", "backup": {"schedule": "@daily", "retain": 0, "destination": {"volume": {}}}},
        "spec.backup.retain", "should be greater than or equal to 1";
    rejects_an_endpoint_that_is_no_url:
        "bad-endpoint", {"version": "1.34.2", "backup": {"schedule": "@daily", "destination": {"s3": {"endpoint": "10.200.0.1:9343", "bucket": "nestor-backups", "credentialsSecret": "s3"}}}},
        "spec.backup.destination.s3.endpoint", "must be an http:// or https:// URL";
}

#[tokio::test]
async fn accepts_minimal_spec_and_fills_in_the_same_defaults_as_the_operator() {
    in_namespace("defaults", |tenants| async move {
        let created = tenants
            .create(&PostParams::default(), &tenant("minimal", json!({ "version": "1.34.2" })))
            .await
            .expect("minimal spec accepted");
        let server_spec = created.data.get("spec").cloned().expect("spec");
        assert_eq!(
            server_spec,
            json!({
                "version": "1.34.2",
                "paused": false,
                "etcd": { "replicas": 3, "storage": { "ephemeral": false } },
                "apiServer": { "replicas": 1 },
                "controllerManager": { "replicas": 1 },
                "scheduler": { "replicas": 1 },
                "addons": { "kubeProxy": { "enabled": true }, "coreDNS": { "enabled": true, "replicas": 2 } },
                "network": {
                    "serviceType": "ClusterIP",
                    "serviceCIDR": "10.96.0.0/12",
                    "podCIDR": "10.244.0.0/16",
                    "clusterDomain": "cluster.local",
                    "tunnel": { "enabled": true },
                },
                "pki": {
                    "keyAlgorithm": "ECDSA-P256",
                    "certificateValidity": "8760h",
                    "renewBefore": "720h",
                },
            })
        );
        // What the apiserver stores is exactly what the operator's own defaults produce.
        let rust_spec: TenantClusterSpec =
            serde_json::from_value(json!({ "version": "1.34.2" })).expect("minimal spec deserializes");
        assert_eq!(serde_json::to_value(&rust_spec).expect("spec serializes"), server_spec);
    })
    .await;
}

#[tokio::test]
async fn accepts_spec_using_every_field() {
    in_namespace("full", |tenants| async move {
        let spec = json!({
            "version": "1.35.0",
            "paused": true,
            "imageRepository": "localhost:5000/k8s",
            "etcd": {
                "replicas": 5,
                "storage": { "ephemeral": false, "size": "2Gi", "storageClassName": "local-path" },
                "resources": { "requests": { "cpu": "100m", "memory": "256Mi" } },
                "quotaBackendBytes": 1_073_741_824,
            },
            "apiServer": {
                "replicas": 2,
                "extraArgs": { "audit-log-maxage": "7" },
                "certSANs": ["api.tenant.example", "*.tenant.example", "192.0.2.10", "2001:db8::10"],
            },
            "controllerManager": { "replicas": 2, "extraArgs": { "v": "2" } },
            "scheduler": {
                "replicas": 2,
                "extraArgs": { "v": "3" },
                "resources": { "requests": { "cpu": "20m" } },
            },
            "addons": { "kubeProxy": { "enabled": false }, "coreDNS": { "enabled": true, "replicas": 3 } },
            "network": {
                "serviceType": "NodePort",
                "nodePort": 31443,
                "externalHost": "203.0.113.7",
                "serviceCIDR": "fd00:10:96::/112",
                "podCIDR": "fd00:10:244::/56",
                "clusterDomain": "tenant.internal",
                "tunnel": { "enabled": true, "nodePort": 31444 },
            },
            "pki": { "keyAlgorithm": "RSA-2048", "certificateValidity": "2160h", "renewBefore": "360h30m" },
        });
        let created = tenants
            .create(&PostParams::default(), &tenant("full", spec.clone()))
            .await
            .expect("full spec accepted");
        assert_eq!(created.data.get("spec"), Some(&spec));
        let typed: TenantClusterSpec =
            serde_json::from_value(spec).expect("the operator reads back what the apiserver accepts");
        assert_eq!(nestor::api::validate(&typed), Ok(()));
    })
    .await;
}

/// Creates a TenantCluster with `spec`, then asserts a merge patch of its spec with `change`
/// is refused with a message naming `field` and saying `why`.
async fn assert_update_rejected(test: &str, spec: Value, change: Value, field: &str, why: &str) {
    let (spec, change, field, why) = (spec, change, field.to_owned(), why.to_owned());
    in_namespace(test, |tenants| async move {
        tenants.create(&PostParams::default(), &tenant("tenant", spec)).await.expect("initial spec accepted");
        let patched =
            tenants.patch("tenant", &PatchParams::default(), &Patch::Merge(json!({ "spec": change }))).await;
        let message = assert_invalid(patched, &field, &why);
        eprintln!("rejected as expected: {message}");
    })
    .await;
}

#[tokio::test]
async fn rejects_patch_downgrade() {
    assert_update_rejected(
        "patch-downgrade",
        json!({ "version": "1.34.2" }),
        json!({ "version": "1.34.1" }),
        "spec.version",
        "cannot be lowered",
    )
    .await;
}

#[tokio::test]
async fn rejects_minor_downgrade() {
    assert_update_rejected(
        "minor-downgrade",
        json!({ "version": "1.34.0" }),
        json!({ "version": "1.33.9" }),
        "spec.version",
        "cannot be lowered",
    )
    .await;
}

#[tokio::test]
async fn rejects_skipped_minor_upgrade() {
    assert_update_rejected(
        "skip-minor",
        json!({ "version": "1.33.4" }),
        json!({ "version": "1.35.0" }),
        "spec.version",
        "one minor version at a time",
    )
    .await;
}

#[tokio::test]
async fn rejects_service_cidr_change() {
    assert_update_rejected(
        "service-cidr",
        json!({ "version": "1.34.2" }),
        json!({ "network": { "serviceCIDR": "10.100.0.0/16" } }),
        "spec.network.serviceCIDR",
        "is immutable",
    )
    .await;
}

#[tokio::test]
async fn rejects_pod_cidr_change() {
    assert_update_rejected(
        "pod-cidr",
        json!({ "version": "1.34.2" }),
        json!({ "network": { "podCIDR": "10.200.0.0/16" } }),
        "spec.network.podCIDR",
        "is immutable",
    )
    .await;
}

#[tokio::test]
async fn rejects_cluster_domain_change() {
    assert_update_rejected(
        "cluster-domain",
        json!({ "version": "1.34.2" }),
        json!({ "network": { "clusterDomain": "tenant.internal" } }),
        "spec.network.clusterDomain",
        "is immutable",
    )
    .await;
}

#[tokio::test]
async fn rejects_setting_storage_class_later() {
    assert_update_rejected(
        "set-storage-class",
        json!({ "version": "1.34.2" }),
        json!({ "etcd": { "storage": { "storageClassName": "fast" } } }),
        "spec.etcd.storage.storageClassName",
        "is immutable",
    )
    .await;
}

#[tokio::test]
async fn rejects_removing_storage_class() {
    assert_update_rejected(
        "drop-storage-class",
        json!({ "version": "1.34.2", "etcd": { "storage": { "storageClassName": "fast" } } }),
        json!({ "etcd": { "storage": { "storageClassName": null } } }),
        "spec.etcd.storage.storageClassName",
        "is immutable",
    )
    .await;
}

#[tokio::test]
async fn rejects_switching_etcd_to_ephemeral() {
    assert_update_rejected(
        "ephemeral",
        json!({ "version": "1.34.2" }),
        json!({ "etcd": { "storage": { "ephemeral": true } } }),
        "spec.etcd.storage.ephemeral",
        "is immutable",
    )
    .await;
}

#[tokio::test]
async fn accepts_patch_and_next_minor_upgrades_and_mutable_changes() {
    in_namespace("upgrades", |tenants| async move {
        let params = PatchParams::default();
        tenants
            .create(&PostParams::default(), &tenant("tenant", json!({ "version": "1.33.4" })))
            .await
            .expect("initial spec accepted");
        for (step, change) in [
            ("patch upgrade", json!({ "version": "1.33.5" })),
            ("minor upgrade", json!({ "version": "1.34.0" })),
            ("patch upgrade across a minor", json!({ "version": "1.34.2" })),
            ("same version", json!({ "version": "1.34.2" })),
            ("scale", json!({ "etcd": { "replicas": 5 }, "apiServer": { "replicas": 3 } })),
            ("pause", json!({ "paused": true })),
            (
                "certificate lifetimes",
                json!({ "pki": { "certificateValidity": "720h", "renewBefore": "240h" } }),
            ),
        ] {
            tenants
                .patch("tenant", &params, &Patch::Merge(json!({ "spec": change })))
                .await
                .unwrap_or_else(|error| panic!("{step} refused: {error}"));
        }
        let stored = tenants.get("tenant").await.expect("read back");
        let spec: TenantClusterSpec =
            serde_json::from_value(stored.data["spec"].clone()).expect("stored spec deserializes");
        assert_eq!(
            (spec.version.as_str(), spec.etcd.replicas, spec.api_server.replicas, spec.paused),
            ("1.34.2", 5, 3, true)
        );
    })
    .await;
}

#[tokio::test]
async fn rejects_a_restore_added_after_creation() {
    assert_update_rejected(
        "restore-added",
        json!({ "version": "1.34.2" }),
        json!({ "restore": { "from": { "destination": { "volume": { "claimName": "old-backup" } }, "key": "ns/old/old-1" } } }),
        "spec.restore",
        "is immutable",
    )
    .await;
}

#[tokio::test]
async fn rejects_a_restore_key_change() {
    assert_update_rejected(
        "restore-key",
        json!({ "version": "1.34.2", "restore": { "from": { "destination": { "volume": {} }, "key": "ns/old/old-1" } } }),
        json!({ "restore": { "from": { "destination": { "volume": {} }, "key": "ns/old/old-2" } } }),
        "spec.restore",
        "is immutable",
    )
    .await;
}
