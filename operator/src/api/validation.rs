//! Admission rules for TenantCluster, in two forms.
//!
//! - CEL rules (`x-kubernetes-validations`) that the types in [`super`] attach to their
//!   schema, so the apiserver rejects a bad spec with a message naming the field. Each rule
//!   is built here by a function, so the numbers in it (supported versions, limits) come
//!   from the same constants the operator uses.
//! - [`validate`], a pure Rust check the reconciler runs before it builds anything. It
//!   repeats what a spec written before the current CRD was installed could lack, and checks
//!   what the rules above leave to the operator (for example that durations parse).
//!
//! Format choices: `spec.version` is `MAJOR.MINOR.PATCH` without a leading "v" ("1.34.2");
//! the image tag adds the "v". Durations are Go-style with hours, minutes and seconds only
//! ("8760h", "1h30m"), because days and months have no fixed length.

use std::fmt;
use std::ops::RangeInclusive;
use std::str::FromStr;
use std::time::Duration;

use kube::core::{Message, Rule};

use super::TenantClusterSpec;
use crate::etcd::maintenance::{MAX_QUOTA_BYTES, MIN_QUOTA_BYTES};
use crate::names::MAX_TENANT_NAME_LENGTH;

/// Kubernetes minor versions (of major version 1) that Nestor can run as a tenant control
/// plane. Contiguous, so that an upgrade one minor at a time always stays inside it. 1.30 is
/// the newest minor that the pinned Kamaji release accepts: the peer benchmark runs both on it
/// (bench/peer.sh, docs/benchmarks.md).
pub const SUPPORTED_MINOR_VERSIONS: RangeInclusive<u64> = 30..=35;

/// The only Kubernetes major version there is.
pub const SUPPORTED_MAJOR_VERSION: u64 = 1;

/// etcd member counts that keep a quorum through the loss of a member (or none, for one).
pub const ETCD_REPLICA_COUNTS: [i32; 3] = [1, 3, 5];

// Regular expressions shared by the CEL rules. Written with `[.]` and `[*]` rather than
// backslashes so they read the same in Rust, CEL string literals and the CRD YAML.

/// `spec.version`: MAJOR.MINOR.PATCH, no leading zeros, no leading "v". The digit limits keep
/// `int()` in the transition rules far from overflow.
const VERSION_PATTERN: &str = "^1[.](0|[1-9][0-9]{0,2})[.](0|[1-9][0-9]{0,3})$";
/// A DNS-1123 label (length checked separately).
const DNS_LABEL_PATTERN: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
/// A DNS-1123 subdomain (length checked by `maxLength`).
const DNS_SUBDOMAIN_PATTERN: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// A DNS name for a certificate SAN: a subdomain, optionally behind one leading wildcard label.
const SAN_DNS_PATTERN: &str = "^([*][.])?[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// Registry host (with optional port) and repository path, no tag or digest: Nestor appends
/// `/<component>:v<version>`. Host labels may be mixed case, path components may not
/// (the distribution reference grammar).
const IMAGE_REPOSITORY_PATTERN: &str = concat!(
    "^[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?([.][a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?)*", // host
    "(:[0-9]{1,5})?",                                                                      // port
    "(/[a-z0-9]+(([.]|_|__|-+)[a-z0-9]+)*)*$",                                             // path
);
/// Go duration with hours, minutes and seconds, in that order; at most six digits each so
/// CEL's `duration()` never overflows.
const DURATION_PATTERN: &str = "^([0-9]{1,6}h)?([0-9]{1,6}m)?([0-9]{1,6}s)?$";

/// Values of each cron field, as a CronJob's parser takes them (numbers in range, month and
/// weekday names); see [`cron_pattern`].
const CRON_FIELDS: [&str; 5] = [
    "[0-5]?[0-9]",
    "[01]?[0-9]|2[0-3]",
    "0?[1-9]|[12][0-9]|3[01]",
    "0?[1-9]|1[0-2]|(?i:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)",
    "[0-7]|(?i:sun|mon|tue|wed|thu|fri|sat)",
];

/// `spec.backup.schedule` at admission: five fields of `*`, values, ranges, steps and
/// lists, or a macro such as `@daily`. The operator also parses it ([`validate`]).
pub fn cron_pattern() -> String {
    let fields: Vec<String> = CRON_FIELDS
        .iter()
        .map(|value| {
            let item = format!("([*]|({value})(-({value}))?)(/[1-9][0-9]{{0,2}})?");
            format!("{item}(,{item})*")
        })
        .collect();
    format!("^(@(?i:yearly|annually|monthly|weekly|daily|hourly)|{})$", fields.join(" +"))
}

/// Largest number of entries in `certSANs`.
pub const MAX_CERT_SANS: usize = 32;
/// Largest number of `extraArgs` entries per component.
pub const MAX_EXTRA_ARGS: usize = 64;
/// Longest `extraArgs` value.
pub const MAX_EXTRA_ARG_VALUE_LENGTH: usize = 4096;

