//! What the operator does *inside* a tenant cluster: a client built from the tenant's
//! admin credentials, and server-side apply of the objects the operator keeps there.
//!
//! Everything else the operator touches lives in the meta cluster. The objects that
//! nodes joining a tenant need (bootstrap RBAC, `cluster-info`, the kubeadm and kubelet
//! configuration) and its addons (kube-proxy, CoreDNS) live in the tenant itself, so
//! they are applied with the tenant's own credentials, through its apiserver Service.
//!
//! Rules this module keeps for whatever lands here:
//! - the client reaches the apiserver by the Service's address (an operator run as a
//!   host process cannot resolve in-cluster names) and verifies the serving
//!   certificate against the tenant CA under the Service's DNS name, which the
//!   certificate carries;
//! - objects are server-side applied with the operator's one field manager ([`FIELD_MANAGER`]), so a
//!   tenant's own edits to fields Nestor does not set are kept, and Nestor's fields are
//!   put back (drift repair);
//! - deleting a TenantCluster needs nothing from here: the tenant may already be gone.

pub mod addons;
pub mod join;
pub mod serving_csr;
pub mod tunnel;

use std::net::SocketAddr;
use std::time::Duration;

use k8s_openapi::{ClusterResourceScope, NamespaceResourceScope};
use kube::api::{Api, Patch, PatchParams};
use kube::config::{AuthInfo, Config};
use kube::{Client, Resource, ResourceExt};
use secrecy::SecretString;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::kubeconfig::ClientCredentials;
use crate::names::FIELD_MANAGER;

/// Bound on one request to a tenant apiserver. A tenant that is starting or wedged must
/// not hold a pass for long; the next pass tries again.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Why no client could be built for a tenant.
#[derive(Debug, thiserror::Error)]
pub enum TenantClientError {
    /// The admin kubeconfig cannot be parsed.
    #[error("the admin kubeconfig is unusable: {0}")]
    Kubeconfig(String),
    /// The server URL or the address does not form a URI.
    #[error("cannot address the tenant apiserver at {address}: {reason}")]
    Address {
        /// The address tried.
        address: SocketAddr,
        /// Why it was refused.
        reason: String,
    },
    /// kube-rs refused the configuration (TLS material, for example).
    #[error("cannot build a client for the tenant apiserver: {0}")]
    Client(#[from] kube::Error),
}

/// The client configuration for a tenant apiserver reached at `address` (its Service's
/// ClusterIP and port) with the credentials of `admin_kubeconfig`. Pure: no request is
/// sent. The TLS server name is the host of the kubeconfig's server URL, the Service's
/// DNS name that the serving certificate carries.
pub fn tenant_config(admin_kubeconfig: &str, address: SocketAddr) -> Result<Config, TenantClientError> {
    let credentials = ClientCredentials::from_kubeconfig(admin_kubeconfig)
        .map_err(|error| TenantClientError::Kubeconfig(error.to_string()))?;
    let server_name = server_host(&credentials.server_url)
        .ok_or_else(|| TenantClientError::Kubeconfig(format!("no host in {}", credentials.server_url)))?;
    let cluster_url = format!("https://{address}").parse().map_err(|error: http::uri::InvalidUri| {
        TenantClientError::Address { address, reason: error.to_string() }
    })?;
    let mut config = Config::new(cluster_url);
    config.root_cert = Some(pem_blocks(&credentials.ca_pem));
    config.tls_server_name = Some(server_name);
    config.connect_timeout = Some(REQUEST_TIMEOUT);
    config.read_timeout = Some(REQUEST_TIMEOUT);
    config.write_timeout = Some(REQUEST_TIMEOUT);
    config.auth_info = AuthInfo {
        client_certificate_data: Some(base64_of(&credentials.client_cert_pem)),
        client_key_data: Some(SecretString::from(base64_of(&credentials.client_key_pem))),
        ..AuthInfo::default()
    };
    Ok(config)
}

/// A client for the tenant apiserver (see [`tenant_config`]).
pub fn tenant_client(admin_kubeconfig: &str, address: SocketAddr) -> Result<Client, TenantClientError> {
    Ok(Client::try_from(tenant_config(admin_kubeconfig, address)?)?)
}

/// Server-side applies the namespaced `object` inside the tenant, forced: the operator
/// owns the fields it sets, and a tenant's edit of one of them is drift that this puts
/// back.
pub async fn apply<K>(client: &Client, object: &K) -> Result<K, kube::Error>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + Serialize
        + DeserializeOwned
        + std::fmt::Debug,
{
    let namespace = object.namespace().unwrap_or_else(|| "default".to_string());
    let api: Api<K> = Api::namespaced(client.clone(), &namespace);
    api.patch(&object.name_any(), &apply_params(), &Patch::Apply(object)).await
}

/// [`apply`] for a cluster-scoped `object` (RBAC cluster roles and bindings, for example).
pub async fn apply_cluster_scoped<K>(client: &Client, object: &K) -> Result<K, kube::Error>
where
    K: Resource<DynamicType = (), Scope = ClusterResourceScope>
        + Clone
        + Serialize
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::all(client.clone());
    api.patch(&object.name_any(), &apply_params(), &Patch::Apply(object)).await
}

