//! Certificate authorities and the service-account signing key.
//!
//! Both are long-lived roots of trust: a CA signs every tenant credential and
//! the service-account key signs every token. This module can create them and
//! load them back, but has no path that replaces one: the reconciler generates
//! them only when their Secret does not exist.

use std::time::Duration;

use jiff::Timestamp;
use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyUsagePurpose};

use super::{KeyAlgorithm, PkiError};

/// Lifetime of a generated CA: ten years, as kubeadm does.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// A CA certificate with its private key, both PEM. Constructed only by
/// generating or by loading a pair that was checked to belong together.
#[derive(Clone, PartialEq, Eq)]
pub struct CertificateAuthority {
    cert_pem: String,
    key_pem: String,
    common_name: String,
    not_after: Timestamp,
}

impl std::fmt::Debug for CertificateAuthority {
    // The private key stays out of logs.
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("CertificateAuthority")
            .field("common_name", &self.common_name)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// Generates a self-signed CA valid from `now` (less a clock-skew
    /// allowance) for `validity` ([`CA_VALIDITY`] for tenant CAs).
    pub fn generate(
        common_name: &str,
        algorithm: KeyAlgorithm,
        validity: Duration,
        now: Timestamp,
    ) -> Result<Self, PkiError> {
        let key = algorithm.generate_key_pair()?;
        let (not_before, not_after) = super::validity_window(now, validity)?;

        let mut params = CertificateParams::default();
        let mut subject = DistinguishedName::new();
        subject.push(DnType::CommonName, common_name);
        params.distinguished_name = subject;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = not_before;
        params.not_after = not_after;
        params.serial_number = Some(super::random_serial_number());

        let certificate = params
            .self_signed(&key)
            .map_err(|source| PkiError::Signing { common_name: common_name.to_string(), source })?;
        Ok(Self {
            cert_pem: certificate.pem(),
            key_pem: key.serialize_pem(),
            common_name: common_name.to_string(),
            not_after: Timestamp::from_second(not_after.unix_timestamp())
                .map_err(|_| PkiError::ValidityOutOfRange { now, validity })?,
        })
    }

    /// Loads a CA from its Secret's PEM, checking that the certificate is a CA
    /// and that the key is its private key. A failure here is permanent: the
    /// caller must not overwrite the CA, since that would orphan every
    /// certificate it signed.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, PkiError> {
        let der = super::certificate_der(cert_pem, "CA certificate")?;
        let certificate = super::parse_certificate(&der, "CA certificate")?;
        let common_name = super::common_name(&certificate);

        let is_ca =
            certificate.basic_constraints().ok().flatten().is_some_and(|constraints| constraints.value.ca);
        if !is_ca {
            return Err(PkiError::NotACertificateAuthority { common_name });
        }
        let key = super::parse_key_pair(key_pem, "CA private key")?;
        if !super::key_matches_certificate(&key, &certificate) {
            return Err(PkiError::CaKeyMismatch { common_name });
        }
        let not_after =
            Timestamp::from_second(certificate.validity().not_after.timestamp()).map_err(|e| {
                PkiError::InvalidCertificate { what: "CA certificate".into(), reason: e.to_string() }
            })?;
        Ok(Self { cert_pem: cert_pem.to_string(), key_pem: key_pem.to_string(), common_name, not_after })
    }

    /// The CA certificate, PEM (`tls.crt` / `ca.crt`).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA private key, PEM (`tls.key`).
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// Common name of the CA subject.
    pub fn common_name(&self) -> &str {
        &self.common_name
    }

    /// End of the CA's validity.
    pub fn not_after(&self) -> Timestamp {
        self.not_after
    }

    /// An rcgen issuer that signs with this CA's key under its subject.
    pub(super) fn issuer(&self) -> Result<rcgen::Issuer<'static, rcgen::KeyPair>, PkiError> {
        let key = super::parse_key_pair(&self.key_pem, "CA private key")?;
        rcgen::Issuer::from_ca_cert_pem(&self.cert_pem, key).map_err(|e| PkiError::InvalidCertificate {
            what: format!("CA certificate {}", self.common_name),
            reason: e.to_string(),
        })
    }
}

