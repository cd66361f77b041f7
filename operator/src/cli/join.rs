//! `nestor join`: creates a bootstrap token inside a tenant and prints the complete
//! `kubeadm join` line a machine runs to become one of its nodes.
//!
//! The token is a Secret `kube-system/bootstrap-token-<id>` in the tenant, as `kubeadm
//! token create` writes it: it authenticates the joining kubelet (group
//! [`BOOTSTRAP_GROUP`]) and lets the controller-manager's bootstrapsigner sign
//! `cluster-info` for discovery; its tokencleaner deletes it once expired. The CA hash
//! pins the tenant CA, so discovery trusts nothing else (kubeadm's
//! `--discovery-token-ca-cert-hash`: SHA-256 of the CA's SubjectPublicKeyInfo).
//!
//! The tenant is reached with its admin kubeconfig, at the endpoint nodes use too: a
//! tenant nodes cannot reach gets an error here, not a join line that can never work.

use std::collections::BTreeMap;
use std::time::Duration;

use clap::Args;
use jiff::Timestamp;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use sha2::{Digest, Sha256};

use crate::api::{Phase, TenantCluster};
use crate::cli::cluster::{CliError, ClusterArgs};
use crate::cli::format::human_duration;
use crate::kubeconfig::ClientCredentials;
use crate::names::TenantNames;
use crate::resources::KUBECONFIG_KEY;
use crate::tenant_api::join::{BOOTSTRAP_GROUP, node_endpoint};

/// Longest `--ttl` of a bootstrap token: kubeadm's own default is a day, and a token
/// only needs to live until the machines it was made for have joined.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Arguments of `nestor join`.
#[derive(Debug, Args)]
pub struct JoinArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,

    /// Name of the TenantCluster to join.
    pub name: String,

    /// How long the token may be used to join (Go duration, at most 168h).
    #[arg(long, default_value = "1h", value_parser = crate::duration::parse_duration)]
    pub ttl: Duration,
}

/// A bootstrap token: `<id>.<secret>`, 6 and 16 characters of `[a-z0-9]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootstrapToken {
    /// The public part, also the Secret's name suffix.
    pub id: String,
    /// The secret part.
    pub secret: String,
}

impl BootstrapToken {
    /// A new random token.
    pub fn generate() -> Self {
        use rand::Rng;
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        let mut rng = rand::rng();
        let mut pick = |length: usize| {
            (0..length).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect()
        };
        Self { id: pick(6), secret: pick(16) }
    }

    /// The token as `kubeadm join --token` takes it.
    pub fn value(&self) -> String {
        format!("{}.{}", self.id, self.secret)
    }

    /// The Secret that makes the token valid inside the tenant until `expires` (pure).
    pub fn secret_object(&self, expires: Timestamp, description: &str) -> Secret {
        let data: BTreeMap<String, ByteString> = [
            ("token-id", self.id.clone()),
            ("token-secret", self.secret.clone()),
            ("expiration", expires.to_string()),
            ("usage-bootstrap-authentication", "true".into()),
            ("usage-bootstrap-signing", "true".into()),
            ("auth-extra-groups", BOOTSTRAP_GROUP.into()),
            ("description", description.into()),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_string(), ByteString(value.into_bytes())))
        .collect();
        Secret {
            metadata: ObjectMeta {
                name: Some(format!("bootstrap-token-{}", self.id)),
                namespace: Some("kube-system".into()),
                ..ObjectMeta::default()
            },
            type_: Some("bootstrap.kubernetes.io/token".into()),
            data: Some(data),
            ..Secret::default()
        }
    }
}

/// Refuses lifetimes that are zero or above [`MAX_TOKEN_TTL`].
pub fn check_ttl(ttl: Duration) -> Result<(), CliError> {
    if ttl.is_zero() {
        return Err(CliError::Usage("--ttl must be longer than zero".into()));
    }
    if ttl > MAX_TOKEN_TTL {
        return Err(CliError::Usage(format!(
            "--ttl {} is longer than the maximum of {}: a join token should not outlive the joins it is for",
            human_duration(ttl),
            human_duration(MAX_TOKEN_TTL)
        )));
    }
    Ok(())
}

