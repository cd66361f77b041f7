//! Prometheus metrics of the operator, exposed in OpenMetrics text on `/metrics`.
//!
//! `nestor_api_writes_total` counts every write the reconcile path sends to the
//! API server (applies, status patches, finalizer patches, Events). It is the
//! measurable side of "an unchanged tenant costs zero writes". Lease renewals of
//! leader election and of the scope Lease are not counted: they happen whether or not
//! tenants change.
//!
//! `nestor_reconciles_waiting` and `nestor_reconcile_wait_seconds` show a saturated
//! operator: how many passes wait for their turn now, and how long each waited (the
//! reconciler's own first-come-first-served bound on passes in flight), as client-go's
//! work queue depth and queue duration do for Go controllers.
//!
//! `nestor_tenants_deferred` counts the tenants an operator that watches every
//! namespace leaves to one that watches only theirs.
//!
//! `nestor_etcd_*` show each tenant's etcd space as the last probe saw it (database
//! size, size in use, quota, per member; the `NOSPACE` alarm) and what the space
//! maintenance did (see [`crate::etcd::maintenance`]).
//!
//! `nestor_api_requests_total` counts every request the operator's meta-cluster
//! client sends, reads and watches included, by verb: it is the load the operator
//! puts on the meta apiserver (the scale benchmark reads it), counted at the client
//! because the apiserver's own request metrics do not say who asked.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hyper::http::{Method, Request, Uri};
use kube::client::{Body, ClientBuilder};
use kube::runtime::reflector::Store;
use kube::{Client, Config};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::api::{Phase, TenantCluster};
use crate::error::Error;

/// Content type of [`Metrics::encode`]'s output.
pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The kind of write sent to the API server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WriteVerb {
    /// Server-side apply of an owned object.
    Apply,
    /// Merge patch of a TenantCluster's status subresource.
    PatchStatus,
    /// JSON patch adding or removing the finalizer.
    PatchFinalizer,
    /// Kubernetes Event creation (or series update).
    PublishEvent,
    /// Deletion of objects the garbage collector does not remove (etcd volume claims).
    Delete,
}

