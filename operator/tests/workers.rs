//! Real workers, against the local meta cluster: a worker host (hack/worker-up.sh, its own
//! network and mount namespaces, containerd and kubelet) runs the real `kubeadm join` with
//! the line `nestor join` printed, and becomes a Ready Node that runs pods, whose logs and
//! exec go through the tenant apiserver to its kubelet. Tokens that are expired or wrong
//! are refused by kubeadm itself and leave no Node.
//!
//! Each test prints its timings. Workers are removed with worker-down when a test ends,
//! also when it fails (support::worker::WorkerHost).

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Secret};
use kube::ResourceExt;
use kube::api::{Api, ListParams, LogParams, PostParams};
use nestor::names::Component;
use serde_json::json;
use support::worker::{PortForward, WorkerHost, busybox_image, free_node_port, http_get_local};
use support::{
    MAX_WAIT, Operator, TestNamespace, in_namespace, poll_for, run_nestor, runnable_spec, wait_for,
};

const TENANT: &str = "workers";
const CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";
const SERVING_SIGNER: &str = "kubernetes.io/kubelet-serving";

/// Starts an operator for `ns`, creates a tenant nodes can join at a free node port and waits
/// until it is Ready; returns the operator (kept alive by the caller) and an admin client.
async fn joinable_tenant(ns: &TestNamespace, test: i32, started: Instant) -> (Operator, kube::Client) {
    let operator = Operator::start(&ns.name, "workers").await;
    let node_port = free_node_port(ns, test).await;
    let mut spec = runnable_spec();
    spec["network"] = json!({"serviceType": "NodePort", "externalHost": "10.200.0.1", "nodePort": node_port});
    ns.create_tenant(TENANT, spec).await;
    wait_for("the tenant to be Ready", MAX_WAIT, async || {
        let tenant = ns.tenant(TENANT).await?;
        if support::is_ready(&tenant) { Ok(()) } else { Err(support::describe_tenant(&tenant)) }
    })
    .await;
    eprintln!("[{:>6.1?}] tenant Ready", started.elapsed());
    (operator, ns.tenant_client(TENANT).await.expect("tenant client"))
}

/// `nestor join` for the test tenant: the `kubeadm join` line and the token's id.
async fn join_line(ns: &TestNamespace, ttl: &str) -> (String, String) {
    let line = run_nestor(&["join", TENANT, "-n", &ns.name, "--ttl", ttl]).await.expect_success();
    let line = line.trim().to_string();
    let token = line.split_whitespace().skip_while(|word| *word != "--token").nth(1).expect("--token");
    let id = token.split('.').next().expect("token id").to_string();
    (line, id)
}

/// Waits until the bootstrapsigner signed cluster-info for token `id`: kubeadm's discovery
/// waits for that signature (up to its 5-minute discovery timeout) before anything else.
async fn wait_for_signature(admin: &kube::Client, id: &str) {
    let public: Api<ConfigMap> = Api::namespaced(admin.clone(), "kube-public");
    wait_for(&format!("cluster-info signed for token {id}"), MAX_WAIT, async || {
        let info = public.get("cluster-info").await.map_err(|error| error.to_string())?;
        let keys: Vec<String> = info.data.unwrap_or_default().into_keys().collect();
        if keys.contains(&format!("jws-kubeconfig-{id}")) { Ok(()) } else { Err(format!("keys {keys:?}")) }
    })
    .await;
}

fn condition_true(node: &Node, type_: &str) -> bool {
    node.status
        .as_ref()
        .and_then(|status| status.conditions.as_ref())
        .is_some_and(|conditions| conditions.iter().any(|c| c.type_ == type_ && c.status == "True"))
}

fn approved(csr: &CertificateSigningRequest) -> bool {
    csr.status
        .as_ref()
        .and_then(|status| status.conditions.as_ref())
        .is_some_and(|conditions| conditions.iter().any(|c| c.type_ == "Approved" && c.status == "True"))
}

/// The certificate a CSR was answered with, as PEM.
fn issued(csr: &CertificateSigningRequest) -> Option<String> {
    let certificate = csr.status.as_ref()?.certificate.as_ref()?;
    (!certificate.0.is_empty()).then(|| String::from_utf8_lossy(&certificate.0).into_owned())
}

/// The DER of the first certificate in `pem`.
fn first_certificate_der(pem: &str) -> Vec<u8> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).expect("a PEM certificate");
    block.contents
}

/// Subject common name, organizations and IP SANs of a PEM certificate; panics unless it
/// is signed by `ca_pem`.
fn signed_certificate(pem: &str, ca_pem: &str) -> (String, Vec<String>, Vec<String>) {
    let der = first_certificate_der(pem);
    let ca_der = first_certificate_der(ca_pem);
    let (_, certificate) = x509_parser::parse_x509_certificate(&der).expect("an X.509 certificate");
    let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).expect("the CA certificate");
    certificate.verify_signature(Some(ca.public_key())).expect("signed by the tenant CA");
    let subject = certificate.subject();
    let common_name =
        subject.iter_common_name().filter_map(|cn| cn.as_str().ok()).collect::<Vec<_>>().join(",");
    let organizations =
        subject.iter_organization().filter_map(|o| o.as_str().ok().map(str::to_string)).collect();
    let addresses = certificate
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|extension| {
            extension
                .value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    x509_parser::extensions::GeneralName::IPAddress(bytes) if bytes.len() == 4 => {
                        Some(std::net::Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]).to_string())
                    }
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    (common_name, organizations, addresses)
}