/// Applies every object of `objects` (see [`join::join_objects`]); returns how many.
/// Stops at the first failure: the next pass applies them all again.
pub async fn apply_join_objects(client: &Client, objects: &join::JoinObjects) -> Result<usize, kube::Error> {
    for object in &objects.config_maps {
        apply(client, object).await?;
    }
    for object in &objects.roles {
        apply(client, object).await?;
    }
    for object in &objects.role_bindings {
        apply(client, object).await?;
    }
    for object in &objects.cluster_roles {
        apply_cluster_scoped(client, object).await?;
    }
    for object in &objects.cluster_role_bindings {
        apply_cluster_scoped(client, object).await?;
    }
    for object in &objects.endpoint_slices {
        apply(client, object).await?;
    }
    Ok(objects.config_maps.len()
        + objects.endpoint_slices.len()
        + objects.roles.len()
        + objects.role_bindings.len()
        + objects.cluster_roles.len()
        + objects.cluster_role_bindings.len())
}

/// Applies the enabled addons (see [`addons::addon_objects`]) and deletes the workloads
/// and configuration of those turned off, where Nestor put them (label
/// [`addons::MANAGED_BY`]). Returns how many objects were applied.
pub async fn apply_addon_objects(
    client: &Client,
    objects: &addons::AddonObjects,
) -> Result<usize, kube::Error> {
    for object in &objects.service_accounts {
        apply(client, object).await?;
    }
    for object in &objects.cluster_roles {
        apply_cluster_scoped(client, object).await?;
    }
    for object in &objects.cluster_role_bindings {
        apply_cluster_scoped(client, object).await?;
    }
    for object in &objects.config_maps {
        apply(client, object).await?;
    }
    for object in &objects.services {
        apply(client, object).await?;
    }
    for object in &objects.daemon_sets {
        apply(client, object).await?;
    }
    for object in &objects.deployments {
        apply(client, object).await?;
    }
    for addon in &objects.disabled {
        match *addon {
            "kube-proxy" => {
                delete_if_ours::<k8s_openapi::api::apps::v1::DaemonSet>(client, "kube-proxy").await?;
                delete_if_ours::<k8s_openapi::api::core::v1::ConfigMap>(client, "kube-proxy").await?;
            }
            crate::resources::konnectivity::AGENT_NAME => {
                delete_if_ours::<k8s_openapi::api::apps::v1::DaemonSet>(client, addon).await?;
            }
            _ => {
                delete_if_ours::<k8s_openapi::api::apps::v1::Deployment>(client, "coredns").await?;
                delete_if_ours::<k8s_openapi::api::core::v1::Service>(client, "kube-dns").await?;
                delete_if_ours::<k8s_openapi::api::core::v1::ConfigMap>(client, "coredns").await?;
            }
        }
    }
    Ok(objects.service_accounts.len()
        + objects.cluster_roles.len()
        + objects.cluster_role_bindings.len()
        + objects.config_maps.len()
        + objects.services.len()
        + objects.daemon_sets.len()
        + objects.deployments.len())
}

