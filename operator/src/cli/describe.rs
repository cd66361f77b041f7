//! `nestor describe`: one TenantCluster in detail, for a human: spec summary, phase and
//! conditions, its workloads, every certificate of its PKI with the days it has left
//! (read from the tenant's Secrets with x509-parser), its kubeconfig Secret and recent
//! Events. Gathering talks to the API server; [`render_description`] is pure.

use std::fmt::Write as _;

use clap::Args;
use futures::future::join_all;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Event, Secret};
use kube::api::ListParams;

use crate::api::TenantCluster;
use crate::cli::cluster::{CliError, ClusterArgs, Session, api_error};
use crate::cli::format::{NONE, age, render_table};
use crate::cli::view::phase_text;
use crate::kubeconfig::ClientCredentials;
use crate::names::TenantNames;
use crate::reconcile::status::{kubeconfig_secrets, pki_secrets};
use crate::resources::{KUBECONFIG_KEY, TLS_CERT_KEY};

/// How many of the newest Events `describe` shows.
const MAX_EVENTS: usize = 20;

/// Arguments of `nestor describe`.
#[derive(Debug, Args)]
pub struct DescribeArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,

    /// Name of the TenantCluster.
    pub name: String,
}

/// A control-plane workload and how many of its replicas are ready.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ComponentRow {
    /// `etcd`, `kube-apiserver`, `kube-controller-manager`, `kube-scheduler`.
    pub component: &'static str,
    /// `StatefulSet/<name>` or `Deployment/<name>`.
    pub object: String,
    /// `ready/desired`, or `<missing>`.
    pub ready: String,
}

/// A certificate found in one of the tenant's Secrets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateRow {
    /// Secret holding it.
    pub secret: String,
    /// Subject common name.
    pub common_name: String,
    /// End of validity.
    pub not_after: Timestamp,
}

/// An Event about the TenantCluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventRow {
    /// When it last happened.
    pub time: Option<Timestamp>,
    /// Normal or Warning.
    pub type_: String,
    /// CamelCase reason.
    pub reason: String,
    /// Reporting component.
    pub from: String,
    /// Human-readable text.
    pub message: String,
}

/// Everything `describe` prints.
#[derive(Clone, Debug)]
pub struct Description {
    /// The object itself.
    pub tenant: TenantCluster,
    /// Its workloads.
    pub components: Vec<ComponentRow>,
    /// Certificates of its PKI and kubeconfigs, in Secret order.
    pub certificates: Vec<CertificateRow>,
    /// Secrets that should hold a certificate but do not exist (yet).
    pub missing_secrets: Vec<String>,
    /// Events, oldest first.
    pub events: Vec<EventRow>,
}

/// (common name, notAfter) of the first certificate in `pem`.
pub fn certificate_summary(pem: &str) -> Option<(String, Timestamp)> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).ok()?;
    let (_, certificate) = x509_parser::parse_x509_certificate(&block.contents).ok()?;
    let common_name = certificate
        .subject()
        .iter_common_name()
        .next()
        .and_then(|name| name.as_str().ok())
        .unwrap_or_default()
        .to_string();
    let not_after = Timestamp::from_second(certificate.validity().not_after.timestamp()).ok()?;
    Some((common_name, not_after))
}

/// The certificate a tenant Secret holds: `tls.crt`, or the client certificate of a kubeconfig.
fn secret_certificate(secret: &Secret) -> Option<(String, Timestamp)> {
    let data = secret.data.as_ref()?;
    if let Some(pem) = data.get(TLS_CERT_KEY) {
        return certificate_summary(std::str::from_utf8(&pem.0).ok()?);
    }
    let kubeconfig = std::str::from_utf8(&data.get(KUBECONFIG_KEY)?.0).ok()?;
    certificate_summary(&ClientCredentials::from_kubeconfig(kubeconfig).ok()?.client_cert_pem)
}

/// Whole days from `now` to `then`, negative once expired.
pub fn days_left(then: Timestamp, now: Timestamp) -> i64 {
    then.duration_since(now).as_secs().div_euclid(86_400)
}

