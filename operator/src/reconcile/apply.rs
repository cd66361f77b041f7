//! Writes to the meta cluster: server-side apply of owned objects and the
//! TenantCluster status, each skipped when it would change nothing.
//!
//! "Zero writes when nothing changed" is a property the operator must keep: a
//! needless apply costs an API round-trip per object per tenant per pass, and a
//! needless status write wakes every watcher. Two checks guard an apply:
//! - the `nestor.dev/applied-hash` annotation: the hash of the object Nestor last
//!   applied. It catches changes the field comparison cannot see, such as a field
//!   Nestor stopped setting (SSA removes it; a subset comparison would not notice).
//! - [`desired_fields_match`]: every field Nestor sets has the same value in the live
//!   object. It catches hand edits (drift), which leave the annotation untouched.

use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::compact::Compact;
use super::context::Context;
use super::observe::{OwnedCache, read};
use crate::api::{TenantCluster, TenantClusterStatus};
use crate::desired::{DesiredObject, DesiredState};
use crate::error::{Error, Result};
use crate::metrics::{Metrics, WriteVerb};
use crate::names::FIELD_MANAGER;
use crate::reconcile::conditions::status_equivalent;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::reflector::Store;

/// Annotation holding the SHA-256 of the object as Nestor last applied it.
pub const APPLIED_HASH_ANNOTATION: &str = "nestor.dev/applied-hash";

/// What [`apply`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// The live object already matched; no request was sent.
    Unchanged,
    /// The object was created or updated with a server-side apply.
    Applied,
    /// [`Existing::Only`] and the object does not exist: nothing was sent.
    Missing,
}

/// Whether [`apply`] may create an object that does not exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Existing {
    /// Create it (the usual server-side apply).
    OrCreate,
    /// Update it only: for objects whose content came from the cluster itself, which a
    /// stale snapshot must never bring back after someone deleted them.
    Only,
}

/// Server-side applies `desired` (forced, field manager [`FIELD_MANAGER`]) unless the
/// live object already carries the same applied hash and every field Nestor sets.
///
/// `desired` must have a name and a namespace. Its serialized form is hashed before the
/// annotation is added, so the hash depends only on what the builders produced.
pub async fn apply<K>(
    client: &Client,
    desired: &K,
    existing: Existing,
    metrics: &Metrics,
) -> Result<ApplyOutcome>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + Serialize
        + DeserializeOwned
        + Debug,
{
    let name = desired.meta().name.clone().ok_or(Error::MissingObjectKey("metadata.name"))?;
    let namespace = desired.meta().namespace.clone().ok_or(Error::MissingObjectKey("metadata.namespace"))?;
    let api: Api<K> = Api::namespaced(client.clone(), &namespace);
    // A GET is a read; reads are cheap next to a write that wakes every watcher of the kind.
    let live = api.get_opt(&name).await?;
    apply_over(client, desired, live.as_ref(), existing, metrics).await
}

/// [`apply`] against a live object the caller already read (`None`: it does not exist),
/// so a pass that listed a whole kind does not read each object again. At 1000 tenants
/// per-object reads are what the meta apiserver spends most of its time on.
pub async fn apply_over<K>(
    client: &Client,
    desired: &K,
    live: Option<&K>,
    existing: Existing,
    metrics: &Metrics,
) -> Result<ApplyOutcome>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + Serialize
        + DeserializeOwned
        + Debug,
{
    let kind = K::kind(&());
    let name = desired.meta().name.clone().ok_or(Error::MissingObjectKey("metadata.name"))?;
    let namespace = desired.meta().namespace.clone().ok_or(Error::MissingObjectKey("metadata.namespace"))?;
    let mut desired_json = serde_json::to_value(desired)
        .map_err(|source| Error::Serialization { kind: kind.to_string(), source })?;
    stamp_applied_hash(&mut desired_json);

    let api: Api<K> = Api::namespaced(client.clone(), &namespace);
    if let Some(live) = live {
        let live_json = serde_json::to_value(live)
            .map_err(|source| Error::Serialization { kind: kind.to_string(), source })?;
        // `desired_json` carries the applied-hash annotation, so this one comparison
        // checks both the hash and every field Nestor sets.
        if desired_fields_match(&desired_json, &live_json) {
            tracing::debug!(%kind, %name, "unchanged, apply skipped");
            return Ok(ApplyOutcome::Unchanged);
        }
    } else if existing == Existing::Only {
        tracing::debug!(%kind, %name, "missing, not re-created");
        return Ok(ApplyOutcome::Missing);
    }

    metrics.record_write(&kind, WriteVerb::Apply);
    api.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&desired_json)).await?;
    tracing::info!(%kind, %name, "applied");
    Ok(ApplyOutcome::Applied)
}

