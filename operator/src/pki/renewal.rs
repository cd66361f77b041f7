//! Whether a stored leaf certificate is still what the tenant needs. The
//! reconciler re-issues a leaf exactly when [`renewal_reason`] gives a reason;
//! there is deliberately no equivalent for CAs.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use jiff::Timestamp;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

use super::{CertificateAuthority, CertificateRequest};

/// Why a stored leaf certificate must be re-issued.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RenewalReason {
    /// No certificate or no key is stored.
    Missing,
    /// The certificate or key is not valid PEM/DER.
    Unparsable,
    /// The key is not the certificate's private key.
    KeyMismatch,
    /// The certificate was not signed by the CA (checked by signature, not by issuer name).
    IssuerMismatch,
    /// Subject common name or organization differs from the request.
    SubjectMismatch,
    /// Subject alternative names differ from the request (e.g. etcd scaled, certSANs changed).
    SansMismatch,
    /// serverAuth/clientAuth differ from the request.
    UsageMismatch,
    /// The certificate ends within the renewal window (or already ended).
    ExpiresSoon { not_after: Timestamp },
}

impl RenewalReason {
    /// Short stable label, for metrics and event reasons.
    pub fn label(&self) -> &'static str {
        match self {
            RenewalReason::Missing => "Missing",
            RenewalReason::Unparsable => "Unparsable",
            RenewalReason::KeyMismatch => "KeyMismatch",
            RenewalReason::IssuerMismatch => "IssuerMismatch",
            RenewalReason::SubjectMismatch => "SubjectMismatch",
            RenewalReason::SansMismatch => "SansMismatch",
            RenewalReason::UsageMismatch => "UsageMismatch",
            RenewalReason::ExpiresSoon { .. } => "ExpiresSoon",
        }
    }
}

impl fmt::Display for RenewalReason {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RenewalReason::Missing => formatter.write_str("certificate or key is missing"),
            RenewalReason::Unparsable => formatter.write_str("certificate or key cannot be parsed"),
            RenewalReason::KeyMismatch => formatter.write_str("key does not match the certificate"),
            RenewalReason::IssuerMismatch => {
                formatter.write_str("certificate is not signed by the current CA")
            }
            RenewalReason::SubjectMismatch => formatter.write_str("certificate subject changed"),
            RenewalReason::SansMismatch => {
                formatter.write_str("certificate subject alternative names changed")
            }
            RenewalReason::UsageMismatch => formatter.write_str("certificate key usage changed"),
            RenewalReason::ExpiresSoon { not_after } => {
                write!(formatter, "certificate expires at {not_after}")
            }
        }
    }
}

/// A subject alternative name, comparable as a set member.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum AlternativeName {
    Dns(String),
    Ip(IpAddr),
    /// Any other kind of name, which Nestor never requests.
    Other(String),
}

/// Decides whether the stored `cert_pem`/`key_pem` must be replaced by a new
/// certificate for `request` under `ca`. `None` means keep it. Checks run from
/// the most to the least fundamental, so the reason is the most useful one.
/// The key algorithm is not compared: a changed `spec.pki.keyAlgorithm`
/// applies at the next re-issue, not by re-issuing everything at once.
pub fn renewal_reason(
    cert_pem: Option<&str>,
    key_pem: Option<&str>,
    ca: &CertificateAuthority,
    request: &CertificateRequest,
    renew_before: Duration,
    now: Timestamp,
) -> Option<RenewalReason> {
    let (Some(cert_pem), Some(key_pem)) = (cert_pem, key_pem) else {
        return Some(RenewalReason::Missing);
    };
    if cert_pem.trim().is_empty() || key_pem.trim().is_empty() {
        return Some(RenewalReason::Missing);
    }
    let Ok(der) = super::certificate_der(cert_pem, "stored certificate") else {
        return Some(RenewalReason::Unparsable);
    };
    let Ok(certificate) = super::parse_certificate(&der, "stored certificate") else {
        return Some(RenewalReason::Unparsable);
    };
    let Ok(key) = super::parse_key_pair(key_pem, "stored key") else {
        return Some(RenewalReason::Unparsable);
    };
    if !super::key_matches_certificate(&key, &certificate) {
        return Some(RenewalReason::KeyMismatch);
    }
    if !signed_by(&certificate, ca) {
        return Some(RenewalReason::IssuerMismatch);
    }
    if !subject_matches(&certificate, request) {
        return Some(RenewalReason::SubjectMismatch);
    }
    if alternative_names(&certificate) != requested_alternative_names(request) {
        return Some(RenewalReason::SansMismatch);
    }
    if !usage_matches(&certificate, request) {
        return Some(RenewalReason::UsageMismatch);
    }
    let Ok(not_after) = Timestamp::from_second(certificate.validity().not_after.timestamp()) else {
        return Some(RenewalReason::Unparsable);
    };
    let renew_at = not_after.checked_sub(renew_before).unwrap_or(Timestamp::MIN);
    if now >= renew_at {
        return Some(RenewalReason::ExpiresSoon { not_after });
    }
    None
}

