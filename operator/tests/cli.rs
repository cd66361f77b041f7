//! The `nestor` client verbs run as a user runs them: the binary as a subprocess against
//! the meta cluster (KUBECONFIG, default `/var/lib/nestor-meta/admin.kubeconfig`).
//!
//! Each test works in a namespace of its own, deleted at the end even when the test
//! fails. Real tenants are expensive (three pods on a small machine), so one test walks a
//! single tenant through its whole life (create, wait, get, describe, kubeconfig, user
//! certificate, refused upgrade, delete) with an operator subprocess scoped to its
//! namespace; the error paths run in a separate test without an operator.

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;

use futures::FutureExt;
use k8s_openapi::api::core::v1::{Namespace, Secret, Service};
use kube::api::{Api, DeleteParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use nestor::api::TenantCluster;
use nestor::kubeconfig::ClientCredentials;
use serde_json::{Value, json};
use x509_parser::prelude::*;

/// The meta cluster the lead runs on this machine.
const META_KUBECONFIG: &str = "/var/lib/nestor-meta/admin.kubeconfig";
/// Upper bound for a light tenant (one etcd member, local images) to become Ready.
const READY_TIMEOUT: &str = "180s";

fn kubeconfig_path() -> String {
    std::env::var("KUBECONFIG")
        .ok()
        .filter(|value| !value.is_empty())
        .unwrap_or_else(|| META_KUBECONFIG.into())
}

/// A private hard link to the binary under test. The cargo target directory is shared,
/// and another build can replace `nestor` there while these tests run; the link keeps
/// this build's file. Links of earlier runs are removed first.
fn nestor_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let directory = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let prefix = "nestor-cli-tests-";
        for entry in std::fs::read_dir(directory).into_iter().flatten().flatten() {
            let stale = entry.file_name().to_string_lossy().starts_with(prefix)
                && entry.metadata().and_then(|m| m.modified()).is_ok_and(|modified| {
                    modified.elapsed().unwrap_or_default() > std::time::Duration::from_secs(3600)
                });
            if stale {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        let link = directory.join(format!("{prefix}{}", std::process::id()));
        let _ = std::fs::remove_file(&link);
        std::fs::hard_link(env!("CARGO_BIN_EXE_nestor"), &link)
            .or_else(|_| std::fs::copy(env!("CARGO_BIN_EXE_nestor"), &link).map(drop))
            .expect("link the nestor binary");
        let help = Command::new(&link).args(["create", "--help"]).output().expect("run nestor");
        assert!(
            help.status.success(),
            "the nestor binary was replaced by another build without the client verbs; rebuild and rerun"
        );
        link
    })
}

/// Result of one `nestor` run.
struct Run {
    success: bool,
    stdout: String,
    stderr: String,
}

impl From<Output> for Run {
    fn from(output: Output) -> Self {
        Run {
            success: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

impl std::fmt::Debug for Run {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "success={}\n--- stdout\n{}--- stderr\n{}", self.success, self.stdout, self.stderr)
    }
}

/// Runs `nestor <args>` to completion (off the async runtime's threads).
async fn nestor(args: &[&str]) -> Run {
    let args: Vec<String> = args.iter().map(|arg| arg.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        Command::new(nestor_binary())
            .args(&args)
            .env("KUBECONFIG", kubeconfig_path())
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .output()
            .expect("run nestor")
            .into()
    })
    .await
    .expect("nestor runner")
}

/// Asserts a failed run that printed exactly one `error: ...` line, and returns it.
#[track_caller]
fn assert_one_error_line(run: &Run) -> String {
    assert!(!run.success, "expected a failure: {run:?}");
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line on stderr: {run:?}");
    assert!(lines[0].starts_with("error: "), "{run:?}");
    assert!(run.stdout.is_empty(), "nothing on stdout: {run:?}");
    lines[0].to_string()
}

/// An operator subprocess watching one namespace, killed (by its pid) when dropped.
struct Operator(Child);

