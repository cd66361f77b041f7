//! The operator against the real meta cluster: what a TenantCluster becomes, how drift is
//! repaired, what deletion leaves behind, how a crash mid-reconcile is survived, that a
//! steady tenant costs no writes, and that a lost CA is reported rather than regenerated.
//!
//! Each test starts the `nestor` binary as a child process watching a namespace of its
//! own; the tests take a shared lock and run one at a time (see `support`). They need the meta cluster (`KUBECONFIG`, or the local meta cluster's
//! admin kubeconfig) and fail, rather than skip, without it. Operator logs go to files
//! under Cargo's target tmp dir; a failing test prints the path and the last lines.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use nestor::api::{Phase, TenantCluster};
use nestor::names::{TENANT_LABEL, TenantNames};
use serde_json::{Value, json};
use support::{
    AuditMark, MAX_WAIT, ObjectKey, Operator, TestNamespace, authenticated_username, expected_objects,
    in_namespace, runnable_spec, wait_for,
};
use x509_parser::certificate::X509Certificate;

/// Name of the TenantCluster in every test (each test has its own namespace).
const TENANT: &str = "team-a";
/// Field manager of the tests' hand edits.
const HAND_EDIT_MANAGER: &str = "nestor-test-hand-edit";

#[tokio::test]
async fn create_builds_every_owned_object_with_owner_references_and_labels() {
    in_namespace("create", async |ns| {
        let _operator = Operator::start(&ns.name, "create").await;
        let tenant = ns.create_tenant(TENANT, runnable_spec()).await;
        let names = ns.names(TENANT);
        let expected = expected_objects(&names);

        let objects = ns.wait_for_objects(TENANT, &expected).await;
        assert_eq!(
            objects.keys().cloned().collect::<BTreeSet<_>>(),
            expected,
            "objects beyond the expected set"
        );
        let uid = tenant.uid().expect("created tenant has a uid");
        for (key, meta) in &objects {
            assert_controlled_by_tenant(key, meta, &uid);
        }

        let tenant = wait_for_complete_status(&ns, TENANT).await;
        let status = tenant.status.as_ref().expect("status");
        assert_eq!(status.observed_generation, tenant.metadata.generation, "observedGeneration");
        assert_eq!(status.kubeconfig_secret_name.as_deref(), Some(names.admin_kubeconfig_secret().as_str()));
        let endpoint = status.endpoint.clone().expect("status.endpoint");

        let secrets = secrets_by_name(&ns, TENANT).await;
        let ca_certificates = assert_ca_secrets_are_immutable_cas(&secrets, &names);
        let earliest_leaf_expiry = assert_leaves_chain_to_their_ca(&secrets, &names, &ca_certificates);

        let expires_at = status.certificates_expire_at.as_ref().expect("status.certificatesExpireAt").0;
        assert!(
            expires_at.as_second() <= earliest_leaf_expiry,
            "certificatesExpireAt {expires_at} is later than the earliest leaf expiry {earliest_leaf_expiry}"
        );
        let in_300_days = jiff::Timestamp::now().as_second() + 300 * 24 * 3600;
        assert!(
            expires_at.as_second() > in_300_days,
            "certificatesExpireAt {expires_at} too early for 8760h"
        );

        let kubeconfig = kubeconfig_of(&secrets[&names.admin_kubeconfig_secret()]);
        assert_eq!(kubeconfig_server(&kubeconfig), endpoint, "admin kubeconfig server vs status.endpoint");
        assert_eq!(
            kubeconfig_ca(&kubeconfig),
            ca_certificates[&names.cluster_ca_secret()],
            "admin kubeconfig trusts the cluster CA"
        );
        let client_certificate = kubeconfig_bytes(&kubeconfig, "users", "user", "client-certificate-data");
        assert_signed_by(&client_certificate, &ca_certificates[&names.cluster_ca_secret()], "admin client");

        assert_printer_columns(&ns, &tenant, &endpoint).await;
    })
    .await;
}