/// Adds `metadata.annotations["nestor.dev/applied-hash"]` to a serialized object and
/// returns the hash. The hash covers the object as given (without the annotation).
pub fn stamp_applied_hash(object: &mut Value) -> String {
    let hash = content_hash(object);
    if let Some(root) = object.as_object_mut() {
        let metadata = root.entry("metadata").or_insert_with(|| Value::Object(Map::new()));
        if let Some(metadata) = metadata.as_object_mut() {
            let annotations = metadata.entry("annotations").or_insert_with(|| Value::Object(Map::new()));
            if let Some(annotations) = annotations.as_object_mut() {
                annotations.insert(APPLIED_HASH_ANNOTATION.to_string(), Value::String(hash.clone()));
            }
        }
    }
    hash
}

/// Lowercase hex SHA-256 of the compact JSON serialization.
fn content_hash(value: &Value) -> String {
    // `Value`'s Display is compact JSON and cannot fail.
    let digest = Sha256::digest(value.to_string().as_bytes());
    digest.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// True when every field present in `desired` has an equal value in `live`.
///
/// Fields only `live` has (server defaults, status, managedFields, other managers'
/// labels) are ignored. Lists must have the same length and match element-wise, so
/// an argument added or removed by hand counts as drift. Two tolerances follow what
/// the API server does to what it stores, and without them an object would never
/// look current and would be re-applied on every pass:
/// - a field missing from `live` matches a zero value in `desired` (`false`, `0`, `""`,
///   `[]`, `{}`, `null`): Go omits empty fields when it serializes;
/// - strings that are the same resource quantity match (`"1000m"` and `"1"`): the API
///   server stores quantities in canonical form.
pub fn desired_fields_match(desired: &Value, live: &Value) -> bool {
    match (desired, live) {
        (Value::Object(desired), Value::Object(live)) => {
            desired.iter().all(|(key, desired_value)| match live.get(key) {
                Some(live_value) => desired_fields_match(desired_value, live_value),
                None => is_zero_value(desired_value),
            })
        }
        (Value::Array(desired), Value::Array(live)) => {
            desired.len() == live.len()
                && desired.iter().zip(live).all(|(desired, live)| desired_fields_match(desired, live))
        }
        (Value::String(desired), Value::String(live)) => desired == live || same_quantity(desired, live),
        (Value::Number(desired), Value::Number(live)) => {
            desired == live || matches!((desired.as_f64(), live.as_f64()), (Some(a), Some(b)) if a == b)
        }
        (Value::Array(desired), Value::Null) => desired.is_empty(),
        (Value::Object(desired), Value::Null) => desired.values().all(is_zero_value),
        (desired, live) => desired == live,
    }
}

/// Go's notion of an empty value, the ones `omitempty` drops.
fn is_zero_value(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Bool(flag) => !flag,
        Value::Number(number) => number.as_f64() == Some(0.0),
        Value::String(text) => text.is_empty(),
        Value::Array(items) => items.is_empty(),
        Value::Object(fields) => fields.values().all(is_zero_value),
    }
}

fn same_quantity(a: &str, b: &str) -> bool {
    matches!((quantity_in_nano_units(a), quantity_in_nano_units(b)), (Some(a), Some(b)) if a == b)
}