#[tokio::test]
async fn a_worker_joins_with_the_line_nestor_join_prints_and_runs_a_pod() {
    in_namespace("workers", async |ns| {
        let started = Instant::now();
        let (_operator, admin) = joinable_tenant(&ns, 0, started).await;
        let names = ns.names(TENANT);
        let ca_secret = ns.secret(&names.cluster_ca_secret()).await.expect("read").expect("cluster CA Secret");
        let ca_pem = String::from_utf8(ca_secret.data.expect("data")["tls.crt"].0.clone()).expect("utf-8");

        let (line, token_id) = join_line(&ns, "10m").await;
        eprintln!("[{:>6.1?}] {line}", started.elapsed());
        wait_for_signature(&admin, &token_id).await;

        // The real kubeadm join on a worker host; worker-up returns once the Node is Ready.
        let worker = WorkerHost::named("wj");
        let joined = Instant::now();
        let run = worker.up(&line, &[], "pause kube-proxy coredns busybox kas-network-proxy-proxy-agent").await;
        assert!(run.success, "worker-up {} failed:\n{}", worker.name, run.stderr);
        let nodes: Api<Node> = Api::all(admin.clone());
        let node = nodes.get(&worker.name).await.expect("the worker's Node");
        assert!(condition_true(&node, "Ready"), "Node {} not Ready: {:?}", worker.name, node.status);
        let address = node
            .status
            .as_ref()
            .and_then(|status| status.addresses.as_ref())
            .and_then(|addresses| addresses.iter().find(|a| a.type_ == "InternalIP"))
            .map(|a| a.address.clone())
            .expect("an InternalIP");
        assert!(address.starts_with("10.202."), "the worker's own address, not {address}");
        let ready_line = run.stderr.lines().find(|l| l.contains("Ready") && l.contains("after kubeadm join"));
        eprintln!(
            "[{:>6.1?}] Node {} Ready at {address}, {:?} after worker-up started (image import included); worker-up: {}",
            started.elapsed(),
            worker.name,
            joined.elapsed(),
            ready_line.unwrap_or("?").trim()
        );

        // The kubelet's client certificate: TLS bootstrap with the token, a CSR the
        // controller-manager approved on its own, signed by the tenant CA; the kubelet uses it.
        let csrs: Api<CertificateSigningRequest> = Api::all(admin.clone());
        let all = csrs.list(&ListParams::default()).await.expect("list CSRs").items;
        let client_csr = all
            .iter()
            .find(|csr| csr.spec.signer_name == CLIENT_SIGNER)
            .unwrap_or_else(|| panic!("no {CLIENT_SIGNER} CSR among {} CSRs", all.len()));
        assert_eq!(client_csr.spec.username.as_deref(), Some(format!("system:bootstrap:{token_id}").as_str()));
        assert!(approved(client_csr), "client CSR not approved: {:?}", client_csr.status);
        let client_pem = issued(client_csr).expect("the client CSR was signed");
        let (common_name, organizations, _) = signed_certificate(&client_pem, &ca_pem);
        assert_eq!(common_name, format!("system:node:{}", worker.name));
        assert_eq!(organizations, vec!["system:nodes".to_string()]);
        let on_disk = worker.read_file("/var/lib/kubelet/pki/kubelet-client-current.pem").expect("kubelet client cert");
        assert_eq!(first_certificate_der(&on_disk), first_certificate_der(&client_pem), "the kubelet uses it");

        // Its serving certificate: a kubelet-serving CSR the operator approved against the
        // Node, signed by the tenant CA for the Node's address.
        let serving_csr = wait_for("the kubelet serving CSR to be approved and signed", MAX_WAIT, async || {
            let all = csrs.list(&ListParams::default()).await.map_err(|error| error.to_string())?.items;
            let csr = all.into_iter().find(|csr| csr.spec.signer_name == SERVING_SIGNER).ok_or("no serving CSR")?;
            if approved(&csr) && issued(&csr).is_some() { Ok(csr) } else { Err(format!("{:?}", csr.status)) }
        })
        .await;
        assert_eq!(serving_csr.spec.username.as_deref(), Some(format!("system:node:{}", worker.name).as_str()));
        let serving_pem = issued(&serving_csr).expect("signed");
        let (common_name, _, addresses) = signed_certificate(&serving_pem, &ca_pem);
        assert_eq!(common_name, format!("system:node:{}", worker.name));
        assert!(addresses.contains(&address), "serving certificate for {addresses:?}, Node at {address}");
        let on_disk = worker.read_file("/var/lib/kubelet/pki/kubelet-server-current.pem").expect("kubelet serving cert");
        assert_eq!(first_certificate_der(&on_disk), first_certificate_der(&serving_pem), "the kubelet serves it");
        eprintln!("[{:>6.1?}] client and serving certificates approved, signed by the tenant CA", started.elapsed());

        // A pod, scheduled by the tenant's scheduler onto the worker.
        let pods: Api<Pod> = Api::namespaced(admin.clone(), "default");
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "hello", "labels": {"app": "hello"}},
            "spec": {
                "terminationGracePeriodSeconds": 0,
                "containers": [{
                    "name": "hello",
                    "image": busybox_image(),
                    "command": ["sh", "-c", "echo hello from $(hostname) on $NODE; mkdir -p /www; echo hello-from-web > /www/index.html; httpd -p 8080 -h /www; exec sleep 3600"],
                    "env": [{"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
                }],
            },
        }))
        .expect("pod");
        let created = Instant::now();
        // The default ServiceAccount appears shortly after the tenant starts.
        wait_for("the pod to be created", Duration::from_secs(60), async || {
            pods.create(&PostParams::default(), &pod).await.map(drop).map_err(|error| error.to_string())
        })
        .await;
        let running = running_pod(&pods, "hello", Duration::from_secs(120)).await;
        let spec = running.spec.as_ref().expect("spec");
        assert_eq!(spec.node_name.as_deref(), Some(worker.name.as_str()));
        let pod_ip = running.status.as_ref().and_then(|status| status.pod_ip.clone()).unwrap_or_default();
        assert!(pod_ip.starts_with("10.203."), "a pod address of the worker's bridge, not {pod_ip:?}");
        eprintln!("[{:>6.1?}] pod Running at {pod_ip}, {:?} after it was created", started.elapsed(), created.elapsed());

        // Logs and exec: the tenant apiserver asks the kubelet, whose serving certificate it
        // verifies against the tenant CA.
        let logs = wait_for("the pod's logs through the tenant apiserver", Duration::from_secs(60), async || {
            let logs = pods.logs("hello", &LogParams::default()).await.map_err(|error| error.to_string())?;
            if logs.contains("hello from") { Ok(logs) } else { Err(format!("logs {logs:?}")) }
        })
        .await;
        assert_eq!(logs.trim(), format!("hello from hello on {}", worker.name));
        let exec = kubectl(&ns, &["exec", "hello", "--", "sh", "-c", "echo exec in $(hostname)"]).await;
        assert_eq!(exec.trim(), "exec in hello");
        eprintln!("[{:>6.1?}] logs and exec through the tenant apiserver", started.elapsed());

        // Port-forward: the real kubectl, in the background, forwards a local port through
        // the tenant apiserver to the kubelet and into the pod's httpd; the page is fetched
        // over plain TCP from here.
        let forwarding = Instant::now();
        let forward = PortForward::start(&ns, TENANT, "pod/hello", 8080).await;
        let page = wait_for("the page through kubectl port-forward", Duration::from_secs(60), async || {
            http_get_local(forward.port).await
        })
        .await;
        assert!(page.contains("hello-from-web"), "port-forward answered {page:?}");
        let forward_pid = forward.pid();
        drop(forward);
        eprintln!(
            "[{:>6.1?}] the pod's httpd answered through kubectl port-forward {:?} after kubectl started \
             (pid {forward_pid}, killed)",
            started.elapsed(),
            forwarding.elapsed()
        );

        // The addons on the worker: kube-proxy and CoreDNS run (their pods reach the
        // apiserver through the `kubernetes` Service, whose endpoint is the node endpoint),
        // a ClusterIP Service answers from another pod, and names resolve through CoreDNS.
        addons_ready(&ns).await;
        eprintln!("[{:>6.1?}] kube-proxy and CoreDNS available on the worker", started.elapsed());
        let services: Api<k8s_openapi::api::core::v1::Service> = Api::namespaced(admin.clone(), "default");
        let service: k8s_openapi::api::core::v1::Service = serde_json::from_value(json!({
            "metadata": {"name": "hello"},
            "spec": {"selector": {"app": "hello"}, "ports": [{"port": 80, "targetPort": 8080}]},
        }))
        .expect("service");
        services.create(&PostParams::default(), &service).await.expect("create the Service");
        let client: Pod = serde_json::from_value(json!({
            "metadata": {"name": "client"},
            "spec": {
                "terminationGracePeriodSeconds": 0,
                "containers": [{"name": "client", "image": busybox_image(), "command": ["sleep", "3600"]}],
            },
        }))
        .expect("pod");
        pods.create(&PostParams::default(), &client).await.expect("create the client pod");
        running_pod(&pods, "client", Duration::from_secs(120)).await;
        // busybox's nc, not wget (which crashes in this image); the Service by its DNS name.
        let fetch = "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 hello.default.svc.cluster.local 80";
        let page = kubectl(&ns, &["exec", "client", "--", "sh", "-c", fetch]).await;
        assert!(page.contains("hello-from-web"), "the Service answered {page:?}");
        let lookup = kubectl(&ns, &["exec", "client", "--", "nslookup", "kubernetes.default.svc.cluster.local"]).await;
        assert!(lookup.contains("10.96.0.1"), "kubernetes.default resolves to its ClusterIP: {lookup}");
        eprintln!("[{:>6.1?}] a ClusterIP Service answers by its DNS name; whole test", started.elapsed());
    })
    .await;
}

