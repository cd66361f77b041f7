//! Scheduled backups and restore (issue 15 §2 and §3) against the real meta cluster.
//!
//! - a volume destination: `nestor backup` takes snapshots (a Job from the tenant's
//!   CronJob, the operator's own image running `nestor backup-agent`), the operator
//!   records `status.lastBackup` and `BackupReady` from the finished Job's pod, retention
//!   deletes the oldest; the TenantCluster is deleted (the backup claim and the PKI copy
//!   stay), restored under the same name with `nestor restore`: the objects are there,
//!   a Secret stored encrypted reads back, and the admin kubeconfig issued before the
//!   backup still works. A snapshot corrupted in the store is then refused by a second
//!   restore before any etcd member starts (`Restored` False, `RestoreFailed`). Prints
//!   the time of each step.
//! - an unreachable bucket: `BackupReady` False with reason `StoreUnreachable`, the
//!   tenant stays Ready.
//! - an S3 bucket (the local S3 server of hack/s3-up.sh, `/run/nestor-meta/s3.env`):
//!   backup, listing and restore; skipped with a loud message when that server is not
//!   set up.
//!
//! Needs the local meta cluster, the nestor.local images and the operator image, which
//! the test builds from its own binary with hack/build-operator-image.sh (it bundles
//! etcdutl from the upstream build).

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use nestor::api::TenantCluster;
use nestor::names::{COMPONENT_LABEL, TENANT_LABEL};
use serde_json::{Value, json};
use support::worker::{busybox_image, repo_root};
use support::{
    MAX_WAIT, Operator, TestNamespace, condition_message, describe_tenant, find_condition, in_namespace,
    is_ready, run_nestor, runnable_spec, wait_for,
};

const TENANT: &str = "team-b";
/// Never fires during a test: backups are taken with `nestor backup`.
const RARE_SCHEDULE: &str = "0 0 1 1 *";

