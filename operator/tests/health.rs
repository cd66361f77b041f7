//! Health probes and healing against the real meta cluster, end to end: an operator
//! subprocess (watching only this test's namespace) brings a light tenant up, its
//! conditions carry the probe results, and a tenant apiserver frozen with SIGSTOP is
//! detected and recovered.
//!
//! Needs the local meta cluster (KUBECONFIG, nestor.local images) and root, to find
//! and signal the tenant apiserver's host process. Fails, rather than skips, without
//! them. Everything it starts (operator, namespace, signals) is undone by guards or the
//! shared harness (`support`), also when an assertion fails.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::ResourceExt;
use kube::api::ListParams;
use nestor::names::{Component, TenantNames};
use support::{
    Operator, TestNamespace, condition_message, describe_tenant, find_condition, in_namespace, is_ready,
    runnable_spec, wait_for,
};

/// Tenant name inside the test namespace.
const TENANT: &str = "team-h";
/// A 1-member ephemeral tenant is Ready in ~40 s on an idle machine; the machine is shared.
const READY_TIMEOUT: Duration = Duration::from_secs(240);
/// Probe interval given to the operator: debounce 10 s, restart after 15 s of failures.
const HEALTH_INTERVAL: &str = "5s";
/// Bound on detection plus recovery of the frozen apiserver.
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(240);

/// A stopped process; continued when dropped, whatever happened meanwhile.
struct Frozen(u32);

impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-CONT", &self.0.to_string()]).status();
    }
}

/// Pids of host processes whose command line is the tenant's kube-apiserver: the binary
/// name and the tenant's own etcd URL (so never the meta cluster's apiserver, nor
/// another namespace's tenant).
fn tenant_apiserver_pids(names: &TenantNames) -> Vec<u32> {
    let etcd_flag = format!("--etcd-servers=https://{}:2379", names.etcd_member_host(0));
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let args: Vec<String> =
            cmdline.split(|byte| *byte == 0).map(|arg| String::from_utf8_lossy(arg).into_owned()).collect();
        let is_apiserver = args.first().is_some_and(|program| program.ends_with("kube-apiserver"));
        if is_apiserver && args.iter().any(|arg| arg.starts_with(&etcd_flag)) {
            pids.push(pid);
        }
    }
    pids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_report_component_health_and_a_frozen_apiserver_is_restarted() {
    in_namespace("health", async |ns| frozen_apiserver_scenario(&ns).await).await;
}

