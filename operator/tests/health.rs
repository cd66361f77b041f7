//! Health probes and healing against the real meta cluster, end to end: an operator
//! subprocess (watching only this test's namespace) brings a light tenant up, its
//! conditions carry the probe results, and a tenant apiserver frozen with SIGSTOP is
//! detected and recovered.
//!
//! Needs the local meta cluster (KUBECONFIG, nestor.local images) and root, to find
//! and signal the tenant apiserver's host process. Fails, rather than skips, without
//! them. Everything it starts (operator, namespace, signals) is undone by guards,
//! also when an assertion fails.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, Namespace, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use nestor::api::{Phase, TenantCluster};
use nestor::names::{Component, TenantNames};
use serde_json::json;

/// Tenant name inside the test namespace.
const TENANT: &str = "team-h";
/// A 1-member ephemeral tenant is Ready in ~40 s on an idle machine; the machine is shared.
const READY_TIMEOUT: Duration = Duration::from_secs(240);
/// Probe interval given to the operator: debounce 10 s, restart after 15 s of failures.
const HEALTH_INTERVAL: &str = "5s";
/// Bound on detection plus recovery of the frozen apiserver.
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(240);

/// The operator subprocess; killed (by its own pid) when dropped.
struct Operator {
    child: Child,
    log: PathBuf,
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Operator {
    fn start(namespace: &str) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("free port")
            .port();
        let log = std::env::temp_dir().join(format!("{namespace}-operator.log"));
        let file = std::fs::File::create(&log).expect("operator log");
        // The shared target directory's binary can be rebuilt from another branch while this
        // test runs; NESTOR_TEST_OPERATOR_BIN points at a private copy when that matters.
        let binary =
            std::env::var("NESTOR_TEST_OPERATOR_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_nestor").into());
        let child = Command::new(binary)
            .args(["operator", "--no-leader-election", "--metrics-addr"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["--watch-namespace", namespace])
            .env("NESTOR_HEALTH_INTERVAL", HEALTH_INTERVAL)
            .env("RUST_LOG", "info,nestor=debug")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("start the operator");
        eprintln!("operator pid {} logs to {}", child.id(), log.display());
        Self { child, log }
    }
}

/// A stopped process; continued when dropped, whatever happened meanwhile.
struct Frozen(u32);

impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-CONT", &self.0.to_string()]).status();
    }
}

/// The test namespace; its tenant's finalizer is cleared and the namespace deleted when dropped.
struct TestNamespace {
    client: Client,
    name: String,
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        let (client, name) = (self.client.clone(), self.name.clone());
        // Drop runs inside the test's runtime: do the cleanup on a thread with its own.
        let cleanup = std::thread::spawn(move || {
            let runtime =
                tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(async move {
                let tenants: Api<TenantCluster> = Api::namespaced(client.clone(), &name);
                // The operator is gone by now; nobody else would remove the finalizer.
                let unfinalize = json!({"metadata": {"finalizers": null}});
                let _ = tenants.patch(TENANT, &PatchParams::default(), &Patch::Merge(&unfinalize)).await;
                let _ = Api::<Namespace>::all(client).delete(&name, &DeleteParams::default()).await;
            });
        });
        let _ = cleanup.join();
    }
}

fn find_condition<'a>(tenant: &'a TenantCluster, type_: &str) -> Option<&'a Condition> {
    tenant.status.as_ref()?.conditions.iter().find(|condition| condition.type_ == type_)
}

fn describe(tenant: &TenantCluster) -> String {
    let Some(status) = &tenant.status else { return "no status".into() };
    let conditions: Vec<String> = status
        .conditions
        .iter()
        .map(|c| format!("{}={} {} ({})", c.type_, c.status, c.reason, c.message))
        .collect();
    format!("phase {:?}: {}", status.phase, conditions.join(" | "))
}

/// Polls the tenant until `done` holds or `timeout` passes (then panics with the last status).
async fn wait_for(
    tenants: &Api<TenantCluster>,
    what: &str,
    timeout: Duration,
    mut done: impl FnMut(&TenantCluster) -> bool,
) -> TenantCluster {
    let deadline = Instant::now() + timeout;
    loop {
        let tenant = tenants.get(TENANT).await.expect("read the tenant");
        if done(&tenant) {
            return tenant;
        }
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}; last {}", describe(&tenant));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn is_ready(tenant: &TenantCluster) -> bool {
    tenant.status.as_ref().and_then(|status| status.phase) == Some(Phase::Ready)
}

