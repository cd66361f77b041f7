//! etcd's JSON gRPC gateway over mutual TLS: the answers it gives (status, member
//! list, health) and the calls the operator makes through it. Every other module that
//! speaks to a tenant's etcd (the health probe, membership repair, scaling) goes
//! through [`gateway_call`] and [`member_answers`]; no gRPC stack is needed.
//!
//! Members are reached by pod IP (the operator's host may not resolve the headless
//! Service's names) with the member's DNS name as TLS server name; the etcd server
//! certificate lists every member's name.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hyper::{Method, StatusCode};
use serde::Deserialize;

use crate::names::TenantNames;
use crate::resources::ETCD_CLIENT_PORT;
use crate::transport::{TlsClient, TransportError};

/// `/v3/maintenance/status` as the gateway renders it (uint64 fields as strings).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct StatusResponse {
    /// Identifies the answering member.
    #[serde(default)]
    pub header: ResponseHeader,
    /// etcd's version, for example `3.6.5`.
    #[serde(default)]
    pub version: String,
    /// Member id of the leader the member follows; 0 when it has none.
    #[serde(default, deserialize_with = "uint64")]
    pub leader: u64,
    /// Alarms and errors the member reports (`NOSPACE`, `CORRUPT`...).
    #[serde(default)]
    pub errors: Vec<String>,
    /// The member is a non-voting learner (added while scaling up, not yet promoted).
    #[serde(rename = "isLearner", default)]
    pub is_learner: bool,
    /// Size of the member's database file in bytes (bbolt's high-water mark): what
    /// etcd compares with its quota, and what only a defragmentation shrinks.
    #[serde(rename = "dbSize", default, deserialize_with = "uint64")]
    pub db_size: u64,
    /// Bytes of the database in use; the rest is free pages left by compaction.
    #[serde(rename = "dbSizeInUse", default, deserialize_with = "uint64")]
    pub db_size_in_use: u64,
    /// The member's `--quota-backend-bytes` (etcd 3.6 and later; 0 when not reported).
    #[serde(rename = "dbSizeQuota", default, deserialize_with = "uint64")]
    pub db_size_quota: u64,
}

/// The header every gateway response carries.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct ResponseHeader {
    /// The answering member's id.
    #[serde(default, deserialize_with = "uint64")]
    pub member_id: u64,
    /// The id of the cluster it belongs to.
    #[serde(default, deserialize_with = "uint64")]
    pub cluster_id: u64,
    /// The key-value store's revision when the member answered.
    #[serde(default, deserialize_with = "uint64")]
    pub revision: u64,
}

/// `/v3/cluster/member/list`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct MemberListResponse {
    /// Who answered, and the cluster ID.
    #[serde(default)]
    pub header: ResponseHeader,
    /// Every member the cluster knows, learners included.
    #[serde(default)]
    pub members: Vec<Member>,
}

/// One member of the list.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct Member {
    /// Member id.
    #[serde(rename = "ID", default, deserialize_with = "uint64")]
    pub id: u64,
    /// Member name (the pod name); empty while a newly added member has not started.
    #[serde(default)]
    pub name: String,
    /// The URLs its peers reach it on; how an unstarted member is matched to its pod.
    #[serde(rename = "peerURLs", default)]
    pub peer_urls: Vec<String>,
    /// A non-voting learner: it replicates the log but counts toward no quorum.
    #[serde(rename = "isLearner", default)]
    pub is_learner: bool,
}

/// `/health`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct HealthResponse {
    /// `"true"` or `"false"` (a string, in etcd's JSON).
    #[serde(default)]
    pub health: String,
    /// Why not healthy.
    #[serde(default)]
    pub reason: String,
}

impl HealthResponse {
    /// Whether the member says it is healthy.
    pub fn is_healthy(&self) -> bool {
        self.health == "true"
    }
}

