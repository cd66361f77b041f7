//! The Kubernetes Events a pass publishes on its TenantCluster: condition flips, phase
//! changes, upgrades, permanent errors, and (from [`super::heal`]) the healing and
//! scaling actions. An Event is a courtesy to humans: failing to send one never fails
//! a pass.

use kube::Resource;
use kube::runtime::events::{Event, EventType};

use super::apply::patch_status;
use super::conditions::{ConditionStatus, ConditionUpdate, types};
use super::context::Context;
use super::status::{StatusChange, compute_status};
use crate::api::{Phase, TenantCluster};
use crate::error::Error;
use crate::metrics::WriteVerb;

/// `reportingController` of the Events Nestor publishes.
pub const EVENT_REPORTER: &str = "nestor-operator";

/// Writes a permanent error into the Ready condition and, when that changed the
/// status, publishes a Warning Event. Failures here are logged, not propagated:
/// the original error is what the caller reports.
pub(super) async fn report_permanent_error(tenant: &TenantCluster, error: &Error, ctx: &Context) {
    let ready = ConditionUpdate::new(
        types::READY,
        ConditionStatus::False,
        error.condition_reason(),
        error.to_string(),
    );
    let (desired, _) = compute_status(tenant, &[], None, Some(ready), ctx.clock.now());
    match patch_status(&ctx.client, tenant, &desired, &ctx.metrics).await {
        Ok(true) => {
            let event = Event {
                type_: EventType::Warning,
                reason: error.condition_reason().into(),
                note: Some(truncate_note(error.to_string())),
                action: "Reconcile".into(),
                secondary: None,
            };
            publish(tenant, &event, ctx).await;
        }
        Ok(false) => {}
        Err(status_error) => tracing::warn!(error = %status_error, "cannot record permanent error in status"),
    }
}

/// Says once that `tenant` is left to the namespace-scoped operator `holder` (see
/// [`super::scope`]): an Event and a log line.
pub(super) async fn report_deferral(tenant: &TenantCluster, holder: &str, ctx: &Context) {
    let namespace = tenant.metadata.namespace.as_deref().unwrap_or_default();
    let note = format!(
        "reconciled by the operator that watches only namespace {namespace} ({holder}); this operator, \
         which watches every namespace, leaves it alone while that one runs"
    );
    tracing::info!(%namespace, name = ?tenant.metadata.name, %holder, "tenant left to a namespace-scoped operator");
    let event = Event {
        type_: EventType::Normal,
        reason: "ReconciledElsewhere".into(),
        note: Some(truncate_note(note)),
        action: "Defer".into(),
        secondary: None,
    };
    publish(tenant, &event, ctx).await;
}

/// Publishes one Event for each status change a pass wrote.
pub(super) async fn publish_changes(tenant: &TenantCluster, changes: &[StatusChange], ctx: &Context) {
    for change in changes {
        let event = match change {
            StatusChange::ConditionFlipped { type_, status, reason: _, message } => Event {
                type_: if *status == ConditionStatus::True { EventType::Normal } else { EventType::Warning },
                reason: if *status == ConditionStatus::True { type_.clone() } else { format!("Not{type_}") },
                note: Some(truncate_note(message.clone())),
                action: "Reconcile".into(),
                secondary: None,
            },
            StatusChange::UpgradeStarted { from, to } => Event {
                type_: EventType::Normal,
                reason: "Upgrading".into(),
                note: Some(format!(
                    "Upgrading {from} -> {to}: kube-apiserver first, kube-controller-manager and \
                     kube-scheduler once every apiserver replica runs {to}"
                )),
                action: "Upgrade".into(),
                secondary: None,
            },
            StatusChange::Upgraded { from, to } => Event {
                type_: EventType::Normal,
                reason: "Upgraded".into(),
                note: Some(format!(
                    "Upgraded {from} -> {to}: every kube-apiserver, kube-controller-manager and \
                     kube-scheduler replica runs {to}"
                )),
                action: "Upgrade".into(),
                secondary: None,
            },
            StatusChange::PhaseChanged { from, to } => Event {
                type_: if *to == Phase::Degraded { EventType::Warning } else { EventType::Normal },
                reason: format!("{to:?}"),
                note: Some(match from {
                    Some(from) => format!("phase changed from {from:?} to {to:?}"),
                    None => format!("phase is {to:?}"),
                }),
                action: "Reconcile".into(),
                secondary: None,
            },
        };
        publish(tenant, &event, ctx).await;
    }
}

/// Publishes `event` on `tenant`, counted as a write.
pub(super) async fn publish(tenant: &TenantCluster, event: &Event, ctx: &Context) {
    ctx.metrics.record_write("Event", WriteVerb::PublishEvent);
    if let Err(error) = ctx.recorder.publish(event, &tenant.object_ref(&())).await {
        // An Event is a courtesy to humans; failing to send one must not fail the pass.
        tracing::warn!(%error, reason = %event.reason, "cannot publish event");
    }
}

/// Events notes are limited to 1 kB.
pub(super) fn truncate_note(mut note: String) -> String {
    const MAX_NOTE_BYTES: usize = 1024;
    if note.len() > MAX_NOTE_BYTES {
        let mut end = MAX_NOTE_BYTES - 3;
        while !note.is_char_boundary(end) {
            end -= 1;
        }
        note.truncate(end);
        note.push_str("...");
    }
    note
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_event_notes_are_truncated_on_a_char_boundary() {
        let note = truncate_note("é".repeat(600));
        assert!(note.len() <= 1024, "{}", note.len());
        assert!(note.ends_with("..."));
        assert_eq!(truncate_note("short".into()), "short");
    }
}
