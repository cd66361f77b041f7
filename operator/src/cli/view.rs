//! What the client verbs read out of a TenantCluster's status (pure): readiness
//! counts for `get`, the ready test and "what is missing" for `wait`, and the
//! snapshot whose changes `wait` prints as progress lines.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use crate::api::{Phase, TenantCluster};
use crate::reconcile::conditions::types;

/// `tenantcluster.nestor.dev/<name>`, how kubectl names an object in its messages.
pub fn resource_ref(name: &str) -> String {
    format!("tenantcluster.nestor.dev/{name}")
}

/// The phase as text, empty before the operator first wrote status.
pub fn phase_text(phase: Option<Phase>) -> String {
    phase.map(|phase| format!("{phase:?}")).unwrap_or_default()
}

fn conditions(tenant: &TenantCluster) -> &[Condition] {
    tenant.status.as_ref().map(|status| status.conditions.as_slice()).unwrap_or_default()
}

/// How many of the six component conditions are True: the READY column's `x/6`.
pub fn ready_components(tenant: &TenantCluster) -> usize {
    let conditions = conditions(tenant);
    types::COMPONENTS
        .iter()
        .filter(|type_| conditions.iter().any(|c| c.type_ == **type_ && c.status == "True"))
        .count()
}

/// Ready: the summary condition is True and describes the current spec, so a
/// `wait` right after an upgrade does not return on the previous generation's status.
pub fn is_ready(tenant: &TenantCluster) -> bool {
    let Some(status) = &tenant.status else { return false };
    let Some(ready) = status.conditions.iter().find(|c| c.type_ == types::READY) else { return false };
    let observed = ready.observed_generation.or(status.observed_generation);
    let current = match (observed, tenant.metadata.generation) {
        (Some(observed), Some(generation)) => observed >= generation,
        _ => true,
    };
    ready.status == "True" && current
}

/// Why the tenant is not Ready, for a timeout message: the phase and each component
/// condition that is not True with its message (or a note that status is stale).
pub fn not_ready_summary(tenant: &TenantCluster) -> String {
    let Some(status) = &tenant.status else { return "no status yet: is the operator running?".into() };
    let mut missing: Vec<String> = Vec::new();
    for type_ in types::COMPONENTS {
        match status.conditions.iter().find(|c| c.type_ == type_) {
            Some(condition) if condition.status == "True" => {}
            Some(condition) if condition.message.is_empty() => {
                missing.push(format!("{type_}: {}", condition.reason))
            }
            Some(condition) => missing.push(format!("{type_}: {}", condition.message)),
            None => missing.push(format!("{type_}: not reported")),
        }
    }
    if missing.is_empty() && !is_ready(tenant) {
        missing.push("status not yet updated for the current spec".into());
    }
    let phase = phase_text(status.phase);
    let phase = if phase.is_empty() { "none".to_string() } else { phase };
    format!("phase {phase}; not ready: {}", missing.join("; "))
}

/// The facts `wait` reports when they change: `Phase` and every condition type, each
/// with a short value (`True`, or `False (Reason)`).
pub fn progress_snapshot(tenant: &TenantCluster) -> BTreeMap<String, String> {
    let mut snapshot = BTreeMap::new();
    if let Some(phase) = tenant.status.as_ref().and_then(|status| status.phase) {
        snapshot.insert("Phase".to_string(), phase_text(Some(phase)));
    }
    if tenant.metadata.deletion_timestamp.is_some() {
        snapshot.insert("Deleting".to_string(), "True".to_string());
    }
    for condition in conditions(tenant) {
        let value = if condition.status == "True" || condition.reason.is_empty() {
            condition.status.clone()
        } else {
            format!("{} ({})", condition.status, condition.reason)
        };
        snapshot.insert(condition.type_.clone(), value);
    }
    snapshot
}