/// kubeadm's `--discovery-token-ca-cert-hash` of a CA certificate: `sha256:` and the
/// hex SHA-256 of its DER SubjectPublicKeyInfo.
pub fn ca_cert_hash(ca_pem: &str) -> Result<String, CliError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let der = CertificateDer::from_pem_slice(ca_pem.as_bytes())
        .map_err(|error| CliError::Unexpected(format!("the tenant CA is not a PEM certificate: {error}")))?;
    let (_, certificate) = x509_parser::parse_x509_certificate(&der)
        .map_err(|error| CliError::Unexpected(format!("the tenant CA cannot be parsed: {error}")))?;
    let digest = Sha256::digest(certificate.tbs_certificate.subject_pki.raw);
    Ok(format!("sha256:{}", digest.iter().map(|byte| format!("{byte:02x}")).collect::<String>()))
}

/// The URL nodes join at, or the one-line reason the tenant cannot be joined (pure).
pub fn join_endpoint(tenant: &TenantCluster) -> Result<String, CliError> {
    let name = tenant.metadata.name.as_deref().unwrap_or_default();
    let status = tenant.status.as_ref();
    let phase = status.and_then(|status| status.phase);
    if phase != Some(Phase::Ready) {
        let phase = phase.map_or_else(|| "no phase yet".to_string(), |phase| format!("{phase:?}"));
        return Err(CliError::Usage(format!(
            "tenantcluster {name:?} is not Ready ({phase}): nodes can join once it is (nestor wait {name})"
        )));
    }
    let endpoint = status.and_then(|status| status.endpoint.as_deref()).unwrap_or_default();
    node_endpoint(&tenant.spec, endpoint).map(str::to_string).ok_or_else(|| {
        CliError::Usage(format!(
            "tenantcluster {name:?} has no endpoint nodes can reach: spec.network.serviceType is {:?}{}; \
             set serviceType NodePort (with nodePort) or LoadBalancer, and externalHost",
            tenant.spec.network.service_type,
            if tenant.spec.network.external_host.is_none() { " and externalHost is not set" } else { "" }
        ))
    })
}

/// The `kubeadm join` line (pure).
pub fn join_command(endpoint: &str, token: &BootstrapToken, ca_hash: &str) -> String {
    let address = endpoint.trim_start_matches("https://").trim_end_matches('/');
    format!("kubeadm join {address} --token {} --discovery-token-ca-cert-hash {ca_hash}", token.value())
}

