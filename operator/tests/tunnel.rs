//! The konnectivity tunnel, against the local meta cluster with real workers (see
//! workers.rs for how a worker host joins). The proof: on the worker host every
//! connection the meta cluster's pod network opens to the worker is dropped
//! (`WorkerHost::cut_off_from_meta_pods`); the worker still reaches the tenant endpoint.
//! Then, through the tenant apiserver, `kubectl logs`, `exec` and `port-forward` to a pod
//! on the worker work, a validating admission webhook served by a pod on the worker is
//! called and rejects what it should, and an APIService backed by a pod on the worker
//! answers. With `spec.network.tunnel.enabled: false` each of them fails the same way.
//!
//! The webhook and the aggregated API are hack/tunnel-probe (image `tunnel-probe`), with a
//! serving certificate this test issues. Every test prints its timings.

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Pod, Secret, Service};
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;
use kube::api::{Api, LogParams, PostParams};
use nestor::pki::{CertificateAuthority, CertificateRequest, CertificateUsage, KeyAlgorithm, issue};
use serde_json::json;
use support::worker::{
    PortForward, WorkerHost, busybox_image, free_node_port, http_get_local, kubectl_command,
};
use support::{
    MAX_WAIT, Operator, TestNamespace, in_namespace, poll_for, run_nestor, runnable_spec, wait_for,
};

const TENANT: &str = "tunnel";
/// The image archives a worker of these tests imports (hack/build-images.sh).
const WORKER_IMAGES: &str = "pause kube-proxy coredns busybox kas-network-proxy-proxy-agent tunnel-probe";
const PROBE: &str = "tunnel-probe";
const PROBE_GROUP: &str = "tunnel.nestor.dev";
const GUARDED_NAMESPACE: &str = "guarded";

/// Starts an operator for `ns`, creates a joinable tenant (tunnel on or off, `replicas`
/// apiservers) at a free node port, waits until it is Ready; returns the operator and an
/// admin client of the tenant.
async fn joinable_tenant(
    ns: &TestNamespace,
    test: i32,
    tunnel: bool,
    replicas: i32,
    started: Instant,
) -> (Operator, kube::Client) {
    let operator = Operator::start(&ns.name, "tunnel").await;
    let node_port = free_node_port(ns, test).await;
    let mut spec = runnable_spec();
    spec["network"] = json!({"serviceType": "NodePort", "externalHost": "10.200.0.1", "nodePort": node_port,
                             "tunnel": {"enabled": tunnel}});
    spec["apiServer"] = json!({"replicas": replicas});
    // The meta cluster and its CRD are shared: a run of another branch's tests may have
    // applied a CRD without spec.network.tunnel, which would prune the field. Apply ours
    // again just before, and check the stored spec kept it.
    support::install_crd(&ns.client).await;
    ns.create_tenant(TENANT, spec).await;
    let stored = ns.tenant(TENANT).await.expect("the tenant");
    let kept =
        serde_json::to_value(&stored.spec).expect("spec")["network"]["tunnel"]["enabled"] == json!(tunnel);
    assert!(kept, "the stored spec lost spec.network.tunnel: the meta cluster's CRD is another branch's");
    wait_for("the tenant to be Ready", MAX_WAIT, async || {
        let tenant = ns.tenant(TENANT).await?;
        if support::is_ready(&tenant) { Ok(()) } else { Err(support::describe_tenant(&tenant)) }
    })
    .await;
    let routing = ns.tenant(TENANT).await.ok().and_then(|tenant| tenant.status?.node_routing);
    eprintln!("[{:>6.1?}] tenant Ready, status.nodeRouting {routing:?}", started.elapsed());
    (operator, ns.tenant_client(TENANT).await.expect("tenant client"))
}