fn rfc3339(timestamp: Timestamp) -> String {
    timestamp.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Renders `description` as seen at `now`.
pub fn render_description(description: &Description, now: Timestamp) -> String {
    let tenant = &description.tenant;
    let spec = &tenant.spec;
    let status = tenant.status.clone().unwrap_or_default();
    let or_none = |value: Option<&str>| value.filter(|v| !v.is_empty()).unwrap_or(NONE).to_string();
    let mut out = String::new();
    let mut field = |label: &str, value: String| {
        let _ = writeln!(out, "{:<22}{value}", format!("{label}:"));
    };
    field("Name", tenant.metadata.name.clone().unwrap_or_default());
    field("Namespace", tenant.metadata.namespace.clone().unwrap_or_default());
    if let Some(created) = &tenant.metadata.creation_timestamp {
        field("Created", format!("{} ({} ago)", rfc3339(created.0), age(created.0, now)));
    }
    if let Some(deleting) = &tenant.metadata.deletion_timestamp {
        field("Deleting since", format!("{} ({} ago)", rfc3339(deleting.0), age(deleting.0, now)));
    }
    field("Version", format!("{} (running {})", spec.version, or_none(status.version.as_deref())));
    field("Phase", or_none(Some(&phase_text(status.phase))));
    field("Endpoint", or_none(status.endpoint.as_deref()));
    field(
        "Kubeconfig",
        status
            .kubeconfig_secret_name
            .as_ref()
            .map(|secret| format!("Secret {secret} (key {KUBECONFIG_KEY})"))
            .unwrap_or_else(|| NONE.into()),
    );
    let earliest = description.certificates.iter().map(|row| row.not_after).min();
    let expiry = status.certificates_expire_at.as_ref().map(|time| time.0).or(earliest);
    field(
        "Certificates expire",
        expiry
            .map(|at| format!("{} (in {} days)", rfc3339(at), days_left(at, now)))
            .unwrap_or_else(|| NONE.into()),
    );
    if spec.paused {
        field("Paused", "true (the operator changes nothing)".into());
    }

    out.push_str("Spec:\n");
    let storage = if spec.etcd.storage.ephemeral {
        "ephemeral (emptyDir)".to_string()
    } else {
        format!(
            "volume claims of {}{}",
            spec.etcd.storage.size.as_ref().map_or("1Gi", |size| size.0.as_str()),
            spec.etcd
                .storage
                .storage_class_name
                .as_ref()
                .map(|class| format!(", class {class}"))
                .unwrap_or_default()
        )
    };
    let spec_rows = [
        ("etcd", format!("{} member(s), {storage}", spec.etcd.replicas)),
        ("kube-apiserver", format!("{} replica(s)", spec.api_server.replicas)),
        ("controller-manager", format!("{} replica(s)", spec.controller_manager.replicas)),
        ("scheduler", format!("{} replica(s)", spec.scheduler.replicas)),
        ("Image repository", or_none(spec.image_repository.as_deref())),
        (
            "Service",
            format!(
                "{:?}{}",
                spec.network.service_type,
                spec.network
                    .external_host
                    .as_ref()
                    .map(|host| format!(", external host {host}"))
                    .unwrap_or_default()
            ),
        ),
        (
            "Network",
            format!(
                "services {}, pods {}, domain {}",
                spec.network.service_cidr, spec.network.pod_cidr, spec.network.cluster_domain
            ),
        ),
        (
            "PKI",
            format!(
                "{} keys, leaves valid {}, renewed {} before expiry",
                spec.pki.key_algorithm, spec.pki.certificate_validity, spec.pki.renew_before
            ),
        ),
    ];
    for (label, value) in spec_rows {
        let _ = writeln!(out, "  {:<20}{value}", format!("{label}:"));
    }

    out.push_str("Conditions:\n");
    if status.conditions.is_empty() {
        out.push_str("  <none>\n");
    } else {
        let rows: Vec<Vec<String>> = status
            .conditions
            .iter()
            .map(|condition| {
                vec![
                    condition.type_.clone(),
                    condition.status.clone(),
                    condition.reason.clone(),
                    age(condition.last_transition_time.0, now),
                    condition.message.split_whitespace().collect::<Vec<_>>().join(" "),
                ]
            })
            .collect();
        out.push_str(&indent(&render_table(&["TYPE", "STATUS", "REASON", "AGE", "MESSAGE"], &rows)));
    }

    out.push_str("Components:\n");
    let rows: Vec<Vec<String>> = description
        .components
        .iter()
        .map(|row| vec![row.component.to_string(), row.object.clone(), row.ready.clone()])
        .collect();
    out.push_str(&indent(&render_table(&["COMPONENT", "OBJECT", "READY"], &rows)));

    out.push_str("Certificates:\n");
    if description.certificates.is_empty() {
        out.push_str("  <none>\n");
    } else {
        let rows: Vec<Vec<String>> = description
            .certificates
            .iter()
            .map(|row| {
                vec![
                    row.secret.clone(),
                    row.common_name.clone(),
                    rfc3339(row.not_after),
                    days_left(row.not_after, now).to_string(),
                ]
            })
            .collect();
        out.push_str(&indent(&render_table(&["SECRET", "COMMON NAME", "NOT AFTER", "DAYS LEFT"], &rows)));
    }
    if !description.missing_secrets.is_empty() {
        let _ = writeln!(out, "  missing: {}", description.missing_secrets.join(", "));
    }

    out.push_str("Events:\n");
    if description.events.is_empty() {
        out.push_str("  <none>\n");
    } else {
        let rows: Vec<Vec<String>> = description
            .events
            .iter()
            .map(|event| {
                vec![
                    event.time.map(|time| age(time, now)).unwrap_or_else(|| NONE.into()),
                    event.type_.clone(),
                    event.reason.clone(),
                    event.from.clone(),
                    event.message.split_whitespace().collect::<Vec<_>>().join(" "),
                ]
            })
            .collect();
        out.push_str(&indent(&render_table(&["AGE", "TYPE", "REASON", "FROM", "MESSAGE"], &rows)));
    }
    out
}

fn indent(text: &str) -> String {
    text.lines().map(|line| format!("  {line}\n")).collect()
}

/// When an Event last happened: series, then lastTimestamp, eventTime, firstTimestamp,
/// creation (events.k8s.io and core/v1 Events fill different fields).
fn event_time(event: &Event) -> Option<Timestamp> {
    event
        .series
        .as_ref()
        .and_then(|series| series.last_observed_time.as_ref().map(|time| time.0))
        .or(event.last_timestamp.as_ref().map(|time| time.0))
        .or(event.event_time.as_ref().map(|time| time.0))
        .or(event.first_timestamp.as_ref().map(|time| time.0))
        .or(event.metadata.creation_timestamp.as_ref().map(|time| time.0))
}

fn event_row(event: &Event) -> EventRow {
    let from = event
        .reporting_component
        .clone()
        .filter(|component| !component.is_empty())
        .or_else(|| event.source.as_ref().and_then(|source| source.component.clone()))
        .unwrap_or_default();
    EventRow {
        time: event_time(event),
        type_: event.type_.clone().unwrap_or_default(),
        reason: event.reason.clone().unwrap_or_default(),
        from,
        message: event.message.clone().unwrap_or_default(),
    }
}

async fn gather(session: &Session, tenant: TenantCluster) -> Result<Description, CliError> {
    let name = tenant.metadata.name.clone().unwrap_or_default();
    let names = TenantNames::new(&name, &session.namespace);
    let error = |error| api_error(&session.server, &session.namespace, "", error);

    let statefulset = session.namespaced::<StatefulSet>().get_opt(&names.etcd()).await.map_err(error)?;
    let mut components = vec![ComponentRow {
        component: "etcd",
        object: format!("StatefulSet/{}", names.etcd()),
        ready: statefulset.map_or_else(
            || "<missing>".to_string(),
            |set| {
                let status = set.status.unwrap_or_default();
                format!(
                    "{}/{}",
                    status.ready_replicas.unwrap_or(0),
                    set.spec.and_then(|spec| spec.replicas).unwrap_or(1)
                )
            },
        ),
    }];
    for (component, deployment_name) in [
        ("kube-apiserver", names.apiserver()),
        ("kube-controller-manager", names.controller_manager()),
        ("kube-scheduler", names.scheduler()),
    ] {
        let deployment = session.namespaced::<Deployment>().get_opt(&deployment_name).await.map_err(error)?;
        components.push(ComponentRow {
            component,
            object: format!("Deployment/{deployment_name}"),
            ready: deployment.map_or_else(
                || "<missing>".to_string(),
                |deployment| {
                    let available =
                        deployment.status.and_then(|status| status.available_replicas).unwrap_or(0);
                    let desired = deployment.spec.and_then(|spec| spec.replicas).unwrap_or(1);
                    format!("{available}/{desired}")
                },
            ),
        });
    }

    // The service-account Secret holds a key pair, not a certificate.
    let certificate_secrets: Vec<String> = pki_secrets(&names)
        .into_iter()
        .chain(kubeconfig_secrets(&names))
        .filter(|secret| *secret != names.service_account_key_secret())
        .collect();
    let secrets_api = session.namespaced::<Secret>();
    let fetched = join_all(certificate_secrets.iter().map(|secret| secrets_api.get_opt(secret))).await;
    let mut certificates = Vec::new();
    let mut missing_secrets = Vec::new();
    for (secret_name, result) in certificate_secrets.iter().zip(fetched) {
        match result.map_err(error)? {
            Some(secret) => {
                if let Some((common_name, not_after)) = secret_certificate(&secret) {
                    certificates.push(CertificateRow { secret: secret_name.clone(), common_name, not_after });
                }
            }
            None => missing_secrets.push(secret_name.clone()),
        }
    }

    let mut events = match tenant.metadata.uid.as_deref() {
        Some(uid) => {
            let params = ListParams::default().fields(&format!("involvedObject.uid={uid}"));
            session
                .namespaced::<Event>()
                .list(&params)
                .await
                .map_err(error)?
                .items
                .iter()
                .map(event_row)
                .collect()
        }
        None => Vec::new(),
    };
    events.sort_by_key(|event: &EventRow| event.time);
    let skip = events.len().saturating_sub(MAX_EVENTS);
    let events = events.split_off(skip);

    Ok(Description { tenant, components, certificates, missing_secrets, events })
}

/// Runs `nestor describe`.
pub async fn run(args: DescribeArgs) -> anyhow::Result<()> {
    let session = args.cluster.connect().await?;
    let tenant = session.get_tenant(&args.name).await?;
    let description = gather(&session, tenant).await?;
    print!("{}", render_description(&description, Timestamp::now()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    use super::*;
    use crate::api::{Phase, TenantClusterSpec, TenantClusterStatus};
    use crate::pki::{CA_VALIDITY, CertificateAuthority, KeyAlgorithm};

    fn now() -> Timestamp {
        "2025-06-01T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn certificate_summary_reads_common_name_and_not_after() {
        let ca = CertificateAuthority::generate("kubernetes", KeyAlgorithm::EcdsaP256, CA_VALIDITY, now())
            .unwrap();
        let (common_name, not_after) = certificate_summary(ca.cert_pem()).unwrap();
        assert_eq!(common_name, "kubernetes");
        assert_eq!(not_after, ca.not_after());
        assert_eq!(days_left(not_after, now()), 3650);
        assert!(certificate_summary("garbage").is_none());
    }

    #[test]
    fn days_left_rounds_down_and_goes_negative() {
        let in_36_hours = now() + jiff::SignedDuration::from_hours(36);
        assert_eq!(days_left(in_36_hours, now()), 1);
        let an_hour_ago = now() - jiff::SignedDuration::from_hours(1);
        assert_eq!(days_left(an_hour_ago, now()), -1);
    }

    #[test]
    fn description_shows_conditions_certificates_and_events() {
        let spec: TenantClusterSpec = serde_json::from_value(serde_json::json!({
            "version": "1.34.2", "etcd": {"replicas": 1, "storage": {"ephemeral": true}}
        }))
        .unwrap();
        let mut tenant = TenantCluster::new("team-a", spec);
        tenant.metadata.namespace = Some("tenants".into());
        let expiry = now() + jiff::SignedDuration::from_hours(24 * 364);
        tenant.status = Some(TenantClusterStatus {
            phase: Some(Phase::Ready),
            conditions: vec![Condition {
                type_: "EtcdReady".into(),
                status: "True".into(),
                reason: "Ready".into(),
                message: "1/1 members\nready".into(),
                observed_generation: Some(1),
                last_transition_time: Time(now() - jiff::SignedDuration::from_secs(90)),
            }],
            version: Some("1.34.2".into()),
            endpoint: Some("https://team-a-apiserver.tenants.svc:6443".into()),
            kubeconfig_secret_name: Some("team-a-kubeconfig".into()),
            certificates_expire_at: Some(Time(expiry)),
            ..TenantClusterStatus::default()
        });
        let description = Description {
            tenant,
            components: vec![
                ComponentRow {
                    component: "etcd",
                    object: "StatefulSet/team-a-etcd".into(),
                    ready: "1/1".into(),
                },
                ComponentRow {
                    component: "kube-scheduler",
                    object: "Deployment/team-a-scheduler".into(),
                    ready: "0/1".into(),
                },
            ],
            certificates: vec![CertificateRow {
                secret: "team-a-apiserver-serving".into(),
                common_name: "kube-apiserver".into(),
                not_after: expiry,
            }],
            missing_secrets: vec!["team-a-etcd-peer".into()],
            events: vec![EventRow {
                time: Some(now() - jiff::SignedDuration::from_secs(30)),
                type_: "Normal".into(),
                reason: "Ready".into(),
                from: "nestor-operator".into(),
                message: "control plane ready".into(),
            }],
        };
        let text = render_description(&description, now());
        for expected in [
            "Name:                 team-a\n",
            "Version:              1.34.2 (running 1.34.2)\n",
            "Phase:                Ready\n",
            "Kubeconfig:           Secret team-a-kubeconfig (key value)\n",
            "Certificates expire:  2026-05-31T12:00:00Z (in 364 days)\n",
            "  etcd:               1 member(s), ephemeral (emptyDir)\n",
            "  controller-manager: 1 replica(s)\n",
            "  scheduler:          1 replica(s)\n",
            "  kube-scheduler   Deployment/team-a-scheduler   0/1\n",
            "  PKI:                ECDSA-P256 keys, leaves valid 8760h, renewed 720h before expiry\n",
            "  EtcdReady   True     Ready    90s   1/1 members ready\n",
            "  team-a-apiserver-serving   kube-apiserver   2026-05-31T12:00:00Z   364\n",
            "  missing: team-a-etcd-peer\n",
            "  30s   Normal   Ready    nestor-operator   control plane ready\n",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
        }
        assert!(!text.contains("EcdsaP256"), "the key algorithm in the spec's spelling, not Rust's:\n{text}");
    }
}
