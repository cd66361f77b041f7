//! Health of a tenant's running control plane, beyond what workload status says:
//! probes of etcd, kube-apiserver, kube-controller-manager and kube-scheduler (the
//! last two by their leader Leases and who holds them, [`lease`]), debounced verdicts
//! for the component conditions and the decision to restart a wedged apiserver pod.
//! What speaks to etcd (its gateway, membership repair, scaling) is
//! [`crate::etcd`]'s; this module calls into it for etcd's probe and judges the
//! answers ([`etcd::verdict`]).
//!
//! Workload status alone is not enough: a stopped (SIGSTOP) apiserver keeps its pod
//! Running and Ready until the kubelet's probes give up (more than a minute with
//! the tenant's probe settings), and a controller manager or a scheduler that lost
//! its lease looks Ready forever. The operator therefore asks the components themselves.
//!
//! Split as elsewhere in Nestor: [`probe_tenant`] does the I/O (reads from the meta
//! cluster, HTTPS to the tenant), [`TenantHealth::record`] is pure (debounce and
//! heal decisions with explicit timestamps), and [`HealthTracker`] keeps one
//! [`TenantHealth`] per TenantCluster between passes.

pub mod apiserver;
pub mod debounce;
pub mod etcd;
pub mod lease;
pub mod tunnel;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client};

use crate::api::TenantCluster;
use crate::etcd::gateway;
use crate::kubeconfig::ClientCredentials;
use crate::names::{COMPONENT_LABEL, Component, TenantNames};
use crate::resources::{APISERVER_PORT, KUBECONFIG_KEY};
use crate::transport::TlsClient;

pub use apiserver::PodProbe;
pub use debounce::{DebounceThresholds, Debouncer};

/// Default probe interval: often enough to heal within a minute, rare enough that a
/// few hundred tenants cost a few requests per second.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
/// Default timeout of one probe request. A healthy component answers in milliseconds,
/// but not on a saturated node: with 10 tenants starting at once on 2 cores, etcd
/// missed a 2 s timeout often enough that EtcdReady flapped for minutes. A wedged
/// component is still found within the restart threshold (three intervals).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// How often and how patiently tenants are probed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HealthSettings {
    /// Requeue interval of a probed tenant; `None` disables probes (and healing).
    pub interval: Option<Duration>,
    /// Timeout of one probe request.
    pub timeout: Duration,
}

impl Default for HealthSettings {
    fn default() -> Self {
        Self { interval: Some(DEFAULT_INTERVAL), timeout: DEFAULT_TIMEOUT }
    }
}

impl HealthSettings {
    /// Settings from the operator's flags: an interval of zero turns probes and healing off.
    pub fn new(interval: Duration, timeout: Duration) -> Self {
        Self { interval: (!interval.is_zero()).then_some(interval), timeout }
    }

    /// Debounce thresholds for the component conditions (see [`DebounceThresholds::for_interval`]).
    pub fn debounce(&self) -> DebounceThresholds {
        DebounceThresholds::for_interval(self.interval.unwrap_or(DEFAULT_INTERVAL))
    }

    /// How long a started apiserver pod's `/livez` must fail before the operator
    /// deletes it: three intervals (30 s by default), so at least three consecutive
    /// probes agree, and well before the kubelet's own liveness probe gives up
    /// (8 failures 10 s apart in the tenant's Deployment).
    pub fn restart_after(&self) -> Duration {
        self.interval.unwrap_or(DEFAULT_INTERVAL).saturating_mul(3)
    }
}

/// What one probe concluded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// The component answered as it should; the message says what was checked.
    Healthy(String),
    /// The component answered wrong or not at all; the message says how (one line).
    Unhealthy(String),
    /// The probe could not judge the component (its path went through something
    /// else that failed). Does not move the debounce state.
    Inconclusive(String),
}

impl ProbeOutcome {
    /// Whether this outcome says the component is healthy.
    pub fn is_healthy(&self) -> bool {
        matches!(self, ProbeOutcome::Healthy(_))
    }
}

/// Everything one probe pass found. `None`: not probed (credentials or objects missing,
/// which the other conditions report).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProbeReport {
    /// etcd members, status and member list.
    pub etcd: Option<ProbeOutcome>,
    /// `/readyz` through the Service and `/livez` on each pod.
    pub apiserver: Option<ProbeOutcome>,
    /// The controller manager's leader Lease.
    pub controller_manager: Option<ProbeOutcome>,
    /// The scheduler's leader Lease.
    pub scheduler: Option<ProbeOutcome>,
    /// The konnectivity servers' agents against the nodes ([`tunnel`]); `None` when no
    /// apiserver pod runs a server.
    pub tunnel: Option<ProbeOutcome>,
    /// Each started, running apiserver pod's `/livez`.
    pub apiserver_pods: Vec<PodProbe>,
    /// What the etcd probe saw in detail, for the membership repair; `None` when
    /// etcd was not probed.
    pub etcd_members: Option<crate::etcd::membership::EtcdObservation>,
    /// Leader Leases held by strangers to their component, for the pass to release
    /// (see [`lease::release_for`]).
    pub lease_releases: Vec<lease::LeaseRelease>,
}

