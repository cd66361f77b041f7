//! Encryption at rest: the tenant's data-encryption key and the
//! kube-apiserver `EncryptionConfiguration` that uses it for Secrets.
//!
//! The key is generated once and kept: losing it makes every Secret stored in
//! the tenant's etcd unreadable. [`EncryptionKey::from_configuration`] reads
//! it back from a stored configuration so a re-render keeps it.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};

use super::PkiError;

/// Key length of both providers: AES-256 for aescbc, XSalsa20 for secretbox.
const KEY_BYTES: usize = 32;

/// How the apiserver encrypts Secrets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EncryptionProvider {
    /// XSalsa20-Poly1305: authenticated, the upstream recommendation among local-key providers.
    #[default]
    Secretbox,
    /// AES-CBC with PKCS#7 padding, for environments that require AES.
    AesCbc,
}

/// A named data-encryption key, its secret base64 as the configuration holds it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptionKey {
    /// Key name; the apiserver prefixes each stored value with it.
    pub name: String,
    /// Base64 of 32 random bytes.
    pub secret: String,
}

impl std::fmt::Debug for EncryptionKey {
    // The key material stays out of logs.
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("EncryptionKey").field("name", &self.name).finish_non_exhaustive()
    }
}

impl EncryptionKey {
    /// A new key of 32 bytes from the thread-local CSPRNG (ChaCha, seeded by the OS).
    pub fn generate(name: impl Into<String>) -> Self {
        use rand::RngCore;
        let mut secret = [0u8; KEY_BYTES];
        rand::rng().fill_bytes(&mut secret);
        Self { name: name.into(), secret: BASE64.encode(secret) }
    }

    /// The first key of the first provider that has keys, in a configuration
    /// rendered by [`encryption_configuration`].
    pub fn from_configuration(yaml: &str) -> Result<Self, PkiError> {
        let configuration: EncryptionConfiguration = serde_yaml_ng::from_str(yaml)?;
        configuration
            .resources
            .into_iter()
            .flat_map(|resources| resources.providers)
            .flat_map(|provider| provider.secretbox.into_iter().chain(provider.aescbc))
            .flat_map(|keys| keys.keys)
            .next()
            .ok_or_else(|| PkiError::InvalidEncryptionKey { name: "(none in the configuration)".into() })
    }

    fn validate(&self) -> Result<(), PkiError> {
        match BASE64.decode(&self.secret) {
            Ok(bytes) if bytes.len() == KEY_BYTES => Ok(()),
            _ => Err(PkiError::InvalidEncryptionKey { name: self.name.clone() }),
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EncryptionConfiguration {
    api_version: String,
    kind: String,
    resources: Vec<ResourceEncryption>,
}

#[derive(Serialize, Deserialize)]
struct ResourceEncryption {
    resources: Vec<String>,
    providers: Vec<Provider>,
}

/// One entry of `providers`: exactly one field is set.
#[derive(Default, Serialize, Deserialize)]
struct Provider {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    aescbc: Option<KeySet>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    secretbox: Option<KeySet>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    identity: Option<Empty>,
}

#[derive(Serialize, Deserialize)]
struct KeySet {
    keys: Vec<EncryptionKey>,
}

#[derive(Serialize, Deserialize)]
struct Empty {}

/// Renders the kube-apiserver `--encryption-provider-config` file: Secrets
/// are written encrypted with `key`; `identity` comes last so Secrets stored
/// before encryption was enabled stay readable.
pub fn encryption_configuration(
    provider: EncryptionProvider,
    key: &EncryptionKey,
) -> Result<String, PkiError> {
    key.validate()?;
    let keys = Some(KeySet { keys: vec![key.clone()] });
    let encrypting = match provider {
        EncryptionProvider::Secretbox => Provider { secretbox: keys, ..Provider::default() },
        EncryptionProvider::AesCbc => Provider { aescbc: keys, ..Provider::default() },
    };
    let configuration = EncryptionConfiguration {
        api_version: "apiserver.config.k8s.io/v1".into(),
        kind: "EncryptionConfiguration".into(),
        resources: vec![ResourceEncryption {
            resources: vec!["secrets".into()],
            providers: vec![encrypting, Provider { identity: Some(Empty {}), ..Provider::default() }],
        }],
    };
    Ok(serde_yaml_ng::to_string(&configuration)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed_key() -> EncryptionKey {
        EncryptionKey { name: "key1".into(), secret: BASE64.encode([7u8; 32]) }
    }

    #[test]
    fn generated_keys_are_32_random_bytes() {
        let first = EncryptionKey::generate("key1");
        let second = EncryptionKey::generate("key1");
        assert_eq!(BASE64.decode(&first.secret).unwrap().len(), 32);
        assert_ne!(first.secret, second.secret);
        assert_eq!(first.name, "key1");
    }

    #[test]
    fn secretbox_configuration_renders_exactly() {
        let yaml = encryption_configuration(EncryptionProvider::Secretbox, &fixed_key()).unwrap();
        let expected = format!(
            "apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
- resources:
  - secrets
  providers:
  - secretbox:
      keys:
      - name: key1
        secret: {}
  - identity: {{}}
",
            fixed_key().secret
        );
        assert_eq!(yaml, expected);
    }

    #[test]
    fn aescbc_configuration_uses_the_aescbc_provider_then_identity() {
        let yaml = encryption_configuration(EncryptionProvider::AesCbc, &fixed_key()).unwrap();
        let parsed: serde_yaml_ng::Value = serde_yaml_ng::from_str(&yaml).unwrap();
        let providers = &parsed["resources"][0]["providers"];
        assert_eq!(providers[0]["aescbc"]["keys"][0]["name"], "key1");
        assert_eq!(providers[0]["aescbc"]["keys"][0]["secret"], fixed_key().secret.as_str());
        assert!(providers[0].get("secretbox").is_none());
        assert!(providers[1].get("identity").is_some());
        assert_eq!(parsed["resources"][0]["resources"][0], "secrets");
    }

    #[test]
    fn the_key_is_read_back_from_a_rendered_configuration() {
        let key = EncryptionKey::generate("nestor-1");
        for provider in [EncryptionProvider::Secretbox, EncryptionProvider::AesCbc] {
            let yaml = encryption_configuration(provider, &key).unwrap();
            assert_eq!(EncryptionKey::from_configuration(&yaml).unwrap(), key);
        }
        assert!(EncryptionKey::from_configuration("kind: EncryptionConfiguration").is_err());
    }

    #[test]
    fn keys_of_the_wrong_length_are_rejected() {
        let short = EncryptionKey { name: "short".into(), secret: BASE64.encode([1u8; 16]) };
        let result = encryption_configuration(EncryptionProvider::Secretbox, &short);
        assert!(matches!(result, Err(PkiError::InvalidEncryptionKey { ref name }) if name == "short"));
        let not_base64 = EncryptionKey { name: "bad".into(), secret: "!!!".into() };
        assert!(encryption_configuration(EncryptionProvider::AesCbc, &not_base64).is_err());
    }

    #[test]
    fn debug_output_hides_the_key() {
        let key = fixed_key();
        assert!(!format!("{key:?}").contains(&key.secret));
    }
}
