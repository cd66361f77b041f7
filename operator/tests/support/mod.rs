//! Harness of the operator integration tests: the real `nestor` binary run as a child
//! process against the meta cluster, one fresh namespace per test, bounded waits, and
//! readers for the operator's `/metrics` and the meta apiserver's audit log.
//!
//! Each operator is started with `--watch-namespace` on its test's namespace, so it leaves
//! other people's tenants in the shared meta cluster alone and its metrics count only the
//! test's own tenant. [`in_namespace`] also holds a process-wide lock for the whole test:
//! tests of one binary run one at a time whatever `--test-threads` says, which keeps the
//! two-core machine from timing out waits.

#![allow(dead_code)] // Each test binary uses its own subset of the helpers.

pub mod worker;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::fs::File;
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::net::{SocketAddr, TcpListener};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use futures::FutureExt;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, PersistentVolumeClaim, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config, Resource, ResourceExt};
use nestor::api::{Phase, TenantCluster};
use nestor::names::{TENANT_LABEL, TenantNames};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::{Mutex, MutexGuard};

/// Kubeconfig of the local meta cluster, used when `KUBECONFIG` is not set.
pub const META_KUBECONFIG: &str = "/var/lib/nestor-meta/admin.kubeconfig";
/// Audit log of the meta apiserver (every write by users other than the control plane);
/// `NESTOR_AUDIT_LOG` overrides it.
pub const META_AUDIT_LOG: &str = "/var/lib/nestor-meta/logs/audit.log";
/// Prefix of every namespace these tests create, so leftovers of a crashed run can be found.
pub const NAMESPACE_PREFIX: &str = "nestor-optest-";
/// Field manager of everything the tests themselves write.
pub const TEST_FIELD_MANAGER: &str = "nestor-operator-tests";
/// Longest any single wait may take (a loaded 2-core CI machine needs minutes for some).
pub const MAX_WAIT: Duration = Duration::from_secs(240);
/// Test namespaces older than this are leftovers of a crashed run; younger ones may belong
/// to a run of this suite in another process.
const LEFTOVER_AGE: Duration = Duration::from_secs(30 * 60);

/// Serializes the tests of one binary: only one operator may run at a time.
static ONE_OPERATOR_AT_A_TIME: Mutex<()> = Mutex::const_new(());

/// The kubeconfig the tests and the operators they start use: `KUBECONFIG` when set and
/// not empty, else the local meta cluster's.
pub fn kubeconfig_path() -> PathBuf {
    std::env::var_os("KUBECONFIG")
        .filter(|value| !value.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(META_KUBECONFIG))
}

/// A client for the meta cluster. Panics (the test fails, it does not skip) when the
/// kubeconfig is missing or the apiserver does not answer.
pub async fn connect() -> Client {
    let path = kubeconfig_path();
    let kubeconfig = Kubeconfig::read_from(&path).unwrap_or_else(|error| {
        panic!("operator tests need the meta cluster: cannot read kubeconfig {}: {error}", path.display())
    });
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap_or_else(|error| panic!("invalid kubeconfig {}: {error}", path.display()));
    let client = Client::try_from(config).expect("build Kubernetes client");
    match tokio::time::timeout(Duration::from_secs(10), client.apiserver_version()).await {
        Ok(Ok(_)) => client,
        Ok(Err(error)) => panic!("meta cluster unreachable through {}: {error}", path.display()),
        Err(_) => panic!("meta cluster did not answer within 10s through {}", path.display()),
    }
}

/// Server-side applies the generated CRD (idempotent) and waits until TenantClusters are served.
pub async fn install_crd(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = nestor::api::crd();
    let name = crd.metadata.name.clone().expect("generated CRD has a name");
    crds.patch(&name, &PatchParams::apply(TEST_FIELD_MANAGER).force(), &Patch::Apply(&crd))
        .await
        .unwrap_or_else(|error| panic!("cannot apply the TenantCluster CRD: {error}"));
    let tenants: Api<TenantCluster> = Api::all(client.clone());
    wait_for("TenantCluster CRD established and served", Duration::from_secs(60), async || {
        let crd = crds.get(&name).await.map_err(|error| error.to_string())?;
        let established = crd
            .status
            .iter()
            .flat_map(|status| status.conditions.iter().flatten())
            .any(|condition| condition.type_ == "Established" && condition.status == "True");
        if !established {
            return Err(format!("conditions: {:?}", crd.status.map(|status| status.conditions)));
        }
        tenants.list(&ListParams::default().limit(1)).await.map(drop).map_err(|error| error.to_string())
    })
    .await;
}

