//! Pieces every control-plane pod shares: command-line flags with `extraArgs`
//! overrides, default compute resources, the shape of a file projected from a Secret,
//! and the config hash that rolls pods when what they mount changes. It knows no
//! component: each builder lists its own mounts (its `mounted_files`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, ResourceRequirements, Secret};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde::Serialize;
use sha2::{Digest, Sha256};

/// Pod-template annotation holding a hash of the Secrets and ConfigMaps the pod mounts.
pub const CONFIG_HASH_ANNOTATION: &str = "nestor.dev/config-hash";

/// One file of a projected volume: `key` of Secret `secret`, mounted at `path`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct ProjectedFile {
    pub(crate) secret: String,
    pub(crate) key: &'static str,
    pub(crate) path: &'static str,
}

impl ProjectedFile {
    pub(crate) fn new(secret: String, key: &'static str, path: &'static str) -> Self {
        Self { secret, key, path }
    }
}

/// `--name=value` flags from Nestor's defaults, overridden by the spec's `extraArgs`
/// of the same name (with or without leading dashes). Sorted by name, so the pod
/// template does not change when nothing else does.
pub(crate) fn flags(
    defaults: BTreeMap<&'static str, String>,
    extra_args: &BTreeMap<String, String>,
) -> Vec<String> {
    let mut merged: BTreeMap<String, String> =
        defaults.into_iter().map(|(name, value)| (name.to_string(), value)).collect();
    for (name, value) in extra_args {
        merged.insert(name.trim_start_matches('-').to_string(), value.clone());
    }
    merged.into_iter().map(|(name, value)| format!("--{name}={value}")).collect()
}

/// The spec's resources, or small requests and no limits: the meta cluster runs many
/// tenants, and a CPU limit would throttle an apiserver in its busiest moments.
pub(crate) fn resources_or_default(resources: Option<&ResourceRequirements>) -> ResourceRequirements {
    resources.cloned().unwrap_or_else(|| ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_string(), Quantity("10m".to_string())),
            ("memory".to_string(), Quantity("64Mi".to_string())),
        ])),
        ..ResourceRequirements::default()
    })
}

/// A hex SHA-256 over the names and `data` of `secrets` and the names, `data` and
/// `binaryData` of `config_maps`, independent of their order. Metadata other than the
/// name is left out, so relabelling a Secret does not roll pods.
pub fn config_hash(secrets: &[&Secret], config_maps: &[&ConfigMap]) -> String {
    // (kind, object name, key) → bytes; the BTreeMap fixes the order.
    let mut entries: BTreeMap<(&str, &str, &str), &[u8]> = BTreeMap::new();
    for secret in secrets {
        let name = secret.metadata.name.as_deref().unwrap_or_default();
        for (key, value) in secret.data.iter().flatten() {
            entries.insert(("Secret", name, key), &value.0);
        }
    }
    for config_map in config_maps {
        let name = config_map.metadata.name.as_deref().unwrap_or_default();
        for (key, value) in config_map.data.iter().flatten() {
            entries.insert(("ConfigMap", name, key), value.as_bytes());
        }
        for (key, value) in config_map.binary_data.iter().flatten() {
            entries.insert(("ConfigMap", name, key), &value.0);
        }
    }
    let mut hasher = Sha256::new();
    for ((kind, name, key), value) in entries {
        // Length prefixes keep ("ab", "c") and ("a", "bc") apart.
        for part in [kind.as_bytes(), name.as_bytes(), key.as_bytes(), value] {
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part);
        }
    }
    hasher.finalize().iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn secret(name: &str, data: &[(&str, &str)]) -> Secret {
        Secret {
            metadata: ObjectMeta { name: Some(name.into()), ..ObjectMeta::default() },
            data: Some(
                data.iter().map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec()))).collect(),
            ),
            ..Secret::default()
        }
    }

    #[test]
    fn extra_args_override_defaults_and_keep_sorted_order() {
        let defaults = BTreeMap::from([("profiling", "false".to_string()), ("v", "2".to_string())]);
        let extra = BTreeMap::from([
            ("--profiling".to_string(), "true".to_string()),
            ("audit-log-maxage".to_string(), "7".to_string()),
        ]);
        assert_eq!(flags(defaults, &extra), ["--audit-log-maxage=7", "--profiling=true", "--v=2"]);
    }

    #[test]
    fn config_hash_ignores_order_and_sees_every_byte() {
        let a = secret("a", &[("tls.crt", "one"), ("tls.key", "two")]);
        let b = secret("b", &[("tls.crt", "three")]);
        let hash = config_hash(&[&a, &b], &[]);
        assert_eq!(hash, config_hash(&[&b, &a], &[]));
        assert_eq!(hash.len(), 64);
        let changed = secret("b", &[("tls.crt", "three!")]);
        assert_ne!(hash, config_hash(&[&a, &changed], &[]));
        // Moving bytes between name and key must not collide.
        let shifted = secret("bt", &[("ls.crt", "three")]);
        assert_ne!(hash, config_hash(&[&a, &shifted], &[]));
    }

    #[test]
    fn config_hash_covers_config_maps() {
        let mut config_map = ConfigMap {
            metadata: ObjectMeta { name: Some("c".into()), ..ObjectMeta::default() },
            data: Some(BTreeMap::from([("policy.yaml".to_string(), "one".to_string())])),
            ..ConfigMap::default()
        };
        let before = config_hash(&[], &[&config_map]);
        config_map.data = Some(BTreeMap::from([("policy.yaml".to_string(), "two".to_string())]));
        assert_ne!(before, config_hash(&[], &[&config_map]));
    }
}
