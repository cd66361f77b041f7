//! The operator as it ships: its image (hack/build-operator-image.sh, packing the binary
//! under test), deployed from `deploy/` into the meta cluster with its own ServiceAccount
//! and RBAC, two replicas behind leader election, creating a real tenant and deleting it.
//!
//! What it proves: the image starts; the ClusterRole and the Lease Role grant every
//! call the operator makes (any "forbidden" in a replica's log fails the test); exactly
//! one replica leads; the tenant becomes Ready and its admin kubeconfig reaches the
//! tenant apiserver; deletion (the finalizer path) completes under the same RBAC.
//!
//! Needs the running local meta cluster through KUBECONFIG, root (the image script
//! imports into containerd) and `kubectl` (`$KUBECTL`, else the one hack/ built). Other
//! people's operators share the meta cluster (the demo's among them, in `nestor-system`),
//! so what deploy/ renders is moved before it is applied: into a namespace of this run
//! (`nestor-it-<random>`) with cluster-scoped RBAC of names of its own, and with
//! `--watch-namespace` of this test's namespace, so it never sees anyone else's tenants
//! (and an operator watching every namespace leaves this one's tenant to it, see
//! `nestor::reconcile::scope`). `make demo` followed by `make test` therefore works. The
//! test deletes what it created at the end.

mod support;

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use futures::FutureExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret, Service};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{Api, DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config, ResourceExt};
use nestor::api::TenantCluster;
use nestor::names::TenantNames;
use serde::Deserialize;
use serde_json::{Value, json};
use support::{describe_tenant, is_ready, poll_for};

/// Where deploy/ puts the operator, and the names its manifests use.
const DEPLOY_NAMESPACE: &str = "nestor-system";
const OPERATOR_NAME: &str = "nestor-operator";

/// The random suffix of this run's operator namespace and cluster-scoped RBAC.
fn run_suffix() -> &'static str {
    static SUFFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SUFFIX.get_or_init(|| format!("{:06x}", rand::random::<u32>() & 0xff_ffff))
}

/// The namespace this run deploys the operator into, instead of deploy/'s `nestor-system`.
fn operator_namespace() -> String {
    format!("nestor-it-{}", run_suffix())
}

/// This run's name for deploy/'s cluster-scoped RBAC (`nestor-operator`).
fn cluster_rbac_name() -> String {
    format!("{OPERATOR_NAME}-it-{}", run_suffix())
}
const OPERATOR_SELECTOR: &str = "app.kubernetes.io/name=nestor-operator";
/// The image deploy/operator.yaml names; the test pins the build's sha tag instead.
const DEV_IMAGE: &str = "nestor.local/nestor-operator:dev";
const REPLICAS: usize = 2;
const FIELD_MANAGER: &str = "nestor-in-cluster-test";

const ROLLOUT_TIMEOUT: Duration = Duration::from_secs(180);
/// A one-member ephemeral tenant is Ready in about 40 s.
const READY_TIMEOUT: Duration = Duration::from_secs(240);
const DELETE_TIMEOUT: Duration = Duration::from_secs(120);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("operator/ has a parent").to_path_buf()
}

/// `$KUBECTL`, else the kubectl hack/build-upstream.sh built, else `kubectl` on PATH.
fn kubectl() -> PathBuf {
    if let Some(path) = std::env::var_os("KUBECTL") {
        return path.into();
    }
    let versions = std::fs::read_to_string(repo_root().join("hack/versions.env")).expect("hack/versions.env");
    let version = versions
        .lines()
        .find_map(|line| line.strip_prefix("KUBERNETES_VERSION="))
        .expect("KUBERNETES_VERSION in hack/versions.env");
    let cache = std::env::var_os("NESTOR_CACHE").map(PathBuf::from).unwrap_or_else(|| {
        let home = std::env::var_os("HOME").expect("HOME");
        Path::new(&home).join(".cache/nestor")
    });
    let built = cache.join(format!("bin/kubernetes-{version}/kubectl"));
    if built.exists() { built } else { "kubectl".into() }
}

/// Runs `command` (feeding `stdin`), panics with its stderr unless it succeeds, returns stdout.
fn run(mut command: Command, stdin: Option<&str>) -> String {
    let described = format!("{command:?}");
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    if stdin.is_some() {
        command.stdin(Stdio::piped());
    }
    let mut child = command.spawn().unwrap_or_else(|error| panic!("cannot start {described}: {error}"));
    if let Some(input) = stdin {
        use std::io::Write as _;
        let mut pipe = child.stdin.take().expect("piped stdin");
        pipe.write_all(input.as_bytes()).expect("write stdin");
    }
    let output = child.wait_with_output().expect("wait for command");
    assert!(
        output.status.success(),
        "{described} failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8 output")
}