#[tokio::test]
async fn hand_edited_deployment_is_put_back() {
    in_namespace("drift", async |ns| {
        let _operator = Operator::start(&ns.name, "drift").await;
        ns.create_tenant(TENANT, runnable_spec()).await;
        let names = ns.names(TENANT);
        ns.wait_for_objects(TENANT, &expected_objects(&names)).await;
        wait_for_complete_status(&ns, TENANT).await;

        let deployments = ns.api::<Deployment>();
        let original = deployments.get(&names.apiserver()).await.expect("apiserver Deployment");
        let original_replicas = original.spec.as_ref().and_then(|spec| spec.replicas);
        let original_container = apiserver_container(&original);
        let original_args = original_container.args.clone().unwrap_or_default();
        assert_ne!(original_replicas, Some(3), "the edit must change replicas");
        assert!(original_args.len() > 1, "apiserver has arguments to remove: {original_args:?}");
        let removed = original_args[0].clone();

        // Strategic merge: containers merge by name, `args` (no patch strategy) is replaced.
        let edit = json!({
            "spec": {
                "replicas": 3,
                "template": { "spec": { "containers": [
                    { "name": original_container.name, "args": &original_args[1..] },
                ] } },
            },
        });
        let params = PatchParams { field_manager: Some(HAND_EDIT_MANAGER.into()), ..PatchParams::default() };
        let edited = deployments
            .patch(&names.apiserver(), &params, &Patch::Strategic(&edit))
            .await
            .expect("hand edit");
        assert_eq!(edited.spec.as_ref().and_then(|spec| spec.replicas), Some(3), "edit applied");
        assert!(
            !apiserver_container(&edited).args.clone().unwrap_or_default().contains(&removed),
            "edit applied"
        );
        eprintln!("edited: replicas 3, removed {removed}");

        wait_for("the operator to restore replicas and args", MAX_WAIT, async || {
            let live = deployments.get(&names.apiserver()).await.map_err(|error| error.to_string())?;
            let replicas = live.spec.as_ref().and_then(|spec| spec.replicas);
            let args = apiserver_container(&live).args.clone().unwrap_or_default();
            if replicas == original_replicas && args == original_args {
                Ok(())
            } else {
                Err(format!(
                    "replicas {replicas:?} (want {original_replicas:?}), has {removed}: {}",
                    args.contains(&removed)
                ))
            }
        })
        .await;
    })
    .await;
}

#[tokio::test]
async fn deleting_the_tenant_removes_everything_it_owned() {
    in_namespace("delete", async |ns| {
        let _operator = Operator::start(&ns.name, "delete").await;
        create_tenant_with_volume_claim(&ns).await;
        // Delete a tenant that runs: its etcd member holds the claim.
        wait_for_condition(&ns, "EtcdReady").await;
        delete_tenant_and_wait_until_nothing_is_left(&ns).await;
    })
    .await;
}

#[tokio::test]
async fn deleting_a_tenant_right_after_creation_leaves_no_volume_claim() {
    in_namespace("delete-early", async |ns| {
        let _operator = Operator::start(&ns.name, "delete-early").await;
        create_tenant_with_volume_claim(&ns).await;
        // The etcd pod may not even be scheduled yet: nothing protects the claim, and the
        // StatefulSet, while it exists, recreates claims its pods lack.
        delete_tenant_and_wait_until_nothing_is_left(&ns).await;
    })
    .await;
}

#[tokio::test]
async fn restarted_operator_neither_duplicates_nor_regenerates_the_ca() {
    in_namespace("restart", async |ns| {
        let names = ns.names(TENANT);
        let mut first = Operator::start(&ns.name, "restart-first").await;
        ns.create_tenant(TENANT, runnable_spec()).await;

        // Kill as soon as the first Secret shows up: the pass is (most likely) half done.
        let secrets = ns.api::<Secret>();
        let selector = ListParams::default().labels(&names.tenant_selector());
        let mut first_secret = async || {
            let list = secrets.list_metadata(&selector).await.map_err(|error| error.to_string())?;
            if list.items.is_empty() { Err("no Secret yet".to_string()) } else { Ok(()) }
        };
        support::poll("the first Secret", MAX_WAIT, Duration::from_millis(20), &mut first_secret).await;
        first.kill();
        let existing: Vec<String> = secrets
            .list_metadata(&selector)
            .await
            .expect("list Secrets")
            .items
            .iter()
            .map(|secret| secret.name_any())
            .collect();
        eprintln!("killed operator {} with {} Secret(s): {existing:?}", first.pid(), existing.len());
        // The cluster CA is the first object a pass applies, so with any Secret there it
        // is there too: the checks below that it survived the restart always run.
        assert!(
            existing.contains(&names.cluster_ca_secret()),
            "Secrets exist without the cluster CA, which is applied first: {existing:?}"
        );
        let ca_before =
            secrets.get(&names.cluster_ca_secret()).await.expect("the CA Secret existed before the kill");

        let _second = Operator::start(&ns.name, "restart-second").await;
        let expected = expected_objects(&names);
        ns.wait_for_objects(TENANT, &expected).await;
        wait_for_complete_status(&ns, TENANT).await;

        let objects = ns.labelled_objects(TENANT).await.expect("list owned objects");
        assert_eq!(
            objects.keys().cloned().collect::<BTreeSet<_>>(),
            expected,
            "objects beyond the expected set"
        );
        let ca_after = secrets.get(&names.cluster_ca_secret()).await.expect("CA Secret");
        assert_eq!(
            secret_value(&ca_after, "tls.crt"),
            secret_value(&ca_before, "tls.crt"),
            "the CA that existed before the kill was replaced"
        );
        assert_eq!(ca_after.uid(), ca_before.uid(), "the CA Secret was recreated");
        assert_eq!(ca_after.resource_version(), ca_before.resource_version(), "the CA Secret was rewritten");
        let kubeconfig =
            kubeconfig_of(&secrets.get(&names.admin_kubeconfig_secret()).await.expect("kubeconfig"));
        assert_eq!(
            kubeconfig_ca(&kubeconfig),
            secret_value(&ca_after, "tls.crt"),
            "kubeconfig CA vs CA Secret"
        );
        let serving = secrets.get(&names.apiserver_serving_secret()).await.expect("serving Secret");
        assert_signed_by(&secret_value(&serving, "tls.crt"), &secret_value(&ca_after, "tls.crt"), "serving");
    })
    .await;
}