/// The debounced state of one component, as the conditions show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Healthy or not, after debouncing.
    pub healthy: bool,
    /// The message of the latest probe agreeing with `healthy`.
    pub message: String,
}

/// Debounced verdicts per component; `None` where no probe result exists yet.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HealthVerdicts {
    /// etcd.
    pub etcd: Option<Verdict>,
    /// kube-apiserver.
    pub apiserver: Option<Verdict>,
    /// kube-controller-manager.
    pub controller_manager: Option<Verdict>,
    /// kube-scheduler.
    pub scheduler: Option<Verdict>,
    /// The konnectivity tunnel.
    pub tunnel: Option<Verdict>,
}

/// An apiserver pod the operator should delete, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodRestart {
    /// Pod name.
    pub name: String,
    /// Pod UID, the deletion precondition.
    pub uid: String,
    /// How long `/livez` has been failing.
    pub failing_for: Duration,
    /// The latest failure.
    pub error: String,
}

/// A pod whose `/livez` is failing, since when.
#[derive(Clone, Debug, PartialEq, Eq)]
struct PodFailure {
    since: Timestamp,
}

/// Probe history of one tenant.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TenantHealth {
    etcd: Debouncer,
    apiserver: Debouncer,
    controller_manager: Debouncer,
    scheduler: Debouncer,
    tunnel: Debouncer,
    /// Failing apiserver pods by UID.
    failing_pods: BTreeMap<String, PodFailure>,
}

impl TenantHealth {
    /// Feeds one probe pass observed at `now` (pure). Returns the debounced verdicts
    /// and at most one apiserver pod to restart.
    ///
    /// A pod is restarted only when its `/livez` failed on every probe for
    /// [`HealthSettings::restart_after`] and etcd answered healthy in this pass: when
    /// etcd is down every apiserver fails its checks, and restarting them would only
    /// add churn to an outage they did not cause. One pod per pass, so a probe bug
    /// can never take every replica down at once.
    pub fn record(
        &mut self,
        report: &ProbeReport,
        now: Timestamp,
        settings: &HealthSettings,
    ) -> (HealthVerdicts, Option<PodRestart>) {
        let thresholds = settings.debounce();
        let judge = |debouncer: &mut Debouncer, outcome: Option<&ProbeOutcome>| {
            match outcome {
                Some(ProbeOutcome::Healthy(message)) => {
                    debouncer.observe(true, message.clone(), now, thresholds);
                }
                Some(ProbeOutcome::Unhealthy(message)) => {
                    debouncer.observe(false, message.clone(), now, thresholds);
                }
                Some(ProbeOutcome::Inconclusive(_)) | None => {}
            }
            debouncer
                .reported()
                .map(|reported| Verdict { healthy: reported.healthy, message: reported.message.clone() })
        };
        let verdicts = HealthVerdicts {
            etcd: judge(&mut self.etcd, report.etcd.as_ref()),
            apiserver: judge(&mut self.apiserver, report.apiserver.as_ref()),
            controller_manager: judge(&mut self.controller_manager, report.controller_manager.as_ref()),
            scheduler: judge(&mut self.scheduler, report.scheduler.as_ref()),
            tunnel: judge(&mut self.tunnel, report.tunnel.as_ref()),
        };

        // Pods that answered or are gone forget their failures.
        self.failing_pods
            .retain(|uid, _| report.apiserver_pods.iter().any(|pod| &pod.uid == uid && pod.livez.is_err()));
        let etcd_healthy = report.etcd.as_ref().is_some_and(ProbeOutcome::is_healthy);
        let mut restart = None;
        for pod in &report.apiserver_pods {
            let Err(error) = &pod.livez else { continue };
            let failure = self.failing_pods.entry(pod.uid.clone()).or_insert(PodFailure { since: now });
            let failing_for = Duration::try_from(now.duration_since(failure.since)).unwrap_or_default();
            if restart.is_none() && etcd_healthy && failing_for >= settings.restart_after() {
                restart = Some(PodRestart {
                    name: pod.name.clone(),
                    uid: pod.uid.clone(),
                    failing_for,
                    error: error.clone(),
                });
            }
        }
        if let Some(restart) = &restart {
            // Its replacement has a new UID; should the deletion fail, the count starts over.
            self.failing_pods.remove(&restart.uid);
        }
        (verdicts, restart)
    }
}