/// Joins a worker with a fresh `nestor join` line; returns once its Node is Ready.
async fn join_worker(ns: &TestNamespace, admin: &kube::Client, prefix: &str, started: Instant) -> WorkerHost {
    let line = run_nestor(&["join", TENANT, "-n", &ns.name, "--ttl", "10m"]).await.expect_success();
    let line = line.trim().to_string();
    let token = line.split_whitespace().skip_while(|word| *word != "--token").nth(1).expect("--token");
    let id = token.split('.').next().expect("token id").to_string();
    let public: Api<ConfigMap> = Api::namespaced(admin.clone(), "kube-public");
    wait_for(&format!("cluster-info signed for token {id}"), MAX_WAIT, async || {
        let info = public.get("cluster-info").await.map_err(|error| error.to_string())?;
        let signed = info.data.unwrap_or_default().contains_key(&format!("jws-kubeconfig-{id}"));
        if signed { Ok(()) } else { Err("not signed yet".into()) }
    })
    .await;
    let worker = WorkerHost::named(prefix);
    let run = worker.up(&line, &[], WORKER_IMAGES).await;
    assert!(run.success, "worker-up {} failed:\n{}", worker.name, run.stderr);
    let node = Api::<Node>::all(admin.clone()).get(&worker.name).await.expect("the worker's Node");
    let ready = node
        .status
        .and_then(|status| status.conditions)
        .is_some_and(|conditions| conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    assert!(ready, "Node {} not Ready", worker.name);
    eprintln!(
        "[{:>6.1?}] worker {} joined and Ready ({:?} of worker-up)",
        started.elapsed(),
        worker.name,
        run.elapsed
    );
    worker
}

/// The apiserver pods run `containers` (the sidecar or not), and `status.nodeRouting` says
/// `routing` unless the field is missing: the meta cluster's CRD is shared, and a run of
/// another branch's tests may have applied one without it, which prunes it.
async fn assert_routing(ns: &TestNamespace, routing: nestor::api::NodeRouting, containers: &[&str]) {
    let deployment = ns
        .api::<k8s_openapi::api::apps::v1::Deployment>()
        .get(&ns.names(TENANT).apiserver())
        .await
        .expect("the apiserver Deployment");
    let names: Vec<String> = deployment
        .spec
        .and_then(|spec| spec.template.spec)
        .map(|pod| pod.containers.into_iter().map(|container| container.name).collect())
        .unwrap_or_default();
    assert_eq!(names, containers, "the apiserver pod's containers");
    let shown = ns.tenant(TENANT).await.ok().and_then(|tenant| tenant.status?.node_routing);
    assert!(shown.is_none() || shown == Some(routing), "status.nodeRouting {shown:?}, want {routing:?}");
}

/// Waits until TunnelReady has `status` with a message containing `needle`; returns the
/// condition's message and how long it took.
async fn tunnel_ready(
    ns: &TestNamespace,
    status: &str,
    needle: &str,
    timeout: Duration,
) -> (String, Duration) {
    let started = Instant::now();
    let message = wait_for(&format!("TunnelReady={status} ({needle})"), timeout, async || {
        let tenant = ns.tenant(TENANT).await?;
        match support::find_condition(&tenant, "TunnelReady") {
            Some(condition) if condition.status == status && condition.message.contains(needle) => {
                Ok(condition.message.clone())
            }
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    (message, started.elapsed())
}

/// Waits until condition `type_` is True; returns its message and how long it took.
async fn condition_true(ns: &TestNamespace, type_: &str, timeout: Duration) -> (String, Duration) {
    let started = Instant::now();
    let message = wait_for(&format!("{type_}=True"), timeout, async || {
        let tenant = ns.tenant(TENANT).await?;
        match support::find_condition(&tenant, type_) {
            Some(condition) if condition.status == "True" => Ok(condition.message.clone()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    (message, started.elapsed())
}

/// Waits until pod `name` runs.
async fn running_pod(pods: &Api<Pod>, name: &str) -> Pod {
    wait_for(&format!("pod {name} to run"), Duration::from_secs(180), async || {
        let pod = pods.get(name).await.map_err(|error| error.to_string())?;
        let phase = pod.status.as_ref().and_then(|status| status.phase.clone()).unwrap_or_default();
        if phase == "Running" { Ok(pod) } else { Err(format!("phase {phase:?}")) }
    })
    .await
}

/// Creates, inside the tenant, what the checks call on the worker: `hello` (busybox httpd,
/// for logs, exec and port-forward), the tunnel-probe pod behind Service `tunnel-probe`
/// with a serving certificate from a CA of this test, a validating webhook on ConfigMaps
/// created in namespace `guarded`, and APIService `v1.tunnel.nestor.dev`. Returns once
/// both pods run (on the worker: it is the only node).
async fn deploy_workloads(admin: &kube::Client) {
    let now = jiff::Timestamp::now();
    let ca = CertificateAuthority::generate(
        "tunnel-probe-ca",
        KeyAlgorithm::EcdsaP256,
        Duration::from_secs(86400),
        now,
    )
    .expect("CA");
    let serving = issue(
        &ca,
        &CertificateRequest {
            common_name: "tunnel-probe".into(),
            organization: None,
            dns_names: vec![format!("{PROBE}.default.svc"), format!("{PROBE}.default.svc.cluster.local")],
            ip_addresses: Vec::new(),
            usage: CertificateUsage::Server,
        },
        KeyAlgorithm::EcdsaP256,
        Duration::from_secs(86400),
        now,
    )
    .expect("serving certificate");
    let post = PostParams::default();
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), "default");
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": PROBE},
        "type": "kubernetes.io/tls",
        "stringData": {"tls.crt": serving.cert_pem, "tls.key": serving.key_pem},
    }))
    .expect("secret");
    secrets.create(&post, &secret).await.expect("create the probe's Secret");
    let pods: Api<Pod> = Api::namespaced(admin.clone(), "default");
    let hello: Pod = serde_json::from_value(json!({
        "metadata": {"name": "hello"},
        "spec": {"terminationGracePeriodSeconds": 0, "containers": [{
            "name": "hello", "image": busybox_image(),
            "command": ["sh", "-c", "echo hello from $(hostname); mkdir -p /www; echo hello-from-web > /www/index.html; httpd -p 8080 -h /www; exec sleep 3600"],
        }]},
    }))
    .expect("pod");
    let probe: Pod = serde_json::from_value(json!({
        "metadata": {"name": PROBE, "labels": {"app": PROBE}},
        "spec": {"terminationGracePeriodSeconds": 0, "containers": [{
            "name": PROBE, "image": format!("nestor.local/{PROBE}:dev"),
            "env": [{"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
            "volumeMounts": [{"name": "tls", "mountPath": "/tls", "readOnly": true}],
        }], "volumes": [{"name": "tls", "secret": {"secretName": PROBE}}]},
    }))
    .expect("pod");
    // The default ServiceAccount appears shortly after the tenant starts.
    for pod in [&hello, &probe] {
        wait_for("a pod to be created", Duration::from_secs(60), async || {
            pods.create(&post, pod).await.map(drop).map_err(|error| error.to_string())
        })
        .await;
    }
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": PROBE},
        "spec": {"selector": {"app": PROBE}, "ports": [{"port": 443, "targetPort": 8443}]},
    }))
    .expect("service");
    Api::<Service>::namespaced(admin.clone(), "default")
        .create(&post, &service)
        .await
        .expect("create the Service");
    let namespace: Namespace = serde_json::from_value(json!({
        "metadata": {"name": GUARDED_NAMESPACE, "labels": {"tunnel-probe": "guarded"}},
    }))
    .expect("namespace");
    Api::<Namespace>::all(admin.clone())
        .create(&post, &namespace)
        .await
        .expect("create the guarded namespace");
    use base64::Engine;
    let ca_bundle = base64::engine::general_purpose::STANDARD.encode(ca.cert_pem());
    let webhook: ValidatingWebhookConfiguration = serde_json::from_value(json!({
        "metadata": {"name": PROBE},
        "webhooks": [{
            "name": "probe.tunnel.nestor.dev",
            "clientConfig": {"service": {"namespace": "default", "name": PROBE, "path": "/validate", "port": 443},
                             "caBundle": ca_bundle},
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["configmaps"]}],
            "namespaceSelector": {"matchLabels": {"tunnel-probe": "guarded"}},
            "failurePolicy": "Fail",
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "timeoutSeconds": 10,
        }],
    }))
    .expect("webhook");
    Api::<ValidatingWebhookConfiguration>::all(admin.clone())
        .create(&post, &webhook)
        .await
        .expect("create the webhook");
    let api_service: APIService = serde_json::from_value(json!({
        "metadata": {"name": format!("v1.{PROBE_GROUP}")},
        "spec": {"group": PROBE_GROUP, "version": "v1", "groupPriorityMinimum": 1000, "versionPriority": 15,
                 "insecureSkipTLSVerify": true,
                 "service": {"namespace": "default", "name": PROBE, "port": 443}},
    }))
    .expect("apiservice");
    Api::<APIService>::all(admin.clone()).create(&post, &api_service).await.expect("create the APIService");
    running_pod(&pods, "hello").await;
    running_pod(&pods, PROBE).await;
}

