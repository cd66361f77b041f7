//! `nestor kubeconfig`: prints a kubeconfig for a tenant.
//!
//! Without `--user`, the admin kubeconfig the operator stored (`<name>-kubeconfig`, or
//! `<name>-kubeconfig-internal` with `--internal`). With `--user`, a new short-lived
//! client certificate for that user, signed here by the tenant's cluster CA: the CA key
//! is read from its Secret into this process only, and never written anywhere.
//!
//! Client certificates cannot be revoked in Kubernetes (only the whole CA can be
//! replaced), so the lifetime is the only limit on a leaked file: `--ttl` is capped at
//! [`MAX_USER_TTL`].

use std::time::Duration;

use clap::Args;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;

use crate::api::TenantCluster;
use crate::cli::cluster::{CliError, ClusterArgs, Session};
use crate::cli::format::human_duration;
use crate::kubeconfig::ClientCredentials;
use crate::names::TenantNames;
use crate::pki::{CertificateAuthority, CertificateRequest, KeyAlgorithm, issue};
use crate::resources::{KUBECONFIG_KEY, TLS_CERT_KEY, TLS_PRIVATE_KEY_KEY};

/// Longest `--ttl` of a user certificate: one day. Long enough for a working day,
/// short enough that a leaked, unrevocable credential soon stops working.
pub const MAX_USER_TTL: Duration = Duration::from_secs(24 * 3600);

/// Arguments of `nestor kubeconfig`.
#[derive(Debug, Args)]
pub struct KubeconfigArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,

    /// Name of the TenantCluster.
    pub name: String,

    /// Use the kubeconfig with the in-cluster Service address (for pods in the meta cluster).
    #[arg(long)]
    pub internal: bool,

    /// Issue a new client certificate for this user (its CN) instead of printing the admin kubeconfig.
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,

    /// Group of the user (the certificate's O). At most one: the tenant PKI writes a
    /// single organization attribute.
    #[arg(long = "group", value_name = "GROUP", requires = "user")]
    pub groups: Vec<String>,

    /// Lifetime of the user certificate (Go duration, at most 24h).
    #[arg(long, default_value = "1h", value_parser = crate::duration::parse_duration, requires = "user")]
    pub ttl: Duration,

    /// Server URL to write instead of the stored one (e.g. a load balancer or port-forward).
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
}

/// Refuses lifetimes that are zero or above [`MAX_USER_TTL`].
pub fn check_ttl(ttl: Duration) -> Result<(), CliError> {
    if ttl.is_zero() {
        return Err(CliError::Usage("--ttl must be longer than zero".into()));
    }
    if ttl > MAX_USER_TTL {
        return Err(CliError::Usage(format!(
            "--ttl {} is longer than the maximum of {}: client certificates cannot be revoked",
            human_duration(ttl),
            human_duration(MAX_USER_TTL)
        )));
    }
    Ok(())
}

/// A new identity for `user` in `groups` valid for `ttl` from `now`, signed by `ca`,
/// for the cluster and server of `admin` (the stored admin kubeconfig).
pub fn user_credentials(
    ca: &CertificateAuthority,
    admin: &ClientCredentials,
    user: &str,
    groups: &[String],
    ttl: Duration,
    algorithm: KeyAlgorithm,
    now: Timestamp,
) -> Result<ClientCredentials, CliError> {
    check_ttl(ttl)?;
    if user.trim().is_empty() {
        return Err(CliError::Usage("--user must not be empty".into()));
    }
    if groups.len() > 1 {
        return Err(CliError::Usage(format!(
            "at most one --group is supported (got {}): the tenant PKI writes a single organization",
            groups.len()
        )));
    }
    let request = CertificateRequest::client(user, groups.first().map(String::as_str));
    let issued = issue(ca, &request, algorithm, ttl, now)
        .map_err(|error| CliError::Unexpected(format!("cannot issue a certificate for {user}: {error}")))?;
    Ok(ClientCredentials {
        cluster_name: admin.cluster_name.clone(),
        server_url: admin.server_url.clone(),
        ca_pem: admin.ca_pem.clone(),
        user_name: user.to_string(),
        client_cert_pem: issued.cert_pem,
        client_key_pem: issued.key_pem,
    })
}

/// Value of `key` in `secret` as text.
fn secret_text(secret: &Secret, key: &str) -> Result<String, CliError> {
    let name = secret.metadata.name.as_deref().unwrap_or_default();
    let bytes = secret
        .data
        .as_ref()
        .and_then(|data| data.get(key))
        .ok_or_else(|| CliError::Unexpected(format!("Secret {name} has no key {key:?}")))?;
    String::from_utf8(bytes.0.clone())
        .map_err(|_| CliError::Unexpected(format!("key {key:?} of Secret {name} is not UTF-8")))
}

/// Reads Secret `name`, saying which tenant it belongs to when it is missing.
async fn read_secret(session: &Session, tenant: &str, name: &str) -> Result<Secret, CliError> {
    let secret =
        session.namespaced::<Secret>().get_opt(name).await.map_err(|error| {
            crate::cli::cluster::api_error(&session.server, &session.namespace, "", error)
        })?;
    secret.ok_or_else(|| {
        CliError::Unexpected(format!(
            "Secret {name:?} of tenantcluster {tenant:?} not found in namespace {:?}: \
             is the tenant provisioned? (nestor describe {tenant})",
            session.namespace
        ))
    })
}