/// The gateway renders uint64 as JSON strings; accept numbers too.
fn uint64<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Uint64 {
        Number(u64),
        Text(String),
    }
    match Uint64::deserialize(deserializer)? {
        Uint64::Number(value) => Ok(value),
        Uint64::Text(text) => text.parse().map_err(serde::de::Error::custom),
    }
}

/// What one member answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberReport {
    /// Member (pod) name.
    pub name: String,
    /// Its answers, or the one-line reason it gave none.
    pub answer: Result<MemberAnswer, String>,
}

/// The answers of a member that responded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberAnswer {
    /// `/health`.
    pub health: HealthResponse,
    /// `/v3/maintenance/status`.
    pub status: StatusResponse,
}

/// A member to probe: its pod IP and its DNS name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberTarget {
    /// Member (pod) name.
    pub name: String,
    /// Pod IP.
    pub ip: IpAddr,
    /// The name its certificate carries.
    pub server_name: String,
}

/// Targets for members `0..replicas` from `(pod name, pod IP)` pairs; members
/// without a pod or an IP are left out (the verdict counts them missing).
pub fn member_targets(
    names: &TenantNames,
    replicas: i32,
    pod_ips: &std::collections::BTreeMap<String, IpAddr>,
) -> Vec<MemberTarget> {
    (0..replicas)
        .filter_map(|ordinal| {
            let name = names.etcd_member_name(ordinal);
            let ip = *pod_ips.get(&name)?;
            Some(MemberTarget { name, ip, server_name: names.etcd_member_host(ordinal) })
        })
        .collect()
}

/// Asks every member for its health and status, and one member that answered for the
/// member list.
pub async fn member_answers(
    client: &TlsClient,
    targets: &[MemberTarget],
    timeout: Duration,
) -> (Vec<MemberReport>, Option<MemberListResponse>) {
    let reports = futures::future::join_all(targets.iter().map(|target| async move {
        let answer = probe_member(client, target, timeout).await;
        MemberReport { name: target.name.clone(), answer }
    }))
    .await;
    let mut member_list = None;
    for (target, report) in targets.iter().zip(&reports) {
        if report.answer.is_err() {
            continue;
        }
        if let Ok(list) =
            gateway::<MemberListResponse>(client, target, "/v3/cluster/member/list", timeout).await
        {
            member_list = Some(list);
            break;
        }
    }
    (reports, member_list)
}

async fn probe_member(
    client: &TlsClient,
    target: &MemberTarget,
    timeout: Duration,
) -> Result<MemberAnswer, String> {
    let address = SocketAddr::new(target.ip, ETCD_CLIENT_PORT as u16);
    let response = client
        .request(address, &target.server_name, Method::GET, "/health", None, timeout)
        .await
        .map_err(|error| error.to_string())?;
    // /health answers 503 with a JSON body when unhealthy; the body says why.
    let health: HealthResponse = serde_json::from_slice(&response.body)
        .map_err(|error| format!("/health: HTTP {}: {error}", response.status.as_u16()))?;
    let status = gateway::<StatusResponse>(client, target, "/v3/maintenance/status", timeout).await?;
    Ok(MemberAnswer { health, status })
}

async fn gateway<T: serde::de::DeserializeOwned>(
    client: &TlsClient,
    target: &MemberTarget,
    path: &str,
    timeout: Duration,
) -> Result<T, String> {
    gateway_call(client, target, path, "{}", timeout).await
}

