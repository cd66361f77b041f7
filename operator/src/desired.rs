//! The pure "build" stage of the reconcile pipeline: from a `TenantCluster` and the
//! Secrets that exist for it, every object the reconciler must server-side-apply,
//! in apply order, plus the facts status needs.
//!
//! This is where the tenant's roots of trust are protected. A CA, the
//! service-account key or the encryption key is generated only while nothing that
//! depends on it can exist yet; after that a missing or unreadable one is a
//! permanent error ([`DesiredStateError::CaMissing`] and friends), never a silent
//! replacement: a new CA would orphan every credential it signed, a new
//! service-account key would invalidate every token, and a new encryption key
//! would make every Secret stored in the tenant's etcd unreadable.
//!
//! Leaf certificates are kept while [`renewal_reason`] finds nothing wrong and
//! re-issued otherwise, with the reason recorded. With nothing to re-issue, the
//! output is byte-identical to the previous pass, so a steady tenant costs no writes.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv6Addr;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;

use crate::api::{ServiceType, TenantCluster, TenantClusterSpec};
use crate::duration::parse_duration;
use crate::kubeconfig::{ClientCredentials, KubeconfigError};
use crate::names::{Component, TenantNames};
use crate::pki::{
    Authority, CA_VALIDITY, CertificateAuthority, EncryptionKey, EncryptionProvider, KeyAlgorithm,
    LeafCertificate, PkiError, RenewalReason, ServiceAccountKeyPair, TenantPkiInputs, TenantPkiPlan,
    certificate_not_after, encryption_configuration, issue, renewal_reason,
};
use crate::resources::{
    APISERVER_PORT, ConfigHashes, ENCRYPTION_CONFIG_KEY, EtcdMembers, ImageSet, KUBECONFIG_KEY,
    ResourceError, SERVICE_ACCOUNT_PRIVATE_KEY_KEY, TLS_CERT_KEY, TLS_PRIVATE_KEY_KEY, TenantInputs,
    TenantOwner, apiserver_config_map, ca_secret, config_hash, control_plane_manifests,
    encryption_config_secret, etcd_config_map, image_version, kubeconfig_secret, mounted_secret_names,
    service_account_key_secret, tls_secret,
};

/// Condition type whose `True` status proves the tenant's PKI was complete once.
pub const PKI_READY_CONDITION: &str = "PKIReady";

/// Name of the data-encryption key in a newly generated EncryptionConfiguration.
const ENCRYPTION_KEY_NAME: &str = "key1";

/// Data of one Secret: key → raw bytes (already base64-decoded).
pub type SecretData = BTreeMap<String, Vec<u8>>;

/// The tenant's Secrets as they exist in its namespace, by name. Secrets that are
/// not part of the tenant PKI are ignored.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ObservedSecrets {
    secrets: BTreeMap<String, SecretData>,
}

impl fmt::Debug for ObservedSecrets {
    // Secret data holds private keys: names only.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.debug_set().entries(self.secrets.keys()).finish()
    }
}

impl ObservedSecrets {
    /// No Secrets: a tenant seen for the first time.
    pub fn new() -> Self {
        Self::default()
    }

    /// The named Secrets among `secrets` (typically a list by the tenant's label
    /// selector); `data` only, since the API server folds `stringData` into it.
    pub fn from_secrets<'a>(secrets: impl IntoIterator<Item = &'a Secret>) -> Self {
        let secrets = secrets
            .into_iter()
            .filter_map(|secret| {
                let name = secret.metadata.name.clone()?;
                let data =
                    secret.data.iter().flatten().map(|(key, value)| (key.clone(), value.0.clone())).collect();
                Some((name, data))
            })
            .collect();
        Self { secrets }
    }

    /// Records (or replaces) Secret `name` with `data`.
    pub fn insert(&mut self, name: impl Into<String>, data: SecretData) {
        self.secrets.insert(name.into(), data);
    }

    /// Forgets Secret `name`, returning its data.
    pub fn remove(&mut self, name: &str) -> Option<SecretData> {
        self.secrets.remove(name)
    }

    /// Data of Secret `name`, if it exists.
    pub fn get(&self, name: &str) -> Option<&SecretData> {
        self.secrets.get(name)
    }

    /// Whether Secret `name` exists.
    pub fn contains(&self, name: &str) -> bool {
        self.secrets.contains_key(name)
    }

    /// Value `key` of Secret `name`: `None` when either is absent, `Some(Err(NotUtf8))`
    /// when the value is not UTF-8 (no PEM or YAML document can be).
    fn text(&self, name: &str, key: &str) -> Option<Result<&str, NotUtf8>> {
        let bytes = self.secrets.get(name)?.get(key)?;
        Some(std::str::from_utf8(bytes).map_err(|_| NotUtf8))
    }
}

/// A Secret value that is not UTF-8.
#[derive(Debug)]
struct NotUtf8;

/// Which Kubernetes version one control-plane Deployment runs, as observed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeploymentVersion {
    /// The version in the pod template's image tag: what the Deployment rolls towards.
    pub template: Option<String>,
    /// `template`, once every replica runs it: the Deployment controller observed the
    /// latest spec, and the replicas it has, the updated ones and the available ones all
    /// equal the replicas asked for (an old pod still counted means the rollout is not
    /// over). `None` while a rollout is in progress.
    pub rolled_out: Option<String>,
    /// Replicas the Deployment asks for (`spec.replicas`).
    pub replicas: i32,
    /// Replicas available (Ready for `minReadySeconds`).
    pub available: i32,
}

impl DeploymentVersion {
    /// The version state of `deployment`, from its first container's image.
    pub fn from_deployment(deployment: &Deployment) -> Self {
        let template = deployment
            .spec
            .as_ref()
            .and_then(|spec| spec.template.spec.as_ref())
            .and_then(|pod| pod.containers.first())
            .and_then(|container| container.image.as_deref())
            .and_then(image_version)
            .map(str::to_string);
        let wanted = deployment.spec.as_ref().and_then(|spec| spec.replicas).unwrap_or(1);
        let complete = deployment.status.as_ref().is_some_and(|status| {
            let observed = match (deployment.metadata.generation, status.observed_generation) {
                (Some(generation), Some(observed)) => observed >= generation,
                (generation, _) => generation.is_none(),
            };
            observed
                && status.replicas.unwrap_or(0) == wanted
                && status.updated_replicas.unwrap_or(0) == wanted
                && status.available_replicas.unwrap_or(0) == wanted
        });
        let rolled_out = template.clone().filter(|_| complete);
        let available = deployment.status.as_ref().and_then(|status| status.available_replicas).unwrap_or(0);
        Self { template, rolled_out, replicas: wanted, available }
    }
}

/// The tenant's control-plane Deployments as they exist, fed to the build stage like the
/// observed Secrets: the controller-manager's and the scheduler's versions follow the
/// apiserver's rollout.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObservedRollout {
    /// The kube-apiserver Deployment, if it exists.
    pub apiserver: Option<DeploymentVersion>,
    /// The kube-controller-manager Deployment, if it exists.
    pub controller_manager: Option<DeploymentVersion>,
    /// The kube-scheduler Deployment, if it exists.
    pub scheduler: Option<DeploymentVersion>,
}

impl ObservedRollout {
    /// The rollout state of the three Deployments (`None` for one that does not exist).
    pub fn from_deployments(
        apiserver: Option<&Deployment>,
        controller_manager: Option<&Deployment>,
        scheduler: Option<&Deployment>,
    ) -> Self {
        Self {
            apiserver: apiserver.map(DeploymentVersion::from_deployment),
            controller_manager: controller_manager.map(DeploymentVersion::from_deployment),
            scheduler: scheduler.map(DeploymentVersion::from_deployment),
        }
    }

    /// The version every replica of the three Deployments runs, when they run one and
    /// the same.
    pub fn control_plane_version(&self) -> Option<&str> {
        let apiserver = self.apiserver.as_ref()?.rolled_out.as_deref()?;
        let controller_manager = self.controller_manager.as_ref()?.rolled_out.as_deref()?;
        let scheduler = self.scheduler.as_ref()?.rolled_out.as_deref()?;
        (apiserver == controller_manager && apiserver == scheduler).then_some(apiserver)
    }
}

/// The Kubernetes version the controller-manager may run, or `None` when it must not be
/// applied on this pass (see [`version_after_apiserver`]).
pub fn controller_manager_version(spec_version: &str, rollout: &ObservedRollout) -> Option<String> {
    version_after_apiserver(spec_version, rollout, rollout.controller_manager.as_ref())
}

/// The Kubernetes version the scheduler may run, or `None` when it must not be applied
/// on this pass (see [`version_after_apiserver`]).
pub fn scheduler_version(spec_version: &str, rollout: &ObservedRollout) -> Option<String> {
    version_after_apiserver(spec_version, rollout, rollout.scheduler.as_ref())
}

/// The version a component that talks to the apiserver (the controller-manager, the
/// scheduler: `component`, as observed) may run, or `None` when it must not be applied
/// on this pass.
///
/// Kubernetes' version-skew policy forbids a kube-controller-manager or kube-scheduler
/// newer than any kube-apiserver it talks to. So an upgrade rolls the apiserver first
/// and these only once every apiserver replica runs the new version:
///
/// - no apiserver Deployment yet (a new tenant): `spec_version`, nothing older is running;
/// - the apiserver rolled out completely: the version its replicas run;
/// - the apiserver is rolling: the component stays at its template's version;
/// - the apiserver is rolling and the component has no Deployment: none until the
///   rollout finished, since no version is known to be safe for it.
fn version_after_apiserver(
    spec_version: &str,
    rollout: &ObservedRollout,
    component: Option<&DeploymentVersion>,
) -> Option<String> {
    let Some(apiserver) = &rollout.apiserver else {
        return Some(spec_version.trim_start_matches('v').to_string());
    };
    if let Some(rolled_out) = &apiserver.rolled_out {
        return Some(rolled_out.clone());
    }
    component.and_then(|component| component.template.clone())
}

/// Whether the TenantCluster's status proves its PKI existed at some point. A
/// `PKIReady=True` condition says so directly; `kubeconfigSecretName` and
/// `certificatesExpireAt` are written only once the PKI Secrets exist, and stay
/// set when a later pass fails, so the proof survives a status that went
/// `PKIReady=False` because a CA disappeared. (Write `certificatesExpireAt`
/// only after the Secrets were applied, or this proof fires too early.)
pub fn pki_was_established(tenant: &TenantCluster) -> bool {
    let Some(status) = &tenant.status else {
        return false;
    };
    status
        .conditions
        .iter()
        .any(|condition| condition.type_ == PKI_READY_CONDITION && condition.status == "True")
        || status.kubeconfig_secret_name.is_some()
        || status.certificates_expire_at.is_some()
}