/// Shortest and longest IPv4 Service CIDR prefix: /12 is kubeadm's default size, /24 still
/// leaves room for the apiserver's and DNS Service addresses.
pub const IPV4_SERVICE_PREFIX_LENGTHS: RangeInclusive<u64> = 12..=24;
/// Shortest and longest IPv6 Service CIDR prefix: kube-apiserver refuses ranges wider than
/// 20 host bits (/108).
pub const IPV6_SERVICE_PREFIX_LENGTHS: RangeInclusive<u64> = 108..=120;

/// CEL expression for the minor version of a `MAJOR.MINOR.PATCH` string held in `var`.
fn cel_minor(var: &str) -> String {
    format!("int({var}.split('.')[1])")
}

/// CEL expression for the patch version of a `MAJOR.MINOR.PATCH` string held in `var`.
fn cel_patch(var: &str) -> String {
    format!("int({var}.split('.')[2])")
}

/// The CEL rules Nestor attaches to the TenantCluster schema. Each function returns the rule
/// for one place in the schema; its message names the field and says why.
pub mod rules {
    use super::*;

    /// A rule with its failure message.
    fn rule(expression: impl Into<String>, message: impl Into<String>) -> Rule {
        Rule::new(expression).message(Message::Message(message.into()))
    }

    /// Root: the name prefixes every derived object name, which must stay a DNS label.
    pub fn name_length() -> Rule {
        rule(
            format!("self.metadata.name.size() <= {MAX_TENANT_NAME_LENGTH}"),
            format!(
                "metadata.name must be at most {MAX_TENANT_NAME_LENGTH} characters: derived object \
                 names such as <name>-controller-manager and the etcd pods' revision labels must \
                 stay DNS labels"
            ),
        )
    }

    /// Root: derived names such as `<name>-etcd` are Service names, hence DNS labels.
    pub fn name_is_dns_label() -> Rule {
        rule(
            format!("self.metadata.name.matches('{DNS_LABEL_PATTERN}')"),
            "metadata.name must be a DNS-1123 label (lowercase letters, digits and '-', no dots): \
             it names the tenant's Services",
        )
    }

    /// `spec.version` format.
    pub fn version_format() -> Rule {
        rule(
            format!("self.matches('{VERSION_PATTERN}')"),
            "spec.version must be a Kubernetes version MAJOR.MINOR.PATCH without a leading 'v', \
             such as 1.34.2",
        )
    }

    /// `spec.version` within [`SUPPORTED_MINOR_VERSIONS`]. Skipped for malformed values, which
    /// [`version_format`] already reports.
    pub fn version_supported() -> Rule {
        let (first, last) = (SUPPORTED_MINOR_VERSIONS.start(), SUPPORTED_MINOR_VERSIONS.end());
        let minor = cel_minor("self");
        rule(
            format!("!self.matches('{VERSION_PATTERN}') || ({minor} >= {first} && {minor} <= {last})"),
            format!("spec.version must be a supported Kubernetes version: 1.{first} through 1.{last}"),
        )
    }

    /// `spec.version` transition: never lower than before.
    pub fn version_no_downgrade() -> Rule {
        let (minor, old_minor) = (cel_minor("self"), cel_minor("oldSelf"));
        let (patch, old_patch) = (cel_patch("self"), cel_patch("oldSelf"));
        rule(
            format!(
                "!self.matches('{VERSION_PATTERN}') || !oldSelf.matches('{VERSION_PATTERN}') || \
                 {minor} > {old_minor} || ({minor} == {old_minor} && {patch} >= {old_patch})"
            ),
            "spec.version cannot be lowered: etcd data written by a newer kube-apiserver \
             may not be readable by an older one",
        )
    }

    /// `spec.version` transition: at most one minor version up.
    pub fn version_no_skipped_minor() -> Rule {
        let (minor, old_minor) = (cel_minor("self"), cel_minor("oldSelf"));
        rule(
            format!(
                "!self.matches('{VERSION_PATTERN}') || !oldSelf.matches('{VERSION_PATTERN}') || \
                 {minor} <= {old_minor} + 1"
            ),
            "spec.version must move up one minor version at a time (such as 1.33.x to 1.34.y): \
             Kubernetes does not support skipping a minor version",
        )
    }

    /// `spec.etcd.replicas`: an odd quorum size.
    pub fn etcd_replicas() -> Rule {
        let counts = ETCD_REPLICA_COUNTS.map(|count| count.to_string()).join(", ");
        rule(
            format!("self in [{counts}]"),
            "spec.etcd.replicas must be 1, 3 or 5: an odd member count keeps a quorum",
        )
    }

    /// `spec.etcd.quotaBackendBytes`: within etcd's sane range.
    pub fn quota_backend_bytes() -> Rule {
        rule(
            format!("self >= {MIN_QUOTA_BYTES} && self <= {MAX_QUOTA_BYTES}"),
            format!(
                "spec.etcd.quotaBackendBytes must be between {MIN_QUOTA_BYTES} (16 MiB) and \
                 {MAX_QUOTA_BYTES} (8 GiB) bytes"
            ),
        )
    }