/// Parses a Kubernetes resource quantity (`"1.5Gi"`, `"250m"`, `"1e3"`) into exact
/// billionths of a unit. `None` when the text is not a quantity, or not a whole number
/// of billionths, or too large: the caller then falls back to string equality.
fn quantity_in_nano_units(text: &str) -> Option<i128> {
    let (negative, unsigned) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let number_end = unsigned.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(unsigned.len());
    let (number, suffix) = unsigned.split_at(number_end);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() {
        return None;
    }
    let digits = format!("{whole}{fraction}");
    if digits.len() > 30 {
        return None;
    }
    let mantissa: i128 = digits.parse().ok()?;
    let (binary_factor, decimal_exponent): (i128, i32) = match suffix {
        "Ki" => (1 << 10, 0),
        "Mi" => (1 << 20, 0),
        "Gi" => (1 << 30, 0),
        "Ti" => (1 << 40, 0),
        "Pi" => (1 << 50, 0),
        "Ei" => (1 << 60, 0),
        "n" => (1, -9),
        "u" => (1, -6),
        "m" => (1, -3),
        "" => (1, 0),
        "k" => (1, 3),
        "M" => (1, 6),
        "G" => (1, 9),
        "T" => (1, 12),
        "P" => (1, 15),
        "E" => (1, 18),
        exponent if exponent.starts_with(['e', 'E']) => {
            let exponent: i32 = exponent[1..].parse().ok()?;
            if !(-30..=30).contains(&exponent) {
                return None;
            }
            (1, exponent)
        }
        _ => return None,
    };
    // value = mantissa × binary_factor × 10^(decimal_exponent − fraction digits), in units;
    // ×10^9 for nano units.
    let scale = decimal_exponent - i32::try_from(fraction.len()).ok()? + 9;
    let scaled = mantissa.checked_mul(binary_factor)?;
    let nanos = if scale >= 0 {
        scaled.checked_mul(10_i128.checked_pow(u32::try_from(scale).ok()?)?)?
    } else {
        let divisor = 10_i128.checked_pow(u32::try_from(-scale).ok()?)?;
        if scaled % divisor != 0 {
            return None;
        }
        scaled / divisor
    };
    Some(if negative { -nanos } else { nanos })
}