/// Deletes `kube-system/<name>` of kind `K` when it carries Nestor's label: a tenant's own
/// kube-proxy or DNS of the same name is never touched.
async fn delete_if_ours<K>(client: &Client, name: &str) -> Result<(), kube::Error>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), "kube-system");
    let Some(object) = api.get_opt(name).await? else { return Ok(()) };
    let ours = object.labels().get(addons::MANAGED_BY.0).is_some_and(|value| value == addons::MANAGED_BY.1);
    if ours {
        api.delete(name, &Default::default()).await?;
        tracing::info!(kind = K::kind(&()).as_ref(), name, "deleted an addon object turned off in the spec");
    }
    Ok(())
}

/// How many nodes the tenant has, and its addons' workloads as they run.
pub async fn addon_state(
    client: &Client,
) -> Result<
    (usize, Option<k8s_openapi::api::apps::v1::DaemonSet>, Option<k8s_openapi::api::apps::v1::Deployment>),
    kube::Error,
> {
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    let count = nodes.list_metadata(&Default::default()).await?.items.len();
    let daemon_sets: Api<k8s_openapi::api::apps::v1::DaemonSet> =
        Api::namespaced(client.clone(), "kube-system");
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(client.clone(), "kube-system");
    Ok((count, daemon_sets.get_opt("kube-proxy").await?, deployments.get_opt("coredns").await?))
}

fn apply_params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

/// The host of an `https://host:port` URL, without port or brackets.
fn server_host(url: &str) -> Option<String> {
    let uri: http::Uri = url.parse().ok()?;
    let host = uri.host()?.trim_start_matches('[').trim_end_matches(']');
    (!host.is_empty()).then(|| host.to_string())
}

/// The DER of every certificate in a PEM bundle (kube-rs takes roots as DER).
fn pem_blocks(pem: &str) -> Vec<Vec<u8>> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .filter_map(Result::ok)
        .map(|certificate| certificate.as_ref().to_vec())
        .collect()
}

/// kube-rs takes client certificate and key data base64-encoded, as a kubeconfig holds them.
fn base64_of(pem: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(pem)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An admin kubeconfig as the operator emits it; the PEM blocks are placeholders
    /// (nothing here does a handshake).
    fn admin_kubeconfig_for_tests(server_url: &str) -> String {
        ClientCredentials {
            cluster_name: "team-a".into(),
            server_url: server_url.into(),
            ca_pem: "-----BEGIN CERTIFICATE-----\nQ0E=\n-----END CERTIFICATE-----\n".into(),
            user_name: "nestor-admin".into(),
            client_cert_pem: "-----BEGIN CERTIFICATE-----\nQ0VSVA==\n-----END CERTIFICATE-----\n".into(),
            client_key_pem: "-----BEGIN PRIVATE KEY-----\nS0VZ\n-----END PRIVATE KEY-----\n".into(),
        }
        .to_kubeconfig()
        .expect("kubeconfig")
    }

    #[test]
    fn the_tenant_is_reached_by_address_and_verified_by_its_service_name() {
        let kubeconfig = admin_kubeconfig_for_tests("https://team-a-apiserver.tenants.svc:6443");
        let address: SocketAddr = "10.96.0.17:6443".parse().expect("address");
        let config = tenant_config(&kubeconfig, address).expect("config");
        assert_eq!(config.cluster_url.to_string(), "https://10.96.0.17:6443/");
        assert_eq!(config.tls_server_name.as_deref(), Some("team-a-apiserver.tenants.svc"));
        assert_eq!(config.root_cert.as_ref().map(Vec::len), Some(1), "the tenant CA only");
        assert!(config.auth_info.client_certificate_data.is_some());
        assert!(config.auth_info.client_key_data.is_some());
        assert_eq!(config.read_timeout, Some(REQUEST_TIMEOUT));
    }

    #[test]
    fn an_unusable_kubeconfig_is_refused_with_the_reason() {
        let error = tenant_config("not: [a kubeconfig", "10.96.0.17:6443".parse().expect("address"))
            .expect_err("refused");
        assert!(error.to_string().starts_with("the admin kubeconfig is unusable"), "{error}");
    }

    #[test]
    fn server_hosts_drop_port_and_brackets() {
        assert_eq!(server_host("https://a.b.svc:6443").as_deref(), Some("a.b.svc"));
        assert_eq!(server_host("https://[fd00::1]:6443").as_deref(), Some("fd00::1"));
        assert_eq!(server_host("not a url"), None);
    }
}
