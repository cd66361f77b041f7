//! The form in which the watch-fed caches keep owned objects: metadata parsed, the
//! rest as compact JSON, parsed again by each read.
//!
//! Why not the k8s-openapi types themselves: a parsed object reserves room for every
//! optional field of every nested struct, set or not (a pod template's containers,
//! probes and volumes are mostly such room). One tenant's cached workloads, Services,
//! ConfigMaps and NetworkPolicy took about 100 KB that way, four times their JSON,
//! and a heap profile at scale found the caches holding two thirds of the operator's
//! heap. A pass reads each cached object once or twice, and parsing a few KiB of JSON
//! costs microseconds next to the requests the pass makes.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use kube::Resource;
use kube::api::ObjectMeta;
use serde::Deserialize;
use serde::de::{DeserializeOwned, Deserializer, Error as _};
use serde_json::{Map, Value};

/// An object of kind `K` as a cache keeps it. It is a [`Resource`] of `K`'s kind, so
/// a watch of `Compact<K>` lists and watches `K`, and a store of it is keyed like a
/// store of `K`; [`Compact::decode`] gives the `K` back.
pub struct Compact<K> {
    metadata: ObjectMeta,
    /// Every top-level field but `metadata`, as compact JSON.
    rest: Box<str>,
    kind: PhantomData<fn() -> K>,
}

impl<K: Resource + DeserializeOwned> Compact<K> {
    /// The object, parsed.
    pub fn decode(&self) -> serde_json::Result<K> {
        let mut object: K = serde_json::from_str(&self.rest)?;
        *object.meta_mut() = self.metadata.clone();
        Ok(object)
    }
}

impl<'de, K> Deserialize<'de> for Compact<K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut fields = Map::<String, Value>::deserialize(deserializer)?;
        let metadata = match fields.remove("metadata") {
            Some(metadata) => serde_json::from_value(metadata).map_err(D::Error::custom)?,
            None => ObjectMeta::default(),
        };
        let rest = serde_json::to_string(&fields).map_err(D::Error::custom)?.into_boxed_str();
        Ok(Self { metadata, rest, kind: PhantomData })
    }
}

impl<K: Resource<DynamicType = ()>> Resource for Compact<K> {
    type DynamicType = ();
    type Scope = K::Scope;

    fn kind(dynamic_type: &()) -> Cow<'_, str> {
        K::kind(dynamic_type)
    }

    fn group(dynamic_type: &()) -> Cow<'_, str> {
        K::group(dynamic_type)
    }

    fn version(dynamic_type: &()) -> Cow<'_, str> {
        K::version(dynamic_type)
    }

    fn plural(dynamic_type: &()) -> Cow<'_, str> {
        K::plural(dynamic_type)
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

// By hand: derived, both would require `K: Clone` and `K: Debug`, which no `Compact`
// needs (it holds no `K`).
impl<K> Clone for Compact<K> {
    fn clone(&self) -> Self {
        Self { metadata: self.metadata.clone(), rest: self.rest.clone(), kind: PhantomData }
    }
}

impl<K: Resource<DynamicType = ()>> fmt::Debug for Compact<K> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Compact")
            .field("kind", &K::kind(&()))
            .field("namespace", &self.metadata.namespace)
            .field("name", &self.metadata.name)
            .field("bytes", &self.rest.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::Deployment;
    use kube::ResourceExt;
    use kube::runtime::reflector::ObjectRef;

    use super::*;

    fn deployment() -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": "team-a-apiserver", "namespace": "tenants", "uid": "u1", "generation": 3,
                "labels": {"nestor.dev/tenant-cluster": "team-a"},
                "annotations": {"nestor.dev/applied-hash": "abc"},
                "ownerReferences": [{
                    "apiVersion": "nestor.dev/v1alpha1", "kind": "TenantCluster", "name": "team-a",
                    "uid": "t1", "controller": true,
                }],
                "managedFields": [{"manager": "nestor", "operation": "Apply"}],
            },
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "x"}},
                "template": {
                    "metadata": {"labels": {"app": "x"}},
                    "spec": {"containers": [{"name": "kube-apiserver", "image": "nestor.local/kube-apiserver:v1.34.2"}]},
                },
            },
            "status": {"availableReplicas": 2, "updatedReplicas": 2, "observedGeneration": 3},
        })
    }

    #[test]
    fn a_compact_object_decodes_to_the_object_it_was_read_from() {
        let typed: Deployment = serde_json::from_value(deployment()).expect("deployment");
        let compact: Compact<Deployment> = serde_json::from_value(deployment()).expect("compact");
        assert_eq!(compact.decode().expect("decodes"), typed);
    }

    #[test]
    fn a_compact_object_is_a_resource_of_its_kind() {
        let compact: Compact<Deployment> = serde_json::from_value(deployment()).expect("compact");
        assert_eq!(
            Compact::<Deployment>::url_path(&(), Some("tenants")),
            Deployment::url_path(&(), Some("tenants"))
        );
        assert_eq!(Compact::<Deployment>::api_version(&()), "apps/v1");
        assert_eq!(compact.owner_references()[0].name, "team-a", "what maps a change to its owner");
        assert_eq!(ObjectRef::from_obj(&compact), ObjectRef::new("team-a-apiserver").within("tenants"));
        let mut pruned = compact.clone();
        pruned.managed_fields_mut().clear();
        assert!(pruned.decode().expect("decodes").metadata.managed_fields.unwrap_or_default().is_empty());
    }

    #[test]
    fn a_compact_object_that_is_not_its_kind_fails_to_decode() {
        let mut config_map = deployment();
        config_map["kind"] = "ConfigMap".into();
        config_map["apiVersion"] = "v1".into();
        let compact: Compact<Deployment> = serde_json::from_value(config_map).expect("compact");
        assert!(compact.decode().is_err());
    }
}
