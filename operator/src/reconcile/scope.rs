//! Which operator reconciles a tenant when the scopes of two overlap.
//!
//! Replicas of one operator agree through leader election ([`crate::leader`]). Two
//! *different* operators can still see the same tenant: one that watches every
//! namespace and one that watches only the tenant's namespace (a team's own
//! operator, or a test's). Both would reconcile it, and each rewrites what the other
//! wrote wherever their settings differ: measured, 1149 NetworkPolicy applies in four
//! minutes between the demo's operator and a test's.
//!
//! The rule: the narrower scope wins. An operator that watches one namespace announces
//! it with a Lease in that namespace ([`SCOPE_LEASE_NAME`]), renewed while it runs
//! ([`hold_scope_lease`]). An operator that watches every namespace keeps those Leases
//! in a watch-fed store and leaves alone every tenant of a namespace whose Lease is
//! fresh ([`claimed_by`]): no pass, no probe, no write. It says so once per tenant (an
//! Event, and the `nestor_tenants_deferred` gauge). When the narrower operator stops,
//! its Lease goes stale within [`SCOPE_LEASE_DURATION`] and the wide operator takes the
//! tenant back on its next look.
//!
//! Why a Lease per scope and not a claim on each tenant: a claim must be renewed to
//! prove its holder alive, which costs a write per tenant per period; one Lease per
//! namespace-scoped operator costs the same whatever the number of tenants, and a
//! steady tenant still costs zero writes.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client};

use crate::names::FIELD_MANAGER;

/// Name of the Lease by which a namespace-scoped operator announces its namespace.
pub const SCOPE_LEASE_NAME: &str = "nestor-operator-scope";
/// The label the scope Leases carry, which the wide operator's watch selects.
pub const SCOPE_LEASE_SELECTOR: &str = "app.kubernetes.io/component=operator-scope";
/// How long a scope Lease stays fresh without renewal: how soon a wide operator takes
/// back the tenants of a namespace-scoped operator that stopped without a word.
pub const SCOPE_LEASE_DURATION: Duration = Duration::from_secs(20);
/// How often the namespace-scoped operator renews its Lease: a third of its duration,
/// so two missed renewals still leave it fresh.
pub const SCOPE_LEASE_RENEWAL: Duration = Duration::from_secs(6);

/// The holder of a fresh scope Lease in `namespace`, from `leases` (pure but for the
/// store read): `None` when no operator watches only that namespace, or when its Lease
/// was not renewed within its duration (it stopped).
pub fn claimed_by(leases: &Store<Lease>, namespace: &str, now: jiff::Timestamp) -> Option<String> {
    let lease = leases.get(&ObjectRef::new(SCOPE_LEASE_NAME).within(namespace))?;
    fresh_holder(&lease, now)
}

/// The holder of `lease` when it was renewed within its duration (pure).
fn fresh_holder(lease: &Lease, now: jiff::Timestamp) -> Option<String> {
    let spec = lease.spec.as_ref()?;
    let renewed = spec.renew_time.as_ref()?.0;
    let duration = i64::from(spec.lease_duration_seconds?);
    let fresh = now.duration_since(renewed) < jiff::SignedDuration::from_secs(duration);
    fresh.then(|| spec.holder_identity.clone().unwrap_or_else(|| "an unnamed operator".into()))
}

/// The scope Lease of `identity` in `namespace`, renewed at `now` (pure).
pub fn scope_lease(namespace: &str, identity: &str, now: jiff::Timestamp) -> Lease {
    let (label, value) = SCOPE_LEASE_SELECTOR.split_once('=').unwrap_or_default();
    Lease {
        metadata: ObjectMeta {
            name: Some(SCOPE_LEASE_NAME.into()),
            namespace: Some(namespace.into()),
            labels: Some(
                [
                    (label.to_string(), value.to_string()),
                    ("app.kubernetes.io/managed-by".to_string(), "nestor".to_string()),
                ]
                .into(),
            ),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(identity.into()),
            lease_duration_seconds: Some(SCOPE_LEASE_DURATION.as_secs() as i32),
            renew_time: Some(MicroTime(now)),
            ..LeaseSpec::default()
        }),
    }
}

/// Renews the scope Lease of `namespace` every [`SCOPE_LEASE_RENEWAL`] until the task
/// is dropped. A failed renewal is logged and tried again at the next tick: the wide
/// operator takes the namespace's tenants back only after the whole duration.
pub async fn hold_scope_lease(client: Client, namespace: String, identity: String) {
    let leases: Api<Lease> = Api::namespaced(client, &namespace);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut ticker = tokio::time::interval(SCOPE_LEASE_RENEWAL);
    let mut failing = false;
    loop {
        ticker.tick().await;
        let lease = scope_lease(&namespace, &identity, jiff::Timestamp::now());
        match leases.patch(SCOPE_LEASE_NAME, &params, &Patch::Apply(&lease)).await {
            Ok(_) if failing => {
                failing = false;
                tracing::info!(%namespace, "renewed the scope Lease again");
            }
            Ok(_) => {}
            Err(error) => {
                if !failing {
                    tracing::warn!(%namespace, %error, "cannot renew the scope Lease; an operator watching every namespace takes this namespace's tenants once it is stale");
                }
                failing = true;
            }
        }
    }
}

/// Removes the scope Lease on a clean stop, so a wide operator takes the namespace's
/// tenants back at once rather than after [`SCOPE_LEASE_DURATION`].
pub async fn release_scope_lease(client: Client, namespace: &str) {
    let leases: Api<Lease> = Api::namespaced(client, namespace);
    if let Err(error) = leases.delete(SCOPE_LEASE_NAME, &Default::default()).await {
        tracing::debug!(%namespace, %error, "cannot delete the scope Lease");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(second: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_750_000_000 + second).expect("valid")
    }

    #[test]
    fn a_lease_is_held_for_its_duration_after_each_renewal() {
        let lease = scope_lease("team-ns", "nestor-test-1", at(0));
        assert_eq!(fresh_holder(&lease, at(0)).as_deref(), Some("nestor-test-1"));
        assert_eq!(fresh_holder(&lease, at(19)).as_deref(), Some("nestor-test-1"));
        assert_eq!(fresh_holder(&lease, at(20)), None, "stale once the duration passed");
        let mut without_renewal = lease.clone();
        without_renewal.spec.as_mut().expect("spec").renew_time = None;
        assert_eq!(fresh_holder(&without_renewal, at(0)), None);
    }

    #[test]
    fn the_lease_carries_the_label_the_wide_operator_selects() {
        let lease = scope_lease("team-ns", "nestor-test-1", at(0));
        let (key, value) = SCOPE_LEASE_SELECTOR.split_once('=').expect("key=value");
        assert_eq!(
            lease.metadata.labels.as_ref().and_then(|labels| labels.get(key)).map(String::as_str),
            Some(value)
        );
        assert_eq!(lease.metadata.namespace.as_deref(), Some("team-ns"));
        assert!(SCOPE_LEASE_RENEWAL * 3 <= SCOPE_LEASE_DURATION, "two missed renewals keep it fresh");
    }
}