/// Writes `desired` to the TenantCluster's status subresource with a JSON merge patch,
/// unless it differs from the current status only in condition transition times.
/// Returns whether a write happened.
pub async fn patch_status(
    client: &Client,
    tenant: &TenantCluster,
    desired: &TenantClusterStatus,
    metrics: &Metrics,
) -> Result<bool> {
    if status_equivalent(tenant.status.as_ref(), desired) {
        return Ok(false);
    }
    let namespace = tenant.namespace().ok_or(Error::MissingObjectKey("metadata.namespace"))?;
    let patch = status_merge_patch(tenant.status.as_ref(), desired)
        .map_err(|source| Error::Serialization { kind: "TenantClusterStatus".into(), source })?;
    let api: Api<TenantCluster> = Api::namespaced(client.clone(), &namespace);
    metrics.record_write("TenantCluster", WriteVerb::PatchStatus);
    api.patch_status(&tenant.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
    Ok(true)
}

/// The merge patch `{"status": ...}` that turns `current` into `desired`. Fields the
/// desired status leaves out are sent as `null`: a merge patch keeps whatever it does
/// not mention, so a cleared endpoint would otherwise linger.
pub fn status_merge_patch(
    current: Option<&TenantClusterStatus>,
    desired: &TenantClusterStatus,
) -> Result<Value, serde_json::Error> {
    let mut status = serde_json::to_value(desired)?;
    if let (Some(current), Some(status_fields)) = (current, status.as_object_mut())
        && let Value::Object(current_fields) = serde_json::to_value(current)?
    {
        for key in current_fields.keys() {
            status_fields.entry(key.clone()).or_insert(Value::Null);
        }
    }
    Ok(serde_json::json!({ "status": status }))
}

/// Server-side applies one desired object (skipped when the live object already matches).
/// Secrets are compared with `listed_secrets`, read at the start of the pass; the other
/// kinds are read one by one. A Secret of key material the pass loaded is only updated,
/// never re-created: see [`Error::KeyMaterialGone`].
pub(super) async fn apply_object(
    object: &DesiredObject,
    desired: &DesiredState,
    listed_secrets: &[Secret],
    cache: Option<&OwnedCache>,
    ctx: &Context,
) -> Result<ApplyOutcome> {
    let (client, metrics) = (&ctx.client, ctx.metrics.as_ref());
    let existing =
        if desired.loaded_key_secrets.contains(object.name()) { Existing::Only } else { Existing::OrCreate };
    let outcome = match object {
        DesiredObject::Secret(object) => {
            let live = listed_secrets.iter().find(|secret| secret.metadata.name == object.metadata.name);
            apply_over(client, object, live, existing, metrics).await
        }
        DesiredObject::ConfigMap(object) => {
            apply_read(client, cache.map(|c| &c.config_maps), object, existing, metrics).await
        }
        DesiredObject::Service(object) => {
            apply_read(client, cache.map(|c| &c.services), object, existing, metrics).await
        }
        DesiredObject::StatefulSet(object) => {
            apply_read(client, cache.map(|c| &c.statefulsets), object, existing, metrics).await
        }
        DesiredObject::Deployment(object) => {
            apply_read(client, cache.map(|c| &c.deployments), object, existing, metrics).await
        }
        DesiredObject::NetworkPolicy(object) => {
            apply_read(client, cache.map(|c| &c.network_policies), object, existing, metrics).await
        }
    }?;
    if outcome == ApplyOutcome::Missing {
        return Err(Error::KeyMaterialGone { secret: object.name().to_string() });
    }
    Ok(outcome)
}

/// [`apply::apply_over`] of `object` against its live copy: from `store` when the
/// controller caches the kind, else read by a GET (see [`read`]).
async fn apply_read<K>(
    client: &Client,
    store: Option<&Store<Compact<K>>>,
    object: &K,
    existing: Existing,
    metrics: &Metrics,
) -> Result<ApplyOutcome>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let namespace =
        object.meta().namespace.as_deref().ok_or(Error::MissingObjectKey("metadata.namespace"))?;
    let name = object.meta().name.as_deref().ok_or(Error::MissingObjectKey("metadata.name"))?;
    let live = read(client, store, namespace, name).await?;
    apply_over(client, object, live.as_ref(), existing, metrics).await
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::api::Phase;

    fn deployment_desired() -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": "team-a-apiserver",
                "namespace": "tenants",
                "labels": {"nestor.dev/tenant-cluster": "team-a"},
                "ownerReferences": [{"apiVersion": "nestor.dev/v1alpha1", "kind": "TenantCluster",
                                      "name": "team-a", "uid": "1234", "controller": true}]
            },
            "spec": {
                "replicas": 2,
                "template": {"spec": {
                    "hostNetwork": false,
                    "containers": [{
                        "name": "kube-apiserver",
                        "image": "registry.k8s.io/kube-apiserver:v1.34.2",
                        "args": ["--secure-port=6443", "--etcd-servers=https://team-a-etcd:2379"],
                        "resources": {"requests": {"cpu": "1000m", "memory": "512Mi"}}
                    }]
                }}
            }
        })
    }

    /// What the API server returns for `deployment_desired`: defaults added,
    /// quantities canonicalized, zero values omitted, bookkeeping fields present.
    fn deployment_live() -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": "team-a-apiserver",
                "namespace": "tenants",
                "uid": "abcd",
                "resourceVersion": "42",
                "generation": 3,
                "labels": {"nestor.dev/tenant-cluster": "team-a", "extra": "someone else's"},
                "annotations": {"deployment.kubernetes.io/revision": "1"},
                "managedFields": [{"manager": "nestor-operator", "operation": "Apply"}],
                "ownerReferences": [{"apiVersion": "nestor.dev/v1alpha1", "kind": "TenantCluster",
                                      "name": "team-a", "uid": "1234", "controller": true,
                                      "blockOwnerDeletion": true}]
            },
            "spec": {
                "replicas": 2,
                "revisionHistoryLimit": 10,
                "progressDeadlineSeconds": 600,
                "template": {"spec": {
                    "restartPolicy": "Always",
                    "containers": [{
                        "name": "kube-apiserver",
                        "image": "registry.k8s.io/kube-apiserver:v1.34.2",
                        "imagePullPolicy": "IfNotPresent",
                        "terminationMessagePath": "/dev/termination-log",
                        "args": ["--secure-port=6443", "--etcd-servers=https://team-a-etcd:2379"],
                        "resources": {"requests": {"cpu": "1", "memory": "512Mi"}}
                    }]
                }}
            },
            "status": {"replicas": 2, "readyReplicas": 2}
        })
    }

    #[test]
    fn live_object_with_server_defaults_matches_what_nestor_set() {
        assert!(desired_fields_match(&deployment_desired(), &deployment_live()));
    }

    #[test]
    fn hand_edited_replicas_are_drift() {
        let mut live = deployment_live();
        live["spec"]["replicas"] = json!(5);
        assert!(!desired_fields_match(&deployment_desired(), &live));
    }

    #[test]
    fn hand_edited_args_are_drift_whether_changed_added_or_removed() {
        let container = "/spec/template/spec/containers/0/args";
        for args in [
            json!(["--secure-port=7443", "--etcd-servers=https://team-a-etcd:2379"]),
            json!(["--secure-port=6443", "--etcd-servers=https://team-a-etcd:2379", "--v=9"]),
            json!(["--secure-port=6443"]),
        ] {
            let mut live = deployment_live();
            *live.pointer_mut(container).expect("args present") = args.clone();
            assert!(!desired_fields_match(&deployment_desired(), &live), "args {args} should be drift");
        }
    }

    #[test]
    fn field_missing_from_live_is_drift_unless_desired_is_a_zero_value() {
        let mut live = deployment_live();
        live["spec"]["template"]["spec"]["containers"][0].as_object_mut().expect("object").remove("image");
        assert!(!desired_fields_match(&deployment_desired(), &live));

        // hostNetwork: false is absent from live (omitempty) and still matches.
        assert!(deployment_live()["spec"]["template"]["spec"].get("hostNetwork").is_none());
        let mut desired = deployment_desired();
        desired["spec"]["template"]["spec"]["hostNetwork"] = json!(true);
        assert!(!desired_fields_match(&desired, &deployment_live()));

        for zero in [json!(null), json!(0), json!(""), json!([]), json!({}), json!({"a": {"b": false}})] {
            assert!(desired_fields_match(&json!({"x": zero}), &json!({})), "{zero} should match absence");
        }
        assert!(!desired_fields_match(&json!({"x": {"a": 1}}), &json!({})));
    }

    #[test]
    fn changed_label_value_or_owner_reference_is_drift() {
        let mut live = deployment_live();
        live["metadata"]["labels"]["nestor.dev/tenant-cluster"] = json!("team-b");
        assert!(!desired_fields_match(&deployment_desired(), &live));

        let mut live = deployment_live();
        live["metadata"]["ownerReferences"] = json!([]);
        assert!(!desired_fields_match(&deployment_desired(), &live));
    }

    #[test]
    fn lists_are_compared_in_order() {
        assert!(desired_fields_match(&json!({"l": [1, 2]}), &json!({"l": [1, 2]})));
        assert!(!desired_fields_match(&json!({"l": [1, 2]}), &json!({"l": [2, 1]})));
        // Element objects compare as subsets too.
        assert!(desired_fields_match(&json!({"l": [{"a": 1}]}), &json!({"l": [{"a": 1, "b": 2}]})));
        assert!(!desired_fields_match(&json!({"l": [{"a": 1}]}), &json!({"l": [{"a": 2, "b": 2}]})));
    }

    #[test]
    fn type_mismatches_are_drift() {
        assert!(!desired_fields_match(&json!({"port": 6443}), &json!({"port": "6443"})));
        assert!(!desired_fields_match(&json!({"a": {"b": 1}}), &json!({"a": [1]})));
        assert!(!desired_fields_match(&json!({"a": true}), &json!({"a": "true"})));
        assert!(desired_fields_match(&json!({"n": 1}), &json!({"n": 1.0})));
    }

    #[test]
    fn equal_quantities_match_in_any_spelling() {
        for (desired, live) in [
            ("1000m", "1"),
            ("0.5", "500m"),
            ("1Gi", "1024Mi"),
            ("1.5Gi", "1536Mi"),
            ("1e3", "1k"),
            ("2G", "2000M"),
            ("+1", "1"),
        ] {
            assert!(desired_fields_match(&json!(desired), &json!(live)), "{desired} == {live}");
        }
        for (desired, live) in [("1", "2"), ("1Gi", "1G"), ("100m", "1"), ("-1", "1"), ("1Gi", "1Gix")] {
            assert!(!desired_fields_match(&json!(desired), &json!(live)), "{desired} != {live}");
        }
        // Non-quantities never compare equal unless identical.
        assert!(!desired_fields_match(&json!("v1.34.2"), &json!("v1.34.20")));
        assert!(!desired_fields_match(&json!(""), &json!("0")));
    }

    #[test]
    fn quantity_parser_handles_the_api_grammar() {
        assert_eq!(quantity_in_nano_units("1"), Some(1_000_000_000));
        assert_eq!(quantity_in_nano_units("250m"), Some(250_000_000));
        assert_eq!(quantity_in_nano_units("1Ki"), Some(1024 * 1_000_000_000));
        assert_eq!(quantity_in_nano_units("5n"), Some(5));
        assert_eq!(quantity_in_nano_units("1E-3"), Some(1_000_000));
        assert_eq!(quantity_in_nano_units("-2k"), Some(-2_000_000_000_000));
        assert_eq!(quantity_in_nano_units("0.1n"), None, "below nano resolution");
        assert_eq!(quantity_in_nano_units("."), None);
        assert_eq!(quantity_in_nano_units("abc"), None);
        assert_eq!(quantity_in_nano_units("1Xi"), None);
        assert_eq!(quantity_in_nano_units(""), None);
    }

    #[test]
    fn stamped_hash_is_deterministic_and_tracks_content() {
        let mut first = deployment_desired();
        let mut second = deployment_desired();
        let hash = stamp_applied_hash(&mut first);
        assert_eq!(hash, stamp_applied_hash(&mut second));
        assert_eq!(hash.len(), 64);
        assert_eq!(first["metadata"]["annotations"][APPLIED_HASH_ANNOTATION], json!(hash));

        let mut changed = deployment_desired();
        changed["spec"]["replicas"] = json!(3);
        assert_ne!(stamp_applied_hash(&mut changed), hash);
    }

    #[test]
    fn stale_applied_hash_on_live_is_a_mismatch() {
        let mut desired = deployment_desired();
        stamp_applied_hash(&mut desired);
        let mut live = deployment_live();
        live["metadata"]["annotations"][APPLIED_HASH_ANNOTATION] =
            desired["metadata"]["annotations"][APPLIED_HASH_ANNOTATION].clone();
        assert!(desired_fields_match(&desired, &live));

        live["metadata"]["annotations"][APPLIED_HASH_ANNOTATION] = json!("0000");
        assert!(!desired_fields_match(&desired, &live), "an older builder output must be re-applied");
    }

    #[test]
    fn status_patch_nulls_fields_the_desired_status_drops() {
        let current = TenantClusterStatus {
            phase: Some(Phase::Ready),
            endpoint: Some("https://team-a.example:6443".into()),
            ..TenantClusterStatus::default()
        };
        let desired = TenantClusterStatus { phase: Some(Phase::Degraded), ..TenantClusterStatus::default() };
        let patch = status_merge_patch(Some(&current), &desired).expect("serializable");
        assert_eq!(patch, json!({"status": {"phase": "Degraded", "endpoint": null}}));

        let first = status_merge_patch(None, &desired).expect("serializable");
        assert_eq!(first, json!({"status": {"phase": "Degraded"}}));
    }
}
