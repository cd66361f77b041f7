//! A leader Lease held by a stranger, end to end against the real meta cluster: a Ready
//! tenant's `kube-system/kube-controller-manager` Lease is overwritten through the
//! tenant's API with a holder that is no pod of the tenant (`ghost_0`), renewed now,
//! for an hour. On freshness alone that Lease looked healthy, and the real controller
//! manager could not lead for the hour. The operator must release it (Event
//! `LeaderLeaseReleased`), so that the tenant's own controller-manager pod holds the
//! Lease again within [`RECOVERY_TIMEOUT`], and ControllerManagerReady is True with it.
//! Prints how long each step took.
//!
//! The same release serves a tenant restored from an etcd snapshot, whose Leases are the
//! source tenant's (see `nestor::health::lease`).

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use nestor::health::lease::{CONTROLLER_MANAGER_LEASE, LEASE_NAMESPACE, holder_pod};
use nestor::names::Component;
use serde_json::json;
use support::{
    Operator, TestNamespace, condition_message, describe_tenant, find_condition, in_namespace, is_ready,
    runnable_spec,
};

/// Tenant name inside the test namespace.
const TENANT: &str = "team-l";
/// A 1-member ephemeral tenant is Ready in ~40 s on an idle machine; the machine is shared.
const READY_TIMEOUT: Duration = Duration::from_secs(240);
/// From the ghost's Lease to the tenant's own controller manager leading, Ready with it:
/// one probe interval (10 s) to notice, a pass to release, the controller manager's
/// 2 s retry; generous, as other tests share the machine. Without the release it is an
/// hour (the ghost's `leaseDurationSeconds`).
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(90);
/// The stranger's identity: pod name `ghost`.
const GHOST: &str = "ghost_0";

/// Names of the tenant's controller-manager pods in the meta cluster.
async fn controller_manager_pods(ns: &TestNamespace) -> Result<Vec<String>, String> {
    let selector = ns.names(TENANT).component_selector(Component::ControllerManager);
    let pods = ns
        .api::<Pod>()
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|error| format!("cannot list controller-manager pods: {error}"))?;
    Ok(pods.items.iter().map(ResourceExt::name_any).collect())
}

/// The notes of the `LeaderLeaseReleased` Events in the test namespace.
async fn release_events(ns: &TestNamespace) -> Result<Vec<String>, String> {
    let events = ns
        .api::<Event>()
        .list(&ListParams::default())
        .await
        .map_err(|error| format!("cannot list events: {error}"))?;
    Ok(events
        .items
        .into_iter()
        .filter(|event| event.reason.as_deref() == Some("LeaderLeaseReleased"))
        .filter_map(|event| event.message)
        .collect())
}

/// Overwrites the controller manager's Lease with the ghost as holder, renewed now, for
/// an hour; returns the Lease's UID (the same Lease, rewritten).
async fn hand_lease_to_ghost(leases: &Api<Lease>) -> String {
    // MicroTime's own serialization: the apiserver takes six fractional digits only.
    let now = serde_json::to_value(MicroTime(jiff::Timestamp::now())).expect("MicroTime serializes");
    let patch = json!({"spec": {
        "holderIdentity": GHOST,
        "acquireTime": now,
        "renewTime": now,
        "leaseDurationSeconds": 3600,
    }});
    let lease = leases
        .patch(CONTROLLER_MANAGER_LEASE.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("overwrite the controller manager's Lease through the tenant API");
    let holder = lease.spec.as_ref().and_then(|spec| spec.holder_identity.as_deref());
    assert_eq!(holder, Some(GHOST), "the Lease now names the ghost");
    lease.uid().expect("the Lease has a UID")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_lease_held_by_a_stranger_is_released_and_the_own_controller_manager_leads_again() {
    in_namespace("lease", async |ns| {
        let _operator = Operator::start(&ns.name, "lease").await;
        ns.create_tenant(TENANT, runnable_spec()).await;
        let ready = ns
            .wait_for_tenant(TENANT, "Ready with a fresh controller-manager Lease", READY_TIMEOUT, |tenant| {
                is_ready(tenant)
                    && condition_message(tenant, "ControllerManagerReady")
                        .contains("probe: leader Lease fresh")
            })
            .await;
        eprintln!("Ready: {}", describe_tenant(&ready));

        let client: Client = ns.tenant_client(TENANT).await.expect("tenant client");
        let leases: Api<Lease> = Api::namespaced(client, LEASE_NAMESPACE);
        let ghost_uid = hand_lease_to_ghost(&leases).await;
        let started = Instant::now();
        eprintln!("Lease {LEASE_NAMESPACE}/{} handed to {GHOST}", CONTROLLER_MANAGER_LEASE.name);

        let (mut released_at, mut led_at) = (None, None);
        let mut condition_false_seen = false;
        let outcome = support::poll_for(RECOVERY_TIMEOUT, Duration::from_secs(1), async || {
            let elapsed = started.elapsed();
            let events = release_events(&ns).await?;
            if released_at.is_none() && events.iter().any(|note| note.contains(GHOST)) {
                released_at = Some(elapsed);
            }
            let lease =
                leases.get_opt(CONTROLLER_MANAGER_LEASE.name).await.map_err(|error| error.to_string())?;
            let holder = lease
                .as_ref()
                .and_then(|lease| lease.spec.as_ref()?.holder_identity.clone())
                .unwrap_or_default();
            let uid = lease.as_ref().and_then(|lease| lease.uid()).unwrap_or_default();
            let pods = controller_manager_pods(&ns).await?;
            let own = pods.iter().any(|pod| pod == holder_pod(&holder));
            if led_at.is_none() && own {
                led_at = Some(elapsed);
            }
            let tenant = ns.tenant(TENANT).await?;
            let condition = find_condition(&tenant, "ControllerManagerReady");
            let is_true = condition.is_some_and(|condition| condition.status == "True");
            condition_false_seen |= !is_true;
            let message = condition_message(&tenant, "ControllerManagerReady");
            let state = format!(
                "released {released_at:?}, Lease held by {holder:?} (uid {uid}), pods {pods:?}, \
                 ControllerManagerReady: {message}; events {events:?}"
            );
            let shows_holder =
                message.contains(&format!("leader Lease fresh: held by {}", holder_pod(&holder)));
            match (released_at, own, is_true && shows_holder) {
                (Some(released), true, true) => Ok((released, holder, uid, message, elapsed)),
                _ => Err(state),
            }
        })
        .await;
        let (released, holder, uid, message, recovered) = outcome.unwrap_or_else(|state| {
            panic!("not recovered within {RECOVERY_TIMEOUT:?} of handing the Lease to {GHOST}: {state}")
        });
        eprintln!(
            "released after {:.1} s (Event LeaderLeaseReleased), own pod {} leading after {:.1} s, \
             ControllerManagerReady True with it after {:.1} s; the condition {} False meanwhile",
            released.as_secs_f64(),
            holder_pod(&holder),
            led_at.unwrap_or(recovered).as_secs_f64(),
            recovered.as_secs_f64(),
            if condition_false_seen { "was" } else { "was never" },
        );
        assert_ne!(
            uid, ghost_uid,
            "the ghost's Lease was deleted and the controller manager created a new one"
        );
        assert!(message.starts_with("1/1 replicas ready; probe: leader Lease fresh"), "{message}");
    })
    .await;
}