/// The outcome of one thing the apiserver does on a worker: what it answered, or why not.
struct Check {
    what: &'static str,
    outcome: Result<String, String>,
    took: Duration,
}

/// `check` bounded to `patience` plus a minute, whatever it waits on.
async fn bounded<T>(patience: Duration, check: impl Future<Output = Result<T, String>>) -> Result<T, String> {
    tokio::time::timeout(patience + Duration::from_secs(60), check)
        .await
        .unwrap_or_else(|_| Err(format!("no outcome within {:?}", patience + Duration::from_secs(60))))
}

/// Runs each check of the proof for at most `patience` (polling once a second); with the
/// tunnel they succeed once the agent connected, without it they keep failing.
async fn check_the_worker(
    ns: &TestNamespace,
    admin: &kube::Client,
    worker: &str,
    patience: Duration,
) -> Vec<Check> {
    let mut checks = Vec::new();
    let pods: Api<Pod> = Api::namespaced(admin.clone(), "default");
    let interval = Duration::from_secs(1);

    let started = Instant::now();
    let outcome = bounded(
        patience,
        poll_for(patience, interval, async || {
            let logs = pods.logs("hello", &LogParams::default()).await.map_err(|error| error.to_string())?;
            if logs.contains("hello from hello") {
                Ok(logs.trim().to_string())
            } else {
                Err(format!("logs {logs:?}"))
            }
        }),
    )
    .await;
    checks.push(Check { what: "kubectl logs", outcome, took: started.elapsed() });

    let started = Instant::now();
    let outcome = bounded(
        patience,
        poll_for(patience, interval, async || {
            let (mut command, kubeconfig) =
                kubectl_command(ns, TENANT, &["exec", "hello", "--", "sh", "-c", "echo exec in $(hostname)"])
                    .await;
            command.arg("--request-timeout=10s");
            let output = tokio::task::spawn_blocking(move || command.output())
                .await
                .expect("join")
                .map_err(|e| e.to_string())?;
            drop(kubeconfig);
            let stdout = String::from_utf8_lossy(&output.stdout).trim().to_string();
            if output.status.success() && stdout == "exec in hello" {
                Ok(stdout)
            } else {
                Err(format!("{}: {}", output.status, String::from_utf8_lossy(&output.stderr).trim()))
            }
        }),
    )
    .await;
    checks.push(Check { what: "kubectl exec", outcome, took: started.elapsed() });

    let started = Instant::now();
    let forward = PortForward::start(ns, TENANT, "pod/hello", 8080).await;
    let outcome =
        bounded(patience, poll_for(patience, interval, async || http_get_local(forward.port).await)).await;
    let outcome = outcome.and_then(|page| {
        if page.contains("hello-from-web") { Ok("hello-from-web".to_string()) } else { Err(page) }
    });
    drop(forward);
    checks.push(Check { what: "kubectl port-forward", outcome, took: started.elapsed() });

    // The webhook: an allowed ConfigMap is created, a forbidden one is refused by the
    // probe on the worker (its message names the node).
    let started = Instant::now();
    let config_maps: Api<ConfigMap> = Api::namespaced(admin.clone(), GUARDED_NAMESPACE);
    let mut attempt = 0;
    let outcome = bounded(
        patience,
        poll_for(patience, interval, async || {
            attempt += 1;
            let allowed: ConfigMap =
                serde_json::from_value(json!({"metadata": {"name": format!("allowed-{attempt}")}}))
                    .expect("cm");
            config_maps.create(&PostParams::default(), &allowed).await.map_err(|error| error.to_string())?;
            let forbidden: ConfigMap =
                serde_json::from_value(json!({"metadata": {"name": format!("forbidden-{attempt}")}}))
                    .expect("cm");
            match config_maps.create(&PostParams::default(), &forbidden).await {
                Ok(_) => Err("the forbidden ConfigMap was created".to_string()),
                Err(error)
                    if error.to_string().contains(&format!("tunnel-probe on node {worker} denies")) =>
                {
                    Ok(error.to_string())
                }
                Err(error) => Err(error.to_string()),
            }
        }),
    )
    .await;
    checks.push(Check { what: "admission webhook", outcome, took: started.elapsed() });

    // The APIService: Available, and its list answered by the probe on the worker.
    let started = Instant::now();
    let outcome = bounded(
        patience,
        poll_for(patience, interval, async || {
            let request = http::Request::get(format!("/apis/{PROBE_GROUP}/v1/echoes"))
                .body(Vec::new())
                .expect("request");
            let text = admin.request_text(request).await.map_err(|error| error.to_string())?;
            if text.contains(&format!("from-{worker}")) { Ok(text) } else { Err(text) }
        }),
    )
    .await;
    checks.push(Check { what: "aggregated APIService", outcome, took: started.elapsed() });
    for check in &checks {
        eprintln!(
            "  {:<22} {:>6.1?}  {}",
            check.what,
            check.took,
            match &check.outcome {
                Ok(answer) => format!("ok: {}", answer.chars().take(100).collect::<String>()),
                Err(error) => format!("FAILED: {}", error.chars().take(160).collect::<String>()),
            }
        );
    }
    checks
}

