//! Kubeconfig documents for tenant clients (pure): one cluster, one user
//! authenticated by a client certificate, one context, all PEM embedded as
//! base64 `*-data` fields so the file stands alone in a Secret.
//!
//! Rendering is deterministic (fixed field order, no timestamps), so an
//! unchanged certificate gives a byte-identical Secret and no spurious update.
//! [`ClientCredentials::from_kubeconfig`] reads a stored kubeconfig back, so the
//! reconciler can check the embedded certificate for renewal.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};

/// Failure to render or read a kubeconfig.
#[derive(Debug, thiserror::Error)]
pub enum KubeconfigError {
    #[error("kubeconfig YAML: {0}")]
    Yaml(#[from] serde_yaml_ng::Error),
    #[error("kubeconfig has no {0}")]
    Missing(&'static str),
    #[error("kubeconfig field {field} is not base64 of UTF-8 PEM")]
    InvalidData { field: &'static str },
}

/// What a certificate-authenticated kubeconfig says.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientCredentials {
    /// Name of the cluster entry, e.g. the tenant name.
    pub cluster_name: String,
    /// URL of the apiserver, e.g. `https://team-a-apiserver.tenants.svc:6443`.
    pub server_url: String,
    /// CA certificate that signed the apiserver's serving certificate, PEM.
    pub ca_pem: String,
    /// Name of the user entry, e.g. `nestor-admin`.
    pub user_name: String,
    /// Client certificate, PEM.
    pub client_cert_pem: String,
    /// Client private key, PEM.
    pub client_key_pem: String,
}

impl std::fmt::Debug for ClientCredentials {
    // The private key stays out of logs.
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ClientCredentials")
            .field("cluster_name", &self.cluster_name)
            .field("server_url", &self.server_url)
            .field("user_name", &self.user_name)
            .finish_non_exhaustive()
    }
}

impl ClientCredentials {
    /// Context name: `<user>@<cluster>`, as kubeadm names them.
    pub fn context_name(&self) -> String {
        format!("{}@{}", self.user_name, self.cluster_name)
    }

    /// Reads the current context's cluster and user back out of `yaml`.
    pub fn from_kubeconfig(yaml: &str) -> Result<Self, KubeconfigError> {
        let document: Kubeconfig = serde_yaml_ng::from_str(yaml)?;
        let context = document
            .contexts
            .iter()
            .find(|context| context.name == document.current_context)
            .ok_or(KubeconfigError::Missing("current context"))?;
        let cluster = document
            .clusters
            .iter()
            .find(|cluster| cluster.name == context.context.cluster)
            .ok_or(KubeconfigError::Missing("cluster of the current context"))?;
        let user = document
            .users
            .iter()
            .find(|user| user.name == context.context.user)
            .ok_or(KubeconfigError::Missing("user of the current context"))?;
        Ok(Self {
            cluster_name: cluster.name.clone(),
            server_url: cluster.cluster.server.clone(),
            ca_pem: decode(&cluster.cluster.certificate_authority_data, "certificate-authority-data")?,
            user_name: user.name.clone(),
            client_cert_pem: decode(&user.user.client_certificate_data, "client-certificate-data")?,
            client_key_pem: decode(&user.user.client_key_data, "client-key-data")?,
        })
    }

    /// Renders the kubeconfig YAML, with `current-context` set to its only context.
    pub fn to_kubeconfig(&self) -> Result<String, KubeconfigError> {
        let context_name = self.context_name();
        let document = Kubeconfig {
            api_version: "v1".into(),
            kind: "Config".into(),
            clusters: vec![NamedCluster {
                name: self.cluster_name.clone(),
                cluster: Cluster {
                    server: self.server_url.clone(),
                    certificate_authority_data: BASE64.encode(&self.ca_pem),
                },
            }],
            users: vec![NamedUser {
                name: self.user_name.clone(),
                user: User {
                    client_certificate_data: BASE64.encode(&self.client_cert_pem),
                    client_key_data: BASE64.encode(&self.client_key_pem),
                },
            }],
            contexts: vec![NamedContext {
                name: context_name.clone(),
                context: Context { cluster: self.cluster_name.clone(), user: self.user_name.clone() },
            }],
            current_context: context_name,
            preferences: Preferences {},
        };
        Ok(serde_yaml_ng::to_string(&document)?)
    }
}

/// Renders a kubeconfig for one client-certificate user of one cluster;
/// shorthand for [`ClientCredentials::to_kubeconfig`].
pub fn kubeconfig(credentials: &ClientCredentials) -> Result<String, KubeconfigError> {
    credentials.to_kubeconfig()
}

fn decode(data: &str, field: &'static str) -> Result<String, KubeconfigError> {
    let bytes = BASE64.decode(data).map_err(|_| KubeconfigError::InvalidData { field })?;
    String::from_utf8(bytes).map_err(|_| KubeconfigError::InvalidData { field })
}

// The subset of client-go's `clientcmd/api/v1.Config` that Nestor writes;
// field order is the order kubectl writes them.

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Kubeconfig {
    #[serde(rename = "apiVersion")]
    api_version: String,
    kind: String,
    clusters: Vec<NamedCluster>,
    users: Vec<NamedUser>,
    contexts: Vec<NamedContext>,
    current_context: String,
    #[serde(default)]
    preferences: Preferences,
}

#[derive(Serialize, Deserialize)]
struct NamedCluster {
    name: String,
    cluster: Cluster,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Cluster {
    server: String,
    certificate_authority_data: String,
}

#[derive(Serialize, Deserialize)]
struct NamedUser {
    name: String,
    user: User,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct User {
    client_certificate_data: String,
    client_key_data: String,
}

#[derive(Serialize, Deserialize)]
struct NamedContext {
    name: String,
    context: Context,
}

#[derive(Serialize, Deserialize)]
struct Context {
    cluster: String,
    user: String,
}

#[derive(Default, Serialize, Deserialize)]
struct Preferences {}

#[cfg(test)]
mod tests {
    use super::*;