/// One test's namespace in the meta cluster.
pub struct TestNamespace {
    /// Client for the meta cluster.
    pub client: Client,
    /// Name of the namespace.
    pub name: String,
}

/// Takes the suite lock, connects, installs the CRD, removes what crashed earlier runs
/// left behind, creates a fresh namespace and runs `body` in it. The namespace is deleted
/// afterwards, also when `body` panics; any operator `body` started is gone by then.
pub async fn in_namespace(tag: &str, body: impl AsyncFnOnce(TestNamespace)) {
    let _lock: MutexGuard<'static, ()> = ONE_OPERATOR_AT_A_TIME.lock().await;
    let client = connect().await;
    install_crd(&client).await;
    remove_leftovers(&client).await;

    let namespaces: Api<Namespace> = Api::all(client.clone());
    let name = format!("{NAMESPACE_PREFIX}{tag}-{:08x}", rand::random::<u32>());
    let namespace: Namespace =
        serde_json::from_value(json!({ "metadata": { "name": name } })).expect("namespace object");
    namespaces.create(&PostParams::default(), &namespace).await.expect("create test namespace");
    eprintln!("test namespace: {name}");

    let outcome = AssertUnwindSafe(body(TestNamespace { client: client.clone(), name: name.clone() }))
        .catch_unwind()
        .await;
    let cleanup = delete_namespace(&client, &name).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    cleanup.unwrap_or_else(|error| panic!("cannot delete test namespace {name}: {error}"));
}

/// Deletes a test namespace. Its TenantClusters go first, with their finalizers dropped:
/// no operator runs any more to remove them, and a tenant left behind would be picked up
/// by the next test's operator, which would count the cleanup as its own writes.
async fn delete_namespace(client: &Client, name: &str) -> Result<(), kube::Error> {
    let tenants: Api<TenantCluster> = Api::namespaced(client.clone(), name);
    for tenant in tenants.list(&ListParams::default()).await? {
        let tenant = tenant.name_any();
        let patch = json!({ "metadata": { "finalizers": null } });
        ignore_not_found(tenants.patch(&tenant, &PatchParams::default(), &Patch::Merge(&patch)).await)?;
        ignore_not_found(tenants.delete(&tenant, &DeleteParams::default()).await)?;
    }
    wait_for(&format!("TenantClusters of {name} to be gone"), Duration::from_secs(30), async || {
        let left = tenants.list(&ListParams::default()).await.map_err(|error| error.to_string())?;
        if left.items.is_empty() { Ok(()) } else { Err(format!("{} left", left.items.len())) }
    })
    .await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    ignore_not_found(namespaces.delete(name, &DeleteParams::default()).await)
}

fn ignore_not_found<T>(result: Result<T, kube::Error>) -> Result<(), kube::Error> {
    match result {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(error) => Err(error),
    }
}

/// Deletes the namespaces of earlier runs that crashed before their cleanup.
async fn remove_leftovers(client: &Client) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let list = namespaces.list(&ListParams::default()).await.expect("list namespaces");
    let cutoff =
        jiff::Timestamp::now() - jiff::SignedDuration::try_from(LEFTOVER_AGE).expect("small duration");
    let leftovers = list.into_iter().filter(|namespace| {
        namespace.name_any().starts_with(NAMESPACE_PREFIX)
            && namespace.metadata.creation_timestamp.as_ref().is_some_and(|created| created.0 < cutoff)
    });
    for namespace in leftovers {
        let name = namespace.name_any();
        eprintln!("removing leftover test namespace {name}");
        if let Err(error) = delete_namespace(client, &name).await {
            eprintln!("cannot remove leftover namespace {name}: {error}");
        }
    }
}