/// Lines `key=value` for entries of `current` that are new or differ from `previous`,
/// in a stable order: phase first, then condition types in reporting order.
pub fn progress_changes(
    previous: &BTreeMap<String, String>,
    current: &BTreeMap<String, String>,
) -> Vec<String> {
    let order = |key: &str| match key {
        "Deleting" => 0,
        "Phase" => 1,
        _ => types::COMPONENTS.iter().position(|type_| *type_ == key).map_or(8, |index| index + 2),
    };
    let mut changed: Vec<(&String, &String)> =
        current.iter().filter(|(key, value)| previous.get(*key) != Some(*value)).collect();
    changed.sort_by_key(|(key, _)| order(key));
    changed.into_iter().map(|(key, value)| format!("{key}={value}")).collect()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;
    use crate::api::{TenantClusterSpec, TenantClusterStatus};

    fn condition(type_: &str, status: &str, reason: &str, message: &str) -> Condition {
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message: message.into(),
            observed_generation: Some(1),
            last_transition_time: Time("2025-06-01T12:00:00Z".parse().unwrap()),
        }
    }

    fn tenant(conditions: Vec<Condition>, phase: Option<Phase>) -> TenantCluster {
        let spec: TenantClusterSpec =
            serde_json::from_value(serde_json::json!({"version": "1.34.2"})).unwrap();
        let mut tenant = TenantCluster::new("team-a", spec);
        tenant.metadata.generation = Some(1);
        tenant.status = Some(TenantClusterStatus { phase, conditions, ..TenantClusterStatus::default() });
        tenant
    }

    fn all_ready() -> Vec<Condition> {
        types::COMPONENTS
            .iter()
            .chain([&types::READY])
            .map(|type_| condition(type_, "True", "Ready", ""))
            .collect()
    }

    #[test]
    fn ready_counts_component_conditions_only() {
        let mut conditions = all_ready();
        conditions[1] = condition(types::ETCD_READY, "False", "Progressing", "0/1 members ready");
        let tenant = tenant(conditions, Some(Phase::Provisioning));
        assert_eq!(ready_components(&tenant), 5);
        assert_eq!(ready_components(&super::tests::tenant(Vec::new(), None)), 0);
    }

    #[test]
    fn ready_needs_the_summary_condition_for_the_current_generation() {
        let mut ready = tenant(all_ready(), Some(Phase::Ready));
        assert!(is_ready(&ready));
        ready.metadata.generation = Some(2);
        assert!(!is_ready(&ready), "Ready of generation 1 says nothing about generation 2");
        assert!(not_ready_summary(&ready).contains("status not yet updated"));
        assert!(!is_ready(&tenant(Vec::new(), None)));
    }

    #[test]
    fn not_ready_summary_names_the_phase_and_each_missing_component() {
        let mut conditions = all_ready();
        conditions[2] = condition(types::API_SERVER_READY, "False", "Progressing", "0/1 replicas available");
        conditions[3] = condition(types::CONTROLLER_MANAGER_READY, "False", "NotFound", "");
        let tenant = tenant(conditions, Some(Phase::Provisioning));
        assert_eq!(
            not_ready_summary(&tenant),
            "phase Provisioning; not ready: APIServerReady: 0/1 replicas available; \
             ControllerManagerReady: NotFound"
        );
    }

    #[test]
    fn progress_lists_what_changed_phase_first() {
        let before = progress_snapshot(&tenant(
            vec![condition(types::ETCD_READY, "False", "Progressing", "")],
            Some(Phase::Provisioning),
        ));
        let after = progress_snapshot(&tenant(
            vec![
                condition(types::READY, "False", "ComponentsNotReady", ""),
                condition(types::PKI_READY, "True", "Ready", ""),
                condition(types::ETCD_READY, "True", "Ready", ""),
            ],
            Some(Phase::Ready),
        ));
        assert_eq!(
            progress_changes(&before, &after),
            ["Phase=Ready", "PKIReady=True", "EtcdReady=True", "Ready=False (ComponentsNotReady)"]
        );
        assert!(progress_changes(&after, &after).is_empty());
        assert_eq!(
            progress_changes(&BTreeMap::new(), &before),
            ["Phase=Provisioning", "EtcdReady=False (Progressing)"]
        );
    }
}