    fn credentials() -> ClientCredentials {
        ClientCredentials {
            cluster_name: "team-a".into(),
            server_url: "https://team-a-apiserver.tenants.svc:6443".into(),
            ca_pem: "-----BEGIN CERTIFICATE-----\nQ0E=\n-----END CERTIFICATE-----\n".into(),
            user_name: "nestor-admin".into(),
            client_cert_pem: "-----BEGIN CERTIFICATE-----\nQ0VSVA==\n-----END CERTIFICATE-----\n".into(),
            client_key_pem: "-----BEGIN PRIVATE KEY-----\nS0VZ\n-----END PRIVATE KEY-----\n".into(),
        }
    }

    #[test]
    fn rendered_kubeconfig_has_the_kubectl_layout_with_base64_data() {
        let yaml = kubeconfig(&credentials()).unwrap();
        let parsed: serde_yaml_ng::Value = serde_yaml_ng::from_str(&yaml).unwrap();
        assert_eq!(parsed["apiVersion"], "v1");
        assert_eq!(parsed["kind"], "Config");
        assert_eq!(parsed["current-context"], "nestor-admin@team-a");
        assert_eq!(parsed["clusters"][0]["name"], "team-a");
        assert_eq!(parsed["clusters"][0]["cluster"]["server"], "https://team-a-apiserver.tenants.svc:6443");
        assert_eq!(parsed["users"][0]["name"], "nestor-admin");
        assert_eq!(parsed["contexts"][0]["name"], "nestor-admin@team-a");
        assert_eq!(parsed["contexts"][0]["context"]["cluster"], "team-a");
        assert_eq!(parsed["contexts"][0]["context"]["user"], "nestor-admin");

        let decoded = |value: &serde_yaml_ng::Value| {
            String::from_utf8(BASE64.decode(value.as_str().expect("a string")).unwrap()).unwrap()
        };
        let expected = credentials();
        assert_eq!(decoded(&parsed["clusters"][0]["cluster"]["certificate-authority-data"]), expected.ca_pem);
        assert_eq!(decoded(&parsed["users"][0]["user"]["client-certificate-data"]), expected.client_cert_pem);
        assert_eq!(decoded(&parsed["users"][0]["user"]["client-key-data"]), expected.client_key_pem);
    }

    #[test]
    fn rendering_is_deterministic_and_round_trips() {
        let first = kubeconfig(&credentials()).unwrap();
        assert_eq!(first, kubeconfig(&credentials()).unwrap());
        assert_eq!(ClientCredentials::from_kubeconfig(&first).unwrap(), credentials());
    }

    #[test]
    fn reading_follows_the_current_context() {
        let yaml = kubeconfig(&credentials())
            .unwrap()
            .replace("current-context: nestor-admin@team-a", "current-context: other");
        assert!(matches!(
            ClientCredentials::from_kubeconfig(&yaml),
            Err(KubeconfigError::Missing("current context"))
        ));
    }

    #[test]
    fn reading_rejects_data_that_is_not_base64() {
        let encoded_key = BASE64.encode(credentials().client_key_pem);
        let yaml = kubeconfig(&credentials()).unwrap().replace(&encoded_key, "not_base64!");
        assert!(matches!(
            ClientCredentials::from_kubeconfig(&yaml),
            Err(KubeconfigError::InvalidData { field: "client-key-data" })
        ));
    }

    #[test]
    fn debug_output_hides_the_private_key() {
        assert!(!format!("{:?}", credentials()).contains("PRIVATE"));
    }
}