impl Operator {
    fn start(namespace: &str) -> Self {
        let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("free port")
            .port();
        let child = Command::new(nestor_binary())
            .args(["operator", "--no-leader-election", "--watch-namespace", namespace])
            .args(["--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
            .env("KUBECONFIG", kubeconfig_path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the operator");
        Operator(child)
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn client() -> Client {
    let kubeconfig =
        Kubeconfig::read_from(kubeconfig_path()).expect("CLI tests need the meta cluster kubeconfig");
    let config =
        Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.expect("config");
    Client::try_from(config).expect("client")
}

/// Runs `body` in a fresh namespace, then deletes the namespace.
async fn in_namespace<F, Fut>(test: &str, body: F)
where
    F: FnOnce(Client, String) -> Fut,
    Fut: Future<Output = ()>,
{
    let client = client().await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let namespace = format!("nestor-cli-{test}-{:08x}", rand::random::<u32>());
    let object: Namespace = serde_json::from_value(json!({ "metadata": { "name": namespace } })).unwrap();
    namespaces.create(&PostParams::default(), &object).await.expect("create test namespace");
    let outcome = AssertUnwindSafe(body(client, namespace.clone())).catch_unwind().await;
    let cleanup = namespaces.delete(&namespace, &DeleteParams::default()).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    cleanup.expect("delete test namespace");
}

/// A kubeconfig that points at nothing: the same file with a closed port as server.
fn unreachable_kubeconfig(directory: &Path) -> PathBuf {
    let text = std::fs::read_to_string(kubeconfig_path()).expect("read kubeconfig");
    let rewritten: String = text
        .lines()
        .map(|line| match line.split_once("server:") {
            Some((indent, _)) => format!("{indent}server: https://127.0.0.1:1\n"),
            None => format!("{line}\n"),
        })
        .collect();
    let path = directory.join("unreachable.kubeconfig");
    std::fs::write(&path, rewritten).expect("write kubeconfig");
    path
}

#[tokio::test]
async fn errors_are_one_line_and_files_apply_without_an_operator() {
    in_namespace("errors", |client, ns| async move {
        let ns = ns.as_str();
        let tenants: Api<TenantCluster> = Api::namespaced(client, ns);

        // Admission rejection: one line naming the field, nothing created.
        let run = nestor(&["create", "bad", "-n", ns, "--etcd-replicas", "2"]).await;
        let line = assert_one_error_line(&run);
        assert!(line.starts_with("error: spec.etcd.replicas: "), "{line}");
        assert!(tenants.get_opt("bad").await.unwrap().is_none());

        // Not found, the same way for every verb that names an object.
        let not_found = format!("error: tenantcluster \"missing\" not found in namespace \"{ns}\"");
        for verb in [
            vec!["get", "missing"],
            vec!["describe", "missing"],
            vec!["kubeconfig", "missing"],
            vec!["wait", "missing", "--for", "ready", "--timeout", "5s"],
            vec!["upgrade", "missing", "--to", "1.35.0"],
            vec!["delete", "missing"],
        ] {
            let args: Vec<&str> = verb.iter().copied().chain(["-n", ns]).collect();
            assert_eq!(assert_one_error_line(&nestor(&args).await), not_found, "{verb:?}");
        }

        // No kubeconfig, and an API server that does not answer.
        let line = assert_one_error_line(&nestor(&["get", "--kubeconfig", "/nonexistent/kubeconfig"]).await);
        assert!(line.starts_with("error: no kubeconfig: cannot read /nonexistent/kubeconfig"), "{line}");
        let directory = tempfile::tempdir().unwrap();
        let unreachable = unreachable_kubeconfig(directory.path());
        let line = assert_one_error_line(&nestor(&["get", "--kubeconfig", unreachable.to_str().unwrap()]).await);
        assert!(line.starts_with("error: cannot reach the API server at https://127.0.0.1:1"), "{line}");

        // Several documents from one file; applying again changes nothing.
        let file = directory.path().join("tenants.yaml");
        std::fs::write(
            &file,
            "apiVersion: nestor.dev/v1alpha1\nkind: TenantCluster\nmetadata: {name: alpha}\n\
             spec: {version: 1.34.2, etcd: {replicas: 1}}\n---\n\
             apiVersion: nestor.dev/v1alpha1\nkind: TenantCluster\nmetadata: {name: beta}\nspec: {version: 1.35.0}\n",
        )
        .unwrap();
        let file = file.to_str().unwrap();
        let run = nestor(&["create", "-f", file, "-n", ns]).await;
        assert!(run.success, "{run:?}");
        assert_eq!(
            run.stdout,
            "tenantcluster.nestor.dev/alpha created\ntenantcluster.nestor.dev/beta created\n"
        );
        let run = nestor(&["create", "-f", file, "-n", ns]).await;
        assert!(run.stdout.contains("tenantcluster.nestor.dev/alpha unchanged"), "{run:?}");
        let alpha = tenants.get("alpha").await.expect("alpha exists");
        assert_eq!(alpha.spec.etcd.replicas, 1);
        let managers: Vec<_> = alpha.metadata.managed_fields.unwrap_or_default().into_iter().filter_map(|e| e.manager).collect();
        assert!(managers.contains(&"nestor-cli".to_string()), "{managers:?}");

        // The list as JSON and as a table.
        let run = nestor(&["get", "-n", ns, "-o", "json"]).await;
        assert!(run.success, "{run:?}");
        let list: Value = serde_json::from_str(&run.stdout).expect("get -o json prints JSON");
        let names: Vec<&str> = list["items"].as_array().unwrap().iter().map(|i| i["metadata"]["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["alpha", "beta"]);
        let run = nestor(&["get", "-n", ns]).await;
        let lines: Vec<Vec<&str>> = run.stdout.lines().map(|line| line.split_whitespace().collect()).collect();
        assert_eq!(lines[0], ["NAME", "VERSION", "PHASE", "READY", "ENDPOINT", "AGE"], "{run:?}");
        assert_eq!(lines[2][..2], ["beta", "1.35.0"], "{run:?}");

        // A skipped minor version is refused by admission, in one line.
        let line = assert_one_error_line(&nestor(&["upgrade", "alpha", "--to", "1.36.0", "-n", ns]).await);
        assert!(line.contains("spec.version: "), "{line}");
        assert_eq!(tenants.get("alpha").await.unwrap().spec.version, "1.34.2");

        // Without an operator there is no finalizer: delete returns once the object is gone.
        for name in ["alpha", "beta"] {
            let run = nestor(&["delete", name, "-n", ns, "--timeout", "60s"]).await;
            assert!(run.success, "{run:?}");
            assert_eq!(run.stdout, format!("tenantcluster.nestor.dev/{name} deleted\n"));
            assert!(tenants.get_opt(name).await.unwrap().is_none());
        }
    })
    .await;
}

/// A client for the tenant apiserver from a kubeconfig the CLI printed, reaching it
/// through the Service's ClusterIP (the `.svc` name does not resolve on the host).
async fn tenant_client(kubeconfig_yaml: &str, cluster_ip: &str, server_name: &str) -> Client {
    let kubeconfig = Kubeconfig::from_yaml(kubeconfig_yaml).expect("printed kubeconfig parses");
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig is usable");
    config.cluster_url = format!("https://{cluster_ip}:6443").parse().unwrap();
    config.tls_server_name = Some(server_name.to_string());
    Client::try_from(config).expect("tenant client")
}

fn parse_pem(pem: &str) -> Vec<u8> {
    x509_parser::pem::parse_x509_pem(pem.as_bytes()).expect("PEM").1.contents
}

#[tokio::test]
async fn a_tenant_lives_and_dies_through_the_cli() {
    in_namespace("life", |client, ns| async move {
        let ns = ns.as_str();
        let _operator = Operator::start(ns);
        let tenants: Api<TenantCluster> = Api::namespaced(client.clone(), ns);

        let run = nestor(&[
            "create",
            "team-a",
            "-n",
            ns,
            "--version",
            "1.34.2",
            "--etcd-replicas",
            "1",
            "--ephemeral-etcd",
            "--image-repository",
            "nestor.local",
        ])
        .await;
        assert!(run.success, "{run:?}");
        assert_eq!(run.stdout, "tenantcluster.nestor.dev/team-a created\n");
        assert!(tenants.get_opt("team-a").await.unwrap().is_some());

        let run = nestor(&["wait", "team-a", "-n", ns, "--for", "ready", "--timeout", READY_TIMEOUT]).await;
        assert!(run.success, "not Ready within {READY_TIMEOUT}: {run:?}");
        let progress: Vec<&str> = run.stderr.lines().collect();
        assert!(progress.iter().all(|line| line.starts_with('[')), "{run:?}");
        assert!(progress.iter().any(|line| line.ends_with("] EtcdReady=True")), "{run:?}");
        assert!(progress.iter().any(|line| line.ends_with("] Ready=True")), "{run:?}");

        let run = nestor(&["get", "team-a", "-n", ns]).await;
        let row: Vec<&str> = run.stdout.lines().nth(1).expect("a row").split_whitespace().collect();
        assert_eq!(row[..4], ["team-a", "1.34.2", "Ready", "5/5"], "{run:?}");
        assert_eq!(row[4], format!("https://team-a-apiserver.{ns}.svc:6443"));
        let run = nestor(&["get", "team-a", "-n", ns, "-o", "json"]).await;
        let object: Value = serde_json::from_str(&run.stdout).expect("JSON");
        assert_eq!(object["status"]["phase"], "Ready");

        let run = nestor(&["describe", "team-a", "-n", ns]).await;
        assert!(run.success, "{run:?}");
        for expected in
            ["Phase:                Ready", "Certificates expire:  ", "EtcdReady", "APIServerReady"]
        {
            assert!(run.stdout.contains(expected), "describe lacks {expected:?}:\n{}", run.stdout);
        }
        let serving =
            run.stdout.lines().find(|line| line.trim_start().starts_with("team-a-apiserver-serving "));
        let serving: Vec<&str> = serving.expect("serving certificate row").split_whitespace().collect();
        assert_eq!(serving[1], "kube-apiserver");
        assert!((363..=365).contains(&serving[3].parse::<i64>().unwrap()), "{serving:?}");

        // The admin kubeconfig works against the tenant.
        let services: Api<Service> = Api::namespaced(client.clone(), ns);
        let service = services.get("team-a-apiserver").await.unwrap();
        let cluster_ip = service.spec.and_then(|spec| spec.cluster_ip).expect("ClusterIP");
        let server_name = format!("team-a-apiserver.{ns}.svc");
        let run = nestor(&["kubeconfig", "team-a", "-n", ns]).await;
        assert!(run.success, "{run:?}");
        let admin = tenant_client(&run.stdout, &cluster_ip, &server_name).await;
        let tenant_namespaces: Api<Namespace> = Api::all(admin);
        let names: Vec<String> = tenant_namespaces
            .list(&Default::default())
            .await
            .expect("admin lists namespaces")
            .items
            .into_iter()
            .filter_map(|n| n.metadata.name)
            .collect();
        assert!(names.contains(&"kube-system".to_string()), "{names:?}");

        // A short-lived user certificate, signed by the tenant CA, authenticated but not authorized.
        let run =
            nestor(&["kubeconfig", "team-a", "-n", ns, "--user", "alice", "--group", "devs", "--ttl", "10m"])
                .await;
        assert!(run.success, "{run:?}");
        let alice = ClientCredentials::from_kubeconfig(&run.stdout).expect("user kubeconfig");
        let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
        let ca_secret = secrets.get("team-a-ca").await.unwrap();
        let ca_pem = String::from_utf8(ca_secret.data.unwrap()["tls.crt"].0.clone()).unwrap();
        let ca_der = parse_pem(&ca_pem);
        let (_, ca) = parse_x509_certificate(&ca_der).unwrap();
        let der = parse_pem(&alice.client_cert_pem);
        let (_, certificate) = parse_x509_certificate(&der).unwrap();
        certificate.verify_signature(Some(ca.public_key())).expect("signed by the tenant CA");
        let common_names: Vec<_> =
            certificate.subject().iter_common_name().map(|a| a.as_str().unwrap()).collect();
        let organizations: Vec<_> =
            certificate.subject().iter_organization().map(|a| a.as_str().unwrap()).collect();
        assert_eq!((common_names, organizations), (vec!["alice"], vec!["devs"]));
        let expected_end = jiff::Timestamp::now().as_second() + 600;
        let not_after = certificate.validity().not_after.timestamp();
        assert!(
            (expected_end - not_after).abs() <= 60,
            "notAfter {not_after}, expected about {expected_end}"
        );
        let as_alice: Api<Namespace> = Api::all(tenant_client(&run.stdout, &cluster_ip, &server_name).await);
        match as_alice.list(&Default::default()).await {
            Err(kube::Error::Api(status)) => {
                assert_eq!(status.code, 403, "authenticated, not authorized: {status:?}")
            }
            other => panic!("alice must be forbidden, got {other:?}"),
        }
        let line = assert_one_error_line(
            &nestor(&["kubeconfig", "team-a", "-n", ns, "--user", "alice", "--ttl", "48h"]).await,
        );
        assert!(line.contains("is longer than the maximum of 24h"), "{line}");

        // Admission refuses a skipped minor version.
        let line = assert_one_error_line(&nestor(&["upgrade", "team-a", "--to", "1.36.0", "-n", ns]).await);
        assert!(line.contains("spec.version: "), "{line}");

        // Delete waits for the finalizer and reports progress.
        let run = nestor(&["delete", "team-a", "-n", ns, "--timeout", "120s"]).await;
        assert!(run.success, "{run:?}");
        assert_eq!(run.stdout, "tenantcluster.nestor.dev/team-a deleted\n");
        assert!(run.stderr.lines().any(|line| line.ends_with("] gone")), "{run:?}");
        assert!(tenants.get_opt("team-a").await.unwrap().is_none(), "object still exists after delete");
    })
    .await;
}
