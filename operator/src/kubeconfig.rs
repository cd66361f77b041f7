//! Kubeconfig documents for tenant clients (pure).