/// Builds and imports the operator image from this test run's binary (a no-op when up to
/// date) and returns its sha-tagged reference: what the backup Jobs and restores run.
fn agent_image() -> String {
    let output = Command::new(repo_root().join("hack/build-operator-image.sh"))
        .env("NESTOR_OPERATOR_BINARY", env!("CARGO_BIN_EXE_nestor"))
        .output()
        .expect("run hack/build-operator-image.sh");
    assert!(
        output.status.success(),
        "build-operator-image.sh failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let reference = stdout.lines().last().expect("an image reference").trim().to_string();
    assert!(reference.starts_with("nestor.local/nestor-operator:sha-"), "unexpected reference {reference:?}");
    reference
}

async fn start_operator(ns: &TestNamespace, label: &str) -> Operator {
    let image = agent_image();
    Operator::start_with(&ns.name, label, &["--agent-image", &image, "--health-interval", "2s"]).await
}

/// Applies our CRD (another checkout's test run may have pruned spec.backup from the
/// shared one), creates the tenant and checks the stored spec kept `field`.
async fn create_tenant(ns: &TestNamespace, name: &str, spec: Value, field: &str) {
    support::install_crd(&ns.client).await;
    ns.create_tenant(name, spec).await;
    let stored = serde_json::to_value(ns.tenant(name).await.expect("the tenant").spec).expect("spec");
    assert!(
        stored.get(field).is_some(),
        "the shared CRD pruned spec.{field} (another checkout's CRD was applied meanwhile): {stored}"
    );
}

fn step(started: Instant, what: &str) {
    eprintln!("[{:>6.1}s] {what}", started.elapsed().as_secs_f64());
}

/// Runs `nestor ARGS -n <namespace>`. Our CRD is applied first: another checkout's test
/// run on the shared meta cluster may have installed its own, without spec.backup and
/// spec.restore, and the apiserver prunes fields its CRD lacks from what it serves.
async fn nestor(ns: &TestNamespace, args: &[&str]) -> support::NestorRun {
    support::install_crd(&ns.client).await;
    run_nestor(&nestor_args(ns, args)).await
}

fn nestor_args<'a>(ns: &'a TestNamespace, args: &[&'a str]) -> Vec<&'a str> {
    let mut all = args.to_vec();
    all.extend(["-n", ns.name.as_str()]);
    all
}

async fn wait_ready(ns: &TestNamespace, name: &str, what: &str) -> TenantCluster {
    ns.wait_for_tenant(name, what, MAX_WAIT, is_ready).await
}

/// `nestor backup`: returns the key it printed.
async fn backup_now(ns: &TestNamespace, name: &str) -> (String, String) {
    let run = nestor(ns, &["backup", name, "--timeout", "4m"]).await;
    let stdout = run.expect_success();
    eprintln!("{}", stdout.trim());
    let key = stdout
        .split_whitespace()
        .nth(1)
        .filter(|_| stdout.starts_with("backup "))
        .unwrap_or_else(|| panic!("no key in {stdout:?}"))
        .to_string();
    (key, stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn back_up_to_a_volume_delete_and_restore_under_the_same_name() {
    in_namespace("backup", async |ns| volume_scenario(&ns).await).await;
}

async fn volume_scenario(ns: &TestNamespace) {
    let started = Instant::now();
    let _operator = start_operator(ns, "backup").await;
    step(started, "operator started (image built and imported)");
    let mut spec = runnable_spec();
    spec["backup"] =
        json!({"schedule": RARE_SCHEDULE, "retain": 2, "destination": {"volume": {"size": "256Mi"}}});
    create_tenant(ns, TENANT, spec, "backup").await;
    let tenant = wait_ready(ns, TENANT, "the tenant Ready").await;
    step(started, "tenant Ready");
    let pending = find_condition(&tenant, "BackupReady").map(|condition| condition.reason.clone());
    assert_eq!(pending.as_deref(), Some("Pending"), "no backup yet: {}", describe_tenant(&tenant));
    let names = ns.names(TENANT);
    for (kind, exists) in [
        (
            "CronJob",
            ns.api::<k8s_openapi::api::batch::v1::CronJob>()
                .get_opt(&names.backup())
                .await
                .expect("read")
                .is_some(),
        ),
        ("PVC", ns.api::<PersistentVolumeClaim>().get_opt(&names.backup()).await.expect("read").is_some()),
    ] {
        assert!(exists, "{kind} {} missing", names.backup());
    }
    let copy = wait_for("the PKI copy", Duration::from_secs(60), async || {
        ns.api::<Secret>()
            .get_opt(&names.pki_backup_secret())
            .await
            .map_err(|e| e.to_string())?
            .ok_or("not yet".to_string())
    })
    .await;
    assert!(copy.metadata.owner_references.is_none(), "the PKI copy must outlive the tenant");
    let copied: Vec<&String> = copy.data.as_ref().map(|data| data.keys().collect()).unwrap_or_default();
    for role in ["cluster-ca.", "front-proxy-ca.", "etcd-ca.", "service-account.", "encryption."] {
        assert!(copied.iter().any(|key| key.starts_with(role)), "the PKI copy lacks {role}*: {copied:?}");
    }

    // Objects, one of them a Secret (stored encrypted in etcd).
    let tenant_client = ns.tenant_client(TENANT).await.expect("tenant client");
    let old_kubeconfig = admin_kubeconfig(ns, TENANT).await;
    KEPT.write(&tenant_client).await;
    step(started, "20 ConfigMaps and a Secret written in the tenant");

    // Three backups with retain 2: the third deletes the first.
    let (first, _) = backup_now(ns, TENANT).await;
    step(started, "first backup taken");
    let recorded = wait_for_last_backup(ns, &first).await;
    step(started, "status.lastBackup recorded");
    let last = recorded.status.as_ref().and_then(|status| status.last_backup.clone()).expect("lastBackup");
    assert!(last.size > 0 && last.revision > 0, "{last:?}");
    assert!(last.location.starts_with(&format!("pvc://{}/", names.backup())), "{}", last.location);
    let ready = find_condition(&recorded, "BackupReady").expect("BackupReady");
    assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("True", "Succeeded"), "{}", ready.message);
    let (second, _) = backup_now(ns, TENANT).await;
    let (third, output) = backup_now(ns, TENANT).await;
    step(started, "second and third backups taken");
    // Written after the last backup: a restore of it must not have it.
    let late: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "after-the-backup"}})).expect("ConfigMap");
    Api::<ConfigMap>::namespaced(tenant_client.clone(), "default")
        .create(&PostParams::default(), &late)
        .await
        .expect("create ConfigMap");
    assert!(output.contains(&format!("deleted by retention (spec.backup.retain): {first}")), "{output}");
    assert!(first < second && second < third);
    let listed = nestor(ns, &["backups", TENANT]).await.expect_success();
    assert!(listed.contains(&third) && listed.contains(&second), "{listed}");

    // Delete the tenant: the claim and the PKI copy stay.
    let saved_path = save_and_delete(ns, TENANT).await;
    step(started, "TenantCluster deleted");
    assert!(
        ns.api::<PersistentVolumeClaim>().get_opt(&names.backup()).await.expect("read").is_some(),
        "backup claim kept"
    );
    assert!(
        ns.api::<Secret>().get_opt(&names.pki_backup_secret()).await.expect("read").is_some(),
        "PKI copy kept"
    );
    assert!(
        ns.api::<Secret>().get_opt(&names.cluster_ca_secret()).await.expect("read").is_none(),
        "the tenant's own CA went"
    );

    // Restore under the same name.
    let restored =
        restore(ns, started, &["restore", TENANT, "--from", &third, "--spec", &saved_path], TENANT).await;
    eprintln!("Restored: {}", condition_message(&restored, "Restored"));
    // The kubeconfig issued before the backup, by the restored cluster's CA.
    let old_client = ns.tenant_client_from(TENANT, &old_kubeconfig).await.expect("old kubeconfig");
    KEPT.read_back(&old_client).await;
    let late = Api::<ConfigMap>::namespaced(old_client.clone(), "default").get_opt("after-the-backup").await;
    assert!(late.expect("read").is_none(), "an object written after the snapshot came back");
    step(started, "20 ConfigMaps and the Secret read back with the old admin kubeconfig");

    // A corrupted snapshot: refused before any member starts.
    corrupt(ns, &names.backup(), &second).await;
    step(started, &format!("snapshot {second} corrupted in the claim"));
    let run = nestor(ns, &["restore", TENANT, "--from", &second, "--as", "team-c"]).await;
    eprintln!("{}", run.expect_success().trim());
    let refused = ns
        .wait_for_tenant("team-c", "the corrupt snapshot refused", Duration::from_secs(180), |tenant| {
            find_condition(tenant, "Restored").is_some_and(|condition| condition.reason == "RestoreFailed")
        })
        .await;
    let message = condition_message(&refused, "Restored");
    step(started, &format!("corrupt snapshot refused: {message}"));
    assert!(
        message.contains("integrity check failed") || message.contains("does not match its metadata"),
        "{message}"
    );
    let etcd = ns.api::<Pod>().get(&ns.names("team-c").etcd_member_name(0)).await.expect("member pod");
    let running = etcd
        .status
        .and_then(|status| status.container_statuses)
        .into_iter()
        .flatten()
        .any(|status| status.name == "etcd" && status.state.is_some_and(|state| state.running.is_some()));
    assert!(!running, "no etcd member may start on a refused snapshot");
}

/// What a scenario writes in the tenant before its backup and reads back after the
/// restore: ConfigMaps `<prefix>NN` and a Secret (stored encrypted in etcd: it reads back
/// only with the old encryption configuration).
struct Objects {
    prefix: &'static str,
    count: usize,
    secret: &'static str,
    value: &'static str,
}

const KEPT: Objects = Objects { prefix: "kept-", count: 20, secret: "kept-secret", value: "hunter2" };
const IN_S3: Objects = Objects { prefix: "in-s3-", count: 10, secret: "s3-secret", value: "in-a-bucket" };
const ON_3_5: Objects = Objects { prefix: "on-3-5-", count: 10, secret: "etcd35-secret", value: "bbolt" };

impl Objects {
    async fn write(&self, client: &kube::Client) {
        let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
        for index in 0..self.count {
            let name = format!("{}{index:02}", self.prefix);
            let object: ConfigMap = serde_json::from_value(
                json!({"metadata": {"name": name}, "data": {"index": index.to_string()}}),
            )
            .expect("ConfigMap");
            configmaps.create(&PostParams::default(), &object).await.expect("create ConfigMap");
        }
        let secret: Secret = serde_json::from_value(
            json!({"metadata": {"name": self.secret}, "stringData": {"value": self.value}}),
        )
        .expect("Secret");
        Api::<Secret>::namespaced(client.clone(), "default")
            .create(&PostParams::default(), &secret)
            .await
            .expect("create Secret");
    }

