//! The certificates one tenant needs, named after kubeadm's: which CA signs
//! each, its subject, SANs and usage, and the Secret it lives in. Pure and
//! deterministic: the same inputs give the same plan in the same order, so a
//! changed plan always means a changed input (etcd scaled, certSANs edited).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{CertificateRequest, CertificateUsage, PkiError};
use crate::api::TenantClusterSpec;
use crate::names::TenantNames;

/// Cluster domain of the meta cluster, the suffix of its Services' FQDNs.
pub const META_CLUSTER_DOMAIN: &str = "cluster.local";

/// Kubernetes group whose members are cluster administrators without any RBAC
/// binding; a tenant has no kubeadm RBAC, so its admin credentials use it.
const SYSTEM_MASTERS: &str = "system:masters";

/// The identity of konnectivity-server: the common name of its certificates, and the
/// user its TokenReviews are made as.
pub const KONNECTIVITY_SERVER: &str = "system:konnectivity-server";

/// What the tenant PKI is derived from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TenantPkiInputs {
    /// Tenant name and namespace, the source of every Service and Secret name.
    pub names: TenantNames,
    /// etcd members the etcd certificates name, ordinals `0..etcd_replicas`. The desired
    /// state passes the larger of the running and the wanted count (see `desired::pki_inputs`).
    pub etcd_replicas: i32,
    /// The tenant's own cluster domain (`kubernetes.default.svc.<domain>`).
    pub cluster_domain: String,
    /// The tenant's Service CIDR; its first address is the `kubernetes` Service IP.
    pub service_cidr: String,
    /// Host name or IP clients outside the meta cluster use.
    pub external_host: Option<String>,
    /// Extra apiserver SANs, each a DNS name or an IP.
    pub cert_sans: Vec<String>,
    /// Cluster domain of the meta cluster, normally [`META_CLUSTER_DOMAIN`].
    pub meta_cluster_domain: String,
}

impl TenantPkiInputs {
    /// Inputs for the tenant `names` with `spec`, in a meta cluster using [`META_CLUSTER_DOMAIN`].
    pub fn from_spec(names: TenantNames, spec: &TenantClusterSpec) -> Self {
        Self {
            names,
            etcd_replicas: spec.etcd.replicas,
            cluster_domain: spec.network.cluster_domain.clone(),
            service_cidr: spec.network.service_cidr.clone(),
            external_host: spec.network.external_host.clone(),
            cert_sans: spec.api_server.cert_sans.clone(),
            meta_cluster_domain: META_CLUSTER_DOMAIN.to_string(),
        }
    }
}

/// The tenant's certificate authorities. Each signs a disjoint set of
/// leaves, so a credential for one trust domain is useless in another.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Authority {
    /// Signs the apiserver's serving certificate and every client of the tenant API.
    Cluster,
    /// Signs the apiserver's aggregation-layer client certificate.
    FrontProxy,
    /// Signs etcd's serving/peer certificates and its clients.
    Etcd,
}

impl Authority {
    /// Every authority, in plan order.
    pub const ALL: [Authority; 3] = [Authority::Cluster, Authority::FrontProxy, Authority::Etcd];

    /// Common name of the CA certificate (kubeadm's).
    pub fn common_name(self) -> &'static str {
        match self {
            Authority::Cluster => "kubernetes",
            Authority::FrontProxy => "front-proxy-ca",
            Authority::Etcd => "etcd-ca",
        }
    }

    /// Secret holding the CA certificate and key.
    pub fn secret_name(self, names: &TenantNames) -> String {
        match self {
            Authority::Cluster => names.cluster_ca_secret(),
            Authority::FrontProxy => names.front_proxy_ca_secret(),
            Authority::Etcd => names.etcd_ca_secret(),
        }
    }
}

