//! etcd space maintenance against the real meta cluster, the scenario of a new user: a
//! tenant whose etcd has a small quota (`spec.etcd.quotaBackendBytes`, 16 MiB, on a volume
//! claim) is filled with ConfigMaps until writes fail with "database space exceeded".
//! Each time, the operator compacts and defragments etcd; while what is left fits it
//! disarms the alarm and writes come back by themselves (the history the apiserver keeps
//! is enough for that at first), and the test fills on, until the live data itself does
//! not fit and the operator says so (EtcdReady `QuotaExceeded`, "raise
//! spec.etcd.quotaBackendBytes"). Then, twice:
//! 1. half of the objects are deleted: the operator compacts, defragments and disarms
//!    the alarm, and the tenant accepts writes again by itself;
//! 2. filled again until `QuotaExceeded`, the quota is raised: etcd rolls with the new
//!    flag, the operator disarms the alarm, and the tenant accepts writes again.
//!
//! Every object whose create succeeded (and that the test did not delete) must still
//! be there at the end, with its data. The times it took are printed.
//!
//! Needs the local meta cluster (KUBECONFIG, nestor.local images, the local-path
//! StorageClass: etcd keeps its data on a volume claim, since the quota change restarts
//! the member). Everything it starts is undone by the shared harness (`support`).

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::events::v1::Event;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use support::{
    MAX_WAIT, Operator, TEST_FIELD_MANAGER, TestNamespace, condition_message, describe_tenant,
    find_condition, in_namespace, is_ready, runnable_spec, wait_for,
};

/// Tenant name inside the test namespace.
const TENANT: &str = "team-s";
/// The quota the tenant starts with: admission's smallest.
const SMALL_QUOTA: i64 = 16 * 1024 * 1024;
/// The quota it is raised to.
const RAISED_QUOTA: i64 = 64 * 1024 * 1024;
/// Bytes of data in each ConfigMap that fills etcd.
const FILL_BYTES: usize = 512 * 1024;
/// More creates than this without "database space exceeded" fail the test.
const MAX_FILL: usize = 200;
/// Rounds of filling until the live data exceeds the quota (see the scenario).
const MAX_FILL_ROUNDS: usize = 6;
/// Bound on the recovery after objects are deleted or the quota is raised.
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(240);
/// What etcd answers a write once the alarm is raised (through the apiserver).
const NOSPACE_ERROR: &str = "database space exceeded";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_that_ran_out_of_etcd_space_accepts_writes_again_by_itself() {
    in_namespace("space", async |ns| out_of_space_scenario(&ns).await).await;
}

/// Creates ConfigMap `name` in the tenant's `default` namespace with [`FILL_BYTES`] of data.
async fn create_fill(configmaps: &Api<ConfigMap>, name: &str) -> Result<(), String> {
    let object: ConfigMap = serde_json::from_value(json!({
        "metadata": { "name": name },
        "data": { "fill": "x".repeat(FILL_BYTES) },
    }))
    .expect("ConfigMap");
    configmaps.create(&PostParams::default(), &object).await.map(drop).map_err(|error| error.to_string())
}

/// Fills the tenant until a create fails with [`NOSPACE_ERROR`]; every name created is
/// added to `written`. Returns how many creates succeeded in this call.
async fn fill_until_full(configmaps: &Api<ConfigMap>, prefix: &str, written: &mut Vec<String>) -> usize {
    let started = Instant::now();
    for index in 0..MAX_FILL {
        let name = format!("{prefix}-{index:03}");
        match create_fill(configmaps, &name).await {
            Ok(()) => written.push(name),
            Err(error) if error.contains(NOSPACE_ERROR) => {
                eprintln!(
                    "{prefix}: {index} ConfigMaps of {} KiB written in {:?}, then: {error}",
                    FILL_BYTES / 1024,
                    started.elapsed()
                );
                return index;
            }
            // Anything else (a timeout under load) may or may not have been written:
            // not counted as written, and the fill goes on.
            Err(error) => eprintln!("{name}: {error}"),
        }
    }
    panic!("{MAX_FILL} creates of {} KiB never hit the quota of {SMALL_QUOTA} bytes", FILL_BYTES / 1024);
}