impl WriteVerb {
    /// The `verb` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            WriteVerb::Apply => "apply",
            WriteVerb::Delete => "delete",
            WriteVerb::PatchStatus => "patch_status",
            WriteVerb::PatchFinalizer => "patch_finalizer",
            WriteVerb::PublishEvent => "publish_event",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TriggerLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WriteLabels {
    kind: String,
    verb: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    verb: &'static str,
}

/// The `verb` label of a request: the HTTP method, except that a GET with
/// `watch=true` is a watch (a long-lived stream, not a read per object). A list is a GET.
fn request_verb(method: &Method, uri: &Uri) -> &'static str {
    match *method {
        Method::GET if uri.query().is_some_and(|query| query.split('&').any(|pair| pair == "watch=true")) => {
            "watch"
        }
        Method::GET => "get",
        Method::POST => "post",
        Method::PUT => "put",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "other",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MemberLabels {
    namespace: String,
    tenant: String,
    member: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TenantLabels {
    namespace: String,
    tenant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SpaceStepLabels {
    step: &'static str,
    result: &'static str,
}

/// One member's space, as [`Metrics::record_etcd_space`] takes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberSpaceSample {
    /// Member (pod) name.
    pub member: String,
    /// Database file size.
    pub db_size: u64,
    /// Bytes in use.
    pub in_use: u64,
    /// Its quota (reported, else the one wanted).
    pub quota: u64,
}

/// The etcd space gauges and maintenance counters.
#[derive(Default)]
struct EtcdSpaceMetrics {
    db_size: Family<MemberLabels, Gauge>,
    in_use: Family<MemberLabels, Gauge>,
    quota: Family<MemberLabels, Gauge>,
    nospace: Family<TenantLabels, Gauge>,
    steps: Family<SpaceStepLabels, Counter>,
    freed: Counter,
    /// The members each tenant has gauges for, so a tenant's gauges can all go.
    members: std::sync::Mutex<std::collections::HashMap<(String, String), Vec<String>>>,
}

/// The backup gauges of each tenant with `spec.backup` (see [`Metrics::record_backup`]).
#[derive(Default)]
struct BackupMetrics {
    last_success: Family<TenantLabels, Gauge>,
    age: Family<TenantLabels, Gauge>,
    size: Family<TenantLabels, Gauge>,
    failed_jobs: Family<TenantLabels, Gauge>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    phase: &'static str,
}

/// Label value of a tenant that has no phase yet.
const PHASE_UNKNOWN: &str = "Unknown";

fn phase_label(phase: Option<Phase>) -> &'static str {
    match phase {
        Some(Phase::Provisioning) => "Provisioning",
        Some(Phase::Ready) => "Ready",
        Some(Phase::Degraded) => "Degraded",
        Some(Phase::Deleting) => "Deleting",
        None => PHASE_UNKNOWN,
    }
}

/// The operator's metrics and the registry that exposes them.
pub struct Metrics {
    registry: Registry,
    reconciles: Counter,
    reconcile_errors: Family<ErrorLabels, Counter>,
    reconcile_duration: Histogram,
    reconciles_waiting: Gauge,
    reconcile_wait: Histogram,
    api_writes: Family<WriteLabels, Counter>,
    api_requests: Family<RequestLabels, Counter>,
    tenants: Family<PhaseLabels, Gauge>,
    health_probes: Counter,
    health_triggers: Family<TriggerLabels, Counter>,
    tenants_deferred: Gauge,
    etcd_space: EtcdSpaceMetrics,
    defragment_duration: Histogram,
    backup: BackupMetrics,
    /// Sum of `api_writes` over all labels, for tests and logs.
    writes: AtomicU64,
    /// The controller's cache of TenantClusters, set once the controller runs (only the
    /// leader has one). The phase gauge is computed from it at scrape time, which stays
    /// correct through deletes and restarts where incremental updates would drift.
    tenant_store: OnceLock<Store<TenantCluster>>,
}

/// A reconciliation waiting for its turn (see [`Metrics::pass_waiting`]). Dropped
/// without [`WaitingPass::started`] (the operator stopped meanwhile), it only stops
/// counting as waiting.
pub struct WaitingPass<'a> {
    metrics: &'a Metrics,
    since: Instant,
}

impl WaitingPass<'_> {
    /// The reconciliation got its turn: records how long it waited.
    pub fn started(self) {
        self.metrics.reconcile_wait.observe(self.since.elapsed().as_secs_f64());
    }
}

