//! Everything that speaks to a tenant's etcd: the mutual-TLS client of the etcd
//! healthcheck certificate and the gateway calls made with it ([`gateway`]),
//! membership repair ([`membership`]), scaling one member at a time ([`scaling`]) and
//! keeping the database inside its space quota ([`maintenance`]).
//!
//! The health monitor ([`crate::health`]) calls into [`gateway`] for its etcd probe and
//! judges the answers; the reconcile pass calls [`replace_member`] and
//! [`take_scaling_step`] when the probe's member list calls for them, and
//! [`take_space_step`] when the members' database sizes or the `NOSPACE` alarm do.
//!
//! The operator uses the healthcheck client certificate for every call: etcd runs
//! without auth, so a certificate from the tenant's etcd CA is the only gate, and
//! etcd lets it manage membership.

pub mod gateway;
pub mod maintenance;
pub mod membership;
pub mod scaling;

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};

use crate::names::TenantNames;
use crate::resources::{CA_CERT_KEY, TLS_CERT_KEY, TLS_PRIVATE_KEY_KEY};
use crate::transport::TlsClient;

/// Replaces a broken member (see [`membership::replace_member`]) with the etcd
/// healthcheck client certificate, which etcd lets manage membership (no auth is
/// enabled; the client CA is the only gate). Returns the new member ID.
pub async fn replace_member(
    meta: &Client,
    names: &TenantNames,
    repair: &membership::MemberRepair,
    timeout: Duration,
) -> Result<u64, membership::MembershipError> {
    let secrets: Api<Secret> = Api::namespaced(meta.clone(), &names.namespace);
    let tls =
        read_healthcheck_client(&secrets, names).await.ok_or(membership::MembershipError::Credentials)?;
    membership::replace_member(&tls, repair, timeout).await
}

/// Does the etcd call of a scaling step (see [`scaling::run_gateway_step`]) with the
/// etcd healthcheck client certificate, as [`replace_member`] does.
pub async fn take_scaling_step(
    meta: &Client,
    names: &TenantNames,
    step: &scaling::ScalingStep,
    timeout: Duration,
) -> Result<String, scaling::ScalingError> {
    let secrets: Api<Secret> = Api::namespaced(meta.clone(), &names.namespace);
    let tls = read_healthcheck_client(&secrets, names).await.ok_or_else(|| scaling::ScalingError {
        call: "credentials",
        reason: "no usable etcd client certificate".into(),
    })?;
    scaling::run_gateway_step(&tls, names, step, timeout).await
}

/// Does the etcd calls of a space maintenance step (see [`maintenance::run_step`]) with
/// the etcd healthcheck client certificate, as [`replace_member`] does.
pub async fn take_space_step(
    meta: &Client,
    names: &TenantNames,
    step: &maintenance::SpaceStep,
    timeout: Duration,
) -> Result<maintenance::StepOutcome, String> {
    let secrets: Api<Secret> = Api::namespaced(meta.clone(), &names.namespace);
    let tls = read_healthcheck_client(&secrets, names)
        .await
        .ok_or_else(|| "no usable etcd client certificate".to_string())?;
    maintenance::run_step(&tls, step, timeout).await
}

/// TLS client of the etcd healthcheck certificate; `None` when the Secret is not there (yet).
async fn read_healthcheck_client(secrets: &Api<Secret>, names: &TenantNames) -> Option<TlsClient> {
    let secret = secrets.get_opt(&names.etcd_healthcheck_client_secret()).await.ok()??;
    healthcheck_client(&secret)
}

/// TLS client of the etcd healthcheck client certificate in `secret`; `None` when a
/// key is missing or the certificate is unusable (logged).
pub fn healthcheck_client(secret: &Secret) -> Option<TlsClient> {
    let data = secret.data.as_ref()?;
    let value = |key: &str| data.get(key).map(|bytes| bytes.0.as_slice());
    match TlsClient::new(value(CA_CERT_KEY)?, value(TLS_CERT_KEY)?, value(TLS_PRIVATE_KEY_KEY)?) {
        Ok(tls) => Some(tls),
        Err(error) => {
            tracing::warn!(%error, "etcd healthcheck client certificate is unusable");
            None
        }
    }
}