/// End of validity of the first certificate in `pem`, for status
/// (`certificatesExpireAt` reports the earliest over all leaves).
pub fn certificate_not_after(pem: &str) -> Result<Timestamp, super::PkiError> {
    let der = super::certificate_der(pem, "certificate")?;
    let certificate = super::parse_certificate(&der, "certificate")?;
    Timestamp::from_second(certificate.validity().not_after.timestamp()).map_err(|e| {
        super::PkiError::InvalidCertificate { what: "certificate".into(), reason: e.to_string() }
    })
}

fn signed_by(certificate: &X509Certificate, ca: &CertificateAuthority) -> bool {
    let Ok(ca_der) = super::certificate_der(ca.cert_pem(), "CA certificate") else {
        return false;
    };
    let Ok(ca_certificate) = super::parse_certificate(&ca_der, "CA certificate") else {
        return false;
    };
    certificate.issuer().as_raw() == ca_certificate.subject().as_raw()
        && certificate.verify_signature(Some(ca_certificate.public_key())).is_ok()
}

fn subject_matches(certificate: &X509Certificate, request: &CertificateRequest) -> bool {
    let common_names: Vec<_> = certificate.subject().iter_common_name().map(|a| a.as_str().ok()).collect();
    let organizations: Vec<_> = certificate.subject().iter_organization().map(|a| a.as_str().ok()).collect();
    common_names == [Some(request.common_name.as_str())]
        && organizations == request.organization.iter().map(|o| Some(o.as_str())).collect::<Vec<_>>()
}

fn alternative_names(certificate: &X509Certificate) -> BTreeSet<AlternativeName> {
    let Ok(Some(extension)) = certificate.subject_alternative_name() else {
        return BTreeSet::new();
    };
    extension
        .value
        .general_names
        .iter()
        .map(|name| match name {
            GeneralName::DNSName(dns) => AlternativeName::Dns(dns.to_string()),
            GeneralName::IPAddress(bytes) => match bytes.len() {
                4 => AlternativeName::Ip(IpAddr::from(<[u8; 4]>::try_from(*bytes).unwrap_or_default())),
                16 => AlternativeName::Ip(IpAddr::from(<[u8; 16]>::try_from(*bytes).unwrap_or_default())),
                _ => AlternativeName::Other(format!("{name:?}")),
            },
            other => AlternativeName::Other(format!("{other:?}")),
        })
        .collect()
}

fn requested_alternative_names(request: &CertificateRequest) -> BTreeSet<AlternativeName> {
    let dns = request.dns_names.iter().cloned().map(AlternativeName::Dns);
    let ips = request.ip_addresses.iter().copied().map(AlternativeName::Ip);
    dns.chain(ips).collect()
}