    /// Every object with its data, through `client` (the restored tenant, with the admin
    /// kubeconfig issued before the backup).
    async fn read_back(&self, client: &kube::Client) {
        let found =
            wait_for("the objects through the old admin kubeconfig", Duration::from_secs(60), async || {
                Api::<ConfigMap>::namespaced(client.clone(), "default")
                    .list(&ListParams::default())
                    .await
                    .map_err(|e| e.to_string())
            })
            .await;
        let kept: BTreeMap<String, String> = found
            .items
            .iter()
            .filter(|object| object.name_any().starts_with(self.prefix))
            .map(|object| {
                let index =
                    object.data.as_ref().and_then(|data| data.get("index")).cloned().unwrap_or_default();
                (object.name_any(), index)
            })
            .collect();
        let expected: BTreeMap<String, String> =
            (0..self.count).map(|index| (format!("{}{index:02}", self.prefix), index.to_string())).collect();
        assert_eq!(kept, expected, "every ConfigMap written before the backup, with its data");
        let secret =
            Api::<Secret>::namespaced(client.clone(), "default").get(self.secret).await.expect("the Secret");
        assert_eq!(
            secret.data.and_then(|data| data.get("value").cloned()).map(|value| value.0),
            Some(self.value.as_bytes().to_vec())
        );
    }
}

/// Waits until the tenant's `status.lastBackup` is snapshot `key`; returns the tenant.
async fn wait_for_last_backup(ns: &TestNamespace, key: &str) -> TenantCluster {
    ns.wait_for_tenant(TENANT, &format!("status.lastBackup {key}"), Duration::from_secs(60), |tenant| {
        tenant
            .status
            .as_ref()
            .and_then(|status| status.last_backup.as_ref())
            .is_some_and(|last| last.key == key)
    })
    .await
}

/// Saves `tenant` as `nestor get -o yaml` prints it (what `nestor restore --spec` takes),
/// deletes it with `nestor delete`, and returns the saved file's path.
async fn save_and_delete(ns: &TestNamespace, tenant: &str) -> String {
    let saved = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{}-{tenant}.yaml", ns.name));
    std::fs::write(&saved, nestor(ns, &["get", tenant, "-o", "yaml"]).await.expect_success())
        .expect("save the spec");
    nestor(ns, &["delete", tenant]).await.expect_success();
    saved.display().to_string()
}

/// Runs `nestor <args>` (a restore) and waits until tenant `restored` is Ready and
/// `Restored`; prints how long that took.
async fn restore(ns: &TestNamespace, started: Instant, args: &[&str], restored: &str) -> TenantCluster {
    eprintln!("{}", nestor(ns, args).await.expect_success().trim());
    let restore_started = Instant::now();
    let tenant = ns
        .wait_for_tenant(restored, "the restored tenant Ready and Restored", MAX_WAIT, |tenant| {
            is_ready(tenant)
                && find_condition(tenant, "Restored").is_some_and(|condition| condition.status == "True")
        })
        .await;
    step(
        started,
        &format!(
            "{restored} restored: Ready {:.1}s after nestor restore",
            restore_started.elapsed().as_secs_f64()
        ),
    );
    tenant
}

async fn admin_kubeconfig(ns: &TestNamespace, tenant: &str) -> String {
    let secret = ns
        .secret(&ns.names(tenant).admin_kubeconfig_secret())
        .await
        .expect("read")
        .expect("admin kubeconfig");
    String::from_utf8(secret.data.expect("data").get("value").expect("value").0.clone()).expect("UTF-8")
}

