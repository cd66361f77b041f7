//! Tenant PKI: certificate authorities, leaf certificates, the service-account
//! signing key and the encryption-at-rest key, pure (no Kubernetes types, no I/O).
//!
//! Inputs are names, SANs, key algorithm and validity; outputs are PEM. The
//! reconciler stores the PEM in Secrets and asks [`renewal_reason`] on every
//! pass whether a stored leaf must be re-issued.
//!
//! - [`plan`]: which certificates a tenant needs, with their subjects and SANs.
//! - [`authority`]: certificate authorities and the service-account key pair.
//!   A CA is generated once and never replaced by this module: replacing it
//!   would invalidate every credential already handed out.
//! - [`leaf`]: issuing leaf certificates.
//! - [`renewal`]: deciding whether a stored leaf is still good.
//! - [`encryption`]: the kube-apiserver EncryptionConfiguration.

pub mod authority;
pub mod encryption;
pub mod leaf;
pub mod plan;
pub mod renewal;

use std::time::Duration;

use jiff::Timestamp;
use time::OffsetDateTime;

pub use authority::{CA_VALIDITY, CertificateAuthority, ServiceAccountKeyPair};
pub use encryption::{EncryptionKey, EncryptionProvider, encryption_configuration};
pub use leaf::{CertificateRequest, CertificateUsage, IssuedCertificate, issue};
pub use plan::{
    Authority, KONNECTIVITY_SERVER, LeafCertificate, META_CLUSTER_DOMAIN, PlannedAuthority,
    PlannedCertificate, TenantPkiInputs, TenantPkiPlan, kubernetes_service_ip,
};
pub use renewal::{RenewalReason, certificate_not_after, renewal_reason};

/// Algorithm of a newly generated key. Existing keys keep their algorithm
/// until their certificate is re-issued.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum KeyAlgorithm {
    /// ECDSA on P-256 with SHA-256: small keys, generated in microseconds.
    #[default]
    EcdsaP256,
    /// RSA 2048 with PKCS#1 v1.5 SHA-256 signatures, for clients that need RSA.
    Rsa2048,
}

impl From<crate::api::KeyAlgorithm> for KeyAlgorithm {
    fn from(algorithm: crate::api::KeyAlgorithm) -> Self {
        match algorithm {
            crate::api::KeyAlgorithm::EcdsaP256 => KeyAlgorithm::EcdsaP256,
            crate::api::KeyAlgorithm::Rsa2048 => KeyAlgorithm::Rsa2048,
        }
    }
}

impl KeyAlgorithm {
    /// Generates a fresh key pair of this algorithm.
    fn generate_key_pair(self) -> Result<rcgen::KeyPair, PkiError> {
        let generated = match self {
            KeyAlgorithm::EcdsaP256 => rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
            // The aws-lc-rs backend is the one rcgen backend that generates RSA keys.
            KeyAlgorithm::Rsa2048 => {
                rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
            }
        };
        generated.map_err(|source| PkiError::KeyGeneration { algorithm: self, source })
    }
}

/// Everything that can go wrong while building or reading PKI material.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("could not generate a {algorithm:?} key: {source}")]
    KeyGeneration {
        algorithm: KeyAlgorithm,
        #[source]
        source: rcgen::Error,
    },
    #[error("could not sign the certificate for {common_name}: {source}")]
    Signing {
        common_name: String,
        #[source]
        source: rcgen::Error,
    },
    #[error("{what} is not a valid PEM certificate: {reason}")]
    InvalidCertificate { what: String, reason: String },
    #[error("{what} is not a valid PEM private key: {reason}")]
    InvalidPrivateKey { what: String, reason: String },
    #[error("the private key of CA {common_name} does not match its certificate")]
    CaKeyMismatch { common_name: String },
    #[error("certificate {common_name} is not a certificate authority (basicConstraints CA is not true)")]
    NotACertificateAuthority { common_name: String },
    #[error("{value:?} is neither an IP address nor a DNS name")]
    InvalidSubjectAlternativeName { value: String },
    #[error("service CIDR {cidr:?} is invalid: {reason}")]
    InvalidServiceCidr { cidr: String, reason: String },
    #[error("a validity of {validity:?} from {now} ends outside the dates a certificate can hold")]
    ValidityOutOfRange { now: Timestamp, validity: Duration },
    #[error("etcd replicas must be at least 1, got {replicas}")]
    InvalidEtcdReplicas { replicas: i32 },
    #[error("encryption key {name:?} must be base64 of exactly 32 bytes")]
    InvalidEncryptionKey { name: String },
    #[error("EncryptionConfiguration could not be rendered or read: {0}")]
    EncryptionConfiguration(#[from] serde_yaml_ng::Error),
}