async fn frozen_apiserver_scenario(ns: &TestNamespace) {
    let operator = Operator::start_with(&ns.name, "health", &["--health-interval", HEALTH_INTERVAL]).await;
    let names = ns.names(TENANT);
    ns.create_tenant(TENANT, runnable_spec()).await;

    // (a) Ready, with each component condition showing what its probe checked.
    let started = Instant::now();
    let ready = ns
        .wait_for_tenant(TENANT, "Ready with probe results", READY_TIMEOUT, |tenant| {
            is_ready(tenant)
                && condition_message(tenant, "EtcdReady").contains("probe: 1/1 members healthy")
                && condition_message(tenant, "APIServerReady").contains("probe: /readyz ok")
                && condition_message(tenant, "ControllerManagerReady").contains("probe: leader Lease fresh")
                && condition_message(tenant, "SchedulerReady").contains("probe: leader Lease fresh")
        })
        .await;
    eprintln!("Ready with probe results after {:?}: {}", started.elapsed(), describe_tenant(&ready));
    // The scheduler's own Lease, held by one of its own pods, and its Deployment available.
    let scheduler_lease = condition_message(&ready, "SchedulerReady");
    assert!(
        scheduler_lease.contains(&format!("held by {}-", names.scheduler())),
        "the scheduler's Lease is held by a scheduler pod: {scheduler_lease}"
    );
    let scheduler = ns.api::<Deployment>().get(&names.scheduler()).await.expect("scheduler Deployment");
    assert_eq!(
        scheduler.status.as_ref().and_then(|status| status.available_replicas),
        Some(1),
        "{:?}",
        scheduler.status
    );
    // ... and at work: a pod created in the tenant is judged by it. The tenant has no node,
    // so the verdict is Unschedulable; without a scheduler no pod ever gets one.
    let tenant = ns.tenant_client(TENANT).await.expect("tenant client");
    let tenant_pods: kube::Api<Pod> = kube::Api::namespaced(tenant, "default");
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "waits-for-a-node"},
        "spec": {"containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.10"}]},
    }))
    .expect("pod");
    // The default ServiceAccount, which admission requires, comes with the controller-manager.
    wait_for("a pod created in the tenant", Duration::from_secs(60), async || {
        match tenant_pods.create(&kube::api::PostParams::default(), &pod).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
            Err(error) => Err(error.to_string()),
        }
    })
    .await;
    let verdict = wait_for("the tenant's scheduler to judge the pod", Duration::from_secs(60), async || {
        let pod = tenant_pods.get("waits-for-a-node").await.map_err(|error| error.to_string())?;
        let conditions = pod.status.and_then(|status| status.conditions).unwrap_or_default();
        match conditions.into_iter().find(|condition| condition.type_ == "PodScheduled") {
            Some(condition) => Ok(condition),
            None => Err("no PodScheduled condition yet".to_string()),
        }
    })
    .await;
    assert_eq!(
        (verdict.status.as_str(), verdict.reason.as_deref()),
        ("False", Some("Unschedulable")),
        "{verdict:?}"
    );
    assert!(
        condition_message(&ready, "EtcdReady").contains("member list has 1"),
        "{}",
        condition_message(&ready, "EtcdReady")
    );
    assert!(condition_message(&ready, "APIServerReady").contains("/livez ok on 1 pods"));

    // (b) Freeze the tenant apiserver: it keeps its TCP port open but never answers.
    let pods = ns.api::<Pod>();
    let selector = names.component_selector(Component::ApiServer);
    let pod_uids = |list: Vec<Pod>| list.iter().filter_map(|pod| pod.uid()).collect::<Vec<_>>();
    // Ready can come while the first rollout's old pod is still terminating: wait for one
    // pod and one host process, so the process frozen is the pod's that serves.
    let (before, pids) =
        wait_for("one apiserver pod and one host process", Duration::from_secs(90), async || {
            let listed = pods.list(&ListParams::default().labels(&selector)).await;
            let before = pod_uids(listed.map_err(|error| format!("cannot list pods: {error}"))?.items);
            let pids = tenant_apiserver_pids(&names);
            if before.len() == 1 && pids.len() == 1 {
                Ok((before, pids))
            } else {
                Err(format!("pods {before:?}, pids {pids:?}"))
            }
        })
        .await;
    let status = Command::new("kill").args(["-STOP", &pids[0].to_string()]).status().expect("kill");
    assert!(status.success(), "SIGSTOP {}", pids[0]);
    let frozen = Frozen(pids[0]);
    let frozen_at = Instant::now();
    eprintln!("stopped tenant apiserver pid {}", pids[0]);

    // The operator must see it: APIServerReady flips to ProbeFailed (after the debounce)
    // or the pod is restarted, whichever comes first; then the tenant is Ready again.
    let mut detected: Option<Duration> = None;
    let recovered = ns
        .wait_for_tenant(TENANT, "recovery from a frozen apiserver", RECOVERY_TIMEOUT, |tenant| {
            let apiserver = find_condition(tenant, "APIServerReady");
            // ProbeFailed while the Deployment still counts the pod available; once the kubelet
            // marks it unready the workload reason wins and the probe failure is in the message.
            if detected.is_none()
                && apiserver.is_some_and(|c| c.status == "False" && c.message.contains("probe failed"))
            {
                detected = Some(frozen_at.elapsed());
                eprintln!("detected after {:?}: {}", frozen_at.elapsed(), describe_tenant(tenant));
            }
            // Ready as judged with the probes (not a bare workload status): the replacement
            // answers and the controller manager, which lost its lease meanwhile, renews it again.
            detected.is_some()
                && is_ready(tenant)
                && condition_message(tenant, "APIServerReady").contains("probe: /readyz ok")
                && condition_message(tenant, "ControllerManagerReady").contains("probe: leader Lease fresh")
                && condition_message(tenant, "SchedulerReady").contains("probe: leader Lease fresh")
        })
        .await;
    let recovery = frozen_at.elapsed();
    drop(frozen);
    eprintln!("Ready again {recovery:?} after SIGSTOP: {}", describe_tenant(&recovered));

    let restarts: Vec<Event> = ns
        .api::<Event>()
        .list(&ListParams::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter(|event| event.reason.as_deref() == Some("RestartedAPIServerPod"))
        .collect();
    let after = pod_uids(pods.list(&ListParams::default().labels(&selector)).await.expect("pods").items);
    eprintln!(
        "RestartedAPIServerPod events: {:?}; apiserver pods before {before:?}, after {after:?}",
        restarts.iter().map(|event| event.message.clone().unwrap_or_default()).collect::<Vec<_>>()
    );
    assert!(
        !restarts.is_empty(),
        "the operator restarted the frozen pod (see {})",
        operator.log_path.display()
    );
    assert!(
        restarts[0].message.as_deref().is_some_and(|message| message.contains("did not answer /livez")),
        "{:?}",
        restarts[0].message
    );
    assert!(!after.contains(&before[0]), "the frozen pod was replaced");
    assert!(detected.is_some_and(|detected| detected < recovery));
    assert!(recovery < RECOVERY_TIMEOUT);
    drop(operator);
}