/// Probe history of every tenant, kept in the controller's context between passes.
#[derive(Default)]
pub struct HealthTracker {
    tenants: Mutex<HashMap<ObjectRef<TenantCluster>, TenantHealth>>,
    /// The controller's cache: a tenant missing from it is forgotten.
    store: OnceLock<Store<TenantCluster>>,
}

impl HealthTracker {
    /// Lets [`HealthTracker::record`] prune tenants that no longer exist.
    pub fn watch_tenants(&self, store: Store<TenantCluster>) {
        // Set once per controller run; a second run in the same process keeps the first store.
        let _ = self.store.set(store);
    }

    /// Feeds a probe pass of `tenant` (see [`TenantHealth::record`]) and prunes the
    /// history of tenants that disappeared.
    pub fn record(
        &self,
        tenant: &ObjectRef<TenantCluster>,
        report: &ProbeReport,
        now: Timestamp,
        settings: &HealthSettings,
    ) -> (HealthVerdicts, Option<PodRestart>) {
        let mut tenants = self.tenants.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(store) = self.store.get() {
            tenants.retain(|key, _| key == tenant || store.get(key).is_some());
        }
        tenants.entry(tenant.clone()).or_default().record(report, now, settings)
    }

    /// Forgets `tenant` (deleted, or its probes no longer run).
    pub fn forget(&self, tenant: &ObjectRef<TenantCluster>) {
        self.tenants.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(tenant);
    }

    /// Number of tenants with a history.
    pub fn len(&self) -> usize {
        self.tenants.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len()
    }

    /// Whether no tenant has a history.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Which etcd members a probe pass asks, and how many it expects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EtcdProbe {
    /// Members `0..members` are probed (those with a started pod).
    pub members: i32,
    /// Members the verdict expects: the StatefulSet's replicas.
    pub expected: i32,
}

/// The credentials a probe needs, from two of the tenant's Secrets: the etcd
/// healthcheck client and the admin kubeconfig. The apiserver Service's address is
/// looked up per probe (see [`apiserver_address`]): it is in the owned-object cache.
#[derive(Clone)]
pub struct ProbeCredentials {
    /// `None` while the etcd healthcheck client Secret does not exist (yet).
    etcd: Option<TlsClient>,
    /// `None` while the admin kubeconfig Secret does not exist (yet).
    admin: Option<Result<AdminAccess, String>>,
    /// Of the two Secrets' data (see [`CredentialSecrets::fingerprint`]).
    fingerprint: u64,
}

/// The admin kubeconfig's credentials, as the probes' TLS client.
#[derive(Clone)]
struct AdminAccess {
    tls: TlsClient,
}

impl ProbeCredentials {
    /// Reads the two Secrets (two requests).
    async fn read(meta: &Client, names: &TenantNames) -> Self {
        let secrets: Api<Secret> = Api::namespaced(meta.clone(), &names.namespace);
        let (admin, etcd) = (names.admin_kubeconfig_secret(), names.etcd_healthcheck_client_secret());
        let (admin, etcd) = futures::join!(secrets.get_opt(&admin), secrets.get_opt(&etcd));
        let secrets: Vec<Secret> =
            [admin, etcd].into_iter().filter_map(|secret| secret.ok().flatten()).collect();
        let sources = CredentialSecrets::select(names, &secrets);
        Self::build(&sources, sources.fingerprint())
    }

    /// Builds the credentials from the two Secrets, whose data hashes to `fingerprint`.
    fn build(sources: &CredentialSecrets<'_>, fingerprint: u64) -> Self {
        let admin =
            sources.admin.and_then(|secret| secret.data.as_ref()?.get(KUBECONFIG_KEY)).map(|kubeconfig| {
                std::str::from_utf8(&kubeconfig.0)
                    .ok()
                    .and_then(|yaml| ClientCredentials::from_kubeconfig(yaml).ok())
                    .and_then(|credentials| {
                        TlsClient::new(
                            credentials.ca_pem.as_bytes(),
                            credentials.client_cert_pem.as_bytes(),
                            credentials.client_key_pem.as_bytes(),
                        )
                        .ok()
                    })
                    .map(|tls| AdminAccess { tls })
                    .ok_or_else(|| "admin kubeconfig is unusable".to_string())
            });
        Self { etcd: sources.etcd.and_then(crate::etcd::healthcheck_client), admin, fingerprint }
    }

    /// Deletes the Lease `release` names, found held by a stranger (see
    /// [`lease::release`]), as the admin user of the tenant of `names`.
    pub async fn release_lease(
        &self,
        names: &TenantNames,
        release: &lease::LeaseRelease,
        timeout: Duration,
    ) -> Result<lease::Released, String> {
        match &self.admin {
            Some(Ok(admin)) => {
                lease::release(&admin.tls, &names.apiserver_service_host(), release, timeout).await
            }
            Some(Err(error)) => Err(error.clone()),
            None => Err("no admin kubeconfig".into()),
        }
    }