/// Why no desired state could be built. Every variant but `Pki` is permanent: the
/// same input fails the same way until a human edits the spec or restores a Secret
/// (`Resource` and `Kubeconfig` are bugs, which a retry does not fix either).
#[derive(Debug, thiserror::Error)]
pub enum DesiredStateError {
    /// A spec field cannot be built; `field` is its JSON path.
    #[error("invalid spec: {field}: {reason}")]
    InvalidSpec { field: &'static str, reason: String },
    /// The TenantCluster lacks name, namespace or uid (never for an object read from the API).
    #[error("TenantCluster has no metadata.{0}")]
    MissingMetadata(&'static str),
    /// A CA Secret is gone while credentials it signed may be in use.
    #[error("certificate authority Secret {secret} is missing; restore it from a backup")]
    CaMissing { secret: String },
    /// A CA Secret exists but does not hold a CA with its matching key.
    #[error("certificate authority Secret {secret} is invalid: {reason}")]
    CaInvalid { secret: String, reason: String },
    /// The service-account key or the encryption key is gone from a tenant that used it.
    #[error("key Secret {secret} is missing {key}; restore it from a backup")]
    KeyMissing { secret: String, key: &'static str },
    /// The service-account key or the encryption configuration does not parse.
    #[error("key Secret {secret} is invalid: {reason}")]
    KeyInvalid { secret: String, reason: String },
    /// Generating or signing a key failed.
    #[error("PKI: {0}")]
    Pki(#[source] PkiError),
    /// A manifest template and its builder disagree (a bug).
    #[error("building manifests: {0}")]
    Resource(#[source] ResourceError),
    /// A kubeconfig could not be rendered (a bug).
    #[error("rendering a kubeconfig: {0}")]
    Kubeconfig(#[from] KubeconfigError),
}

impl DesiredStateError {
    /// True when retrying with the same input cannot succeed.
    pub fn is_permanent(&self) -> bool {
        !matches!(self, DesiredStateError::Pki(_))
    }

    /// CamelCase reason for conditions and Events.
    pub fn reason(&self) -> &'static str {
        match self {
            DesiredStateError::InvalidSpec { .. } => "InvalidSpec",
            DesiredStateError::MissingMetadata(_) => "MissingMetadata",
            DesiredStateError::CaMissing { .. } => "CAMissing",
            DesiredStateError::CaInvalid { .. } => "CAInvalid",
            DesiredStateError::KeyMissing { .. } => "KeyMissing",
            DesiredStateError::KeyInvalid { .. } => "KeyInvalid",
            DesiredStateError::Pki(_) => "PKIFailed",
            DesiredStateError::Resource(_) | DesiredStateError::Kubeconfig(_) => "BuildFailed",
        }
    }
}

impl From<PkiError> for DesiredStateError {
    fn from(error: PkiError) -> Self {
        // Only the leaf validity from the spec can push a certificate past the
        // representable dates; everything else is key generation or signing.
        match error {
            PkiError::ValidityOutOfRange { .. } => DesiredStateError::InvalidSpec {
                field: "spec.pki.certificateValidity",
                reason: error.to_string(),
            },
            other => DesiredStateError::Pki(other),
        }
    }
}

impl From<ResourceError> for DesiredStateError {
    fn from(error: ResourceError) -> Self {
        match error {
            ResourceError::UnsupportedVersion { .. } => {
                DesiredStateError::InvalidSpec { field: "spec.version", reason: error.to_string() }
            }
            ResourceError::MissingMetadata(field) => DesiredStateError::MissingMetadata(field),
            other => DesiredStateError::Resource(other),
        }
    }
}

/// One object to server-side-apply.
#[derive(Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum DesiredObject {
    Secret(Secret),
    ConfigMap(ConfigMap),
    Service(Service),
    StatefulSet(StatefulSet),
    Deployment(Deployment),
    NetworkPolicy(NetworkPolicy),
}

impl DesiredObject {
    /// The object's metadata.
    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            DesiredObject::Secret(object) => &object.metadata,
            DesiredObject::ConfigMap(object) => &object.metadata,
            DesiredObject::Service(object) => &object.metadata,
            DesiredObject::StatefulSet(object) => &object.metadata,
            DesiredObject::Deployment(object) => &object.metadata,
            DesiredObject::NetworkPolicy(object) => &object.metadata,
        }
    }

    /// `metadata.name` (every builder sets it).
    pub fn name(&self) -> &str {
        self.metadata().name.as_deref().unwrap_or_default()
    }

    /// The object's kind, e.g. `Secret`.
    pub fn kind(&self) -> &'static str {
        use k8s_openapi::Resource;
        match self {
            DesiredObject::Secret(_) => Secret::KIND,
            DesiredObject::ConfigMap(_) => ConfigMap::KIND,
            DesiredObject::Service(_) => Service::KIND,
            DesiredObject::StatefulSet(_) => StatefulSet::KIND,
            DesiredObject::Deployment(_) => Deployment::KIND,
            DesiredObject::NetworkPolicy(_) => NetworkPolicy::KIND,
        }
    }
}

impl fmt::Debug for DesiredObject {
    // Secrets hold private keys: kind and name only.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}/{}", self.kind(), self.name())
    }
}

/// A leaf certificate issued on this pass, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedLeaf {
    /// Which leaf.
    pub certificate: LeafCertificate,
    /// The Secret it is stored in.
    pub secret_name: String,
    /// Why the stored one could not be kept.
    pub reason: RenewalReason,
    /// End of the new certificate's validity.
    pub not_after: Timestamp,
}

/// Long-lived key material generated on this pass (only ever for a new tenant).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum GeneratedKey {
    /// A certificate authority.
    Authority(Authority),
    /// The service-account signing key pair.
    ServiceAccountKey,
    /// The encryption-at-rest key.
    EncryptionKey,
}

/// The tenant's kubeconfig documents, as stored in their Secrets.
#[derive(Clone, PartialEq, Eq)]
pub struct Kubeconfigs {
    /// Admin kubeconfig for clients outside the meta cluster, using [`DesiredState::endpoint`].
    pub admin: String,
    /// Admin kubeconfig using the apiserver Service's in-cluster DNS name.
    pub admin_in_cluster: String,
    /// The controller-manager's kubeconfig (in-cluster DNS name).
    pub controller_manager: String,
    /// The scheduler's kubeconfig (in-cluster DNS name).
    pub scheduler: String,
}

impl fmt::Debug for Kubeconfigs {
    // Each document embeds a private key.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.debug_struct("Kubeconfigs").finish_non_exhaustive()
    }
}

/// Everything one reconcile pass should apply, and what status reports.
#[derive(Clone, Debug, PartialEq)]
pub struct DesiredState {
    /// Objects in apply order: the CA Secrets, the service-account and encryption
    /// Secrets, the leaf Secrets, the kubeconfig Secrets; then etcd's Service,
    /// NetworkPolicy, ConfigMap and StatefulSet; the apiserver's ConfigMap, Service and
    /// Deployment; the controller-manager and scheduler Deployments. The Secret order matters: a
    /// pass interrupted half-way leaves roots of trust without dependents, never
    /// dependents without their roots, which is what lets the next pass tell a
    /// half-created tenant from one that lost a CA.
    pub objects: Vec<DesiredObject>,
    /// Leaves issued on this pass, in plan order; empty when everything was kept.
    pub issued: Vec<IssuedLeaf>,
    /// CAs and keys generated on this pass; empty for an established tenant.
    pub generated: Vec<GeneratedKey>,
    /// Secrets of CAs and keys that were loaded from the observed Secrets, not
    /// generated: their content is the cluster's own, so the apply stage updates them
    /// but never re-creates one that vanished after the observation.
    pub loaded_key_secrets: BTreeSet<String>,
    /// Earliest `notAfter` among the leaf certificates (status `certificatesExpireAt`).
    pub certificates_expire_at: Timestamp,
    /// When the first leaf enters its renewal window (`notAfter - renewBefore`): the
    /// reconciler comes back by then, so renewal never waits for an unrelated event.
    pub renewal_due_at: Timestamp,
    /// URL of the tenant apiserver as written into the admin kubeconfig (status `endpoint`).
    pub endpoint: String,
    /// Secret holding the admin kubeconfig under `value` (status `kubeconfigSecretName`).
    pub kubeconfig_secret_name: String,
    /// The rendered kubeconfigs.
    pub kubeconfigs: Kubeconfigs,
    /// Pod-template config hashes, as built into the workloads.
    pub config_hashes: ConfigHashes,
    /// The version the controller-manager Deployment was built for (see
    /// [`controller_manager_version`]); `None` when it is not among `objects` on this pass.
    pub controller_manager_version: Option<String>,
    /// The version the scheduler Deployment was built for (see [`scheduler_version`]);
    /// `None` when it is not among `objects` on this pass.
    pub scheduler_version: Option<String>,
    /// The backup CronJob (`spec.backup`), applied by the backup step
    /// ([`crate::backup::keep_backups`]) with the objects that outlive the tenant.
    pub backup_cronjob: Option<k8s_openapi::api::batch::v1::CronJob>,
}

impl DesiredState {
    /// The Secrets among [`objects`](Self::objects), in apply order.
    pub fn secrets(&self) -> impl Iterator<Item = &Secret> {
        self.objects.iter().filter_map(|object| match object {
            DesiredObject::Secret(secret) => Some(secret),
            _ => None,
        })
    }
}

/// Builds the desired state of `tenant` given the Secrets that exist for it and the
/// rollout state of its Deployments, with etcd at rest at `spec.etcd.replicas` members.
/// Pure: no client, no I/O; `now` decides certificate validity and renewal, and
/// `operator_namespace` (see [`TenantInputs::operator_namespace`]) whom the etcd
/// NetworkPolicy admits besides the tenant's apiserver.
pub fn desired_state(
    tenant: &TenantCluster,
    observed: &ObservedSecrets,
    rollout: &ObservedRollout,
    now: Timestamp,
    operator_namespace: Option<&str>,
) -> Result<DesiredState, DesiredStateError> {
    desired_state_with_etcd(tenant, observed, rollout, now, tenant.spec.etcd.replicas, operator_namespace)
}

/// The etcd members to render: `running` (what the member list holds, see
/// [`crate::etcd::scaling`]) for the StatefulSet and its initial cluster, and for
/// the apiserver's `--etcd-servers` the size etcd last settled at
/// (`status.etcdMembers`), at most `spec.etcd.replicas`. So the apiserver rolls once
/// per scaling: at the start of a scale-down, naming only the members that stay, and
/// at the end of a scale-up, once every new member votes. It never names a learner,
/// which refuses client requests, nor a member about to be removed.
pub fn etcd_members(tenant: &TenantCluster, running: i32) -> EtcdMembers {
    let wanted = tenant.spec.etcd.replicas;
    let settled = tenant.status.as_ref().and_then(|status| status.etcd_members).unwrap_or(wanted);
    EtcdMembers { running, serving: wanted.min(settled).max(1) }
}

/// What the PKI is planned from. The etcd certificates name every member that runs
/// as well as every member wanted: a scale-down shrinks them only as members leave.
/// etcd reads its certificate files again on each handshake and the kubelet refreshes
/// a Secret volume within a minute, so certificates naming only the members that stay
/// would cut the leaving ones off from their peers and from the probe before they are
/// removed, and the scale-down would wait for their health for ever.
fn pki_inputs(names: &TenantNames, spec: &TenantClusterSpec, etcd_running: i32) -> TenantPkiInputs {
    let mut inputs = TenantPkiInputs::from_spec(names.clone(), spec);
    inputs.etcd_replicas = inputs.etcd_replicas.max(etcd_running);
    inputs
}