/// Clients on other nodes may run a little behind the operator's clock: a
/// certificate valid from "now" would be rejected there as not yet valid.
const CLOCK_SKEW_ALLOWANCE: Duration = Duration::from_secs(5 * 60);

/// The validity window `[now - skew allowance, now + validity]` in rcgen's time type.
fn validity_window(now: Timestamp, validity: Duration) -> Result<(OffsetDateTime, OffsetDateTime), PkiError> {
    let out_of_range = || PkiError::ValidityOutOfRange { now, validity };
    let not_before = now.checked_sub(CLOCK_SKEW_ALLOWANCE).map_err(|_| out_of_range())?;
    let not_after = now.checked_add(validity).map_err(|_| out_of_range())?;
    let to_offset = |timestamp: Timestamp| {
        OffsetDateTime::from_unix_timestamp(timestamp.as_second()).map_err(|_| out_of_range())
    };
    Ok((to_offset(not_before)?, to_offset(not_after)?))
}

/// Random positive 128-bit serial: unique per certificate, as RFC 5280 asks of a CA.
fn random_serial_number() -> rcgen::SerialNumber {
    use rand::RngCore;
    let mut serial = [0u8; 16];
    rand::rng().fill_bytes(&mut serial);
    // A clear top bit keeps the DER INTEGER positive without a padding byte.
    serial[0] &= 0x7f;
    rcgen::SerialNumber::from_slice(&serial)
}

/// DER of the first `CERTIFICATE` block of `pem`.
fn certificate_der(pem: &str, what: &str) -> Result<Vec<u8>, PkiError> {
    let invalid = |reason: String| PkiError::InvalidCertificate { what: what.to_string(), reason };
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|e| invalid(e.to_string()))?;
    if block.label != "CERTIFICATE" {
        return Err(invalid(format!("PEM block is {:?}, not CERTIFICATE", block.label)));
    }
    Ok(block.contents)
}

/// Parses DER produced by [`certificate_der`].
fn parse_certificate<'a>(
    der: &'a [u8],
    what: &str,
) -> Result<x509_parser::certificate::X509Certificate<'a>, PkiError> {
    x509_parser::parse_x509_certificate(der)
        .map(|(_, certificate)| certificate)
        .map_err(|e| PkiError::InvalidCertificate { what: what.to_string(), reason: e.to_string() })
}

/// Reads a PEM private key (PKCS#8, or SEC1/PKCS#1 as other tools write them).
fn parse_key_pair(pem: &str, what: &str) -> Result<rcgen::KeyPair, PkiError> {
    rcgen::KeyPair::from_pem(pem)
        .map_err(|e| PkiError::InvalidPrivateKey { what: what.to_string(), reason: e.to_string() })
}

/// Whether `key` is the private half of the public key in `certificate`.
fn key_matches_certificate(
    key: &rcgen::KeyPair,
    certificate: &x509_parser::certificate::X509Certificate,
) -> bool {
    certificate.public_key().subject_public_key.data.as_ref() == key.public_key_raw()
}

/// First common name of a certificate subject, empty when it has none.
fn common_name(certificate: &x509_parser::certificate::X509Certificate) -> String {
    certificate
        .subject()
        .iter_common_name()
        .next()
        .and_then(|attribute| attribute.as_str().ok())
        .unwrap_or_default()
        .to_string()
}

#[cfg(test)]
pub(crate) mod test_support {
    //! Helpers shared by the PKI tests: inspection of issued certificates with x509-parser.

    use std::net::IpAddr;

    use jiff::Timestamp;
    use x509_parser::prelude::*;

    /// A fixed "now" so validity assertions are exact.
    pub fn now() -> Timestamp {
        "2025-06-01T12:00:00Z".parse().unwrap()
    }

    pub fn der(pem: &str) -> Vec<u8> {
        super::certificate_der(pem, "test certificate").unwrap()
    }

    pub fn with_certificate<T>(pem: &str, inspect: impl FnOnce(&X509Certificate) -> T) -> T {
        let der = der(pem);
        let (rest, certificate) = parse_x509_certificate(&der).unwrap();
        assert!(rest.is_empty(), "trailing bytes after the certificate");
        inspect(&certificate)
    }