#[tokio::test]
async fn through_the_tunnel_the_apiserver_reaches_a_worker_the_meta_cluster_cannot() {
    in_namespace("tunnel", async |ns| {
        let started = Instant::now();
        let (_operator, admin) = joinable_tenant(&ns, 20, true, 1, started).await;
        assert_routing(&ns, nestor::api::NodeRouting::Tunnel, &["kube-apiserver", "konnectivity-server"])
            .await;
        let worker = join_worker(&ns, &admin, "tp", started).await;
        worker.cut_off_from_meta_pods();
        deploy_workloads(&admin).await;
        eprintln!("[{:>6.1?}] workloads running on the worker", started.elapsed());
        let checks = check_the_worker(&ns, &admin, &worker.name, Duration::from_secs(120)).await;
        for check in &checks {
            assert!(check.outcome.is_ok(), "{} through the tunnel: {:?}", check.what, check.outcome);
        }
        let (message, took) = tunnel_ready(&ns, "True", "agents of 1 node(s) connected", MAX_WAIT).await;
        eprintln!("[{:>6.1?}] TunnelReady True ({took:?} after the checks): {message}", started.elapsed());
        eprintln!("[{:>6.1?}] all five through the tunnel; whole test", started.elapsed());
    })
    .await;
}

#[tokio::test]
async fn with_the_tunnel_off_the_same_checks_fail() {
    in_namespace("tunnel-off", async |ns| {
        let started = Instant::now();
        let (_operator, admin) = joinable_tenant(&ns, 21, false, 1, started).await;
        assert_routing(&ns, nestor::api::NodeRouting::Direct, &["kube-apiserver"]).await;
        let worker = join_worker(&ns, &admin, "to", started).await;
        worker.cut_off_from_meta_pods();
        deploy_workloads(&admin).await;
        eprintln!("[{:>6.1?}] workloads running on the worker", started.elapsed());
        let checks = check_the_worker(&ns, &admin, &worker.name, Duration::from_secs(20)).await;
        for check in &checks {
            assert!(check.outcome.is_err(), "{} worked without the tunnel: {:?}", check.what, check.outcome);
        }
        let tenant = ns.tenant(TENANT).await.expect("tenant");
        let condition = support::find_condition(&tenant, "TunnelReady").expect("TunnelReady");
        assert_eq!((condition.status.as_str(), condition.reason.as_str()), ("True", "TunnelDisabled"));
        eprintln!("[{:>6.1?}] all five fail without the tunnel; whole test", started.elapsed());
    })
    .await;
}

