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

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Secret};
use kube::api::{Api, ListParams, LogParams, PostParams};
use serde_json::json;
use support::worker::{WorkerHost, busybox_image, kubectl_binary};
use support::{MAX_WAIT, Operator, TestNamespace, in_namespace, run_nestor, runnable_spec, wait_for};

const TENANT: &str = "workers";
const CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";
const SERVING_SIGNER: &str = "kubernetes.io/kubelet-serving";

/// A node port for one test of this run: from 31600–32559 (the join test uses 30100–31599,
/// the demo 30050), starting at an offset of this run's pid so two runs on one meta cluster
/// differ, and skipping every node port a meta cluster Service already holds.
async fn free_node_port(ns: &TestNamespace, test: i32) -> i32 {
    let services: Api<k8s_openapi::api::core::v1::Service> = Api::all(ns.client.clone());
    let taken: Vec<i32> = services
        .list(&ListParams::default())
        .await
        .expect("list meta Services")
        .items
        .into_iter()
        .flat_map(|service| service.spec.and_then(|spec| spec.ports).unwrap_or_default())
        .filter_map(|port| port.node_port)
        .collect();
    let start = (std::process::id() % 480) as i32 * 2 + test;
    (0..960)
        .map(|step| 31600 + (start + step * 2) % 960)
        .find(|port| !taken.contains(port))
        .expect("a free node port in 31600-32559")
}

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
        let run = worker.up(&line, &[], "pause kube-proxy coredns busybox").await;
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
        let running = wait_for("the pod to run on the worker", Duration::from_secs(120), async || {
            let pod = pods.get("hello").await.map_err(|error| error.to_string())?;
            let phase = pod.status.as_ref().and_then(|status| status.phase.clone()).unwrap_or_default();
            if phase == "Running" { Ok(pod) } else { Err(format!("phase {phase:?}: {:?}", pod.status)) }
        })
        .await;
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

        // The addons on the worker: kube-proxy and CoreDNS run (their pods reach the
        // apiserver through the `kubernetes` Service, whose endpoint is the node endpoint),
        // a ClusterIP Service answers from another pod, and names resolve through CoreDNS.
        wait_for("AddonsReady on the worker", Duration::from_secs(180), async || {
            let tenant = ns.tenant(TENANT).await?;
            match support::find_condition(&tenant, "AddonsReady") {
                Some(condition) if condition.status == "True" && condition.reason == "Ready" => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
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
        wait_for("the client pod to run", Duration::from_secs(120), async || {
            let pod = pods.get("client").await.map_err(|error| error.to_string())?;
            let phase = pod.status.as_ref().and_then(|status| status.phase.clone()).unwrap_or_default();
            if phase == "Running" { Ok(()) } else { Err(format!("phase {phase:?}")) }
        })
        .await;
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

/// Runs kubectl against the test tenant with its admin kubeconfig, reaching the apiserver
/// the way support's tenant_client does (the Service's ClusterIP, its DNS name for TLS);
/// returns stdout, panics on failure.
async fn kubectl(ns: &TestNamespace, args: &[&str]) -> String {
    let names = ns.names(TENANT);
    let secret = ns.secret(&names.admin_kubeconfig_secret()).await.expect("read").expect("admin kubeconfig");
    let kubeconfig = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(kubeconfig.path(), &secret.data.expect("data")["value"].0).expect("write kubeconfig");
    let service = ns
        .api::<k8s_openapi::api::core::v1::Service>()
        .get(&names.apiserver())
        .await
        .expect("apiserver Service");
    let cluster_ip = service.spec.and_then(|spec| spec.cluster_ip).expect("ClusterIP");
    let mut command = std::process::Command::new(kubectl_binary());
    command
        .arg(format!("--kubeconfig={}", kubeconfig.path().display()))
        .arg(format!("--server=https://{cluster_ip}:6443"))
        .arg(format!("--tls-server-name={}", names.apiserver_service_host()))
        .arg("--request-timeout=30s")
        .args(args);
    let output =
        tokio::task::spawn_blocking(move || command.output().expect("run kubectl")).await.expect("kubectl");
    assert!(output.status.success(), "kubectl {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}
