//! Approval of kubelet serving certificates inside a tenant.
//!
//! Kubelets ask for their serving certificates through CSRs (`serverTLSBootstrap`, see
//! [`super::join`]), signed by the controller-manager with the tenant CA, so the tenant
//! apiserver can verify every kubelet it calls (`--kubelet-certificate-authority`).
//! Kubernetes approves no serving CSR by itself: a node could ask for any name or
//! address, and a certificate for another node's address would let it pose as that
//! node to the apiserver. [`decide`] approves one only when the node that asks is the
//! node it names and every name and address it asks for is one of that Node's own
//! addresses; anything else stays pending, with the reason logged.

use std::collections::BTreeSet;
use std::net::IpAddr;

use k8s_openapi::api::certificates::v1::{CertificateSigningRequest, CertificateSigningRequestCondition};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

use crate::names::FIELD_MANAGER;

/// The signer of kubelet serving certificates.
pub const KUBELET_SERVING_SIGNER: &str = "kubernetes.io/kubelet-serving";
const NODE_USER_PREFIX: &str = "system:node:";
const NODES_GROUP: &str = "system:nodes";
const ALLOWED_USAGES: [&str; 3] = ["digital signature", "key encipherment", "server auth"];

/// What to do with one serving CSR.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Every check passed.
    Approve {
        /// The node it is for.
        node: String,
    },
    /// Left pending, and why.
    Leave(String),
}

/// Whether `csr` is still waiting for a decision (neither approved nor denied).
pub fn pending(csr: &CertificateSigningRequest) -> bool {
    csr.status.as_ref().and_then(|status| status.conditions.as_ref()).is_none_or(Vec::is_empty)
}

/// The node name a serving CSR claims to come from, from its requester.
pub fn requesting_node(csr: &CertificateSigningRequest) -> Option<&str> {
    csr.spec.username.as_deref()?.strip_prefix(NODE_USER_PREFIX)
}

/// The checks (pure): the signer, the requester is a node, the subject names that node,
/// the usages are a server's, and every requested DNS name and IP is one of `node`'s
/// addresses (`None`: no Node object of that name).
pub fn decide(csr: &CertificateSigningRequest, node: Option<&Node>) -> Decision {
    let spec = &csr.spec;
    if spec.signer_name != KUBELET_SERVING_SIGNER {
        return Decision::Leave(format!("signer {} is not {KUBELET_SERVING_SIGNER}", spec.signer_name));
    }
    let Some(node_name) = requesting_node(csr) else {
        return Decision::Leave(format!(
            "requested by {:?}, not a node",
            spec.username.as_deref().unwrap_or_default()
        ));
    };
    if !spec.groups.iter().flatten().any(|group| group == NODES_GROUP) {
        return Decision::Leave(format!("requester is not in group {NODES_GROUP}"));
    }
    let usages: BTreeSet<&str> = spec.usages.iter().flatten().map(String::as_str).collect();
    if !usages.contains("server auth") || usages.iter().any(|usage| !ALLOWED_USAGES.contains(usage)) {
        return Decision::Leave(format!("usages {usages:?} are not a serving certificate's"));
    }
    let request = match parse_request(&spec.request.0) {
        Ok(request) => request,
        Err(reason) => return Decision::Leave(reason),
    };
    let wanted_cn = format!("{NODE_USER_PREFIX}{node_name}");
    if request.common_name.as_deref() != Some(wanted_cn.as_str()) || request.organizations != [NODES_GROUP] {
        return Decision::Leave(format!(
            "subject CN {:?} O {:?} is not {wanted_cn} in {NODES_GROUP}",
            request.common_name, request.organizations
        ));
    }
    let Some(node) = node else {
        return Decision::Leave(format!("no Node {node_name}"));
    };
    let addresses: BTreeSet<String> = node
        .status
        .as_ref()
        .and_then(|status| status.addresses.as_ref())
        .into_iter()
        .flatten()
        .map(|address| address.address.clone())
        .collect();
    if request.dns_names.is_empty() && request.ips.is_empty() {
        return Decision::Leave("asks for no name or address".into());
    }
    let foreign: Vec<String> = request
        .dns_names
        .iter()
        .cloned()
        .chain(request.ips.iter().map(IpAddr::to_string))
        .filter(|name| !addresses.contains(name))
        .collect();
    if !foreign.is_empty() {
        return Decision::Leave(format!(
            "asks for {} which Node {node_name} does not have",
            foreign.join(", ")
        ));
    }
    Decision::Approve { node: node_name.to_string() }
}