impl TestNamespace {
    /// Objects of kind `K` in this namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }

    /// Derived names of tenant `tenant` in this namespace.
    pub fn names(&self, tenant: &str) -> TenantNames {
        TenantNames::new(tenant, &self.name)
    }

    /// Creates TenantCluster `name` with `spec` given as JSON, as a user would write it.
    pub async fn create_tenant(&self, name: &str, spec: Value) -> TenantCluster {
        let tenant: TenantCluster = serde_json::from_value(json!({
            "apiVersion": TenantCluster::api_version(&()),
            "kind": TenantCluster::kind(&()),
            "metadata": { "name": name },
            "spec": spec,
        }))
        .expect("TenantCluster JSON");
        self.api::<TenantCluster>()
            .create(
                &PostParams { field_manager: Some(TEST_FIELD_MANAGER.into()), ..PostParams::default() },
                &tenant,
            )
            .await
            .unwrap_or_else(|error| panic!("cannot create TenantCluster {name}: {error}"))
    }

    /// TenantCluster `name`, or a description of why it cannot be read.
    pub async fn tenant(&self, name: &str) -> Result<TenantCluster, String> {
        self.api::<TenantCluster>()
            .get(name)
            .await
            .map_err(|error| format!("cannot read TenantCluster: {error}"))
    }

    /// Polls TenantCluster `name` until `done` holds; panics with its last status after
    /// `timeout` (at most [`MAX_WAIT`]).
    pub async fn wait_for_tenant(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        mut done: impl FnMut(&TenantCluster) -> bool,
    ) -> TenantCluster {
        wait_for(what, timeout, async || {
            let tenant = self.tenant(name).await?;
            if done(&tenant) { Ok(tenant) } else { Err(describe_tenant(&tenant)) }
        })
        .await
    }

    /// Every object of the kinds the operator creates (and the etcd claims) that carries
    /// `nestor.dev/tenant-cluster=<tenant>`, by kind and name.
    pub async fn labelled_objects(&self, tenant: &str) -> Result<BTreeMap<ObjectKey, ObjectMeta>, String> {
        let selector = format!("{TENANT_LABEL}={tenant}");
        let mut objects = BTreeMap::new();
        self.collect::<Secret>(&selector, &mut objects).await?;
        self.collect::<ConfigMap>(&selector, &mut objects).await?;
        self.collect::<Service>(&selector, &mut objects).await?;
        self.collect::<StatefulSet>(&selector, &mut objects).await?;
        self.collect::<Deployment>(&selector, &mut objects).await?;
        self.collect::<NetworkPolicy>(&selector, &mut objects).await?;
        self.collect::<PersistentVolumeClaim>(&selector, &mut objects).await?;
        Ok(objects)
    }

    async fn collect<K>(
        &self,
        selector: &str,
        into: &mut BTreeMap<ObjectKey, ObjectMeta>,
    ) -> Result<(), String>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()> + Clone + DeserializeOwned + Debug,
    {
        let kind = K::kind(&()).to_string();
        let list = self
            .api::<K>()
            .list(&ListParams::default().labels(selector))
            .await
            .map_err(|error| format!("cannot list {kind}: {error}"))?;
        for object in list {
            let meta = object.meta().clone();
            into.insert(ObjectKey::new(&kind, meta.name.as_deref().unwrap_or_default()), meta);
        }
        Ok(())
    }

    /// Secret `name`, `None` when it does not exist.
    pub async fn secret(&self, name: &str) -> Result<Option<Secret>, String> {
        self.api::<Secret>()
            .get_opt(name)
            .await
            .map_err(|error| format!("cannot read Secret {name}: {error}"))
    }

    /// Waits (at most [`MAX_WAIT`]) until every object in `expected` exists, and returns
    /// what exists then.
    pub async fn wait_for_objects(
        &self,
        tenant: &str,
        expected: &BTreeSet<ObjectKey>,
    ) -> BTreeMap<ObjectKey, ObjectMeta> {
        wait_for(&format!("every object of tenant {tenant}"), MAX_WAIT, async || {
            let objects = self.labelled_objects(tenant).await?;
            let missing: Vec<_> = expected.iter().filter(|key| !objects.contains_key(key)).collect();
            if missing.is_empty() { Ok(objects) } else { Err(format!("missing: {missing:?}")) }
        })
        .await
    }
}