    /// Whether both were there and usable, so caching them saves their reads.
    fn complete(&self) -> bool {
        self.etcd.is_some() && matches!(self.admin, Some(Ok(_)))
    }
}

/// The two Secrets credentials are built from, picked out of a tenant's Secrets.
struct CredentialSecrets<'a> {
    admin: Option<&'a Secret>,
    etcd: Option<&'a Secret>,
}

impl<'a> CredentialSecrets<'a> {
    fn select(names: &TenantNames, secrets: impl IntoIterator<Item = &'a Secret>) -> Self {
        let (admin_name, etcd_name) =
            (names.admin_kubeconfig_secret(), names.etcd_healthcheck_client_secret());
        let mut selected = Self { admin: None, etcd: None };
        for secret in secrets {
            match secret.metadata.name.as_deref() {
                Some(name) if name == admin_name => selected.admin = Some(secret),
                Some(name) if name == etcd_name => selected.etcd = Some(secret),
                _ => {}
            }
        }
        selected
    }

    /// A hash of both Secrets' data: equal when the credentials would be the same, so
    /// a pass keeps the TLS clients (and their resumable sessions) it already has
    /// instead of parsing the keys and building them again.
    fn fingerprint(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        for secret in [self.admin, self.etcd] {
            let data = secret.and_then(|secret| secret.data.as_ref());
            data.is_some().hash(&mut hasher);
            for (key, value) in data.into_iter().flatten() {
                key.hash(&mut hasher);
                value.0.hash(&mut hasher);
            }
        }
        hasher.finish()
    }
}

/// Each tenant's [`ProbeCredentials`], so a probe between passes reads nothing of the
/// meta cluster. Every pass refreshes its tenant's entry twice: from the Secrets it
/// listed, then from those it applied (see [`ProbeCredentialsCache::refresh`]). So the
/// first pass of a new tenant leaves complete credentials behind, and a renewed
/// certificate is used from the pass that issued it on.
#[derive(Default)]
pub struct ProbeCredentialsCache {
    tenants: Mutex<HashMap<(String, String), ProbeCredentials>>,
}

