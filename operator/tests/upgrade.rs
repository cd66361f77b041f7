//! A tenant upgraded from 1.34.2 to 1.35.4 with real binaries keeps serving, and its
//! control plane never breaks Kubernetes' version-skew policy on the way.
//!
//! A tenant with two apiservers is created at 1.34.2, a ConfigMap is written through its
//! emitted kubeconfig, and `nestor upgrade --version 1.35.4` runs as a user runs it. While
//! the upgrade rolls, once a second: the tenant's `/livez` and a GET of the ConfigMap go
//! through the apiserver Service (every failure is kept), and the controller-manager's and
//! the scheduler's Deployment images are compared with the images of the apiserver pods.
//! At the end the tenant reports v1.35.4, the ConfigMap is still there, a 1.35.4
//! controller-manager and a 1.35.4 scheduler each hold a fresh leader Lease, and the
//! Events tell the story.
//!
//! Needs the images `nestor.local/kube-apiserver:v1.35.4`,
//! `nestor.local/kube-controller-manager:v1.35.4` and `nestor.local/kube-scheduler:v1.35.4`
//! (`make meta-up` builds and imports them).

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, PostParams};
use kube::{Client, ResourceExt};
use nestor::health::lease::{
    CONTROLLER_MANAGER_LEASE, LEASE_NAMESPACE, LeaderLease, SCHEDULER_LEASE, freshness,
};
use nestor::names::{Component, TenantNames};
use serde_json::json;
use support::{
    MAX_WAIT, Operator, TestNamespace, in_namespace, poll_for, run_nestor, runnable_spec, wait_for,
};

const TENANT: &str = "up";
const FROM: &str = "1.34.2";
const TO: &str = "1.35.4";
/// Bound of each of the two long phases: the HA tenant becoming Ready, and the upgrade.
const PHASE_TIMEOUT: Duration = Duration::from_secs(300);

/// The Kubernetes version in an image reference's tag (`…/kube-apiserver:v1.35.4` → `1.35.4`).
fn version_of(image: &str) -> &str {
    image.rsplit_once(':').map_or("", |(_, tag)| tag.trim_start_matches('v'))
}

/// The version of the first container of a pod template or pod spec.
fn first_image(spec: Option<&k8s_openapi::api::core::v1::PodSpec>) -> String {
    spec.and_then(|spec| spec.containers.first())
        .and_then(|container| container.image.clone())
        .unwrap_or_default()
}

/// What one sample of the control plane saw: the controller-manager's and the
/// scheduler's Deployment template versions and the version of every live apiserver pod.
struct Sample {
    controller_manager: String,
    scheduler: String,
    apiservers: Vec<String>,
}

/// The version of Deployment `name`'s pod template.
async fn template_version(ns: &TestNamespace, name: &str) -> Result<String, String> {
    let deployment =
        ns.api::<Deployment>().get(name).await.map_err(|error| format!("Deployment {name}: {error}"))?;
    let template = deployment.spec.as_ref().and_then(|spec| spec.template.spec.as_ref());
    Ok(version_of(&first_image(template)).to_string())
}

/// Reads the controller-manager and scheduler Deployments and the apiserver pods. Pods
/// already terminating are left out: they are out of the Service's endpoints (a new
/// controller-manager or scheduler connects through the Service, so it never reaches
/// them) and only finish the requests they hold during their shutdown delay.
async fn sample(ns: &TestNamespace, names: &TenantNames) -> Result<Sample, String> {
    let controller_manager = template_version(ns, &names.controller_manager()).await?;
    let scheduler = template_version(ns, &names.scheduler()).await?;
    let selector = names.component_selector(Component::ApiServer);
    let pods = ns
        .api::<Pod>()
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|error| format!("apiserver pods: {error}"))?;
    let apiservers = pods
        .items
        .iter()
        .filter(|pod| pod.metadata.deletion_timestamp.is_none())
        .map(|pod| version_of(&first_image(pod.spec.as_ref())).to_string())
        .collect();
    Ok(Sample { controller_manager, scheduler, apiservers })
}