/// [`desired_state`] with `etcd_running` etcd members (see [`etcd_members`]), which
/// differs from `spec.etcd.replicas` while etcd is being scaled.
pub fn desired_state_with_etcd(
    tenant: &TenantCluster,
    observed: &ObservedSecrets,
    rollout: &ObservedRollout,
    now: Timestamp,
    etcd_running: i32,
    operator_namespace: Option<&str>,
) -> Result<DesiredState, DesiredStateError> {
    let owner = TenantOwner::from_tenant_cluster(tenant)?;
    let names = &owner.names;
    let spec = &tenant.spec;

    // Validate everything that comes from the spec before touching any key material.
    let (validity, renew_before) = pki_durations(&spec.pki, now)?;
    let controller_manager_version = controller_manager_version(&spec.version, rollout);
    let scheduler_version = scheduler_version(&spec.version, rollout);
    let mut images = ImageSet::for_spec(spec)?;
    // Only the component held reads its image; a deferred one is not built at all.
    if let Some(version) = &controller_manager_version {
        images = images.with_controller_manager_at(spec, version);
    }
    if let Some(version) = &scheduler_version {
        images = images.with_scheduler_at(spec, version);
    }
    let plan = TenantPkiPlan::new(&pki_inputs(names, spec, etcd_running))
        .map_err(|error| plan_error(error, spec))?;
    let endpoint = endpoint(names, spec)?;
    let in_cluster_url = in_cluster_url(names);
    let algorithm = KeyAlgorithm::from(spec.pki.key_algorithm);

    let established = pki_was_established(tenant);
    let mut generated = Vec::new();
    let mut loaded_key_secrets = BTreeSet::new();

    // Roots of trust: load, or generate only while nothing can depend on them.
    let mut authorities = BTreeMap::new();
    for planned in plan.authorities() {
        let authority = match load_authority(observed, &planned.secret_name)? {
            Some(loaded) => {
                loaded_key_secrets.insert(planned.secret_name.clone());
                loaded
            }
            None if established || any_dependent_exists(observed, &plan, names, planned.authority) => {
                return Err(DesiredStateError::CaMissing { secret: planned.secret_name.clone() });
            }
            None => {
                generated.push(GeneratedKey::Authority(planned.authority));
                CertificateAuthority::generate(planned.common_name, algorithm, CA_VALIDITY, now)?
            }
        };
        authorities.insert(planned.authority, authority);
    }
    // Keys are applied before any leaf, so a leaf Secret proves they were applied too.
    let keys_in_use = established || any_leaf_exists(observed, &plan, names);
    let service_account =
        service_account_key(observed, plan.service_account_key_secret(), keys_in_use, algorithm)?;
    if service_account.generated {
        generated.push(GeneratedKey::ServiceAccountKey);
    } else {
        loaded_key_secrets.insert(plan.service_account_key_secret().to_string());
    }
    let encryption = encryption_config(observed, &names.encryption_config_secret(), keys_in_use)?;
    if encryption.generated {
        generated.push(GeneratedKey::EncryptionKey);
    } else {
        loaded_key_secrets.insert(names.encryption_config_secret());
    }

    // Leaves: keep, or re-issue with the reason.
    let mut issued = Vec::new();
    let mut leaves = BTreeMap::new();
    for planned in plan.certificates() {
        let ca = &authorities[&planned.signer];
        let stored = stored_leaf(observed, planned.certificate, &planned.secret_name);
        let reason = match &stored {
            Ok((cert, key)) => {
                renewal_reason(cert.as_deref(), key.as_deref(), ca, &planned.request, renew_before, now)
            }
            Err(reason) => Some(reason.clone()),
        };
        let leaf = match (reason, stored) {
            (None, Ok((Some(cert_pem), Some(key_pem)))) => {
                let not_after = certificate_not_after(&cert_pem)?;
                Leaf { cert_pem, key_pem, not_after }
            }
            (reason, _) => {
                let new = issue(ca, &planned.request, algorithm, validity, now)?;
                issued.push(IssuedLeaf {
                    certificate: planned.certificate,
                    secret_name: planned.secret_name.clone(),
                    // `renewal_reason` keeps a leaf only when both halves are there.
                    reason: reason.unwrap_or(RenewalReason::Missing),
                    not_after: new.not_after,
                });
                Leaf { cert_pem: new.cert_pem, key_pem: new.key_pem, not_after: new.not_after }
            }
        };
        leaves.insert(planned.certificate, leaf);
    }
    let certificates_expire_at = leaves.values().map(|leaf| leaf.not_after).min().unwrap_or(Timestamp::MAX);

    // Secrets, in the order documented on `DesiredState::objects`.
    let mut secrets = Vec::new();
    for planned in plan.authorities() {
        let ca = &authorities[&planned.authority];
        secrets.push(ca_secret(&owner, &planned.secret_name, Component::Pki, ca.cert_pem(), ca.key_pem())?);
    }
    secrets.push(service_account_key_secret(
        &owner,
        &service_account.key_pair.private_key_pem,
        &service_account.key_pair.public_key_pem,
    )?);
    secrets.push(encryption_config_secret(&owner, &encryption.document)?);
    for planned in plan.certificates() {
        if is_kubeconfig_leaf(planned.certificate) {
            continue;
        }
        let leaf = &leaves[&planned.certificate];
        let ca = &authorities[&planned.signer];
        secrets.push(tls_secret(
            &owner,
            &planned.secret_name,
            leaf_component(planned.certificate),
            &leaf.cert_pem,
            &leaf.key_pem,
            ca.cert_pem(),
        )?);
    }

    let cluster_ca = &authorities[&Authority::Cluster];
    let credentials = |certificate: LeafCertificate, server_url: &str| {
        let leaf = &leaves[&certificate];
        ClientCredentials {
            cluster_name: names.tenant.clone(),
            server_url: server_url.to_string(),
            ca_pem: cluster_ca.cert_pem().to_string(),
            user_name: plan.certificate(certificate).request.common_name.clone(),
            client_cert_pem: leaf.cert_pem.clone(),
            client_key_pem: leaf.key_pem.clone(),
        }
    };
    let kubeconfigs = Kubeconfigs {
        controller_manager: credentials(LeafCertificate::ControllerManagerClient, &in_cluster_url)
            .to_kubeconfig()?,
        scheduler: credentials(LeafCertificate::SchedulerClient, &in_cluster_url).to_kubeconfig()?,
        admin: credentials(LeafCertificate::AdminClient, &endpoint).to_kubeconfig()?,
        admin_in_cluster: credentials(LeafCertificate::AdminClient, &in_cluster_url).to_kubeconfig()?,
    };
    for (secret_name, component, document) in [
        (
            names.controller_manager_kubeconfig_secret(),
            Component::ControllerManager,
            &kubeconfigs.controller_manager,
        ),
        (names.scheduler_kubeconfig_secret(), Component::Scheduler, &kubeconfigs.scheduler),
        (names.admin_kubeconfig_secret(), Component::Pki, &kubeconfigs.admin),
        (names.admin_in_cluster_kubeconfig_secret(), Component::Pki, &kubeconfigs.admin_in_cluster),
    ] {
        secrets.push(kubeconfig_secret(&owner, &secret_name, component, document)?);
    }

    // Each component's hash covers exactly what its pods mount, so a re-issued
    // certificate rolls the pods that read it and no others.
    let apiserver_config = apiserver_config_map(&owner)?;
    let secrets_by_name: BTreeMap<&str, &Secret> =
        secrets.iter().map(|secret| (secret.metadata.name.as_deref().unwrap_or_default(), secret)).collect();
    let mounted = |component: Component| -> Vec<&Secret> {
        mounted_secret_names(names, component)
            .iter()
            .filter_map(|name| secrets_by_name.get(name.as_str()).copied())
            .collect()
    };
    let config_hashes = ConfigHashes {
        // etcd reloads its certificate files on every TLS handshake and the kubelet
        // refreshes mounted Secrets in place, so a renewed etcd certificate needs no
        // restart. Rolling the members for it would take a single-member tenant's
        // datastore (and with it the apiserver's /livez) down at every renewal.
        etcd: config_hash(&[], &[]),
        apiserver: config_hash(&mounted(Component::ApiServer), &[&apiserver_config]),
        controller_manager: config_hash(&mounted(Component::ControllerManager), &[]),
        scheduler: config_hash(&mounted(Component::Scheduler), &[]),
    };

    let etcd = etcd_members(tenant, etcd_running);
    let inputs = TenantInputs {
        owner: &owner,
        spec,
        images: &images,
        config_hashes: &config_hashes,
        etcd_members: etcd,
        operator_namespace,
    };
    let manifests = control_plane_manifests(&inputs)?;
    let backup_cronjob = match &spec.backup {
        Some(backup) => Some(crate::resources::backup_cronjob(&inputs, backup)?),
        None => None,
    };
    // Recorded by the reconciler the first time etcd answered healthy; never cleared,
    // so members never go back to bootstrapping a new cluster. A single member has no
    // peer to join: it always bootstraps (`new` is ignored when its data dir exists,
    // and with its data gone there is nothing left to join). A member added by a
    // scale-up makes it two, so that one joins.
    let etcd_formed =
        etcd.running > 1 && tenant.status.as_ref().is_some_and(|status| status.etcd_cluster_id.is_some());
    let mut objects: Vec<DesiredObject> = secrets.into_iter().map(DesiredObject::Secret).collect();
    objects.extend([
        DesiredObject::Service(manifests.etcd_service),
        DesiredObject::NetworkPolicy(manifests.etcd_network_policy),
        // Before the StatefulSet: its pods read their bootstrap state from it.
        DesiredObject::ConfigMap(etcd_config_map(&inputs, etcd_formed)),
        DesiredObject::StatefulSet(manifests.etcd_statefulset),
        DesiredObject::ConfigMap(manifests.apiserver_config_map),
        DesiredObject::Service(manifests.apiserver_service),
        DesiredObject::Deployment(manifests.apiserver_deployment),
    ]);
    if controller_manager_version.is_some() {
        objects.push(DesiredObject::Deployment(manifests.controller_manager_deployment));
    }
    if scheduler_version.is_some() {
        objects.push(DesiredObject::Deployment(manifests.scheduler_deployment));
    }

    let renewal_due_at = jiff::SignedDuration::try_from(renew_before)
        .ok()
        .and_then(|window| certificates_expire_at.checked_sub(window).ok())
        .unwrap_or(now);
    Ok(DesiredState {
        objects,
        issued,
        generated,
        loaded_key_secrets,
        certificates_expire_at,
        renewal_due_at,
        endpoint,
        kubeconfig_secret_name: names.admin_kubeconfig_secret(),
        kubeconfigs,
        config_hashes,
        controller_manager_version,
        scheduler_version,
        backup_cronjob,
    })
}

/// A leaf certificate to store: kept or freshly issued.
struct Leaf {
    cert_pem: String,
    key_pem: String,
    not_after: Timestamp,
}