impl ProbeCredentialsCache {
    /// The credentials in `secrets` (the tenant's Secrets as just listed, or as just
    /// applied), which replace what is cached for the tenant of `names`: kept only
    /// when complete, otherwise forgotten so that the next probe reads afresh. The
    /// cached ones are returned unchanged when built from the same data.
    pub fn refresh<'a>(
        &self,
        names: &TenantNames,
        secrets: impl IntoIterator<Item = &'a Secret>,
    ) -> ProbeCredentials {
        let sources = CredentialSecrets::select(names, secrets);
        let fingerprint = sources.fingerprint();
        let key = (names.namespace.clone(), names.tenant.clone());
        if let Some(cached) = self.lock().get(&key).filter(|cached| cached.fingerprint == fingerprint) {
            return cached.clone();
        }
        let credentials = ProbeCredentials::build(&sources, fingerprint);
        self.keep(key, &credentials);
        credentials
    }

    /// Caches `credentials` under `key` when complete; otherwise forgets the key, so
    /// that the next probe reads afresh.
    fn keep(&self, key: (String, String), credentials: &ProbeCredentials) {
        if credentials.complete() {
            self.lock().insert(key, credentials.clone());
        } else {
            self.lock().remove(&key);
        }
    }

    /// Keeps only the tenants (namespace, name) for which `keep` says so: the health
    /// monitor prunes deleted tenants after each round.
    pub fn retain(&self, keep: impl Fn(&str, &str) -> bool) {
        self.lock().retain(|(namespace, name), _| keep(namespace, name));
    }

    /// Number of tenants cached.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The tenant's credentials: cached, else read (two requests) and cached when complete.
    pub async fn get(&self, meta: &Client, names: &TenantNames) -> ProbeCredentials {
        let key = (names.namespace.clone(), names.tenant.clone());
        if let Some(credentials) = self.lock().get(&key) {
            return credentials.clone();
        }
        let credentials = ProbeCredentials::read(meta, names).await;
        self.keep(key, &credentials);
        credentials
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), ProbeCredentials>> {
        self.tenants.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The probe target of the tenant's apiserver `service`: its ClusterIP and first
/// port; `None` without a Service or without a ClusterIP.
pub fn apiserver_address(service: Option<&Service>) -> Option<SocketAddr> {
    service.and_then(service_address)
}

/// Probes one tenant's etcd, apiserver, controller manager and scheduler: HTTPS to the tenant's
/// pods and to `apiserver_service` (see [`apiserver_address`], or why the Service
/// could not be read), with `credentials`. `tenant_pods` are the tenant's pods, or
/// why they could not be read. Sends nothing to the meta cluster. Never fails: every
/// problem becomes an outcome, since a failed probe is exactly what this function is
/// meant to report.
pub async fn probe_tenant(
    names: &TenantNames,
    credentials: &ProbeCredentials,
    apiserver_service: Result<Option<SocketAddr>, String>,
    tenant_pods: Result<Vec<Pod>, String>,
    etcd_probe: EtcdProbe,
    now: Timestamp,
    timeout: Duration,
) -> ProbeReport {
    let of = |component: Component| -> Result<Vec<Pod>, String> {
        let label = component.label();
        tenant_pods.as_ref().map_err(Clone::clone).map(|pods| {
            pods.iter()
                .filter(|pod| {
                    pod.metadata.labels.as_ref().and_then(|labels| labels.get(COMPONENT_LABEL))
                        == Some(&label.to_string())
                })
                .cloned()
                .collect()
        })
    };

    let etcd = async {
        let tls = credentials.etcd.as_ref()?;
        let etcd_pods = match of(Component::Etcd) {
            Ok(list) => list,
            Err(error) => {
                return Some((ProbeOutcome::Inconclusive(format!("cannot list etcd pods: {error}")), None));
            }
        };
        let ips: BTreeMap<String, IpAddr> =
            etcd_pods.iter().filter_map(probe_target).map(|pod| (pod.name, pod.ip)).collect();
        let targets = gateway::member_targets(names, etcd_probe.members, &ips);
        let (reports, member_list) = gateway::member_answers(tls, &targets, timeout).await;
        let expected = usize::try_from(etcd_probe.expected).unwrap_or_default();
        let members = member_list.as_ref().map(|list| list.members.as_slice());
        let outcome = etcd::verdict(expected, &reports, members);
        let observation = crate::etcd::membership::EtcdObservation {
            targets,
            reports,
            member_list,
            pods: etcd_pods.iter().filter_map(crate::etcd::membership::MemberPod::from_pod).collect(),
        };
        Some((outcome, Some(observation)))
    };
    // Every pod of the component, whatever its phase (see [`lease::foreign_holder`]).
    let pod_names = |component: Component| {
        of(component).ok().map(|pods| pods.into_iter().filter_map(|pod| pod.metadata.name).collect())
    };
    let pods = ControlPlanePods {
        apiserver: of(Component::ApiServer).map(|pods| pods.iter().filter_map(probe_target).collect()),
        tunnel_servers: of(Component::ApiServer).map(|pods| tunnel::servers(&pods)).unwrap_or_default(),
        controller_manager: pod_names(Component::ControllerManager),
        scheduler: pod_names(Component::Scheduler),
    };
    let control_plane =
        probe_apiserver_and_leaders(credentials, apiserver_service, &pods, names, now, timeout);
    let (etcd, control_plane) = futures::join!(etcd, control_plane);
    let (etcd, etcd_members) = match etcd {
        Some((outcome, observation)) => (Some(outcome), observation),
        None => (None, None),
    };
    ProbeReport {
        etcd,
        apiserver: control_plane.apiserver,
        controller_manager: control_plane.controller_manager,
        scheduler: control_plane.scheduler,
        tunnel: control_plane.tunnel,
        apiserver_pods: control_plane.apiserver_pods,
        etcd_members,
        lease_releases: control_plane.lease_releases,
    }
}

/// The pods the probes through the tenant apiserver need to know.
struct ControlPlanePods {
    /// The apiserver pods to probe, or why they could not be listed.
    apiserver: Result<Vec<apiserver::PodTarget>, String>,
    /// The konnectivity servers among them.
    tunnel_servers: Vec<tunnel::ServerTarget>,
    /// The names of the controller manager's pods; `None` when not listed.
    controller_manager: Option<Vec<String>>,
    /// The names of the scheduler's pods; `None` when not listed.
    scheduler: Option<Vec<String>>,
}

/// What the probes through the tenant apiserver found: the apiserver itself and the
/// leader Leases of the components that work through it.
#[derive(Default)]
struct ControlPlaneProbes {
    apiserver: Option<ProbeOutcome>,
    apiserver_pods: Vec<PodProbe>,
    controller_manager: Option<ProbeOutcome>,
    scheduler: Option<ProbeOutcome>,
    tunnel: Option<ProbeOutcome>,
    lease_releases: Vec<lease::LeaseRelease>,
}

impl ControlPlaneProbes {
    /// Every component inconclusive for the same reason (no usable credentials or Service).
    fn inconclusive(why: String) -> Self {
        let outcome = Some(ProbeOutcome::Inconclusive(why));
        Self {
            apiserver: outcome.clone(),
            apiserver_pods: Vec::new(),
            controller_manager: outcome.clone(),
            scheduler: outcome,
            tunnel: None,
            lease_releases: Vec::new(),
        }
    }
}

/// Probes the apiserver through its Service and on each started pod, then, once the
/// Service answers, the controller manager's and the scheduler's leader Leases at once
/// (each against the names of its component's pods).
async fn probe_apiserver_and_leaders(
    credentials: &ProbeCredentials,
    apiserver_service: Result<Option<SocketAddr>, String>,
    pods: &ControlPlanePods,
    names: &TenantNames,
    now: Timestamp,
    timeout: Duration,
) -> ControlPlaneProbes {
    let admin = match &credentials.admin {
        None => return ControlPlaneProbes::default(),
        Some(Ok(admin)) => admin,
        Some(Err(error)) => return ControlPlaneProbes::inconclusive(error.clone()),
    };
    let service_address = match apiserver_service {
        Ok(address) => address,
        Err(error) => return ControlPlaneProbes::inconclusive(error),
    };
    let server_name = names.apiserver_service_host();
    let port = u16::try_from(APISERVER_PORT).unwrap_or(6443);
    let service = async {
        match service_address {
            Some(address) => apiserver::probe_service(&admin.tls, address, &server_name, timeout).await,
            None => ProbeOutcome::Unhealthy("the apiserver Service has no ClusterIP".into()),
        }
    };
    let pod_probes = async {
        match &pods.apiserver {
            Ok(targets) => apiserver::probe_pods(&admin.tls, targets, port, &server_name, timeout).await,
            Err(error) => {
                tracing::debug!(%error, "cannot list apiserver pods");
                Vec::new()
            }
        }
    };
    let (service, pod_probes) = futures::join!(service, pod_probes);

    // The Leases are read through the Service: only once it answers is their absence news.
    let reachable = service_address.filter(|_| service.is_healthy());
    let leader = async |lease: lease::LeaderLease, pods: Option<&[String]>| match reachable {
        Some(address) => lease::probe(&admin.tls, address, &server_name, lease, pods, now, timeout).await,
        None => lease::LeaseProbe {
            outcome: ProbeOutcome::Inconclusive("the tenant apiserver is not ready".into()),
            release: None,
        },
    };
    let tunnel_servers = pods.tunnel_servers.as_slice();
    // The nodes are counted through the Service too.
    let tunnel = async {
        match (reachable, tunnel_servers.is_empty()) {
            (_, true) => None,
            (Some(address), false) => {
                Some(tunnel::probe(&admin.tls, address, &server_name, tunnel_servers, timeout).await)
            }
            (None, false) => Some(ProbeOutcome::Inconclusive("the tenant apiserver is not ready".into())),
        }
    };
    let (controller_manager, scheduler, tunnel) = futures::join!(
        leader(lease::CONTROLLER_MANAGER_LEASE, pods.controller_manager.as_deref()),
        leader(lease::SCHEDULER_LEASE, pods.scheduler.as_deref()),
        tunnel
    );
    let lease_releases =
        [&controller_manager, &scheduler].into_iter().filter_map(|probe| probe.release.clone()).collect();
    ControlPlaneProbes {
        apiserver: Some(apiserver::verdict(&service, &pod_probes)),
        apiserver_pods: pod_probes,
        controller_manager: Some(controller_manager.outcome),
        scheduler: Some(scheduler.outcome),
        tunnel,
        lease_releases,
    }
}

/// The Service's ClusterIP and first port.
fn service_address(service: &Service) -> Option<SocketAddr> {
    let spec = service.spec.as_ref()?;
    let ip: IpAddr = spec.cluster_ip.as_deref()?.parse().ok()?;
    let port = spec.ports.as_ref()?.first().map_or(APISERVER_PORT, |port| port.port);
    Some(SocketAddr::new(ip, u16::try_from(port).ok()?))
}

/// The probe target of a pod that should answer: Running, every container started
/// (past its startup probe), not being deleted, with an IP and a UID.
pub fn probe_target(pod: &Pod) -> Option<apiserver::PodTarget> {
    if pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let status = pod.status.as_ref()?;
    if status.phase.as_deref() != Some("Running") {
        return None;
    }
    let containers = status.container_statuses.as_ref()?;
    if containers.is_empty() || !containers.iter().all(|container| container.started == Some(true)) {
        return None;
    }
    Some(apiserver::PodTarget {
        name: pod.metadata.name.clone()?,
        uid: pod.metadata.uid.clone()?,
        ip: status.pod_ip.as_deref()?.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{ContainerStatus, PodStatus};
    use kube::api::ObjectMeta;

    use super::*;
    use crate::resources::CA_CERT_KEY;

    const SETTINGS: HealthSettings =
        HealthSettings { interval: Some(Duration::from_secs(10)), timeout: DEFAULT_TIMEOUT };

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_750_000_000 + second).expect("valid")
    }

    fn healthy(message: &str) -> Option<ProbeOutcome> {
        Some(ProbeOutcome::Healthy(message.into()))
    }

    fn pod(uid: &str, livez: Result<(), &str>) -> PodProbe {
        PodProbe { name: format!("apiserver-{uid}"), uid: uid.into(), livez: livez.map_err(str::to_string) }
    }

    fn report(pods: Vec<PodProbe>) -> ProbeReport {
        ProbeReport {
            etcd: healthy("1/1 members healthy"),
            apiserver: if pods.iter().all(|pod| pod.livez.is_ok()) {
                healthy("/readyz ok")
            } else {
                Some(ProbeOutcome::Unhealthy("pod wedged".into()))
            },
            controller_manager: healthy("lease fresh"),
            scheduler: healthy("scheduler lease fresh"),
            tunnel: None,
            apiserver_pods: pods,
            etcd_members: None,
            lease_releases: Vec::new(),
        }
    }

    #[test]
    fn the_credentials_a_pass_applied_are_complete_and_replace_the_cached_ones() {
        let mut tenant = TenantCluster::new("team-a", crate::resources::test_support::spec());
        tenant.metadata.namespace = Some("tenants".into());
        tenant.metadata.uid = Some("0c9d2b7e-uid".into());
        let names = TenantNames::new("team-a", "tenants");
        let desired = crate::desired::desired_state(
            &tenant,
            &crate::desired::ObservedSecrets::new(),
            &crate::desired::ObservedRollout::default(),
            at(0),
            None,
        )
        .expect("desired state builds");
        let cache = ProbeCredentialsCache::default();

        // A new tenant's first pass lists no Secret: nothing to cache.
        cache.refresh(&names, []);
        assert!(cache.is_empty());
        // Its apply leaves credentials the monitor uses without a read.
        let applied = cache.refresh(&names, desired.secrets());
        assert!(applied.complete());
        assert_eq!(cache.len(), 1);
        // The next pass lists the same data: the same credentials.
        let listed: Vec<Secret> = desired.secrets().cloned().collect();
        assert_eq!(cache.refresh(&names, &listed).fingerprint, applied.fingerprint);
        // A renewed etcd client certificate is new data: built again.
        let etcd_client = names.etcd_healthcheck_client_secret();
        let mut renewed = listed.clone();
        let secret =
            renewed.iter_mut().find(|secret| secret.metadata.name.as_deref() == Some(etcd_client.as_str()));
        let data = secret.and_then(|secret| secret.data.as_mut()).expect("data");
        data.get_mut(CA_CERT_KEY).expect("ca.crt").0.push(b'\n');
        let rebuilt = cache.refresh(&names, &renewed);
        assert!(rebuilt.complete());
        assert_ne!(rebuilt.fingerprint, applied.fingerprint);
        // Only the two Secrets it needs count; without the etcd client it is incomplete
        // and forgotten, so the next probe reads afresh.
        let without_etcd_client =
            desired.secrets().filter(|secret| secret.metadata.name.as_deref() != Some(etcd_client.as_str()));
        cache.refresh(&names, without_etcd_client);
        assert!(cache.is_empty());
    }

    #[test]
    fn settings_derive_thresholds_from_the_interval() {
        assert_eq!(SETTINGS.restart_after(), Duration::from_secs(30));
        assert_eq!(SETTINGS.debounce(), DebounceThresholds { probes: 2, held: Duration::from_secs(20) });
        let fast = HealthSettings { interval: Some(Duration::from_secs(5)), ..SETTINGS };
        assert_eq!(fast.restart_after(), Duration::from_secs(15));
    }

    #[test]
    fn a_wedged_pod_is_restarted_after_failing_for_the_threshold_and_only_once() {
        let mut health = TenantHealth::default();
        let (verdicts, restart) =
            health.record(&report(vec![pod("a", Ok(())), pod("b", Ok(()))]), at(0), &SETTINGS);
        assert_eq!(restart, None);
        assert_eq!(verdicts.apiserver, Some(Verdict { healthy: true, message: "/readyz ok".into() }));
        assert_eq!(verdicts.controller_manager.map(|v| v.message), Some("lease fresh".into()));
        assert_eq!(verdicts.scheduler.map(|v| v.message), Some("scheduler lease fresh".into()));

        let wedged = || report(vec![pod("a", Ok(())), pod("b", Err("/livez: no answer"))]);
        for second in [10, 20, 30] {
            let (_, restart) = health.record(&wedged(), at(second), &SETTINGS);
            assert_eq!(restart, None, "failing for {} s only", second - 10);
        }
        let (verdicts, restart) = health.record(&wedged(), at(40), &SETTINGS);
        assert_eq!(
            restart,
            Some(PodRestart {
                name: "apiserver-b".into(),
                uid: "b".into(),
                failing_for: Duration::from_secs(30),
                error: "/livez: no answer".into(),
            })
        );
        assert_eq!(verdicts.apiserver.map(|v| v.healthy), Some(false), "debounced after 20 s");
        let (_, again) = health.record(&wedged(), at(45), &SETTINGS);
        assert_eq!(again, None, "the count starts over after a restart was asked for");
    }

    #[test]
    fn a_pod_that_answers_again_forgets_its_failures() {
        let mut health = TenantHealth::default();
        health.record(&report(vec![pod("a", Err("slow"))]), at(0), &SETTINGS);
        health.record(&report(vec![pod("a", Ok(()))]), at(20), &SETTINGS);
        let (_, restart) = health.record(&report(vec![pod("a", Err("slow"))]), at(40), &SETTINGS);
        assert_eq!(restart, None, "failing since 40, not since 0");
    }

    #[test]
    fn no_restart_while_etcd_is_unhealthy_or_unknown() {
        let mut health = TenantHealth::default();
        for second in [0, 10, 20, 30, 40] {
            let mut pass = report(vec![pod("a", Err("/livez: HTTP 500: [-]etcd failed"))]);
            pass.etcd = if second < 30 { Some(ProbeOutcome::Unhealthy("no leader".into())) } else { None };
            let (_, restart) = health.record(&pass, at(second), &SETTINGS);
            assert_eq!(restart, None, "at {second}");
        }
    }

    #[test]
    fn at_most_one_pod_is_restarted_per_pass() {
        let mut health = TenantHealth::default();
        let both = || report(vec![pod("a", Err("x")), pod("b", Err("y"))]);
        health.record(&both(), at(0), &SETTINGS);
        let (_, first) = health.record(&both(), at(30), &SETTINGS);
        assert_eq!(first.map(|restart| restart.uid), Some("a".into()));
        let (_, second) = health.record(&both(), at(40), &SETTINGS);
        assert_eq!(second.map(|restart| restart.uid), Some("b".into()));
    }

    #[test]
    fn inconclusive_outcomes_keep_the_previous_verdict() {
        let mut health = TenantHealth::default();
        health.record(&report(vec![]), at(0), &SETTINGS);
        let mut pass = report(vec![]);
        pass.controller_manager = Some(ProbeOutcome::Inconclusive("apiserver not ready".into()));
        let (verdicts, _) = health.record(&pass, at(100), &SETTINGS);
        assert_eq!(
            verdicts.controller_manager,
            Some(Verdict { healthy: true, message: "lease fresh".into() })
        );
        let (verdicts, _) = TenantHealth::default().record(&pass, at(0), &SETTINGS);
        assert_eq!(verdicts.controller_manager, None, "no verdict without a conclusive probe");
    }

    #[test]
    fn tracker_forgets_tenants() {
        let tracker = HealthTracker::default();
        let key = ObjectRef::<TenantCluster>::new("team-a").within("tenants");
        tracker.record(&key, &report(vec![]), at(0), &SETTINGS);
        assert_eq!(tracker.len(), 1);
        tracker.forget(&key);
        assert!(tracker.is_empty());
    }

    fn running_pod(started: Option<bool>, phase: &str, deleting: bool) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("team-a-apiserver-x".into()),
                uid: Some("uid-1".into()),
                deletion_timestamp: deleting
                    .then(|| k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at(0))),
                ..ObjectMeta::default()
            },
            spec: None,
            status: Some(PodStatus {
                phase: Some(phase.into()),
                pod_ip: Some("10.200.0.5".into()),
                container_statuses: Some(vec![ContainerStatus { started, ..ContainerStatus::default() }]),
                ..PodStatus::default()
            }),
        }
    }

    #[test]
    fn only_started_running_pods_are_probed() {
        let target = probe_target(&running_pod(Some(true), "Running", false)).expect("target");
        assert_eq!((target.name.as_str(), target.uid.as_str()), ("team-a-apiserver-x", "uid-1"));
        assert_eq!(target.ip.to_string(), "10.200.0.5");
        assert_eq!(probe_target(&running_pod(Some(false), "Running", false)), None, "still starting");
        assert_eq!(probe_target(&running_pod(None, "Running", false)), None);
        assert_eq!(probe_target(&running_pod(Some(true), "Pending", false)), None);
        assert_eq!(probe_target(&running_pod(Some(true), "Running", true)), None, "being deleted");
    }
}