/// Kind and name of an object in the test namespace.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    /// Kind, for example `Secret`.
    pub kind: String,
    /// metadata.name.
    pub name: String,
}

impl ObjectKey {
    /// The object of `kind` named `name`.
    pub fn new(kind: &str, name: &str) -> Self {
        Self { kind: kind.into(), name: name.into() }
    }
}

/// Every object the operator creates for a tenant with ephemeral etcd storage.
pub fn expected_objects(names: &TenantNames) -> BTreeSet<ObjectKey> {
    let secrets = [
        names.cluster_ca_secret(),
        names.front_proxy_ca_secret(),
        names.etcd_ca_secret(),
        names.service_account_key_secret(),
        names.encryption_config_secret(),
        names.apiserver_serving_secret(),
        names.apiserver_kubelet_client_secret(),
        names.apiserver_etcd_client_secret(),
        names.front_proxy_client_secret(),
        // Every tenant's PKI holds the konnectivity-server's leaves, so that turning the
        // tunnel on never waits for certificates.
        names.konnectivity_server_serving_secret(),
        names.konnectivity_server_client_secret(),
        names.etcd_server_secret(),
        names.etcd_peer_secret(),
        names.etcd_healthcheck_client_secret(),
        names.admin_kubeconfig_secret(),
        names.admin_in_cluster_kubeconfig_secret(),
        names.controller_manager_kubeconfig_secret(),
        names.scheduler_kubeconfig_secret(),
    ];
    let mut expected: BTreeSet<ObjectKey> =
        secrets.iter().map(|name| ObjectKey::new("Secret", name)).collect();
    expected.extend([
        ObjectKey::new("ConfigMap", &names.apiserver()),
        // etcd members read their bootstrap state (new / existing) from it.
        ObjectKey::new("ConfigMap", &names.etcd()),
        ObjectKey::new("Service", &names.etcd()),
        ObjectKey::new("Service", &names.apiserver()),
        ObjectKey::new("StatefulSet", &names.etcd()),
        ObjectKey::new("Deployment", &names.apiserver()),
        ObjectKey::new("Deployment", &names.controller_manager()),
        ObjectKey::new("Deployment", &names.scheduler()),
        ObjectKey::new("NetworkPolicy", &names.etcd_network_policy()),
    ]);
    expected
}

/// A tenant that can really run on the meta cluster: local images, one etcd member in an
/// emptyDir.
pub fn runnable_spec() -> Value {
    json!({
        "version": "1.34.2",
        "imageRepository": "nestor.local",
        "etcd": { "replicas": 1, "storage": { "ephemeral": true } },
    })
}

/// Polls `probe` once a second until it returns `Ok`, for at most `timeout` (capped at
/// [`MAX_WAIT`]). `Err` carries the state observed; on timeout the test panics with
/// `description` and the last of them.
pub async fn wait_for<T>(
    description: &str,
    timeout: Duration,
    mut probe: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    poll(description, timeout, Duration::from_secs(1), &mut probe).await
}

/// [`wait_for`] with a custom polling interval.
pub async fn poll<T>(
    description: &str,
    timeout: Duration,
    interval: Duration,
    probe: &mut impl AsyncFnMut() -> Result<T, String>,
) -> T {
    poll_for(timeout.min(MAX_WAIT), interval, probe).await.unwrap_or_else(|state| {
        panic!("timed out after {timeout:?} waiting for {description}; last observed: {state}")
    })
}

/// The bounded poll loop under every wait: calls `probe` every `interval` until it
/// returns `Ok`, for at most `timeout` (not capped: a caller may need longer than
/// [`MAX_WAIT`], or may want to carry on after a timeout). On timeout, `Err` with the
/// state the last probe reported.
pub async fn poll_for<T>(
    timeout: Duration,
    interval: Duration,
    mut probe: impl AsyncFnMut() -> Result<T, String>,
) -> Result<T, String> {
    let deadline = Instant::now() + timeout;
    loop {
        let state = match probe().await {
            Ok(value) => return Ok(value),
            Err(state) => state,
        };
        if Instant::now() >= deadline {
            return Err(state);
        }
        tokio::time::sleep(interval).await;
    }
}