#[tokio::test]
async fn expired_and_wrong_tokens_are_refused_by_kubeadm_and_leave_no_node() {
    in_namespace("tokens", async |ns| {
        let started = Instant::now();
        let (_operator, admin) = joinable_tenant(&ns, 1, started).await;
        let tokens: Api<Secret> = Api::namespaced(admin.clone(), "kube-system");

        // An expired token: the controller-manager's tokencleaner deletes its Secret once it
        // expires (it queues each token for its expiry time; no period to wait for).
        let (expired_line, expired_id) = join_line(&ns, "1s").await;
        let issued_at = Instant::now();
        wait_for("the tokencleaner to delete the expired token", Duration::from_secs(30), async || {
            match tokens.get_opt(&format!("bootstrap-token-{expired_id}")).await {
                Ok(None) => Ok(()),
                Ok(Some(_)) => Err("still there".into()),
                Err(error) => Err(error.to_string()),
            }
        })
        .await;
        eprintln!(
            "[{:>6.1?}] expired token {expired_id} deleted {:?} after it was created with --ttl 1s",
            started.elapsed(),
            issued_at.elapsed()
        );

        // A wrong token: a real token's id with another secret. Discovery finds the id's
        // signature on cluster-info and kubeadm refuses to trust what the secret cannot verify.
        let (line, id) = join_line(&ns, "10m").await;
        wait_for_signature(&admin, &id).await;
        let wrong_line = {
            let mut words: Vec<&str> = line.split_whitespace().collect();
            let at = words.iter().position(|word| *word == "--token").expect("--token") + 1;
            let wrong = format!("{id}.0123456789abcdef");
            assert_ne!(words[at], wrong, "a token that happens to be right");
            words[at] = &wrong;
            words.join(" ")
        };
        let worker = WorkerHost::named("wr");
        let run = worker.up(&wrong_line, &[], "pause").await;
        assert!(!run.success, "a wrong token joined:\n{}", run.stderr);
        let refusal =
            "failed to verify JWS signature of received cluster info object, can't trust this API Server";
        assert!(run.stderr.contains(refusal), "kubeadm's own refusal expected:\n{}", run.stderr);
        eprintln!("[{:>6.1?}] wrong token refused by kubeadm after {:?}", started.elapsed(), run.elapsed);
        drop(worker);

        // The expired token: no signature for its id any more. kubeadm cannot tell it from
        // a token not yet signed, so it says so and retries until its discovery timeout
        // (5 minutes, settable only in a --config file, which worker-up's flags exclude);
        // the test takes kubeadm's error from its first retries (--v=1) and stops there.
        let mut worker = WorkerHost::named("we");
        worker.spawn_up(&expired_line, &["--v=1"], "pause");
        let refusal = format!(
            "could not find a JWS signature in the cluster-info ConfigMap for token ID \"{expired_id}\""
        );
        let began = Instant::now();
        wait_for("kubeadm to refuse the expired token", Duration::from_secs(90), async || {
            if worker.log("kubeadm").contains(&refusal) { Ok(()) } else { Err(worker.log("kubeadm")) }
        })
        .await;
        eprintln!(
            "[{:>6.1?}] expired token refused by kubeadm discovery {:?} after worker-up started",
            started.elapsed(),
            began.elapsed()
        );
        assert!(!worker.log("kubeadm").contains("This node has joined the cluster"));
        drop(worker);

        // Neither got anywhere: no Node, not even a certificate request.
        let nodes: Api<Node> = Api::all(admin.clone());
        let names: Vec<String> = nodes
            .list(&ListParams::default())
            .await
            .expect("nodes")
            .items
            .into_iter()
            .filter_map(|n| n.metadata.name)
            .collect();
        assert!(names.is_empty(), "Nodes after refused joins: {names:?}");
        let csrs: Api<CertificateSigningRequest> = Api::all(admin.clone());
        let requests = csrs.list(&ListParams::default()).await.expect("CSRs").items.len();
        assert_eq!(requests, 0, "certificate requests after refused joins");
        eprintln!("[{:>6.1?}] no Node, no CSR; whole test", started.elapsed());
    })
    .await;
}