fn message_of(tenant: &TenantCluster, type_: &str) -> String {
    find_condition(tenant, type_).map(|condition| condition.message.clone()).unwrap_or_default()
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
    let client = Client::try_default().await.expect("needs the meta cluster: set KUBECONFIG");
    let namespace_name = format!("nestor-health-{:08x}", rand::random::<u32>());
    let namespace: Namespace =
        serde_json::from_value(json!({"metadata": {"name": namespace_name}})).expect("namespace");
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .expect("namespace");
    let _namespace = TestNamespace { client: client.clone(), name: namespace_name.clone() };
    let operator = Operator::start(&namespace_name);
    let names = TenantNames::new(TENANT, &namespace_name);

    let tenants: Api<TenantCluster> = Api::namespaced(client.clone(), &namespace_name);
    let tenant: TenantCluster = serde_json::from_value(json!({
        "apiVersion": "nestor.dev/v1alpha1",
        "kind": "TenantCluster",
        "metadata": {"name": TENANT, "namespace": namespace_name},
        "spec": {
            "version": "1.34.2",
            "imageRepository": "nestor.local",
            "etcd": {"replicas": 1, "storage": {"ephemeral": true}},
        },
    }))
    .expect("tenant");
    tenants.create(&PostParams::default(), &tenant).await.expect("create the tenant");

    // (a) Ready, with each component condition showing what its probe checked.
    let started = Instant::now();
    let ready = wait_for(&tenants, "Ready with probe results", READY_TIMEOUT, |tenant| {
        is_ready(tenant)
            && message_of(tenant, "EtcdReady").contains("probe: 1/1 members healthy")
            && message_of(tenant, "APIServerReady").contains("probe: /readyz ok")
            && message_of(tenant, "ControllerManagerReady").contains("probe: leader Lease fresh")
    })
    .await;
    eprintln!("Ready with probe results after {:?}: {}", started.elapsed(), describe(&ready));
    assert!(
        message_of(&ready, "EtcdReady").contains("member list has 1"),
        "{}",
        message_of(&ready, "EtcdReady")
    );
    assert!(message_of(&ready, "APIServerReady").contains("/livez ok on 1 pods"));

    // (b) Freeze the tenant apiserver: it keeps its TCP port open but never answers.
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace_name);
    let selector = names
        .selector_labels(Component::ApiServer)
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect::<Vec<_>>()
        .join(",");
    let pod_uids = |list: Vec<Pod>| list.iter().filter_map(|pod| pod.uid()).collect::<Vec<_>>();
    // Ready can come while the first rollout's old pod is still terminating: wait for one
    // pod and one host process, so the process frozen is the pod's that serves.
    let deadline = Instant::now() + Duration::from_secs(90);
    let (before, pids) = loop {
        let before = pod_uids(pods.list(&ListParams::default().labels(&selector)).await.expect("pods").items);
        let pids = tenant_apiserver_pids(&names);
        if before.len() == 1 && pids.len() == 1 {
            break (before, pids);
        }
        assert!(
            Instant::now() < deadline,
            "want one apiserver pod and process: pods {before:?}, pids {pids:?}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let status = Command::new("kill").args(["-STOP", &pids[0].to_string()]).status().expect("kill");
    assert!(status.success(), "SIGSTOP {}", pids[0]);
    let frozen = Frozen(pids[0]);
    let frozen_at = Instant::now();
    eprintln!("stopped tenant apiserver pid {}", pids[0]);

    // The operator must see it: APIServerReady flips to ProbeFailed (after the debounce)
    // or the pod is restarted, whichever comes first; then the tenant is Ready again.
    let mut detected: Option<Duration> = None;
    let recovered = wait_for(&tenants, "recovery from a frozen apiserver", RECOVERY_TIMEOUT, |tenant| {
        let apiserver = find_condition(tenant, "APIServerReady");
        // ProbeFailed while the Deployment still counts the pod available; once the kubelet
        // marks it unready the workload reason wins and the probe failure is in the message.
        if detected.is_none()
            && apiserver.is_some_and(|c| c.status == "False" && c.message.contains("probe failed"))
        {
            detected = Some(frozen_at.elapsed());
            eprintln!("detected after {:?}: {}", frozen_at.elapsed(), describe(tenant));
        }
        // Ready as judged with the probes (not a bare workload status): the replacement
        // answers and the controller manager, which lost its lease meanwhile, renews it again.
        detected.is_some()
            && is_ready(tenant)
            && message_of(tenant, "APIServerReady").contains("probe: /readyz ok")
            && message_of(tenant, "ControllerManagerReady").contains("probe: leader Lease fresh")
    })
    .await;
    let recovery = frozen_at.elapsed();
    drop(frozen);
    eprintln!("Ready again {recovery:?} after SIGSTOP: {}", describe(&recovered));

    let events: Api<Event> = Api::namespaced(client.clone(), &namespace_name);
    let restarts: Vec<Event> = events
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
    assert!(!restarts.is_empty(), "the operator restarted the frozen pod (see {})", operator.log.display());
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