/// The `nestor` binary, run as `nestor operator` without leader election.
pub struct Operator {
    child: Child,
    /// Address of its /metrics endpoint.
    pub metrics_addr: SocketAddr,
    /// File receiving its stdout and stderr.
    pub log_path: PathBuf,
    killed: bool,
}

/// The `nestor` binary this run uses: a hard link (or copy) made once, so a concurrent
/// build into the target directory cannot swap it between two runs. Links older than an
/// hour are left from earlier runs (each keeps an old build's file alive) and removed.
pub fn nestor_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let directory = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let prefix = "nestor-operator-tests-";
        for entry in std::fs::read_dir(directory).into_iter().flatten().flatten() {
            let stale = entry.file_name().to_string_lossy().starts_with(prefix)
                && entry
                    .metadata()
                    .and_then(|meta| meta.modified())
                    .is_ok_and(|modified| modified.elapsed().unwrap_or_default() > Duration::from_secs(3600));
            if stale {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        let link = directory.join(format!("{prefix}{}", std::process::id()));
        let _ = std::fs::remove_file(&link);
        std::fs::hard_link(env!("CARGO_BIN_EXE_nestor"), &link)
            .or_else(|_| std::fs::copy(env!("CARGO_BIN_EXE_nestor"), &link).map(drop))
            .expect("link the nestor binary");
        link
    })
}

/// What one run of the `nestor` binary printed, and how it ended.
pub struct NestorRun {
    /// Its exit status.
    pub status: ExitStatus,
    /// Everything it wrote to stdout.
    pub stdout: String,
    /// Everything it wrote to stderr.
    pub stderr: String,
}

impl NestorRun {
    /// Its stdout; panics with both streams unless it succeeded.
    #[track_caller]
    pub fn expect_success(self) -> String {
        assert!(self.status.success(), "nestor failed: {self:?}");
        self.stdout
    }
}

impl Debug for NestorRun {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{}\n--- stdout\n{}--- stderr\n{}", self.status, self.stdout, self.stderr)
    }
}