    pub fn assert_signed_by(cert_pem: &str, ca_pem: &str) {
        let ca_der = der(ca_pem);
        let (_, ca) = parse_x509_certificate(&ca_der).unwrap();
        with_certificate(cert_pem, |certificate| {
            certificate.verify_signature(Some(ca.public_key())).expect("signature verifies against the CA");
            assert_eq!(certificate.issuer().as_raw(), ca.subject().as_raw(), "issuer is the CA subject");
        });
    }

    /// (DNS names sorted, IPs sorted) of the SAN extension.
    pub fn sans(pem: &str) -> (Vec<String>, Vec<IpAddr>) {
        with_certificate(pem, |certificate| {
            let mut dns = Vec::new();
            let mut ips = Vec::new();
            if let Some(extension) = certificate.subject_alternative_name().unwrap() {
                for name in &extension.value.general_names {
                    match name {
                        GeneralName::DNSName(value) => dns.push(value.to_string()),
                        GeneralName::IPAddress(bytes) => ips.push(match bytes.len() {
                            4 => IpAddr::from(<[u8; 4]>::try_from(*bytes).unwrap()),
                            16 => IpAddr::from(<[u8; 16]>::try_from(*bytes).unwrap()),
                            other => panic!("IP SAN of {other} bytes"),
                        }),
                        other => panic!("unexpected SAN {other:?}"),
                    }
                }
            }
            dns.sort();
            ips.sort();
            (dns, ips)
        })
    }

    /// (serverAuth, clientAuth) of the extended key usage extension.
    pub fn extended_key_usage(pem: &str) -> (bool, bool) {
        with_certificate(pem, |certificate| {
            let extension = certificate.extended_key_usage().unwrap().expect("EKU present");
            (extension.value.server_auth, extension.value.client_auth)
        })
    }

    /// (common name, organizations) of the subject.
    pub fn subject(pem: &str) -> (String, Vec<String>) {
        with_certificate(pem, |certificate| {
            let organizations = certificate
                .subject()
                .iter_organization()
                .map(|attribute| attribute.as_str().unwrap().to_string())
                .collect();
            (super::common_name(certificate), organizations)
        })
    }

    /// (notBefore, notAfter) as timestamps.
    pub fn validity(pem: &str) -> (Timestamp, Timestamp) {
        with_certificate(pem, |certificate| {
            let validity = certificate.validity();
            (
                Timestamp::from_second(validity.not_before.timestamp()).unwrap(),
                Timestamp::from_second(validity.not_after.timestamp()).unwrap(),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_key_algorithm_maps_to_the_same_pki_algorithm() {
        assert_eq!(KeyAlgorithm::from(crate::api::KeyAlgorithm::EcdsaP256), KeyAlgorithm::EcdsaP256);
        assert_eq!(KeyAlgorithm::from(crate::api::KeyAlgorithm::Rsa2048), KeyAlgorithm::Rsa2048);
    }

    #[test]
    fn generated_keys_have_the_requested_algorithm() {
        let ecdsa = KeyAlgorithm::EcdsaP256.generate_key_pair().unwrap();
        assert_eq!(ecdsa.algorithm(), &rcgen::PKCS_ECDSA_P256_SHA256);
        let rsa = KeyAlgorithm::Rsa2048.generate_key_pair().unwrap();
        assert_eq!(rsa.algorithm(), &rcgen::PKCS_RSA_SHA256);
        // A 2048-bit modulus makes a PKCS#1 public key of 270 bytes.
        assert_eq!(rsa.public_key_raw().len(), 270);
    }

    #[test]
    fn validity_window_starts_before_now_and_ends_after_the_validity() {
        let now = test_support::now();
        let (not_before, not_after) = validity_window(now, Duration::from_secs(3600)).unwrap();
        assert_eq!(not_before.unix_timestamp(), now.as_second() - 300);
        assert_eq!(not_after.unix_timestamp(), now.as_second() + 3600);
    }

    #[test]
    fn validity_beyond_year_9999_is_an_error() {
        let result = validity_window(test_support::now(), Duration::from_secs(u64::MAX / 4));
        assert!(matches!(result, Err(PkiError::ValidityOutOfRange { .. })), "{result:?}");
    }

    #[test]
    fn serial_numbers_are_positive_and_distinct() {
        let first = random_serial_number().to_bytes();
        let second = random_serial_number().to_bytes();
        assert_eq!(first.len(), 16);
        assert!(first[0] < 0x80);
        assert_ne!(first, second);
    }
}
