//! Secrets holding a tenant's PKI material, kubeconfigs and encryption configuration,
//! built from PEM and YAML text the PKI and kubeconfig modules produce.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use k8s_openapi::api::core::v1::Secret;
use serde::Serialize;

use super::render::{SECRET, render};
use super::{MetadataContext, ResourceError, TenantOwner};
use crate::names::Component;

/// Certificate key of a `kubernetes.io/tls` Secret.
pub const TLS_CERT_KEY: &str = "tls.crt";
/// Private key of a `kubernetes.io/tls` Secret.
pub const TLS_PRIVATE_KEY_KEY: &str = "tls.key";
/// Certificate of the CA that signed `tls.crt` (the cert-manager convention).
pub const CA_CERT_KEY: &str = "ca.crt";
/// Service-account signing key (PEM private key).
pub const SERVICE_ACCOUNT_PRIVATE_KEY_KEY: &str = "sa.key";
/// Service-account verification key (PEM public key).
pub const SERVICE_ACCOUNT_PUBLIC_KEY_KEY: &str = "sa.pub";
/// Kubeconfig key, the Cluster API convention.
pub const KUBECONFIG_KEY: &str = "value";
/// Encryption configuration key, also the file name the apiserver reads.
pub const ENCRYPTION_CONFIG_KEY: &str = "encryption-config.yaml";
/// Label on kubeconfig Secrets naming the cluster, as Cluster API tooling expects.
pub const CLUSTER_NAME_LABEL: &str = "cluster.x-k8s.io/cluster-name";

const TLS_TYPE: &str = "kubernetes.io/tls";
const OPAQUE_TYPE: &str = "Opaque";

#[derive(Serialize)]
struct SecretContext {
    metadata: MetadataContext,
    #[serde(rename = "type")]
    type_: &'static str,
    immutable: bool,
    /// Key → base64 of the value.
    data: BTreeMap<&'static str, String>,
}