#[tokio::test]
async fn steady_tenant_costs_zero_writes() {
    in_namespace("steady", async |ns| {
        let username = authenticated_username(&ns.client).await;
        let names = ns.names(TENANT);
        let mut first = Operator::start(&ns.name, "steady-first").await;
        ns.create_tenant(TENANT, runnable_spec()).await;
        ns.wait_for_objects(TENANT, &expected_objects(&names)).await;
        wait_for_complete_status(&ns, TENANT).await;
        // Steady means Ready: a component that comes up later flips a condition, and that
        // status write would be legitimate.
        wait_for_condition(&ns, "Ready").await;
        let settled = first.wait_until_quiet(Duration::from_secs(10)).await;
        eprintln!("first operator settled: {}", settled.summary());
        let status_before = ns.tenant(TENANT).await.expect("tenant").status;

        // A fresh operator reconciles every tenant on start: over a complete one it must
        // find nothing to do.
        let audit = AuditMark::now();
        first.kill();
        let second = Operator::start(&ns.name, "steady-second").await;
        let after_start = second.wait_for_reconciles(1.0).await;
        tokio::time::sleep(Duration::from_secs(20)).await;
        let after_window = second.metrics().await.expect("metrics");
        let status_after = ns.tenant(TENANT).await.expect("tenant").status;
        let statuses = format!(
            "status before the restart: {}\nstatus after: {}",
            serde_json::to_string_pretty(&status_before).unwrap_or_default(),
            serde_json::to_string_pretty(&status_after).unwrap_or_default()
        );
        assert!(
            after_window.reconciles() >= 1.0,
            "the restarted operator reconciled: {}",
            after_window.summary()
        );
        assert_eq!(after_start.writes(), 0.0, "{}\n{statuses}", after_start.summary());
        assert_eq!(
            after_window.writes(),
            0.0,
            "writes by the restarted operator: {}\n{statuses}",
            after_window.summary()
        );

        // The scope Lease (see nestor::reconcile::scope) is the operator's, not the
        // tenant's: renewed whatever the number of tenants, like a leader-election Lease.
        let scope_lease = format!("/leases/{}", nestor::reconcile::scope::SCOPE_LEASE_NAME);
        let writes: Vec<_> = audit
            .writes_since(&username, &ns.name)
            .into_iter()
            .filter(|write| !write.uri.contains(&scope_lease))
            .collect();
        assert!(writes.is_empty(), "the audit log shows writes by {username} in {}: {writes:#?}", ns.name);
        assert_eq!(status_after, status_before, "status changed without a write?");
    })
    .await;
}

