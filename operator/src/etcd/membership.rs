//! etcd membership repair: a member whose data is gone (an emptyDir lost with its pod,
//! a wiped volume) can never rejoin under its old member ID, since the cluster
//! remembers a raft log the member no longer has. etcd's documented way out, done
//! here: through a healthy member, `member remove` the old ID, `member add` the same
//! peer URL, then delete the pod so it restarts empty with `initial-cluster-state =
//! existing` (see [`crate::resources::etcd_config_map`]) and joins as the new member.
//!
//! [`decide`] is pure (member list, probe answers, pod states and the time in; at most
//! one repair out); [`replace_member`] does the two gateway calls. Deleting the pod
//! and publishing the Event are the reconciler's.
//!
//! Limits, on purpose: with a persistent volume, a member whose volume still holds
//! its old data (not wiped, for example a corrupt WAL) restarts after the repair with
//! that stale data and still fails; the repair never deletes volume claims, so such
//! a member needs a human. Membership changes for `spec.etcd.replicas` (scaling) are
//! [`super::scaling`]'s; the repair leaves learners alone.

use std::collections::BTreeSet;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use serde::Deserialize;

use super::gateway::{Member, MemberListResponse, MemberReport, MemberTarget, gateway_call};
use crate::names::TenantNames;
use crate::resources::etcd_peer_url;
use crate::transport::TlsClient;

/// Shortest time a member pod must have been not Ready before it is repaired: a
/// member restarting with its data rejoins in seconds, and a fresh cluster's members
/// need a moment to find each other.
pub const MIN_BROKEN_FOR: Duration = Duration::from_secs(30);

/// What the repair needs to know of one etcd pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberPod {
    /// Pod (and member) name.
    pub name: String,
    /// Pod UID, the deletion precondition.
    pub uid: String,
    /// Whether its Ready condition is True.
    pub ready: bool,
    /// Since when it is not Ready: the Ready condition's last transition, else the pod's creation.
    pub not_ready_since: Option<Timestamp>,
    /// Being deleted already.
    pub deleting: bool,
}

impl MemberPod {
    /// The repair's view of `pod`; `None` without a name or UID.
    pub fn from_pod(pod: &Pod) -> Option<Self> {
        let ready_condition = pod
            .status
            .as_ref()
            .and_then(|status| status.conditions.as_ref())
            .and_then(|conditions| conditions.iter().find(|condition| condition.type_ == "Ready"));
        let ready = ready_condition.is_some_and(|condition| condition.status == "True");
        let not_ready_since = ready_condition
            .and_then(|condition| condition.last_transition_time.as_ref())
            .or(pod.metadata.creation_timestamp.as_ref())
            .map(|time| time.0);
        Some(Self {
            name: pod.metadata.name.clone()?,
            uid: pod.metadata.uid.clone()?,
            ready,
            not_ready_since,
            deleting: pod.metadata.deletion_timestamp.is_some(),
        })
    }
}

/// Everything one probe pass saw of etcd that the repair decision reads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EtcdObservation {
    /// The members probed (running, started pods).
    pub targets: Vec<MemberTarget>,
    /// Their answers, in the order of `targets`.
    pub reports: Vec<MemberReport>,
    /// The member list, from the first member that gave one.
    pub member_list: Option<MemberListResponse>,
    /// Every etcd pod, started or not.
    pub pods: Vec<MemberPod>,
}

impl EtcdObservation {
    /// etcd's cluster ID when every member answered and the list came back, as a string
    /// (status `etcdClusterID`). `None` otherwise.
    pub fn cluster_id(&self) -> Option<String> {
        let list = self.member_list.as_ref()?;
        (list.header.cluster_id != 0).then(|| list.header.cluster_id.to_string())
    }

    /// Names of the members that answered healthy, with a leader, and are in the member list.
    pub(crate) fn healthy_members(&self, members: &[Member]) -> BTreeSet<&str> {
        let listed: BTreeSet<u64> = members.iter().map(|member| member.id).collect();
        self.reports
            .iter()
            .filter(|report| {
                report.answer.as_ref().is_ok_and(|answer| {
                    answer.health.is_healthy()
                        && answer.status.errors.is_empty()
                        && answer.status.leader != 0
                        && listed.contains(&answer.status.header.member_id)
                })
            })
            .map(|report| report.name.as_str())
            .collect()
    }
}