/// A tunnel tenant (`replicas` apiservers) with one worker cut off from the meta pod
/// network and pod `hello` running on it, whose logs already come through the tunnel.
async fn tunnel_with_a_worker(
    ns: &TestNamespace,
    test: i32,
    replicas: i32,
    prefix: &str,
    started: Instant,
) -> (Operator, kube::Client, WorkerHost) {
    let (operator, admin) = joinable_tenant(ns, test, true, replicas, started).await;
    let worker = join_worker(ns, &admin, prefix, started).await;
    worker.cut_off_from_meta_pods();
    let pods: Api<Pod> = Api::namespaced(admin.clone(), "default");
    let hello: Pod = serde_json::from_value(json!({
        "metadata": {"name": "hello"},
        "spec": {"terminationGracePeriodSeconds": 0, "containers": [{
            "name": "hello", "image": busybox_image(),
            "command": ["sh", "-c", "echo hello from $(hostname); exec sleep 3600"],
        }]},
    }))
    .expect("pod");
    wait_for("pod hello to be created", Duration::from_secs(60), async || {
        pods.create(&PostParams::default(), &hello).await.map(drop).map_err(|error| error.to_string())
    })
    .await;
    running_pod(&pods, "hello").await;
    let took = logs_work(&admin, Duration::from_secs(120)).await.expect("logs through the tunnel");
    eprintln!(
        "[{:>6.1?}] hello runs on the worker, its logs come through the tunnel ({took:?})",
        started.elapsed()
    );
    (operator, admin, worker)
}

/// Polls `kubectl logs hello` until it answers; how long that took.
async fn logs_work(admin: &kube::Client, patience: Duration) -> Result<Duration, String> {
    let started = Instant::now();
    let pods: Api<Pod> = Api::namespaced(admin.clone(), "default");
    poll_for(patience, Duration::from_millis(500), async || {
        let logs = pods.logs("hello", &LogParams::default()).await.map_err(|error| error.to_string())?;
        if logs.contains("hello from hello") { Ok(()) } else { Err(format!("logs {logs:?}")) }
    })
    .await?;
    Ok(started.elapsed())
}

