//! Joining nodes, against the local meta cluster and a real tenant: what the operator keeps
//! inside the tenant for `kubeadm join`, `nestor join`, and the approval of kubelet serving
//! certificates. The node identity here is a client certificate from the tenant CA, as a
//! kubelet's is after TLS bootstrap; a joined worker host is the next test.

mod support;

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::certificates::v1::{CertificateSigningRequest, CertificateSigningRequestSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Node, Secret, Service};
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use nestor::kubeconfig::ClientCredentials;
use nestor::pki::{CertificateAuthority, CertificateRequest, KeyAlgorithm, issue};
use serde_json::json;
use support::{MAX_WAIT, Operator, TestNamespace, in_namespace, run_nestor, runnable_spec, wait_for};

const TENANT: &str = "joinable";

#[tokio::test]
async fn a_tenant_keeps_what_kubeadm_join_reads_and_approves_only_honest_serving_certificates() {
    in_namespace("join", async |ns| {
        let started = std::time::Instant::now();
        // Drift inside the tenant is repaired on this period (5 min by default).
        let _operator = Operator::start_with(&ns.name, "join", &["--inside-resync", "10s"]).await;
        // A node port of its own per run, so two runs on one meta cluster do not collide.
        let node_port = 30100 + (std::process::id() % 1500) as i32;
        let mut spec = runnable_spec();
        spec["network"] =
            json!({"serviceType": "NodePort", "externalHost": "10.200.0.1", "nodePort": node_port});
        ns.create_tenant(TENANT, spec).await;
        wait_for("the tenant to be Ready", MAX_WAIT, async || {
            let tenant = ns.tenant(TENANT).await?;
            if support::is_ready(&tenant) { Ok(tenant) } else { Err(support::describe_tenant(&tenant)) }
        })
        .await;
        eprintln!("tenant Ready after {:?}", started.elapsed());
        let admin = ns.tenant_client(TENANT).await.expect("tenant client");

        // What kubeadm join reads, kept by the operator.
        let public: Api<ConfigMap> = Api::namespaced(admin.clone(), "kube-public");
        let system: Api<ConfigMap> = Api::namespaced(admin.clone(), "kube-system");
        let cluster_info =
            wait_for("cluster-info and kubeadm-config inside the tenant", MAX_WAIT, async || {
                let info = public.get_opt("cluster-info").await.map_err(|error| error.to_string())?;
                let config = system.get_opt("kubeadm-config").await.map_err(|error| error.to_string())?;
                let kubelet = system.get_opt("kubelet-config").await.map_err(|error| error.to_string())?;
                match (info, config, kubelet) {
                    (Some(info), Some(_), Some(_)) => Ok(info),
                    other => Err(format!(
                        "present: {:?}",
                        (other.0.is_some(), other.1.is_some(), other.2.is_some())
                    )),
                }
            })
            .await;
        let discovery =
            cluster_info.data.as_ref().and_then(|data| data.get("kubeconfig")).expect("kubeconfig key");
        assert!(discovery.contains(&format!("https://10.200.0.1:{node_port}")), "{discovery}");
        eprintln!("join objects inside the tenant after {:?}", started.elapsed());

        // nestor join: refused input changes nothing, then a token and the full line.
        let refused = run_nestor(&["join", TENANT, "-n", &ns.name, "--ttl", "0s"]).await;
        assert!(!refused.status.success(), "a zero ttl is refused");
        assert!(refused.stderr.contains("--ttl must be longer than zero"), "{}", refused.stderr);
        let line = run_nestor(&["join", TENANT, "-n", &ns.name, "--ttl", "10m"]).await.expect_success();
        let prefix = format!("kubeadm join 10.200.0.1:{node_port} --token ");
        assert!(
            line.starts_with(&prefix) && line.contains(" --discovery-token-ca-cert-hash sha256:"),
            "{line}"
        );
        let token_id = line[prefix.len()..].split('.').next().expect("token id").to_string();
        let tokens: Api<Secret> = Api::namespaced(admin.clone(), "kube-system");
        let token = tokens.get(&format!("bootstrap-token-{token_id}")).await.expect("the token Secret");
        assert_eq!(token.type_.as_deref(), Some("bootstrap.kubernetes.io/token"));
        // The controller-manager's bootstrapsigner signs cluster-info for the new token,
        // which is what discovery waits for; the operator's apply keeps the signature.
        wait_for("cluster-info to be signed for the new token", MAX_WAIT, async || {
            let info = public.get("cluster-info").await.map_err(|error| error.to_string())?;
            let keys: Vec<String> = info.data.unwrap_or_default().into_keys().collect();
            if keys.contains(&format!("jws-kubeconfig-{token_id}")) {
                Ok(())
            } else {
                Err(format!("keys {keys:?}"))
            }
        })
        .await;
        eprintln!("token {token_id} signed into cluster-info after {:?}", started.elapsed());

        // The addons: applied, AddonsReady says they wait for a node, drift is repaired,
        // and one turned off is deleted.
        let tenant = wait_for("AddonsReady", MAX_WAIT, async || {
            let tenant = ns.tenant(TENANT).await?;
            match support::find_condition(&tenant, "AddonsReady") {
                Some(condition) if condition.status == "True" => Ok(tenant),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
        let addons = support::find_condition(&tenant, "AddonsReady").expect("AddonsReady");
        assert_eq!(addons.reason, "NoNodes", "{addons:?}");
        assert!(support::is_ready(&tenant), "AddonsReady is not part of Ready");
        let daemon_sets: Api<DaemonSet> = Api::namespaced(admin.clone(), "kube-system");
        let deployments: Api<Deployment> = Api::namespaced(admin.clone(), "kube-system");
        let services: Api<Service> = Api::namespaced(admin.clone(), "kube-system");
        let dns = services.get("kube-dns").await.expect("the kube-dns Service");
        assert_eq!(dns.spec.and_then(|spec| spec.cluster_ip).as_deref(), Some("10.96.0.10"));
        let proxy = daemon_sets.get("kube-proxy").await.expect("the kube-proxy DaemonSet");
        let image = proxy.spec.and_then(|spec| spec.template.spec).map(|pod| pod.containers[0].image.clone());
        assert_eq!(
            image,
            Some(Some("nestor.local/kube-proxy:v1.34.2".into())),
            "follows the tenant's version"
        );
        daemon_sets.delete("kube-proxy", &Default::default()).await.expect("delete kube-proxy");
        let edit = json!({"data": {"Corefile": ".:53 {\n    errors\n}\n"}});
        system
            .patch("coredns", &PatchParams::default(), &Patch::Merge(&edit))
            .await
            .expect("edit the Corefile");
        let drifted = std::time::Instant::now();
        wait_for("the kube-proxy DaemonSet and the Corefile to be put back", MAX_WAIT, async || {
            let proxy = daemon_sets.get_opt("kube-proxy").await.map_err(|error| error.to_string())?;
            let corefile = system.get("coredns").await.map_err(|error| error.to_string())?;
            let corefile = corefile.data.unwrap_or_default().remove("Corefile").unwrap_or_default();
            match (proxy, corefile.contains("kubernetes cluster.local")) {
                (Some(_), true) => Ok(()),
                (proxy, restored) => {
                    Err(format!("kube-proxy back: {}, Corefile back: {restored}", proxy.is_some()))
                }
            }
        })
        .await;
        eprintln!("drift inside the tenant repaired {:?} after the edits", drifted.elapsed());
        let off = json!({"spec": {"addons": {"kubeProxy": {"enabled": false}}}});
        ns.api::<nestor::api::TenantCluster>()
            .patch(TENANT, &PatchParams::default(), &Patch::Merge(&off))
            .await
            .expect("turn kube-proxy off");
        wait_for(
            "kube-proxy turned off to be deleted inside the tenant",
            MAX_WAIT,
            async || match daemon_sets.get_opt("kube-proxy").await.map_err(|error| error.to_string())? {
                None => Ok(()),
                Some(_) => Err("still there".into()),
            },
        )
        .await;
        assert!(deployments.get_opt("coredns").await.expect("read").is_some(), "CoreDNS stays on");

        // A node's serving certificate: approved for its own address, not for another's.
        create_node(&admin, "w1", "10.202.9.2").await;
        let node_client = node_identity(&ns, "w1").await;
        let csrs: Api<CertificateSigningRequest> = Api::all(node_client);
        let honest = serving_csr(&csrs, "w1", "10.202.9.2").await;
        let foreign = serving_csr(&csrs, "w1", "10.202.77.2").await;
        let admin_csrs: Api<CertificateSigningRequest> = Api::all(admin.clone());
        let asked = std::time::Instant::now();
        wait_for("the honest serving CSR to be approved and signed", MAX_WAIT, async || {
            let csr = admin_csrs.get(&honest).await.map_err(|error| error.to_string())?;
            let status = csr.status.unwrap_or_default();
            match status.certificate {
                Some(certificate) if !certificate.0.is_empty() => Ok(()),
                _ => Err(format!("conditions {:?}", status.conditions)),
            }
        })
        .await;
        eprintln!("serving certificate approved and signed {:?} after the CSR", asked.elapsed());
        // Another approver round (10 s) has come and gone: the foreign one is still pending.
        tokio::time::sleep(Duration::from_secs(12)).await;
        let foreign = admin_csrs.get(&foreign).await.expect("the foreign CSR");
        assert!(
            nestor::tenant_api::serving_csr::pending(&foreign),
            "a CSR for another node's address was decided: {:?}",
            foreign.status
        );
    })
    .await;
}

/// Creates Node `name` with `address` as its InternalIP, as a kubelet registers it.
async fn create_node(admin: &kube::Client, name: &str, address: &str) {
    let nodes: Api<Node> = Api::all(admin.clone());
    let node =
        Node { metadata: ObjectMeta { name: Some(name.into()), ..ObjectMeta::default() }, ..Node::default() };
    nodes.create(&PostParams::default(), &node).await.expect("create the Node");
    let status = json!({"status": {"addresses": [{"type": "InternalIP", "address": address}, {"type": "Hostname", "address": name}]}});
    nodes.patch_status(name, &PatchParams::default(), &Patch::Merge(&status)).await.expect("Node addresses");
}

/// A client for the tenant as node `name` (CN system:node:<name>, O system:nodes), with a
/// client certificate from the tenant CA, as TLS bootstrap gives a kubelet.
async fn node_identity(ns: &TestNamespace, name: &str) -> kube::Client {
    let names = ns.names(TENANT);
    let ca_secret =
        ns.secret(&names.cluster_ca_secret()).await.expect("read").expect("the cluster CA Secret");
    let text =
        |key: &str| String::from_utf8(ca_secret.data.as_ref().expect("data")[key].0.clone()).expect("utf-8");
    let ca = CertificateAuthority::from_pem(&text("tls.crt"), &text("tls.key")).expect("the tenant CA");
    let request = CertificateRequest::client(format!("system:node:{name}"), Some("system:nodes"));
    let issued = issue(&ca, &request, KeyAlgorithm::EcdsaP256, Duration::from_secs(3600), Timestamp::now())
        .expect("issue");
    let kubeconfig = ClientCredentials {
        cluster_name: TENANT.into(),
        server_url: format!("https://{}:6443", names.apiserver_service_host()),
        ca_pem: ca.cert_pem().into(),
        user_name: format!("system:node:{name}"),
        client_cert_pem: issued.cert_pem,
        client_key_pem: issued.key_pem,
    }
    .to_kubeconfig()
    .expect("kubeconfig");
    ns.tenant_client_from(TENANT, &kubeconfig).await.expect("node client")
}

/// Creates a kubelet serving CSR of node `node` for `address`, as the node; returns its name.
async fn serving_csr(csrs: &Api<CertificateSigningRequest>, node: &str, address: &str) -> String {
    let mut params = rcgen::CertificateParams::default();
    let mut subject = rcgen::DistinguishedName::new();
    subject.push(rcgen::DnType::CommonName, format!("system:node:{node}"));
    subject.push(rcgen::DnType::OrganizationName, "system:nodes");
    params.distinguished_name = subject;
    params.subject_alt_names = vec![
        rcgen::SanType::DnsName(node.try_into().expect("dns")),
        rcgen::SanType::IpAddress(address.parse().expect("ip")),
    ];
    let key = rcgen::KeyPair::generate().expect("key");
    let pem = params.serialize_request(&key).expect("csr").pem().expect("pem");
    let csr = CertificateSigningRequest {
        metadata: ObjectMeta { generate_name: Some(format!("csr-{node}-")), ..ObjectMeta::default() },
        spec: CertificateSigningRequestSpec {
            signer_name: "kubernetes.io/kubelet-serving".into(),
            usages: Some(vec!["digital signature".into(), "server auth".into()]),
            request: ByteString(pem.into_bytes()),
            ..CertificateSigningRequestSpec::default()
        },
        status: None,
    };
    let created = csrs.create(&PostParams::default(), &csr).await.expect("create the CSR as the node");
    created.metadata.name.expect("generated name")
}
