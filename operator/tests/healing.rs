//! Self-healing, end to end, against the real meta cluster: each scenario breaks a
//! working tenant on purpose and measures how long the operator takes to make it
//! whole again (printed as `recovered ... in N s`).
//!
//! - every owned object deleted in turn (Deployment, StatefulSet, Service, a leaf
//!   certificate Secret, the admin kubeconfig Secret) is restored, the tenant is Ready
//!   again, and data written to the tenant before survives;
//! - certificates issued with a lifetime of minutes are renewed and rolled out before
//!   they expire while the apiserver keeps serving.
//!
//! The missing-CA, operator-crash and wedged-apiserver scenarios live in
//! `operator.rs` and `health.rs`; etcd member replacement in `etcd_members.rs`.

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use kube::api::{Api, DeleteParams, PostParams};
use kube::{Client, Resource};
use nestor::api::Phase;
use serde_json::json;
use support::{MAX_WAIT, Operator, TestNamespace, in_namespace, runnable_spec, wait_for};

const TENANT: &str = "heal";

/// The tenant is whole: Ready on its current generation, every workload rolled out
/// and available, and its own API answering through the kubeconfig Nestor emitted.
async fn tenant_whole(ns: &TestNamespace) -> Result<(), String> {
    let tenant = ns.tenant(TENANT).await?;
    let status = tenant.status.clone().unwrap_or_default();
    let ready = status.conditions.iter().find(|condition| condition.type_ == "Ready");
    match ready {
        Some(ready)
            if ready.status == "True"
                && status.phase == Some(Phase::Ready)
                && ready.observed_generation == tenant.meta().generation => {}
        _ => return Err(format!("not Ready: phase {:?}, Ready {:?}", status.phase, ready)),
    }
    let names = ns.names(TENANT);
    for name in [names.apiserver(), names.controller_manager(), names.scheduler()] {
        let deployment = ns.api::<Deployment>().get(&name).await.map_err(|error| error.to_string())?;
        let wanted = deployment.spec.as_ref().and_then(|spec| spec.replicas).unwrap_or(1);
        let status = deployment.status.unwrap_or_default();
        let rolled_out = status.observed_generation == deployment.metadata.generation
            && status.updated_replicas == Some(wanted)
            && status.available_replicas == Some(wanted)
            && status.replicas == Some(wanted);
        if !rolled_out {
            return Err(format!("Deployment {name} not rolled out: {status:?}"));
        }
    }
    let etcd = ns.api::<StatefulSet>().get(&names.etcd()).await.map_err(|error| error.to_string())?;
    let wanted = etcd.spec.as_ref().and_then(|spec| spec.replicas).unwrap_or(1);
    let etcd_status = etcd.status.unwrap_or_default();
    if etcd_status.ready_replicas != Some(wanted) || etcd_status.updated_replicas != Some(wanted) {
        return Err(format!("StatefulSet {} not ready: {etcd_status:?}", names.etcd()));
    }
    let client = ns.tenant_client(TENANT).await?;
    let readyz = client
        .request_text(hyper::Request::get("/readyz").body(Vec::new()).map_err(|error| error.to_string())?)
        .await
        .map_err(|error| format!("tenant /readyz: {error}"))?;
    if readyz != "ok" {
        return Err(format!("tenant /readyz answered {readyz:?}"));
    }
    Ok(())
}

async fn uid(ns: &TestNamespace, kind: &str, name: &str) -> Result<Option<String>, String> {
    let meta = match kind {
        "Deployment" => ns.api::<Deployment>().get_opt(name).await.map(|o| o.map(|o| o.metadata)),
        "StatefulSet" => ns.api::<StatefulSet>().get_opt(name).await.map(|o| o.map(|o| o.metadata)),
        "Service" => ns.api::<Service>().get_opt(name).await.map(|o| o.map(|o| o.metadata)),
        "Secret" => ns.api::<Secret>().get_opt(name).await.map(|o| o.map(|o| o.metadata)),
        other => panic!("no deletion scenario for kind {other}"),
    };
    meta.map(|meta| meta.and_then(|meta| meta.uid))
        .map_err(|error| format!("cannot read {kind}/{name}: {error}"))
}