/// `spec.pki.certificateValidity` and `spec.pki.renewBefore`, checked against each other.
fn pki_durations(
    pki: &crate::api::PkiSpec,
    now: Timestamp,
) -> Result<(Duration, Duration), DesiredStateError> {
    let validity = parse_duration(&pki.certificate_validity).map_err(|error| {
        DesiredStateError::InvalidSpec { field: "spec.pki.certificateValidity", reason: error.to_string() }
    })?;
    let renew_before = parse_duration(&pki.renew_before).map_err(|error| DesiredStateError::InvalidSpec {
        field: "spec.pki.renewBefore",
        reason: error.to_string(),
    })?;
    if renew_before >= validity {
        // Otherwise every certificate would be due for renewal the moment it is issued.
        return Err(DesiredStateError::InvalidSpec {
            field: "spec.pki.renewBefore",
            reason: format!(
                "{:?} must be shorter than spec.pki.certificateValidity {:?}",
                pki.renew_before, pki.certificate_validity
            ),
        });
    }
    if now.checked_add(validity).is_err() {
        return Err(DesiredStateError::InvalidSpec {
            field: "spec.pki.certificateValidity",
            reason: format!("{:?} ends past the last date a certificate can hold", pki.certificate_validity),
        });
    }
    Ok((validity, renew_before))
}

/// Names the spec field behind a planning failure.
fn plan_error(error: PkiError, spec: &crate::api::TenantClusterSpec) -> DesiredStateError {
    let field = match &error {
        PkiError::InvalidServiceCidr { .. } => "spec.network.serviceCIDR",
        PkiError::InvalidEtcdReplicas { .. } => "spec.etcd.replicas",
        PkiError::InvalidSubjectAlternativeName { value }
            if spec.network.external_host.as_ref() == Some(value) =>
        {
            "spec.network.externalHost"
        }
        PkiError::InvalidSubjectAlternativeName { .. } => "spec.apiServer.certSANs",
        _ => return DesiredStateError::Pki(error),
    };
    DesiredStateError::InvalidSpec { field, reason: error.to_string() }
}

/// The URL clients outside the meta cluster use: `https://<externalHost>:<port>`,
/// the port being the fixed node port of a NodePort Service and 6443 otherwise;
/// without an external host, the in-cluster Service URL.
fn endpoint(names: &TenantNames, spec: &crate::api::TenantClusterSpec) -> Result<String, DesiredStateError> {
    let network = &spec.network;
    let Some(host) = network.external_host.as_deref() else {
        return Ok(in_cluster_url(names));
    };
    let port = match network.service_type {
        // The API assigns a random node port when none is fixed; a pure build
        // cannot know it, and a kubeconfig with the wrong port is worse than none.
        ServiceType::NodePort => network.node_port.ok_or_else(|| DesiredStateError::InvalidSpec {
            field: "spec.network.nodePort",
            reason: "required when serviceType is NodePort and externalHost is set".into(),
        })?,
        ServiceType::ClusterIP | ServiceType::LoadBalancer => APISERVER_PORT,
    };
    let host = match host.parse::<Ipv6Addr>() {
        Ok(_) => format!("[{host}]"),
        Err(_) => host.to_string(),
    };
    Ok(format!("https://{host}:{port}"))
}

/// The apiserver Service's URL inside the meta cluster.
fn in_cluster_url(names: &TenantNames) -> String {
    format!("https://{}:{APISERVER_PORT}", names.apiserver_service_host())
}

/// The CA in Secret `secret_name`; `None` when the Secret does not exist.
fn load_authority(
    observed: &ObservedSecrets,
    secret_name: &str,
) -> Result<Option<CertificateAuthority>, DesiredStateError> {
    if !observed.contains(secret_name) {
        return Ok(None);
    }
    let invalid = |reason: String| DesiredStateError::CaInvalid { secret: secret_name.to_string(), reason };
    let value = |key: &str| match observed.text(secret_name, key) {
        Some(Ok(text)) => Ok(text),
        Some(Err(NotUtf8)) => Err(invalid(format!("{key} is not UTF-8"))),
        None => Err(invalid(format!("no {key}"))),
    };
    let (cert_pem, key_pem) = (value(TLS_CERT_KEY)?, value(TLS_PRIVATE_KEY_KEY)?);
    CertificateAuthority::from_pem(cert_pem, key_pem).map(Some).map_err(|error| invalid(error.to_string()))
}

/// Whether any Secret signed by (or embedding) `authority` exists.
fn any_dependent_exists(
    observed: &ObservedSecrets,
    plan: &TenantPkiPlan,
    names: &TenantNames,
    authority: Authority,
) -> bool {
    let signed = plan
        .certificates()
        .iter()
        .filter(|planned| planned.signer == authority)
        .any(|planned| observed.contains(&planned.secret_name));
    let in_cluster_admin =
        authority == Authority::Cluster && observed.contains(&names.admin_in_cluster_kubeconfig_secret());
    signed || in_cluster_admin
}

/// Whether any leaf or kubeconfig Secret exists.
fn any_leaf_exists(observed: &ObservedSecrets, plan: &TenantPkiPlan, names: &TenantNames) -> bool {
    Authority::ALL.into_iter().any(|authority| any_dependent_exists(observed, plan, names, authority))
}

struct ServiceAccountKey {
    key_pair: ServiceAccountKeyPair,
    generated: bool,
}

fn service_account_key(
    observed: &ObservedSecrets,
    secret_name: &str,
    in_use: bool,
    algorithm: KeyAlgorithm,
) -> Result<ServiceAccountKey, DesiredStateError> {
    let invalid = |reason: String| DesiredStateError::KeyInvalid { secret: secret_name.to_string(), reason };
    match observed.text(secret_name, SERVICE_ACCOUNT_PRIVATE_KEY_KEY) {
        Some(Ok(private_key_pem)) => {
            // The public half is derived again, so a Secret that lost it is repaired in place.
            let key_pair = ServiceAccountKeyPair::from_private_key_pem(private_key_pem)
                .map_err(|error| invalid(error.to_string()))?;
            Ok(ServiceAccountKey { key_pair, generated: false })
        }
        Some(Err(NotUtf8)) => Err(invalid(format!("{SERVICE_ACCOUNT_PRIVATE_KEY_KEY} is not UTF-8"))),
        None if in_use => Err(DesiredStateError::KeyMissing {
            secret: secret_name.to_string(),
            key: SERVICE_ACCOUNT_PRIVATE_KEY_KEY,
        }),
        None => {
            Ok(ServiceAccountKey { key_pair: ServiceAccountKeyPair::generate(algorithm)?, generated: true })
        }
    }
}

struct EncryptionConfig {
    document: String,
    generated: bool,
}

/// The stored EncryptionConfiguration, kept verbatim once it holds a valid key:
/// re-rendering it could switch the provider under data already encrypted.
fn encryption_config(
    observed: &ObservedSecrets,
    secret_name: &str,
    in_use: bool,
) -> Result<EncryptionConfig, DesiredStateError> {
    let invalid = |reason: String| DesiredStateError::KeyInvalid { secret: secret_name.to_string(), reason };
    match observed.text(secret_name, ENCRYPTION_CONFIG_KEY) {
        Some(Ok(document)) => {
            let key =
                EncryptionKey::from_configuration(document).map_err(|error| invalid(error.to_string()))?;
            // Rendering validates the key (32 bytes of base64); the rendering itself is not used.
            encryption_configuration(EncryptionProvider::default(), &key)
                .map_err(|error| invalid(error.to_string()))?;
            Ok(EncryptionConfig { document: document.to_string(), generated: false })
        }
        Some(Err(NotUtf8)) => Err(invalid(format!("{ENCRYPTION_CONFIG_KEY} is not UTF-8"))),
        None if in_use => {
            Err(DesiredStateError::KeyMissing { secret: secret_name.to_string(), key: ENCRYPTION_CONFIG_KEY })
        }
        None => {
            let key = EncryptionKey::generate(ENCRYPTION_KEY_NAME);
            let document = encryption_configuration(EncryptionProvider::default(), &key)?;
            Ok(EncryptionConfig { document, generated: true })
        }
    }
}

/// The stored certificate and key of a leaf, or why they cannot even be read.
type StoredLeaf = Result<(Option<String>, Option<String>), RenewalReason>;

fn stored_leaf(observed: &ObservedSecrets, certificate: LeafCertificate, secret_name: &str) -> StoredLeaf {
    if is_kubeconfig_leaf(certificate) {
        return match observed.text(secret_name, KUBECONFIG_KEY) {
            None => Ok((None, None)),
            Some(Err(NotUtf8)) => Err(RenewalReason::Unparsable),
            Some(Ok(document)) => ClientCredentials::from_kubeconfig(document)
                .map(|credentials| (Some(credentials.client_cert_pem), Some(credentials.client_key_pem)))
                .map_err(|_| RenewalReason::Unparsable),
        };
    }
    let value = |key: &str| match observed.text(secret_name, key) {
        None => Ok(None),
        Some(Ok(text)) => Ok(Some(text.to_string())),
        Some(Err(NotUtf8)) => Err(RenewalReason::Unparsable),
    };
    Ok((value(TLS_CERT_KEY)?, value(TLS_PRIVATE_KEY_KEY)?))
}

/// Client certificates that live inside kubeconfig Secrets rather than TLS Secrets.
fn is_kubeconfig_leaf(certificate: LeafCertificate) -> bool {
    matches!(
        certificate,
        LeafCertificate::ControllerManagerClient
            | LeafCertificate::SchedulerClient
            | LeafCertificate::AdminClient
    )
}