/// Runs `nestor <args>` as a user runs it (the tests' kubeconfig, no `RUST_LOG`, no
/// stdin) to completion, off the async runtime's threads.
pub async fn run_nestor(args: &[&str]) -> NestorRun {
    let args: Vec<String> = args.iter().map(|arg| arg.to_string()).collect();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(nestor_binary())
            .args(&args)
            .env("KUBECONFIG", kubeconfig_path())
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .output()
            .expect("run nestor")
    })
    .await
    .expect("nestor runner");
    NestorRun {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

impl Operator {
    /// Starts an operator that watches `namespace` only, on a free port, and waits until it
    /// serves /metrics. `label` names its log file (under Cargo's target tmp dir).
    pub async fn start(namespace: &str, label: &str) -> Operator {
        Self::start_with(namespace, label, &[]).await
    }

    /// [`Operator::start`] with extra `nestor operator` flags, e.g. `--health-interval`.
    pub async fn start_with(namespace: &str, label: &str, extra_args: &[&str]) -> Operator {
        Self::spawn(Some(namespace), label, extra_args).await
    }

    /// Starts an operator that watches every namespace, as the demo's and an installed
    /// one do. It sees every tenant of the shared meta cluster: only for the test of
    /// overlapping scopes, which checks it leaves the other operators' tenants alone.
    pub async fn start_watching_every_namespace(label: &str) -> Operator {
        Self::spawn(None, label, &[]).await
    }

    async fn spawn(namespace: Option<&str>, label: &str, extra_args: &[&str]) -> Operator {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("find a free port")
            .port();
        let metrics_addr = SocketAddr::from(([127, 0, 0, 1], port));
        let log_path = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("operator-{label}-{}.log", jiff::Timestamp::now().as_millisecond()));
        let log = File::create(&log_path).expect("create operator log file");
        let child = Command::new(nestor_binary())
            .args(["operator", "--no-leader-election", "--metrics-addr", &metrics_addr.to_string()])
            .args(namespace.map(|namespace| ["--watch-namespace", namespace]).into_iter().flatten())
            .args(extra_args)
            .env("KUBECONFIG", kubeconfig_path())
            // kube_runtime::controller at debug logs the controller's start-up ("applier
            // runner held until store is ready", "store is ready, starting runner"): an
            // operator that never reconciles then shows whether its TenantCluster list
            // ever completed.
            .env("RUST_LOG", "info,nestor=debug,kube=warn,kube_runtime::controller=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log file handle"))
            .stderr(log)
            .spawn()
            .expect("start the nestor operator");
        eprintln!("operator pid {} on {metrics_addr}, log {}", child.id(), log_path.display());
        let mut operator = Operator { child, metrics_addr, log_path, killed: false };
        let description = format!("operator to serve /metrics on {metrics_addr}");
        poll(&description, Duration::from_secs(30), Duration::from_millis(200), &mut async || {
            if let Ok(Some(status)) = operator.child.try_wait() {
                panic!(
                    "operator exited with {status} on start; log {}:\n{}",
                    operator.log_path.display(),
                    operator.log_tail()
                );
            }
            operator.metrics().await.map(drop)
        })
        .await;
        operator
    }

    /// The operator's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGKILL to this operator's process (by its pid) and reaps it.
    pub fn kill(&mut self) {
        if !self.killed {
            // `Child::kill` is SIGKILL on Unix and targets this child only.
            let _ = self.child.kill();
            let _ = self.child.wait();
            self.killed = true;
        }
    }

    /// Reads and parses /metrics.
    pub async fn metrics(&self) -> Result<Metrics, String> {
        let body = http_get(self.metrics_addr, "/metrics").await?;
        Ok(Metrics::parse(&body))
    }

    /// The last lines of the operator's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Waits until the operator finished at least `count` reconciles.
    pub async fn wait_for_reconciles(&self, count: f64) -> Metrics {
        wait_for(&format!("{count} reconciles by operator {}", self.pid()), MAX_WAIT, async || {
            let metrics = self.metrics().await?;
            if metrics.reconciles() >= count { Ok(metrics) } else { Err(metrics.summary()) }
        })
        .await
    }

    /// Waits until the operator's write counter stayed unchanged for `quiet`, and returns
    /// the metrics then.
    pub async fn wait_until_quiet(&self, quiet: Duration) -> Metrics {
        let mut last: Option<(f64, Instant)> = None;
        wait_for(&format!("operator writes to stay unchanged for {quiet:?}"), MAX_WAIT, async || {
            let metrics = self.metrics().await?;
            let writes = metrics.writes();
            match last {
                Some((previous, since)) if previous == writes => {
                    if since.elapsed() >= quiet {
                        return Ok(metrics);
                    }
                }
                _ => last = Some((writes, Instant::now())),
            }
            Err(metrics.summary())
        })
        .await
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "operator pid {} log: {}\n--- last lines ---\n{}\n---",
                self.child.id(),
                self.log_path.display(),
                self.log_tail()
            );
        }
        self.kill();
    }
}

/// Plain HTTP/1.0 GET (the response is then close-delimited, never chunked), on a
/// blocking thread with socket timeouts.
async fn http_get(addr: SocketAddr, path: &str) -> Result<String, String> {
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    let exchange = move || -> std::io::Result<Vec<u8>> {
        let timeout = Duration::from_secs(5);
        let mut stream = std::net::TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        stream.write_all(request.as_bytes())?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response)?;
        Ok(response)
    };
    let response = tokio::task::spawn_blocking(exchange)
        .await
        .map_err(|error| format!("GET {addr}{path}: {error}"))?
        .map_err(|error| format!("GET {addr}{path}: {error}"))?;
    let text = String::from_utf8(response).map_err(|_| format!("GET {addr}{path}: response is not UTF-8"))?;
    let (head, body) =
        text.split_once("\r\n\r\n").ok_or_else(|| format!("GET {addr}{path}: no header end"))?;
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(format!("GET {addr}{path}: {status}"));
    }
    Ok(body.to_string())
}