    /// A field that may never change, such as `spec.network.serviceCIDR`. Only for fields that
    /// always hold a value (required or defaulted): a rule on a field sees no additions or
    /// removals.
    pub fn immutable(field: &str, why: &str) -> Rule {
        rule("self == oldSelf", format!("{field} is immutable: {why}"))
    }

    /// `spec.etcd.storage.storageClassName` may be neither changed, set nor removed. It is
    /// optional, so the rule sits on the parent object, which sees additions and removals.
    pub fn storage_class_immutable() -> Rule {
        rule(
            "has(self.storageClassName) == has(oldSelf.storageClassName) && \
             (!has(self.storageClassName) || self.storageClassName == oldSelf.storageClassName)",
            "spec.etcd.storage.storageClassName is immutable: a StatefulSet's volume claims \
             cannot move to another StorageClass",
        )
        .field_path(".storageClassName")
    }

    /// `spec.etcd.storage.size`: a positive quantity. The field is int-or-string.
    pub fn storage_size() -> Rule {
        rule(
            "type(self) == int ? self > 0 : \
             (isQuantity(self) && quantity(self).isGreaterThan(quantity('0')))",
            "spec.etcd.storage.size must be a positive quantity such as 1Gi",
        )
    }

    /// A StorageClass name is a DNS subdomain.
    pub fn storage_class_name() -> Rule {
        rule(
            format!("self.matches('{DNS_SUBDOMAIN_PATTERN}')"),
            "spec.etcd.storage.storageClassName must be a DNS-1123 subdomain, the name of a StorageClass",
        )
    }

    /// `spec.network.serviceCIDR` and `spec.network.podCIDR`: a CIDR in canonical form.
    pub fn cidr(field: &str) -> Rule {
        rule(
            "isCIDR(self) && cidr(self) == cidr(self).masked()",
            format!(
                "{field} must be a CIDR with its host bits zero, such as 10.96.0.0/12 or fd00:10:96::/108"
            ),
        )
    }

    /// `spec.network.serviceCIDR` size.
    pub fn service_cidr_size() -> Rule {
        let (v4_min, v4_max) = (IPV4_SERVICE_PREFIX_LENGTHS.start(), IPV4_SERVICE_PREFIX_LENGTHS.end());
        let (v6_min, v6_max) = (IPV6_SERVICE_PREFIX_LENGTHS.start(), IPV6_SERVICE_PREFIX_LENGTHS.end());
        rule(
            format!(
                "!isCIDR(self) || (cidr(self).ip().family() == 4 ? \
                 (cidr(self).prefixLength() >= {v4_min} && cidr(self).prefixLength() <= {v4_max}) : \
                 (cidr(self).prefixLength() >= {v6_min} && cidr(self).prefixLength() <= {v6_max}))"
            ),
            format!(
                "spec.network.serviceCIDR must have a prefix length from /{v4_min} to /{v4_max} (IPv4) \
                 or /{v6_min} to /{v6_max} (IPv6): wide enough for the tenant's Services, \
                 narrow enough for kube-apiserver"
            ),
        )
    }

    /// `spec.network`: Pod and Service addresses must not collide. Two CIDRs overlap exactly
    /// when one contains the other.
    pub fn pod_and_service_cidrs_disjoint() -> Rule {
        rule(
            "!isCIDR(self.serviceCIDR) || !isCIDR(self.podCIDR) || \
             cidr(self.serviceCIDR).ip().family() != cidr(self.podCIDR).ip().family() || \
             (!cidr(self.serviceCIDR).containsCIDR(cidr(self.podCIDR)) && \
             !cidr(self.podCIDR).containsCIDR(cidr(self.serviceCIDR)))",
            "spec.network.podCIDR must not overlap spec.network.serviceCIDR",
        )
        .field_path(".podCIDR")
    }

    /// `spec.network`: a fixed node port only makes sense on a NodePort Service.
    pub fn node_port_needs_node_port_service() -> Rule {
        rule(
            "!has(self.nodePort) || self.serviceType == 'NodePort'",
            "spec.network.nodePort may only be set when spec.network.serviceType is NodePort",
        )
        .field_path(".nodePort")
    }

    /// `spec.network.tunnel.nodePort` is a node port, so it needs a NodePort Service.
    pub fn tunnel_node_port_needs_node_port_service() -> Rule {
        rule(
            "!has(self.tunnel) || !has(self.tunnel.nodePort) || self.serviceType == 'NodePort'",
            "spec.network.tunnel.nodePort may only be set when spec.network.serviceType is NodePort",
        )
        .field_path(".tunnel.nodePort")
    }

    /// The agents' node port and the apiserver's are two ports of one Service.
    pub fn tunnel_node_port_differs() -> Rule {
        rule(
            "!has(self.tunnel) || !has(self.tunnel.nodePort) || !has(self.nodePort) || self.tunnel.nodePort != self.nodePort",
            "spec.network.tunnel.nodePort must differ from spec.network.nodePort: both are ports of the apiserver Service",
        )
        .field_path(".tunnel.nodePort")
    }

