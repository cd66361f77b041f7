//! Nestor: a cluster-in-cluster manager. A `TenantCluster` in a meta cluster
//! becomes a running Kubernetes control plane (etcd, kube-apiserver,
//! kube-controller-manager) with a generated PKI and emitted kubeconfigs.
//!
//! Map of the crate, in reconcile order:
//! - [`api`]: the CRD types and their admission rules.
//! - [`names`]: every derived object, Secret and DNS name.
//! - [`pki`]: certificate authorities and leaf certificates (pure, no Kubernetes types).
//! - [`kubeconfig`]: kubeconfig documents (pure).
//! - [`resources`]: one builder per owned object, rendered from `templates/`.
//! - [`reconcile`]: the controller: validate → build → apply → status.

pub mod api;
pub mod desired;
pub mod kubeconfig;
pub mod names;
pub mod pki;
pub mod resources;