/// A scrape of the operator's /metrics: series (name with labels) → value.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Metrics {
    /// Every sample, keyed by its series as written, e.g. `nestor_reconciles_total`.
    pub samples: BTreeMap<String, f64>,
}

impl Metrics {
    /// Parses OpenMetrics/Prometheus text exposition.
    pub fn parse(text: &str) -> Self {
        let samples = text
            .lines()
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .filter_map(|line| {
                let split = match line.find('}') {
                    Some(end) => end + 1,
                    None => line.find(' ')?,
                };
                let (series, rest) = line.split_at(split);
                let value = rest.split_whitespace().next()?.parse().ok()?;
                Some((series.to_string(), value))
            })
            .collect();
        Self { samples }
    }

    /// Sum of every series of metric `name` (all label sets).
    pub fn sum(&self, name: &str) -> f64 {
        self.samples
            .iter()
            .filter(|(series, _)| series.split('{').next() == Some(name))
            .map(|(_, value)| value)
            .sum()
    }

    /// `nestor_api_writes_total`, summed over kinds and verbs.
    pub fn writes(&self) -> f64 {
        self.sum("nestor_api_writes_total")
    }

    /// `nestor_reconciles_total`.
    pub fn reconciles(&self) -> f64 {
        self.sum("nestor_reconciles_total")
    }

    /// The write and reconcile series, for failure messages.
    pub fn summary(&self) -> String {
        let interesting: Vec<String> = self
            .samples
            .iter()
            .filter(|(series, _)| {
                series.starts_with("nestor_api_writes_total")
                    || series.starts_with("nestor_reconciles_total")
                    || series.starts_with("nestor_reconcile_errors_total")
            })
            .map(|(series, value)| format!("{series} {value}"))
            .collect();
        format!("[{}]", interesting.join(", "))
    }
}

/// A position in the meta apiserver's audit log; entries after it can be read back.
pub struct AuditMark {
    path: PathBuf,
    offset: u64,
}

/// One write recorded in the audit log.
#[derive(Clone, Debug)]
pub struct AuditedWrite {
    /// create, update, patch, delete, deletecollection.
    pub verb: String,
    /// The request URI.
    pub uri: String,
    /// User agent of the client.
    pub user_agent: String,
    /// When the apiserver received it.
    pub received: String,
}

impl AuditMark {
    /// The current end of the audit log. Panics when there is no audit log: the
    /// cross-check it serves must not silently disappear.
    pub fn now() -> Self {
        let path = std::env::var_os("NESTOR_AUDIT_LOG")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(META_AUDIT_LOG));
        let offset = std::fs::metadata(&path)
            .unwrap_or_else(|error| panic!("cannot read the meta audit log {}: {error}", path.display()))
            .len();
        Self { path, offset }
    }

    /// Writes by `username` to objects in `namespace` logged since this mark.
    pub fn writes_since(&self, username: &str, namespace: &str) -> Vec<AuditedWrite> {
        let mut file = File::open(&self.path).expect("open audit log");
        let length = file.metadata().expect("audit log metadata").len();
        // A rotated log starts over; read it whole then.
        let start = if length < self.offset { 0 } else { self.offset };
        file.seek(SeekFrom::Start(start)).expect("seek audit log");
        let mut text = String::new();
        file.read_to_string(&mut text).expect("read audit log");
        text.lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|event| event["stage"] == "ResponseComplete")
            .filter(|event| event["user"]["username"] == username)
            .filter(|event| event["objectRef"]["namespace"] == namespace)
            .filter(|event| {
                matches!(
                    event["verb"].as_str(),
                    Some("create" | "update" | "patch" | "delete" | "deletecollection")
                )
            })
            .map(|event| AuditedWrite {
                verb: event["verb"].as_str().unwrap_or_default().into(),
                uri: event["requestURI"].as_str().unwrap_or_default().into(),
                user_agent: event["userAgent"].as_str().unwrap_or_default().into(),
                received: event["requestReceivedTimestamp"].as_str().unwrap_or_default().into(),
            })
            .collect()
    }
}