    /// `spec.network.clusterDomain`.
    pub fn cluster_domain() -> Rule {
        rule(
            format!("self.matches('{DNS_SUBDOMAIN_PATTERN}')"),
            "spec.network.clusterDomain must be a DNS-1123 subdomain such as cluster.local: \
             it is the suffix of every in-cluster DNS name",
        )
    }

    /// A host that goes into a certificate: a DNS name or an IP address.
    pub fn dns_name_or_ip(field: &str) -> Rule {
        rule(
            format!("isIP(self) || self.matches('{SAN_DNS_PATTERN}')"),
            format!("{field} must be a lowercase DNS name (optionally starting with '*.') or an IP address"),
        )
    }

    /// `spec.apiServer.certSANs`: every entry a DNS name or an IP address.
    pub fn cert_sans() -> Rule {
        rule(
            format!("self.all(san, isIP(san) || san.matches('{SAN_DNS_PATTERN}'))"),
            "spec.apiServer.certSANs entries must be lowercase DNS names (optionally starting \
             with '*.') or IP addresses",
        )
    }

    /// `spec.imageRepository`.
    pub fn image_repository() -> Rule {
        rule(
            format!("self.matches('{IMAGE_REPOSITORY_PATTERN}')"),
            "spec.imageRepository must be a registry host with optional port and path and no tag \
             or digest, such as registry.k8s.io or localhost:5000/k8s",
        )
    }

    /// A Go-style duration field of `spec.pki`.
    pub fn duration(field: &str) -> Rule {
        rule(
            format!("self != '' && self.matches('{DURATION_PATTERN}')"),
            format!("{field} must be a duration in hours, minutes and seconds such as 8760h or 1h30m"),
        )
    }

    /// `spec.backup.schedule`: a cron expression a CronJob takes (see [`cron_pattern`]).
    pub fn backup_schedule() -> Rule {
        rule(
            format!("self.trim().matches('{}')", super::cron_pattern()),
            "spec.backup.schedule must be a 5-field cron expression (minute hour day-of-month \
             month day-of-week, such as \"0 3 * * *\") or a macro such as @daily",
        )
    }

    /// `spec.backup.destination`: one store, no more, no less.
    pub fn exactly_one_destination() -> Rule {
        rule(
            "has(self.volume) != has(self.s3)",
            "spec.backup.destination must set exactly one of volume and s3",
        )
    }

    /// `spec.backup.destination.s3`: a bucket is only reachable with credentials.
    pub fn s3_credentials_required() -> Rule {
        rule(
            "has(self.credentialsSecret) && self.credentialsSecret != ''",
            "spec.backup.destination.s3.credentialsSecret is required: the name of a Secret with \
             accessKeyID and secretAccessKey",
        )
        .field_path(".credentialsSecret")
    }

    /// An object name such as a claim or a StorageClass.
    pub fn dns_subdomain(field: &str) -> Rule {
        rule(
            format!("self.matches('{DNS_SUBDOMAIN_PATTERN}')"),
            format!("{field} must be a DNS-1123 subdomain"),
        )
    }

    /// An http or https URL without path.
    pub fn http_url(field: &str) -> Rule {
        rule(
            "self.matches('^https?://[^/ ]+/?$')",
            format!("{field} must be an http:// or https:// URL such as https://s3.example.com"),
        )
    }

    /// `spec.restore`: where a tenant's etcd started from is history, not a setting.
    pub fn restore_immutable() -> Rule {
        rule(
            "has(self.restore) == has(oldSelf.restore) && (!has(self.restore) || self.restore == oldSelf.restore)",
            "spec.restore is immutable: it is set when a tenant is created from a snapshot, and only then",
        )
    }

    /// `spec.pki`: renewal must start before the certificate expires. Skipped when either
    /// duration is malformed ([`duration`] reports that); the operator checks it again.
    pub fn renew_before_shorter_than_validity() -> Rule {
        rule(
            format!(
                "self.certificateValidity == '' || self.renewBefore == '' || \
                 !self.certificateValidity.matches('{DURATION_PATTERN}') || \
                 !self.renewBefore.matches('{DURATION_PATTERN}') || \
                 duration(self.renewBefore) < duration(self.certificateValidity)"
            ),
            "spec.pki.renewBefore must be shorter than spec.pki.certificateValidity: otherwise \
             every certificate is due for renewal as soon as it is issued",
        )
        .field_path(".renewBefore")
    }
}

/// A Kubernetes release version such as 1.34.2.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KubernetesVersion {
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
}

impl KubernetesVersion {
    /// Whether Nestor can run this version (see [`SUPPORTED_MINOR_VERSIONS`]).
    pub fn is_supported(&self) -> bool {
        self.major == SUPPORTED_MAJOR_VERSION && SUPPORTED_MINOR_VERSIONS.contains(&self.minor)
    }
}

