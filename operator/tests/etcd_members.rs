//! etcd membership repair against the real meta cluster: a 3-member tenant with
//! ephemeral etcd storage loses member 1's data (its pod is deleted, and its emptyDir
//! with it); the operator removes and re-adds that member, and the tenant API keeps
//! answering throughout.
//!
//! Needs the local meta cluster (KUBECONFIG, nestor.local images). Everything it
//! starts (operator, namespace) is undone by guards, also when an assertion fails.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Event, Namespace, Pod, Secret, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, ResourceExt};
use nestor::api::{Phase, TenantCluster};
use nestor::names::TenantNames;
use serde_json::json;

/// Tenant name inside the test namespace.
const TENANT: &str = "team-m";
/// Three members start together; the machine is shared.
const READY_TIMEOUT: Duration = Duration::from_secs(300);
/// Probe interval given to the operator: members are replaced after 30 s not Ready.
const HEALTH_INTERVAL: &str = "5s";
/// Bound on detection plus replacement of the lost member.
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(180);

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

/// A client of the tenant apiserver through its Service's ClusterIP, as the admin.
async fn tenant_client(meta: &Client, names: &TenantNames) -> Client {
    let secrets: Api<Secret> = Api::namespaced(meta.clone(), &names.namespace);
    let secret = secrets.get(&names.admin_kubeconfig_secret()).await.expect("admin kubeconfig");
    let data = secret.data.expect("data");
    let yaml = String::from_utf8(data.get("value").expect("value").0.clone()).expect("utf-8");
    let service = Api::<Service>::namespaced(meta.clone(), &names.namespace)
        .get(&names.apiserver())
        .await
        .expect("apiserver Service");
    let cluster_ip = service.spec.and_then(|spec| spec.cluster_ip).expect("ClusterIP");
    let kubeconfig = Kubeconfig::from_yaml(&yaml).expect("kubeconfig");
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("config");
    config.cluster_url = format!("https://{cluster_ip}:6443").parse().expect("url");
    config.tls_server_name = Some(names.apiserver_service_host());
    config.connect_timeout = Some(Duration::from_secs(2));
    config.read_timeout = Some(Duration::from_secs(2));
    Client::try_from(config).expect("tenant client")
}

/// `GET /readyz` once; the failure as text.
async fn readyz(client: &Client) -> Result<(), String> {
    let request = hyper::Request::get("/readyz").body(Vec::new()).map_err(|error| error.to_string())?;
    let text = client.request_text(request).await.map_err(|error| error.to_string())?;
    if text.trim() == "ok" { Ok(()) } else { Err(text) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_lost_its_data_is_replaced_while_the_api_keeps_answering() {
    let client = Client::try_default().await.expect("needs the meta cluster: set KUBECONFIG");
    let namespace_name = format!("nestor-members-{:08x}", rand::random::<u32>());
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
            "etcd": {"replicas": 3, "storage": {"ephemeral": true}},
        },
    }))
    .expect("tenant");
    tenants.create(&PostParams::default(), &tenant).await.expect("create the tenant");

    // Ready with 3 healthy members, the cluster ID recorded and members told to join from now on.
    let started = Instant::now();
    let ready = wait_for(&tenants, "Ready with 3 members and a cluster ID", READY_TIMEOUT, |tenant| {
        is_ready(tenant)
            && message_of(tenant, "EtcdReady").contains("3/3 members healthy")
            && tenant.status.as_ref().is_some_and(|status| status.etcd_cluster_id.is_some())
    })
    .await;
    eprintln!("Ready after {:?}: {}", started.elapsed(), describe(&ready));
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace_name);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let state = config_maps
            .get(&names.etcd())
            .await
            .expect("etcd ConfigMap")
            .data
            .and_then(|data| data.get("initial-cluster-state").cloned());
        if state.as_deref() == Some("existing") {
            break;
        }
        assert!(Instant::now() < deadline, "ConfigMap still says {state:?}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    // Probe the tenant API every second in the background.
    let tenant_api = tenant_client(&client, &names).await;
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
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace_name);
    let member = names.etcd_member_name(1);
    let old_uid = pods.get(&member).await.expect("member 1 pod").uid().expect("uid");
    pods.delete(&member, &DeleteParams::default()).await.expect("delete member 1's pod");
    let deleted_at = Instant::now();
    eprintln!("deleted pod {member} ({old_uid})");

    let events: Api<Event> = Api::namespaced(client.clone(), &namespace_name);
    let deadline = deleted_at + RECOVERY_TIMEOUT;
    let (replaced, recovered) = loop {
        let replaced: Vec<String> = events
            .list(&ListParams::default())
            .await
            .expect("events")
            .items
            .into_iter()
            .filter(|event| event.reason.as_deref() == Some("EtcdMemberReplaced"))
            .filter_map(|event| event.message)
            .collect();
        let tenant = tenants.get(TENANT).await.expect("tenant");
        if !replaced.is_empty()
            && is_ready(&tenant)
            && message_of(&tenant, "EtcdReady").contains("3/3 members healthy")
        {
            break (replaced, tenant);
        }
        assert!(
            Instant::now() < deadline,
            "not replaced and Ready within {RECOVERY_TIMEOUT:?} (events {replaced:?}; operator log {}): {}",
            operator.log.display(),
            describe(&tenant)
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let recovery = deleted_at.elapsed();
    stop.store(true, Ordering::Relaxed);
    prober.await.expect("prober");
    let (probes, failures) = (probes.load(Ordering::Relaxed), failures.load(Ordering::Relaxed));
    eprintln!("EtcdMemberReplaced: {replaced:?}");
    eprintln!("recovered {recovery:?} after the pod deletion: {}", describe(&recovered));
    eprintln!("tenant API probes: {probes}, failed: {failures}");

    assert!(replaced[0].contains(&format!("etcd member {member} replaced")), "{}", replaced[0]);
    assert!(replaced[0].contains("old ID") && replaced[0].contains("new ID"), "{}", replaced[0]);
    assert!(recovered.status.as_ref().and_then(|status| status.phase) == Some(Phase::Ready));
    assert_eq!(failures, 0, "the tenant API failed {failures} of {probes} probes");
    drop(operator);
}