#[tokio::test]
async fn missing_ca_makes_the_cluster_degraded_without_touching_anything() {
    in_namespace("ca-missing", async |ns| {
        let names = ns.names(TENANT);
        let _operator = Operator::start(&ns.name, "ca-missing").await;
        ns.create_tenant(TENANT, runnable_spec()).await;
        ns.wait_for_objects(TENANT, &expected_objects(&names)).await;
        wait_for_complete_status(&ns, TENANT).await;

        let secrets = ns.api::<Secret>();
        let before = secret_versions(&ns, &names).await;
        secrets.delete(&names.cluster_ca_secret(), &DeleteParams::default()).await.expect("delete CA Secret");

        wait_for("phase Degraded with Ready=False reason CAMissing", MAX_WAIT, async || {
            let tenant = ns.tenant(TENANT).await?;
            let status = tenant.status.unwrap_or_default();
            let ready = status.conditions.iter().find(|condition| condition.type_ == "Ready");
            match ready {
                Some(ready) if status.phase == Some(Phase::Degraded) && ready.reason == "CAMissing" => {
                    assert_eq!(ready.status, "False", "Ready condition: {ready:?}");
                    assert!(
                        ready.message.contains(&names.cluster_ca_secret()),
                        "message names the Secret: {ready:?}"
                    );
                    Ok(())
                }
                _ => Err(format!("phase {:?}, Ready {ready:?}", status.phase)),
            }
        })
        .await;

        for _ in 0..15 {
            let recreated = secrets.get_opt(&names.cluster_ca_secret()).await.expect("read CA Secret");
            assert!(
                recreated.is_none(),
                "the operator created a new CA: {:?}",
                recreated.map(|secret| secret.metadata)
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let mut expected_after = before.clone();
        expected_after.remove(&names.cluster_ca_secret());
        assert_eq!(
            secret_versions(&ns, &names).await,
            expected_after,
            "Secrets changed after the CA went missing"
        );
    })
    .await;
}

#[tokio::test]
async fn invalid_spec_is_reported_not_retried_in_a_storm() {
    in_namespace("invalid", async |ns| {
        let operator = Operator::start(&ns.name, "invalid").await;
        // Admission lets a zero `renewBefore` through (it is shorter than the validity);
        // the operator's own validation refuses it.
        let mut spec = runnable_spec();
        spec["pki"] = json!({ "certificateValidity": "1h", "renewBefore": "0s" });
        ns.create_tenant(TENANT, spec).await;

        let ready = wait_for("Ready=False with reason InvalidSpec", MAX_WAIT, async || {
            let tenant = ns.tenant(TENANT).await?;
            let status = tenant.status.unwrap_or_default();
            match status.conditions.iter().find(|condition| condition.type_ == "Ready") {
                Some(ready) if ready.reason == "InvalidSpec" => Ok(ready.clone()),
                other => Err(format!("phase {:?}, Ready {other:?}", status.phase)),
            }
        })
        .await;
        assert_eq!(ready.status, "False");
        assert!(ready.message.contains("spec.pki.renewBefore"), "message names the field: {}", ready.message);

        let reported = operator.metrics().await.expect("metrics");
        tokio::time::sleep(Duration::from_secs(20)).await;
        let later = operator.metrics().await.expect("metrics");
        assert_eq!(
            later.writes(),
            reported.writes(),
            "writes after the error was reported: {}",
            later.summary()
        );
        assert!(
            later.reconciles() - reported.reconciles() <= 1.0,
            "a permanent error is retried slowly: {} then {}",
            reported.summary(),
            later.summary()
        );
        assert!(
            later.sum("nestor_reconcile_errors_total") >= 1.0,
            "the failure is counted: {}",
            later.summary()
        );
        let owned = ns.labelled_objects(TENANT).await.expect("list owned objects");
        assert!(
            owned.is_empty(),
            "nothing is built from an invalid spec: {:?}",
            owned.keys().collect::<Vec<_>>()
        );
    })
    .await;
}

// --- helpers ---

/// Creates the tenant with persistent etcd storage and waits for every object, its etcd
/// volume claim included, and a complete status.
async fn create_tenant_with_volume_claim(ns: &TestNamespace) {
    let mut spec = runnable_spec();
    spec["etcd"]["storage"] = json!({ "size": "256Mi" });
    ns.create_tenant(TENANT, spec).await;
    let names = ns.names(TENANT);
    let mut expected = expected_objects(&names);
    expected.insert(ObjectKey::new("PersistentVolumeClaim", &format!("data-{}", names.etcd_member_name(0))));
    ns.wait_for_objects(TENANT, &expected).await;
    wait_for_complete_status(ns, TENANT).await;
}

/// Deletes the tenant, then waits until it is gone and nothing labelled with it is left.
async fn delete_tenant_and_wait_until_nothing_is_left(ns: &TestNamespace) {
    let tenants = ns.api::<TenantCluster>();
    eprintln!("deleting the TenantCluster at {}", jiff::Timestamp::now());
    tenants.delete(TENANT, &DeleteParams::default()).await.expect("delete TenantCluster");
    wait_for("the TenantCluster to be gone", MAX_WAIT, async || {
        match tenants.get_opt(TENANT).await.map_err(|error| error.to_string())? {
            None => Ok(()),
            Some(tenant) => Err(format!(
                "still there: finalizers {:?}, phase {:?}",
                tenant.finalizers(),
                tenant.status.as_ref().and_then(|status| status.phase)
            )),
        }
    })
    .await;
    wait_for(&format!("no object labelled {TENANT_LABEL}={TENANT}"), MAX_WAIT, async || {
        let left = ns.labelled_objects(TENANT).await?;
        if left.is_empty() { Ok(()) } else { Err(format!("left: {}", describe(&left))) }
    })
    .await;
}

/// Waits until condition `type_` is True.
async fn wait_for_condition(ns: &TestNamespace, type_: &str) {
    wait_for(&format!("{type_}=True"), MAX_WAIT, async || {
        let status = ns.tenant(TENANT).await?.status.unwrap_or_default();
        match status.conditions.iter().find(|condition| condition.type_ == type_) {
            Some(condition) if condition.status == "True" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
}

/// Kind, name, creation and deletion time, and owners of each object, for failure messages.
fn describe(objects: &BTreeMap<ObjectKey, ObjectMeta>) -> String {
    let described: Vec<String> = objects
        .iter()
        .map(|(key, meta)| {
            let owners: Vec<String> = meta
                .owner_references
                .iter()
                .flatten()
                .map(|owner| format!("{}/{}", owner.kind, owner.name))
                .collect();
            format!(
                "{}/{} created {:?} deleting since {:?} owners {owners:?} finalizers {:?}",
                key.kind,
                key.name,
                meta.creation_timestamp.as_ref().map(|time| time.0.to_string()),
                meta.deletion_timestamp.as_ref().map(|time| time.0.to_string()),
                meta.finalizers
            )
        })
        .collect();
    described.join("; ")
}

/// Waits until the status reports the PKI and the admin kubeconfig ready for the current
/// generation, with endpoint, kubeconfig Secret and certificate expiry filled in.
async fn wait_for_complete_status(ns: &TestNamespace, tenant: &str) -> TenantCluster {
    wait_for("status with PKIReady=True, KubeconfigReady=True and the facts", MAX_WAIT, async || {
        let tenant = ns.tenant(tenant).await?;
        let status = tenant.status.clone().unwrap_or_default();
        let is_true = |type_: &str| {
            status.conditions.iter().any(|condition| condition.type_ == type_ && condition.status == "True")
        };
        let complete = is_true("PKIReady")
            && is_true("KubeconfigReady")
            && status.observed_generation == tenant.metadata.generation
            && status.endpoint.is_some()
            && status.kubeconfig_secret_name.is_some()
            && status.certificates_expire_at.is_some();
        if complete {
            Ok(tenant)
        } else {
            Err(format!("generation {:?}, status {status:?}", tenant.metadata.generation))
        }
    })
    .await
}

/// Asserts one controller owner reference, to the TenantCluster with `uid`, and the tenant label.
#[track_caller]
fn assert_controlled_by_tenant(key: &ObjectKey, meta: &ObjectMeta, uid: &str) {
    let owners = meta.owner_references.as_deref().unwrap_or_default();
    assert_eq!(owners.len(), 1, "{key:?} owner references: {owners:?}");
    let owner = &owners[0];
    assert_eq!(owner.controller, Some(true), "{key:?} owner is not the controller: {owner:?}");
    assert_eq!(
        (owner.api_version.as_str(), owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
        ("nestor.dev/v1alpha1", "TenantCluster", TENANT, uid),
        "{key:?} owner reference"
    );
    let label = meta.labels.as_ref().and_then(|labels| labels.get(TENANT_LABEL));
    assert_eq!(label.map(String::as_str), Some(TENANT), "{key:?} label {TENANT_LABEL}");
}

/// The tenant's Secrets by name.
async fn secrets_by_name(ns: &TestNamespace, tenant: &str) -> BTreeMap<String, Secret> {
    let selector = ListParams::default().labels(&format!("{TENANT_LABEL}={tenant}"));
    let list = ns.api::<Secret>().list(&selector).await.expect("list Secrets");
    list.into_iter().map(|secret| (secret.name_any(), secret)).collect()
}

/// resourceVersion of each of the tenant's Secrets, by name.
async fn secret_versions(ns: &TestNamespace, names: &TenantNames) -> BTreeMap<String, String> {
    secrets_by_name(ns, &names.tenant)
        .await
        .into_iter()
        .map(|(name, secret)| (name, secret.resource_version().unwrap_or_default()))
        .collect()
}

/// Value `key` of `secret`, decoded.
#[track_caller]
fn secret_value(secret: &Secret, key: &str) -> Vec<u8> {
    secret
        .data
        .as_ref()
        .and_then(|data| data.get(key))
        .map(|value| value.0.clone())
        .unwrap_or_else(|| panic!("Secret {} has no {key}", secret.name_any()))
}

/// Checks the three CA Secrets: immutable, a CA certificate with its key. Returns each
/// one's certificate PEM by Secret name.
fn assert_ca_secrets_are_immutable_cas(
    secrets: &BTreeMap<String, Secret>,
    names: &TenantNames,
) -> BTreeMap<String, Vec<u8>> {
    [names.cluster_ca_secret(), names.front_proxy_ca_secret(), names.etcd_ca_secret()]
        .into_iter()
        .map(|name| {
            let secret = &secrets[&name];
            assert_eq!(secret.immutable, Some(true), "CA Secret {name} must be immutable");
            assert!(!secret_value(secret, "tls.key").is_empty(), "{name} holds the CA key");
            let pem = secret_value(secret, "tls.crt");
            with_certificate(&pem, &name, |certificate| {
                assert!(certificate.is_ca(), "{name} holds a CA certificate");
                assert_eq!(certificate.subject(), certificate.issuer(), "{name} is self-signed");
            });
            (name, pem)
        })
        .collect()
}

/// Checks every leaf TLS Secret: its `ca.crt` is the CA it belongs to and its `tls.crt`
/// carries that CA's signature. Returns the earliest `notAfter` (Unix seconds).
fn assert_leaves_chain_to_their_ca(
    secrets: &BTreeMap<String, Secret>,
    names: &TenantNames,
    ca_certificates: &BTreeMap<String, Vec<u8>>,
) -> i64 {
    let leaves = [
        (names.apiserver_serving_secret(), names.cluster_ca_secret()),
        (names.apiserver_kubelet_client_secret(), names.cluster_ca_secret()),
        (names.apiserver_etcd_client_secret(), names.etcd_ca_secret()),
        (names.front_proxy_client_secret(), names.front_proxy_ca_secret()),
        (names.konnectivity_server_serving_secret(), names.cluster_ca_secret()),
        (names.konnectivity_server_client_secret(), names.cluster_ca_secret()),
        (names.etcd_server_secret(), names.etcd_ca_secret()),
        (names.etcd_peer_secret(), names.etcd_ca_secret()),
        (names.etcd_healthcheck_client_secret(), names.etcd_ca_secret()),
    ];
    // Every Secret with a ca.crt is one of the leaves above: none escapes the check.
    let with_ca: BTreeSet<&String> = secrets
        .iter()
        .filter(|(_, secret)| secret.data.as_ref().is_some_and(|data| data.contains_key("ca.crt")))
        .map(|(name, _)| name)
        .collect();
    assert_eq!(with_ca, leaves.iter().map(|(leaf, _)| leaf).collect(), "Secrets carrying a ca.crt");

    let mut earliest = i64::MAX;
    for (leaf, ca) in &leaves {
        let secret = &secrets[leaf];
        assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"), "{leaf} type");
        assert_eq!(&secret_value(secret, "ca.crt"), &ca_certificates[ca], "{leaf} ca.crt is {ca}");
        let certificate = secret_value(secret, "tls.crt");
        assert_signed_by(&certificate, &ca_certificates[ca], leaf);
        with_certificate(&certificate, leaf, |parsed| {
            assert!(!parsed.is_ca(), "{leaf} is a leaf");
            earliest = earliest.min(parsed.validity().not_after.timestamp());
        });
    }
    earliest
}

/// Parses a PEM certificate and hands it to `check`.
#[track_caller]
fn with_certificate<T>(pem: &[u8], what: &str, check: impl FnOnce(&X509Certificate<'_>) -> T) -> T {
    let (_, pem) =
        x509_parser::pem::parse_x509_pem(pem).unwrap_or_else(|error| panic!("{what}: not PEM: {error}"));
    let certificate = pem.parse_x509().unwrap_or_else(|error| panic!("{what}: not X.509: {error}"));
    check(&certificate)
}

/// Asserts that `certificate_pem` carries a valid signature by the key of `ca_pem`.
#[track_caller]
fn assert_signed_by(certificate_pem: &[u8], ca_pem: &[u8], what: &str) {
    with_certificate(ca_pem, "CA", |ca| {
        with_certificate(certificate_pem, what, |certificate| {
            assert_eq!(certificate.issuer(), ca.subject(), "{what} issuer");
            certificate
                .verify_signature(Some(ca.public_key()))
                .unwrap_or_else(|error| panic!("{what} is not signed by its CA: {error}"));
        })
    })
}

/// The kubeconfig document in `secret`'s `value`, parsed.
#[track_caller]
fn kubeconfig_of(secret: &Secret) -> Value {
    let yaml = secret_value(secret, "value");
    serde_yaml_ng::from_slice(&yaml)
        .unwrap_or_else(|error| panic!("{} is not YAML: {error}", secret.name_any()))
}

#[track_caller]
fn kubeconfig_server(kubeconfig: &Value) -> String {
    kubeconfig["clusters"][0]["cluster"]["server"].as_str().expect("clusters[0].cluster.server").to_string()
}

#[track_caller]
fn kubeconfig_ca(kubeconfig: &Value) -> Vec<u8> {
    kubeconfig_bytes(kubeconfig, "clusters", "cluster", "certificate-authority-data")
}

/// A base64 `field` of the first entry of `list` (`clusters`/`users`).
#[track_caller]
fn kubeconfig_bytes(kubeconfig: &Value, list: &str, entry: &str, field: &str) -> Vec<u8> {
    let encoded =
        kubeconfig[list][0][entry][field].as_str().unwrap_or_else(|| panic!("no {list}[0].{entry}.{field}"));
    BASE64.decode(encoded).unwrap_or_else(|error| panic!("{field} is not base64: {error}"))
}

/// The kube-apiserver container of the apiserver Deployment.
#[track_caller]
fn apiserver_container(deployment: &Deployment) -> &k8s_openapi::api::core::v1::Container {
    let containers =
        &deployment.spec.as_ref().and_then(|spec| spec.template.spec.as_ref()).expect("pod spec").containers;
    containers.iter().find(|container| container.name == "kube-apiserver").unwrap_or(&containers[0])
}

/// `kubectl get tc` columns: declared in the served CRD, and filled in by the apiserver's
/// Table output (what kubectl prints).
async fn assert_printer_columns(ns: &TestNamespace, tenant: &TenantCluster, endpoint: &str) {
    let crds: Api<CustomResourceDefinition> = Api::all(ns.client.clone());
    let crd = crds.get("tenantclusters.nestor.dev").await.expect("served CRD");
    let version = crd.spec.versions.iter().find(|version| version.name == "v1alpha1").expect("v1alpha1");
    let columns: Vec<(&str, &str)> = version
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|column| (column.name.as_str(), column.json_path.as_str()))
        .collect();
    assert_eq!(
        columns,
        [
            ("Version", ".spec.version"),
            ("Phase", ".status.phase"),
            ("Endpoint", ".status.endpoint"),
            ("Age", ".metadata.creationTimestamp")
        ]
    );

    let path = format!("/apis/nestor.dev/v1alpha1/namespaces/{}/tenantclusters", ns.name);
    let mut request = kube::core::Request::new(path).list(&ListParams::default()).expect("list request");
    request
        .headers_mut()
        .insert("accept", "application/json;as=Table;v=v1;g=meta.k8s.io".parse().expect("header value"));
    let table: Value = ns.client.request(request).await.expect("TenantCluster Table");
    assert_eq!(table["kind"], "Table", "{table}");
    let headers: Vec<&str> = table["columnDefinitions"]
        .as_array()
        .expect("columns")
        .iter()
        .filter_map(|column| column["name"].as_str())
        .collect();
    assert_eq!(headers, ["Name", "Version", "Phase", "Endpoint", "Age"]);
    let rows = table["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 1, "{table}");
    let cells = rows[0]["cells"].as_array().expect("cells");
    let phase = tenant.status.as_ref().and_then(|status| status.phase).expect("status.phase");
    assert_eq!(cells[0], TENANT);
    assert_eq!(cells[1], "1.34.2");
    // The phase may move on (Provisioning → Ready) between the two reads.
    let shown_phase = cells[2].as_str().expect("phase cell");
    assert!(
        ["Provisioning", "Ready", "Degraded"].contains(&shown_phase),
        "phase cell {shown_phase:?} (status said {phase:?})"
    );
    assert_eq!(cells[3], endpoint);
    assert!(cells[4].as_str().is_some_and(|age| !age.is_empty()), "age cell {}", cells[4]);
}

/// The apply stage's guard against stale snapshots: key material the pass loaded from
/// the cluster is updated in place but never brought back once someone deleted it (the
/// next pass then reports CAMissing). Checked against the real apiserver.
#[tokio::test]
async fn loaded_key_material_is_updated_but_never_recreated() {
    use nestor::metrics::Metrics;
    use nestor::reconcile::apply::{ApplyOutcome, Existing, apply};

    in_namespace("existing-only", async |ns| {
        let secret: Secret = serde_json::from_value(json!({
            "metadata": { "name": "key-material", "namespace": ns.name },
            "stringData": { "tls.key": "not really a key" },
        }))
        .expect("Secret");
        let metrics = Metrics::new();
        let outcome = apply(&ns.client, &secret, Existing::Only, &metrics).await.expect("apply");
        assert_eq!(outcome, ApplyOutcome::Missing);
        assert!(ns.secret("key-material").await.expect("read").is_none(), "nothing was created");

        let outcome = apply(&ns.client, &secret, Existing::OrCreate, &metrics).await.expect("apply");
        assert_eq!(outcome, ApplyOutcome::Applied);
        let mut relabelled = secret.clone();
        relabelled.metadata.labels = Some([("team".to_string(), "a".to_string())].into());
        let outcome = apply(&ns.client, &relabelled, Existing::Only, &metrics).await.expect("apply");
        assert_eq!(outcome, ApplyOutcome::Applied, "an existing object is still updated");
        let stored = ns.secret("key-material").await.expect("read").expect("exists");
        assert_eq!(stored.labels().get("team").map(String::as_str), Some("a"));
    })
    .await;
}

/// Two operators whose scopes overlap (one watching every namespace, one watching only the
/// test's) must not take turns rewriting the tenant: the narrower one reconciles it, the
/// wide one says so once and leaves it alone, and takes it back once the narrow one is gone.
#[tokio::test]
async fn overlapping_operators_leave_a_tenant_to_the_narrower_one() {
    use k8s_openapi::api::events::v1::Event;
    use nestor::reconcile::scope::SCOPE_LEASE_DURATION;

    in_namespace("overlap", async |ns| {
        let started = std::time::Instant::now();
        let mut narrow = Operator::start(&ns.name, "overlap-narrow").await;
        ns.create_tenant(TENANT, runnable_spec()).await;
        let names = ns.names(TENANT);
        ns.wait_for_objects(TENANT, &expected_objects(&names)).await;
        wait_for_complete_status(&ns, TENANT).await;
        narrow.wait_until_quiet(Duration::from_secs(5)).await;
        let before = resource_versions(&ns).await;
        eprintln!("narrow operator settled the tenant after {:?}", started.elapsed());

        let wide = Operator::start_watching_every_namespace("overlap-wide").await;
        let events = ns.api::<Event>();
        let deferrals = async || -> Result<usize, String> {
            let list = events.list(&ListParams::default()).await.map_err(|error| error.to_string())?;
            Ok(list
                .items
                .iter()
                .filter(|event| event.reason.as_deref() == Some("ReconciledElsewhere"))
                .count())
        };
        wait_for("the wide operator to say it leaves the tenant alone", MAX_WAIT, async || match deferrals()
            .await?
        {
            0 => Err(format!("no ReconciledElsewhere Event yet; {}", wide.metrics().await?.summary())),
            _ => Ok(()),
        })
        .await;
        let deferred_at = started.elapsed();
        // Long enough for the wide operator's passes, probes and requeues to come round.
        tokio::time::sleep(SCOPE_LEASE_DURATION + Duration::from_secs(5)).await;
        assert_eq!(resource_versions(&ns).await, before, "no owned object was rewritten while both ran");
        assert_eq!(deferrals().await.expect("events"), 1, "said once, not once per pass");
        let metrics = wide.metrics().await.expect("wide operator metrics");
        assert!(metrics.sum("nestor_tenants_deferred") >= 1.0, "{}", metrics.summary());
        eprintln!("wide operator deferred at {deferred_at:?}, nothing rewritten since");

        // The narrow operator dies without a word: its Lease goes stale and the wide one
        // takes the tenant back, which shows as drift repair.
        narrow.kill();
        let killed_at = std::time::Instant::now();
        let deployments = ns.api::<Deployment>();
        deployments
            .delete(&names.controller_manager(), &DeleteParams::default())
            .await
            .expect("delete the controller-manager Deployment");
        wait_for(
            "the wide operator to take the tenant back and recreate the Deployment",
            MAX_WAIT,
            async || match deployments
                .get_opt(&names.controller_manager())
                .await
                .map_err(|error| error.to_string())?
            {
                Some(deployment) if deployment.metadata.deletion_timestamp.is_none() => Ok(()),
                _ => Err(wide.log_tail()),
            },
        )
        .await;
        eprintln!(
            "wide operator took the tenant back {:?} after the narrow one was killed",
            killed_at.elapsed()
        );
    })
    .await;
}

/// Every owned object of the test's tenant by kind and name, with what moves when its
/// content is written: the generation of objects that have one (workloads, whose status
/// moves on its own), else the resourceVersion.
async fn resource_versions(ns: &TestNamespace) -> BTreeMap<String, String> {
    ns.labelled_objects(TENANT)
        .await
        .expect("owned objects")
        .into_iter()
        .map(|(key, meta)| {
            let version = match meta.generation {
                Some(generation) => format!("generation {generation}"),
                None => format!("resourceVersion {}", meta.resource_version.unwrap_or_default()),
            };
            (format!("{key:?}"), version)
        })
        .collect()
}
