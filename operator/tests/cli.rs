//! The `nestor` client verbs run as a user runs them: the binary as a subprocess against
//! the meta cluster (KUBECONFIG, default `/var/lib/nestor-meta/admin.kubeconfig`).
//!
//! Each test works in a namespace of its own, deleted at the end even when the test
//! fails. Real tenants are expensive (three pods on a small machine), so one test walks a
//! single tenant through its whole life (create, wait, get, describe, kubeconfig, user
//! certificate, refused upgrade, delete) with an operator subprocess scoped to its
//! namespace; the error paths run in a separate test without an operator.

mod support;

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::Api;
use nestor::api::TenantCluster;
use nestor::kubeconfig::ClientCredentials;
use serde_json::Value;
use support::{NestorRun, Operator, in_namespace, kubeconfig_path, run_nestor};
use x509_parser::prelude::*;

/// Upper bound for a light tenant (one etcd member, local images) to become Ready.
const READY_TIMEOUT: &str = "180s";

/// Asserts a failed run that printed exactly one `error: ...` line, and returns it.
#[track_caller]
fn assert_one_error_line(run: &NestorRun) -> String {
    assert!(!run.status.success(), "expected a failure: {run:?}");
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line on stderr: {run:?}");
    assert!(lines[0].starts_with("error: "), "{run:?}");
    assert!(run.stdout.is_empty(), "nothing on stdout: {run:?}");
    lines[0].to_string()
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
    in_namespace("cli-errors", async |namespace| {
        let ns = namespace.name.as_str();
        let tenants: Api<TenantCluster> = namespace.api();

        // Admission rejection: one line naming the field, nothing created.
        let run = run_nestor(&["create", "bad", "-n", ns, "--etcd-replicas", "2"]).await;
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
            assert_eq!(assert_one_error_line(&run_nestor(&args).await), not_found, "{verb:?}");
        }

        // No kubeconfig, and an API server that does not answer.
        let run = run_nestor(&["get", "--kubeconfig", "/nonexistent/kubeconfig"]).await;
        let line = assert_one_error_line(&run);
        assert!(line.starts_with("error: no kubeconfig: cannot read /nonexistent/kubeconfig"), "{line}");
        let directory = tempfile::tempdir().unwrap();
        let unreachable = unreachable_kubeconfig(directory.path());
        let run = run_nestor(&["get", "--kubeconfig", unreachable.to_str().unwrap()]).await;
        let line = assert_one_error_line(&run);
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
        let run = run_nestor(&["create", "-f", file, "-n", ns]).await;
        assert!(run.status.success(), "{run:?}");
        assert_eq!(
            run.stdout,
            "tenantcluster.nestor.dev/alpha created\ntenantcluster.nestor.dev/beta created\n"
        );
        let run = run_nestor(&["create", "-f", file, "-n", ns]).await;
        assert!(run.stdout.contains("tenantcluster.nestor.dev/alpha unchanged"), "{run:?}");
        let alpha = tenants.get("alpha").await.expect("alpha exists");
        assert_eq!(alpha.spec.etcd.replicas, 1);
        let managers: Vec<_> = alpha.metadata.managed_fields.unwrap_or_default().into_iter().filter_map(|e| e.manager).collect();
        assert!(managers.contains(&"nestor-cli".to_string()), "{managers:?}");

        // The list as JSON and as a table.
        let run = run_nestor(&["get", "-n", ns, "-o", "json"]).await;
        assert!(run.status.success(), "{run:?}");
        let list: Value = serde_json::from_str(&run.stdout).expect("get -o json prints JSON");
        let names: Vec<&str> = list["items"].as_array().unwrap().iter().map(|i| i["metadata"]["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["alpha", "beta"]);
        let run = run_nestor(&["get", "-n", ns]).await;
        let lines: Vec<Vec<&str>> = run.stdout.lines().map(|line| line.split_whitespace().collect()).collect();
        assert_eq!(lines[0], ["NAME", "VERSION", "PHASE", "READY", "ENDPOINT", "AGE"], "{run:?}");
        assert_eq!(lines[2][..2], ["beta", "1.35.0"], "{run:?}");

        // A skipped minor version is refused by admission, in one line.
        let run = run_nestor(&["upgrade", "alpha", "--to", "1.36.0", "-n", ns]).await;
        let line = assert_one_error_line(&run);
        assert!(line.contains("spec.version: "), "{line}");
        assert_eq!(tenants.get("alpha").await.unwrap().spec.version, "1.34.2");

        // Without an operator there is no finalizer: delete returns once the object is gone.
        for name in ["alpha", "beta"] {
            let run = run_nestor(&["delete", name, "-n", ns, "--timeout", "60s"]).await;
            assert!(run.status.success(), "{run:?}");
            assert_eq!(run.stdout, format!("tenantcluster.nestor.dev/{name} deleted\n"));
            assert!(tenants.get_opt(name).await.unwrap().is_none());
        }
    })
    .await;
}

fn parse_pem(pem: &str) -> Vec<u8> {
    x509_parser::pem::parse_x509_pem(pem.as_bytes()).expect("PEM").1.contents
}

#[tokio::test]
async fn a_tenant_lives_and_dies_through_the_cli() {
    in_namespace("cli-life", async |namespace| {
        let ns = namespace.name.as_str();
        let _operator = Operator::start(ns, "cli-life").await;
        let tenants: Api<TenantCluster> = namespace.api();

        let run = run_nestor(&[
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
        assert!(run.status.success(), "{run:?}");
        assert_eq!(run.stdout, "tenantcluster.nestor.dev/team-a created\n");
        assert!(tenants.get_opt("team-a").await.unwrap().is_some());

        let run =
            run_nestor(&["wait", "team-a", "-n", ns, "--for", "ready", "--timeout", READY_TIMEOUT]).await;
        assert!(run.status.success(), "not Ready within {READY_TIMEOUT}: {run:?}");
        let progress: Vec<&str> = run.stderr.lines().collect();
        assert!(progress.iter().all(|line| line.starts_with('[')), "{run:?}");
        assert!(progress.iter().any(|line| line.ends_with("] EtcdReady=True")), "{run:?}");
        assert!(progress.iter().any(|line| line.ends_with("] Ready=True")), "{run:?}");

        let run = run_nestor(&["get", "team-a", "-n", ns]).await;
        let row: Vec<&str> = run.stdout.lines().nth(1).expect("a row").split_whitespace().collect();
        assert_eq!(row[..4], ["team-a", "1.34.2", "Ready", "6/6"], "{run:?}");
        assert_eq!(row[4], format!("https://team-a-apiserver.{ns}.svc:6443"));
        let run = run_nestor(&["get", "team-a", "-n", ns, "-o", "json"]).await;
        let object: Value = serde_json::from_str(&run.stdout).expect("JSON");
        assert_eq!(object["status"]["phase"], "Ready");

        let run = run_nestor(&["describe", "team-a", "-n", ns]).await;
        assert!(run.status.success(), "{run:?}");
        for expected in [
            "Phase:                Ready",
            "Certificates expire:  ",
            "EtcdReady",
            "APIServerReady",
            "SchedulerReady",
            "  scheduler:          1 replica(s)",
            "Deployment/team-a-scheduler",
        ] {
            assert!(run.stdout.contains(expected), "describe lacks {expected:?}:\n{}", run.stdout);
        }
        let serving =
            run.stdout.lines().find(|line| line.trim_start().starts_with("team-a-apiserver-serving "));
        let serving: Vec<&str> = serving.expect("serving certificate row").split_whitespace().collect();
        assert_eq!(serving[1], "kube-apiserver");
        assert!((363..=365).contains(&serving[3].parse::<i64>().unwrap()), "{serving:?}");
        let scheduler =
            run.stdout.lines().find(|line| line.trim_start().starts_with("team-a-scheduler-kubeconfig "));
        let scheduler: Vec<&str> = scheduler.expect("scheduler certificate row").split_whitespace().collect();
        assert_eq!(scheduler[1], "system:kube-scheduler");
        let component = run.stdout.lines().find(|line| line.trim_start().starts_with("kube-scheduler "));
        let component: Vec<&str> = component.expect("scheduler component row").split_whitespace().collect();
        assert_eq!(component[1..], ["Deployment/team-a-scheduler", "1/1"], "{component:?}");

        // The admin kubeconfig works against the tenant.
        let run = run_nestor(&["kubeconfig", "team-a", "-n", ns]).await;
        assert!(run.status.success(), "{run:?}");
        let admin = namespace.tenant_client_from("team-a", &run.stdout).await.expect("tenant client");
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
        let run = run_nestor(&[
            "kubeconfig",
            "team-a",
            "-n",
            ns,
            "--user",
            "alice",
            "--group",
            "devs",
            "--ttl",
            "10m",
        ])
        .await;
        assert!(run.status.success(), "{run:?}");
        let alice = ClientCredentials::from_kubeconfig(&run.stdout).expect("user kubeconfig");
        let secrets: Api<Secret> = namespace.api();
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
        let as_alice: Api<Namespace> =
            Api::all(namespace.tenant_client_from("team-a", &run.stdout).await.expect("tenant client"));
        match as_alice.list(&Default::default()).await {
            Err(kube::Error::Api(status)) => {
                assert_eq!(status.code, 403, "authenticated, not authorized: {status:?}")
            }
            other => panic!("alice must be forbidden, got {other:?}"),
        }
        let line = assert_one_error_line(
            &run_nestor(&["kubeconfig", "team-a", "-n", ns, "--user", "alice", "--ttl", "48h"]).await,
        );
        assert!(line.contains("is longer than the maximum of 24h"), "{line}");

        // Admission refuses a skipped minor version.
        let line =
            assert_one_error_line(&run_nestor(&["upgrade", "team-a", "--to", "1.36.0", "-n", ns]).await);
        assert!(line.contains("spec.version: "), "{line}");

        // Delete waits for the finalizer and reports progress.
        let run = run_nestor(&["delete", "team-a", "-n", ns, "--timeout", "120s"]).await;
        assert!(run.status.success(), "{run:?}");
        assert_eq!(run.stdout, "tenantcluster.nestor.dev/team-a deleted\n");
        assert!(run.stderr.lines().any(|line| line.ends_with("] gone")), "{run:?}");
        assert!(tenants.get_opt("team-a").await.unwrap().is_none(), "object still exists after delete");
    })
    .await;
}