fn render(credentials: &ClientCredentials) -> Result<String, CliError> {
    credentials
        .to_kubeconfig()
        .map_err(|error| CliError::Unexpected(format!("cannot render the kubeconfig: {error}")))
}

/// Runs `nestor kubeconfig`.
pub async fn run(args: KubeconfigArgs) -> anyhow::Result<()> {
    let session = args.cluster.connect().await?;
    let tenant: TenantCluster = session.get_tenant(&args.name).await?;
    let names = TenantNames::new(&args.name, &session.namespace);
    let secret_name = if args.internal {
        names.admin_in_cluster_kubeconfig_secret()
    } else {
        names.admin_kubeconfig_secret()
    };
    let admin_yaml = secret_text(&read_secret(&session, &args.name, &secret_name).await?, KUBECONFIG_KEY)?;

    if args.user.is_none() && args.server.is_none() {
        print!("{admin_yaml}");
        return Ok(());
    }
    let mut admin = ClientCredentials::from_kubeconfig(&admin_yaml)
        .map_err(|error| CliError::Unexpected(format!("Secret {secret_name}: {error}")))?;
    if let Some(server) = &args.server {
        admin.server_url = server.clone();
    }
    let credentials = match &args.user {
        None => admin,
        Some(user) => {
            check_ttl(args.ttl)?;
            let ca_secret = read_secret(&session, &args.name, &names.cluster_ca_secret()).await?;
            let ca = CertificateAuthority::from_pem(
                &secret_text(&ca_secret, TLS_CERT_KEY)?,
                &secret_text(&ca_secret, TLS_PRIVATE_KEY_KEY)?,
            )
            .map_err(|error| CliError::Unexpected(format!("cluster CA of {}: {error}", args.name)))?;
            let algorithm = KeyAlgorithm::from(tenant.spec.pki.key_algorithm);
            user_credentials(&ca, &admin, user, &args.groups, args.ttl, algorithm, Timestamp::now())?
        }
    };
    print!("{}", render(&credentials)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use x509_parser::prelude::*;

    use super::*;
    use crate::pki::CA_VALIDITY;

    fn now() -> Timestamp {
        "2025-06-01T12:00:00Z".parse().unwrap()
    }

    fn admin(ca: &CertificateAuthority) -> ClientCredentials {
        ClientCredentials {
            cluster_name: "team-a".into(),
            server_url: "https://team-a-apiserver.tenants.svc:6443".into(),
            ca_pem: ca.cert_pem().into(),
            user_name: "nestor-admin".into(),
            client_cert_pem: "unused".into(),
            client_key_pem: "unused".into(),
        }
    }

    #[test]
    fn user_certificate_names_user_and_group_and_chains_to_the_ca() {
        let ca = CertificateAuthority::generate("kubernetes", KeyAlgorithm::EcdsaP256, CA_VALIDITY, now())
            .unwrap();
        let ttl = Duration::from_secs(600);
        let credentials = user_credentials(
            &ca,
            &admin(&ca),
            "alice",
            &["devs".into()],
            ttl,
            KeyAlgorithm::EcdsaP256,
            now(),
        )
        .unwrap();
        assert_eq!(credentials.user_name, "alice");
        assert_eq!(credentials.server_url, "https://team-a-apiserver.tenants.svc:6443");
        assert_eq!(credentials.context_name(), "alice@team-a");

        let (_, ca_block) = x509_parser::pem::parse_x509_pem(ca.cert_pem().as_bytes()).unwrap();
        let (_, ca_certificate) = parse_x509_certificate(&ca_block.contents).unwrap();
        let (_, block) = x509_parser::pem::parse_x509_pem(credentials.client_cert_pem.as_bytes()).unwrap();
        let (_, certificate) = parse_x509_certificate(&block.contents).unwrap();
        certificate.verify_signature(Some(ca_certificate.public_key())).expect("signed by the cluster CA");
        let common_names: Vec<_> =
            certificate.subject().iter_common_name().map(|name| name.as_str().unwrap()).collect();
        let organizations: Vec<_> =
            certificate.subject().iter_organization().map(|name| name.as_str().unwrap()).collect();
        assert_eq!((common_names, organizations), (vec!["alice"], vec!["devs"]));
        assert_eq!(certificate.validity().not_after.timestamp(), now().as_second() + 600);

        // The rendered kubeconfig reads back to the same identity.
        let read_back = ClientCredentials::from_kubeconfig(&render(&credentials).unwrap()).unwrap();
        assert_eq!(read_back, credentials);
    }

    #[test]
    fn ttl_and_groups_are_bounded() {
        assert!(check_ttl(MAX_USER_TTL).is_ok());
        let too_long = check_ttl(MAX_USER_TTL + Duration::from_secs(3600)).unwrap_err();
        assert_eq!(
            too_long.to_string(),
            "--ttl 25h is longer than the maximum of 24h: client certificates cannot be revoked"
        );
        assert!(check_ttl(Duration::ZERO).is_err());

        let ca = CertificateAuthority::generate("kubernetes", KeyAlgorithm::EcdsaP256, CA_VALIDITY, now())
            .unwrap();
        let groups = ["a".to_string(), "b".to_string()];
        let result = user_credentials(
            &ca,
            &admin(&ca),
            "alice",
            &groups,
            Duration::from_secs(60),
            KeyAlgorithm::EcdsaP256,
            now(),
        );
        assert!(result.unwrap_err().to_string().starts_with("at most one --group"));
    }
}