/// What a PKCS#10 request asks for.
#[derive(Debug, Default)]
struct RequestedNames {
    common_name: Option<String>,
    organizations: Vec<String>,
    dns_names: Vec<String>,
    ips: Vec<IpAddr>,
}

fn parse_request(pem: &[u8]) -> Result<RequestedNames, String> {
    let (_, block) =
        x509_parser::pem::parse_x509_pem(pem).map_err(|error| format!("request is not PEM: {error}"))?;
    let (_, request) =
        x509_parser::certification_request::X509CertificationRequest::from_der(&block.contents)
            .map_err(|error| format!("request is not a PKCS#10 CSR: {error}"))?;
    let subject = &request.certification_request_info.subject;
    let text = |attribute: &x509_parser::x509::AttributeTypeAndValue<'_>| {
        attribute.as_str().ok().map(str::to_string)
    };
    let mut names = RequestedNames {
        common_name: subject.iter_common_name().next().and_then(text),
        organizations: subject.iter_organization().filter_map(text).collect(),
        ..RequestedNames::default()
    };
    for extension in request.requested_extensions().into_iter().flatten() {
        if let ParsedExtension::SubjectAlternativeName(san) = extension {
            for name in &san.general_names {
                match name {
                    GeneralName::DNSName(dns) => names.dns_names.push((*dns).to_string()),
                    GeneralName::IPAddress(bytes) => match bytes.len() {
                        4 => names.ips.push(IpAddr::from(<[u8; 4]>::try_from(*bytes).unwrap_or_default())),
                        16 => names.ips.push(IpAddr::from(<[u8; 16]>::try_from(*bytes).unwrap_or_default())),
                        _ => return Err("an IP SAN of odd length".into()),
                    },
                    other => return Err(format!("asks for a SAN Nestor does not approve: {other:?}")),
                }
            }
        }
    }
    Ok(names)
}