/// A member to replace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberRepair {
    /// Its pod (and member) name.
    pub pod_name: String,
    /// Its pod's UID, the deletion precondition.
    pub pod_uid: String,
    /// The member-list entry to remove; `None` when the member is not listed any more
    /// (a previous repair removed it and failed to add it back).
    pub old_member_id: Option<u64>,
    /// The peer URL to add it back with.
    pub peer_url: String,
    /// The healthy member the membership calls go through.
    pub via: MemberTarget,
    /// Why, one line, for the log and the Event.
    pub reason: String,
}

/// How long a member pod must have been broken: three probe intervals, at least [`MIN_BROKEN_FOR`].
pub fn broken_threshold(interval: Duration) -> Duration {
    interval.saturating_mul(3).max(MIN_BROKEN_FOR)
}

/// The member to replace, if any (pure).
///
/// Only when quorum is healthy (a strict majority of the listed members answered
/// healthy): removing a member without quorum would break the cluster for good. A
/// member qualifies when its pod exists, is not being deleted, has not been Ready for
/// `broken_for`, and the member did not answer healthy in this pass. At most one: the
/// first by ordinal; the next pass sees the result before anything else is touched.
pub fn decide(
    names: &TenantNames,
    replicas: i32,
    observation: &EtcdObservation,
    now: Timestamp,
    broken_for: Duration,
) -> Option<MemberRepair> {
    let members = &observation.member_list.as_ref()?.members;
    let healthy = observation.healthy_members(members);
    if members.is_empty() || healthy.len() * 2 <= members.len() {
        return None;
    }
    let via = observation.targets.iter().find(|target| healthy.contains(target.name.as_str()))?;
    (0..replicas).find_map(|ordinal| {
        let name = names.etcd_member_name(ordinal);
        if healthy.contains(name.as_str()) {
            return None;
        }
        let pod = observation.pods.iter().find(|pod| pod.name == name)?;
        if pod.deleting || pod.ready {
            return None;
        }
        let since = pod.not_ready_since?;
        let failing_for = Duration::try_from(now.duration_since(since)).unwrap_or_default();
        if failing_for < broken_for {
            return None;
        }
        let peer_url = etcd_peer_url(names, ordinal);
        let old = members.iter().find(|member| member.name == name || member.peer_urls.contains(&peer_url));
        if old.is_some_and(|member| member.is_learner) {
            // A learner is the scaling's (see super::scaling): re-adding it as a voter
            // would put a member that is not running into the quorum.
            return None;
        }
        let answer = observation
            .reports
            .iter()
            .find(|report| report.name == name)
            .map_or_else(|| "not started".to_string(), describe_answer);
        let listed = match old {
            Some(member) if member.name.is_empty() => format!("listed as unstarted member {:x}", member.id),
            Some(member) => format!("listed as member {:x}", member.id),
            None => "not in the member list".to_string(),
        };
        Some(MemberRepair {
            pod_name: name.clone(),
            pod_uid: pod.uid.clone(),
            old_member_id: old.map(|member| member.id),
            peer_url,
            via: via.clone(),
            reason: format!(
                "pod {name} not Ready for {}s ({answer}), {listed}, while {} of {} members are healthy",
                failing_for.as_secs(),
                healthy.len(),
                members.len()
            ),
        })
    })
}

fn describe_answer(report: &MemberReport) -> String {
    match &report.answer {
        Err(error) => error.clone(),
        Ok(answer) if !answer.health.is_healthy() => format!("unhealthy: {}", answer.health.reason),
        Ok(_) => "answers, but not as a healthy listed member".to_string(),
    }
}

/// Why a membership call failed.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    /// The etcd client certificate Secret is missing or unusable.
    #[error("no usable etcd client certificate")]
    Credentials,
    /// `member remove` failed; nothing changed.
    #[error("member remove {id:x}: {reason}")]
    Remove {
        /// The member ID.
        id: u64,
        /// The gateway's answer or the transport error.
        reason: String,
    },
    /// `member add` failed after the old member was removed: the next pass finds the
    /// member missing from the list and adds it.
    #[error("member add {peer_url}: {reason}")]
    Add {
        /// The peer URL.
        peer_url: String,
        /// The gateway's answer or the transport error.
        reason: String,
    },
}