const FROM: &str = "1.34.2";
const TO: &str = "1.35.4";

/// Joins a worker named `prefix-<hex>` to the test tenant with a fresh `nestor join` line,
/// importing `images`; returns once its Node is Ready.
async fn join_worker(
    ns: &TestNamespace,
    admin: &kube::Client,
    prefix: &str,
    images: &str,
    started: Instant,
) -> WorkerHost {
    let (line, token_id) = join_line(ns, "10m").await;
    wait_for_signature(admin, &token_id).await;
    let worker = WorkerHost::named(prefix);
    let run = worker.up(&line, &[], images).await;
    assert!(run.success, "worker-up {} failed:\n{}", worker.name, run.stderr);
    let node = Api::<Node>::all(admin.clone()).get(&worker.name).await.expect("the worker's Node");
    assert!(condition_true(&node, "Ready"), "Node {} not Ready: {:?}", worker.name, node.status);
    eprintln!(
        "[{:>6.1?}] worker {} joined and Ready ({:?} of worker-up)",
        started.elapsed(),
        worker.name,
        run.elapsed
    );
    worker
}

/// Waits until pod `name` runs, and returns it.
async fn running_pod(pods: &Api<Pod>, name: &str, timeout: Duration) -> Pod {
    wait_for(&format!("pod {name} to run"), timeout, async || {
        let pod = pods.get(name).await.map_err(|error| error.to_string())?;
        let phase = pod.status.as_ref().and_then(|status| status.phase.clone()).unwrap_or_default();
        if phase == "Running" { Ok(pod) } else { Err(format!("phase {phase:?}: {:?}", pod.status)) }
    })
    .await
}