/// Lists the tenant's pending kubelet serving CSRs and approves those [`decide`] passes.
/// Returns the decisions taken, by CSR name.
pub async fn approve_serving_csrs(client: &Client) -> Result<Vec<(String, Decision)>, kube::Error> {
    let csrs: Api<CertificateSigningRequest> = Api::all(client.clone());
    let nodes: Api<Node> = Api::all(client.clone());
    let list = csrs
        .list(&ListParams::default().fields(&format!("spec.signerName={KUBELET_SERVING_SIGNER}")))
        .await?;
    let mut decisions = Vec::new();
    for csr in list.items.into_iter().filter(pending) {
        let node = match requesting_node(&csr) {
            Some(name) => nodes.get_opt(name).await?,
            None => None,
        };
        let decision = decide(&csr, node.as_ref());
        if let Decision::Approve { node } = &decision {
            let approval = serde_json::json!({"status": {"conditions": [CertificateSigningRequestCondition {
                type_: "Approved".into(),
                status: "True".into(),
                reason: Some("NestorServingCertificateApproved".into()),
                message: Some(format!("names and addresses match Node {node}")),
                ..CertificateSigningRequestCondition::default()
            }]}});
            let params = PatchParams { field_manager: Some(FIELD_MANAGER.into()), ..PatchParams::default() };
            csrs.patch_approval(&csr.name_any(), &params, &Patch::Merge(&approval)).await?;
        }
        decisions.push((csr.name_any(), decision));
    }
    Ok(decisions)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::ByteString;
    use k8s_openapi::api::certificates::v1::CertificateSigningRequestSpec;
    use k8s_openapi::api::core::v1::{NodeAddress, NodeStatus};
    use kube::api::ObjectMeta;
    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};

    use super::*;

    /// A PKCS#10 request as a kubelet makes it, for `cn` in `organization`, asking for `sans`.
    fn request(cn: &str, organization: &str, sans: Vec<SanType>) -> Vec<u8> {
        let mut params = CertificateParams::default();
        let mut subject = DistinguishedName::new();
        subject.push(DnType::CommonName, cn);
        subject.push(DnType::OrganizationName, organization);
        params.distinguished_name = subject;
        params.subject_alt_names = sans;
        let key = KeyPair::generate().expect("key");
        params.serialize_request(&key).expect("csr").pem().expect("pem").into_bytes()
    }

    fn csr(username: &str, pem: Vec<u8>) -> CertificateSigningRequest {
        CertificateSigningRequest {
            metadata: ObjectMeta { name: Some("csr-1".into()), ..ObjectMeta::default() },
            spec: CertificateSigningRequestSpec {
                signer_name: KUBELET_SERVING_SIGNER.into(),
                username: Some(username.into()),
                groups: Some(vec![NODES_GROUP.into(), "system:authenticated".into()]),
                usages: Some(vec!["digital signature".into(), "server auth".into()]),
                request: ByteString(pem),
                ..CertificateSigningRequestSpec::default()
            },
            status: None,
        }
    }

    fn node(name: &str, addresses: &[&str]) -> Node {
        Node {
            metadata: ObjectMeta { name: Some(name.into()), ..ObjectMeta::default() },
            status: Some(NodeStatus {
                addresses: Some(
                    addresses
                        .iter()
                        .map(|address| NodeAddress {
                            type_: if address.parse::<IpAddr>().is_ok() { "InternalIP" } else { "Hostname" }
                                .into(),
                            address: (*address).into(),
                        })
                        .collect(),
                ),
                ..NodeStatus::default()
            }),
            ..Node::default()
        }
    }

    fn ip(text: &str) -> SanType {
        SanType::IpAddress(text.parse().expect("ip"))
    }

    fn dns(text: &str) -> SanType {
        SanType::DnsName(text.try_into().expect("dns"))
    }

    #[test]
    fn a_node_asking_for_its_own_names_and_addresses_is_approved() {
        let pem = request("system:node:w1", NODES_GROUP, vec![dns("w1"), ip("10.202.1.2")]);
        let decision = decide(&csr("system:node:w1", pem), Some(&node("w1", &["10.202.1.2", "w1"])));
        assert_eq!(decision, Decision::Approve { node: "w1".into() });
    }

    #[test]
    fn another_nodes_address_or_name_is_not_approved() {
        let w1 = node("w1", &["10.202.1.2", "w1"]);
        let foreign_ip = request("system:node:w1", NODES_GROUP, vec![dns("w1"), ip("10.202.2.2")]);
        let decision = decide(&csr("system:node:w1", foreign_ip), Some(&w1));
        assert!(
            matches!(&decision, Decision::Leave(reason) if reason.contains("10.202.2.2")),
            "{decision:?}"
        );
        let foreign_name = request("system:node:w1", NODES_GROUP, vec![dns("w2"), ip("10.202.1.2")]);
        assert!(matches!(decide(&csr("system:node:w1", foreign_name), Some(&w1)), Decision::Leave(_)));
    }

    #[test]
    fn a_request_for_another_node_or_from_a_non_node_is_not_approved() {
        let w1 = node("w1", &["10.202.1.2"]);
        // Signed in w2's name, asked by w1: the subject does not match the requester.
        let other_subject = request("system:node:w2", NODES_GROUP, vec![ip("10.202.1.2")]);
        assert!(matches!(decide(&csr("system:node:w1", other_subject), Some(&w1)), Decision::Leave(_)));
        let by_user = request("system:node:w1", NODES_GROUP, vec![ip("10.202.1.2")]);
        assert!(matches!(decide(&csr("alice", by_user), Some(&w1)), Decision::Leave(_)));
        let unknown_node = request("system:node:w9", NODES_GROUP, vec![ip("10.202.1.2")]);
        let decision = decide(&csr("system:node:w9", unknown_node), None);
        assert!(
            matches!(&decision, Decision::Leave(reason) if reason.contains("no Node w9")),
            "{decision:?}"
        );
    }

    #[test]
    fn client_usages_and_other_signers_are_not_approved() {
        let w1 = node("w1", &["10.202.1.2"]);
        let pem = request("system:node:w1", NODES_GROUP, vec![ip("10.202.1.2")]);
        let mut client_usage = csr("system:node:w1", pem.clone());
        client_usage.spec.usages = Some(vec!["digital signature".into(), "client auth".into()]);
        assert!(matches!(decide(&client_usage, Some(&w1)), Decision::Leave(_)));
        let mut other_signer = csr("system:node:w1", pem);
        other_signer.spec.signer_name = "kubernetes.io/kube-apiserver-client-kubelet".into();
        assert!(matches!(decide(&other_signer, Some(&w1)), Decision::Leave(_)));
    }

    #[test]
    fn only_undecided_requests_are_pending() {
        let mut request = csr("system:node:w1", Vec::new());
        assert!(pending(&request));
        request.status = Some(k8s_openapi::api::certificates::v1::CertificateSigningRequestStatus {
            conditions: Some(vec![CertificateSigningRequestCondition {
                type_: "Approved".into(),
                status: "True".into(),
                ..CertificateSigningRequestCondition::default()
            }]),
            ..Default::default()
        });
        assert!(!pending(&request));
    }
}