/// Tries a small create every second until one succeeds; returns how long it took.
async fn wait_for_writes(configmaps: &Api<ConfigMap>, tag: &str, since: Instant) -> Duration {
    let mut attempt = 0;
    wait_for(&format!("the tenant to accept writes again ({tag})"), RECOVERY_TIMEOUT, async || {
        attempt += 1;
        let object: ConfigMap = serde_json::from_value(json!({
            "metadata": { "name": format!("{tag}-write-{attempt}") },
            "data": { "ok": "yes" },
        }))
        .expect("ConfigMap");
        configmaps.create(&PostParams::default(), &object).await.map(drop).map_err(|error| error.to_string())
    })
    .await;
    since.elapsed()
}

/// The Events with `reason` on the test namespace: how many times each was published
/// (repeats of one reason become a series), and the note of each.
async fn events(ns: &TestNamespace, reason: &str) -> (i32, Vec<String>) {
    let found: Vec<Event> = ns
        .api::<Event>()
        .list(&ListParams::default())
        .await
        .expect("list events")
        .items
        .into_iter()
        .filter(|event| event.reason.as_deref() == Some(reason))
        .collect();
    let count = found.iter().map(|event| event.series.as_ref().map_or(1, |series| series.count)).sum();
    (count, found.into_iter().filter_map(|event| event.note).collect())
}

/// Every name of `written` is a ConfigMap with its full data.
async fn assert_nothing_lost(configmaps: &Api<ConfigMap>, written: &[String]) {
    let listed: BTreeMap<String, usize> = configmaps
        .list(&ListParams::default())
        .await
        .expect("list ConfigMaps")
        .items
        .into_iter()
        .filter_map(|configmap| {
            let size = configmap.data.as_ref()?.get("fill")?.len();
            Some((configmap.metadata.name?, size))
        })
        .collect();
    let lost: Vec<&String> = written.iter().filter(|name| listed.get(*name) != Some(&FILL_BYTES)).collect();
    assert!(lost.is_empty(), "{} of {} written objects lost or cut: {lost:?}", lost.len(), written.len());
    eprintln!("all {} written objects are there with their data", written.len());
}

/// Makes sure the tenant's spec holds `quota` and returns the tenant. The meta cluster is
/// shared with other checkouts whose tests install their own CRD: one without
/// `spec.etcd.quotaBackendBytes` prunes the field from what the apiserver returns, and
/// the operator then renders etcd without the flag. So this installs this checkout's CRD
/// again and puts the field back if it is gone, and says so.
async fn ensure_quota(ns: &TestNamespace, quota: i64) -> nestor::api::TenantCluster {
    let tenants = ns.api::<nestor::api::TenantCluster>();
    for attempt in 0..5 {
        let tenant = tenants.get(TENANT).await.expect("read the tenant");
        if tenant.spec.etcd.quota_backend_bytes == Some(quota) {
            return tenant;
        }
        eprintln!(
            "spec.etcd.quotaBackendBytes reads {:?}, not {quota}: another checkout's CRD is installed; \
             installing this one again (attempt {attempt})",
            tenant.spec.etcd.quota_backend_bytes
        );
        support::install_crd(&ns.client).await;
        tenants
            .patch(
                TENANT,
                &PatchParams { field_manager: Some(TEST_FIELD_MANAGER.into()), ..PatchParams::default() },
                &Patch::Merge(json!({ "spec": { "etcd": { "quotaBackendBytes": quota } } })),
            )
            .await
            .expect("set the quota");
    }
    panic!("spec.etcd.quotaBackendBytes does not stay set: the CRD keeps being replaced");
}