/// Builds and imports the operator image from the `nestor` binary cargo built for this
/// test run (a no-op when up to date); returns its sha-tagged reference. The script
/// must not run cargo itself: the running `cargo test` holds the build directory lock.
fn build_image() -> String {
    let mut command = Command::new(repo_root().join("hack/build-operator-image.sh"));
    command.env("NESTOR_OPERATOR_BINARY", env!("CARGO_BIN_EXE_nestor"));
    let stdout = run(command, None);
    let reference = stdout.lines().last().expect("the script prints the image reference").trim().to_string();
    assert!(reference.starts_with("nestor.local/nestor-operator:sha-"), "unexpected reference {reference:?}");
    reference
}

/// `kubectl kustomize deploy/` (as YAML documents), with the operator's image set to `image` and
/// its watch limited to `watch_namespace`. Panics if deploy/ no longer has the shape
/// this relies on, rather than deploying an operator that watches every namespace.
fn render_deploy(image: &str, watch_namespace: &str) -> String {
    let mut command = Command::new(kubectl());
    command.arg("kustomize").arg(repo_root().join("deploy"));
    let rendered = run(command, None);
    let mut items: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&rendered)
        .map(|document| Value::deserialize(document).expect("kustomize output is YAML"))
        .collect();
    // Into this run's namespace, with cluster-scoped RBAC of this run's names.
    let (namespace, rbac) = (operator_namespace(), cluster_rbac_name());
    for item in items.iter_mut() {
        if item["metadata"]["namespace"] == DEPLOY_NAMESPACE {
            item["metadata"]["namespace"] = json!(namespace);
        }
        let cluster_rbac = item["kind"] == "ClusterRole" || item["kind"] == "ClusterRoleBinding";
        if (item["kind"] == "Namespace" && item["metadata"]["name"] == DEPLOY_NAMESPACE)
            || (cluster_rbac && item["metadata"]["name"] == OPERATOR_NAME)
        {
            item["metadata"]["name"] = json!(if cluster_rbac { &rbac } else { &namespace });
        }
        if item["roleRef"]["kind"] == "ClusterRole" && item["roleRef"]["name"] == OPERATOR_NAME {
            item["roleRef"]["name"] = json!(rbac);
        }
        // get_mut, not indexing: IndexMut would insert a `subjects: null` into every object.
        for subject in item.get_mut("subjects").and_then(Value::as_array_mut).into_iter().flatten() {
            if subject["namespace"] == DEPLOY_NAMESPACE {
                subject["namespace"] = json!(namespace);
            }
        }
    }
    let deployment = items
        .iter_mut()
        .find(|item| item["kind"] == "Deployment" && item["metadata"]["name"] == OPERATOR_NAME)
        .expect("deploy/ has the operator Deployment");
    assert_eq!(deployment["metadata"]["namespace"], json!(operator_namespace()));
    let container = &mut deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], DEV_IMAGE, "deploy/operator.yaml names the local dev image");
    container["image"] = json!(image);
    container["args"]
        .as_array_mut()
        .expect("the operator container has args")
        .push(json!(format!("--watch-namespace={watch_namespace}")));
    // Documents, not a v1 List: kubectl validates a List client-side against OpenAPI v2,
    // which refuses the `null` the CRD's nullable phase enum carries.
    items.iter().map(|item| serde_yaml_ng::to_string(item).expect("YAML")).collect::<Vec<_>>().join("---\n")
}

fn apply(manifests: &str) {
    let mut command = Command::new(kubectl());
    command.args([
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager",
        FIELD_MANAGER,
        "-f",
        "-",
    ]);
    run(command, Some(manifests));
}

/// [`support::wait_for`], with the operator pods' last log lines in the panic on timeout
/// (read only then: fetching them on every poll would load the shared cluster).
async fn wait_for_operator<T>(
    client: &Client,
    what: &str,
    timeout: Duration,
    probe: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    match poll_for(timeout, Duration::from_secs(1), probe).await {
        Ok(value) => value,
        Err(state) => panic!(
            "timed out after {timeout:?} waiting for {what}; last observed: {state}\n{}",
            describe_operator(client).await
        ),
    }
}

/// The operator pods' names and their logs.
async fn operator_logs(client: &Client) -> Vec<(String, String)> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), &operator_namespace());
    let mut logs = Vec::new();
    for pod in pods.list(&ListParams::default().labels(OPERATOR_SELECTOR)).await.expect("list operator pods")
    {
        let name = pod.name_any();
        let text = pods
            .logs(&name, &LogParams::default())
            .await
            .unwrap_or_else(|error| format!("(no logs: {error})"));
        logs.push((name, text));
    }
    logs
}