/// Flips a byte in the middle of snapshot `key` in claim `claim`, with a busybox Job.
async fn corrupt(ns: &TestNamespace, claim: &str, key: &str) {
    let job: Job = serde_json::from_value(json!({
        "metadata": {"name": "corrupt"},
        "spec": {"backoffLimit": 0, "template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "corrupt", "image": busybox_image(), "imagePullPolicy": "IfNotPresent",
                "command": ["sh", "-c", format!("printf 'XXXXXXXX' | dd of='/backup/{key}.db' bs=1 seek=8192 conv=notrunc && sync")],
                "volumeMounts": [{"name": "backup", "mountPath": "/backup"}]}],
            "volumes": [{"name": "backup", "persistentVolumeClaim": {"claimName": claim}}]}}}
    }))
    .expect("job");
    let jobs = ns.api::<Job>();
    jobs.create(&PostParams::default(), &job).await.expect("create the corrupting Job");
    wait_for("the corrupting Job", Duration::from_secs(120), async || {
        let job = jobs.get("corrupt").await.map_err(|e| e.to_string())?;
        match job.status.as_ref().and_then(|status| status.succeeded) {
            Some(1) => Ok(()),
            _ => Err(format!("{:?}", job.status)),
        }
    })
    .await;
    let _ = jobs.delete("corrupt", &DeleteParams::background()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_bucket_turns_backup_ready_false_and_leaves_the_tenant_alone() {
    in_namespace("backup-s3down", async |ns| {
        let started = Instant::now();
        let _operator = start_operator(&ns, "backup-s3down").await;
        let credentials: Secret = serde_json::from_value(json!({
            "metadata": {"name": "s3"}, "stringData": {"accessKeyID": "nobody", "secretAccessKey": "nothing"}
        }))
        .expect("secret");
        ns.api::<Secret>().create(&PostParams::default(), &credentials).await.expect("credentials");
        let mut spec = runnable_spec();
        // Nothing listens on port 9 of the pod itself: refused at once, no packet leaves.
        spec["backup"] = json!({"schedule": RARE_SCHEDULE, "destination": {"s3": {
            "endpoint": "http://127.0.0.1:9", "bucket": "nestor-backups", "credentialsSecret": "s3"}}});
        create_tenant(&ns, TENANT, spec, "backup").await;
        wait_ready(&ns, TENANT, "the tenant Ready").await;
        step(started, "tenant Ready");
        let run = nestor(&ns, &["backup", TENANT, "--timeout", "4m"]).await;
        assert!(!run.status.success(), "a backup to an unreachable bucket must fail: {}", run.stdout);
        eprintln!("{}", run.stderr.trim());
        assert!(run.stderr.contains("StoreUnreachable"), "{}", run.stderr);
        // For the right reason: the agent dialled the endpoint and was refused.
        assert!(run.stderr.to_lowercase().contains("connect"), "not a refused connection: {}", run.stderr);
        let tenant = ns
            .wait_for_tenant(
                TENANT,
                "BackupReady False StoreUnreachable",
                Duration::from_secs(60),
                |tenant| {
                    find_condition(tenant, "BackupReady")
                        .is_some_and(|c| c.status == "False" && c.reason == "StoreUnreachable")
                },
            )
            .await;
        step(started, &format!("BackupReady: {}", condition_message(&tenant, "BackupReady")));
        assert!(is_ready(&tenant), "the tenant stays Ready: {}", describe_tenant(&tenant));
        assert!(tenant.status.as_ref().and_then(|status| status.last_backup.as_ref()).is_none());
    })
    .await;
}

/// The local S3 server's settings (hack/s3-up.sh), if it is set up.
fn s3_settings() -> Option<BTreeMap<String, String>> {
    let text = std::fs::read_to_string("/run/nestor-meta/s3.env").ok()?;
    Some(
        text.lines()
            .filter_map(|line| line.trim().strip_prefix("export ").unwrap_or(line.trim()).split_once('='))
            .map(|(key, value)| (key.to_string(), value.trim_matches('"').trim_matches('\'').to_string()))
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn back_up_three_members_to_s3_list_and_restore_as_another_tenant() {
    s3_test("backup-s3", 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn back_up_five_members_to_s3_and_restore_them() {
    s3_test("backup-s3-5", 5).await;
}

/// [`s3_scenario`] in a namespace of its own, or a loud skip without the local S3 server.
async fn s3_test(tag: &str, members: i32) {
    let Some(s3) = s3_settings() else {
        eprintln!(
            "\n!!!!!!!! SKIPPED: /run/nestor-meta/s3.env is missing: start the local S3 server with hack/s3-up.sh !!!!!!!!\n"
        );
        return;
    };
    in_namespace(tag, async |ns| s3_scenario(&ns, &s3, members).await).await;
}

/// The local S3 server (`s3`: hack/s3-up.sh's settings) as `spec.backup.destination`, under
/// `prefix`; creates the credentials Secret `s3` it names in the test namespace.
async fn s3_destination(ns: &TestNamespace, s3: &BTreeMap<String, String>, prefix: &str) -> Value {
    let get = |key: &str| s3.get(key).cloned().unwrap_or_else(|| panic!("{key} missing from s3.env"));
    let credentials: Secret = serde_json::from_value(json!({
        "metadata": {"name": "s3"},
        "stringData": {"accessKeyID": get("NESTOR_S3_ACCESS_KEY"), "secretAccessKey": get("NESTOR_S3_SECRET_KEY")}
    }))
    .expect("secret");
    ns.api::<Secret>().create(&PostParams::default(), &credentials).await.expect("credentials");
    json!({"s3": {
        "endpoint": get("NESTOR_S3_ENDPOINT"), "bucket": get("NESTOR_S3_BUCKET"),
        "region": s3.get("NESTOR_S3_REGION").cloned().unwrap_or_else(|| "us-east-1".into()),
        "prefix": prefix, "credentialsSecret": "s3"}})
}

/// An S3 destination and `members` etcd members: back up, list, delete the tenant,
/// restore it under another name with as many members.
async fn s3_scenario(ns: &TestNamespace, s3: &BTreeMap<String, String>, members: i32) {
    let started = Instant::now();
    let _operator = start_operator(ns, "backup-s3").await;
    step(started, "operator started (image built and imported)");
    let get = |key: &str| s3.get(key).cloned().unwrap_or_else(|| panic!("{key} missing from s3.env"));
    let mut spec = runnable_spec();
    spec["etcd"]["replicas"] = json!(members);
    let prefix = format!("tests/{}", ns.name);
    spec["backup"] = json!({"schedule": RARE_SCHEDULE, "retain": 3,
        "destination": s3_destination(ns, s3, &prefix).await});
    create_tenant(ns, TENANT, spec, "backup").await;
    let source = wait_ready(ns, TENANT, "the tenant Ready").await;
    step(started, &format!("tenant Ready with {members} etcd members"));
    let source_cluster_id =
        source.status.as_ref().and_then(|status| status.etcd_cluster_id.clone()).expect("etcdClusterId");
    let old_kubeconfig = admin_kubeconfig(ns, TENANT).await;
    let tenant_client = ns.tenant_client(TENANT).await.expect("tenant client");
    IN_S3.write(&tenant_client).await;
    step(started, "10 ConfigMaps and a Secret written in the tenant");

    let (key, _) = backup_now(ns, TENANT).await;
    step(started, "backup to S3 taken");
    assert!(key.starts_with(&format!("{prefix}/{TENANT}-")), "{key}");
    let listed = nestor(ns, &["backups", TENANT]).await.expect_success();
    eprintln!("{}", listed.trim());
    let line = listed
        .lines()
        .find(|line| line.starts_with(&key))
        .unwrap_or_else(|| panic!("{key} not listed: {listed}"));
    assert!(!line.contains("incomplete"), "the metadata must be stored: {line}");
    step(started, "nestor backups lists it from the bucket");
    let recorded = wait_for_last_backup(ns, &key).await;
    let last = recorded.status.and_then(|status| status.last_backup).expect("lastBackup");
    assert_eq!(last.location, format!("s3://{}/{key}.db", get("NESTOR_S3_BUCKET")));

    let saved_path = save_and_delete(ns, TENANT).await;
    step(started, "TenantCluster deleted");
    restore(
        ns,
        started,
        &["restore", TENANT, "--from", &key, "--as", "team-s3", "--spec", &saved_path],
        "team-s3",
    )
    .await;
    support::install_crd(&ns.client).await;
    let restored = ns.tenant("team-s3").await.expect("the restored tenant");
    let status = restored.status.as_ref().expect("status");
    assert_ne!(
        status.etcd_cluster_id.as_deref(),
        Some(source_cluster_id.as_str()),
        "a restore forms a new etcd cluster"
    );
    let restored_spec = restored.spec.restore.as_ref().expect("spec.restore");
    assert_eq!(restored_spec.from.key, key);
    assert!(restored_spec.from.destination.s3.is_some(), "restored from the bucket");
    assert_eq!(
        restored
            .spec
            .backup
            .as_ref()
            .and_then(|backup| backup.destination.s3.as_ref())
            .and_then(|s3| s3.prefix.clone()),
        None,
        "team-s3 backs up under its own prefix, not over {TENANT}'s snapshots"
    );
    let members_ready = wait_for("every restored etcd member Ready", Duration::from_secs(120), async || {
        let pods = ns
            .api::<Pod>()
            .list(&ListParams::default().labels(&format!("{TENANT_LABEL}=team-s3,{COMPONENT_LABEL}=etcd")))
            .await
            .map_err(|e| e.to_string())?;
        let ready = pods.items.iter().filter(|pod| pod_ready(pod)).count();
        if ready == members as usize { Ok(ready) } else { Err(format!("{ready} of {members} Ready")) }
    })
    .await;
    assert_eq!(members_ready, members as usize);

    let old_client = ns.tenant_client_from("team-s3", &old_kubeconfig).await.expect("old kubeconfig");
    IN_S3.read_back(&old_client).await;
    step(
        started,
        &format!("{members}-member restore: objects and the Secret read back with the old admin kubeconfig"),
    );
}

/// The etcd the operator pairs with Kubernetes 1.30 to 1.33 is 3.5 (resources/etcd.rs), and
/// the operator image bundles one etcdutl, 3.6.5: a 3.5 member's snapshot is restored by the
/// 3.6 tool and then served by 3.5 members. hack/build-peer.sh builds those images
/// (PEER_KUBERNETES_VERSION with PEER_ETCD_VERSION, for the peer benchmark); `make test`
/// does not build them (about 9 minutes cold), so this test runs where they were built and
/// says loudly that it skipped otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etcd_3_5_tenant_is_restored_with_the_bundled_etcdutl() {
    let kubernetes = support::worker::hack_variable("versions.env", "PEER_KUBERNETES_VERSION");
    let etcd = support::worker::hack_variable("versions.env", "PEER_ETCD_VERSION");
    let images = support::worker::nestor_cache().join("images");
    let archives = [
        format!("etcd-{}-0.oci.tar", etcd.trim_start_matches('v')),
        format!("kube-apiserver-{kubernetes}.oci.tar"),
        format!("kube-controller-manager-{kubernetes}.oci.tar"),
        format!("kube-scheduler-{kubernetes}.oci.tar"),
    ];
    if let Some(missing) = archives.iter().find(|archive| !images.join(archive).is_file()) {
        eprintln!(
            "\n!!!!!!!! SKIPPED: {} is not built (hack/build-peer.sh builds Kubernetes {kubernetes} and etcd {etcd}) !!!!!!!!\n",
            images.join(missing).display()
        );
        return;
    }
    let version = kubernetes.trim_start_matches('v').to_string();
    let etcd_tag = format!(":{}-0", etcd.trim_start_matches('v'));
    in_namespace("backup-etcd35", async |ns| etcd_3_5_scenario(&ns, &version, &etcd_tag).await).await;
}

/// `etcd_tag`: the image tag suffix of the 3.5 etcd (`:3.5.21-0`).
async fn etcd_3_5_scenario(ns: &TestNamespace, version: &str, etcd_tag: &str) {
    let started = Instant::now();
    let _operator = start_operator(ns, "backup-etcd35").await;
    step(started, "operator started (image built and imported)");
    let mut spec = runnable_spec();
    spec["version"] = json!(version);
    spec["etcd"]["replicas"] = json!(3);
    spec["backup"] =
        json!({"schedule": RARE_SCHEDULE, "retain": 2, "destination": {"volume": {"size": "256Mi"}}});
    create_tenant(ns, TENANT, spec, "backup").await;
    wait_ready(ns, TENANT, "the 3.5 tenant Ready").await;
    step(started, &format!("tenant Ready at Kubernetes {version}, 3 etcd members"));
    let etcd_images = |tenant: &str| {
        let selector = format!("{TENANT_LABEL}={tenant},{COMPONENT_LABEL}=etcd");
        async move {
            ns.api::<Pod>()
                .list(&ListParams::default().labels(&selector))
                .await
                .expect("list etcd pods")
                .items
                .iter()
                .flat_map(|pod| pod.spec.iter().flat_map(|spec| spec.containers.iter()))
                .filter(|container| container.name == "etcd")
                .filter_map(|container| container.image.clone())
                .collect::<Vec<_>>()
        }
    };
    let source_images = etcd_images(TENANT).await;
    assert!(
        !source_images.is_empty() && source_images.iter().all(|image| image.ends_with(etcd_tag)),
        "the source tenant runs etcd 3.5: {source_images:?}"
    );
    let old_kubeconfig = admin_kubeconfig(ns, TENANT).await;
    let tenant_client = ns.tenant_client(TENANT).await.expect("tenant client");
    ON_3_5.write(&tenant_client).await;
    let (key, _) = backup_now(ns, TENANT).await;
    step(started, "backup of the 3.5 members taken");
    let saved_path = save_and_delete(ns, TENANT).await;
    step(started, "TenantCluster deleted");
    restore(
        ns,
        started,
        &["restore", TENANT, "--from", &key, "--as", "team-35", "--spec", &saved_path],
        "team-35",
    )
    .await;
    let restored_images = etcd_images("team-35").await;
    assert!(
        restored_images.len() == 3 && restored_images.iter().all(|image| image.ends_with(etcd_tag)),
        "the restored members run etcd 3.5 on the data etcdutl 3.6 restored: {restored_images:?}"
    );
    let old_client = ns.tenant_client_from("team-35", &old_kubeconfig).await.expect("old kubeconfig");
    ON_3_5.read_back(&old_client).await;
    step(started, "3 etcd 3.5 members restored by etcdutl 3.6: objects and the Secret read back");
}

fn pod_ready(pod: &Pod) -> bool {
    pod.status.as_ref().and_then(|status| status.conditions.as_ref()).is_some_and(|conditions| {
        conditions.iter().any(|condition| condition.type_ == "Ready" && condition.status == "True")
    })
}

/// `spec.restore.pki` naming a Secret that does not exist: the pass stops with the field
/// named, and no CA (nor anything else) is generated in the copy's place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_whose_pki_copy_is_missing_never_generates_a_ca() {
    in_namespace("backup-nopki", async |ns| {
        let started = Instant::now();
        let _operator = start_operator(&ns, "backup-nopki").await;
        let mut spec = runnable_spec();
        spec["restore"] = json!({
            "from": {"destination": {"volume": {"claimName": "gone-backup"}}, "key": "gone/gone/gone-20261204T000000Z"},
            "pki": {"secretName": "gone-pki-backup"}
        });
        create_tenant(&ns, TENANT, spec, "restore").await;
        let ready = wait_for("Ready=False with reason InvalidSpec", MAX_WAIT, async || {
            let tenant = ns.tenant(TENANT).await?;
            match find_condition(&tenant, "Ready") {
                Some(ready) if ready.reason == "InvalidSpec" => Ok(ready.clone()),
                _ => Err(describe_tenant(&tenant)),
            }
        })
        .await;
        step(started, &format!("refused: {}", ready.message));
        assert_eq!(ready.status, "False");
        assert!(
            ready.message.contains("spec.restore.pki.secretName") && ready.message.contains("gone-pki-backup"),
            "the message names the field and the Secret: {}",
            ready.message
        );
        let names = ns.names(TENANT);
        assert!(
            ns.api::<Secret>().get_opt(&names.cluster_ca_secret()).await.expect("read").is_none(),
            "no cluster CA may be generated in place of the missing copy"
        );
        let owned = ns.labelled_objects(TENANT).await.expect("list owned objects");
        assert!(owned.is_empty(), "nothing is built: {:?}", owned.keys().collect::<Vec<_>>());
    })
    .await;
}

/// The tenant's etcd as the operator sees it: through the gateway of a member, with the
/// healthcheck client certificate.
struct EtcdGateway {
    tls: nestor::transport::TlsClient,
    names: nestor::names::TenantNames,
    pods: Api<Pod>,
}

impl EtcdGateway {
    async fn new(ns: &TestNamespace, tenant: &str) -> Self {
        use nestor::resources::{CA_CERT_KEY, TLS_CERT_KEY, TLS_PRIVATE_KEY_KEY};
        let names = ns.names(tenant);
        let secret = ns.secret(&names.etcd_healthcheck_client_secret()).await.expect("read").expect("Secret");
        let data = secret.data.expect("data");
        let value = |key: &str| data.get(key).expect(key).0.clone();
        let tls = nestor::transport::TlsClient::new(
            &value(CA_CERT_KEY),
            &value(TLS_CERT_KEY),
            &value(TLS_PRIVATE_KEY_KEY),
        )
        .expect("client");
        Self { tls, names, pods: ns.api::<Pod>() }
    }

    /// POSTs `{}` to `path` on member `ordinal`.
    async fn call<T: serde::de::DeserializeOwned>(&self, ordinal: i32, path: &str) -> Result<T, String> {
        let pod =
            self.pods.get_opt(&self.names.etcd_member_name(ordinal)).await.map_err(|e| e.to_string())?;
        let ip = pod
            .and_then(|pod| pod.status?.pod_ip)
            .ok_or_else(|| format!("member {ordinal} has no pod IP"))?;
        let ip: std::net::IpAddr = ip.parse().map_err(|_| format!("pod IP {ip}"))?;
        let address = std::net::SocketAddr::new(ip, nestor::resources::ETCD_CLIENT_PORT as u16);
        let host = self.names.etcd_member_host(ordinal);
        let response = self
            .tls
            .request(address, &host, hyper::Method::POST, path, Some("{}"), Duration::from_secs(5))
            .await
            .map_err(|e| format!("member {ordinal} {path}: {e}"))?;
        if response.status != hyper::StatusCode::OK {
            return Err(format!("member {ordinal} {path}: HTTP {}", response.status));
        }
        serde_json::from_slice(&response.body).map_err(|e| format!("member {ordinal} {path}: {e}"))
    }

    /// The member list as member 0 has it: (ordinal, started, learner) of each member.
    async fn members(&self) -> Result<Vec<(i32, bool, bool)>, String> {
        let list: nestor::etcd::gateway::MemberListResponse = self.call(0, "/v3/cluster/member/list").await?;
        let ordinal = |peer_urls: &[String]| {
            (0..5).find(|&ordinal| {
                let host = self.names.etcd_member_host(ordinal);
                peer_urls.iter().any(|url| url.contains(&format!("//{host}:")))
            })
        };
        let mut members: Vec<(i32, bool, bool)> = list
            .members
            .iter()
            .map(|member| {
                (ordinal(&member.peer_urls).unwrap_or(-1), !member.name.is_empty(), member.is_learner)
            })
            .collect();
        members.sort();
        Ok(members)
    }

    /// Member `ordinal`'s own status.
    async fn status(&self, ordinal: i32) -> Result<nestor::etcd::gateway::StatusResponse, String> {
        self.call(ordinal, "/v3/maintenance/status").await
    }
}

/// Patches `spec.etcd.replicas` (our CRD first, should another checkout's have replaced it).
async fn scale_etcd(ns: &TestNamespace, replicas: i32) {
    support::install_crd(&ns.client).await;
    let patch = json!({"spec": {"etcd": {"replicas": replicas}}});
    ns.api::<TenantCluster>()
        .patch(TENANT, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patch spec.etcd.replicas");
}

/// Settled at `members`: Ready, and EtcdReady True with every member healthy and listed.
fn etcd_settled_at(tenant: &TenantCluster, members: i32) -> bool {
    is_ready(tenant)
        && find_condition(tenant, "EtcdReady").is_some_and(|condition| {
            condition.status == "True"
                && condition.message.contains(&format!("{members}/{members} members healthy"))
                && condition.message.contains(&format!("member list has {members}"))
        })
}

/// Issue 15: "A backup that runs during a member replacement or a scaling step waits or
/// picks a healthy member. It never blocks them."
///
/// 1 -> 3 members. The step is held where a learner has started and caught up (the
/// operator is stopped once member k was added as a learner and its pod exists, so
/// nobody promotes it): a healthy learner following the leader looks like a follower
/// but for `isLearner`, and the agent prefers followers, so this is where a wrong choice
/// would show. `nestor backup` then must pass it over and snapshot the leader. A new
/// operator resumes the scaling while a second `nestor backup` runs: both finish, the
/// scaling within the bound of a scaling alone. The first snapshot, taken mid-step, is
/// restored as another tenant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_during_a_scaling_step_passes_over_the_learner_and_never_holds_the_scaling_up() {
    in_namespace("backup-scale", async |ns| scaling_scenario(&ns).await).await;
}

async fn scaling_scenario(ns: &TestNamespace) {
    let started = Instant::now();
    let mut operator = start_operator(ns, "backup-scale").await;
    step(started, "operator started (image built and imported)");
    let mut spec = runnable_spec();
    spec["backup"] =
        json!({"schedule": RARE_SCHEDULE, "retain": 3, "destination": {"volume": {"size": "256Mi"}}});
    create_tenant(ns, TENANT, spec, "backup").await;
    wait_ready(ns, TENANT, "the tenant Ready with 1 member").await;
    step(started, "tenant Ready with 1 etcd member");
    let tenant_client = ns.tenant_client(TENANT).await.expect("tenant client");
    KEPT.write(&tenant_client).await;
    let names = ns.names(TENANT);
    let etcd = EtcdGateway::new(ns, TENANT).await;

    // Hold the step at a started learner. If the operator promoted it between our look
    // and its stop, a new operator goes on to the next learner (1 -> 3 adds two).
    scale_etcd(ns, 3).await;
    let scaling_started = Instant::now();
    step(started, "spec.etcd.replicas 1 -> 3");
    let mut held = None;
    for _attempt in 0..2 {
        let learner =
            wait_for("a learner listed and its pod created", Duration::from_secs(180), async || {
                let members = etcd.members().await?;
                let learner = members.iter().find(|(_, _, learner)| *learner).map(|(ordinal, _, _)| *ordinal);
                match learner {
                    Some(ordinal) if ordinal >= 0 => {
                        let pod = ns.api::<Pod>().get_opt(&names.etcd_member_name(ordinal)).await;
                        match pod.map_err(|e| e.to_string())? {
                            Some(_) => Ok(ordinal),
                            None => {
                                Err(format!("member {ordinal} is a learner without a pod yet: {members:?}"))
                            }
                        }
                    }
                    _ => Err(format!("no learner: {members:?}")),
                }
            })
            .await;
        operator.kill();
        step(started, &format!("operator stopped: member {learner} is a learner and its pod exists"));
        let still_learner = wait_for(
            &format!("member {learner} started and following the leader, or promoted"),
            Duration::from_secs(180),
            async || {
                let status = etcd.status(learner).await?;
                if !status.is_learner {
                    return Ok(false);
                }
                let members = etcd.members().await?;
                let started = members.iter().any(|(ordinal, started, _)| *ordinal == learner && *started);
                if status.leader != 0 && started { Ok(true) } else { Err(format!("{status:?}")) }
            },
        )
        .await;
        if still_learner {
            held = Some(learner);
            break;
        }
        step(started, &format!("member {learner} was promoted before the operator stopped: once more"));
        operator = start_operator(ns, "backup-scale").await;
    }
    let learner = held.expect("a learner held on one of two attempts");
    step(started, &format!("member {learner} runs as a learner that follows the leader"));

    let backup_started = Instant::now();
    let (held_key, output) = backup_now(ns, TENANT).await;
    step(
        started,
        &format!(
            "backup while member {learner} is a learner: {:.1}s",
            backup_started.elapsed().as_secs_f64()
        ),
    );
    assert!(
        output.contains(&format!("from etcd member {}", names.etcd_member_name(0))),
        "the only voter, member 0, gives the snapshot: {output}"
    );
    assert!(
        output.contains(&format!("{}: learner (being added, not a voter)", names.etcd_member_name(learner))),
        "the learner was asked and passed over: {output}"
    );
    let members = etcd.members().await.expect("member list");
    assert!(
        members.iter().any(|(ordinal, _, is_learner)| *ordinal == learner && *is_learner),
        "member {learner} was a learner for the whole backup: {members:?}"
    );

    // Resume: a new operator finishes the scaling while a second backup runs.
    operator = start_operator(ns, "backup-scale").await;
    let resumed = Instant::now();
    step(started, "operator restarted: the scaling resumes, a second backup starts");
    let scaled = async {
        let tenant = ns
            .wait_for_tenant(TENANT, "3 etcd members, Ready", MAX_WAIT, |tenant| etcd_settled_at(tenant, 3))
            .await;
        (tenant, resumed.elapsed())
    };
    let backed_up = async {
        let (key, output) = backup_now(ns, TENANT).await;
        (key, output, resumed.elapsed())
    };
    let ((tenant, scaling_took), (second_key, second_output, backup_took)) = tokio::join!(scaled, backed_up);
    step(
        started,
        &format!(
            "second backup done {:.1}s after the restart; scaling settled at 3 {:.1}s after it \
             ({:.1}s after the spec change, the operator stopped meanwhile)",
            backup_took.as_secs_f64(),
            scaling_took.as_secs_f64(),
            scaling_started.elapsed().as_secs_f64()
        ),
    );
    let chosen = second_output
        .lines()
        .find_map(|line| line.strip_prefix("from etcd member "))
        .unwrap_or_else(|| panic!("no member named: {second_output}"));
    assert!((0..3).any(|ordinal| chosen == names.etcd_member_name(ordinal)), "{second_output}");
    assert!(held_key < second_key);
    let pods = ns
        .api::<Pod>()
        .list(&ListParams::default().labels(&format!("{TENANT_LABEL}={TENANT},{COMPONENT_LABEL}=etcd")))
        .await
        .expect("etcd pods");
    assert_eq!(pods.items.iter().filter(|pod| pod_ready(pod)).count(), 3, "every etcd member Ready");
    let members = etcd.members().await.expect("member list");
    assert_eq!(members, [(0, true, false), (1, true, false), (2, true, false)], "three started voters");
    assert!(
        condition_message(&tenant, "EtcdReady").contains("3/3 members healthy"),
        "{}",
        describe_tenant(&tenant)
    );
    wait_for_last_backup(ns, &second_key).await;

    // The snapshot taken mid-step restores.
    restore(ns, started, &["restore", TENANT, "--from", &held_key, "--as", "team-d"], "team-d").await;
    let old_kubeconfig = admin_kubeconfig(ns, TENANT).await;
    let restored_client = ns.tenant_client_from("team-d", &old_kubeconfig).await.expect("old kubeconfig");
    KEPT.read_back(&restored_client).await;
    step(started, "the snapshot taken during the scaling step restored: objects and the Secret read back");
    drop(operator);
}

/// The backup Job whose pod reported snapshot `key`, with its report.
async fn job_of(ns: &TestNamespace, key: &str) -> Result<(Job, nestor::backup::report::AgentReport), String> {
    let jobs = ns.api::<Job>().list(&ListParams::default()).await.map_err(|e| e.to_string())?;
    for job in jobs.items {
        let pods = ns
            .api::<Pod>()
            .list(&ListParams::default().labels(&format!("job-name={}", job.name_any())))
            .await
            .map_err(|e| e.to_string())?;
        let outcome = nestor::backup::report::newest_outcome(std::slice::from_ref(&job), &pods.items);
        if let Some(outcome) = outcome.filter(|outcome| outcome.report.key == key) {
            return Ok((job, outcome.report));
        }
    }
    Err(format!("no Job reported {key}"))
}

/// Jobs of the tenant's CronJob, by name.
async fn backup_jobs(ns: &TestNamespace) -> Vec<String> {
    let mut jobs: Vec<String> = ns
        .api::<Job>()
        .list(&ListParams::default())
        .await
        .expect("list Jobs")
        .items
        .iter()
        .filter(|job| job.owner_references().iter().any(|owner| owner.kind == "CronJob"))
        .map(|job| job.name_any())
        .collect();
    jobs.sort();
    jobs
}

/// A real `schedule` firing: `* * * * *` with `retain: 2`. Three backups come from Jobs
/// the CronJob created itself (no `nestor backup`), each replacing `status.lastBackup`;
/// the bucket then holds the last two, the first deleted by retention. Then
/// `suspend: true`: no Job for over a minute. Uses the local S3 server (the bucket can
/// be listed without a pod); loudly skipped without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_of_every_minute_fires_replaces_last_backup_and_retention_keeps_two() {
    let Some(s3) = s3_settings() else {
        eprintln!(
            "\n!!!!!!!! SKIPPED: /run/nestor-meta/s3.env is missing: start the local S3 server with hack/s3-up.sh !!!!!!!!\n"
        );
        return;
    };
    in_namespace("backup-cron", async |ns| schedule_scenario(&ns, &s3).await).await;
}

async fn schedule_scenario(ns: &TestNamespace, s3: &BTreeMap<String, String>) {
    let started = Instant::now();
    let _operator = start_operator(ns, "backup-cron").await;
    step(started, "operator started (image built and imported)");
    let mut spec = runnable_spec();
    let prefix = format!("tests/{}", ns.name);
    spec["backup"] = json!({"schedule": "* * * * *", "retain": 2,
        "destination": s3_destination(ns, s3, &prefix).await});
    create_tenant(ns, TENANT, spec, "backup").await;
    wait_ready(ns, TENANT, "the tenant Ready").await;
    step(started, "tenant Ready");

    let mut keys: Vec<String> = Vec::new();
    let mut reports = Vec::new();
    for (index, bound) in [(1, 200), (2, 130), (3, 130)] {
        let previous = keys.last().cloned();
        let tenant = ns
            .wait_for_tenant(
                TENANT,
                &format!("scheduled backup {index} in status.lastBackup"),
                Duration::from_secs(bound),
                |tenant| {
                    tenant
                        .status
                        .as_ref()
                        .and_then(|status| status.last_backup.as_ref())
                        .is_some_and(|last| Some(&last.key) != previous.as_ref())
                },
            )
            .await;
        let last = tenant.status.and_then(|status| status.last_backup).expect("lastBackup");
        let (job, report) =
            wait_for(&format!("the Job of {}", last.key), Duration::from_secs(30), async || {
                job_of(ns, &last.key).await
            })
            .await;
        let annotations = job.annotations();
        step(
            started,
            &format!(
                "scheduled backup {index}: {} by Job {} (scheduled {}), lastBackup time {}",
                last.key,
                job.name_any(),
                annotations
                    .get("batch.kubernetes.io/cronjob-scheduled-timestamp")
                    .cloned()
                    .unwrap_or_default(),
                last.time.0
            ),
        );
        assert!(
            !job.name_any().contains("-now-")
                && !annotations.contains_key("cronjob.kubernetes.io/instantiate"),
            "created by the CronJob's schedule, not by nestor backup: {:?}",
            job.metadata
        );
        assert!(
            job.owner_references()
                .iter()
                .any(|owner| owner.kind == "CronJob" && owner.name == ns.names(TENANT).backup()),
            "owned by the tenant's CronJob: {:?}",
            job.metadata.owner_references
        );
        if let Some(previous) = &previous {
            assert!(
                previous < &last.key,
                "a newer snapshot replaces lastBackup: {previous} then {}",
                last.key
            );
        }
        keys.push(last.key);
        reports.push(report);
    }
    assert_eq!(reports[2].deleted, [keys[0].clone()], "the third backup deleted the first (retain 2)");
    let listed = nestor(ns, &["backups", TENANT]).await.expect_success();
    eprintln!("{}", listed.trim());
    let stored: Vec<&str> =
        listed.lines().skip(1).filter_map(|line| line.split_whitespace().next()).collect();
    assert_eq!(stored, [keys[1].as_str(), keys[2].as_str()], "the bucket keeps the newest two: {listed}");
    assert!(!listed.contains("incomplete"), "{listed}");
    step(started, "the bucket holds the last two scheduled snapshots");

    // Suspended: no new Job for more than a minute.
    support::install_crd(&ns.client).await;
    let patch = json!({"spec": {"backup": {"suspend": true}}});
    ns.api::<TenantCluster>()
        .patch(TENANT, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patch spec.backup.suspend");
    let cronjobs = ns.api::<k8s_openapi::api::batch::v1::CronJob>();
    wait_for("the CronJob suspended", Duration::from_secs(60), async || {
        let cronjob = cronjobs.get(&ns.names(TENANT).backup()).await.map_err(|e| e.to_string())?;
        match cronjob.spec.as_ref().and_then(|spec| spec.suspend) {
            Some(true) => Ok(()),
            other => Err(format!("suspend {other:?}")),
        }
    })
    .await;
    let suspended_at = Instant::now();
    let jobs = backup_jobs(ns).await;
    step(started, &format!("CronJob suspended; Jobs so far: {jobs:?}"));
    tokio::time::sleep(Duration::from_secs(70)).await;
    let later = backup_jobs(ns).await;
    let new: Vec<&String> = later.iter().filter(|job| !jobs.contains(job)).collect();
    assert!(new.is_empty(), "a suspended CronJob created {new:?}");
    let tenant = ns.tenant(TENANT).await.expect("tenant");
    let condition = find_condition(&tenant, "BackupReady").expect("BackupReady");
    assert_eq!(condition.reason, "Suspended", "{}", condition.message);
    step(
        started,
        &format!(
            "no Job in the {:.0}s after the suspension; BackupReady Suspended",
            suspended_at.elapsed().as_secs_f64()
        ),
    );
}