async fn delete(ns: &TestNamespace, kind: &str, name: &str) {
    let params = DeleteParams::background();
    let result = match kind {
        "Deployment" => ns.api::<Deployment>().delete(name, &params).await.map(drop),
        "StatefulSet" => ns.api::<StatefulSet>().delete(name, &params).await.map(drop),
        "Service" => ns.api::<Service>().delete(name, &params).await.map(drop),
        "Secret" => ns.api::<Secret>().delete(name, &params).await.map(drop),
        other => panic!("no deletion scenario for kind {other}"),
    };
    result.unwrap_or_else(|error| panic!("cannot delete {kind}/{name}: {error}"));
}

async fn tenant_config_map(client: Client) -> Api<ConfigMap> {
    Api::namespaced(client, "default")
}

#[tokio::test]
async fn each_owned_object_deleted_in_turn_is_restored_and_the_tenant_is_ready_again() {
    in_namespace("heal", async |ns| {
        let _operator = Operator::start(&ns.name, "heal").await;
        // A real volume claim, as in production: deleting the StatefulSet must not
        // take the tenant's data with it.
        let mut spec = runnable_spec();
        spec["etcd"] = json!({"replicas": 1, "storage": {"size": "64Mi"}});
        ns.create_tenant(TENANT, spec).await;
        wait_for("tenant Ready", MAX_WAIT, async || tenant_whole(&ns).await).await;

        let marker: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": "survivor"}, "data": {"written": "before"}}))
                .expect("ConfigMap");
        let tenant_api = tenant_config_map(ns.tenant_client(TENANT).await.expect("tenant client")).await;
        tenant_api.create(&PostParams::default(), &marker).await.expect("write into the tenant");

        let names = ns.names(TENANT);
        let victims = [
            ("Deployment", names.apiserver()),
            ("StatefulSet", names.etcd()),
            ("Service", names.apiserver()),
            ("Secret", names.apiserver_serving_secret()),
            ("Secret", names.admin_kubeconfig_secret()),
        ];
        for (kind, name) in victims {
            let before = uid(&ns, kind, &name).await.expect("readable").expect("exists before");
            delete(&ns, kind, &name).await;
            let started = Instant::now();
            wait_for(&format!("{kind}/{name} restored and the tenant whole"), MAX_WAIT, async || match uid(
                &ns, kind, &name,
            )
            .await?
            {
                Some(now) if now != before => tenant_whole(&ns).await,
                Some(_) => Err(format!("{kind}/{name} not deleted yet")),
                None => Err(format!("{kind}/{name} not restored yet")),
            })
            .await;
            eprintln!("recovered from deleting {kind}/{name} in {:.1} s", started.elapsed().as_secs_f64());
        }

        // A fresh client: the kubeconfig and the Service's ClusterIP have both changed.
        let tenant_api = tenant_config_map(ns.tenant_client(TENANT).await.expect("tenant client")).await;
        let survivor = tenant_api.get("survivor").await.expect("data written before survives every deletion");
        assert_eq!(survivor.data.and_then(|data| data.get("written").cloned()).as_deref(), Some("before"));
    })
    .await;
}

/// `notAfter` of the certificate in TLS Secret `name`.
async fn not_after(ns: &TestNamespace, name: &str) -> Result<i64, String> {
    let secret = ns.secret(name).await?.ok_or_else(|| format!("Secret {name} missing"))?;
    let pem = secret
        .data
        .as_ref()
        .and_then(|data| data.get("tls.crt"))
        .ok_or_else(|| format!("Secret {name} has no tls.crt"))?;
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem.0).map_err(|error| error.to_string())?;
    let certificate = pem.parse_x509().map_err(|error| error.to_string())?;
    Ok(certificate.validity().not_after.timestamp())
}