/// One `kubectl exec hello -- true` (extra kubectl `args` first); Err with kubectl's
/// message.
async fn exec_true(ns: &TestNamespace, args: &[&str]) -> Result<Duration, String> {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["exec", "hello", "--", "true"]);
    let (mut command, kubeconfig) = kubectl_command(ns, TENANT, &all).await;
    let started = Instant::now();
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("join")
        .map_err(|e| e.to_string())?;
    drop(kubeconfig);
    if output.status.success() {
        Ok(started.elapsed())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).trim().to_string())
    }
}

/// How long after the start of an apiserver roll TunnelReady must be True again and name
/// the new server: the roll itself (5–20 s here), the agent's reconnection, a probe
/// interval (10 s) and a pass, with room for a loaded machine.
const TUNNEL_READY_AFTER_A_ROLL: Duration = Duration::from_secs(120);

/// The agent gauges on the `/metrics` of the konnectivity-server in the apiserver pod at
/// `ip`, one line; why they could not be read otherwise.
async fn server_gauges(ip: &str) -> String {
    let port = u16::try_from(nestor::resources::konnectivity::HEALTH_PORT).expect("port");
    let Ok(ip) = ip.parse() else { return format!("bad address {ip}") };
    let address = std::net::SocketAddr::new(ip, port);
    match nestor::health::tunnel::metrics_text(address, Duration::from_secs(5)).await {
        Ok(text) => text
            .lines()
            .filter(|line| line.starts_with("konnectivity_network_proxy_server_ready_backend"))
            .collect::<Vec<_>>()
            .join("; "),
        Err(error) => error,
    }
}

/// The label selector of the konnectivity agents inside a tenant.
const AGENT_SELECTOR: &str = "k8s-app=konnectivity-agent";

/// The last lines of the konnectivity agents' logs inside the tenant, for a failure message.
async fn agent_log_tail(admin: &kube::Client) -> String {
    let agents: Api<Pod> = Api::namespaced(admin.clone(), "kube-system");
    let selector = kube::api::ListParams::default().labels(AGENT_SELECTOR);
    let Ok(list) = agents.list(&selector).await else { return "(agents not listed)".to_string() };
    let mut tail = String::new();
    for agent in list.items {
        let name = agent.metadata.name.unwrap_or_default();
        let params = LogParams { tail_lines: Some(30), ..Default::default() };
        let log = agents.logs(&name, &params).await.unwrap_or_else(|error| error.to_string());
        tail.push_str(&format!("--- {name}\n{log}\n"));
    }
    tail
}

/// The tenant's apiserver pods that are not being deleted, with their addresses.
async fn apiserver_pods(ns: &TestNamespace) -> Vec<(String, String)> {
    let names = ns.names(TENANT);
    let selector = names.component_selector(nestor::names::Component::ApiServer);
    let pods = ns.api::<Pod>().list(&kube::api::ListParams::default().labels(&selector)).await.expect("pods");
    pods.items
        .into_iter()
        .filter(|pod| pod.metadata.deletion_timestamp.is_none())
        .filter_map(|pod| Some((pod.metadata.name?, pod.status?.pod_ip?)))
        .collect()
}

#[tokio::test]
async fn a_killed_agent_reconnects_and_logs_work_again() {
    in_namespace("tunnel-agent", async |ns| {
        let started = Instant::now();
        let (_operator, admin, worker) = tunnel_with_a_worker(&ns, 22, 1, "ta", started).await;
        let agents: Api<Pod> = Api::namespaced(admin.clone(), "kube-system");
        let selector = kube::api::ListParams::default().labels(AGENT_SELECTOR);
        let agent =
            agents.list(&selector).await.expect("agents").items.into_iter().next().expect("an agent pod");
        let agent_name = agent.metadata.name.clone().expect("name");
        let killed = Instant::now();
        // A grace period of one second, not zero: zero removes the object at once while
        // the container may still run. Gone from the API means the kubelet stopped it and
        // its connections are closed; logs work again only once the replacement connected.
        agents
            .delete(&agent_name, &kube::api::DeleteParams::default().grace_period(1))
            .await
            .expect("delete");
        wait_for("the killed agent to be gone", MAX_WAIT, async || match agents.get_opt(&agent_name).await {
            Ok(None) => Ok(()),
            Ok(Some(_)) => Err("still there".to_string()),
            Err(error) => Err(error.to_string()),
        })
        .await;
        let gone = killed.elapsed();
        let recovered = logs_work(&admin, MAX_WAIT).await.expect("logs after the agent was killed");
        let replacement = agents.list(&selector).await.expect("agents").items;
        let replacement = replacement.first().and_then(|pod| pod.metadata.name.clone()).unwrap_or_default();
        assert_ne!(replacement, agent_name, "a new agent pod");
        eprintln!(
            "[{:>6.1?}] agent {agent_name} on {} killed, gone after {gone:?}; through its replacement \
             {replacement} logs work again {:?} after the kill (recovery time)",
            started.elapsed(),
            worker.name,
            gone + recovered
        );
        let (message, took) = tunnel_ready(&ns, "True", "agents of 1 node(s) connected", MAX_WAIT).await;
        eprintln!("[{:>6.1?}] TunnelReady True again ({took:?}): {message}", started.elapsed());
    })
    .await;
}