fn secret(
    owner: &TenantOwner,
    name: &str,
    component: Component,
    type_: &'static str,
    immutable: bool,
    data: &[(&'static str, &str)],
) -> Result<Secret, ResourceError> {
    let context = SecretContext {
        metadata: owner.metadata(name.to_string(), component),
        type_,
        immutable,
        data: data.iter().map(|(key, value)| (*key, BASE64.encode(value))).collect(),
    };
    render(SECRET, &context)
}

/// `kubernetes.io/tls` Secret with a leaf certificate, its key and the CA that signed it.
pub fn tls_secret(
    owner: &TenantOwner,
    secret_name: &str,
    component: Component,
    cert_pem: &str,
    key_pem: &str,
    ca_cert_pem: &str,
) -> Result<Secret, ResourceError> {
    secret(
        owner,
        secret_name,
        component,
        TLS_TYPE,
        false,
        &[(TLS_CERT_KEY, cert_pem), (TLS_PRIVATE_KEY_KEY, key_pem), (CA_CERT_KEY, ca_cert_pem)],
    )
}

/// Immutable `kubernetes.io/tls` Secret with a CA certificate and key. Immutable
/// because a CA that changes under running clients breaks them all at once; rotating
/// it means a new Secret (or deleting and re-creating this one).
pub fn ca_secret(
    owner: &TenantOwner,
    secret_name: &str,
    component: Component,
    cert_pem: &str,
    key_pem: &str,
) -> Result<Secret, ResourceError> {
    secret(
        owner,
        secret_name,
        component,
        TLS_TYPE,
        true,
        &[(TLS_CERT_KEY, cert_pem), (TLS_PRIVATE_KEY_KEY, key_pem)],
    )
}

/// Secret `names.service_account_key_secret()` with the service-account key pair
/// (`sa.key`, `sa.pub`).
pub fn service_account_key_secret(
    owner: &TenantOwner,
    private_key_pem: &str,
    public_key_pem: &str,
) -> Result<Secret, ResourceError> {
    secret(
        owner,
        &owner.names.service_account_key_secret(),
        Component::Pki,
        OPAQUE_TYPE,
        false,
        &[
            (SERVICE_ACCOUNT_PRIVATE_KEY_KEY, private_key_pem),
            (SERVICE_ACCOUNT_PUBLIC_KEY_KEY, public_key_pem),
        ],
    )
}

/// Secret with a kubeconfig under `value`, labelled with [`CLUSTER_NAME_LABEL`].
pub fn kubeconfig_secret(
    owner: &TenantOwner,
    secret_name: &str,
    component: Component,
    kubeconfig_yaml: &str,
) -> Result<Secret, ResourceError> {
    let mut context = SecretContext {
        metadata: owner.metadata(secret_name.to_string(), component),
        type_: OPAQUE_TYPE,
        immutable: false,
        data: BTreeMap::from([(KUBECONFIG_KEY, BASE64.encode(kubeconfig_yaml))]),
    };
    context.metadata.labels.insert(CLUSTER_NAME_LABEL.to_string(), owner.names.tenant.clone());
    render(SECRET, &context)
}

/// Secret `names.encryption_config_secret()` with the apiserver's encryption
/// configuration under [`ENCRYPTION_CONFIG_KEY`] (see [`crate::pki::encryption_configuration`]).
pub fn encryption_config_secret(
    owner: &TenantOwner,
    encryption_config_yaml: &str,
) -> Result<Secret, ResourceError> {
    secret(
        owner,
        &owner.names.encryption_config_secret(),
        Component::ApiServer,
        OPAQUE_TYPE,
        false,
        &[(ENCRYPTION_CONFIG_KEY, encryption_config_yaml)],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{EncryptionKey, EncryptionProvider, encryption_configuration};
    use crate::resources::test_support::*;

    fn value<'a>(secret: &'a Secret, key: &str) -> &'a [u8] {
        &secret.data.as_ref().and_then(|data| data.get(key)).unwrap_or_else(|| panic!("no {key}")).0
    }

    #[test]
    fn tls_secret_holds_certificate_key_and_ca() {
        let fixture = Fixture::default();
        let names = &fixture.owner.names;
        let secret = tls_secret(
            &fixture.owner,
            &names.etcd_server_secret(),
            Component::Etcd,
            "CERT\n",
            "KEY\n",
            "CA\n",
        )
        .expect("builds");
        assert_owned_by_tenant(&secret.metadata, &fixture.owner, Component::Etcd);
        assert_eq!(secret.metadata.name.as_deref(), Some(names.etcd_server_secret().as_str()));
        assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
        assert_eq!(secret.immutable, None);
        assert_eq!(secret.string_data, None);
        assert_eq!(value(&secret, "tls.crt"), b"CERT\n");
        assert_eq!(value(&secret, "tls.key"), b"KEY\n");
        assert_eq!(value(&secret, "ca.crt"), b"CA\n");
        assert_eq!(secret.data.as_ref().map(BTreeMap::len), Some(3));
    }

    #[test]
    fn ca_secret_is_immutable_and_has_no_ca_of_its_own() {
        let fixture = Fixture::default();
        let secret =
            ca_secret(&fixture.owner, &fixture.owner.names.cluster_ca_secret(), Component::Pki, "C", "K")
                .expect("builds");
        assert_owned_by_tenant(&secret.metadata, &fixture.owner, Component::Pki);
        assert_eq!(secret.immutable, Some(true));
        assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
        assert_eq!(value(&secret, "tls.crt"), b"C");
        assert_eq!(value(&secret, "tls.key"), b"K");
        assert_eq!(secret.data.as_ref().map(BTreeMap::len), Some(2));
    }

    #[test]
    fn service_account_secret_holds_both_halves() {
        let fixture = Fixture::default();
        let secret = service_account_key_secret(&fixture.owner, "PRIVATE", "PUBLIC").expect("builds");
        assert_owned_by_tenant(&secret.metadata, &fixture.owner, Component::Pki);
        assert_eq!(secret.metadata.name, Some(fixture.owner.names.service_account_key_secret()));
        assert_eq!(value(&secret, "sa.key"), b"PRIVATE");
        assert_eq!(value(&secret, "sa.pub"), b"PUBLIC");
    }

    #[test]
    fn kubeconfig_secret_uses_the_cluster_api_layout() {
        let fixture = Fixture::default();
        let names = &fixture.owner.names;
        let secret = kubeconfig_secret(
            &fixture.owner,
            &names.admin_kubeconfig_secret(),
            Component::Pki,
            "apiVersion: v1\nkind: Config\n",
        )
        .expect("builds");
        assert_owned_by_tenant(&secret.metadata, &fixture.owner, Component::Pki);
        assert_eq!(value(&secret, "value"), b"apiVersion: v1\nkind: Config\n");
        let labels = secret.metadata.labels.as_ref().expect("labels");
        assert_eq!(labels.get(CLUSTER_NAME_LABEL).map(String::as_str), Some("team-a"));
        assert_eq!(secret.type_.as_deref(), Some("Opaque"));
    }

    #[test]
    fn encryption_config_round_trips_through_its_secret() {
        let fixture = Fixture::default();
        let key = EncryptionKey { name: "key-1".into(), secret: BASE64.encode([7u8; 32]) };
        let document = encryption_configuration(EncryptionProvider::Secretbox, &key).expect("renders");
        let parsed: serde_json::Value = serde_yaml_ng::from_str(&document).expect("YAML");
        assert_eq!(parsed["kind"], "EncryptionConfiguration");
        assert_eq!(parsed["resources"][0]["resources"][0], "secrets");
        assert_eq!(parsed["resources"][0]["providers"][0]["secretbox"]["keys"][0]["secret"], key.secret);
        assert!(
            parsed["resources"][0]["providers"][1].get("identity").is_some(),
            "plain text stays readable"
        );
        let secret = encryption_config_secret(&fixture.owner, &document).expect("builds");
        assert_owned_by_tenant(&secret.metadata, &fixture.owner, Component::ApiServer);
        assert_eq!(secret.metadata.name, Some(fixture.owner.names.encryption_config_secret()));
        assert_eq!(value(&secret, ENCRYPTION_CONFIG_KEY), document.as_bytes());
    }

    #[test]
    fn secrets_render_byte_identically() {
        let fixture = Fixture::default();
        let build = || {
            let secret = tls_secret(&fixture.owner, "s", Component::Pki, "C", "K", "A").expect("builds");
            serde_json::to_string(&secret).expect("serializes")
        };
        assert_eq!(build(), build());
    }
}