/// POSTs `body` to the gateway `path` of `target` and decodes a 200 answer.
pub(crate) async fn gateway_call<T: serde::de::DeserializeOwned>(
    client: &TlsClient,
    target: &MemberTarget,
    path: &str,
    body: &str,
    timeout: Duration,
) -> Result<T, String> {
    let address = SocketAddr::new(target.ip, ETCD_CLIENT_PORT as u16);
    let response = client
        .request(address, &target.server_name, Method::POST, path, Some(body), timeout)
        .await
        .map_err(|error: TransportError| error.to_string())?;
    if response.status != StatusCode::OK {
        return Err(format!("{path}: HTTP {}: {}", response.status.as_u16(), response.summary()));
    }
    serde_json::from_slice(&response.body).map_err(|error| format!("{path}: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Captured from etcd 3.6.5 (nestor.local/etcd:3.6.5-0) of a test tenant, through the gateway.
    const STATUS: &str = r#"{"header":{"cluster_id":"3460343577906698983", "member_id":"7868280335097373653", "revision":"300", "raft_term":"2"}, "version":"3.6.5", "dbSize":"327680", "leader":"7868280335097373653", "raftIndex":"388", "raftTerm":"2", "raftAppliedIndex":"388", "dbSizeInUse":"319488", "storageVersion":"3.6.0", "downgradeInfo":{}}"#;
    const MEMBER_LIST: &str = r#"{"header":{"cluster_id":"3460343577906698983", "member_id":"7868280335097373653", "raft_term":"2"}, "members":[{"ID":"7868280335097373653", "name":"team-h-etcd-0", "peerURLs":["https://team-h-etcd-0.team-h-etcd.nestor-health-2369db33.svc:2380"], "clientURLs":["https://team-h-etcd-0.team-h-etcd.nestor-health-2369db33.svc:2379"]}]}"#;
    const HEALTHY: &str = r#"{"health":"true","reason":""}"#;
    const LEADER: u64 = 7868280335097373653;

    #[test]
    fn gateway_status_and_member_list_parse() {
        let status: StatusResponse = serde_json::from_str(STATUS).expect("status");
        assert_eq!(status.version, "3.6.5");
        assert_eq!(status.leader, LEADER);
        assert_eq!(status.header.member_id, LEADER);
        assert!(status.errors.is_empty());
        assert_eq!((status.db_size, status.db_size_in_use, status.header.revision), (327680, 319488, 300));
        assert_eq!(status.db_size_quota, 0, "not reported");

        let list: MemberListResponse = serde_json::from_str(MEMBER_LIST).expect("list");
        assert_eq!(list.header.cluster_id, 3460343577906698983);
        assert_eq!(
            list.members,
            [Member {
                id: LEADER,
                name: "team-h-etcd-0".into(),
                peer_urls: vec!["https://team-h-etcd-0.team-h-etcd.nestor-health-2369db33.svc:2380".into()],
                is_learner: false,
            }]
        );
        let healthy: HealthResponse = serde_json::from_str(HEALTHY).expect("health");
        assert!(healthy.is_healthy());

        let health: HealthResponse =
            serde_json::from_str(r#"{"health":"false","reason":"RAFT NO LEADER"}"#).expect("health");
        assert!(!health.is_healthy());
        assert_eq!(health.reason, "RAFT NO LEADER");
    }

    #[test]
    fn numbers_are_accepted_and_garbage_rejected() {
        let status: StatusResponse =
            serde_json::from_str(r#"{"leader":7,"errors":["NOSPACE"]}"#).expect("parse");
        assert_eq!(status.leader, 7);
        assert_eq!(status.errors, ["NOSPACE"]);
        assert!(serde_json::from_str::<StatusResponse>(r#"{"leader":"seven"}"#).is_err());
    }

    #[test]
    fn targets_use_pod_ips_and_member_dns_names() {
        let names = TenantNames::new("team-a", "tenants");
        let ips = std::collections::BTreeMap::from([
            ("team-a-etcd-0".to_string(), "10.200.0.7".parse().expect("ip")),
            ("team-a-etcd-2".to_string(), "10.200.0.9".parse().expect("ip")),
            ("other-etcd-1".to_string(), "10.200.0.8".parse().expect("ip")),
        ]);
        let targets = member_targets(&names, 3, &ips);
        assert_eq!(targets.len(), 2, "member 1 has no pod IP");
        assert_eq!(targets[1].name, "team-a-etcd-2");
        assert_eq!(targets[1].server_name, "team-a-etcd-2.team-a-etcd.tenants.svc");
        assert_eq!(targets[1].ip.to_string(), "10.200.0.9");
    }
}