/// Component label of a leaf's TLS Secret: the component whose pods use it.
fn leaf_component(certificate: LeafCertificate) -> Component {
    match certificate {
        LeafCertificate::ApiServerServing
        | LeafCertificate::ApiServerKubeletClient
        | LeafCertificate::ApiServerEtcdClient
        | LeafCertificate::FrontProxyClient
        | LeafCertificate::KonnectivityServerServing
        | LeafCertificate::KonnectivityServerClient => Component::ApiServer,
        LeafCertificate::EtcdServer | LeafCertificate::EtcdPeer | LeafCertificate::EtcdHealthcheckClient => {
            Component::Etcd
        }
        LeafCertificate::ControllerManagerClient => Component::ControllerManager,
        LeafCertificate::SchedulerClient => Component::Scheduler,
        LeafCertificate::AdminClient => Component::Pki,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

    use super::*;
    use crate::api::{TenantClusterSpec, TenantClusterStatus};
    use crate::pki::test_support::{assert_signed_by, now, sans};
    use crate::resources::{CA_CERT_KEY, CONFIG_HASH_ANNOTATION};

    const NAMESPACE: &str = "tenants";
    /// Where a deployed operator runs (`deploy/operator.yaml`).
    const OPERATOR_NAMESPACE: Option<&str> = Some("nestor-system");

    fn names() -> TenantNames {
        TenantNames::new("team-a", NAMESPACE)
    }

    /// A spec with every default and `overrides` merged in at the top level.
    fn spec(overrides: serde_json::Value) -> TenantClusterSpec {
        let mut json = serde_json::json!({"version": "1.34.2", "etcd": {"replicas": 1}});
        for (key, value) in overrides.as_object().expect("an object") {
            json[key] = value.clone();
        }
        serde_json::from_value(json).expect("spec deserializes")
    }

    fn tenant(spec: TenantClusterSpec) -> TenantCluster {
        let mut tenant = TenantCluster::new("team-a", spec);
        tenant.metadata.namespace = Some(NAMESPACE.into());
        tenant.metadata.uid = Some("0c9d2b7e-uid".into());
        tenant
    }

    fn default_tenant() -> TenantCluster {
        tenant(spec(serde_json::json!({})))
    }

    fn with_pki_ready(mut tenant: TenantCluster) -> TenantCluster {
        tenant.status = Some(TenantClusterStatus {
            conditions: vec![Condition {
                type_: PKI_READY_CONDITION.into(),
                status: "True".into(),
                reason: "Ready".into(),
                message: "all Secrets exist".into(),
                observed_generation: None,
                last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now()),
            }],
            ..TenantClusterStatus::default()
        });
        tenant
    }

    fn build(tenant: &TenantCluster, observed: &ObservedSecrets) -> DesiredState {
        desired_state(tenant, observed, &ObservedRollout::default(), now(), OPERATOR_NAMESPACE)
            .expect("desired state builds")
    }

    /// [`build`] with `etcd_running` etcd members, as while etcd is being scaled.
    fn build_with_etcd(
        tenant: &TenantCluster,
        observed: &ObservedSecrets,
        etcd_running: i32,
    ) -> DesiredState {
        desired_state_with_etcd(
            tenant,
            observed,
            &ObservedRollout::default(),
            now(),
            etcd_running,
            OPERATOR_NAMESPACE,
        )
        .expect("desired state builds")
    }

    fn observed(state: &DesiredState) -> ObservedSecrets {
        ObservedSecrets::from_secrets(state.secrets())
    }

    fn as_json(state: &DesiredState) -> Vec<String> {
        state.objects.iter().map(|object| serde_json::to_string(object).expect("serializes")).collect()
    }

    fn secret<'a>(state: &'a DesiredState, name: &str) -> &'a Secret {
        state.secrets().find(|secret| secret.metadata.name.as_deref() == Some(name)).expect(name)
    }

    fn text(state: &DesiredState, name: &str, key: &str) -> String {
        let data = secret(state, name).data.as_ref().expect("data");
        String::from_utf8(data.get(key).unwrap_or_else(|| panic!("{name} has no {key}")).0.clone())
            .expect("UTF-8")
    }

    fn kubeconfig(state: &DesiredState, name: &str) -> ClientCredentials {
        ClientCredentials::from_kubeconfig(&text(state, name, KUBECONFIG_KEY)).expect("kubeconfig parses")
    }

    fn reissued(state: &DesiredState) -> Vec<(LeafCertificate, &'static str)> {
        state.issued.iter().map(|leaf| (leaf.certificate, leaf.reason.label())).collect()
    }

    fn plan(spec: &TenantClusterSpec) -> TenantPkiPlan {
        TenantPkiPlan::new(&TenantPkiInputs::from_spec(names(), spec)).expect("plan")
    }

    /// Every leaf chains to its CA, every TLS Secret carries that CA, and the
    /// kubeconfigs trust the cluster CA.
    fn assert_chains(state: &DesiredState, spec: &TenantClusterSpec) {
        let plan = plan(spec);
        for planned in plan.certificates() {
            let ca_pem = text(state, &planned.signer.secret_name(&names()), TLS_CERT_KEY);
            let cert_pem = if is_kubeconfig_leaf(planned.certificate) {
                let credentials = kubeconfig(state, &planned.secret_name);
                assert_eq!(credentials.ca_pem, ca_pem, "{:?} trusts the cluster CA", planned.certificate);
                credentials.client_cert_pem
            } else {
                assert_eq!(text(state, &planned.secret_name, CA_CERT_KEY), ca_pem, "{}", planned.secret_name);
                text(state, &planned.secret_name, TLS_CERT_KEY)
            };
            assert_signed_by(&cert_pem, &ca_pem);
        }
    }

    fn statefulset_hash(state: &DesiredState) -> String {
        let statefulset = state
            .objects
            .iter()
            .find_map(|object| match object {
                DesiredObject::StatefulSet(statefulset) => Some(statefulset),
                _ => None,
            })
            .expect("a StatefulSet");
        let template = &statefulset.spec.as_ref().expect("spec").template;
        let annotations =
            template.metadata.as_ref().and_then(|m| m.annotations.as_ref()).expect("annotations");
        annotations[CONFIG_HASH_ANNOTATION].clone()
    }

    #[test]
    fn new_cluster_generates_every_root_key_leaf_and_kubeconfig() {
        let tenant = default_tenant();
        let state = build(&tenant, &ObservedSecrets::new());
        let names = names();

        assert_eq!(
            state.generated,
            [
                GeneratedKey::Authority(Authority::Cluster),
                GeneratedKey::Authority(Authority::FrontProxy),
                GeneratedKey::Authority(Authority::Etcd),
                GeneratedKey::ServiceAccountKey,
                GeneratedKey::EncryptionKey,
            ]
        );
        let expected: Vec<_> = LeafCertificate::ALL.iter().map(|leaf| (*leaf, "Missing")).collect();
        assert_eq!(reissued(&state), expected);
        assert_chains(&state, &tenant.spec);

        let one_year_later = now().checked_add(Duration::from_secs(8760 * 3600)).unwrap();
        assert_eq!(state.certificates_expire_at, one_year_later);
        assert!(state.issued.iter().all(|leaf| leaf.not_after == one_year_later));

        let in_cluster = "https://team-a-apiserver.tenants.svc:6443";
        assert_eq!(state.endpoint, in_cluster);
        assert_eq!(state.kubeconfig_secret_name, names.admin_kubeconfig_secret());
        assert_eq!(kubeconfig(&state, &names.admin_kubeconfig_secret()).server_url, in_cluster);
        assert_eq!(kubeconfig(&state, &names.admin_in_cluster_kubeconfig_secret()).server_url, in_cluster);
        let controller_manager = kubeconfig(&state, &names.controller_manager_kubeconfig_secret());
        assert_eq!(controller_manager.server_url, in_cluster);
        assert_eq!(controller_manager.user_name, "system:kube-controller-manager");
        let scheduler = kubeconfig(&state, &names.scheduler_kubeconfig_secret());
        assert_eq!(scheduler.server_url, in_cluster);
        assert_eq!(scheduler.user_name, "system:kube-scheduler");
        assert_eq!(
            crate::pki::test_support::subject(&scheduler.client_cert_pem),
            ("system:kube-scheduler".to_string(), Vec::new()),
            "the name the tenant's bootstrap RBAC binds the scheduler's roles to, in no group"
        );
        assert_eq!(
            state.kubeconfigs.scheduler,
            text(&state, &names.scheduler_kubeconfig_secret(), KUBECONFIG_KEY)
        );
        assert_eq!(state.kubeconfigs.admin, text(&state, &names.admin_kubeconfig_secret(), KUBECONFIG_KEY));

        // Service-account halves belong together; the encryption key is valid.
        let private = text(&state, &names.service_account_key_secret(), "sa.key");
        let public = text(&state, &names.service_account_key_secret(), "sa.pub");
        assert_eq!(ServiceAccountKeyPair::from_private_key_pem(&private).unwrap().public_key_pem, public);
        let document = text(&state, &names.encryption_config_secret(), ENCRYPTION_CONFIG_KEY);
        let key = EncryptionKey::from_configuration(&document).expect("a key");
        assert_eq!(key.name, ENCRYPTION_KEY_NAME);
        assert!(document.contains("secretbox"));

        // Apply order: roots, keys, leaves, kubeconfigs, then the workloads.
        let order: Vec<(&str, String)> =
            state.objects.iter().map(|object| (object.kind(), object.name().to_string())).collect();
        let secret = |name: String| ("Secret", name);
        let expected_order = vec![
            secret(names.cluster_ca_secret()),
            secret(names.front_proxy_ca_secret()),
            secret(names.etcd_ca_secret()),
            secret(names.service_account_key_secret()),
            secret(names.encryption_config_secret()),
            secret(names.apiserver_serving_secret()),
            secret(names.apiserver_kubelet_client_secret()),
            secret(names.apiserver_etcd_client_secret()),
            secret(names.front_proxy_client_secret()),
            secret(names.konnectivity_server_serving_secret()),
            secret(names.konnectivity_server_client_secret()),
            secret(names.etcd_server_secret()),
            secret(names.etcd_peer_secret()),
            secret(names.etcd_healthcheck_client_secret()),
            secret(names.controller_manager_kubeconfig_secret()),
            secret(names.scheduler_kubeconfig_secret()),
            secret(names.admin_kubeconfig_secret()),
            secret(names.admin_in_cluster_kubeconfig_secret()),
            ("Service", names.etcd()),
            ("NetworkPolicy", names.etcd_network_policy()),
            ("ConfigMap", names.etcd()),
            ("StatefulSet", names.etcd()),
            ("ConfigMap", names.apiserver()),
            ("Service", names.apiserver()),
            ("Deployment", names.apiserver()),
            ("Deployment", names.controller_manager()),
            ("Deployment", names.scheduler()),
        ];
        assert_eq!(order, expected_order);

        // Every Secret a pod mounts is built, and the hashes reach the pod templates.
        let built: BTreeSet<&str> = state.secrets().filter_map(|s| s.metadata.name.as_deref()).collect();
        for component in
            [Component::Etcd, Component::ApiServer, Component::ControllerManager, Component::Scheduler]
        {
            for name in mounted_secret_names(&names, component) {
                assert!(built.contains(name.as_str()), "{component:?} mounts {name}, which is not built");
            }
        }
        assert_eq!(statefulset_hash(&state), state.config_hashes.etcd);
        let hashes = &state.config_hashes;
        assert_ne!(hashes.etcd, hashes.apiserver);
        assert_ne!(hashes.apiserver, hashes.controller_manager);
        assert_ne!(hashes.controller_manager, hashes.scheduler);
        assert_eq!(
            state.scheduler_version.as_deref(),
            Some("1.34.2"),
            "a new tenant's starts with its apiserver"
        );
    }

    #[test]
    fn a_pass_over_its_own_secrets_is_byte_identical_and_issues_nothing() {
        let tenant = default_tenant();
        let first = build(&tenant, &ObservedSecrets::new());
        let second = build(&tenant, &observed(&first));
        assert!(second.issued.is_empty(), "{:?}", second.issued);
        assert!(second.generated.is_empty(), "{:?}", second.generated);
        assert_eq!(as_json(&second), as_json(&first));
        assert_eq!(second.kubeconfigs, first.kubeconfigs);
        // Generated key material may be created; loaded key material only updated.
        assert!(first.loaded_key_secrets.is_empty(), "{:?}", first.loaded_key_secrets);
        let names = names();
        let key_secrets = BTreeSet::from([
            names.cluster_ca_secret(),
            names.front_proxy_ca_secret(),
            names.etcd_ca_secret(),
            names.service_account_key_secret(),
            names.encryption_config_secret(),
        ]);
        assert_eq!(second.loaded_key_secrets, key_secrets);
        assert_eq!(second.certificates_expire_at, first.certificates_expire_at);

        // Later, but before any renewal window, with PKIReady in status: still nothing to write.
        let later = now().checked_add(Duration::from_secs(24 * 3600)).unwrap();
        let third = desired_state(
            &with_pki_ready(tenant),
            &observed(&second),
            &ObservedRollout::default(),
            later,
            OPERATOR_NAMESPACE,
        )
        .expect("builds");
        assert!(third.issued.is_empty());
        assert_eq!(as_json(&third), as_json(&first));
    }

    #[test]
    fn a_reissued_scheduler_certificate_rolls_the_scheduler_and_nothing_else() {
        let tenant = default_tenant();
        let names = names();
        let first = build(&tenant, &ObservedSecrets::new());
        let mut secrets = observed(&first);
        secrets.remove(&names.scheduler_kubeconfig_secret());

        let second = build(&tenant, &secrets);
        assert_eq!(reissued(&second), [(LeafCertificate::SchedulerClient, "Missing")]);
        assert_ne!(second.config_hashes.scheduler, first.config_hashes.scheduler);
        assert_eq!(second.config_hashes.controller_manager, first.config_hashes.controller_manager);
        assert_eq!(second.config_hashes.apiserver, first.config_hashes.apiserver);
        let hash_of = |state: &DesiredState| {
            let template =
                &deployment(state, &names.scheduler()).expect("built").spec.as_ref().expect("spec").template;
            template.metadata.as_ref().and_then(|m| m.annotations.as_ref()).expect("annotations")
                [CONFIG_HASH_ANNOTATION]
                .clone()
        };
        assert_eq!(hash_of(&second), second.config_hashes.scheduler, "the new hash is on the pod template");
        assert_ne!(hash_of(&second), hash_of(&first));
    }

    #[test]
    fn a_removed_leaf_secret_is_the_only_thing_reissued() {
        let tenant = default_tenant();
        let names = names();
        let first = build(&tenant, &ObservedSecrets::new());
        let mut secrets = observed(&first);
        secrets.remove(&names.apiserver_kubelet_client_secret());

        let second = build(&tenant, &secrets);
        assert_eq!(reissued(&second), [(LeafCertificate::ApiServerKubeletClient, "Missing")]);
        assert!(second.generated.is_empty());
        for authority in Authority::ALL {
            let name = authority.secret_name(&names);
            assert_eq!(secret(&second, &name), secret(&first, &name), "{name} unchanged");
        }
        assert_chains(&second, &tenant.spec);
        // Only the apiserver mounts that certificate, so only its pods roll.
        assert_ne!(second.config_hashes.apiserver, first.config_hashes.apiserver);
        assert_eq!(second.config_hashes.etcd, first.config_hashes.etcd);
        assert_eq!(second.config_hashes.controller_manager, first.config_hashes.controller_manager);
    }

    #[test]
    fn a_leaf_inside_its_renewal_window_is_reissued_as_expiring_soon() {
        let tenant = default_tenant();
        let names = names();
        let first = build(&tenant, &ObservedSecrets::new());
        let mut secrets = observed(&first);

        // Replace one leaf with a valid one that ends in a day (renewBefore is 720h).
        let etcd_ca = CertificateAuthority::from_pem(
            &text(&first, &names.etcd_ca_secret(), TLS_CERT_KEY),
            &text(&first, &names.etcd_ca_secret(), TLS_PRIVATE_KEY_KEY),
        )
        .unwrap();
        let plan = plan(&tenant.spec);
        let request = &plan.certificate(LeafCertificate::EtcdHealthcheckClient).request;
        let day = Duration::from_secs(24 * 3600);
        let short = issue(&etcd_ca, request, KeyAlgorithm::EcdsaP256, day, now()).unwrap();
        let mut data = secrets.get(&names.etcd_healthcheck_client_secret()).unwrap().clone();
        data.insert(TLS_CERT_KEY.into(), short.cert_pem.into_bytes());
        data.insert(TLS_PRIVATE_KEY_KEY.into(), short.key_pem.into_bytes());
        secrets.insert(names.etcd_healthcheck_client_secret(), data);

        let second = build(&tenant, &secrets);
        assert_eq!(second.issued.len(), 1);
        assert_eq!(second.issued[0].certificate, LeafCertificate::EtcdHealthcheckClient);
        assert_eq!(second.issued[0].reason, RenewalReason::ExpiresSoon { not_after: short.not_after });
        assert_eq!(second.certificates_expire_at, first.certificates_expire_at, "the new leaf lasts a year");

        // At the start of the window of the year-long leaves, all of them are renewed; no CA is.
        let window = now().checked_add(Duration::from_secs((8760 - 720) * 3600)).unwrap();
        let renewed = desired_state(
            &tenant,
            &observed(&second),
            &ObservedRollout::default(),
            window,
            OPERATOR_NAMESPACE,
        )
        .expect("builds");
        assert_eq!(renewed.issued.len(), LeafCertificate::ALL.len());
        assert!(renewed.issued.iter().all(|leaf| leaf.reason.label() == "ExpiresSoon"));
        assert!(renewed.generated.is_empty());
        for authority in Authority::ALL {
            let name = authority.secret_name(&names);
            assert_eq!(secret(&renewed, &name), secret(&first, &name), "{name} unchanged");
        }
    }

    #[test]
    fn a_missing_ca_of_an_established_tenant_is_an_error_never_a_new_ca() {
        let tenant = default_tenant();
        let names = names();
        let first = build(&tenant, &ObservedSecrets::new());

        // PKIReady in status, and every other Secret gone with the CA: status alone proves it.
        let mut only_others = ObservedSecrets::new();
        only_others
            .insert(names.cluster_ca_secret(), observed(&first).remove(&names.cluster_ca_secret()).unwrap());
        let result = desired_state(
            &with_pki_ready(tenant.clone()),
            &only_others,
            &ObservedRollout::default(),
            now(),
            OPERATOR_NAMESPACE,
        );
        assert!(
            matches!(&result, Err(DesiredStateError::CaMissing { secret }) if *secret == names.front_proxy_ca_secret()),
            "{result:?}"
        );

        // No status at all, but leaves it signed are still there.
        let mut without_etcd_ca = observed(&first);
        without_etcd_ca.remove(&names.etcd_ca_secret());
        let error =
            desired_state(&tenant, &without_etcd_ca, &ObservedRollout::default(), now(), OPERATOR_NAMESPACE)
                .expect_err("etcd CA is missing");
        assert!(
            matches!(&error, DesiredStateError::CaMissing { secret } if *secret == names.etcd_ca_secret())
        );
        assert!(error.is_permanent());
        assert_eq!(error.reason(), "CAMissing");
    }

    #[test]
    fn a_half_created_tenant_gets_its_missing_roots_and_keeps_the_present_ones() {
        // The first pass stopped after applying the cluster CA: nothing depends on the others yet.
        let tenant = default_tenant();
        let names = names();
        let first = build(&tenant, &ObservedSecrets::new());
        let mut partial = ObservedSecrets::new();
        partial
            .insert(names.cluster_ca_secret(), observed(&first).remove(&names.cluster_ca_secret()).unwrap());

        let second = build(&tenant, &partial);
        assert_eq!(
            second.generated,
            [
                GeneratedKey::Authority(Authority::FrontProxy),
                GeneratedKey::Authority(Authority::Etcd),
                GeneratedKey::ServiceAccountKey,
                GeneratedKey::EncryptionKey,
            ]
        );
        assert_eq!(secret(&second, &names.cluster_ca_secret()), secret(&first, &names.cluster_ca_secret()));
        assert_chains(&second, &tenant.spec);
    }

    #[test]
    fn a_ca_that_does_not_load_is_an_error_never_overwritten() {
        let tenant = default_tenant();
        let names = names();
        let first = build(&tenant, &ObservedSecrets::new());

        let mut swapped_key = observed(&first);
        let other_key = text(&first, &names.etcd_ca_secret(), TLS_PRIVATE_KEY_KEY);
        let mut data = swapped_key.get(&names.cluster_ca_secret()).unwrap().clone();
        data.insert(TLS_PRIVATE_KEY_KEY.into(), other_key.into_bytes());
        swapped_key.insert(names.cluster_ca_secret(), data);
        let error =
            desired_state(&tenant, &swapped_key, &ObservedRollout::default(), now(), OPERATOR_NAMESPACE)
                .expect_err("key does not match");
        assert!(
            matches!(&error, DesiredStateError::CaInvalid { secret, .. } if *secret == names.cluster_ca_secret())
        );
        assert!(error.is_permanent());

        let mut leaf_as_ca = observed(&first);
        let leaf = leaf_as_ca.get(&names.etcd_server_secret()).unwrap().clone();
        leaf_as_ca.insert(names.etcd_ca_secret(), leaf);
        let error =
            desired_state(&tenant, &leaf_as_ca, &ObservedRollout::default(), now(), OPERATOR_NAMESPACE)
                .expect_err("not a CA");
        assert!(
            matches!(&error, DesiredStateError::CaInvalid { secret, .. } if *secret == names.etcd_ca_secret())
        );

        let mut emptied = observed(&first);
        emptied.insert(names.front_proxy_ca_secret(), SecretData::new());
        let error = desired_state(&tenant, &emptied, &ObservedRollout::default(), now(), OPERATOR_NAMESPACE)
            .expect_err("no data");
        assert!(matches!(error, DesiredStateError::CaInvalid { .. }));
    }

    #[test]
    fn missing_or_broken_keys_of_an_established_tenant_are_errors() {
        let tenant = default_tenant();
        let names = names();
        let first = build(&tenant, &ObservedSecrets::new());

        let mut without_sa = observed(&first);
        without_sa.remove(&names.service_account_key_secret());
        let error =
            desired_state(&tenant, &without_sa, &ObservedRollout::default(), now(), OPERATOR_NAMESPACE)
                .expect_err("SA key missing");
        assert!(
            matches!(&error, DesiredStateError::KeyMissing { secret, key: "sa.key" } if *secret == names.service_account_key_secret())
        );
        assert!(error.is_permanent());

        let mut without_encryption = observed(&first);
        without_encryption.remove(&names.encryption_config_secret());
        let error = desired_state(
            &with_pki_ready(tenant.clone()),
            &without_encryption,
            &ObservedRollout::default(),
            now(),
            OPERATOR_NAMESPACE,
        )
        .expect_err("encryption key missing");
        assert!(
            matches!(&error, DesiredStateError::KeyMissing { secret, .. } if *secret == names.encryption_config_secret())
        );

        let mut garbage = observed(&first);
        garbage.insert(
            names.service_account_key_secret(),
            SecretData::from([("sa.key".to_string(), b"not a key".to_vec())]),
        );
        let error = desired_state(&tenant, &garbage, &ObservedRollout::default(), now(), OPERATOR_NAMESPACE)
            .expect_err("SA key unreadable");
        assert!(matches!(error, DesiredStateError::KeyInvalid { .. }));

        // A lost public half is repaired from the private key, without a rotation.
        let mut public_lost = observed(&first);
        let mut data = public_lost.get(&names.service_account_key_secret()).unwrap().clone();
        data.remove("sa.pub");
        public_lost.insert(names.service_account_key_secret(), data);
        let repaired = build(&tenant, &public_lost);
        assert!(repaired.generated.is_empty());
        assert_eq!(as_json(&repaired), as_json(&first));
    }

    #[test]
    fn a_stored_encryption_configuration_is_kept_verbatim() {
        let tenant = default_tenant();
        let names = names();
        let first = build(&tenant, &ObservedSecrets::new());
        let key = EncryptionKey::from_configuration(&text(
            &first,
            &names.encryption_config_secret(),
            ENCRYPTION_CONFIG_KEY,
        ))
        .unwrap();
        let aescbc = encryption_configuration(EncryptionProvider::AesCbc, &key).unwrap();
        let mut secrets = observed(&first);
        secrets.insert(
            names.encryption_config_secret(),
            SecretData::from([(ENCRYPTION_CONFIG_KEY.to_string(), aescbc.clone().into_bytes())]),
        );
        let second = build(&tenant, &secrets);
        assert_eq!(text(&second, &names.encryption_config_secret(), ENCRYPTION_CONFIG_KEY), aescbc);
    }

    #[test]
    fn scaling_etcd_reissues_the_member_certificates_and_rolls_nothing() {
        let one = tenant(spec(serde_json::json!({"etcd": {"replicas": 1}})));
        let three = tenant(spec(serde_json::json!({"etcd": {"replicas": 3}})));
        let names = names();
        let first = build(&one, &ObservedSecrets::new());
        let second = build(&three, &observed(&first));

        assert_eq!(
            reissued(&second),
            [(LeafCertificate::EtcdServer, "SansMismatch"), (LeafCertificate::EtcdPeer, "SansMismatch")]
        );
        let (dns, _) = sans(&text(&second, &names.etcd_server_secret(), TLS_CERT_KEY));
        assert!(dns.contains(&names.etcd_member_host(2)), "{dns:?}");
        // Running members pick the new files up without a restart (etcd reloads them).
        assert_eq!(second.config_hashes.etcd, first.config_hashes.etcd);
        // The apiserver mounts only its own etcd client certificate and the etcd CA, both unchanged.
        assert_eq!(second.config_hashes.apiserver, first.config_hashes.apiserver);
        assert_eq!(second.config_hashes.controller_manager, first.config_hashes.controller_manager);
        assert_chains(&second, &three.spec);
    }

    #[test]
    fn a_scale_down_keeps_each_leaving_member_in_the_etcd_certificates_until_it_is_removed() {
        let three = tenant(spec(serde_json::json!({"etcd": {"replicas": 3}})));
        let one = tenant(spec(serde_json::json!({"etcd": {"replicas": 1}})));
        let names = names();
        let settled = build(&three, &ObservedSecrets::new());
        let member_hosts = |state: &DesiredState| {
            let (dns, _) = sans(&text(state, &names.etcd_peer_secret(), TLS_CERT_KEY));
            (0..3).filter(|ordinal| dns.contains(&names.etcd_member_host(*ordinal))).count()
        };
        let scale_down =
            |previous: &DesiredState, running: i32| build_with_etcd(&one, &observed(previous), running);

        // 3 -> 1 begins: all three still run, so nothing is re-issued.
        let started = scale_down(&settled, 3);
        assert!(started.issued.is_empty(), "{:?}", started.issued);
        assert_eq!(member_hosts(&started), 3);
        // Member 2 removed: the certificates drop it and keep member 1, which still runs.
        let two_left = scale_down(&started, 2);
        assert_eq!(member_hosts(&two_left), 2);
        // Settled at one member.
        assert_eq!(member_hosts(&scale_down(&two_left, 1)), 1);
    }

    /// StatefulSet replicas, the ConfigMap's initial cluster and state, and the
    /// apiserver's `--etcd-servers`, as `state` renders them.
    fn etcd_rendering(state: &DesiredState) -> (i32, usize, String, usize) {
        let mut rendering = (0, 0, String::new(), 0);
        for object in &state.objects {
            match object {
                DesiredObject::StatefulSet(statefulset) => {
                    rendering.0 = statefulset.spec.as_ref().and_then(|spec| spec.replicas).expect("replicas");
                }
                DesiredObject::ConfigMap(config_map)
                    if config_map.metadata.name.as_deref() == Some("team-a-etcd") =>
                {
                    let data = config_map.data.as_ref().expect("data");
                    rendering.1 = data["initial-cluster"].split(',').count();
                    rendering.2 = data["initial-cluster-state"].clone();
                }
                DesiredObject::Deployment(deployment)
                    if deployment.metadata.name.as_deref() == Some("team-a-apiserver") =>
                {
                    let args = deployment
                        .spec
                        .as_ref()
                        .and_then(|spec| spec.template.spec.as_ref())
                        .and_then(|spec| spec.containers[0].args.clone())
                        .expect("args");
                    let servers =
                        args.iter().find_map(|arg| arg.strip_prefix("--etcd-servers=")).expect("flag");
                    rendering.3 = servers.split(',').count();
                }
                _ => {}
            }
        }
        rendering
    }

    #[test]
    fn while_etcd_scales_the_members_follow_the_member_list_and_the_apiserver_the_settled_size() {
        let formed = |spec: TenantClusterSpec, settled: i32| {
            let mut tenant = with_pki_ready(tenant(spec));
            let status = tenant.status.as_mut().expect("status");
            status.etcd_cluster_id = Some("7".into());
            status.etcd_members = Some(settled);
            tenant
        };
        let first = build(&default_tenant(), &ObservedSecrets::new());
        let observed = observed(&first);
        let three = spec(serde_json::json!({"etcd": {"replicas": 3}}));
        let one = spec(serde_json::json!({"etcd": {"replicas": 1}}));
        let render = |tenant: &TenantCluster, running: i32| {
            etcd_rendering(&build_with_etcd(tenant, &observed, running))
        };

        // 1 -> 3, member 1 just added: two members run, the apiserver still names one.
        assert_eq!(render(&formed(three.clone(), 1), 2), (2, 2, "existing".into(), 1));
        // Settled at 3: everything names three.
        assert_eq!(render(&formed(three.clone(), 3), 3), (3, 3, "existing".into(), 3));
        // 3 -> 1, member 2 removed: two run, the apiserver names only the member that stays.
        assert_eq!(render(&formed(one.clone(), 3), 2), (2, 2, "existing".into(), 1));
        // Settled at 1: a single member bootstraps alone if it ever loses its data.
        assert_eq!(render(&formed(one, 1), 1), (1, 1, "new".into(), 1));
        // The etcd pod template is the same at every size: no member rolls.
        let templates: Vec<_> = [1, 2, 3]
            .iter()
            .map(|running| {
                let state = build_with_etcd(&formed(three.clone(), 1), &observed, *running);
                state.objects.into_iter().find_map(|object| match object {
                    DesiredObject::StatefulSet(statefulset) => statefulset.spec.map(|spec| spec.template),
                    _ => None,
                })
            })
            .collect();
        assert!(templates[0].is_some());
        assert!(templates.windows(2).all(|pair| pair[0] == pair[1]), "a template changed with the size");
    }

    #[test]
    fn a_new_external_host_reissues_the_serving_certificate_and_rerenders_the_admin_kubeconfig() {
        let names = names();
        let internal = default_tenant();
        let external = tenant(spec(serde_json::json!({"network": {"externalHost": "api.team-a.example"}})));
        let first = build(&internal, &ObservedSecrets::new());
        let second = build(&external, &observed(&first));

        assert_eq!(
            reissued(&second),
            [
                (LeafCertificate::ApiServerServing, "SansMismatch"),
                (LeafCertificate::KonnectivityServerServing, "SansMismatch")
            ]
        );
        assert_eq!(second.endpoint, "https://api.team-a.example:6443");
        let admin_before = kubeconfig(&first, &names.admin_kubeconfig_secret());
        let admin_after = kubeconfig(&second, &names.admin_kubeconfig_secret());
        assert_eq!(admin_after.server_url, second.endpoint);
        assert_eq!(admin_after.client_cert_pem, admin_before.client_cert_pem, "admin credential kept");
        assert_eq!(
            secret(&second, &names.admin_in_cluster_kubeconfig_secret()),
            secret(&first, &names.admin_in_cluster_kubeconfig_secret())
        );
        assert_eq!(
            secret(&second, &names.controller_manager_kubeconfig_secret()),
            secret(&first, &names.controller_manager_kubeconfig_secret())
        );
    }

    #[test]
    fn endpoint_follows_external_host_and_service_type() {
        let names = names();
        let endpoint_for = |network: serde_json::Value| {
            let spec = spec(serde_json::json!({ "network": network }));
            endpoint(&names, &spec)
        };
        assert_eq!(endpoint_for(serde_json::json!({})).unwrap(), "https://team-a-apiserver.tenants.svc:6443");
        assert_eq!(
            endpoint_for(serde_json::json!({"externalHost": "10.0.0.5", "serviceType": "LoadBalancer"}))
                .unwrap(),
            "https://10.0.0.5:6443"
        );
        assert_eq!(
            endpoint_for(serde_json::json!({"externalHost": "fd00::5", "serviceType": "LoadBalancer"}))
                .unwrap(),
            "https://[fd00::5]:6443"
        );
        assert_eq!(
            endpoint_for(serde_json::json!({"externalHost": "node.example", "serviceType": "NodePort", "nodePort": 30443}))
                .unwrap(),
            "https://node.example:30443"
        );
        let error =
            endpoint_for(serde_json::json!({"externalHost": "node.example", "serviceType": "NodePort"}))
                .expect_err("the node port is unknown");
        assert!(matches!(error, DesiredStateError::InvalidSpec { field: "spec.network.nodePort", .. }));
    }

    #[test]
    fn renewal_is_due_renew_before_ahead_of_the_earliest_expiry() {
        let overrides = serde_json::json!({"pki": {"certificateValidity": "3m", "renewBefore": "1m"}});
        let state = desired_state(
            &tenant(spec(overrides)),
            &ObservedSecrets::new(),
            &ObservedRollout::default(),
            now(),
            OPERATOR_NAMESPACE,
        )
        .expect("builds");
        let window = jiff::SignedDuration::from_secs(60);
        assert_eq!(state.renewal_due_at, state.certificates_expire_at.checked_sub(window).expect("in range"));
        assert!(state.renewal_due_at > now(), "a fresh certificate is not due yet");
    }

    #[test]
    fn invalid_spec_errors_name_the_field_on_one_line() {
        let cases = [
            (serde_json::json!({"pki": {"renewBefore": "a month"}}), "spec.pki.renewBefore"),
            (
                serde_json::json!({"pki": {"certificateValidity": "24h", "renewBefore": "24h"}}),
                "spec.pki.renewBefore",
            ),
            (serde_json::json!({"pki": {"certificateValidity": "-1h"}}), "spec.pki.certificateValidity"),
            (serde_json::json!({"version": "1.20.0"}), "spec.version"),
            (serde_json::json!({"network": {"serviceCIDR": "10.96.0.0"}}), "spec.network.serviceCIDR"),
            (serde_json::json!({"apiServer": {"certSANs": ["bad name!"]}}), "spec.apiServer.certSANs"),
            (serde_json::json!({"etcd": {"replicas": 0}}), "spec.etcd.replicas"),
        ];
        for (overrides, expected_field) in cases {
            let error = desired_state(
                &tenant(spec(overrides.clone())),
                &ObservedSecrets::new(),
                &ObservedRollout::default(),
                now(),
                OPERATOR_NAMESPACE,
            )
            .expect_err(&overrides.to_string());
            assert!(
                matches!(error, DesiredStateError::InvalidSpec { field, .. } if field == expected_field),
                "{overrides}: {error}"
            );
            let message = error.to_string();
            assert!(message.contains(expected_field), "{message}");
            assert!(!message.contains('\n'), "{message}");
            assert!(error.is_permanent());
            assert_eq!(error.reason(), "InvalidSpec");
        }
    }

    #[test]
    fn status_proves_an_established_pki_only_once_it_was_ready() {
        let mut tenant = default_tenant();
        assert!(!pki_was_established(&tenant));
        tenant = with_pki_ready(tenant);
        assert!(pki_was_established(&tenant));
        // A first pass that failed before any Secret existed reports PKIReady=False: not established.
        let status = tenant.status.as_mut().unwrap();
        status.conditions[0].status = "False".into();
        assert!(!pki_was_established(&tenant));
        // Once kubeconfigs were published, the proof survives PKIReady going False.
        tenant.status.as_mut().unwrap().kubeconfig_secret_name = Some(names().admin_kubeconfig_secret());
        assert!(pki_was_established(&tenant));
    }

    #[test]
    fn debug_output_never_shows_key_material() {
        let state = build(&default_tenant(), &ObservedSecrets::new());
        let debug = format!("{state:?} {:?}", observed(&state));
        assert!(!debug.contains("PRIVATE KEY"), "{debug}");
        assert!(!debug.contains("LS0t"), "no base64 PEM either");
        assert!(debug.contains("Secret/team-a-ca"));
    }

    #[test]
    fn rsa_tenants_get_rsa_keys_that_chain_and_stay_stable() {
        let tenant = tenant(spec(serde_json::json!({"pki": {"keyAlgorithm": "RSA-2048"}})));
        let first = build(&tenant, &ObservedSecrets::new());
        assert_chains(&first, &tenant.spec);
        let ca_key = text(&first, &names().cluster_ca_secret(), TLS_PRIVATE_KEY_KEY);
        assert_eq!(rcgen::KeyPair::from_pem(&ca_key).unwrap().algorithm(), &rcgen::PKCS_RSA_SHA256);
        let second = build(&tenant, &observed(&first));
        assert!(second.issued.is_empty());
        assert_eq!(as_json(&second), as_json(&first));
    }

    fn deployment<'a>(state: &'a DesiredState, name: &str) -> Option<&'a Deployment> {
        state.objects.iter().find_map(|object| match object {
            DesiredObject::Deployment(deployment) if deployment.metadata.name.as_deref() == Some(name) => {
                Some(deployment)
            }
            _ => None,
        })
    }

    fn image(deployment: &Deployment) -> &str {
        let pod = deployment.spec.as_ref().and_then(|spec| spec.template.spec.as_ref()).expect("pod spec");
        pod.containers[0].image.as_deref().expect("image")
    }

    /// `deployment` as the API would show it: `generation` 2, and a status.
    fn with_status(
        deployment: &Deployment,
        observed: i64,
        replicas: i32,
        updated: i32,
        available: i32,
    ) -> Deployment {
        let mut deployment = deployment.clone();
        deployment.metadata.generation = Some(2);
        deployment.status = Some(k8s_openapi::api::apps::v1::DeploymentStatus {
            observed_generation: Some(observed),
            replicas: Some(replicas),
            updated_replicas: Some(updated),
            available_replicas: Some(available),
            ..Default::default()
        });
        deployment
    }

    #[test]
    fn a_deployment_is_rolled_out_only_when_every_replica_runs_its_template() {
        let state =
            build(&tenant(spec(serde_json::json!({"apiServer": {"replicas": 2}}))), &ObservedSecrets::new());
        let apiserver = deployment(&state, &names().apiserver()).expect("built");
        let version = |observed, replicas, updated, available| {
            DeploymentVersion::from_deployment(&with_status(
                apiserver, observed, replicas, updated, available,
            ))
        };
        let done = version(2, 2, 2, 2);
        assert_eq!(done.template.as_deref(), Some("1.34.2"));
        assert_eq!(done.rolled_out.as_deref(), Some("1.34.2"));
        for (observed, replicas, updated, available, why) in [
            (1, 2, 2, 2, "the controller has not seen the new template"),
            (2, 3, 2, 2, "an old pod is still counted"),
            (2, 3, 2, 3, "an old pod is still available"),
            (2, 2, 1, 2, "one replica runs the old template"),
            (2, 2, 2, 1, "a new replica is not available yet"),
        ] {
            let rolling = version(observed, replicas, updated, available);
            assert_eq!(rolling.template.as_deref(), Some("1.34.2"), "{why}");
            assert_eq!(rolling.rolled_out, None, "{why}");
        }
        let mut no_status = apiserver.clone();
        no_status.status = None;
        assert_eq!(DeploymentVersion::from_deployment(&no_status).rolled_out, None);
    }

    #[test]
    fn an_upgrade_moves_the_controller_manager_and_the_scheduler_only_after_every_apiserver_replica() {
        let names = names();
        let old = tenant(spec(serde_json::json!({"apiServer": {"replicas": 2}})));
        let mut new = old.clone();
        new.spec.version = "1.35.4".into();
        // Running: built again once its apiserver served, so the controller-manager has replicas.
        let bootstrap = build(&old, &ObservedSecrets::new());
        let serving = DeploymentVersion {
            template: Some("1.34.2".into()),
            rolled_out: Some("1.34.2".into()),
            replicas: 2,
            available: 2,
        };
        let serving = ObservedRollout { apiserver: Some(serving), ..ObservedRollout::default() };
        let running =
            desired_state(&old, &observed(&bootstrap), &serving, now(), OPERATOR_NAMESPACE).expect("builds");
        let secrets = observed(&running);
        let live = |state: &DesiredState, name: &str, updated, available| {
            let built = deployment(state, name).expect("built");
            with_status(
                built,
                2,
                built.spec.as_ref().and_then(|spec| spec.replicas).unwrap_or(1),
                updated,
                available,
            )
        };
        // The apiserver with `updated` of its 2 replicas at the template of `state`; the
        // controller-manager and the scheduler rolled out at theirs.
        let observed_after = |state: &DesiredState, updated| {
            ObservedRollout::from_deployments(
                Some(&live(state, &names.apiserver(), updated, 2)),
                Some(&live(state, &names.controller_manager(), 1, 1)),
                Some(&live(state, &names.scheduler(), 1, 1)),
            )
        };
        let rolled_out_at_old = observed_after(&running, 2);
        assert_eq!(rolled_out_at_old.control_plane_version(), Some("1.34.2"));
        let images = |state: &DesiredState| {
            (
                image(deployment(state, &names.apiserver()).expect("apiserver")).to_string(),
                deployment(state, &names.controller_manager()).map(|cm| image(cm).to_string()),
                deployment(state, &names.scheduler()).map(|scheduler| image(scheduler).to_string()),
            )
        };

        // The pass that sees the new spec: the apiserver moves, the others stay.
        let first =
            desired_state(&new, &secrets, &rolled_out_at_old, now(), OPERATOR_NAMESPACE).expect("builds");
        assert_eq!(
            images(&first),
            (
                "registry.k8s.io/kube-apiserver:v1.35.4".to_string(),
                Some("registry.k8s.io/kube-controller-manager:v1.34.2".to_string()),
                Some("registry.k8s.io/kube-scheduler:v1.34.2".to_string())
            )
        );
        assert_eq!(first.controller_manager_version.as_deref(), Some("1.34.2"));
        assert_eq!(first.scheduler_version.as_deref(), Some("1.34.2"));

        // While the apiserver rolls (one of two replicas updated), still held.
        let rolling = observed_after(&first, 1);
        assert_eq!(rolling.control_plane_version(), None);
        let second = desired_state(&new, &secrets, &rolling, now(), OPERATOR_NAMESPACE).expect("builds");
        assert_eq!(images(&second), images(&first));
        assert_eq!(as_json(&second), as_json(&first), "nothing to apply while the apiserver rolls");

        // A controller-manager or scheduler deleted mid-rollout is not recreated at either
        // version yet; the other one stays as it is.
        let deleted = ObservedRollout { controller_manager: None, ..rolling.clone() };
        let deferred = desired_state(&new, &secrets, &deleted, now(), OPERATOR_NAMESPACE).expect("builds");
        assert_eq!(images(&deferred).1, None);
        assert_eq!(deferred.controller_manager_version, None);
        assert_eq!(images(&deferred).2, images(&first).2);
        let deleted = ObservedRollout { scheduler: None, ..rolling.clone() };
        let deferred = desired_state(&new, &secrets, &deleted, now(), OPERATOR_NAMESPACE).expect("builds");
        assert_eq!(images(&deferred).2, None);
        assert_eq!(deferred.scheduler_version, None);
        assert_eq!(images(&deferred).1, images(&first).1);

        // Every apiserver replica runs 1.35.4: now both follow.
        let apiserver_done = observed_after(&second, 2);
        let third =
            desired_state(&new, &secrets, &apiserver_done, now(), OPERATOR_NAMESPACE).expect("builds");
        assert_eq!(images(&third).1.as_deref(), Some("registry.k8s.io/kube-controller-manager:v1.35.4"));
        assert_eq!(images(&third).2.as_deref(), Some("registry.k8s.io/kube-scheduler:v1.35.4"));
        assert_eq!(third.scheduler_version.as_deref(), Some("1.35.4"));
        // ... which is exactly what a tenant created at 1.35.4 gets once its apiserver serves.
        let apiserver_only =
            ObservedRollout { apiserver: apiserver_done.apiserver.clone(), ..ObservedRollout::default() };
        let fresh =
            desired_state(&new, &secrets, &apiserver_only, now(), OPERATOR_NAMESPACE).expect("builds");
        assert_eq!(as_json(&third), as_json(&fresh));
    }

    #[test]
    fn the_scheduler_is_never_newer_than_an_apiserver_replica() {
        let rolling_to = |template: &str| DeploymentVersion {
            template: Some(template.into()),
            rolled_out: None,
            replicas: 2,
            available: 2,
        };
        let rollout = ObservedRollout {
            apiserver: Some(rolling_to("1.35.4")),
            controller_manager: Some(rolling_to("1.34.2")),
            scheduler: Some(rolling_to("1.34.2")),
        };
        assert_eq!(scheduler_version("1.35.4", &rollout).as_deref(), Some("1.34.2"), "held");
        assert_eq!(controller_manager_version("1.35.4", &rollout).as_deref(), Some("1.34.2"), "held");
        let scheduler_gone = ObservedRollout { scheduler: None, ..rollout.clone() };
        assert_eq!(scheduler_version("1.35.4", &scheduler_gone), None, "no safe version while rolling");
        let mut done = rollout.clone();
        done.apiserver =
            Some(DeploymentVersion { rolled_out: Some("1.35.4".into()), ..rolling_to("1.35.4") });
        assert_eq!(scheduler_version("1.35.4", &done).as_deref(), Some("1.35.4"));
        assert_eq!(done.control_plane_version(), None, "the scheduler still runs 1.34.2");
        assert_eq!(scheduler_version("v1.35.4", &ObservedRollout::default()).as_deref(), Some("1.35.4"));
    }

    #[test]
    fn a_new_controller_manager_starts_with_its_apiserver_at_the_spec_replicas() {
        let names = names();
        let tenant = tenant(spec(serde_json::json!({"controllerManager": {"replicas": 2}})));
        let first = build(&tenant, &ObservedSecrets::new());
        let built = deployment(&first, &names.controller_manager()).expect("controller-manager built");
        assert_eq!(
            built.spec.as_ref().and_then(|spec| spec.replicas),
            Some(2),
            "no apiserver Deployment yet"
        );
    }
}
