//! `nestor crd`: prints the TenantCluster CustomResourceDefinition, the source of
//! `crds/nestor.dev_tenantclusters.yaml` (a unit test fails when that file is stale).

/// Prints [`crate::api::crd_yaml`] to stdout.
pub fn run() -> anyhow::Result<()> {
    print!("{}", crate::api::crd_yaml());
    Ok(())
}
