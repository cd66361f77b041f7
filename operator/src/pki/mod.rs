//! Tenant PKI: certificate authorities and leaf certificates, pure (no Kubernetes types).