impl fmt::Display for KubernetesVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// A `spec.version` string that is not `MAJOR.MINOR.PATCH`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a Kubernetes version MAJOR.MINOR.PATCH such as 1.34.2 (no leading 'v')")]
pub struct VersionFormatError(pub String);

impl FromStr for KubernetesVersion {
    type Err = VersionFormatError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let malformed = || VersionFormatError(text.to_owned());
        let number = |part: &str| -> Result<u64, VersionFormatError> {
            let canonical = !part.is_empty()
                && part.bytes().all(|b| b.is_ascii_digit())
                && (part == "0" || !part.starts_with('0'));
            if canonical { part.parse().map_err(|_| malformed()) } else { Err(malformed()) }
        };
        let mut parts = text.split('.');
        let (Some(major), Some(minor), Some(patch), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed());
        };
        Ok(Self { major: number(major)?, minor: number(minor)?, patch: number(patch)? })
    }
}

/// Why a `spec.pki` duration is refused: the CRD admits only whole hours, minutes and
/// seconds in that order (the form of [`DURATION_PATTERN`]), a subset of what
/// [`crate::duration::parse_duration`] reads.
pub const SPEC_DURATION_FORM: &str =
    "expected whole numbers (up to 6 digits) with units h, m and s in that order, such as 8760h or 1h30m";

/// Parses a `spec.pki` duration: [`DURATION_PATTERN`]'s form, read by the one Go-style
/// duration parser of the crate.
pub fn parse_spec_duration(text: &str) -> Result<Duration, &'static str> {
    if !is_spec_duration(text) {
        return Err(SPEC_DURATION_FORM);
    }
    crate::duration::parse_duration(text).map_err(|error| error.reason)
}

/// Whether `text` matches [`DURATION_PATTERN`] and is not empty.
fn is_spec_duration(text: &str) -> bool {
    let mut units = "hms";
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let Some(unit) = rest[digits..].chars().next() else { return false };
        let Some(position) = units.find(unit) else { return false };
        if !(1..=6).contains(&digits) {
            return false;
        }
        units = &units[position + 1..];
        rest = &rest[digits + 1..];
    }
    !text.is_empty()
}

