//! Admission rules (OpenAPI and CEL) for TenantCluster.