#[tokio::test]
async fn short_lived_certificates_are_renewed_and_rolled_out_while_the_apiserver_serves() {
    in_namespace("renew", async |ns| {
        let _operator = Operator::start(&ns.name, "renew").await;
        let mut spec = runnable_spec();
        // Renewal is due one minute after issue, well before the three-minute expiry.
        spec["pki"] = json!({"certificateValidity": "3m", "renewBefore": "2m"});
        ns.create_tenant(TENANT, spec).await;
        wait_for("tenant Ready", MAX_WAIT, async || tenant_whole(&ns).await).await;

        let names = ns.names(TENANT);
        let serving = names.apiserver_serving_secret();
        let first_expiry = not_after(&ns, &serving).await.expect("serving certificate");
        let first_hash = pod_template_hash(&ns, &names.apiserver()).await;
        // The scheduler's client certificate (in its kubeconfig) is renewed with the rest,
        // and its pods roll for it as the apiserver's do.
        let first_scheduler_hash = pod_template_hash(&ns, &names.scheduler()).await;
        assert!(first_scheduler_hash.is_some(), "the scheduler's pods carry a config hash");

        // Probe the serving apiserver every second until the renewed certificate is
        // rolled out; the probe's client is rebuilt on failure (its kubeconfig rotates too).
        let started = Instant::now();
        let (mut probes, mut failed) = (0u32, Vec::new());
        let mut client = ns.tenant_client(TENANT).await.expect("tenant client");
        let renewed_and_rolled = wait_for(
            "a renewed serving certificate rolled out with the tenant whole",
            Duration::from_secs(240),
            async || {
                probes += 1;
                let livez = hyper::Request::get("/livez").body(Vec::new()).expect("request");
                if let Err(error) = client.request_text(livez).await {
                    failed.push(format!("{:.0}s: {error}", started.elapsed().as_secs_f64()));
                    if let Ok(fresh) = ns.tenant_client(TENANT).await {
                        client = fresh;
                    }
                }
                let tally = format!("{probes} /livez probes, failures: {failed:?}");
                let expiry = not_after(&ns, &serving).await.unwrap_or(first_expiry);
                if expiry <= first_expiry {
                    return Err(format!("serving certificate not renewed (expires at {expiry}); {tally}"));
                }
                let hash = pod_template_hash(&ns, &names.apiserver()).await;
                if hash == first_hash {
                    return Err(format!(
                        "renewed, apiserver pods not rolled (config hash {hash:?}); {tally}"
                    ));
                }
                let scheduler_hash = pod_template_hash(&ns, &names.scheduler()).await;
                if scheduler_hash == first_scheduler_hash {
                    return Err(format!(
                        "renewed, scheduler pods not rolled (config hash {scheduler_hash:?}); {tally}"
                    ));
                }
                match tenant_whole(&ns).await {
                    Ok(()) => Ok(started.elapsed()),
                    Err(state) => Err(format!("renewed and rolling, tenant not whole: {state}; {tally}")),
                }
            },
        )
        .await;
        let now = jiff::Timestamp::now().as_second();
        eprintln!(
            "renewed and rolled out in {:.1} s, {} s before the first certificate's expiry; \
             {probes} /livez probes, {} failed: {failed:?}",
            renewed_and_rolled.as_secs_f64(),
            first_expiry - now,
            failed.len()
        );
        assert!(now < first_expiry, "the renewal must land before the old certificate expires");
        assert!(failed.is_empty(), "the apiserver stopped serving during the rollout: {failed:?}");
    })
    .await;
}

async fn pod_template_hash(ns: &TestNamespace, deployment: &str) -> Option<String> {
    let deployment = ns.api::<Deployment>().get(deployment).await.ok()?;
    deployment.spec?.template.metadata?.annotations?.get("nestor.dev/config-hash").cloned()
}