/// A spec the operator refuses to act on. Each message is one line naming the field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("spec.version: {0}")]
    VersionFormat(#[from] VersionFormatError),
    #[error(
        "spec.version {version} is not supported: Nestor runs Kubernetes 1.{first} through 1.{last}",
        first = SUPPORTED_MINOR_VERSIONS.start(),
        last = SUPPORTED_MINOR_VERSIONS.end()
    )]
    VersionUnsupported { version: KubernetesVersion },
    #[error(
        "spec.version cannot go from {running} down to {desired}: etcd data written by a newer \
         kube-apiserver may not be readable by an older one"
    )]
    VersionDowngrade { running: KubernetesVersion, desired: KubernetesVersion },
    #[error("spec.version cannot go from {running} to {desired}: upgrade one minor version at a time")]
    VersionSkipsMinor { running: KubernetesVersion, desired: KubernetesVersion },
    #[error("{field} {value:?} is not a valid duration: {reason}")]
    Duration { field: &'static str, value: String, reason: &'static str },
    #[error("{field} must be longer than zero")]
    DurationZero { field: &'static str },
    #[error(
        "spec.pki.renewBefore ({renew_before}) must be shorter than spec.pki.certificateValidity \
         ({certificate_validity}): otherwise every certificate is due for renewal as soon as it is issued"
    )]
    RenewBeforeNotShorter { renew_before: String, certificate_validity: String },
    #[error("spec.etcd.replicas must be 1, 3 or 5, not {0}: an odd member count keeps a quorum")]
    EtcdReplicas(i32),
    #[error(
        "spec.etcd.quotaBackendBytes must be between {MIN_QUOTA_BYTES} (16 MiB) and {MAX_QUOTA_BYTES} (8 GiB) bytes, not {0}"
    )]
    QuotaBackendBytes(i64),
    #[error("{field} must be at least 1, not {value}")]
    ReplicasBelowOne { field: &'static str, value: i32 },
    /// An `extraArgs` key that is empty or only dashes: rendered as `--=value`, which
    /// the component refuses at start-up, so its pods would crash-loop instead.
    #[error("{field}: an empty flag name is not a flag (key {key:?})")]
    ExtraArgEmptyFlag { field: &'static str, key: String },
    #[error("spec.backup.schedule {schedule:?} is not a 5-field cron expression: {reason}")]
    BackupSchedule { schedule: String, reason: String },
    #[error("spec.backup.destination must set exactly one of volume and s3")]
    BackupDestination,
    #[error("spec.backup.destination.s3.credentialsSecret is required")]
    BackupCredentials,
}

/// Parses a backup schedule as the CronJob will run it: five fields (no seconds, no
/// year) or a macro. The one parser for admission's second check, the overdue
/// computation and the CLI.
pub fn parse_schedule(schedule: &str) -> Result<croner::Cron, String> {
    use croner::parser::{CronParser, Seconds, Year};
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build()
        .parse(schedule.trim())
        .map_err(|error| error.to_string())
}

/// Field path of the leaf certificate lifetime.
const CERTIFICATE_VALIDITY_FIELD: &str = "spec.pki.certificateValidity";
/// Field path of the renewal window.
const RENEW_BEFORE_FIELD: &str = "spec.pki.renewBefore";

/// Checks what the reconciler relies on before it builds anything. The apiserver's rules catch
/// most of this at admission; this catches objects admitted under an older CRD and the rules
/// admission cannot express. Returns every problem found, not just the first.
pub fn validate(spec: &TenantClusterSpec) -> Result<(), Vec<SpecError>> {
    let mut errors = Vec::new();

    match spec.version.parse::<KubernetesVersion>() {
        Ok(version) if !version.is_supported() => errors.push(SpecError::VersionUnsupported { version }),
        Ok(_) => {}
        Err(format) => errors.push(format.into()),
    }

    if !ETCD_REPLICA_COUNTS.contains(&spec.etcd.replicas) {
        errors.push(SpecError::EtcdReplicas(spec.etcd.replicas));
    }
    if let Some(quota) = spec.etcd.quota_backend_bytes
        && !u64::try_from(quota).is_ok_and(|quota| (MIN_QUOTA_BYTES..=MAX_QUOTA_BYTES).contains(&quota))
    {
        errors.push(SpecError::QuotaBackendBytes(quota));
    }
    for (field, value) in [
        ("spec.apiServer.replicas", spec.api_server.replicas),
        ("spec.controllerManager.replicas", spec.controller_manager.replicas),
        ("spec.scheduler.replicas", spec.scheduler.replicas),
    ] {
        if value < 1 {
            errors.push(SpecError::ReplicasBelowOne { field, value });
        }
    }

    for (field, extra_args) in [
        ("spec.apiServer.extraArgs", &spec.api_server.extra_args),
        ("spec.controllerManager.extraArgs", &spec.controller_manager.extra_args),
        ("spec.scheduler.extraArgs", &spec.scheduler.extra_args),
    ] {
        // The builders strip leading dashes (`--v` and `v` are the same flag), so a key
        // of dashes alone names no flag.
        for key in extra_args.keys().filter(|key| key.trim_start_matches('-').is_empty()) {
            errors.push(SpecError::ExtraArgEmptyFlag { field, key: key.clone() });
        }
    }

    if let Some(backup) = &spec.backup {
        if let Err(reason) = parse_schedule(&backup.schedule) {
            errors.push(SpecError::BackupSchedule { schedule: backup.schedule.clone(), reason });
        }
        validate_destination(&backup.destination, &mut errors);
    }
    if let Some(restore) = &spec.restore {
        validate_destination(&restore.from.destination, &mut errors);
    }

    let validity = positive_duration(CERTIFICATE_VALIDITY_FIELD, &spec.pki.certificate_validity, &mut errors);
    let renew_before = positive_duration(RENEW_BEFORE_FIELD, &spec.pki.renew_before, &mut errors);
    if let (Some(validity), Some(renew_before)) = (validity, renew_before)
        && renew_before >= validity
    {
        errors.push(SpecError::RenewBeforeNotShorter {
            renew_before: spec.pki.renew_before.clone(),
            certificate_validity: spec.pki.certificate_validity.clone(),
        });
    }

    if errors.is_empty() { Ok(()) } else { Err(errors) }
}

fn validate_destination(destination: &super::BackupDestination, errors: &mut Vec<SpecError>) {
    if destination.volume.is_some() == destination.s3.is_some() {
        errors.push(SpecError::BackupDestination);
    }
    if let Some(s3) = &destination.s3
        && s3.credentials_secret.as_deref().unwrap_or_default().is_empty()
    {
        errors.push(SpecError::BackupCredentials);
    }
}

/// Parses a duration field, recording a problem in `errors` and returning `None` if it is
/// malformed or zero.
fn positive_duration(field: &'static str, value: &str, errors: &mut Vec<SpecError>) -> Option<Duration> {
    match parse_spec_duration(value) {
        Ok(duration) if duration.is_zero() => {
            errors.push(SpecError::DurationZero { field });
            None
        }
        Ok(duration) => Some(duration),
        Err(reason) => {
            errors.push(SpecError::Duration { field, value: value.to_owned(), reason });
            None
        }
    }
}

/// Checks a version change of a running control plane: the reconciler compares the version it
/// runs (`status.version`) with `spec.version`, since admission only sees the previous spec.
pub fn validate_upgrade(running: KubernetesVersion, desired: KubernetesVersion) -> Result<(), SpecError> {
    if desired < running {
        Err(SpecError::VersionDowngrade { running, desired })
    } else if desired.major != running.major || desired.minor > running.minor + 1 {
        Err(SpecError::VersionSkipsMinor { running, desired })
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::PkiSpec;

    fn spec(version: &str) -> TenantClusterSpec {
        serde_json::from_value(serde_json::json!({ "version": version })).expect("minimal spec deserializes")
    }

    fn version(text: &str) -> KubernetesVersion {
        text.parse().expect("test version parses")
    }

    #[test]
    fn default_spec_is_valid() {
        assert_eq!(validate(&spec("1.34.2")), Ok(()));
    }

    #[test]
    fn every_supported_minor_is_valid() {
        for minor in SUPPORTED_MINOR_VERSIONS {
            assert_eq!(validate(&spec(&format!("1.{minor}.0"))), Ok(()), "1.{minor}.0");
        }
    }

    #[test]
    fn parses_versions() {
        assert_eq!(version("1.34.2"), KubernetesVersion { major: 1, minor: 34, patch: 2 });
        assert_eq!(version("1.34.0").to_string(), "1.34.0");
        for bad in ["v1.34.2", "1.34", "1.34.2.1", "1.34.x", "1.034.2", "", "1..2", "1.34.-1", "1.34.2-rc.1"]
        {
            assert_eq!(bad.parse::<KubernetesVersion>(), Err(VersionFormatError(bad.to_owned())), "{bad}");
        }
    }

    #[test]
    fn rejects_malformed_version_naming_the_field() {
        let errors = validate(&spec("v1.34.2")).unwrap_err();
        assert_eq!(errors, vec![SpecError::VersionFormat(VersionFormatError("v1.34.2".into()))]);
        let message = errors[0].to_string();
        assert!(message.starts_with("spec.version: \"v1.34.2\" is not"), "{message}");
    }

    #[test]
    fn rejects_unsupported_versions() {
        for text in ["1.29.9", "1.36.0", "2.34.0"] {
            let errors = validate(&spec(text)).unwrap_err();
            assert_eq!(errors, vec![SpecError::VersionUnsupported { version: version(text) }]);
        }
        let message = validate(&spec("1.36.0")).unwrap_err()[0].to_string();
        assert_eq!(message, "spec.version 1.36.0 is not supported: Nestor runs Kubernetes 1.30 through 1.35");
    }

    #[test]
    fn spec_durations_are_whole_hours_minutes_and_seconds_in_order() {
        assert_eq!(parse_spec_duration("8760h"), Ok(Duration::from_secs(8760 * 3600)));
        assert_eq!(parse_spec_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_spec_duration("1h2m3s"), Ok(Duration::from_secs(3723)));
        assert_eq!(parse_spec_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_spec_duration("0h"), Ok(Duration::ZERO));
        assert_eq!(parse_spec_duration("999999h"), Ok(Duration::from_secs(999_999 * 3600)));
        for bad in [
            "", "1d", "30m1h", "1h1h", "h", "1.5h", "1", " 1h", "1h ", "-1h", "1hm", "1000000h", "300ms",
            "1µs",
        ] {
            assert_eq!(parse_spec_duration(bad), Err(SPEC_DURATION_FORM), "{bad:?}");
        }
    }

    #[test]
    fn rejects_renew_before_not_shorter_than_validity() {
        let mut tenant = spec("1.34.2");
        tenant.pki = PkiSpec {
            certificate_validity: "24h".into(),
            renew_before: "1440m".into(),
            ..PkiSpec::default()
        };
        let errors = validate(&tenant).unwrap_err();
        assert_eq!(
            errors,
            vec![SpecError::RenewBeforeNotShorter {
                renew_before: "1440m".into(),
                certificate_validity: "24h".into()
            }]
        );
        assert!(errors[0].to_string().starts_with("spec.pki.renewBefore (1440m) must be shorter than"));

        tenant.pki.renew_before = "23h59m59s".into();
        assert_eq!(validate(&tenant), Ok(()));
    }

    #[test]
    fn rejects_malformed_and_zero_durations_naming_the_field() {
        let mut tenant = spec("1.34.2");
        tenant.pki.certificate_validity = "1y".into();
        tenant.pki.renew_before = "0s".into();
        let errors = validate(&tenant).unwrap_err();
        assert_eq!(
            errors,
            vec![
                SpecError::Duration {
                    field: "spec.pki.certificateValidity",
                    value: "1y".into(),
                    reason: SPEC_DURATION_FORM
                },
                SpecError::DurationZero { field: "spec.pki.renewBefore" },
            ]
        );
        assert!(
            errors[0].to_string().starts_with("spec.pki.certificateValidity \"1y\" is not a valid duration")
        );
        assert_eq!(errors[1].to_string(), "spec.pki.renewBefore must be longer than zero");
    }

    #[test]
    fn quota_out_of_range_is_refused_naming_the_field() {
        let mut tenant = spec("1.34.2");
        tenant.etcd.quota_backend_bytes = Some(16 * 1024 * 1024);
        assert_eq!(validate(&tenant), Ok(()));
        tenant.etcd.quota_backend_bytes = Some(8 * 1024 * 1024 * 1024);
        assert_eq!(validate(&tenant), Ok(()));
        for bad in [0, -1, 1024, 8 * 1024 * 1024 * 1024 + 1] {
            tenant.etcd.quota_backend_bytes = Some(bad);
            let errors = validate(&tenant).unwrap_err();
            assert_eq!(errors, vec![SpecError::QuotaBackendBytes(bad)]);
            assert!(
                errors[0].to_string().starts_with("spec.etcd.quotaBackendBytes must be between"),
                "{}",
                errors[0]
            );
        }
        assert_eq!(
            rules::quota_backend_bytes().rule,
            "self >= 16777216 && self <= 8589934592",
            "the CRD's rule uses the same bounds"
        );
    }

    #[test]
    fn reports_every_problem_at_once() {
        let mut tenant = spec("1.20.0");
        tenant.etcd.replicas = 2;
        tenant.api_server.replicas = 0;
        tenant.controller_manager.replicas = -1;
        tenant.scheduler.replicas = 0;
        let errors = validate(&tenant).unwrap_err();
        assert_eq!(
            errors,
            vec![
                SpecError::VersionUnsupported { version: version("1.20.0") },
                SpecError::EtcdReplicas(2),
                SpecError::ReplicasBelowOne { field: "spec.apiServer.replicas", value: 0 },
                SpecError::ReplicasBelowOne { field: "spec.controllerManager.replicas", value: -1 },
                SpecError::ReplicasBelowOne { field: "spec.scheduler.replicas", value: 0 },
            ]
        );
    }

    #[test]
    fn rejects_extra_args_without_a_flag_name_naming_the_field() {
        let mut tenant = spec("1.34.2");
        tenant.api_server.extra_args =
            [("".to_string(), "x".to_string()), ("v".to_string(), "2".to_string())].into();
        tenant.controller_manager.extra_args =
            [("--".to_string(), "x".to_string()), ("--v".to_string(), "2".to_string())].into();
        tenant.scheduler.extra_args =
            [("---".to_string(), "x".to_string()), ("v".to_string(), "2".to_string())].into();
        let errors = validate(&tenant).unwrap_err();
        assert_eq!(
            errors,
            vec![
                SpecError::ExtraArgEmptyFlag { field: "spec.apiServer.extraArgs", key: "".into() },
                SpecError::ExtraArgEmptyFlag { field: "spec.controllerManager.extraArgs", key: "--".into() },
                SpecError::ExtraArgEmptyFlag { field: "spec.scheduler.extraArgs", key: "---".into() },
            ]
        );
        assert_eq!(
            errors[0].to_string(),
            "spec.apiServer.extraArgs: an empty flag name is not a flag (key \"\")"
        );
        assert_eq!(
            errors[1].to_string(),
            "spec.controllerManager.extraArgs: an empty flag name is not a flag (key \"--\")"
        );

        tenant.api_server.extra_args.remove("");
        tenant.controller_manager.extra_args.remove("--");
        tenant.scheduler.extra_args.remove("---");
        assert_eq!(validate(&tenant), Ok(()), "named flags, with or without dashes, are fine");
    }

    #[test]
    fn error_messages_are_one_line() {
        let errors = [
            SpecError::VersionDowngrade { running: version("1.34.2"), desired: version("1.33.0") },
            SpecError::VersionSkipsMinor { running: version("1.33.2"), desired: version("1.35.0") },
            SpecError::RenewBeforeNotShorter { renew_before: "2h".into(), certificate_validity: "1h".into() },
            SpecError::EtcdReplicas(4),
            SpecError::ExtraArgEmptyFlag { field: "spec.apiServer.extraArgs", key: "--".into() },
        ];
        for error in errors {
            let message = error.to_string();
            assert!(!message.contains('\n') && message.contains("spec."), "{message}");
        }
    }

    #[test]
    fn upgrades_go_one_minor_at_a_time() {
        assert_eq!(validate_upgrade(version("1.33.1"), version("1.33.1")), Ok(()));
        assert_eq!(validate_upgrade(version("1.33.1"), version("1.33.4")), Ok(()));
        assert_eq!(validate_upgrade(version("1.33.9"), version("1.34.0")), Ok(()));
        assert_eq!(
            validate_upgrade(version("1.34.2"), version("1.34.1")),
            Err(SpecError::VersionDowngrade { running: version("1.34.2"), desired: version("1.34.1") })
        );
        assert_eq!(
            validate_upgrade(version("1.34.0"), version("1.33.9")),
            Err(SpecError::VersionDowngrade { running: version("1.34.0"), desired: version("1.33.9") })
        );
        assert_eq!(
            validate_upgrade(version("1.33.0"), version("1.35.0")),
            Err(SpecError::VersionSkipsMinor { running: version("1.33.0"), desired: version("1.35.0") })
        );
    }

    #[test]
    fn cel_rules_use_the_rust_constants() {
        assert_eq!(
            rules::version_supported().rule,
            format!(
                "!self.matches('{VERSION_PATTERN}') || \
                 (int(self.split('.')[1]) >= 30 && int(self.split('.')[1]) <= 35)"
            )
        );
        assert_eq!(rules::name_length().rule, "self.metadata.name.size() <= 40");
        assert_eq!(rules::etcd_replicas().rule, "self in [1, 3, 5]");
    }
}
