//! Leaf certificates: what a certificate must say ([`CertificateRequest`]) and
//! issuing one under a CA ([`issue`]). Every issue generates a fresh key.

use std::net::IpAddr;
use std::time::Duration;

use jiff::Timestamp;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose, SanType,
};

use super::{CertificateAuthority, KeyAlgorithm, PkiError};

/// What a leaf certificate is used for in TLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CertificateUsage {
    /// A TLS server (extended key usage serverAuth).
    Server,
    /// A TLS client (clientAuth).
    Client,
    /// Both, as etcd members are to each other (serverAuth and clientAuth).
    ServerAndClient,
}

impl CertificateUsage {
    /// Whether the certificate must carry serverAuth.
    pub fn server_auth(self) -> bool {
        matches!(self, CertificateUsage::Server | CertificateUsage::ServerAndClient)
    }

    /// Whether the certificate must carry clientAuth.
    pub fn client_auth(self) -> bool {
        matches!(self, CertificateUsage::Client | CertificateUsage::ServerAndClient)
    }
}

/// The identity and names a leaf certificate must carry. Kubernetes reads a
/// client certificate's CN as the user name and its O as the group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateRequest {
    /// Subject common name.
    pub common_name: String,
    /// Subject organization (the Kubernetes group of a client), if any. One at
    /// most: rcgen writes a single attribute per type, and no tenant
    /// credential needs two groups.
    pub organization: Option<String>,
    /// DNS subject alternative names, in the order they are written.
    pub dns_names: Vec<String>,
    /// IP subject alternative names, in the order they are written.
    pub ip_addresses: Vec<IpAddr>,
    /// TLS role of the certificate.
    pub usage: CertificateUsage,
}

impl CertificateRequest {
    /// A client certificate: no SANs.
    pub fn client(common_name: impl Into<String>, organization: Option<&str>) -> Self {
        Self {
            common_name: common_name.into(),
            organization: organization.map(str::to_string),
            dns_names: Vec::new(),
            ip_addresses: Vec::new(),
            usage: CertificateUsage::Client,
        }
    }

    fn params(&self, algorithm: KeyAlgorithm) -> Result<CertificateParams, PkiError> {
        let mut params = CertificateParams::default();
        let mut subject = DistinguishedName::new();
        // O before CN, the order Go's crypto/x509 writes, so `openssl x509 -subject` reads as usual.
        if let Some(organization) = &self.organization {
            subject.push(DnType::OrganizationName, organization.as_str());
        }
        subject.push(DnType::CommonName, self.common_name.as_str());
        params.distinguished_name = subject;

        for dns_name in &self.dns_names {
            let ia5 = dns_name
                .clone()
                .try_into()
                .map_err(|_| PkiError::InvalidSubjectAlternativeName { value: dns_name.clone() })?;
            params.subject_alt_names.push(SanType::DnsName(ia5));
        }
        params.subject_alt_names.extend(self.ip_addresses.iter().copied().map(SanType::IpAddress));

        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        // RSA key exchange (TLS 1.2 without forward secrecy) encrypts with the
        // key; an EC key never does, so it does not claim the usage.
        if algorithm == KeyAlgorithm::Rsa2048 {
            params.key_usages.push(KeyUsagePurpose::KeyEncipherment);
        }
        if self.usage.server_auth() {
            params.extended_key_usages.push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        if self.usage.client_auth() {
            params.extended_key_usages.push(ExtendedKeyUsagePurpose::ClientAuth);
        }
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(super::random_serial_number());
        Ok(params)
    }
}

/// A freshly issued leaf: certificate and key, PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedCertificate {
    /// Leaf certificate, PEM (`tls.crt`).
    pub cert_pem: String,
    /// PKCS#8 private key, PEM (`tls.key`).
    pub key_pem: String,
    /// End of validity, for status.
    pub not_after: Timestamp,
}