/// Fills the tenant round after round until the operator says that the live data
/// exceeds the quota (EtcdReady `QuotaExceeded`), and returns the tenant then. After
/// each round's "database space exceeded", the operator either frees enough (compaction
/// and defragmentation of the history the apiserver left) and writes come back by
/// themselves, or says the quota is too small. Prints how long each recovery took.
async fn fill_until_quota_exceeded(
    ns: &TestNamespace,
    configmaps: &Api<ConfigMap>,
    prefix: &str,
    written: &mut Vec<String>,
) -> nestor::api::TenantCluster {
    for round in 0..MAX_FILL_ROUNDS {
        ensure_quota(ns, SMALL_QUOTA).await;
        fill_until_full(configmaps, &format!("{prefix}{round}"), written).await;
        let full_at = Instant::now();
        let verdict = support::poll_for(Duration::from_secs(90), Duration::from_secs(1), async || {
            let tenant = ns.tenant(TENANT).await?;
            if find_condition(&tenant, "EtcdReady")
                .is_some_and(|condition| condition.reason == "QuotaExceeded")
            {
                return Ok(Some(tenant));
            }
            let probe: ConfigMap = serde_json::from_value(json!({
                "metadata": { "generateName": "fill-probe-" }, "data": { "ok": "yes" },
            }))
            .expect("ConfigMap");
            match configmaps.create(&PostParams::default(), &probe).await {
                Ok(_) => Ok(None),
                Err(error) => Err(format!("{error}; {}", describe_tenant(&tenant))),
            }
        })
        .await
        .unwrap_or_else(|state| panic!("neither QuotaExceeded nor writes within 90 s: {state}"));
        match verdict {
            Some(tenant) => {
                eprintln!(
                    "{prefix}{round}: QuotaExceeded {:?} after the first refused write",
                    full_at.elapsed()
                );
                return tenant;
            }
            None => eprintln!(
                "{prefix}{round}: RECOVERY by itself: writes accepted {:?} after the first refused one \
                 (the history fit once compacted and defragmented); filling on",
                full_at.elapsed()
            ),
        }
    }
    panic!("no QuotaExceeded after {MAX_FILL_ROUNDS} rounds of filling");
}