#[tokio::test]
async fn after_an_apiserver_roll_the_agents_follow_and_no_exec_fails() {
    in_namespace("tunnel-roll", async |ns| {
        let started = Instant::now();
        let (_operator, admin, _worker) = tunnel_with_a_worker(&ns, 23, 1, "tr", started).await;
        exec_true(&ns, &[]).await.expect("exec before the roll");
        // A settled tenant, as in the field: with its addons not available yet, a pass
        // comes back every 15 s anyway, which hid a TunnelReady that lagged the roll (the
        // next pass of a settled tenant may be five minutes away).
        let (_, took) = condition_true(&ns, "AddonsReady", MAX_WAIT).await;
        eprintln!("[{:>6.1?}] AddonsReady True ({took:?})", started.elapsed());
        let before = apiserver_pods(&ns).await;
        // A certificate renewal: the server's serving certificate is re-issued, the config
        // hash changes, and the apiserver pods roll.
        let names = ns.names(TENANT);
        ns.api::<Secret>()
            .delete(&names.konnectivity_server_serving_secret(), &Default::default())
            .await
            .expect("delete the konnectivity-server certificate");
        let rolled = Instant::now();
        let after = wait_for("the apiserver pods to be replaced", MAX_WAIT, async || {
            let now = apiserver_pods(&ns).await;
            let replaced = !now.is_empty() && now.iter().all(|pod| !before.contains(pod));
            let deployment = ns
                .api::<k8s_openapi::api::apps::v1::Deployment>()
                .get(&names.apiserver())
                .await
                .map_err(|error| error.to_string())?;
            let status = deployment.status.unwrap_or_default();
            let settled = status.updated_replicas == Some(1)
                && status.ready_replicas == Some(1)
                && status.replicas == Some(1);
            if replaced && settled { Ok(now) } else { Err(format!("{now:?}, {status:?}")) }
        })
        .await;
        eprintln!("[{:>6.1?}] apiserver rolled to {after:?} in {:?}", started.elapsed(), rolled.elapsed());
        // TunnelReady follows the roll: True, naming the new server with the agent and no
        // replaced one, within a bound counted from the roll's start. It used to keep naming
        // the replaced pod for minutes (until the tenant's next resync).
        let replaced = rolled.elapsed();
        let patience = TUNNEL_READY_AFTER_A_ROLL.saturating_sub(replaced);
        let shown = poll_for(patience, Duration::from_secs(1), async || {
            let tenant = ns.tenant(TENANT).await?;
            let condition = support::find_condition(&tenant, "TunnelReady").ok_or("no TunnelReady")?;
            let message = &condition.message;
            let names_new = after.iter().all(|(pod, _)| message.contains(&format!("{pod}: 1 agent(s)")));
            let names_old = before.iter().any(|(pod, _)| message.contains(pod.as_str()));
            if condition.status == "True" && names_new && !names_old {
                Ok(message.clone())
            } else {
                Err(format!("{} {}: {message}", condition.status, condition.reason))
            }
        })
        .await;
        let gauges = futures::future::join_all(after.iter().map(|(pod, ip)| async move {
            format!("{pod}: {}", server_gauges(ip).await)
        }))
        .await;
        let message = shown.unwrap_or_else(|condition| {
            panic!(
                "TunnelReady does not name the new server {after:?} within {TUNNEL_READY_AFTER_A_ROLL:?} \
                 of the roll; it says {condition}\nthe new servers' agent gauges: {gauges:?}"
            )
        });
        eprintln!(
            "[{:>6.1?}] TunnelReady names the new server {:?} after the roll began ({:?} after the pod \
             was replaced): {message}\n          gauges: {gauges:?}",
            started.elapsed(),
            rolled.elapsed(),
            rolled.elapsed().saturating_sub(replaced)
        );
        let recovery =
            poll_for(MAX_WAIT, Duration::from_millis(500), async || exec_true(&ns, &[]).await).await;
        assert!(recovery.is_ok(), "exec after the roll: {recovery:?}");
        eprintln!(
            "[{:>6.1?}] exec works through the new server {:?} after the roll began (recovery time)",
            started.elapsed(),
            rolled.elapsed()
        );
        // Settled: every exec from here on succeeds.
        let mut latencies = Vec::new();
        for attempt in 0..20 {
            match exec_true(&ns, &[]).await {
                Ok(took) => latencies.push(took),
                Err(error) => {
                    let pods = apiserver_pods(&ns).await;
                    let agent_log = agent_log_tail(&admin).await;
                    panic!(
                        "exec {attempt} after the roll settled failed: {error}\napiserver pods now: {pods:?}\n\
                         agent log:\n{agent_log}"
                    )
                }
            }
        }
        latencies.sort();
        eprintln!(
            "[{:>6.1?}] 20 of 20 execs after the roll succeeded, median {:?}",
            started.elapsed(),
            latencies[10]
        );
    })
    .await;
}