/// Waits for AddonsReady True: kube-proxy and CoreDNS available on the joined nodes.
async fn addons_ready(ns: &TestNamespace) {
    wait_for("AddonsReady on the worker", Duration::from_secs(180), async || {
        let tenant = ns.tenant(TENANT).await?;
        match support::find_condition(&tenant, "AddonsReady") {
            Some(condition) if condition.status == "True" && condition.reason == "Ready" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
}

/// The version in an image's tag (`…/kube-proxy:v1.35.4` → `1.35.4`).
fn version_of(image: &str) -> String {
    image.rsplit_once(':').map_or("", |(_, tag)| tag.trim_start_matches('v')).to_string()
}

fn first_image(spec: Option<&k8s_openapi::api::core::v1::PodSpec>) -> String {
    spec.and_then(|spec| spec.containers.first())
        .and_then(|container| container.image.clone())
        .unwrap_or_default()
}

/// The version of meta Deployment `name`'s pod template.
async fn template_version(ns: &TestNamespace, name: &str) -> Result<String, String> {
    let deployment =
        ns.api::<Deployment>().get(name).await.map_err(|error| format!("Deployment {name}: {error}"))?;
    Ok(version_of(&first_image(deployment.spec.as_ref().and_then(|spec| spec.template.spec.as_ref()))))
}

/// The versions of the tenant's live (not terminating) apiserver pods.
async fn apiserver_versions(ns: &TestNamespace) -> Result<Vec<String>, String> {
    let selector = ns.names(TENANT).component_selector(Component::ApiServer);
    let pods =
        ns.api::<Pod>().list(&ListParams::default().labels(&selector)).await.map_err(|e| e.to_string())?;
    Ok(pods
        .items
        .iter()
        .filter(|pod| pod.metadata.deletion_timestamp.is_none())
        .map(|pod| version_of(&first_image(pod.spec.as_ref())))
        .collect())
}

/// One look at the upgrade in progress, kube-proxy read first: anything read after it can
/// only be newer, so kube-proxy at the new version next to an older component is a real
/// violation of the order, not an artefact of the sampling.
struct UpgradeSample {
    kube_proxy: String,
    apiservers: Vec<String>,
    controller_manager: String,
    scheduler: String,
}

async fn upgrade_sample(ns: &TestNamespace, inside: &kube::Client) -> Result<UpgradeSample, String> {
    let daemon_sets: Api<DaemonSet> = Api::namespaced(inside.clone(), "kube-system");
    let kube_proxy =
        daemon_sets.get("kube-proxy").await.map_err(|error| format!("kube-proxy DaemonSet: {error}"))?;
    let kube_proxy =
        version_of(&first_image(kube_proxy.spec.as_ref().and_then(|spec| spec.template.spec.as_ref())));
    let names = ns.names(TENANT);
    Ok(UpgradeSample {
        kube_proxy,
        apiservers: apiserver_versions(ns).await?,
        controller_manager: template_version(ns, &names.controller_manager()).await?,
        scheduler: template_version(ns, &names.scheduler()).await?,
    })
}

/// kube-proxy's DaemonSet at `version` and rolled out on every node, and the kube-proxy
/// pod on `node` running that image.
async fn kube_proxy_rolled_out(inside: &kube::Client, version: &str, node: &str) -> Result<(), String> {
    let daemon_sets: Api<DaemonSet> = Api::namespaced(inside.clone(), "kube-system");
    let daemon_set = daemon_sets.get("kube-proxy").await.map_err(|error| error.to_string())?;
    let template =
        version_of(&first_image(daemon_set.spec.as_ref().and_then(|spec| spec.template.spec.as_ref())));
    let status = daemon_set.status.clone().unwrap_or_default();
    let rolled = template == version
        && status.observed_generation == daemon_set.metadata.generation
        && status.updated_number_scheduled == Some(status.desired_number_scheduled)
        && status.number_available == Some(status.desired_number_scheduled);
    if !rolled {
        return Err(format!("kube-proxy template {template}, status {status:?}"));
    }
    let pods: Api<Pod> = Api::namespaced(inside.clone(), "kube-system");
    let on_node = pods
        .list(&ListParams::default().labels("k8s-app=kube-proxy").fields(&format!("spec.nodeName={node}")))
        .await
        .map_err(|error| error.to_string())?;
    let running: Vec<String> = on_node
        .items
        .iter()
        .filter(|pod| pod.metadata.deletion_timestamp.is_none())
        .filter(|pod| pod.status.as_ref().and_then(|status| status.phase.as_deref()) == Some("Running"))
        .map(|pod| version_of(&first_image(pod.spec.as_ref())))
        .collect();
    if running == [version.to_string()] {
        Ok(())
    } else {
        Err(format!("kube-proxy pods on {node}: {running:?}"))
    }
}

/// The prober's log lines: `<unix seconds> OK` or `<unix seconds> FAIL`.
fn probe_lines(logs: &str) -> (Vec<i64>, Vec<i64>) {
    let (mut ok, mut failed) = (Vec::new(), Vec::new());
    for line in logs.lines() {
        let mut words = line.split_whitespace();
        let (Some(at), Some(verdict)) = (words.next().and_then(|at| at.parse::<i64>().ok()), words.next())
        else {
            continue;
        };
        match verdict {
            "OK" => ok.push(at),
            "FAIL" => failed.push(at),
            _ => {}
        }
    }
    (ok, failed)
}

/// 6f: a tenant with a worker and a workload behind a Service is upgraded 1.34.2 → 1.35.4.
/// The workload answers a prober pod every second throughout; the control plane moves in
/// the version-skew order (apiserver, then controller-manager and scheduler, then
/// kube-proxy inside the tenant; CoreDNS stays); the worker's kubelet stays 1.34.2 (one
/// minor behind is within the skew policy) and its Node Ready.
#[tokio::test]
async fn an_upgrade_with_a_worker_joined_keeps_its_workload_answering_and_moves_kube_proxy_last() {
    in_namespace("wupgrade", async |ns| {
        let started = Instant::now();
        let (_operator, admin) = joinable_tenant(&ns, 2, started).await;
        // Both kube-proxy archives (the glob of worker-up matches v1.34.2 and v1.35.4).
        let worker = join_worker(&ns, &admin, "wu", "pause kube-proxy coredns busybox kas-network-proxy-proxy-agent", started).await;

        // The workload: two httpd replicas behind a ClusterIP Service, on the worker.
        let deployments: Api<Deployment> = Api::namespaced(admin.clone(), "default");
        let web: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {
                        "terminationGracePeriodSeconds": 0,
                        "containers": [{
                            "name": "web",
                            "image": busybox_image(),
                            "command": ["sh", "-c", "mkdir -p /www; echo hello-from-web > /www/index.html; httpd -f -p 8080 -h /www"],
                            "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
                        }],
                    },
                },
            },
        }))
        .expect("deployment");
        wait_for("the web Deployment to be created", Duration::from_secs(60), async || {
            deployments.create(&PostParams::default(), &web).await.map(drop).map_err(|error| error.to_string())
        })
        .await;
        let services: Api<k8s_openapi::api::core::v1::Service> = Api::namespaced(admin.clone(), "default");
        let service: k8s_openapi::api::core::v1::Service = serde_json::from_value(json!({
            "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
        }))
        .expect("service");
        services.create(&PostParams::default(), &service).await.expect("create the Service");
        wait_for("two web replicas available", Duration::from_secs(120), async || {
            let web = deployments.get("web").await.map_err(|error| error.to_string())?;
            let status = web.status.unwrap_or_default();
            if status.available_replicas == Some(2) { Ok(()) } else { Err(format!("{status:?}")) }
        })
        .await;
        addons_ready(&ns).await;
        eprintln!("[{:>6.1?}] 2 web replicas available, kube-proxy and CoreDNS ready", started.elapsed());

        // The prober: a pod that fetches the page through the Service by its DNS name once a
        // second and logs `<unix time> OK|FAIL`; its log is read at the end.
        let pods: Api<Pod> = Api::namespaced(admin.clone(), "default");
        let probe = "while true; do \
            if printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 web.default.svc.cluster.local 80 | grep -q hello-from-web; \
            then echo \"$(date +%s) OK\"; else echo \"$(date +%s) FAIL\"; fi; sleep 1; done";
        let prober: Pod = serde_json::from_value(json!({
            "metadata": {"name": "prober"},
            "spec": {
                "terminationGracePeriodSeconds": 0,
                "containers": [{"name": "prober", "image": busybox_image(), "command": ["sh", "-c", probe]}],
            },
        }))
        .expect("pod");
        pods.create(&PostParams::default(), &prober).await.expect("create the prober");
        running_pod(&pods, "prober", Duration::from_secs(120)).await;
        wait_for("the prober's first OK", Duration::from_secs(60), async || {
            let logs = pods.logs("prober", &LogParams::default()).await.map_err(|error| error.to_string())?;
            if probe_lines(&logs).0.is_empty() { Err(format!("logs {logs:?}")) } else { Ok(()) }
        })
        .await;

        // Before: everything at 1.34.2, CoreDNS at its own version.
        let coredns_image = |deployment: &Deployment| first_image(deployment.spec.as_ref().and_then(|spec| spec.template.spec.as_ref()));
        let inside_deployments: Api<Deployment> = Api::namespaced(admin.clone(), "kube-system");
        let coredns_before = coredns_image(&inside_deployments.get("coredns").await.expect("CoreDNS Deployment"));
        let before = upgrade_sample(&ns, &admin).await.expect("a sample before the upgrade");
        assert_eq!(
            (before.kube_proxy.as_str(), before.controller_manager.as_str(), before.scheduler.as_str()),
            (FROM, FROM, FROM)
        );
        assert_eq!(before.apiservers, vec![FROM.to_string()]);

        // The upgrade, as a user runs it; then sampled once a second until the tenant is Ready
        // at 1.35.4 and kube-proxy rolled out on the worker.
        let upgrade_started = Instant::now();
        let upgrade_started_unix = jiff::Timestamp::now().as_second();
        let printed = run_nestor(&["upgrade", TENANT, "--version", TO, "-n", &ns.name]).await.expect_success();
        assert!(printed.contains(&format!("{FROM} -> {TO}")), "{printed}");
        let (mut samples, mut order_violations, mut not_ready) = (0u32, Vec::new(), Vec::new());
        let (mut apiserver_at, mut controller_manager_at, mut scheduler_at, mut kube_proxy_at) = (None, None, None, None);
        let mut status_version_at = None;
        let nodes: Api<Node> = Api::all(admin.clone());
        let mut inside = admin.clone();
        let done = poll_for(Duration::from_secs(300), Duration::from_secs(1), async || {
            let elapsed = upgrade_started.elapsed();
            let at = format!("{:.0}s", elapsed.as_secs_f64());
            match upgrade_sample(&ns, &inside).await {
                Ok(seen) => {
                    samples += 1;
                    if seen.apiservers.iter().all(|version| version == TO) && !seen.apiservers.is_empty() {
                        apiserver_at.get_or_insert(elapsed);
                    }
                    if seen.controller_manager == TO {
                        controller_manager_at.get_or_insert(elapsed);
                    }
                    if seen.scheduler == TO {
                        scheduler_at.get_or_insert(elapsed);
                    }
                    if seen.kube_proxy == TO {
                        kube_proxy_at.get_or_insert(elapsed);
                        let behind = seen.apiservers.iter().any(|version| version != TO)
                            || seen.controller_manager != TO
                            || seen.scheduler != TO;
                        if behind {
                            order_violations.push(format!(
                                "{at}: kube-proxy {TO} with apiservers {:?}, controller-manager {}, scheduler {}",
                                seen.apiservers, seen.controller_manager, seen.scheduler
                            ));
                        }
                    }
                }
                // The apiserver rolls: the tenant client may miss a second; a fresh one
                // follows a Service whose endpoint moved.
                Err(error) => {
                    eprintln!("[{:>6.1?}] sample failed: {error}", started.elapsed());
                    if let Ok(fresh) = ns.tenant_client(TENANT).await {
                        inside = fresh;
                    }
                }
            }
            if let Ok(node) = nodes.get(&worker.name).await
                && !condition_true(&node, "Ready")
            {
                not_ready.push(at.clone());
            }
            let tenant = ns.tenant(TENANT).await?;
            let status_version = tenant.status.as_ref().and_then(|status| status.version.clone());
            if status_version.as_deref() == Some(TO) {
                status_version_at.get_or_insert(elapsed);
            }
            if !(support::is_ready(&tenant) && status_version.as_deref() == Some(TO)) {
                return Err(format!("status.version {status_version:?}: {}", support::describe_tenant(&tenant)));
            }
            kube_proxy_rolled_out(&inside, TO, &worker.name).await
        })
        .await;
        if let Err(state) = done {
            panic!("not upgraded with kube-proxy rolled out in 300 s: {state}; order violations {order_violations:?}");
        }
        let upgrade_time = upgrade_started.elapsed();
        let seconds = |at: Option<Duration>| at.map_or("never".to_string(), |at| format!("{:.0} s", at.as_secs_f64()));
        eprintln!(
            "[{:>6.1?}] upgraded {FROM} -> {TO} with kube-proxy rolled out on the worker in {:.1} s; apiserver \
             at {TO} after {}, controller-manager template after {}, scheduler template after {}, \
             status.version after {}, kube-proxy DaemonSet after {}; {samples} samples",
            started.elapsed(),
            upgrade_time.as_secs_f64(),
            seconds(apiserver_at),
            seconds(controller_manager_at),
            seconds(scheduler_at),
            seconds(status_version_at),
            seconds(kube_proxy_at),
        );

        // A few more seconds of probes with the new kube-proxy's rules, then the prober's log.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let upgrade_ended_unix = jiff::Timestamp::now().as_second() - 5;
        let logs = pods.logs("prober", &LogParams::default()).await.expect("the prober's log");
        let (ok, failed) = probe_lines(&logs);
        let during = ok.iter().filter(|at| (upgrade_started_unix..=upgrade_ended_unix).contains(*at)).count();
        eprintln!(
            "[{:>6.1?}] prober: {} OK, {} FAIL in all ({during} OK during the upgrade's {:.0} s), failures at {failed:?}",
            started.elapsed(),
            ok.len(),
            failed.len(),
            upgrade_time.as_secs_f64()
        );

        // The data path (pod → the worker's iptables → pod) involves nothing the upgrade
        // restarts: the control plane is not on it, and a kube-proxy being replaced leaves
        // its rules in place. So one failed probe is a regression, not noise.
        assert!(failed.is_empty(), "the workload stopped answering during the upgrade: failures at {failed:?}");
        // One probe every ~1-3 s (nc, date and sleep on a busy machine): at least one per
        // 4 s of upgrade shows the prober ran throughout.
        assert!(
            during as u64 >= upgrade_time.as_secs() / 4,
            "{during} OK probes during {:.0} s: the prober did not run throughout",
            upgrade_time.as_secs_f64()
        );
        let last_ok = ok.iter().max().copied().unwrap_or_default();
        assert!(last_ok >= upgrade_ended_unix, "the workload answers after the upgrade (last OK at {last_ok})");

        // CoreDNS is not touched; the worker's kubelet stays at 1.34.2 and its Node Ready.
        let fresh = ns.tenant_client(TENANT).await.expect("tenant client");
        let coredns_after =
            coredns_image(&Api::<Deployment>::namespaced(fresh.clone(), "kube-system").get("coredns").await.expect("CoreDNS"));
        assert_eq!(coredns_after, coredns_before, "CoreDNS unchanged");
        assert!(coredns_after.ends_with(":v1.12.1"), "{coredns_after}");
        assert_eq!(fresh.apiserver_version().await.expect("/version").git_version, format!("v{TO}"));
        let node = Api::<Node>::all(fresh).get(&worker.name).await.expect("the worker's Node");
        let kubelet = node.status.as_ref().and_then(|status| status.node_info.as_ref()).map(|info| info.kubelet_version.clone());
        assert_eq!(kubelet.as_deref(), Some(format!("v{FROM}").as_str()), "the worker's kubelet is not upgraded");
        assert!(condition_true(&node, "Ready"), "Node Ready after the upgrade");
        assert!(not_ready.is_empty(), "the worker's Node was not Ready at {not_ready:?}");

        // The order of the skew policy: kube-proxy is never newer than the apiserver, and
        // moves once the control plane did (checked last, so that a run that breaks it
        // still checks the rest).
        let (apiserver_at, controller_manager_at, scheduler_at, kube_proxy_at) = (
            apiserver_at.expect("apiserver moved"),
            controller_manager_at.expect("controller-manager moved"),
            scheduler_at.expect("scheduler moved"),
            kube_proxy_at.expect("kube-proxy moved"),
        );
        assert!(apiserver_at <= controller_manager_at && apiserver_at <= scheduler_at, "the apiserver moves first");
        assert!(order_violations.is_empty(), "kube-proxy moved before the control plane: {order_violations:?}");
        assert!(kube_proxy_at >= controller_manager_at.max(scheduler_at), "kube-proxy moves last");
    })
    .await;
}