/// `/v3/cluster/member/add`'s answer: the new member.
#[derive(Debug, Default, Deserialize)]
struct MemberAddResponse {
    #[serde(default)]
    member: Member,
}

/// Removes the old member (if listed) and adds `repair.peer_url` back, through
/// `repair.via`. Returns the new member ID.
pub async fn replace_member(
    client: &TlsClient,
    repair: &MemberRepair,
    timeout: Duration,
) -> Result<u64, MembershipError> {
    if let Some(id) = repair.old_member_id {
        // The gateway takes uint64 fields as JSON strings, as it renders them.
        let body = serde_json::json!({ "ID": id.to_string() }).to_string();
        gateway_call::<serde_json::Value>(client, &repair.via, "/v3/cluster/member/remove", &body, timeout)
            .await
            .map_err(|reason| MembershipError::Remove { id, reason })?;
    }
    let body = serde_json::json!({ "peerURLs": [repair.peer_url] }).to_string();
    let added: MemberAddResponse =
        gateway_call(client, &repair.via, "/v3/cluster/member/add", &body, timeout)
            .await
            .map_err(|reason| MembershipError::Add { peer_url: repair.peer_url.clone(), reason })?;
    Ok(added.member.id)
}

#[cfg(test)]
mod tests {
    use super::super::gateway::{HealthResponse, MemberAnswer, ResponseHeader, StatusResponse};
    use super::*;