#[tokio::test]
async fn with_two_apiservers_each_has_the_agents_and_logs_work_through_either() {
    in_namespace("tunnel-ha", async |ns| {
        let started = Instant::now();
        let (_operator, _admin, _worker) = tunnel_with_a_worker(&ns, 24, 2, "th", started).await;
        let (message, took) = tunnel_ready(&ns, "True", "agents of 1 node(s) connected", MAX_WAIT).await;
        eprintln!("[{:>6.1?}] TunnelReady True ({took:?}): {message}", started.elapsed());
        let pods = apiserver_pods(&ns).await;
        assert_eq!(pods.len(), 2, "two apiservers: {pods:?}");
        for (pod, _) in &pods {
            assert!(message.contains(&format!("{pod}: 1 agent(s)")), "{pod} has the agent: {message}");
        }
        for (pod, ip) in &pods {
            // Straight to this replica, past the Service.
            let server = format!("--server=https://{ip}:6443");
            let (mut command, kubeconfig) = kubectl_command(&ns, TENANT, &["logs", "hello", &server]).await;
            let begun = Instant::now();
            let output =
                tokio::task::spawn_blocking(move || command.output()).await.expect("join").expect("kubectl");
            drop(kubeconfig);
            let stdout = String::from_utf8_lossy(&output.stdout);
            assert!(
                output.status.success() && stdout.contains("hello from hello"),
                "kubectl logs through {pod}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            eprintln!(
                "[{:>6.1?}] kubectl logs through replica {pod} ({ip}) in {:?}",
                started.elapsed(),
                begun.elapsed()
            );
        }
    })
    .await;
}

#[tokio::test]
async fn a_blocked_tunnel_port_turns_tunnel_ready_false_and_it_recovers() {
    in_namespace("tunnel-block", async |ns| {
        let started = Instant::now();
        let (_operator, admin, worker) = tunnel_with_a_worker(&ns, 25, 1, "tb", started).await;
        tunnel_ready(&ns, "True", "agents of 1 node(s) connected", MAX_WAIT).await;
        let service = ns.api::<Service>().get(&ns.names(TENANT).apiserver()).await.expect("Service");
        let tunnel_port = service
            .spec
            .and_then(|spec| spec.ports)
            .unwrap_or_default()
            .into_iter()
            .find(|port| port.name.as_deref() == Some("konnectivity"))
            .and_then(|port| port.node_port)
            .expect("the tunnel's node port");
        worker.block_port(tunnel_port, true);
        let blocked = Instant::now();
        eprintln!("[{:>6.1?}] worker {}: port {tunnel_port} blocked", started.elapsed(), worker.name);
        let (message, took) = tunnel_ready(&ns, "False", "agents missing", Duration::from_secs(240)).await;
        assert!(message.contains("tunnel port"), "the message says what the nodes must reach: {message}");
        eprintln!("[{:>6.1?}] TunnelReady False {took:?} after the block: {message}", started.elapsed());
        worker.block_port(tunnel_port, false);
        let unblocked = Instant::now();
        let (message, took) = tunnel_ready(&ns, "True", "agents of 1 node(s) connected", MAX_WAIT).await;
        eprintln!(
            "[{:>6.1?}] unblocked after {:?}; TunnelReady True again {took:?} later (recovery time): {message}",
            started.elapsed(),
            unblocked.duration_since(blocked)
        );
        logs_work(&admin, Duration::from_secs(60)).await.expect("logs after the recovery");
    })
    .await;
}