/// A stopped process; continued when dropped if it is still the same process (its start
/// time unchanged), whatever happened meanwhile.
struct Frozen {
    pid: u32,
    start_time: String,
}

/// Field 22 of /proc/PID/stat, the start time: tells a process from a later one that
/// reuses its pid.
fn start_time(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = stat.rsplit_once(')')?.1;
    after_name.split_whitespace().nth(19).map(str::to_string)
}

impl Frozen {
    fn stop(pid: u32) -> Frozen {
        let start_time = start_time(pid).expect("the process runs");
        let status =
            std::process::Command::new("kill").args(["-STOP", &pid.to_string()]).status().expect("kill");
        assert!(status.success(), "SIGSTOP {pid}");
        Frozen { pid, start_time }
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        if start_time(self.pid).as_deref() == Some(self.start_time.as_str()) {
            let _ = std::process::Command::new("kill").args(["-CONT", &self.pid.to_string()]).status();
        }
    }
}

/// Host pids of the processes named `binary` in meta pod `pod_uid`'s containers (found by
/// the pod's cgroup, so never the meta cluster's own host process of the same name).
fn pod_process_pids(pod_uid: &str, binary: &str) -> Vec<u32> {
    let underscored = pod_uid.replace('-', "_");
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let program =
            cmdline.split(|byte| *byte == 0).next().map(String::from_utf8_lossy).unwrap_or_default();
        if !program.ends_with(binary) {
            continue;
        }
        let cgroup = std::fs::read_to_string(entry.path().join("cgroup")).unwrap_or_default();
        if cgroup.contains(&format!("pod{pod_uid}")) || cgroup.contains(&format!("pod{underscored}")) {
            pids.push(pid);
        }
    }
    pids
}