pub async fn run(args: JoinArgs) -> anyhow::Result<()> {
    check_ttl(args.ttl)?;
    let session = args.cluster.connect().await?;
    let tenant: TenantCluster = session.get_tenant(&args.name).await?;
    let endpoint = join_endpoint(&tenant)?;
    let names = TenantNames::new(&args.name, &session.namespace);
    let secret_name = names.admin_kubeconfig_secret();
    let secret = session
        .namespaced::<Secret>()
        .get_opt(&secret_name)
        .await
        .map_err(|error| session.error("", error))?
        .ok_or_else(|| {
            CliError::Unexpected(format!("Secret {secret_name:?} not found: is the tenant provisioned?"))
        })?;
    let admin_yaml = secret
        .data
        .as_ref()
        .and_then(|data| data.get(KUBECONFIG_KEY))
        .and_then(|bytes| String::from_utf8(bytes.0.clone()).ok())
        .ok_or_else(|| {
            CliError::Unexpected(format!("Secret {secret_name} has no usable key {KUBECONFIG_KEY:?}"))
        })?;
    let admin = ClientCredentials::from_kubeconfig(&admin_yaml)
        .map_err(|error| CliError::Unexpected(format!("Secret {secret_name}: {error}")))?;
    let ca_hash = ca_cert_hash(&admin.ca_pem)?;

    let kubeconfig = Kubeconfig::from_yaml(&admin_yaml)
        .map_err(|error| CliError::Unexpected(format!("Secret {secret_name}: {error}")))?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|error| CliError::Unexpected(format!("Secret {secret_name}: {error}")))?;
    let tenant_client = Client::try_from(config)
        .map_err(|error| CliError::Unexpected(format!("cannot build a client for {endpoint}: {error}")))?;

    let token = BootstrapToken::generate();
    let expires = Timestamp::now()
        .checked_add(jiff::SignedDuration::try_from(args.ttl).unwrap_or_default())
        .map_err(|error| CliError::Usage(format!("--ttl: {error}")))?;
    let object = token.secret_object(expires, "created by nestor join");
    let secrets: Api<Secret> = Api::namespaced(tenant_client, "kube-system");
    secrets
        .create(&PostParams::default(), &object)
        .await
        .map_err(|error| crate::cli::cluster::api_error(&admin.server_url, "kube-system", "", error))?;
    eprintln!(
        "bootstrap token {} created in tenant {}, valid for {} (until {expires})",
        token.id,
        args.name,
        human_duration(args.ttl)
    );
    println!("{}", join_command(&endpoint, &token, &ca_hash));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{CA_VALIDITY, CertificateAuthority, KeyAlgorithm};

    fn tenant(network: serde_json::Value, phase: Option<Phase>) -> TenantCluster {
        let mut tenant: TenantCluster = serde_json::from_value(serde_json::json!({
            "apiVersion": "nestor.dev/v1alpha1",
            "kind": "TenantCluster",
            "metadata": {"name": "team-a", "namespace": "tenants"},
            "spec": {"version": "1.34.2", "network": network},
        }))
        .expect("tenant");
        tenant.status = Some(crate::api::TenantClusterStatus {
            phase,
            endpoint: Some("https://node.example:30443".into()),
            ..Default::default()
        });
        tenant
    }

    #[test]
    fn tokens_have_kubeadm_shape_and_their_secret_expires() {
        let token = BootstrapToken::generate();
        assert_eq!(token.id.len(), 6);
        assert_eq!(token.secret.len(), 16);
        assert!(token.value().chars().all(|c| c == '.' || c.is_ascii_lowercase() || c.is_ascii_digit()));
        assert_ne!(token, BootstrapToken::generate(), "random");
        let expires: Timestamp = "2026-12-04T10:00:00Z".parse().expect("time");
        let secret = token.secret_object(expires, "test");
        assert_eq!(secret.metadata.name, Some(format!("bootstrap-token-{}", token.id)));
        assert_eq!(secret.type_.as_deref(), Some("bootstrap.kubernetes.io/token"));
        let data = secret.data.expect("data");
        assert_eq!(data["expiration"].0, b"2026-12-04T10:00:00Z");
        assert_eq!(data["auth-extra-groups"].0, BOOTSTRAP_GROUP.as_bytes());
    }

    #[test]
    fn ttls_of_zero_or_beyond_a_week_are_refused() {
        assert!(check_ttl(Duration::ZERO).unwrap_err().to_string().contains("longer than zero"));
        assert!(check_ttl(Duration::from_secs(8 * 24 * 3600)).is_err());
        assert!(check_ttl(Duration::from_secs(3600)).is_ok());
    }

    #[test]
    fn only_a_ready_tenant_with_a_node_endpoint_can_be_joined() {
        let reachable =
            serde_json::json!({"serviceType": "NodePort", "externalHost": "node.example", "nodePort": 30443});
        assert_eq!(
            join_endpoint(&tenant(reachable.clone(), Some(Phase::Ready))).unwrap(),
            "https://node.example:30443"
        );
        let error = join_endpoint(&tenant(reachable, Some(Phase::Provisioning))).unwrap_err().to_string();
        assert!(error.contains("is not Ready (Provisioning)"), "{error}");
        let error =
            join_endpoint(&tenant(serde_json::json!({}), Some(Phase::Ready))).unwrap_err().to_string();
        assert!(error.contains("no endpoint nodes can reach"), "{error}");
        assert!(error.contains("externalHost is not set"), "{error}");
    }

    #[test]
    fn the_ca_hash_is_the_sha256_of_the_public_key_info() {
        let ca = CertificateAuthority::generate(
            "kubernetes",
            KeyAlgorithm::EcdsaP256,
            CA_VALIDITY,
            Timestamp::now(),
        )
        .expect("CA");
        let hash = ca_cert_hash(ca.cert_pem()).expect("hash");
        assert!(hash.starts_with("sha256:") && hash.len() == 7 + 64, "{hash}");
        assert_eq!(hash, ca_cert_hash(ca.cert_pem()).expect("hash"), "deterministic");
        let token = BootstrapToken { id: "abcdef".into(), secret: "0123456789abcdef".into() };
        assert_eq!(
            join_command("https://node.example:30443", &token, "sha256:00"),
            "kubeadm join node.example:30443 --token abcdef.0123456789abcdef --discovery-token-ca-cert-hash sha256:00"
        );
    }
}