async fn describe_operator(client: &Client) -> String {
    operator_logs(client)
        .await
        .into_iter()
        .map(|(pod, log)| {
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            format!("--- {pod} (last lines)\n{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `Ok` once namespace `name` no longer exists.
async fn namespace_gone(namespaces: &Api<Namespace>, name: &str) -> Result<(), String> {
    match namespaces.get_opt(name).await {
        Ok(None) => Ok(()),
        Ok(Some(_)) => Err(format!("namespace {name} still exists")),
        Err(error) => Err(format!("cannot read namespace {name}: {error}")),
    }
}

/// Deletes the test namespace (letting the operator run the finalizer; stripping it if
/// the operator cannot), then everything deploy/ created except the shared CRD.
async fn clean_up(client: &Client, test_namespace: &str) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let _ = namespaces.delete(test_namespace, &DeleteParams::default()).await;
    // Best effort: whatever is left after a minute loses its finalizer below.
    let _ = poll_for(Duration::from_secs(60), Duration::from_secs(1), async || {
        namespace_gone(&namespaces, test_namespace).await
    })
    .await;
    let tenants: Api<TenantCluster> = Api::namespaced(client.clone(), test_namespace);
    if let Ok(left) = tenants.list(&ListParams::default()).await {
        for tenant in left {
            eprintln!("cleanup: removing the finalizer of {test_namespace}/{}", tenant.name_any());
            let patch = json!({ "metadata": { "finalizers": null } });
            let _ = tenants.patch(&tenant.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await;
        }
    }
    let _ = namespaces.delete(&operator_namespace(), &DeleteParams::default()).await;
    let rbac = cluster_rbac_name();
    let _ = Api::<ClusterRoleBinding>::all(client.clone()).delete(&rbac, &DeleteParams::default()).await;
    let _ = Api::<ClusterRole>::all(client.clone()).delete(&rbac, &DeleteParams::default()).await;
}

#[tokio::test]
async fn deployed_operator_runs_a_tenant_with_its_own_rbac_and_one_leader() {
    let client = Client::try_default()
        .await
        .expect("the in-cluster test needs the meta cluster: set KUBECONFIG or start it (hack/meta-up.sh)");

    let test_namespace = format!("nestor-incluster-{:08x}", rand::random::<u32>());
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let namespace: Namespace =
        serde_json::from_value(json!({ "metadata": { "name": test_namespace } })).expect("namespace object");
    namespaces.create(&PostParams::default(), &namespace).await.expect("create the test namespace");

    let outcome = AssertUnwindSafe(exercise_operator(&client, &test_namespace)).catch_unwind().await;
    clean_up(&client, &test_namespace).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn exercise_operator(client: &Client, test_namespace: &str) {
    let image = tokio::task::spawn_blocking(build_image).await.expect("image build task");
    let manifests = render_deploy(&image, test_namespace);
    tokio::task::spawn_blocking(move || apply(&manifests)).await.expect("apply task");

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &operator_namespace());
    wait_for_operator(client, "the operator Deployment to roll out", ROLLOUT_TIMEOUT, async || {
        let deployment = deployments.get(OPERATOR_NAME).await.map_err(|error| error.to_string())?;
        let status = deployment.status.ok_or("no status")?;
        let want = Some(REPLICAS as i32);
        if status.observed_generation == deployment.metadata.generation
            && status.updated_replicas == want
            && status.ready_replicas == want
            && status.available_replicas == want
        {
            Ok(())
        } else {
            Err(format!("{status:?}"))
        }
    })
    .await;

    // One etcd member without a volume: the lightest tenant that runs for real.
    let names = TenantNames::new("in-cluster", test_namespace);
    let tenants: Api<TenantCluster> = Api::namespaced(client.clone(), test_namespace);
    let tenant: TenantCluster = serde_json::from_value(json!({
        "apiVersion": "nestor.dev/v1alpha1",
        "kind": "TenantCluster",
        "metadata": { "name": names.tenant },
        "spec": {
            "version": "1.34.2",
            "imageRepository": "nestor.local",
            "etcd": { "replicas": 1, "storage": { "ephemeral": true } },
        },
    }))
    .expect("TenantCluster object");
    tenants.create(&PostParams::default(), &tenant).await.expect("create the tenant");

    let ready = wait_for_operator(client, "the tenant to become Ready", READY_TIMEOUT, async || {
        let tenant = tenants.get(&names.tenant).await.map_err(|error| error.to_string())?;
        if is_ready(&tenant) { Ok(tenant) } else { Err(describe_tenant(&tenant)) }
    })
    .await;

    assert_tenant_apiserver_answers(client, &names, &ready).await;

    // Deleting runs the finalizer (status patch, volume claims) with the same RBAC.
    tenants.delete(&names.tenant, &DeleteParams::default()).await.expect("delete the tenant");
    wait_for_operator(client, "the tenant's finalizer to complete", DELETE_TIMEOUT, async || {
        match tenants.get_opt(&names.tenant).await {
            Ok(None) => Ok(()),
            Ok(Some(tenant)) => Err(describe_tenant(&tenant)),
            Err(error) => Err(error.to_string()),
        }
    })
    .await;

    assert_one_leader_and_no_forbidden_calls(client).await;
}

/// The admin kubeconfig, pointed at the apiserver Service's ClusterIP (the host cannot
/// resolve `*.svc`) with the in-cluster name kept for TLS, gets `ok` from `/readyz`.
async fn assert_tenant_apiserver_answers(client: &Client, names: &TenantNames, tenant: &TenantCluster) {
    let status = tenant.status.as_ref().expect("a Ready tenant has a status");
    let secret_name = status.kubeconfig_secret_name.as_deref().expect("status names the kubeconfig Secret");
    assert_eq!(secret_name, names.admin_kubeconfig_secret());
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &names.namespace);
    let secret = secrets.get(secret_name).await.expect("read the admin kubeconfig Secret");
    let value = secret.data.as_ref().and_then(|data| data.get("value")).expect("Secret has key value");
    let kubeconfig = Kubeconfig::from_yaml(std::str::from_utf8(&value.0).expect("UTF-8 kubeconfig"))
        .expect("the Secret holds a kubeconfig");
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("the kubeconfig is complete");
    assert_eq!(config.cluster_url.host(), Some(names.apiserver_service_host().as_str()));
    let port = config.cluster_url.port_u16().unwrap_or(443);

    let services: Api<Service> = Api::namespaced(client.clone(), &names.namespace);
    let service = services.get(&names.apiserver()).await.expect("read the apiserver Service");
    let cluster_ip =
        service.spec.and_then(|spec| spec.cluster_ip).expect("the apiserver Service has a ClusterIP");
    config.cluster_url = format!("https://{cluster_ip}:{port}").parse().expect("ClusterIP URL");
    config.tls_server_name = Some(names.apiserver_service_host());
    let tenant_client = Client::try_from(config).expect("a client for the tenant");
    let request = axum::http::Request::get("/readyz").body(Vec::new()).expect("request");
    let readyz = tenant_client.request_text(request).await.expect("the tenant apiserver answers /readyz");
    assert_eq!(readyz, "ok");
}

/// Both replicas ran without a restart, neither was refused by the API (a missing RBAC
/// rule), and exactly one of them acquired the Lease and holds it.
async fn assert_one_leader_and_no_forbidden_calls(client: &Client) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), &operator_namespace());
    let pods = pods.list(&ListParams::default().labels(OPERATOR_SELECTOR)).await.expect("list operator pods");
    assert_eq!(
        pods.items.len(),
        REPLICAS,
        "operator pods: {:?}",
        pods.items.iter().map(|p| p.name_any()).collect::<Vec<_>>()
    );
    for pod in &pods.items {
        let restarts: i32 = pod
            .status
            .iter()
            .flat_map(|status| status.container_statuses.iter().flatten())
            .map(|container| container.restart_count)
            .sum();
        assert_eq!(
            restarts,
            0,
            "operator pod {} restarted\n{}",
            pod.name_any(),
            describe_operator(client).await
        );
    }

    let logs = operator_logs(client).await;
    for (pod, log) in &logs {
        let refused: Vec<&str> =
            log.lines().filter(|line| line.to_lowercase().contains("forbidden")).collect();
        assert!(
            refused.is_empty(),
            "operator pod {pod} was refused by the API (missing RBAC rule?):\n{}",
            refused.join("\n")
        );
    }
    let leaders: Vec<&str> =
        logs.iter().filter(|(_, log)| log.contains("acquired lease")).map(|(pod, _)| pod.as_str()).collect();
    assert_eq!(leaders.len(), 1, "replicas that acquired the lease: {leaders:?}");

    let leases: Api<Lease> = Api::namespaced(client.clone(), &operator_namespace());
    let lease = leases.get(OPERATOR_NAME).await.expect("the operator's Lease exists in its namespace");
    let holder = lease.spec.and_then(|spec| spec.holder_identity).expect("the Lease has a holder");
    // Identities are "<pod name>-<random suffix>" (nestor::leader::default_identity).
    assert!(
        holder.starts_with(&format!("{}-", leaders[0])),
        "lease held by {holder}, but {} acquired it",
        leaders[0]
    );
}
