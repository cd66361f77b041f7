//! The TenantCluster controller, one room per stage.
//!
//! A pass runs the whole pipeline for one TenantCluster; [`pass`] shows it on one screen:
//! validate → observe and probe → build → apply → heal and scale → status. The probe
//! comes before the build because etcd's member list decides how many members the build
//! renders while `spec.etcd.replicas` is being reached (see [`crate::etcd::scaling`]).
//! Validation and building are pure (no client), applying and status writing are
//! skipped when they would change nothing, so a steady tenant costs reads only. Errors
//! split into permanent (reported on the object, retried slowly) and transient (retried
//! with per-object exponential backoff); see [`crate::error`].
//!
//! Where each part lives:
//! - [`controller`]: the run: watches, the owned-object caches, what brings a pass, the
//!   queue of passes waiting for their turn, the finalizer;
//! - [`context`]: what every pass shares ([`Context`]);
//! - [`pass`]: the pipeline for a live tenant;
//! - [`observe`], [`apply`], [`status`] and [`conditions`]: its stages that are more than
//!   a screen (the pure build stage is [`crate::desired`]);
//! - [`heal`]: the actions a pass takes on what the probes found (restart a wedged
//!   apiserver pod, replace an etcd member, take an etcd scaling step, keep etcd inside
//!   its space quota: [`crate::etcd::maintenance`]);
//! - [`inside`]: the step inside the tenant cluster (what joining nodes read), through
//!   [`crate::tenant_api`];
//! - [`cleanup`]: what runs when a TenantCluster is deleted;
//! - [`events`]: the Events a pass publishes;
//! - [`scope`]: which operator reconciles a tenant when two operators' scopes overlap;
//! - [`monitor`]: the health monitor that probes between passes and asks for one;
//! - [`backoff`] and [`compact`]: retry delays and the compact form of cached objects.

pub mod apply;
pub mod backoff;
pub mod cleanup;
pub mod compact;
pub mod conditions;
pub mod context;
pub mod controller;
pub mod events;
pub mod heal;
pub mod inside;
pub mod monitor;
pub mod observe;
pub mod pass;
pub mod scope;
pub mod status;

pub use context::{Context, DEFAULT_CONCURRENCY};
pub use controller::{OWNED_OBJECTS_SELECTOR, run};
pub use events::EVENT_REPORTER;
pub use pass::validate;

use crate::api::TenantCluster;
use crate::error::{Error, Result};
use crate::names::TenantNames;
use kube::{Resource, ResourceExt};

/// The names derived from `tenant`; fails only for an object without name or namespace.
pub(crate) fn names_of(tenant: &TenantCluster) -> Result<TenantNames> {
    let name = tenant.meta().name.clone().ok_or(Error::MissingObjectKey("metadata.name"))?;
    let namespace = tenant.namespace().ok_or(Error::MissingObjectKey("metadata.namespace"))?;
    Ok(TenantNames::new(name, namespace))
}

#[cfg(test)]
pub(crate) mod test_support {
    use kube::api::ObjectMeta;

    use crate::api::{TenantCluster, TenantClusterSpec};

    /// A TenantCluster `tenants/<name>` with the smallest valid spec.
    pub fn tenant(name: &str) -> TenantCluster {
        let spec: TenantClusterSpec =
            serde_json::from_value(serde_json::json!({"version": "1.34.2"})).expect("spec");
        TenantCluster {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("tenants".into()),
                ..ObjectMeta::default()
            },
            spec,
            status: None,
        }
    }
}