/// The holder of `lease` in the tenant behind `client` when it is fresh and held by a
/// pod of `component` that runs `version`.
async fn fresh_leader_at(
    ns: &TestNamespace,
    client: &Client,
    names: &TenantNames,
    lease: LeaderLease,
    component: Component,
    version: &str,
) -> Result<String, String> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let lease = leases.get(lease.name).await.map_err(|error| error.to_string())?;
    let verdict = freshness(&lease, jiff::Timestamp::now());
    if !verdict.is_healthy() {
        return Err(format!("{verdict:?}"));
    }
    let holder = lease.spec.and_then(|spec| spec.holder_identity).unwrap_or_default();
    let selector = names.component_selector(component);
    let pods = ns
        .api::<Pod>()
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|error| error.to_string())?;
    let leader = pods.items.iter().find(|pod| holder.starts_with(&format!("{}_", pod.name_any())));
    match leader.map(|pod| version_of(&first_image(pod.spec.as_ref())).to_string()) {
        Some(running) if running == version => Ok(holder),
        other => Err(format!("Lease held by {holder}, a pod at {other:?}")),
    }
}

/// One probe through the Service: `/livez`, then the ConfigMap written before the upgrade.
async fn probe(client: &Client) -> Result<(), String> {
    let livez = hyper::Request::get("/livez").body(Vec::new()).map_err(|error| error.to_string())?;
    let answer = client.request_text(livez).await.map_err(|error| format!("/livez: {error}"))?;
    if answer != "ok" {
        return Err(format!("/livez answered {answer:?}"));
    }
    let config_map = Api::<ConfigMap>::namespaced(client.clone(), "default")
        .get("before-upgrade")
        .await
        .map_err(|error| format!("GET ConfigMap: {error}"))?;
    match config_map.data.as_ref().and_then(|data| data.get("written-at")) {
        Some(version) if version == FROM => Ok(()),
        other => Err(format!("ConfigMap data changed: {other:?}")),
    }
}

fn ready_at(tenant: &nestor::api::TenantCluster, version: &str) -> bool {
    tenant.status.as_ref().is_some_and(|status| {
        status.version.as_deref() == Some(version)
            && status.observed_generation == tenant.metadata.generation
            && status
                .conditions
                .iter()
                .any(|condition| condition.type_ == "Ready" && condition.status == "True")
    })
}