/// Every leaf certificate of a tenant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LeafCertificate {
    /// kube-apiserver's serving certificate.
    ApiServerServing,
    /// kube-apiserver's client certificate towards kubelets.
    ApiServerKubeletClient,
    /// kube-apiserver's client certificate towards etcd.
    ApiServerEtcdClient,
    /// kube-apiserver's client certificate towards aggregated API servers.
    FrontProxyClient,
    /// konnectivity-server's serving certificate towards the agents on the nodes.
    KonnectivityServerServing,
    /// konnectivity-server's client certificate towards its apiserver (TokenReviews of
    /// the agents' tokens).
    KonnectivityServerClient,
    /// etcd's client-facing serving certificate.
    EtcdServer,
    /// etcd's member-to-member certificate.
    EtcdPeer,
    /// The etcd liveness probe's client certificate.
    EtcdHealthcheckClient,
    /// kube-controller-manager's client certificate (embedded in its kubeconfig).
    ControllerManagerClient,
    /// kube-scheduler's client certificate (embedded in its kubeconfig).
    SchedulerClient,
    /// The tenant administrator's client certificate (embedded in the admin kubeconfigs).
    AdminClient,
}

impl LeafCertificate {
    /// Every leaf, in plan order.
    pub const ALL: [LeafCertificate; 12] = [
        LeafCertificate::ApiServerServing,
        LeafCertificate::ApiServerKubeletClient,
        LeafCertificate::ApiServerEtcdClient,
        LeafCertificate::FrontProxyClient,
        LeafCertificate::KonnectivityServerServing,
        LeafCertificate::KonnectivityServerClient,
        LeafCertificate::EtcdServer,
        LeafCertificate::EtcdPeer,
        LeafCertificate::EtcdHealthcheckClient,
        LeafCertificate::ControllerManagerClient,
        LeafCertificate::SchedulerClient,
        LeafCertificate::AdminClient,
    ];

    /// The CA that signs this leaf.
    pub fn signer(self) -> Authority {
        match self {
            LeafCertificate::ApiServerServing
            | LeafCertificate::ApiServerKubeletClient
            | LeafCertificate::KonnectivityServerServing
            | LeafCertificate::KonnectivityServerClient
            | LeafCertificate::ControllerManagerClient
            | LeafCertificate::SchedulerClient
            | LeafCertificate::AdminClient => Authority::Cluster,
            LeafCertificate::FrontProxyClient => Authority::FrontProxy,
            LeafCertificate::ApiServerEtcdClient
            | LeafCertificate::EtcdServer
            | LeafCertificate::EtcdPeer
            | LeafCertificate::EtcdHealthcheckClient => Authority::Etcd,
        }
    }

    /// Secret the leaf is stored in. The controller-manager, scheduler and admin client
    /// certificates live inside their kubeconfig Secrets (the admin one in
    /// both the external and the in-cluster kubeconfig; this names the external one).
    pub fn secret_name(self, names: &TenantNames) -> String {
        match self {
            LeafCertificate::ApiServerServing => names.apiserver_serving_secret(),
            LeafCertificate::ApiServerKubeletClient => names.apiserver_kubelet_client_secret(),
            LeafCertificate::ApiServerEtcdClient => names.apiserver_etcd_client_secret(),
            LeafCertificate::FrontProxyClient => names.front_proxy_client_secret(),
            LeafCertificate::KonnectivityServerServing => names.konnectivity_server_serving_secret(),
            LeafCertificate::KonnectivityServerClient => names.konnectivity_server_client_secret(),
            LeafCertificate::EtcdServer => names.etcd_server_secret(),
            LeafCertificate::EtcdPeer => names.etcd_peer_secret(),
            LeafCertificate::EtcdHealthcheckClient => names.etcd_healthcheck_client_secret(),
            LeafCertificate::ControllerManagerClient => names.controller_manager_kubeconfig_secret(),
            LeafCertificate::SchedulerClient => names.scheduler_kubeconfig_secret(),
            LeafCertificate::AdminClient => names.admin_kubeconfig_secret(),
        }
    }
}

/// A CA in the plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedAuthority {
    /// Which CA.
    pub authority: Authority,
    /// Secret holding its certificate and key.
    pub secret_name: String,
    /// Common name to generate it with.
    pub common_name: &'static str,
}

/// A leaf certificate in the plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedCertificate {
    /// Which leaf.
    pub certificate: LeafCertificate,
    /// Secret it is stored in (see [`LeafCertificate::secret_name`]).
    pub secret_name: String,
    /// CA that signs it.
    pub signer: Authority,
    /// What it must say; compare a stored leaf with [`crate::pki::renewal_reason`].
    pub request: CertificateRequest,
}