/// The key pair the tenant apiserver signs service-account tokens with
/// (`--service-account-signing-key-file`) and verifies them with
/// (`--service-account-key-file`). Not a certificate: it never expires, and
/// replacing it invalidates every token in the tenant.
#[derive(Clone, PartialEq, Eq)]
pub struct ServiceAccountKeyPair {
    /// PKCS#8 private key, PEM (`PRIVATE KEY`).
    pub private_key_pem: String,
    /// SubjectPublicKeyInfo, PEM (`PUBLIC KEY`).
    pub public_key_pem: String,
}

impl std::fmt::Debug for ServiceAccountKeyPair {
    // The private key stays out of logs.
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ServiceAccountKeyPair")
            .field("public_key_pem", &self.public_key_pem)
            .finish_non_exhaustive()
    }
}

impl ServiceAccountKeyPair {
    /// Generates a new key pair (ES256 or RS256 tokens, following `algorithm`).
    pub fn generate(algorithm: KeyAlgorithm) -> Result<Self, PkiError> {
        let key = algorithm.generate_key_pair()?;
        Ok(Self { private_key_pem: key.serialize_pem(), public_key_pem: key.public_key_pem() })
    }

    /// Rebuilds the pair from a stored private key, so a Secret that lost its
    /// public half is repaired without rotating the key.
    pub fn from_private_key_pem(private_key_pem: &str) -> Result<Self, PkiError> {
        let key = super::parse_key_pair(private_key_pem, "service-account private key")?;
        Ok(Self { private_key_pem: private_key_pem.to_string(), public_key_pem: key.public_key_pem() })
    }
}

#[cfg(test)]
mod tests {
    use x509_parser::prelude::*;

    use super::*;
    use crate::pki::test_support::{self, now, with_certificate};

    #[test]
    fn generated_ca_is_a_self_signed_ca_for_ten_years() {
        for algorithm in [KeyAlgorithm::EcdsaP256, KeyAlgorithm::Rsa2048] {
            let ca = CertificateAuthority::generate("kubernetes", algorithm, CA_VALIDITY, now()).unwrap();
            assert_eq!(ca.common_name(), "kubernetes");
            test_support::assert_signed_by(ca.cert_pem(), ca.cert_pem());
            with_certificate(ca.cert_pem(), |certificate| {
                let constraints = certificate.basic_constraints().unwrap().expect("basicConstraints");
                assert!(constraints.critical);
                assert!(constraints.value.ca);
                let key_usage = certificate.key_usage().unwrap().expect("keyUsage").value;
                assert!(key_usage.key_cert_sign());
                assert!(key_usage.digital_signature());
                assert!(certificate.subject_alternative_name().unwrap().is_none());
                let expected_signature = match algorithm {
                    KeyAlgorithm::EcdsaP256 => x509_parser::oid_registry::OID_SIG_ECDSA_WITH_SHA256,
                    KeyAlgorithm::Rsa2048 => x509_parser::oid_registry::OID_PKCS1_SHA256WITHRSA,
                };
                assert_eq!(certificate.signature_algorithm.algorithm, expected_signature);
            });
            let (not_before, not_after) = test_support::validity(ca.cert_pem());
            assert!(not_before <= now());
            assert_eq!(not_after, now().checked_add(CA_VALIDITY).unwrap());
            assert_eq!(ca.not_after(), not_after);
            assert!(ca.key_pem().contains("PRIVATE KEY"));
        }
    }

    #[test]
    fn ca_round_trips_through_pem() {
        let ca =
            CertificateAuthority::generate("etcd-ca", KeyAlgorithm::EcdsaP256, CA_VALIDITY, now()).unwrap();
        let loaded = CertificateAuthority::from_pem(ca.cert_pem(), ca.key_pem()).unwrap();
        assert_eq!(loaded, ca);
    }