#[tokio::test]
async fn an_upgrade_keeps_serving_and_rolls_the_apiserver_before_the_controller_manager_and_scheduler() {
    in_namespace("upgrade", async |ns| {
        let _operator = Operator::start(&ns.name, "upgrade").await;
        let names = ns.names(TENANT);
        let mut spec = runnable_spec();
        assert_eq!(spec["version"], FROM);
        spec["apiServer"] = json!({"replicas": 2});
        ns.create_tenant(TENANT, spec).await;

        // Two apiservers on a shared two-core machine: up to PHASE_TIMEOUT for Ready at 1.34.2.
        let started = Instant::now();
        poll_for(PHASE_TIMEOUT, Duration::from_secs(2), async || {
            let tenant = ns.tenant(TENANT).await;
            if tenant.as_ref().is_ok_and(|tenant| ready_at(tenant, FROM)) {
                Ok(())
            } else {
                Err(format!("{tenant:?}"))
            }
        })
        .await
        .unwrap_or_else(|tenant| panic!("not Ready at {FROM} in {PHASE_TIMEOUT:?}: {tenant}"));
        eprintln!("Ready at {FROM} after {:.0} s", started.elapsed().as_secs_f64());
        let client = wait_for("the tenant to answer through its kubeconfig", MAX_WAIT, async || {
            let client = ns.tenant_client(TENANT).await?;
            let config_map: ConfigMap = serde_json::from_value(json!({
                "metadata": {"name": "before-upgrade"}, "data": {"written-at": FROM}
            }))
            .map_err(|error| error.to_string())?;
            match Api::<ConfigMap>::namespaced(client.clone(), "default")
                .create(&PostParams::default(), &config_map)
                .await
            {
                Ok(_) => Ok(client),
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(client),
                Err(error) => Err(format!("create ConfigMap: {error}")),
            }
        })
        .await;
        probe(&client).await.expect("the tenant serves before the upgrade");
        let holder_before = wait_for("a controller-manager leader", MAX_WAIT, async || {
            fresh_leader_at(
                &ns,
                &client,
                &names,
                CONTROLLER_MANAGER_LEASE,
                Component::ControllerManager,
                FROM,
            )
            .await
        })
        .await;
        let scheduler_before = wait_for("a scheduler leader", MAX_WAIT, async || {
            fresh_leader_at(&ns, &client, &names, SCHEDULER_LEASE, Component::Scheduler, FROM).await
        })
        .await;

        // The upgrade, as a user runs it.
        let upgrade_started = Instant::now();
        let upgrade_started_at = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(1);
        let printed =
            run_nestor(&["upgrade", TENANT, "--version", TO, "-n", &ns.name]).await.expect_success();
        assert!(printed.contains(&format!("{FROM} -> {TO}")), "{printed}");
        let described = run_nestor(&["describe", TENANT, "-n", &ns.name]).await.expect_success();
        assert!(
            described.contains(&format!("{TO} (running {FROM})")),
            "describe shows both versions:\n{described}"
        );

        let (mut probes, mut failures) = (0u32, Vec::new());
        let (mut samples, mut skew_violations) = (0u32, Vec::new());
        let (mut apiserver_rolling_before_cm, mut apiserver_done_at, mut cm_moved_at) = (0u32, None, None);
        let (mut apiserver_rolling_before_scheduler, mut scheduler_moved_at) = (0u32, None);
        let rolled = poll_for(PHASE_TIMEOUT, Duration::from_secs(1), async || {
            let elapsed = upgrade_started.elapsed();
            probes += 1;
            if let Err(error) = probe(&client).await {
                failures.push(format!("{:.0}s: {error}", elapsed.as_secs_f64()));
            }
            match sample(&ns, &names).await {
                Ok(seen) => {
                    samples += 1;
                    let new_apiservers = seen.apiservers.iter().filter(|version| *version == TO).count();
                    if seen.controller_manager == TO {
                        cm_moved_at.get_or_insert(elapsed);
                        if seen.apiservers.iter().any(|version| version != TO) {
                            skew_violations.push(format!(
                                "{:.0}s: controller-manager {TO} with apiservers {:?}",
                                elapsed.as_secs_f64(),
                                seen.apiservers
                            ));
                        }
                    } else if new_apiservers > 0 {
                        apiserver_rolling_before_cm += 1;
                    }
                    if seen.scheduler == TO {
                        scheduler_moved_at.get_or_insert(elapsed);
                        if seen.apiservers.iter().any(|version| version != TO) {
                            skew_violations.push(format!(
                                "{:.0}s: scheduler {TO} with apiservers {:?}",
                                elapsed.as_secs_f64(),
                                seen.apiservers
                            ));
                        }
                    } else if new_apiservers > 0 {
                        apiserver_rolling_before_scheduler += 1;
                    }
                    if new_apiservers == 2 && seen.apiservers.len() == 2 {
                        apiserver_done_at.get_or_insert(elapsed);
                    }
                }
                Err(error) => eprintln!("sample failed: {error}"),
            }
            let tenant = ns.tenant(TENANT).await;
            if tenant.as_ref().is_ok_and(|tenant| ready_at(tenant, TO)) {
                Ok(())
            } else {
                Err(format!("{:?}", tenant.map(|tenant| tenant.status)))
            }
        })
        .await;
        if let Err(tenant) = rolled {
            panic!(
                "not Ready at {TO} within {PHASE_TIMEOUT:?}; {probes} probes, failures {failures:?}; \
                 tenant {tenant}"
            );
        }
        let upgrade_time = upgrade_started.elapsed();
        let seconds =
            |at: Option<Duration>| at.map_or("never".to_string(), |at| format!("{:.0} s", at.as_secs_f64()));
        eprintln!(
            "upgraded {FROM} -> {TO} in {:.1} s (status.version and Ready); all apiservers at {TO} \
             after {}, controller-manager template moved after {}, scheduler template after {}; \
             {probes} probes (/livez + GET ConfigMap), {} failed: {failures:?}; {samples} skew \
             samples, {apiserver_rolling_before_cm} with new apiservers and the old \
             controller-manager, {apiserver_rolling_before_scheduler} with the old scheduler",
            upgrade_time.as_secs_f64(),
            seconds(apiserver_done_at),
            seconds(cm_moved_at),
            seconds(scheduler_moved_at),
            failures.len()
        );
        assert!(failures.is_empty(), "the tenant stopped serving during the upgrade: {failures:?}");
        assert!(
            skew_violations.is_empty(),
            "controller-manager or scheduler newer than an apiserver: {skew_violations:?}"
        );
        assert!(
            apiserver_rolling_before_cm > 0,
            "no sample caught the apiservers moving first: the ordering was not observed"
        );
        assert!(cm_moved_at.is_some(), "the controller-manager moved to {TO}");
        assert!(
            apiserver_rolling_before_scheduler > 0,
            "no sample caught the apiservers moving before the scheduler: the ordering was not observed"
        );
        assert!(scheduler_moved_at.is_some(), "the scheduler moved to {TO}");

        // The tenant runs the new version, with its data.
        let fresh = ns.tenant_client(TENANT).await.expect("tenant client");
        let version = fresh.apiserver_version().await.expect("GET /version");
        assert_eq!(version.git_version, format!("v{TO}"));
        probe(&fresh).await.expect("the ConfigMap written at 1.34.2 reads back at 1.35.4");

        // A 1.35.4 controller-manager and a 1.35.4 scheduler lead, each with a fresh Lease.
        let holder = wait_for("a 1.35.4 controller-manager holding a fresh Lease", MAX_WAIT, async || {
            fresh_leader_at(&ns, &fresh, &names, CONTROLLER_MANAGER_LEASE, Component::ControllerManager, TO)
                .await
        })
        .await;
        let scheduler_holder = wait_for("a 1.35.4 scheduler holding a fresh Lease", MAX_WAIT, async || {
            fresh_leader_at(&ns, &fresh, &names, SCHEDULER_LEASE, Component::Scheduler, TO).await
        })
        .await;
        assert_ne!(scheduler_holder, scheduler_before, "a new scheduler took over");
        assert_eq!(template_version(&ns, &names.scheduler()).await.as_deref(), Ok(TO));
        assert_ne!(holder, holder_before, "a new controller-manager took over");

        // The Events since the upgrade started (first emitted then, or repeated since) say
        // what happened.
        let since_upgrade = |event: &Event| {
            let created = event.metadata.creation_timestamp.as_ref().map(|time| time.0);
            let repeated = event.series.as_ref().map(|series| series.last_observed_time.0);
            created.into_iter().chain(repeated).any(|at| at >= upgrade_started_at)
        };
        let events = wait_for("Upgrading and Upgraded Events", MAX_WAIT, async || {
            let events =
                ns.api::<Event>().list(&ListParams::default()).await.map_err(|error| error.to_string())?;
            let about_tenant: Vec<(String, String)> = events
                .items
                .into_iter()
                .filter(|event| {
                    event.regarding.as_ref().and_then(|regarding| regarding.name.as_deref()) == Some(TENANT)
                        && since_upgrade(event)
                })
                .map(|event| (event.reason.unwrap_or_default(), event.note.unwrap_or_default()))
                .collect();
            let has = |reason: &str| about_tenant.iter().any(|(seen, _)| seen == reason);
            if has("Upgrading") && has("Upgraded") {
                Ok(about_tenant)
            } else {
                Err(format!("{about_tenant:?}"))
            }
        })
        .await;
        let upgrading = events.iter().find(|(reason, _)| reason == "Upgrading").expect("found");
        assert!(upgrading.1.starts_with(&format!("Upgrading {FROM} -> {TO}")), "{upgrading:?}");
        assert!(
            !events.iter().any(|(reason, _)| reason == "Degraded" || reason == "NotReady"),
            "Ready never dropped during the upgrade: {events:?}"
        );
    })
    .await;
}
