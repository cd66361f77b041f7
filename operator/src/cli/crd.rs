//! `nestor crd`: prints the TenantCluster CustomResourceDefinition.

use anyhow::Context as _;
use kube::CustomResourceExt;

use crate::api::TenantCluster;

/// The CRD as a YAML document.
///
/// INTEGRATION POINT (lead): switch to `crate::api::crd_yaml()` once the api branch lands.
pub fn crd_yaml() -> anyhow::Result<String> {
    serde_yaml_ng::to_string(&TenantCluster::crd()).context("cannot render the CRD as YAML")
}

/// Prints [`crd_yaml`] to stdout.
pub fn run() -> anyhow::Result<()> {
    print!("{}", crd_yaml()?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crd_yaml_describes_the_tenantcluster_kind() {
        let yaml = crd_yaml().expect("renders");
        let crd: serde_yaml_ng::Value = serde_yaml_ng::from_str(&yaml).expect("valid YAML");
        assert_eq!(crd["kind"].as_str(), Some("CustomResourceDefinition"));
        assert_eq!(crd["metadata"]["name"].as_str(), Some("tenantclusters.nestor.dev"));
        assert_eq!(crd["spec"]["names"]["kind"].as_str(), Some("TenantCluster"));
    }
}