fn usage_matches(certificate: &X509Certificate, request: &CertificateRequest) -> bool {
    let Ok(Some(extension)) = certificate.extended_key_usage() else {
        return false;
    };
    extension.value.server_auth == request.usage.server_auth()
        && extension.value.client_auth == request.usage.client_auth()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::test_support::now;
    use crate::pki::{CA_VALIDITY, CertificateUsage, KeyAlgorithm, issue};

    const YEAR: Duration = Duration::from_secs(8760 * 3600);
    const MONTH: Duration = Duration::from_secs(720 * 3600);

    fn request() -> CertificateRequest {
        CertificateRequest {
            common_name: "team-a-etcd".into(),
            organization: None,
            dns_names: vec!["team-a-etcd-0.team-a-etcd.tenants.svc".into(), "localhost".into()],
            ip_addresses: vec!["127.0.0.1".parse().unwrap()],
            usage: CertificateUsage::ServerAndClient,
        }
    }

    fn ca() -> CertificateAuthority {
        CertificateAuthority::generate("etcd-ca", KeyAlgorithm::EcdsaP256, CA_VALIDITY, now()).unwrap()
    }

    fn reason_for(
        cert_pem: &str,
        key_pem: &str,
        ca: &CertificateAuthority,
        request: &CertificateRequest,
    ) -> Option<RenewalReason> {
        renewal_reason(Some(cert_pem), Some(key_pem), ca, request, MONTH, now())
    }

    #[test]
    fn a_fresh_matching_certificate_is_kept_for_both_algorithms() {
        for algorithm in [KeyAlgorithm::EcdsaP256, KeyAlgorithm::Rsa2048] {
            let ca = CertificateAuthority::generate("etcd-ca", algorithm, CA_VALIDITY, now()).unwrap();
            let leaf = issue(&ca, &request(), algorithm, YEAR, now()).unwrap();
            assert_eq!(reason_for(&leaf.cert_pem, &leaf.key_pem, &ca, &request()), None, "{algorithm:?}");
        }
    }

    #[test]
    fn san_order_does_not_matter() {
        let ca = ca();
        let leaf = issue(&ca, &request(), KeyAlgorithm::EcdsaP256, YEAR, now()).unwrap();
        let mut reordered = request();
        reordered.dns_names.reverse();
        assert_eq!(reason_for(&leaf.cert_pem, &leaf.key_pem, &ca, &reordered), None);
    }

    #[test]
    fn missing_certificate_or_key() {
        let ca = ca();
        let leaf = issue(&ca, &request(), KeyAlgorithm::EcdsaP256, YEAR, now()).unwrap();
        let missing = Some(RenewalReason::Missing);
        assert_eq!(renewal_reason(None, Some(&leaf.key_pem), &ca, &request(), MONTH, now()), missing);
        assert_eq!(renewal_reason(Some(&leaf.cert_pem), None, &ca, &request(), MONTH, now()), missing);
        assert_eq!(reason_for("", &leaf.key_pem, &ca, &request()), missing);
    }

    #[test]
    fn garbage_pem_is_unparsable() {
        let ca = ca();
        let leaf = issue(&ca, &request(), KeyAlgorithm::EcdsaP256, YEAR, now()).unwrap();
        let unparsable = Some(RenewalReason::Unparsable);
        assert_eq!(reason_for("garbage", &leaf.key_pem, &ca, &request()), unparsable);
        let truncated = &leaf.cert_pem[..leaf.cert_pem.len() / 2];
        assert_eq!(reason_for(truncated, &leaf.key_pem, &ca, &request()), unparsable);
        assert_eq!(reason_for(&leaf.cert_pem, "garbage", &ca, &request()), unparsable);
    }

    #[test]
    fn key_of_another_certificate_is_a_key_mismatch() {
        let ca = ca();
        let leaf = issue(&ca, &request(), KeyAlgorithm::EcdsaP256, YEAR, now()).unwrap();
        let other = issue(&ca, &request(), KeyAlgorithm::EcdsaP256, YEAR, now()).unwrap();
        assert_eq!(
            reason_for(&leaf.cert_pem, &other.key_pem, &ca, &request()),
            Some(RenewalReason::KeyMismatch)
        );
    }

    #[test]
    fn certificate_of_another_ca_with_the_same_name_is_an_issuer_mismatch() {
        let old_ca = ca();
        let leaf = issue(&old_ca, &request(), KeyAlgorithm::EcdsaP256, YEAR, now()).unwrap();
        // Same subject "etcd-ca", different key: only the signature tells them apart.
        let new_ca = ca();
        assert_eq!(
            reason_for(&leaf.cert_pem, &leaf.key_pem, &new_ca, &request()),
            Some(RenewalReason::IssuerMismatch)
        );
    }

    #[test]
    fn changed_common_name_or_organization_is_a_subject_mismatch() {
        let ca = ca();
        let leaf = issue(&ca, &request(), KeyAlgorithm::EcdsaP256, YEAR, now()).unwrap();
        let renamed = CertificateRequest { common_name: "other".into(), ..request() };
        assert_eq!(
            reason_for(&leaf.cert_pem, &leaf.key_pem, &ca, &renamed),
            Some(RenewalReason::SubjectMismatch)
        );
        let grouped = CertificateRequest { organization: Some("system:masters".into()), ..request() };
        assert_eq!(
            reason_for(&leaf.cert_pem, &leaf.key_pem, &ca, &grouped),
            Some(RenewalReason::SubjectMismatch)
        );
    }

    #[test]
    fn added_or_removed_san_is_a_sans_mismatch() {
        let ca = ca();
        let leaf = issue(&ca, &request(), KeyAlgorithm::EcdsaP256, YEAR, now()).unwrap();
        let mut scaled = request();
        scaled.dns_names.push("team-a-etcd-1.team-a-etcd.tenants.svc".into());
        assert_eq!(
            reason_for(&leaf.cert_pem, &leaf.key_pem, &ca, &scaled),
            Some(RenewalReason::SansMismatch)
        );
        let mut without_ip = request();
        without_ip.ip_addresses.clear();
        assert_eq!(
            reason_for(&leaf.cert_pem, &leaf.key_pem, &ca, &without_ip),
            Some(RenewalReason::SansMismatch)
        );
    }

    #[test]
    fn changed_usage_is_a_usage_mismatch() {
        let ca = ca();
        let leaf = issue(&ca, &request(), KeyAlgorithm::EcdsaP256, YEAR, now()).unwrap();
        let server_only = CertificateRequest { usage: CertificateUsage::Server, ..request() };
        assert_eq!(
            reason_for(&leaf.cert_pem, &leaf.key_pem, &ca, &server_only),
            Some(RenewalReason::UsageMismatch)
        );
    }

    #[test]
    fn certificate_within_the_renewal_window_expires_soon() {
        let ca = ca();
        let leaf = issue(&ca, &request(), KeyAlgorithm::EcdsaP256, YEAR, now()).unwrap();
        let just_before_window =
            leaf.not_after.checked_sub(MONTH).unwrap().checked_sub(Duration::from_secs(1));
        let at_window = leaf.not_after.checked_sub(MONTH).unwrap();
        let check = |at: Timestamp| {
            renewal_reason(Some(&leaf.cert_pem), Some(&leaf.key_pem), &ca, &request(), MONTH, at)
        };
        assert_eq!(check(just_before_window.unwrap()), None);
        let expires_soon = Some(RenewalReason::ExpiresSoon { not_after: leaf.not_after });
        assert_eq!(check(at_window), expires_soon);
        assert_eq!(check(leaf.not_after.checked_add(YEAR).unwrap()), expires_soon, "already expired");
    }

    #[test]
    fn a_short_lived_certificate_inside_renew_before_is_renewed_at_once() {
        let ca = ca();
        let leaf = issue(&ca, &request(), KeyAlgorithm::EcdsaP256, Duration::from_secs(3600), now()).unwrap();
        assert!(matches!(
            reason_for(&leaf.cert_pem, &leaf.key_pem, &ca, &request()),
            Some(RenewalReason::ExpiresSoon { .. })
        ));
    }

    #[test]
    fn not_after_reads_the_certificate() {
        let ca = ca();
        let leaf = issue(&ca, &request(), KeyAlgorithm::EcdsaP256, YEAR, now()).unwrap();
        assert_eq!(certificate_not_after(&leaf.cert_pem).unwrap(), now().checked_add(YEAR).unwrap());
        assert_eq!(certificate_not_after(ca.cert_pem()).unwrap(), ca.not_after());
        assert!(certificate_not_after("garbage").is_err());
    }

    #[test]
    fn reasons_have_distinct_labels_and_readable_messages() {
        let reasons = [
            RenewalReason::Missing,
            RenewalReason::Unparsable,
            RenewalReason::KeyMismatch,
            RenewalReason::IssuerMismatch,
            RenewalReason::SubjectMismatch,
            RenewalReason::SansMismatch,
            RenewalReason::UsageMismatch,
            RenewalReason::ExpiresSoon { not_after: now() },
        ];
        let labels: BTreeSet<_> = reasons.iter().map(RenewalReason::label).collect();
        assert_eq!(labels.len(), reasons.len());
        assert_eq!(reasons[7].to_string(), "certificate expires at 2025-06-01T12:00:00Z");
    }
}
