//! Nestor: a cluster-in-cluster manager. A `TenantCluster` in a meta cluster
//! becomes a running Kubernetes control plane (etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler) with a generated PKI and emitted kubeconfigs.
//!
//! Map of the crate, in reconcile order:
//! - [`api`]: the CRD types and their admission rules.
//! - [`names`]: every derived object, Secret and DNS name.
//! - [`pki`]: certificate authorities and leaf certificates (pure, no Kubernetes types).
//! - [`kubeconfig`]: kubeconfig documents (pure).
//! - [`resources`]: one builder per owned object, rendered from `templates/`.
//! - [`desired`]: the pure build stage: observed Secrets + spec → every object to apply.
//! - [`reconcile`]: the controller and its pass: validate → probe → build → apply →
//!   heal and scale → status ([`reconcile::pass`] shows the whole pipeline).
//! - [`health`]: probes of the running control plane, debounced, and the decision to heal.
//! - [`etcd`]: everything that speaks to a tenant's etcd: its gateway client,
//!   membership repair, scaling.
//! - [`tenant_api`]: what the operator does inside a tenant cluster, with a client
//!   built from the tenant's admin credentials.
//!
//! Around the controller: [`error`] (the reconcile error type), [`transport`] (one-shot
//! mutual-TLS requests by IP, for probes and etcd), [`metrics`] and
//! [`http`] (`/metrics`, `/healthz`, `/readyz`), [`leader`] (leader election),
//! [`telemetry`] (logging) and [`cli`] (the `nestor` command line).

pub mod api;
pub mod backup;
pub mod cli;
pub mod desired;
pub mod duration;
pub mod error;
pub mod etcd;
pub mod health;
pub mod http;
pub mod kubeconfig;
pub mod leader;
pub mod metrics;
pub mod names;
pub mod pki;
pub mod reconcile;
pub mod resources;
pub mod telemetry;
pub mod tenant_api;
pub mod transport;