/// Everything the tenant PKI consists of. Built only by [`TenantPkiPlan::new`],
/// which lists every authority and leaf exactly once, in `ALL` order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TenantPkiPlan {
    authorities: Vec<PlannedAuthority>,
    certificates: Vec<PlannedCertificate>,
    service_account_key_secret: String,
    kubernetes_service_ip: IpAddr,
}

impl TenantPkiPlan {
    /// Plans the tenant PKI. Fails on inputs that cannot make valid
    /// certificates: a bad Service CIDR, a SAN that is neither IP nor DNS
    /// name, or no etcd member.
    pub fn new(inputs: &TenantPkiInputs) -> Result<Self, PkiError> {
        if inputs.etcd_replicas < 1 {
            return Err(PkiError::InvalidEtcdReplicas { replicas: inputs.etcd_replicas });
        }
        let names = &inputs.names;
        let kubernetes_service_ip = kubernetes_service_ip(&inputs.service_cidr)?;
        let apiserver_serving = apiserver_serving_request(inputs, kubernetes_service_ip)?;
        let etcd_names = etcd_alternative_names(inputs);

        let request_for = |certificate: LeafCertificate| match certificate {
            LeafCertificate::ApiServerServing => apiserver_serving.clone(),
            LeafCertificate::ApiServerKubeletClient => {
                CertificateRequest::client("kube-apiserver-kubelet-client", Some(SYSTEM_MASTERS))
            }
            LeafCertificate::ApiServerEtcdClient => {
                CertificateRequest::client("kube-apiserver-etcd-client", None)
            }
            LeafCertificate::FrontProxyClient => CertificateRequest::client("front-proxy-client", None),
            // The agents dial the tenant endpoint's host (the external host) and verify
            // the server against the tenant CA: the apiserver's names, another identity.
            LeafCertificate::KonnectivityServerServing => {
                CertificateRequest { common_name: KONNECTIVITY_SERVER.into(), ..apiserver_serving.clone() }
            }
            // Bound to system:auth-delegator inside the tenant (tenant_api::tunnel).
            LeafCertificate::KonnectivityServerClient => {
                CertificateRequest::client(KONNECTIVITY_SERVER, None)
            }
            LeafCertificate::EtcdServer | LeafCertificate::EtcdPeer => CertificateRequest {
                common_name: names.etcd(),
                organization: None,
                dns_names: etcd_names.clone(),
                ip_addresses: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
                usage: CertificateUsage::ServerAndClient,
            },
            LeafCertificate::EtcdHealthcheckClient => {
                CertificateRequest::client("kube-etcd-healthcheck-client", None)
            }
            LeafCertificate::ControllerManagerClient => {
                CertificateRequest::client("system:kube-controller-manager", None)
            }
            // The name the apiserver's bootstrap RBAC binds the scheduler's roles to.
            LeafCertificate::SchedulerClient => CertificateRequest::client("system:kube-scheduler", None),
            LeafCertificate::AdminClient => CertificateRequest::client("nestor-admin", Some(SYSTEM_MASTERS)),
        };

        Ok(Self {
            authorities: Authority::ALL
                .into_iter()
                .map(|authority| PlannedAuthority {
                    authority,
                    secret_name: authority.secret_name(names),
                    common_name: authority.common_name(),
                })
                .collect(),
            certificates: LeafCertificate::ALL
                .into_iter()
                .map(|certificate| PlannedCertificate {
                    certificate,
                    secret_name: certificate.secret_name(names),
                    signer: certificate.signer(),
                    request: request_for(certificate),
                })
                .collect(),
            service_account_key_secret: names.service_account_key_secret(),
            kubernetes_service_ip,
        })
    }

    /// The CAs, in [`Authority::ALL`] order.
    pub fn authorities(&self) -> &[PlannedAuthority] {
        &self.authorities
    }

    /// The leaves, in [`LeafCertificate::ALL`] order.
    pub fn certificates(&self) -> &[PlannedCertificate] {
        &self.certificates
    }

    /// The planned entry of one leaf.
    pub fn certificate(&self, certificate: LeafCertificate) -> &PlannedCertificate {
        // `new` builds the list from `ALL`, whose order is the enum's declaration order.
        &self.certificates[certificate as usize]
    }

    /// Secret holding the service-account signing key pair.
    pub fn service_account_key_secret(&self) -> &str {
        &self.service_account_key_secret
    }

    /// Cluster IP of the tenant's `kubernetes` Service.
    pub fn kubernetes_service_ip(&self) -> IpAddr {
        self.kubernetes_service_ip
    }
}