impl std::fmt::Debug for IssuedCertificate {
    // The private key stays out of logs.
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("IssuedCertificate")
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// Issues `request` under `ca` with a new `algorithm` key, valid from `now`
/// (less a clock-skew allowance) for `validity`. The leaf may outlive its CA;
/// capping it would make a CA near its end re-issue leaves on every pass.
pub fn issue(
    ca: &CertificateAuthority,
    request: &CertificateRequest,
    algorithm: KeyAlgorithm,
    validity: Duration,
    now: Timestamp,
) -> Result<IssuedCertificate, PkiError> {
    let mut params = request.params(algorithm)?;
    let (not_before, not_after) = super::validity_window(now, validity)?;
    params.not_before = not_before;
    params.not_after = not_after;

    let key = algorithm.generate_key_pair()?;
    let issuer = ca.issuer()?;
    let certificate = params
        .signed_by(&key, &issuer)
        .map_err(|source| PkiError::Signing { common_name: request.common_name.clone(), source })?;
    Ok(IssuedCertificate {
        cert_pem: certificate.pem(),
        key_pem: key.serialize_pem(),
        not_after: Timestamp::from_second(not_after.unix_timestamp())
            .map_err(|_| PkiError::ValidityOutOfRange { now, validity })?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::test_support::{self, now, with_certificate};
    use crate::pki::{CA_VALIDITY, KeyAlgorithm};

    fn serving_request() -> CertificateRequest {
        CertificateRequest {
            common_name: "kube-apiserver".into(),
            organization: None,
            dns_names: vec!["kubernetes".into(), "api.example.com".into()],
            ip_addresses: vec!["10.96.0.1".parse().unwrap(), "::1".parse().unwrap()],
            usage: CertificateUsage::Server,
        }
    }

    #[test]
    fn issued_leaf_chains_to_its_ca_with_the_requested_names_for_both_algorithms() {
        for algorithm in [KeyAlgorithm::EcdsaP256, KeyAlgorithm::Rsa2048] {
            let ca = CertificateAuthority::generate("kubernetes", algorithm, CA_VALIDITY, now()).unwrap();
            let validity = Duration::from_secs(8760 * 3600);
            let leaf = issue(&ca, &serving_request(), algorithm, validity, now()).unwrap();

            test_support::assert_signed_by(&leaf.cert_pem, ca.cert_pem());
            let (dns, ips) = test_support::sans(&leaf.cert_pem);
            assert_eq!(dns, ["api.example.com", "kubernetes"]);
            assert_eq!(ips, ["10.96.0.1".parse::<IpAddr>().unwrap(), "::1".parse().unwrap()]);
            assert_eq!(test_support::subject(&leaf.cert_pem), ("kube-apiserver".to_string(), vec![]));
            assert_eq!(test_support::extended_key_usage(&leaf.cert_pem), (true, false));

            let (not_before, not_after) = test_support::validity(&leaf.cert_pem);
            assert!(not_before <= now());
            assert!(now().duration_since(not_before).as_secs() <= 600, "backdated by minutes, not more");
            assert_eq!(not_after, now().checked_add(validity).unwrap());
            assert_eq!(leaf.not_after, not_after);

            with_certificate(&leaf.cert_pem, |certificate| {
                let constraints = certificate.basic_constraints().unwrap().expect("basicConstraints");
                assert!(!constraints.value.ca);
                let key_usage = certificate.key_usage().unwrap().expect("keyUsage").value;
                assert!(key_usage.digital_signature());
                assert!(!key_usage.key_cert_sign());
                assert_eq!(key_usage.key_encipherment(), algorithm == KeyAlgorithm::Rsa2048);
                let has_authority_key_identifier = certificate.iter_extensions().any(|extension| {
                    matches!(
                        extension.parsed_extension(),
                        x509_parser::extensions::ParsedExtension::AuthorityKeyIdentifier(_)
                    )
                });
                assert!(has_authority_key_identifier, "AKI links the chain");
            });
            let key = rcgen::KeyPair::from_pem(&leaf.key_pem).unwrap();
            with_certificate(&leaf.cert_pem, |certificate| {
                assert!(crate::pki::key_matches_certificate(&key, certificate));
            });
        }
    }

    #[test]
    fn client_certificates_carry_user_and_group_and_no_sans() {
        let ca = CertificateAuthority::generate("kubernetes", KeyAlgorithm::EcdsaP256, CA_VALIDITY, now())
            .unwrap();
        let request = CertificateRequest::client("nestor-admin", Some("system:masters"));
        let leaf = issue(&ca, &request, KeyAlgorithm::EcdsaP256, CA_VALIDITY, now()).unwrap();
        assert_eq!(
            test_support::subject(&leaf.cert_pem),
            ("nestor-admin".to_string(), vec!["system:masters".to_string()])
        );
        assert_eq!(test_support::extended_key_usage(&leaf.cert_pem), (false, true));
        assert_eq!(test_support::sans(&leaf.cert_pem), (vec![], vec![]));
    }

    #[test]
    fn server_and_client_usage_sets_both_extended_key_usages() {
        let ca =
            CertificateAuthority::generate("etcd-ca", KeyAlgorithm::EcdsaP256, CA_VALIDITY, now()).unwrap();
        let request = CertificateRequest { usage: CertificateUsage::ServerAndClient, ..serving_request() };
        let leaf = issue(&ca, &request, KeyAlgorithm::EcdsaP256, CA_VALIDITY, now()).unwrap();
        assert_eq!(test_support::extended_key_usage(&leaf.cert_pem), (true, true));
    }

    #[test]
    fn a_ca_loaded_from_pem_issues_certificates_that_chain_to_it() {
        let generated =
            CertificateAuthority::generate("front-proxy-ca", KeyAlgorithm::Rsa2048, CA_VALIDITY, now())
                .unwrap();
        let loaded = CertificateAuthority::from_pem(generated.cert_pem(), generated.key_pem()).unwrap();
        let request = CertificateRequest::client("front-proxy-client", None);
        let leaf = issue(&loaded, &request, KeyAlgorithm::EcdsaP256, CA_VALIDITY, now()).unwrap();
        test_support::assert_signed_by(&leaf.cert_pem, generated.cert_pem());
    }

    #[test]
    fn non_ascii_dns_names_are_rejected() {
        let ca = CertificateAuthority::generate("kubernetes", KeyAlgorithm::EcdsaP256, CA_VALIDITY, now())
            .unwrap();
        let request = CertificateRequest { dns_names: vec!["bücher.example".into()], ..serving_request() };
        let result = issue(&ca, &request, KeyAlgorithm::EcdsaP256, CA_VALIDITY, now());
        assert!(
            matches!(result, Err(PkiError::InvalidSubjectAlternativeName { ref value }) if value == "bücher.example")
        );
    }
}