/// The user name the meta apiserver gives the kubeconfig's credentials (the operator
/// started by [`Operator::start`] runs with the same ones).
pub async fn authenticated_username(client: &Client) -> String {
    let reviews: Api<SelfSubjectReview> = Api::all(client.clone());
    let review: SelfSubjectReview = serde_json::from_value(
        json!({ "apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview" }),
    )
    .expect("SelfSubjectReview object");
    let review = reviews.create(&PostParams::default(), &review).await.expect("SelfSubjectReview");
    review
        .status
        .and_then(|status| status.user_info)
        .and_then(|user| user.username)
        .expect("SelfSubjectReview names the user")
}

impl TestNamespace {
    /// A client for tenant `tenant`'s own apiserver, built from its admin kubeconfig Secret
    /// as it is now. The kubeconfig names the Service's `.svc` DNS name, which the host
    /// cannot resolve, so the client dials the Service's ClusterIP and verifies the
    /// certificate for that DNS name.
    pub async fn tenant_client(&self, tenant: &str) -> Result<Client, String> {
        let names = self.names(tenant);
        let secret = self
            .secret(&names.admin_kubeconfig_secret())
            .await?
            .ok_or_else(|| format!("Secret {} does not exist", names.admin_kubeconfig_secret()))?;
        let yaml = secret
            .data
            .as_ref()
            .and_then(|data| data.get("value"))
            .map(|value| String::from_utf8_lossy(&value.0).into_owned())
            .ok_or("admin kubeconfig Secret has no `value`")?;
        self.tenant_client_from(tenant, &yaml).await
    }

    /// A client for tenant `tenant`'s apiserver with the credentials of `yaml`, a kubeconfig
    /// for it (the admin Secret's, or one `nestor kubeconfig` printed), reached the way
    /// [`TestNamespace::tenant_client`] reaches it.
    pub async fn tenant_client_from(&self, tenant: &str, yaml: &str) -> Result<Client, String> {
        let names = self.names(tenant);
        let service = self
            .api::<Service>()
            .get_opt(&names.apiserver())
            .await
            .map_err(|error| format!("cannot read Service {}: {error}", names.apiserver()))?
            .ok_or_else(|| format!("Service {} does not exist", names.apiserver()))?;
        let cluster_ip = service
            .spec
            .and_then(|spec| spec.cluster_ip)
            .ok_or_else(|| format!("Service {} has no ClusterIP yet", names.apiserver()))?;
        let kubeconfig = Kubeconfig::from_yaml(yaml).map_err(|error| format!("kubeconfig: {error}"))?;
        let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .map_err(|error| format!("kubeconfig: {error}"))?;
        config.cluster_url =
            format!("https://{cluster_ip}:6443").parse().map_err(|error| format!("URL: {error}"))?;
        config.tls_server_name = Some(names.apiserver_service_host());
        config.connect_timeout = Some(Duration::from_secs(3));
        config.read_timeout = Some(Duration::from_secs(5));
        Client::try_from(config).map_err(|error| format!("tenant client: {error}"))
    }
}

/// Condition `type_` of the tenant's status, if set.
pub fn find_condition<'a>(tenant: &'a TenantCluster, type_: &str) -> Option<&'a Condition> {
    tenant.status.as_ref()?.conditions.iter().find(|condition| condition.type_ == type_)
}

/// The message of condition `type_`, empty when it is not set.
pub fn condition_message(tenant: &TenantCluster, type_: &str) -> String {
    find_condition(tenant, type_).map(|condition| condition.message.clone()).unwrap_or_default()
}

/// Whether the tenant's phase is Ready.
pub fn is_ready(tenant: &TenantCluster) -> bool {
    tenant.status.as_ref().and_then(|status| status.phase) == Some(Phase::Ready)
}

/// The phase and every condition on one line, for progress and failure messages.
pub fn describe_tenant(tenant: &TenantCluster) -> String {
    let Some(status) = &tenant.status else { return "no status".into() };
    let conditions: Vec<String> = status
        .conditions
        .iter()
        .map(|c| format!("{}={} {} ({})", c.type_, c.status, c.reason, c.message))
        .collect();
    format!("phase {:?}: {}", status.phase, conditions.join(" | "))
}