/// The first address of the (first, when dual-stack) Service CIDR, which the
/// tenant apiserver gives its own `kubernetes` Service.
pub fn kubernetes_service_ip(service_cidr: &str) -> Result<IpAddr, PkiError> {
    let invalid =
        |reason: &str| PkiError::InvalidServiceCidr { cidr: service_cidr.to_string(), reason: reason.into() };
    let primary = service_cidr.split(',').next().unwrap_or_default().trim();
    let (address, prefix) = primary.split_once('/').ok_or_else(|| invalid("expected <address>/<prefix>"))?;
    let address: IpAddr = address.parse().map_err(|_| invalid("the address is not an IP address"))?;
    let prefix: u32 = prefix.parse().map_err(|_| invalid("the prefix length is not a number"))?;
    match address {
        IpAddr::V4(v4) => {
            if prefix > 31 {
                return Err(invalid("an IPv4 prefix must be at most 31 to leave room for a Service IP"));
            }
            let network = u32::from(v4) & mask_v4(prefix);
            Ok(IpAddr::V4(Ipv4Addr::from(network + 1)))
        }
        IpAddr::V6(v6) => {
            if prefix > 127 {
                return Err(invalid("an IPv6 prefix must be at most 127 to leave room for a Service IP"));
            }
            let network = u128::from(v6) & mask_v6(prefix);
            Ok(IpAddr::V6(Ipv6Addr::from(network + 1)))
        }
    }
}

fn mask_v4(prefix: u32) -> u32 {
    u32::MAX.checked_shl(32 - prefix).unwrap_or(0)
}

fn mask_v6(prefix: u32) -> u128 {
    u128::MAX.checked_shl(128 - prefix).unwrap_or(0)
}

/// A user-supplied SAN, sorted into its kind.
enum AlternativeName {
    Dns(String),
    Ip(IpAddr),
}