impl Drop for WaitingPass<'_> {
    fn drop(&mut self) {
        self.metrics.reconciles_waiting.dec();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates the metrics, registered under the `nestor_` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("nestor");
        let reconciles = Counter::default();
        registry.register("reconciles", "Reconciliations of TenantCluster objects", reconciles.clone());
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Failed reconciliations, by error reason",
            reconcile_errors.clone(),
        );
        // 5 ms to ~40 s: a pass is a handful of GETs and, rarely, applies.
        let reconcile_duration = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        registry.register_with_unit(
            "reconcile_duration",
            "Duration of one reconciliation",
            Unit::Seconds,
            reconcile_duration.clone(),
        );
        let reconciles_waiting = Gauge::default();
        registry.register(
            "reconciles_waiting",
            "Reconciliations waiting for their turn (the bound on reconciliations in flight)",
            reconciles_waiting.clone(),
        );
        // 1 ms to ~9 min: no wait at all when idle, minutes when 1000 tenants arrive at once.
        let reconcile_wait = Histogram::new(exponential_buckets(0.001, 2.0, 20));
        registry.register_with_unit(
            "reconcile_wait",
            "Time a reconciliation waited for its turn before it started",
            Unit::Seconds,
            reconcile_wait.clone(),
        );
        let api_writes = Family::<WriteLabels, Counter>::default();
        registry.register(
            "api_writes",
            "Writes sent to the Kubernetes API by the reconciler, by object kind and verb",
            api_writes.clone(),
        );
        let api_requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "api_requests",
            "Requests sent to the meta cluster's API server (reads and watches included), by verb",
            api_requests.clone(),
        );
        let tenants = Family::<PhaseLabels, Gauge>::default();
        registry.register("tenants", "TenantCluster objects by phase", tenants.clone());
        let health_probes = Counter::default();
        registry.register(
            "health_probes",
            "Tenants probed by the health monitor, between reconciliations",
            health_probes.clone(),
        );
        let health_triggers = Family::<TriggerLabels, Counter>::default();
        registry.register(
            "health_triggered_reconciles",
            "Reconciliations the health monitor asked for, by what its probe found",
            health_triggers.clone(),
        );
        let tenants_deferred = Gauge::default();
        registry.register(
            "tenants_deferred",
            "Tenants this operator leaves to an operator that watches only their namespace",
            tenants_deferred.clone(),
        );
        let etcd_space = EtcdSpaceMetrics::default();
        registry.register_with_unit(
            "etcd_db_size",
            "Size of each tenant etcd member's database file, as its last probe answered",
            Unit::Bytes,
            etcd_space.db_size.clone(),
        );
        registry.register_with_unit(
            "etcd_db_size_in_use",
            "Bytes in use in each tenant etcd member's database",
            Unit::Bytes,
            etcd_space.in_use.clone(),
        );
        registry.register_with_unit(
            "etcd_quota",
            "Space quota of each tenant etcd member (reported by etcd 3.6, else the spec's)",
            Unit::Bytes,
            etcd_space.quota.clone(),
        );
        registry.register(
            "etcd_alarm_nospace",
            "1 while a tenant's etcd has the NOSPACE alarm raised",
            etcd_space.nospace.clone(),
        );
        registry.register(
            "etcd_space_steps",
            "Space maintenance steps taken on tenant etcds (compact, defragment, disarm, restart), by result",
            etcd_space.steps.clone(),
        );
        registry.register_with_unit(
            "etcd_defragment_freed",
            "Bytes freed by defragmenting tenant etcd members",
            Unit::Bytes,
            etcd_space.freed.clone(),
        );
        // 10 ms to ~80 s.
        let defragment_duration = Histogram::new(exponential_buckets(0.01, 2.0, 14));
        registry.register_with_unit(
            "etcd_defragment_duration",
            "Duration of one tenant etcd member's defragmentation",
            Unit::Seconds,
            defragment_duration.clone(),
        );
        let backup = BackupMetrics::default();
        registry.register(
            "backup_last_success_timestamp_seconds",
            "Unix time of each tenant's last successful etcd backup (status.lastBackup.time)",
            backup.last_success.clone(),
        );
        registry.register_with_unit(
            "backup_age",
            "Age of each tenant's last successful etcd backup when its last pass ran",
            Unit::Seconds,
            backup.age.clone(),
        );
        registry.register_with_unit(
            "backup_size",
            "Size of each tenant's last successful etcd snapshot",
            Unit::Bytes,
            backup.size.clone(),
        );
        registry.register(
            "backup_failed_jobs",
            "Failed backup Jobs each tenant's CronJob keeps in its history (at most 3)",
            backup.failed_jobs.clone(),
        );
        Self {
            registry,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            reconciles_waiting,
            reconcile_wait,
            api_writes,
            api_requests,
            tenants,
            health_probes,
            health_triggers,
            tenants_deferred,
            etcd_space,
            defragment_duration,
            backup,
            writes: AtomicU64::new(0),
            tenant_store: OnceLock::new(),
        }
    }

    /// Records one probe of the health monitor, and the reconciliation it asked for, if any.
    pub fn record_health_probe(&self, triggered: Option<&'static str>) {
        self.health_probes.inc();
        if let Some(reason) = triggered {
            self.health_triggers.get_or_create(&TriggerLabels { reason }).inc();
        }
    }

    /// Sets how many tenants this operator leaves to a namespace-scoped one.
    pub fn set_tenants_deferred(&self, count: usize) {
        self.tenants_deferred.set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// Sets a tenant's etcd space gauges from its latest probe (members that did not
    /// answer are dropped from them).
    pub fn record_etcd_space(
        &self,
        namespace: &str,
        tenant: &str,
        members: &[MemberSpaceSample],
        nospace: bool,
    ) {
        self.forget_etcd_members(namespace, tenant, |member| {
            members.iter().any(|sample| sample.member == member)
        });
        let space = &self.etcd_space;
        for sample in members {
            let labels = MemberLabels {
                namespace: namespace.into(),
                tenant: tenant.into(),
                member: sample.member.clone(),
            };
            let gauge = |bytes: u64| i64::try_from(bytes).unwrap_or(i64::MAX);
            space.db_size.get_or_create(&labels).set(gauge(sample.db_size));
            space.in_use.get_or_create(&labels).set(gauge(sample.in_use));
            space.quota.get_or_create(&labels).set(gauge(sample.quota));
        }
        let tenant_labels = TenantLabels { namespace: namespace.into(), tenant: tenant.into() };
        space.nospace.get_or_create(&tenant_labels).set(i64::from(nospace));
        if let Ok(mut known) = space.members.lock() {
            known.insert(
                (namespace.into(), tenant.into()),
                members.iter().map(|sample| sample.member.clone()).collect(),
            );
        }
    }

    /// Drops every etcd space gauge of a tenant (deleted).
    pub fn forget_etcd_space(&self, namespace: &str, tenant: &str) {
        self.forget_etcd_members(namespace, tenant, |_| false);
        self.etcd_space.nospace.remove(&TenantLabels { namespace: namespace.into(), tenant: tenant.into() });
    }

    fn forget_etcd_members(&self, namespace: &str, tenant: &str, keep: impl Fn(&str) -> bool) {
        let space = &self.etcd_space;
        let Ok(mut known) = space.members.lock() else { return };
        let Some(members) = known.get_mut(&(namespace.to_string(), tenant.to_string())) else { return };
        members.retain(|member| {
            if keep(member) {
                return true;
            }
            let labels =
                MemberLabels { namespace: namespace.into(), tenant: tenant.into(), member: member.clone() };
            space.db_size.remove(&labels);
            space.in_use.remove(&labels);
            space.quota.remove(&labels);
            false
        });
    }

    /// Records one space maintenance step (`compact`, `defragment`, `disarm`,
    /// `restart`) and whether it worked.
    pub fn record_etcd_space_step(&self, step: &'static str, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.etcd_space.steps.get_or_create(&SpaceStepLabels { step, result }).inc();
    }

    /// Records a tenant's backup state: its last success (time, age, size) and the
    /// failed Jobs its CronJob keeps.
    pub fn record_backup(
        &self,
        namespace: &str,
        tenant: &str,
        last: Option<(jiff::Timestamp, i64)>,
        failed_jobs: usize,
        now: jiff::Timestamp,
    ) {
        let labels = TenantLabels { namespace: namespace.into(), tenant: tenant.into() };
        if let Some((at, size)) = last {
            self.backup.last_success.get_or_create(&labels).set(at.as_second());
            self.backup.age.get_or_create(&labels).set(now.as_second() - at.as_second());
            self.backup.size.get_or_create(&labels).set(size);
        }
        self.backup.failed_jobs.get_or_create(&labels).set(i64::try_from(failed_jobs).unwrap_or(i64::MAX));
    }

    /// Drops a tenant's backup gauges (deleted, or `spec.backup` removed).
    pub fn forget_backup(&self, namespace: &str, tenant: &str) {
        let labels = TenantLabels { namespace: namespace.into(), tenant: tenant.into() };
        self.backup.last_success.remove(&labels);
        self.backup.age.remove(&labels);
        self.backup.size.remove(&labels);
        self.backup.failed_jobs.remove(&labels);
    }

    /// Records one finished defragmentation: how long it took and what it freed.
    pub fn record_defragmentation(&self, took: Duration, freed: u64) {
        self.defragment_duration.observe(took.as_secs_f64());
        self.etcd_space.freed.inc_by(freed);
    }

    /// Records one finished reconciliation and how long it took.
    pub fn record_reconcile(&self, duration: Duration) {
        self.reconciles.inc();
        self.reconcile_duration.observe(duration.as_secs_f64());
    }

    /// Counts a reconciliation as waiting for its turn until the returned guard is
    /// dropped; [`WaitingPass::started`] records how long it waited.
    pub fn pass_waiting(&self) -> WaitingPass<'_> {
        self.reconciles_waiting.inc();
        WaitingPass { metrics: self, since: Instant::now() }
    }

    /// Records a failed reconciliation under the error's `metric_label`.
    pub fn record_error(&self, error: &Error) {
        self.reconcile_errors.get_or_create(&ErrorLabels { reason: error.metric_label() }).inc();
    }

    /// Records one write about to be sent to the API server.
    pub fn record_write(&self, kind: &str, verb: WriteVerb) {
        self.api_writes.get_or_create(&WriteLabels { kind: kind.to_string(), verb: verb.as_str() }).inc();
        self.writes.fetch_add(1, Ordering::Relaxed);
    }

    /// Records one request about to be sent to the meta cluster's API server.
    pub fn record_request(&self, method: &Method, uri: &Uri) {
        self.api_requests.get_or_create(&RequestLabels { verb: request_verb(method, uri) }).inc();
    }

    /// Total writes recorded so far, all kinds and verbs.
    pub fn total_writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    /// Hands the controller's TenantCluster cache to the `tenants` gauge. Later calls
    /// are ignored: there is one controller per process.
    pub fn watch_tenants(&self, store: Store<TenantCluster>) {
        let _ = self.tenant_store.set(store);
    }

    /// Sets the `tenants` gauge from a list of phases. Every phase gets a value, zero
    /// included, so a phase that empties out reads 0 rather than disappearing.
    pub fn set_tenant_phases(&self, phases: impl IntoIterator<Item = Option<Phase>>) {
        let mut counts: std::collections::BTreeMap<&'static str, i64> = [
            Some(Phase::Provisioning),
            Some(Phase::Ready),
            Some(Phase::Degraded),
            Some(Phase::Deleting),
            None,
        ]
        .into_iter()
        .map(|phase| (phase_label(phase), 0))
        .collect();
        for phase in phases {
            *counts.entry(phase_label(phase)).or_default() += 1;
        }
        for (phase, count) in counts {
            self.tenants.get_or_create(&PhaseLabels { phase }).set(count);
        }
    }

    /// Renders every metric in OpenMetrics text, refreshing the phase gauge first.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        if let Some(store) = self.tenant_store.get() {
            self.set_tenant_phases(
                store.state().iter().map(|tenant| tenant.status.as_ref().and_then(|status| status.phase)),
            );
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// A client for `config` whose every request is counted in `nestor_api_requests_total`.
pub fn counting_client(config: Config, metrics: std::sync::Arc<Metrics>) -> kube::Result<Client> {
    let count = tower::util::MapRequestLayer::new(move |request: Request<Body>| {
        metrics.record_request(request.method(), request.uri());
        request
    });
    Ok(ClientBuilder::try_from(config)?.with_layer(&count).build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_text_has_every_metric_with_the_nestor_prefix() {
        let metrics = Metrics::new();
        metrics.record_reconcile(Duration::from_millis(12));
        metrics.record_error(&Error::CaMissing { secret: "x".into() });
        metrics.record_write("Deployment", WriteVerb::Apply);
        metrics.set_tenant_phases([Some(Phase::Ready), Some(Phase::Ready), None]);
        let text = metrics.encode().expect("encodes");

        assert!(text.contains("nestor_reconciles_total 1\n"), "{text}");
        assert!(text.contains("nestor_reconcile_errors_total{reason=\"ca_missing\"} 1\n"), "{text}");
        assert!(text.contains("nestor_reconcile_duration_seconds_count 1\n"), "{text}");
        assert!(text.contains("nestor_api_writes_total{kind=\"Deployment\",verb=\"apply\"} 1\n"), "{text}");
        assert!(text.contains("nestor_tenants{phase=\"Ready\"} 2\n"), "{text}");
        assert!(text.contains("nestor_tenants{phase=\"Unknown\"} 1\n"), "{text}");
        assert!(text.contains("nestor_tenants{phase=\"Degraded\"} 0\n"), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn a_waiting_pass_counts_until_it_starts_or_is_dropped() {
        let metrics = Metrics::new();
        let first = metrics.pass_waiting();
        let second = metrics.pass_waiting();
        assert!(metrics.encode().expect("encodes").contains("nestor_reconciles_waiting 2\n"));
        first.started();
        drop(second);
        let text = metrics.encode().expect("encodes");
        assert!(text.contains("nestor_reconciles_waiting 0\n"), "{text}");
        assert!(text.contains("nestor_reconcile_wait_seconds_count 1\n"), "one started, one dropped: {text}");
    }

    #[test]
    fn tenant_phase_gauge_is_replaced_not_accumulated() {
        let metrics = Metrics::new();
        metrics.set_tenant_phases([Some(Phase::Provisioning)]);
        metrics.set_tenant_phases([Some(Phase::Ready)]);
        let text = metrics.encode().expect("encodes");
        assert!(text.contains("nestor_tenants{phase=\"Provisioning\"} 0\n"), "{text}");
        assert!(text.contains("nestor_tenants{phase=\"Ready\"} 1\n"), "{text}");
    }

    #[test]
    fn requests_are_counted_by_verb_with_watches_apart() {
        let metrics = Metrics::new();
        let uri = |text: &str| text.parse::<Uri>().expect("valid URI");
        metrics.record_request(&Method::GET, &uri("/api/v1/namespaces/a/secrets/x"));
        metrics.record_request(&Method::GET, &uri("/api/v1/namespaces/a/secrets?labelSelector=a%3Db"));
        metrics
            .record_request(&Method::GET, &uri("/api/v1/namespaces/a/secrets?watch=true&timeoutSeconds=290"));
        metrics.record_request(&Method::PATCH, &uri("/apis/apps/v1/namespaces/a/deployments/x"));
        let text = metrics.encode().expect("encodes");
        assert!(text.contains("nestor_api_requests_total{verb=\"get\"} 2\n"), "{text}");
        assert!(text.contains("nestor_api_requests_total{verb=\"watch\"} 1\n"), "{text}");
        assert!(text.contains("nestor_api_requests_total{verb=\"patch\"} 1\n"), "{text}");
    }

    #[test]
    fn etcd_space_gauges_follow_the_members_that_answer_and_go_with_the_tenant() {
        let metrics = Metrics::new();
        let sample = |member: &str| MemberSpaceSample {
            member: member.into(),
            db_size: 4096,
            in_use: 1024,
            quota: 16_777_216,
        };
        metrics.record_etcd_space("ns", "team-a", &[sample("team-a-etcd-0"), sample("team-a-etcd-1")], true);
        metrics.record_etcd_space_step("defragment", true);
        metrics.record_defragmentation(Duration::from_millis(300), 3072);
        let text = metrics.encode().expect("encodes");
        let member = "namespace=\"ns\",tenant=\"team-a\",member=\"team-a-etcd-1\"";
        assert!(text.contains(&format!("nestor_etcd_db_size_bytes{{{member}}} 4096\n")), "{text}");
        assert!(text.contains(&format!("nestor_etcd_db_size_in_use_bytes{{{member}}} 1024\n")), "{text}");
        assert!(text.contains(&format!("nestor_etcd_quota_bytes{{{member}}} 16777216\n")), "{text}");
        assert!(text.contains("nestor_etcd_alarm_nospace{namespace=\"ns\",tenant=\"team-a\"} 1\n"), "{text}");
        assert!(
            text.contains("nestor_etcd_space_steps_total{step=\"defragment\",result=\"ok\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("nestor_etcd_defragment_freed_bytes_total 3072\n"), "{text}");
        assert!(text.contains("nestor_etcd_defragment_duration_seconds_count 1\n"), "{text}");

        metrics.record_etcd_space("ns", "team-a", &[sample("team-a-etcd-0")], false);
        let text = metrics.encode().expect("encodes");
        assert!(!text.contains("team-a-etcd-1"), "a member that did not answer is dropped: {text}");
        metrics.forget_etcd_space("ns", "team-a");
        assert!(!metrics.encode().expect("encodes").contains("team-a"), "gone with the tenant");
    }

    #[test]
    fn writes_are_counted_per_kind_and_verb() {
        let metrics = Metrics::new();
        assert_eq!(metrics.total_writes(), 0);
        metrics.record_write("Secret", WriteVerb::Apply);
        metrics.record_write("Secret", WriteVerb::Apply);
        metrics.record_write("TenantCluster", WriteVerb::PatchStatus);
        assert_eq!(metrics.total_writes(), 3);
    }
}
