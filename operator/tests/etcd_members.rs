//! etcd membership repair against the real meta cluster: a 3-member tenant with
//! ephemeral etcd storage loses member 1's data (its pod is deleted, and its emptyDir
//! with it); the operator removes and re-adds that member, and the tenant API keeps
//! answering throughout.
//!
//! Needs the local meta cluster (KUBECONFIG, nestor.local images). Everything it
//! starts (operator, namespace) is undone by the shared harness (`support`), also when
//! an assertion fails.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Event, Pod};
use kube::api::{DeleteParams, ListParams};
use kube::{Client, ResourceExt};
use nestor::api::Phase;
use serde_json::json;
use support::{
    MAX_WAIT, Operator, TestNamespace, condition_message, describe_tenant, in_namespace, is_ready,
    runnable_spec, wait_for,
};

/// Tenant name inside the test namespace.
const TENANT: &str = "team-m";
/// Probe interval given to the operator: members are replaced after 30 s not Ready.
const HEALTH_INTERVAL: &str = "5s";
/// Bound on detection plus replacement of the lost member.
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(180);

/// `GET /readyz` once; the failure as text.
async fn readyz(client: &Client) -> Result<(), String> {
    let request = hyper::Request::get("/readyz").body(Vec::new()).map_err(|error| error.to_string())?;
    let text = client.request_text(request).await.map_err(|error| error.to_string())?;
    if text.trim() == "ok" { Ok(()) } else { Err(text) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_lost_its_data_is_replaced_while_the_api_keeps_answering() {
    in_namespace("members", async |ns| lost_member_scenario(&ns).await).await;
}

async fn lost_member_scenario(ns: &TestNamespace) {
    let operator = Operator::start_with(&ns.name, "members", &["--health-interval", HEALTH_INTERVAL]).await;
    let names = ns.names(TENANT);
    let mut spec = runnable_spec();
    spec["etcd"]["replicas"] = json!(3);
    ns.create_tenant(TENANT, spec).await;

    // Ready with 3 healthy members, the cluster ID recorded and members told to join from now on.
    let started = Instant::now();
    let ready = ns
        .wait_for_tenant(TENANT, "Ready with 3 members and a cluster ID", MAX_WAIT, |tenant| {
            is_ready(tenant)
                && condition_message(tenant, "EtcdReady").contains("3/3 members healthy")
                && tenant.status.as_ref().is_some_and(|status| status.etcd_cluster_id.is_some())
        })
        .await;
    eprintln!("Ready after {:?}: {}", started.elapsed(), describe_tenant(&ready));
    wait_for("the etcd ConfigMap to say existing", Duration::from_secs(30), async || {
        let config_map = ns.api::<ConfigMap>().get(&names.etcd()).await.map_err(|error| error.to_string())?;
        let state = config_map.data.and_then(|data| data.get("initial-cluster-state").cloned());
        if state.as_deref() == Some("existing") { Ok(()) } else { Err(format!("{state:?}")) }
    })
    .await;

    // Probe the tenant API every second in the background.
    let tenant_api: Client = ns.tenant_client(TENANT).await.expect("tenant client");
    readyz(&tenant_api).await.expect("the tenant API answers before the test");
    let stop = Arc::new(AtomicBool::new(false));
    let (probes, failures) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    let prober = tokio::spawn({
        let (stop, probes, failures) = (stop.clone(), probes.clone(), failures.clone());
        async move {
            while !stop.load(Ordering::Relaxed) {
                probes.fetch_add(1, Ordering::Relaxed);
                if let Err(error) = readyz(&tenant_api).await {
                    failures.fetch_add(1, Ordering::Relaxed);
                    eprintln!("tenant /readyz failed: {error}");
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    });

    // Lose member 1's data: its emptyDir goes with the pod.
    let pods = ns.api::<Pod>();
    let member = names.etcd_member_name(1);
    let old_uid = pods.get(&member).await.expect("member 1 pod").uid().expect("uid");
    pods.delete(&member, &DeleteParams::default()).await.expect("delete member 1's pod");
    let deleted_at = Instant::now();
    eprintln!("deleted pod {member} ({old_uid})");

    let events = ns.api::<Event>();
    let what = format!(
        "member {member} replaced (EtcdMemberReplaced) and the tenant Ready with 3/3 members healthy \
         (operator log {})",
        operator.log_path.display()
    );
    let (replaced, recovered) = wait_for(&what, RECOVERY_TIMEOUT, async || {
        let replaced: Vec<String> = events
            .list(&ListParams::default())
            .await
            .map_err(|error| format!("cannot list events: {error}"))?
            .items
            .into_iter()
            .filter(|event| event.reason.as_deref() == Some("EtcdMemberReplaced"))
            .filter_map(|event| event.message)
            .collect();
        let tenant = ns.tenant(TENANT).await?;
        if !replaced.is_empty()
            && is_ready(&tenant)
            && condition_message(&tenant, "EtcdReady").contains("3/3 members healthy")
        {
            Ok((replaced, tenant))
        } else {
            Err(format!("events {replaced:?}: {}", describe_tenant(&tenant)))
        }
    })
    .await;
    let recovery = deleted_at.elapsed();
    stop.store(true, Ordering::Relaxed);
    prober.await.expect("prober");
    let (probes, failures) = (probes.load(Ordering::Relaxed), failures.load(Ordering::Relaxed));
    eprintln!("EtcdMemberReplaced: {replaced:?}");
    eprintln!("recovered {recovery:?} after the pod deletion: {}", describe_tenant(&recovered));
    eprintln!("tenant API probes: {probes}, failed: {failures}");

    assert!(replaced[0].contains(&format!("etcd member {member} replaced")), "{}", replaced[0]);
    assert!(replaced[0].contains("old ID") && replaced[0].contains("new ID"), "{}", replaced[0]);
    assert!(recovered.status.as_ref().and_then(|status| status.phase) == Some(Phase::Ready));
    assert_eq!(failures, 0, "the tenant API failed {failures} of {probes} probes");
    drop(operator);
}