/// Reads `value` as an IP (IPv6 with or without brackets) or else a DNS name
/// (letters, digits, hyphens, dots, an optional leading `*.` wildcard).
fn classify_alternative_name(value: &str) -> Result<AlternativeName, PkiError> {
    let unbracketed = value.strip_prefix('[').and_then(|v| v.strip_suffix(']')).unwrap_or(value);
    if let Ok(ip) = unbracketed.parse::<IpAddr>() {
        return Ok(AlternativeName::Ip(ip));
    }
    let host = value.strip_prefix("*.").unwrap_or(value);
    let valid_label = |label: &str| {
        (1..=63).contains(&label.len())
            && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    if value.len() <= 253 && host.split('.').all(valid_label) {
        Ok(AlternativeName::Dns(value.to_string()))
    } else {
        Err(PkiError::InvalidSubjectAlternativeName { value: value.to_string() })
    }
}

/// The four names a meta-cluster Service answers to, shortest first.
fn service_dns_names(service: &str, namespace: &str, meta_cluster_domain: &str) -> [String; 4] {
    [
        service.to_string(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.{meta_cluster_domain}"),
    ]
}

fn push_unique<T: PartialEq>(list: &mut Vec<T>, value: T) {
    if !list.contains(&value) {
        list.push(value);
    }
}

fn apiserver_serving_request(
    inputs: &TenantPkiInputs,
    kubernetes_service_ip: IpAddr,
) -> Result<CertificateRequest, PkiError> {
    let names = &inputs.names;
    let mut dns_names = Vec::new();
    let mut ip_addresses = vec![kubernetes_service_ip, IpAddr::V4(Ipv4Addr::LOCALHOST)];
    // How pods inside the tenant reach their apiserver.
    for name in [
        "kubernetes".to_string(),
        "kubernetes.default".to_string(),
        "kubernetes.default.svc".to_string(),
        format!("kubernetes.default.svc.{}", inputs.cluster_domain),
        "localhost".to_string(),
    ] {
        push_unique(&mut dns_names, name);
    }
    // How the controller-manager and in-meta-cluster clients reach it.
    for name in service_dns_names(&names.apiserver(), &names.namespace, &inputs.meta_cluster_domain) {
        push_unique(&mut dns_names, name);
    }
    // How clients outside the meta cluster reach it.
    for value in inputs.external_host.iter().chain(&inputs.cert_sans) {
        match classify_alternative_name(value)? {
            AlternativeName::Dns(name) => push_unique(&mut dns_names, name),
            AlternativeName::Ip(ip) => push_unique(&mut ip_addresses, ip),
        }
    }
    Ok(CertificateRequest {
        common_name: "kube-apiserver".into(),
        organization: None,
        dns_names,
        ip_addresses,
        usage: CertificateUsage::Server,
    })
}

/// DNS SANs of the etcd server and peer certificates: each current member
/// (short and fully qualified), the headless Service, and localhost.
fn etcd_alternative_names(inputs: &TenantPkiInputs) -> Vec<String> {
    let names = &inputs.names;
    let mut dns_names = Vec::new();
    for ordinal in 0..inputs.etcd_replicas {
        let member = names.etcd_member_host(ordinal);
        push_unique(&mut dns_names, format!("{member}.{}", inputs.meta_cluster_domain));
        push_unique(&mut dns_names, member);
    }
    for name in service_dns_names(&names.etcd(), &names.namespace, &inputs.meta_cluster_domain) {
        push_unique(&mut dns_names, name);
    }
    push_unique(&mut dns_names, "localhost".to_string());
    dns_names
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::time::Duration;

    use super::*;
    use crate::pki::test_support::{self, now};
    use crate::pki::{CA_VALIDITY, CertificateAuthority, KeyAlgorithm, issue};

    fn inputs() -> TenantPkiInputs {
        TenantPkiInputs {
            names: TenantNames::new("team-a", "tenants"),
            etcd_replicas: 3,
            cluster_domain: "tenant.local".into(),
            service_cidr: "10.96.0.0/12".into(),
            external_host: Some("team-a.example.com".into()),
            cert_sans: vec!["192.0.2.10".into(), "api.team-a.example.com".into()],
            meta_cluster_domain: META_CLUSTER_DOMAIN.into(),
        }
    }

    fn strings(values: &[&str]) -> Vec<String> {
        values.iter().map(|value| value.to_string()).collect()
    }

    #[test]
    fn kubernetes_service_ip_is_the_first_address_of_the_network() {
        let ip = |cidr| kubernetes_service_ip(cidr).unwrap().to_string();
        assert_eq!(ip("10.96.0.0/12"), "10.96.0.1");
        assert_eq!(ip("10.100.7.9/16"), "10.100.0.1", "host bits are masked off");
        assert_eq!(ip("172.20.0.0/31"), "172.20.0.1");
        assert_eq!(ip("0.0.0.0/0"), "0.0.0.1");
        assert_eq!(ip("fd00:10:96::/108"), "fd00:10:96::1");
        assert_eq!(ip("10.96.0.0/12,fd00::/108"), "10.96.0.1", "dual-stack: the primary family");
        for bad in ["10.96.0.0", "10.96.0.0/33", "10.96.0.0/32", "banana/12", "10.96.0.0/x", "::/128", ""] {
            let result = kubernetes_service_ip(bad);
            assert!(
                matches!(result, Err(PkiError::InvalidServiceCidr { ref cidr, .. }) if cidr == bad),
                "{bad}: {result:?}"
            );
        }
    }

    #[test]
    fn plan_lists_every_ca_and_leaf_with_its_signer_and_secret() {
        let plan = TenantPkiPlan::new(&inputs()).unwrap();
        let authorities: Vec<_> =
            plan.authorities().iter().map(|a| (a.common_name, a.secret_name.as_str())).collect();
        assert_eq!(
            authorities,
            [
                ("kubernetes", "team-a-ca"),
                ("front-proxy-ca", "team-a-front-proxy-ca"),
                ("etcd-ca", "team-a-etcd-ca")
            ]
        );
        assert_eq!(plan.service_account_key_secret(), "team-a-sa");

        let leaves: Vec<_> = plan
            .certificates()
            .iter()
            .map(|c| {
                (
                    c.request.common_name.as_str(),
                    c.request.organization.as_deref(),
                    c.signer,
                    c.secret_name.as_str(),
                )
            })
            .collect();
        assert_eq!(
            leaves,
            [
                ("kube-apiserver", None, Authority::Cluster, "team-a-apiserver-serving"),
                (
                    "kube-apiserver-kubelet-client",
                    Some("system:masters"),
                    Authority::Cluster,
                    "team-a-apiserver-kubelet-client"
                ),
                ("kube-apiserver-etcd-client", None, Authority::Etcd, "team-a-apiserver-etcd-client"),
                ("front-proxy-client", None, Authority::FrontProxy, "team-a-front-proxy-client"),
                ("system:konnectivity-server", None, Authority::Cluster, "team-a-konnectivity-server"),
                ("system:konnectivity-server", None, Authority::Cluster, "team-a-konnectivity-client"),
                ("team-a-etcd", None, Authority::Etcd, "team-a-etcd-server"),
                ("team-a-etcd", None, Authority::Etcd, "team-a-etcd-peer"),
                ("kube-etcd-healthcheck-client", None, Authority::Etcd, "team-a-etcd-healthcheck-client"),
                (
                    "system:kube-controller-manager",
                    None,
                    Authority::Cluster,
                    "team-a-controller-manager-kubeconfig"
                ),
                ("system:kube-scheduler", None, Authority::Cluster, "team-a-scheduler-kubeconfig"),
                ("nestor-admin", Some("system:masters"), Authority::Cluster, "team-a-kubeconfig"),
            ]
        );
        for certificate in LeafCertificate::ALL {
            assert_eq!(plan.certificate(certificate).certificate, certificate);
        }
    }

    #[test]
    fn usages_follow_the_role_of_each_certificate() {
        let plan = TenantPkiPlan::new(&inputs()).unwrap();
        for planned in plan.certificates() {
            let expected = match planned.certificate {
                LeafCertificate::ApiServerServing | LeafCertificate::KonnectivityServerServing => {
                    CertificateUsage::Server
                }
                LeafCertificate::EtcdServer | LeafCertificate::EtcdPeer => CertificateUsage::ServerAndClient,
                _ => CertificateUsage::Client,
            };
            assert_eq!(planned.request.usage, expected, "{:?}", planned.certificate);
            if expected == CertificateUsage::Client {
                assert!(planned.request.dns_names.is_empty() && planned.request.ip_addresses.is_empty());
            }
        }
    }

    #[test]
    fn the_konnectivity_server_serves_the_agents_under_the_apiservers_names() {
        let plan = TenantPkiPlan::new(&inputs()).unwrap();
        let apiserver = &plan.certificate(LeafCertificate::ApiServerServing).request;
        let tunnel = &plan.certificate(LeafCertificate::KonnectivityServerServing).request;
        assert_eq!(tunnel.common_name, KONNECTIVITY_SERVER);
        assert_eq!(tunnel.dns_names, apiserver.dns_names, "agents dial the tenant endpoint's host");
        assert_eq!(tunnel.ip_addresses, apiserver.ip_addresses);
        let client = &plan.certificate(LeafCertificate::KonnectivityServerClient).request;
        assert_eq!(client.common_name, KONNECTIVITY_SERVER, "the user bound to system:auth-delegator");
    }

    #[test]
    fn apiserver_serving_sans_cover_tenant_meta_and_external_names() {
        let plan = TenantPkiPlan::new(&inputs()).unwrap();
        let request = &plan.certificate(LeafCertificate::ApiServerServing).request;
        assert_eq!(
            request.dns_names,
            strings(&[
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.tenant.local",
                "localhost",
                "team-a-apiserver",
                "team-a-apiserver.tenants",
                "team-a-apiserver.tenants.svc",
                "team-a-apiserver.tenants.svc.cluster.local",
                "team-a.example.com",
                "api.team-a.example.com",
            ])
        );
        let ips: Vec<IpAddr> = ["10.96.0.1", "127.0.0.1", "192.0.2.10"].map(|ip| ip.parse().unwrap()).into();
        assert_eq!(request.ip_addresses, ips);
        assert_eq!(plan.kubernetes_service_ip(), ips[0]);
    }

    #[test]
    fn external_host_may_be_an_ip_and_duplicates_are_written_once() {
        let inputs = TenantPkiInputs {
            external_host: Some("[2001:db8::1]".into()),
            cert_sans: strings(&["2001:db8::1", "localhost", "*.apps.example.com"]),
            ..inputs()
        };
        let plan = TenantPkiPlan::new(&inputs).unwrap();
        let request = &plan.certificate(LeafCertificate::ApiServerServing).request;
        assert_eq!(request.ip_addresses.last(), Some(&"2001:db8::1".parse().unwrap()));
        assert_eq!(request.ip_addresses.len(), 3);
        assert_eq!(request.dns_names.iter().filter(|name| *name == "localhost").count(), 1);
        assert_eq!(request.dns_names.last().map(String::as_str), Some("*.apps.example.com"));
    }

    #[test]
    fn invalid_sans_and_replicas_are_rejected() {
        for bad in ["has space.example.com", "under_score.example", "-leading.example", "a..b", ""] {
            let inputs = TenantPkiInputs { cert_sans: vec![bad.to_string()], ..inputs() };
            let result = TenantPkiPlan::new(&inputs);
            assert!(
                matches!(result, Err(PkiError::InvalidSubjectAlternativeName { ref value }) if value == bad),
                "{bad:?}: {result:?}"
            );
        }
        let result = TenantPkiPlan::new(&TenantPkiInputs { etcd_replicas: 0, ..inputs() });
        assert!(matches!(result, Err(PkiError::InvalidEtcdReplicas { replicas: 0 })));
    }

    #[test]
    fn etcd_sans_name_exactly_the_current_members() {
        let plan = TenantPkiPlan::new(&inputs()).unwrap();
        let server = &plan.certificate(LeafCertificate::EtcdServer).request;
        let peer = &plan.certificate(LeafCertificate::EtcdPeer).request;
        assert_eq!(server.dns_names, peer.dns_names);
        assert_eq!(
            server.dns_names,
            strings(&[
                "team-a-etcd-0.team-a-etcd.tenants.svc.cluster.local",
                "team-a-etcd-0.team-a-etcd.tenants.svc",
                "team-a-etcd-1.team-a-etcd.tenants.svc.cluster.local",
                "team-a-etcd-1.team-a-etcd.tenants.svc",
                "team-a-etcd-2.team-a-etcd.tenants.svc.cluster.local",
                "team-a-etcd-2.team-a-etcd.tenants.svc",
                "team-a-etcd",
                "team-a-etcd.tenants",
                "team-a-etcd.tenants.svc",
                "team-a-etcd.tenants.svc.cluster.local",
                "localhost",
            ])
        );
        assert_eq!(server.ip_addresses, ["127.0.0.1".parse::<IpAddr>().unwrap()]);

        let scaled = TenantPkiPlan::new(&TenantPkiInputs { etcd_replicas: 5, ..inputs() }).unwrap();
        let scaled_names = &scaled.certificate(LeafCertificate::EtcdServer).request.dns_names;
        assert_eq!(scaled_names.len(), server.dns_names.len() + 4);
        assert!(scaled_names.contains(&"team-a-etcd-4.team-a-etcd.tenants.svc".to_string()));
    }

    #[test]
    fn plan_is_deterministic() {
        assert_eq!(TenantPkiPlan::new(&inputs()).unwrap(), TenantPkiPlan::new(&inputs()).unwrap());
    }

    #[test]
    fn inputs_from_spec_read_the_network_and_etcd_settings() {
        let spec: TenantClusterSpec = serde_json::from_value(serde_json::json!({
            "version": "1.34.2",
            "etcd": {"replicas": 5},
            "apiServer": {"certSANs": ["api.example.com"]},
            "network": {"externalHost": "203.0.113.7", "serviceCIDR": "10.0.0.0/16", "clusterDomain": "t.local"},
        }))
        .unwrap();
        let inputs = TenantPkiInputs::from_spec(TenantNames::new("team-a", "tenants"), &spec);
        assert_eq!(inputs.etcd_replicas, 5);
        assert_eq!(inputs.service_cidr, "10.0.0.0/16");
        assert_eq!(inputs.cluster_domain, "t.local");
        assert_eq!(inputs.external_host.as_deref(), Some("203.0.113.7"));
        assert_eq!(inputs.cert_sans, ["api.example.com"]);
        assert_eq!(inputs.meta_cluster_domain, "cluster.local");
    }

    /// Issues the whole plan and checks every leaf with x509-parser against
    /// the CA that the plan says signs it, for both algorithms.
    #[test]
    fn issuing_the_whole_plan_gives_certificates_that_chain_to_their_planned_ca() {
        let plan = TenantPkiPlan::new(&inputs()).unwrap();
        let validity = Duration::from_secs(8760 * 3600);
        for algorithm in [KeyAlgorithm::EcdsaP256, KeyAlgorithm::Rsa2048] {
            let started = std::time::Instant::now();
            let authorities: Vec<(Authority, CertificateAuthority)> = plan
                .authorities()
                .iter()
                .map(|planned| {
                    let ca =
                        CertificateAuthority::generate(planned.common_name, algorithm, CA_VALIDITY, now());
                    (planned.authority, ca.unwrap())
                })
                .collect();
            let ca_of = |authority: Authority| &authorities.iter().find(|(a, _)| *a == authority).unwrap().1;
            let issued: Vec<_> = plan
                .certificates()
                .iter()
                .map(|planned| {
                    issue(ca_of(planned.signer), &planned.request, algorithm, validity, now()).unwrap()
                })
                .collect();
            eprintln!("{algorithm:?}: whole tenant PKI in {:?}", started.elapsed());

            for (planned, leaf) in plan.certificates().iter().zip(&issued) {
                let context = format!("{algorithm:?} {:?}", planned.certificate);
                test_support::assert_signed_by(&leaf.cert_pem, ca_of(planned.signer).cert_pem());
                for other in Authority::ALL.into_iter().filter(|a| *a != planned.signer) {
                    assert_eq!(
                        crate::pki::renewal_reason(
                            Some(&leaf.cert_pem),
                            Some(&leaf.key_pem),
                            ca_of(other),
                            &planned.request,
                            Duration::ZERO,
                            now()
                        ),
                        Some(crate::pki::RenewalReason::IssuerMismatch),
                        "{context} must not verify under {other:?}"
                    );
                }
                let (dns, ips) = test_support::sans(&leaf.cert_pem);
                let expected_dns: BTreeSet<_> = planned.request.dns_names.iter().cloned().collect();
                let expected_ips: BTreeSet<_> = planned.request.ip_addresses.iter().copied().collect();
                assert_eq!(dns.into_iter().collect::<BTreeSet<_>>(), expected_dns, "{context}");
                assert_eq!(ips.into_iter().collect::<BTreeSet<_>>(), expected_ips, "{context}");
                assert_eq!(
                    test_support::extended_key_usage(&leaf.cert_pem),
                    (planned.request.usage.server_auth(), planned.request.usage.client_auth()),
                    "{context}"
                );
                let (common_name, organizations) = test_support::subject(&leaf.cert_pem);
                assert_eq!(common_name, planned.request.common_name, "{context}");
                assert_eq!(organizations, planned.request.organization.iter().cloned().collect::<Vec<_>>());
                test_support::with_certificate(&leaf.cert_pem, |certificate| {
                    let constraints = certificate.basic_constraints().unwrap().expect("basicConstraints");
                    assert!(!constraints.value.ca, "{context} is no CA");
                    let key_usage = certificate.key_usage().unwrap().expect("keyUsage").value;
                    assert!(key_usage.digital_signature(), "{context}");
                    // Only RSA keys encipher (TLS 1.2 RSA key exchange); a leaf never signs
                    // certificates or CRLs.
                    assert_eq!(key_usage.key_encipherment(), algorithm == KeyAlgorithm::Rsa2048, "{context}");
                    assert!(!key_usage.key_cert_sign() && !key_usage.crl_sign(), "{context}");
                    assert!(!key_usage.non_repudiation() && !key_usage.key_agreement(), "{context}");
                    assert!(!key_usage.data_encipherment(), "{context}");
                });
                // Valid from `now` less the clock-skew allowance, for exactly `validity`.
                let (not_before, not_after) = test_support::validity(&leaf.cert_pem);
                assert!(not_before <= now(), "{context}");
                assert_eq!(
                    not_before,
                    now().checked_sub(crate::pki::CLOCK_SKEW_ALLOWANCE).unwrap(),
                    "{context}"
                );
                assert_eq!(not_after, now().checked_add(validity).unwrap(), "{context}");
                assert_eq!(leaf.not_after, not_after, "{context}");
                assert_eq!(
                    crate::pki::renewal_reason(
                        Some(&leaf.cert_pem),
                        Some(&leaf.key_pem),
                        ca_of(planned.signer),
                        &planned.request,
                        Duration::from_secs(720 * 3600),
                        now()
                    ),
                    None,
                    "{context}"
                );
            }
        }
    }
}