    #[test]
    fn loading_a_ca_with_another_key_fails() {
        let ca =
            CertificateAuthority::generate("etcd-ca", KeyAlgorithm::EcdsaP256, CA_VALIDITY, now()).unwrap();
        let other =
            CertificateAuthority::generate("etcd-ca", KeyAlgorithm::EcdsaP256, CA_VALIDITY, now()).unwrap();
        let result = CertificateAuthority::from_pem(ca.cert_pem(), other.key_pem());
        assert!(
            matches!(result, Err(PkiError::CaKeyMismatch { ref common_name }) if common_name == "etcd-ca")
        );
    }

    #[test]
    fn loading_garbage_fails_with_the_part_that_is_wrong() {
        let ca = CertificateAuthority::generate("kubernetes", KeyAlgorithm::EcdsaP256, CA_VALIDITY, now())
            .unwrap();
        assert!(matches!(
            CertificateAuthority::from_pem("not a certificate", ca.key_pem()),
            Err(PkiError::InvalidCertificate { .. })
        ));
        assert!(matches!(
            CertificateAuthority::from_pem(ca.cert_pem(), "not a key"),
            Err(PkiError::InvalidPrivateKey { .. })
        ));
    }

    #[test]
    fn a_leaf_certificate_is_not_accepted_as_a_ca() {
        let ca = CertificateAuthority::generate("kubernetes", KeyAlgorithm::EcdsaP256, CA_VALIDITY, now())
            .unwrap();
        let request = crate::pki::CertificateRequest::client("nestor-admin", Some("system:masters"));
        let leaf = crate::pki::issue(&ca, &request, KeyAlgorithm::EcdsaP256, CA_VALIDITY, now()).unwrap();
        let result = CertificateAuthority::from_pem(&leaf.cert_pem, &leaf.key_pem);
        assert!(matches!(result, Err(PkiError::NotACertificateAuthority { .. })), "{result:?}");
    }

    #[test]
    fn debug_output_hides_private_keys() {
        let ca = CertificateAuthority::generate("kubernetes", KeyAlgorithm::EcdsaP256, CA_VALIDITY, now())
            .unwrap();
        assert!(!format!("{ca:?}").contains("PRIVATE"));
        let service_account = ServiceAccountKeyPair::generate(KeyAlgorithm::EcdsaP256).unwrap();
        assert!(!format!("{service_account:?}").contains("PRIVATE"));
    }

    #[test]
    fn service_account_key_pair_follows_the_algorithm_and_halves_match() {
        for (algorithm, expected_oid) in [
            (KeyAlgorithm::EcdsaP256, x509_parser::oid_registry::OID_KEY_TYPE_EC_PUBLIC_KEY),
            (KeyAlgorithm::Rsa2048, x509_parser::oid_registry::OID_PKCS1_RSAENCRYPTION),
        ] {
            let pair = ServiceAccountKeyPair::generate(algorithm).unwrap();
            assert!(pair.private_key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
            assert!(pair.public_key_pem.starts_with("-----BEGIN PUBLIC KEY-----"));

            let (_, public_pem) = x509_parser::pem::parse_x509_pem(pair.public_key_pem.as_bytes()).unwrap();
            let (_, spki) = SubjectPublicKeyInfo::from_der(&public_pem.contents).unwrap();
            assert_eq!(spki.algorithm.algorithm, expected_oid);

            let private = rcgen::KeyPair::from_pem(&pair.private_key_pem).unwrap();
            assert_eq!(spki.subject_public_key.data.as_ref(), private.public_key_raw());

            let rebuilt = ServiceAccountKeyPair::from_private_key_pem(&pair.private_key_pem).unwrap();
            assert_eq!(rebuilt, pair);
        }
    }
}