    const LEADER: u64 = 100;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_750_000_000 + second).expect("valid")
    }

    fn names() -> TenantNames {
        TenantNames::new("team-a", "tenants")
    }

    fn member(ordinal: u64, name: &str) -> Member {
        Member {
            id: LEADER + ordinal,
            name: name.into(),
            peer_urls: vec![etcd_peer_url(&names(), ordinal as i32)],
            is_learner: false,
        }
    }

    fn healthy(ordinal: u64) -> MemberReport {
        MemberReport {
            name: names().etcd_member_name(ordinal as i32),
            answer: Ok(MemberAnswer {
                health: HealthResponse { health: "true".into(), reason: String::new() },
                status: StatusResponse {
                    header: ResponseHeader { member_id: LEADER + ordinal, cluster_id: 7, revision: 0 },
                    leader: LEADER,
                    ..StatusResponse::default()
                },
            }),
        }
    }

    fn pod(ordinal: i32, ready: bool, not_ready_since: i64) -> MemberPod {
        MemberPod {
            name: names().etcd_member_name(ordinal),
            uid: format!("uid-{ordinal}"),
            ready,
            not_ready_since: Some(at(not_ready_since)),
            deleting: false,
        }
    }

    fn target(ordinal: i32) -> MemberTarget {
        MemberTarget {
            name: names().etcd_member_name(ordinal),
            ip: format!("10.200.0.{}", ordinal + 10).parse().expect("ip"),
            server_name: names().etcd_member_host(ordinal),
        }
    }

    /// Members 0 and 2 healthy; member 1's pod not Ready since t=0 and not probed.
    fn one_broken() -> EtcdObservation {
        EtcdObservation {
            targets: vec![target(0), target(2)],
            reports: vec![healthy(0), healthy(2)],
            member_list: Some(MemberListResponse {
                header: ResponseHeader { member_id: LEADER, cluster_id: 7, revision: 0 },
                members: vec![
                    member(0, "team-a-etcd-0"),
                    member(1, "team-a-etcd-1"),
                    member(2, "team-a-etcd-2"),
                ],
            }),
            pods: vec![pod(0, true, 0), pod(1, false, 0), pod(2, true, 0)],
        }
    }

    #[test]
    fn a_member_broken_long_enough_is_replaced_through_a_healthy_one() {
        let repair = decide(&names(), 3, &one_broken(), at(31), MIN_BROKEN_FOR).expect("repair");
        assert_eq!(repair.pod_name, "team-a-etcd-1");
        assert_eq!(repair.pod_uid, "uid-1");
        assert_eq!(repair.old_member_id, Some(LEADER + 1));
        assert_eq!(repair.peer_url, "https://team-a-etcd-1.team-a-etcd.tenants.svc:2380");
        assert_eq!(repair.via, target(0));
        assert!(repair.reason.contains("not Ready for 31s"), "{}", repair.reason);
        assert!(repair.reason.contains("2 of 3 members are healthy"), "{}", repair.reason);
    }

    #[test]
    fn nothing_happens_before_the_threshold_or_for_a_pod_being_deleted_or_ready() {
        assert_eq!(decide(&names(), 3, &one_broken(), at(29), MIN_BROKEN_FOR), None);
        let mut deleting = one_broken();
        deleting.pods[1].deleting = true;
        assert_eq!(decide(&names(), 3, &deleting, at(300), MIN_BROKEN_FOR), None);
        let mut no_pod = one_broken();
        no_pod.pods.remove(1);
        assert_eq!(decide(&names(), 3, &no_pod, at(300), MIN_BROKEN_FOR), None, "the StatefulSet creates it");
        let mut ready = one_broken();
        ready.pods[1].ready = true;
        assert_eq!(decide(&names(), 3, &ready, at(300), MIN_BROKEN_FOR), None);
    }

    #[test]
    fn nothing_happens_without_quorum_or_member_list() {
        let mut minority = one_broken();
        minority.reports.truncate(1);
        minority.pods[2].ready = false;
        assert_eq!(decide(&names(), 3, &minority, at(300), MIN_BROKEN_FOR), None);
        let mut unlisted = one_broken();
        unlisted.member_list = None;
        assert_eq!(decide(&names(), 3, &unlisted, at(300), MIN_BROKEN_FOR), None);
        // Healthy answers from members that are not in the list do not count toward quorum.
        let mut strangers = one_broken();
        for report in &mut strangers.reports {
            if let Ok(answer) = &mut report.answer {
                answer.status.header.member_id += 1000;
            }
        }
        assert_eq!(decide(&names(), 3, &strangers, at(300), MIN_BROKEN_FOR), None);
    }

    #[test]
    fn an_unstarted_entry_is_matched_by_peer_url_and_a_missing_one_only_added() {
        let mut unstarted = one_broken();
        if let Some(list) = &mut unstarted.member_list {
            list.members[1] = Member { id: 555, ..member(1, "") };
        }
        let repair = decide(&names(), 3, &unstarted, at(60), MIN_BROKEN_FOR).expect("repair");
        assert_eq!(repair.old_member_id, Some(555));
        assert!(repair.reason.contains("unstarted member 22b"), "{}", repair.reason);

        let mut missing = one_broken();
        if let Some(list) = &mut missing.member_list {
            list.members.remove(1);
        }
        let repair = decide(&names(), 3, &missing, at(60), MIN_BROKEN_FOR).expect("repair");
        assert_eq!(repair.old_member_id, None);
        assert!(repair.reason.contains("not in the member list"), "{}", repair.reason);
    }

    #[test]
    fn a_member_answering_unhealthy_is_named_with_its_reason() {
        let mut observation = one_broken();
        observation.targets.insert(1, target(1));
        observation.reports.insert(
            1,
            MemberReport {
                name: names().etcd_member_name(1),
                answer: Ok(MemberAnswer {
                    health: HealthResponse { health: "false".into(), reason: "RAFT NO LEADER".into() },
                    status: StatusResponse::default(),
                }),
            },
        );
        let repair = decide(&names(), 3, &observation, at(45), MIN_BROKEN_FOR).expect("repair");
        assert_eq!(repair.pod_name, "team-a-etcd-1");
        assert!(repair.reason.contains("unhealthy: RAFT NO LEADER"), "{}", repair.reason);
    }

    #[test]
    fn threshold_is_three_intervals_and_at_least_thirty_seconds() {
        assert_eq!(broken_threshold(Duration::from_secs(5)), MIN_BROKEN_FOR);
        assert_eq!(broken_threshold(Duration::from_secs(20)), Duration::from_secs(60));
    }

    #[test]
    fn cluster_id_needs_a_member_list() {
        assert_eq!(one_broken().cluster_id().as_deref(), Some("7"));
        assert_eq!(EtcdObservation::default().cluster_id(), None);
    }

    #[test]
    fn member_add_answer_parses() {
        let added: MemberAddResponse = serde_json::from_str(
            r#"{"header":{"cluster_id":"7"},"member":{"ID":"12345","peerURLs":["https://x:2380"]},"members":[]}"#,
        )
        .expect("parse");
        assert_eq!(added.member.id, 12345);
        assert_eq!(added.member.peer_urls, ["https://x:2380"]);
    }
}