async fn out_of_space_scenario(ns: &TestNamespace) {
    let operator = Operator::start_with(&ns.name, "space", &["--health-interval", "2s"]).await;
    let mut spec = runnable_spec();
    spec["etcd"]["storage"] = json!({ "ephemeral": false, "size": "1Gi" });
    spec["etcd"]["quotaBackendBytes"] = json!(SMALL_QUOTA);
    ns.create_tenant(TENANT, spec).await;
    let started = Instant::now();
    ensure_quota(ns, SMALL_QUOTA).await;
    let ready = ns.wait_for_tenant(TENANT, "Ready", MAX_WAIT, is_ready).await;
    eprintln!("Ready after {:?}: {}", started.elapsed(), describe_tenant(&ready));
    let tenant_api: Client = ns.tenant_client(TENANT).await.expect("tenant client");
    let configmaps: Api<ConfigMap> = Api::namespaced(tenant_api, "default");
    let mut written = Vec::new();

    // Full until the live data exceeds the quota: the operator says so, plainly.
    let stuck = fill_until_quota_exceeded(ns, &configmaps, "fill-a", &mut written).await;
    let message = condition_message(&stuck, "EtcdReady");
    eprintln!("phase {:?}, EtcdReady: {message}", stuck.status.as_ref().and_then(|status| status.phase));
    assert!(message.contains("raise spec.etcd.quotaBackendBytes"), "{message}");
    assert!(events(ns, "EtcdQuotaExceeded").await.0 > 0, "no EtcdQuotaExceeded Event");

    // 1. Half of the objects deleted (deletions pass the alarm): writes come back by themselves.
    // A defragmentation and a disarm must follow the deletion; the compaction that freed
    // the deleted objects' pages may be the apiserver's own, or one just before.
    assert!(events(ns, "EtcdCompacted").await.0 > 0, "no EtcdCompacted Event");
    let mut before = BTreeMap::new();
    for reason in ["EtcdDefragmented", "EtcdAlarmDisarmed"] {
        before.insert(reason, events(ns, reason).await.0);
    }
    let deleted: Vec<String> = written.iter().step_by(2).cloned().collect();
    for name in &deleted {
        configmaps.delete(name, &DeleteParams::default()).await.expect("a deletion passes the alarm");
    }
    written.retain(|name| !deleted.contains(name));
    let deleted_at = Instant::now();
    let recovery = wait_for_writes(&configmaps, "after-delete", deleted_at).await;
    eprintln!("RECOVERY after deleting {} objects: writes accepted {recovery:?} later", deleted.len());
    for (reason, earlier) in before {
        // The Event of the step that let the write through may be a moment behind it.
        let count = support::poll_for(Duration::from_secs(10), Duration::from_secs(1), async || {
            let (count, notes) = events(ns, reason).await;
            if count > earlier { Ok((count, notes)) } else { Err(format!("{count} {reason}: {notes:?}")) }
        })
        .await;
        eprintln!("{reason}: {count:?} (was {earlier} before the deletion)");
        assert!(count.is_ok(), "no {reason} after the deletion");
    }
    let (_, defragmented) = events(ns, "EtcdDefragmented").await;
    assert!(defragmented.iter().any(|note| note.contains("freed")), "{defragmented:?}");
    assert_nothing_lost(&configmaps, &written).await;
    let (disarmed_before, _) = events(ns, "EtcdAlarmDisarmed").await;

    // 2. Full again until the live data exceeds the quota; then the quota is raised: etcd
    // rolls with it, the alarm is disarmed, writes come back.
    fill_until_quota_exceeded(ns, &configmaps, "fill-b", &mut written).await;
    // Raise the quota: etcd rolls with it, the alarm is disarmed, writes come back.
    let raised_at = Instant::now();
    ns.api::<nestor::api::TenantCluster>()
        .patch(
            TENANT,
            &PatchParams { field_manager: Some(TEST_FIELD_MANAGER.into()), ..PatchParams::default() },
            &Patch::Merge(json!({ "spec": { "etcd": { "quotaBackendBytes": RAISED_QUOTA } } })),
        )
        .await
        .expect("raise the quota");
    ensure_quota(ns, RAISED_QUOTA).await;
    let recovery = wait_for_writes(&configmaps, "after-raise", raised_at).await;
    eprintln!("RECOVERY after raising the quota to {RAISED_QUOTA} bytes: writes accepted {recovery:?} later");
    ensure_quota(ns, RAISED_QUOTA).await;
    let flag = format!("--quota-backend-bytes={RAISED_QUOTA}");
    wait_for("the etcd StatefulSet to carry the raised quota", Duration::from_secs(30), async || {
        let statefulset =
            ns.api::<StatefulSet>().get(&ns.names(TENANT).etcd()).await.map_err(|error| error.to_string())?;
        let args = statefulset
            .spec
            .and_then(|spec| spec.template.spec)
            .and_then(|pod| pod.containers[0].args.clone())
            .unwrap_or_default();
        if args.contains(&flag) { Ok(()) } else { Err(format!("{args:?}")) }
    })
    .await;
    let disarmed = support::poll_for(Duration::from_secs(10), Duration::from_secs(1), async || {
        let (count, _) = events(ns, "EtcdAlarmDisarmed").await;
        if count > disarmed_before { Ok(count) } else { Err(format!("{count} EtcdAlarmDisarmed")) }
    })
    .await;
    assert!(disarmed.is_ok(), "the last alarm was disarmed by the operator: {disarmed:?}");
    assert_nothing_lost(&configmaps, &written).await;
    let ready = ns.wait_for_tenant(TENANT, "Ready again", MAX_WAIT, is_ready).await;
    eprintln!("Ready again {:?} after the raise: {}", raised_at.elapsed(), describe_tenant(&ready));
    drop(operator);
}