/// A busybox pod that sleeps, for the scheduler to place.
fn sleeper(name: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "sleep", "image": busybox_image(), "command": ["sleep", "3600"]}],
        },
    }))
    .expect("pod")
}

/// 6g: the tenant's scheduler frozen with SIGSTOP. Its Lease goes stale and SchedulerReady
/// turns False; a pod created meanwhile is not placed; the kubelet's liveness probe
/// restarts the container in place (the operator deletes no scheduler pod); then
/// SchedulerReady is True again and both that pod and a new one run on the worker.
#[tokio::test]
async fn a_frozen_scheduler_is_restarted_by_its_liveness_probe_and_schedules_onto_the_worker_again() {
    in_namespace("wsched", async |ns| {
        let started = Instant::now();
        let operator = Operator::start_with(&ns.name, "wsched", &["--health-interval", "5s"]).await;
        let node_port = free_node_port(&ns, 3).await;
        let mut spec = runnable_spec();
        spec["network"] = json!({"serviceType": "NodePort", "externalHost": "10.200.0.1", "nodePort": node_port});
        ns.create_tenant(TENANT, spec).await;
        let names = ns.names(TENANT);
        ns.wait_for_tenant(TENANT, "Ready with a fresh scheduler Lease", MAX_WAIT, |tenant| {
            support::is_ready(tenant)
                && support::condition_message(tenant, "SchedulerReady").contains("probe: leader Lease fresh")
        })
        .await;
        eprintln!("[{:>6.1?}] tenant Ready", started.elapsed());
        let admin = ns.tenant_client(TENANT).await.expect("tenant client");
        let worker = join_worker(&ns, &admin, "ws", "pause busybox kas-network-proxy-proxy-agent", started).await;
        let pods: Api<Pod> = Api::namespaced(admin.clone(), "default");
        wait_for("a first pod to be created", Duration::from_secs(60), async || {
            pods.create(&PostParams::default(), &sleeper("before")).await.map(drop).map_err(|error| error.to_string())
        })
        .await;
        let before = running_pod(&pods, "before", Duration::from_secs(120)).await;
        assert_eq!(before.spec.as_ref().and_then(|spec| spec.node_name.as_deref()), Some(worker.name.as_str()));

        // The scheduler's one pod and its process (Ready can come while a first rollout's
        // old pod still terminates: wait for one pod and one process).
        let meta_pods = ns.api::<Pod>();
        let scheduler_selector = names.component_selector(Component::Scheduler);
        let (pod_name, pod_uid, restarts_before, pid) =
            wait_for("one scheduler pod and its process", Duration::from_secs(90), async || {
                let listed = meta_pods
                    .list(&ListParams::default().labels(&scheduler_selector))
                    .await
                    .map_err(|error| error.to_string())?
                    .items;
                let live: Vec<&Pod> = listed.iter().filter(|pod| pod.metadata.deletion_timestamp.is_none()).collect();
                let [pod] = live.as_slice() else { return Err(format!("{} scheduler pods", live.len())) };
                let uid = pod.metadata.uid.clone().unwrap_or_default();
                let pids = pod_process_pids(&uid, "kube-scheduler");
                let [pid] = pids.as_slice() else { return Err(format!("pids {pids:?} in pod {uid}")) };
                Ok((pod.name_any(), uid, container_restarts(pod), *pid))
            })
            .await;
        let frozen = Frozen::stop(pid);
        let frozen_at = Instant::now();
        eprintln!("[{:>6.1?}] stopped the scheduler, pid {pid} in pod {pod_name}", started.elapsed());
        pods.create(&PostParams::default(), &sleeper("during")).await.expect("create a pod while frozen");

        // SchedulerReady turns False: the kubelet's readiness probe (3 failures) marks the pod
        // unready, and the Lease probe finds the Lease stale (debounced); the condition says
        // both, the workload reason first. Meanwhile the pod created waits unplaced.
        let (mut unready_at, mut stale_at) = (None, None);
        let detected = ns
            .wait_for_tenant(TENANT, "SchedulerReady False with the Lease stale", MAX_WAIT, |tenant| {
                let Some(condition) = support::find_condition(tenant, "SchedulerReady") else { return false };
                if condition.status == "False" {
                    unready_at.get_or_insert(frozen_at.elapsed());
                }
                let stale = condition.status == "False"
                    && (condition.reason == "ProbeFailed" || condition.message.contains("probe failed: leader Lease stale"));
                if stale {
                    stale_at.get_or_insert(frozen_at.elapsed());
                }
                stale
            })
            .await;
        let detection = stale_at.expect("detected");
        let condition = support::find_condition(&detected, "SchedulerReady").cloned().expect("condition");
        eprintln!(
            "[{:>6.1?}] SchedulerReady False {:?} after SIGSTOP, the Lease stale in it {detection:?} after: {} ({})",
            started.elapsed(),
            unready_at.unwrap_or(detection),
            condition.reason,
            condition.message
        );
        let during = pods.get("during").await.expect("the pod created while frozen");
        assert_eq!(during.spec.as_ref().and_then(|spec| spec.node_name.clone()), None, "placed by a frozen scheduler?");
        let restarts_now = container_restarts(&meta_pods.get(&pod_name).await.expect("scheduler pod"));
        assert_eq!(restarts_now, restarts_before, "restarted before the Lease probe saw it");

        // The kubelet's liveness probe (8 failures, 10 s apart, 15 s timeout each) restarts
        // the container in the same pod.
        let restarted = wait_for("the kubelet to restart the frozen scheduler", MAX_WAIT, async || {
            let pod = meta_pods.get(&pod_name).await.map_err(|error| error.to_string())?;
            if container_restarts(&pod) > restarts_before { Ok(pod) } else { Err(format!("{:?}", pod.status)) }
        })
        .await;
        let restart = frozen_at.elapsed();
        drop(frozen);
        eprintln!("[{:>6.1?}] scheduler container restarted by the kubelet {restart:?} after SIGSTOP", started.elapsed());
        assert_eq!(restarted.metadata.uid.as_deref(), Some(pod_uid.as_str()), "restarted in place, not replaced");
        let killing: Vec<String> = ns
            .api::<k8s_openapi::api::core::v1::Event>()
            .list(&ListParams::default().fields(&format!("involvedObject.name={pod_name}")))
            .await
            .expect("events")
            .items
            .into_iter()
            .filter(|event| event.reason.as_deref() == Some("Killing"))
            .filter_map(|event| event.message)
            .collect();
        assert!(
            killing.iter().any(|message| message.contains("liveness probe")),
            "the kubelet killed it for its liveness probe: {killing:?}"
        );

        // Healed: SchedulerReady True with a fresh Lease, and pods placed on the worker again.
        let healed = ns
            .wait_for_tenant(TENANT, "SchedulerReady True again", MAX_WAIT, |tenant| {
                support::find_condition(tenant, "SchedulerReady").is_some_and(|c| c.status == "True")
                    && support::condition_message(tenant, "SchedulerReady").contains("probe: leader Lease fresh")
                    && support::is_ready(tenant)
            })
            .await;
        let recovery = frozen_at.elapsed();
        eprintln!("[{:>6.1?}] SchedulerReady True {recovery:?} after SIGSTOP: {}", started.elapsed(), support::condition_message(&healed, "SchedulerReady"));
        let during = running_pod(&pods, "during", Duration::from_secs(120)).await;
        assert_eq!(during.spec.as_ref().and_then(|spec| spec.node_name.as_deref()), Some(worker.name.as_str()));
        let created = Instant::now();
        pods.create(&PostParams::default(), &sleeper("after")).await.expect("create a pod after the heal");
        let after = running_pod(&pods, "after", Duration::from_secs(120)).await;
        assert_eq!(after.spec.as_ref().and_then(|spec| spec.node_name.as_deref()), Some(worker.name.as_str()));
        eprintln!(
            "[{:>6.1?}] the pod created while frozen runs on {}, a new one ran {:?} after it was created; \
             SIGSTOP -> SchedulerReady False {detection:?}, -> restart {restart:?}, -> SchedulerReady True {recovery:?}",
            started.elapsed(),
            worker.name,
            created.elapsed()
        );
        assert!(detection < restart && restart <= recovery);
        drop(operator);
    })
    .await;
}

/// Restarts of a pod's containers, summed.
fn container_restarts(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|status| status.container_statuses.as_ref())
        .map(|statuses| statuses.iter().map(|status| status.restart_count).sum())
        .unwrap_or(0)
}

/// kubectl against the test tenant (see [`support::worker::kubectl`]).
async fn kubectl(ns: &TestNamespace, args: &[&str]) -> String {
    support::worker::kubectl(ns, TENANT, args).await
}
