//! Scaling etcd to `spec.etcd.replicas` one member at a time, never through a moment
//! without quorum.
//!
//! The member list is the truth: the StatefulSet's replicas and the members the
//! ConfigMap's initial-cluster names follow the highest listed ordinal
//! ([`ScalingPlan::members`]), so a pod is created only for a member etcd already
//! knows, and a pod is deleted only after etcd forgot its member.
//!
//! Scale up, for each next ordinal k:
//! 1. a volume claim of ordinal k left by an earlier scale-down is deleted first: it
//!    holds the data of a member ID the cluster removed, which can never rejoin;
//! 2. `member add` k's peer URL as a *learner*: a learner replicates the log but does
//!    not vote, so the quorum stays what it was while the pod starts and catches up.
//!    (Adding a voter to a one-member cluster would make every write need two members
//!    until the second one runs: the tenant API would stall for that time.)
//! 3. the next pass renders replicas k+1 and an initial-cluster of exactly members
//!    0..=k with state `existing` (what etcd demands of a joining member), so the pod
//!    starts and joins;
//! 4. once it answers, `member promote` (etcd refuses while the learner lags behind the
//!    leader; the next pass tries again).
//!
//! Scale down, for the highest ordinal k:
//! 1. if k leads, leadership moves to the lowest healthy voter first, so the removal
//!    costs no election;
//! 2. `member remove` k: the quorum shrinks before the member goes;
//! 3. the next pass renders replicas k, and the StatefulSet deletes the pod;
//! 4. once the pod is gone, its claim is deleted. Its data is a stale copy of what the
//!    remaining quorum holds, under a member ID etcd refuses forever; kept, a later
//!    scale-up would start the new member k on it and that member could never join.
//!
//! No step is taken unless the cluster is healthy: every voting member answers healthy
//! behind one leader, its pod is Ready, and the StatefulSet already follows the member
//! list. A scaling that waits says why (see [`ScalingProgress`]) rather than risk the
//! quorum: removing a member from a cluster that already misses one can lose it.
//!
//! [`plan`] is pure (observation in, at most one step out); [`run_gateway_step`]
//! does the one etcd call of a step. Deleting a claim and publishing the Event are the
//! reconciler's.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Deserialize;

use super::gateway::{Member, MemberTarget, gateway_call};
use super::membership::{EtcdObservation, MemberPod};
use crate::names::TenantNames;
use crate::resources::etcd_peer_url;
use crate::transport::TlsClient;

/// Ordinals looked for in peer URLs: more than the five members the API allows.
const MAX_ORDINAL: i32 = 16;

/// What the scaling decision reads besides the etcd probe.
#[derive(Clone, Copy, Debug)]
pub struct ScalingInput<'a> {
    /// `spec.etcd.replicas`.
    pub wanted: i32,
    /// The live StatefulSet's `spec.replicas`; `None` when it does not exist.
    pub statefulset_replicas: Option<i32>,
    /// `status.etcdMembers`: the size the cluster last settled at.
    pub settled: Option<i32>,
    /// This pass's etcd probe; `None` when etcd was not probed.
    pub observation: Option<&'a EtcdObservation>,
    /// Names of the tenant's etcd data claims that exist and are not being deleted.
    pub claims: &'a [String],
}

/// One membership change (or the cleanup after one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScalingStep {
    /// Delete the data claim of a member that is gone.
    DeleteClaim {
        /// Member ordinal.
        ordinal: i32,
        /// Claim name.
        claim: String,
    },
    /// `member add --learner` for ordinal `ordinal`.
    AddLearner {
        /// Member ordinal.
        ordinal: i32,
        /// Its peer URL.
        peer_url: String,
        /// A healthy voter the call goes through.
        via: MemberTarget,
    },
    /// `member promote` of a learner that runs.
    Promote {
        /// Member ordinal.
        ordinal: i32,
        /// Member ID.
        id: u64,
        /// A healthy voter the call goes through.
        via: MemberTarget,
    },
    /// Move leadership away from the member about to be removed.
    TransferLeadership {
        /// Ordinal of the leader that leaves.
        ordinal: i32,
        /// The member ID to lead from now on.
        to: u64,
        /// Its name, for the Event.
        to_name: String,
        /// The current leader: etcd moves leadership only when the leader is asked.
        via: MemberTarget,
    },
    /// `member remove` of the highest member (or of a learner no longer wanted).
    Remove {
        /// Member ordinal.
        ordinal: i32,
        /// Member ID.
        id: u64,
        /// A healthy member that stays, the call goes through it.
        via: MemberTarget,
    },
}

impl ScalingStep {
    /// The Event reason.
    pub fn event_reason(&self) -> &'static str {
        match self {
            ScalingStep::DeleteClaim { .. } => "EtcdClaimDeleted",
            ScalingStep::AddLearner { .. } => "EtcdMemberAdded",
            ScalingStep::Promote { .. } => "EtcdMemberPromoted",
            ScalingStep::TransferLeadership { .. } => "EtcdLeadershipMoved",
            ScalingStep::Remove { .. } => "EtcdMemberRemoved",
        }
    }

    /// One line for the log, the condition and the Event.
    pub fn describe(&self, names: &TenantNames) -> String {
        match self {
            ScalingStep::DeleteClaim { ordinal, claim } => format!(
                "deleting claim {claim} of removed member {}: its data can never rejoin",
                names.etcd_member_name(*ordinal)
            ),
            ScalingStep::AddLearner { ordinal, .. } => {
                format!("adding {} as a learner", names.etcd_member_name(*ordinal))
            }
            ScalingStep::Promote { ordinal, id, .. } => {
                format!("promoting learner {} ({id:x}) to a voting member", names.etcd_member_name(*ordinal))
            }
            ScalingStep::TransferLeadership { ordinal, to_name, .. } => format!(
                "moving leadership from {} to {to_name} before removing it",
                names.etcd_member_name(*ordinal)
            ),
            ScalingStep::Remove { ordinal, id, .. } => {
                format!("removing member {} ({id:x})", names.etcd_member_name(*ordinal))
            }
        }
    }
}

/// How far a scaling got, for the EtcdReady condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScalingProgress {
    /// The size the cluster scales from.
    pub from: i32,
    /// `spec.etcd.replicas`.
    pub to: i32,
    /// Voting members listed now.
    pub voting: i32,
    /// Every voting member answered healthy with its pod Ready: the tenant is served
    /// while the scaling goes on.
    pub healthy: bool,
    /// What happens now, or what the scaling waits for.
    pub detail: String,
}

impl ScalingProgress {
    /// For example `scaling 1 -> 3: 2 of 3 members; adding team-a-etcd-2 as a learner`.
    pub fn message(&self) -> String {
        let count = if self.to >= self.from {
            format!("{} of {} members", self.voting, self.to)
        } else {
            format!("{} members left, {} wanted", self.voting, self.to)
        };
        format!("scaling {} -> {}: {count}; {}", self.from, self.to, self.detail)
    }
}

/// The scaling decision of one pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScalingPlan {
    /// Members to render: the StatefulSet's replicas and the size of the ConfigMap's
    /// initial-cluster.
    pub members: i32,
    /// The member list is exactly `spec.etcd.replicas` voters: record it as settled.
    pub settled: bool,
    /// At most one change; `None` when nothing is to do or the cluster is not ready for it.
    pub step: Option<ScalingStep>,
    /// `Some` while the cluster is not at its wanted size.
    pub progress: Option<ScalingProgress>,
}

/// A listed member matched to its ordinal.
#[derive(Clone, Copy, Debug)]
struct Listed<'a> {
    ordinal: i32,
    member: &'a Member,
}

/// The ordinal whose peer URL (or pod name) `member` carries.
fn ordinal_of(names: &TenantNames, member: &Member) -> Option<i32> {
    (0..MAX_ORDINAL).find(|ordinal| {
        member.peer_urls.contains(&etcd_peer_url(names, *ordinal))
            || member.name == names.etcd_member_name(*ordinal)
    })
}

/// The ordinal of data claim `claim`, if it is one of this tenant's.
fn claim_ordinal(names: &TenantNames, claim: &str) -> Option<i32> {
    let first = names.etcd_data_claim(0);
    let prefix = first.strip_suffix('0').unwrap_or(&first);
    claim.strip_prefix(prefix)?.parse().ok()
}

/// Decides the next scaling step (pure). See the module documentation.
pub fn plan(names: &TenantNames, input: &ScalingInput<'_>) -> ScalingPlan {
    let fallback = input.statefulset_replicas.unwrap_or(input.wanted);
    let from = |current: i32| input.settled.filter(|settled| *settled != input.wanted).unwrap_or(current);
    let waiting = |detail: &str| ScalingPlan {
        members: fallback,
        settled: false,
        step: None,
        progress: (fallback != input.wanted).then(|| ScalingProgress {
            from: from(fallback),
            to: input.wanted,
            voting: fallback,
            healthy: false,
            detail: detail.to_string(),
        }),
    };
    let Some(observation) = input.observation else {
        return waiting("waiting for the etcd probe");
    };
    let Some(list) = &observation.member_list else {
        return waiting("waiting for a member list");
    };
    // Only a list from a member that is part of a working quorum (healthy, with a
    // leader) is trusted to shrink anything: a partitioned member's list may be old.
    let healthy = observation.healthy_members(&list.members);
    let trusted = observation.reports.iter().any(|report| {
        healthy.contains(report.name.as_str())
            && report
                .answer
                .as_ref()
                .is_ok_and(|answer| answer.status.header.member_id == list.header.member_id)
    });
    if !trusted || list.members.is_empty() {
        return waiting("waiting for a member list from a healthy member");
    }
    let mut listed = Vec::new();
    let mut foreign = Vec::new();
    for member in &list.members {
        match ordinal_of(names, member) {
            Some(ordinal) => listed.push(Listed { ordinal, member }),
            None => foreign.push(format!("{:x}", member.id)),
        }
    }
    listed.sort_by_key(|listed| listed.ordinal);
    let members = listed.last().map_or(fallback, |last| last.ordinal + 1);
    let voters: Vec<Listed<'_>> = listed.iter().copied().filter(|listed| !listed.member.is_learner).collect();
    let learner = listed.iter().copied().find(|listed| listed.member.is_learner);
    let settled =
        learner.is_none() && foreign.is_empty() && members == input.wanted && voters.len() as i32 == members;

    let pods: BTreeMap<&str, &MemberPod> =
        observation.pods.iter().map(|pod| (pod.name.as_str(), pod)).collect();
    let started_healthy = |listed: &Listed<'_>| {
        let name = names.etcd_member_name(listed.ordinal);
        !listed.member.name.is_empty()
            && healthy.contains(name.as_str())
            && pods.get(name.as_str()).is_some_and(|pod| pod.ready && !pod.deleting)
    };
    let unhealthy: Vec<String> = voters
        .iter()
        .filter(|voter| !started_healthy(voter))
        .map(|voter| names.etcd_member_name(voter.ordinal))
        .collect();
    let leaders: BTreeSet<u64> = observation
        .reports
        .iter()
        .filter_map(|report| report.answer.as_ref().ok())
        .map(|answer| answer.status.leader)
        .collect();
    let leader = match leaders.len() {
        1 => leaders.first().copied().filter(|leader| *leader != 0),
        _ => None,
    };
    let voters_healthy = unhealthy.is_empty() && foreign.is_empty() && leader.is_some();
    let contiguous = listed.iter().enumerate().all(|(index, listed)| listed.ordinal == index as i32);
    let follows = input.statefulset_replicas == Some(members);
    let listed_ordinals: BTreeSet<i32> = listed.iter().map(|listed| listed.ordinal).collect();
    let pod_exists = |ordinal: i32| pods.contains_key(names.etcd_member_name(ordinal).as_str());
    let extra_pods: Vec<String> = observation
        .pods
        .iter()
        .filter(|pod| {
            (0..MAX_ORDINAL).any(|ordinal| ordinal >= members && pod.name == names.etcd_member_name(ordinal))
        })
        .map(|pod| pod.name.clone())
        .collect();
    let target = |ordinal: i32| {
        let name = names.etcd_member_name(ordinal);
        observation.targets.iter().find(|target| target.name == name).cloned()
    };
    // Calls go through the leader when it is a healthy voter that stays, else the
    // lowest such voter.
    let via_except = |excluded: Option<i32>| {
        let candidates =
            || voters.iter().filter(|voter| Some(voter.ordinal) != excluded && started_healthy(voter));
        candidates()
            .find(|voter| Some(voter.member.id) == leader)
            .or_else(|| candidates().next())
            .and_then(|voter| target(voter.ordinal).map(|via| (voter.ordinal, via)))
    };

    let scaling = members != input.wanted || learner.is_some();
    let progress = |detail: String| {
        scaling.then(|| ScalingProgress {
            from: from(members),
            to: input.wanted,
            voting: voters.len() as i32,
            healthy: voters_healthy,
            detail,
        })
    };
    let with_step = |step: ScalingStep| ScalingPlan {
        members,
        settled,
        progress: progress(step.describe(names)),
        step: Some(step),
    };
    let waiting_for =
        |detail: String| ScalingPlan { members, settled, step: None, progress: progress(detail) };

    // Claims of members that are gone, once the StatefulSet no longer has their pods:
    // after a scale-down, and before a scale-up reuses the ordinal.
    if follows {
        let stale = input
            .claims
            .iter()
            .filter_map(|claim| claim_ordinal(names, claim).map(|ordinal| (ordinal, claim)))
            .filter(|(ordinal, _)| {
                *ordinal >= members && !listed_ordinals.contains(ordinal) && !pod_exists(*ordinal)
            })
            .min_by_key(|(ordinal, _)| *ordinal);
        if let Some((ordinal, claim)) = stale {
            return with_step(ScalingStep::DeleteClaim { ordinal, claim: claim.clone() });
        }
    }
    if !scaling {
        return waiting_for(String::new());
    }
    if !foreign.is_empty() {
        return waiting_for(format!(
            "the member list holds members Nestor did not add: {}",
            foreign.join(", ")
        ));
    }
    if !contiguous {
        let ordinals: Vec<String> = listed_ordinals.iter().map(i32::to_string).collect();
        return waiting_for(format!(
            "the member list has ordinals {} rather than 0..{members}: waiting for the member repair",
            ordinals.join(", ")
        ));
    }

    if let Some(learner) = learner {
        let name = names.etcd_member_name(learner.ordinal);
        if learner.ordinal >= input.wanted {
            // A learner does not count toward the quorum: removing it is always safe.
            return match via_except(Some(learner.ordinal)) {
                Some((_, via)) => {
                    with_step(ScalingStep::Remove { ordinal: learner.ordinal, id: learner.member.id, via })
                }
                None => waiting_for(format!("no healthy voter to remove learner {name} through")),
            };
        }
        if !voters_healthy {
            return waiting_for(format!("waiting for {} to be healthy", unhealthy.join(", ")));
        }
        let runs = !learner.member.name.is_empty() && healthy.contains(name.as_str());
        if !runs {
            return waiting_for(format!("waiting for learner {name} to start and catch up"));
        }
        return match via_except(None) {
            Some((_, via)) => {
                with_step(ScalingStep::Promote { ordinal: learner.ordinal, id: learner.member.id, via })
            }
            None => waiting_for(format!("no healthy voter to promote {name} through")),
        };
    }

    if !voters_healthy {
        let why = if unhealthy.is_empty() {
            "the members do not follow one leader".to_string()
        } else {
            format!("{} is not healthy", unhealthy.join(", "))
        };
        return waiting_for(if members > input.wanted {
            format!("no member is removed while {why}: the quorum could be lost")
        } else {
            format!("waiting: {why}")
        });
    }
    if !follows {
        return waiting_for(format!("waiting for the StatefulSet to have {members} replicas"));
    }
    if !extra_pods.is_empty() {
        return waiting_for(format!("waiting for pod {} to go", extra_pods.join(", ")));
    }

    if members < input.wanted {
        let ordinal = members;
        return match via_except(None) {
            Some((_, via)) => {
                with_step(ScalingStep::AddLearner { ordinal, peer_url: etcd_peer_url(names, ordinal), via })
            }
            None => waiting_for("no healthy voter to add a member through".into()),
        };
    }
    // members > wanted: the highest member goes.
    let Some(leaving) = voters.last().copied() else {
        return waiting_for("no voting member listed".into());
    };
    if Some(leaving.member.id) == leader {
        let successor =
            voters.iter().find(|voter| voter.ordinal != leaving.ordinal && started_healthy(voter));
        return match (successor, target(leaving.ordinal)) {
            (Some(successor), Some(via)) => with_step(ScalingStep::TransferLeadership {
                ordinal: leaving.ordinal,
                to: successor.member.id,
                to_name: names.etcd_member_name(successor.ordinal),
                via,
            }),
            _ => waiting_for("no healthy member to move leadership to".into()),
        };
    }
    match via_except(Some(leaving.ordinal)) {
        Some((_, via)) => {
            with_step(ScalingStep::Remove { ordinal: leaving.ordinal, id: leaving.member.id, via })
        }
        None => waiting_for("no healthy member to remove through".into()),
    }
}

/// Why a scaling call failed; nothing changed, the next pass decides again.
#[derive(Debug, thiserror::Error)]
#[error("{call}: {reason}")]
pub struct ScalingError {
    /// The gateway path.
    pub call: &'static str,
    /// The gateway's answer or the transport error.
    pub reason: String,
}

#[derive(Debug, Default, Deserialize)]
struct MemberAddResponse {
    #[serde(default)]
    member: Member,
}

/// Does the etcd call of `step` (nothing for [`ScalingStep::DeleteClaim`]). Returns a
/// note for the Event.
pub async fn run_gateway_step(
    client: &TlsClient,
    names: &TenantNames,
    step: &ScalingStep,
    timeout: Duration,
) -> Result<String, ScalingError> {
    let call = async |via: &MemberTarget, path: &'static str, body: serde_json::Value| {
        gateway_call::<serde_json::Value>(client, via, path, &body.to_string(), timeout)
            .await
            .map_err(|reason| ScalingError { call: path, reason })
    };
    // The gateway takes uint64 fields as JSON strings, as it renders them.
    match step {
        ScalingStep::DeleteClaim { .. } => Ok(step.describe(names)),
        ScalingStep::AddLearner { ordinal, peer_url, via } => {
            let path = "/v3/cluster/member/add";
            let body = serde_json::json!({ "peerURLs": [peer_url], "isLearner": true }).to_string();
            let added: MemberAddResponse = gateway_call(client, via, path, &body, timeout)
                .await
                .map_err(|reason| ScalingError { call: path, reason })?;
            Ok(format!(
                "etcd member {} added as learner {:x} ({peer_url})",
                names.etcd_member_name(*ordinal),
                added.member.id
            ))
        }
        ScalingStep::Promote { ordinal, id, via } => {
            call(via, "/v3/cluster/member/promote", serde_json::json!({ "ID": id.to_string() })).await?;
            Ok(format!(
                "etcd learner {} ({id:x}) promoted to a voting member",
                names.etcd_member_name(*ordinal)
            ))
        }
        ScalingStep::TransferLeadership { ordinal, to, to_name, via } => {
            call(
                via,
                "/v3/maintenance/transfer-leadership",
                serde_json::json!({ "targetID": to.to_string() }),
            )
            .await?;
            Ok(format!(
                "etcd leadership moved from {} to {to_name} ({to:x}) before its removal",
                names.etcd_member_name(*ordinal)
            ))
        }
        ScalingStep::Remove { ordinal, id, via } => {
            call(via, "/v3/cluster/member/remove", serde_json::json!({ "ID": id.to_string() })).await?;
            Ok(format!("etcd member {} ({id:x}) removed", names.etcd_member_name(*ordinal)))
        }
    }
}

#[cfg(test)]
mod tests {
    use jiff::Timestamp;

    use super::super::gateway::{
        HealthResponse, MemberAnswer, MemberListResponse, MemberReport, ResponseHeader, StatusResponse,
    };
    use super::*;

    const BASE: u64 = 100;

    fn names() -> TenantNames {
        TenantNames::new("team-a", "tenants")
    }

    fn name(ordinal: i32) -> String {
        names().etcd_member_name(ordinal)
    }

    fn target(ordinal: i32) -> MemberTarget {
        MemberTarget {
            name: name(ordinal),
            ip: format!("10.200.0.{}", ordinal + 10).parse().expect("ip"),
            server_name: names().etcd_member_host(ordinal),
        }
    }

    /// A cluster as the probe sees it: `voters` voting members, healthy, led by
    /// `leader`; each a Ready pod.
    struct Cluster {
        observation: EtcdObservation,
    }

    impl Cluster {
        fn healthy(voters: i32, leader: i32) -> Self {
            let mut cluster = Cluster { observation: EtcdObservation::default() };
            cluster.observation.member_list = Some(MemberListResponse {
                header: ResponseHeader { member_id: BASE, cluster_id: 7, revision: 0 },
                members: Vec::new(),
            });
            for ordinal in 0..voters {
                cluster.add(ordinal, false, true, leader);
            }
            cluster
        }

        /// Lists member `ordinal`; `runs` gives it a Ready pod and a healthy answer.
        fn add(&mut self, ordinal: i32, learner: bool, runs: bool, leader: i32) -> &mut Self {
            let id = BASE + ordinal as u64;
            let list = self.observation.member_list.as_mut().expect("list");
            list.members.push(Member {
                id,
                name: if runs { name(ordinal) } else { String::new() },
                peer_urls: vec![etcd_peer_url(&names(), ordinal)],
                is_learner: learner,
            });
            if runs {
                self.observation.targets.push(target(ordinal));
                self.observation.reports.push(MemberReport {
                    name: name(ordinal),
                    answer: Ok(MemberAnswer {
                        health: HealthResponse { health: "true".into(), reason: String::new() },
                        status: StatusResponse {
                            header: ResponseHeader { member_id: id, cluster_id: 7, revision: 0 },
                            leader: BASE + leader as u64,
                            is_learner: learner,
                            ..StatusResponse::default()
                        },
                    }),
                });
                self.observation.pods.push(MemberPod {
                    name: name(ordinal),
                    uid: format!("uid-{ordinal}"),
                    ready: true,
                    not_ready_since: Some(Timestamp::UNIX_EPOCH),
                    deleting: false,
                });
            }
            self
        }

        fn unhealthy(&mut self, ordinal: i32) -> &mut Self {
            let name = name(ordinal);
            for report in &mut self.observation.reports {
                if report.name == name {
                    report.answer = Err("no answer within 2s".into());
                }
            }
            for pod in &mut self.observation.pods {
                if pod.name == name {
                    pod.ready = false;
                }
            }
            self
        }

        fn plan(&self, wanted: i32, statefulset: i32, settled: i32, claims: &[&str]) -> ScalingPlan {
            let claims: Vec<String> = claims.iter().map(|claim| claim.to_string()).collect();
            plan(
                &names(),
                &ScalingInput {
                    wanted,
                    statefulset_replicas: Some(statefulset),
                    settled: Some(settled),
                    observation: Some(&self.observation),
                    claims: &claims,
                },
            )
        }
    }

    fn claim(ordinal: i32) -> String {
        names().etcd_data_claim(ordinal)
    }

    #[test]
    fn a_settled_cluster_does_nothing_and_says_settled() {
        let plan = Cluster::healthy(3, 0).plan(3, 3, 3, &[&claim(0), &claim(1), &claim(2)]);
        assert_eq!(plan, ScalingPlan { members: 3, settled: true, step: None, progress: None });
    }

    #[test]
    fn scale_up_adds_the_next_ordinal_as_a_learner_through_the_leader() {
        let plan = Cluster::healthy(1, 0).plan(3, 1, 1, &[&claim(0)]);
        assert_eq!(plan.members, 1);
        assert!(!plan.settled);
        assert_eq!(
            plan.step,
            Some(ScalingStep::AddLearner {
                ordinal: 1,
                peer_url: "https://team-a-etcd-1.team-a-etcd.tenants.svc:2380".into(),
                via: target(0),
            })
        );
        let progress = plan.progress.expect("progress");
        assert_eq!(progress.message(), "scaling 1 -> 3: 1 of 3 members; adding team-a-etcd-1 as a learner");
        assert!(progress.healthy);
    }

    #[test]
    fn an_added_learner_gets_its_pod_and_is_promoted_once_it_runs() {
        // Just added: not started. The StatefulSet grows to include it; nothing else happens.
        let mut cluster = Cluster::healthy(1, 0);
        cluster.add(1, true, false, 0);
        let plan = cluster.plan(3, 1, 1, &[]);
        assert_eq!((plan.members, plan.step.clone()), (2, None));
        assert_eq!(
            plan.progress.expect("progress").message(),
            "scaling 1 -> 3: 1 of 3 members; waiting for learner team-a-etcd-1 to start and catch up"
        );
        // Started and answering: promoted.
        let mut cluster = Cluster::healthy(1, 0);
        cluster.add(1, true, true, 0);
        let plan = cluster.plan(3, 2, 1, &[]);
        assert_eq!(plan.step, Some(ScalingStep::Promote { ordinal: 1, id: BASE + 1, via: target(0) }));
        assert!(!plan.settled, "a learner is not settled");
        // Promoted: the next ordinal.
        let plan = Cluster::healthy(2, 0).plan(3, 2, 1, &[]);
        assert!(matches!(plan.step, Some(ScalingStep::AddLearner { ordinal: 2, .. })), "{plan:?}");
        assert_eq!(plan.progress.expect("progress").voting, 2);
        // Done.
        let plan = Cluster::healthy(3, 1).plan(3, 3, 1, &[]);
        assert_eq!((plan.settled, plan.step, plan.progress), (true, None, None));
    }

    #[test]
    fn scale_up_waits_for_health_the_statefulset_and_deletes_a_stale_claim_first() {
        let mut sick = Cluster::healthy(2, 0);
        sick.unhealthy(1);
        let plan = sick.plan(3, 2, 2, &[]);
        assert_eq!(plan.step, None);
        let progress = plan.progress.expect("progress");
        assert!(!progress.healthy);
        assert!(progress.detail.contains("waiting: team-a-etcd-1 is not healthy"), "{}", progress.detail);

        let plan = Cluster::healthy(2, 0).plan(3, 3, 2, &[]);
        assert_eq!(plan.step, None, "the StatefulSet does not follow the member list yet");
        assert_eq!(plan.members, 2);

        // Ordinal 2's claim survived an earlier scale-down: it goes before member 2 is added.
        let plan = Cluster::healthy(2, 0).plan(3, 2, 2, &[&claim(0), &claim(1), &claim(2)]);
        assert_eq!(plan.step, Some(ScalingStep::DeleteClaim { ordinal: 2, claim: claim(2) }));
    }

    #[test]
    fn scale_down_moves_leadership_off_the_highest_member_then_removes_it() {
        let plan = Cluster::healthy(3, 2).plan(1, 3, 3, &[]);
        assert_eq!(
            plan.step,
            Some(ScalingStep::TransferLeadership { ordinal: 2, to: BASE, to_name: name(0), via: target(2) })
        );
        let plan = Cluster::healthy(3, 1).plan(1, 3, 3, &[]);
        assert_eq!(plan.step, Some(ScalingStep::Remove { ordinal: 2, id: BASE + 2, via: target(1) }));
        assert_eq!(
            plan.progress.expect("progress").message(),
            "scaling 3 -> 1: 3 members left, 1 wanted; removing member team-a-etcd-2 (66)"
        );
    }

    #[test]
    fn scale_down_follows_the_member_list_and_deletes_the_claim_once_the_pod_is_gone() {
        // Member 2 removed: the StatefulSet shrinks to 2 in this pass.
        let mut cluster = Cluster::healthy(2, 0);
        let plan = cluster.plan(1, 3, 3, &[&claim(0), &claim(1), &claim(2)]);
        assert_eq!((plan.members, plan.step.clone()), (2, None), "{plan:?}");
        // Shrunk, but pod 2 still terminating: no claim deletion, no next removal.
        cluster.observation.pods.push(MemberPod {
            name: name(2),
            uid: "uid-2".into(),
            ready: false,
            not_ready_since: None,
            deleting: true,
        });
        let plan = cluster.plan(1, 2, 3, &[&claim(0), &claim(1), &claim(2)]);
        assert_eq!(plan.step, None);
        assert!(plan.progress.expect("progress").detail.contains("waiting for pod team-a-etcd-2 to go"));
        // Pod gone: its claim goes, then member 1 is removed.
        cluster.observation.pods.pop();
        let plan = cluster.plan(1, 2, 3, &[&claim(0), &claim(1), &claim(2)]);
        assert_eq!(plan.step, Some(ScalingStep::DeleteClaim { ordinal: 2, claim: claim(2) }));
        let plan = cluster.plan(1, 2, 3, &[&claim(0), &claim(1)]);
        assert_eq!(plan.step, Some(ScalingStep::Remove { ordinal: 1, id: BASE + 1, via: target(0) }));
        // Settled at 1, the last claim of a removed member is cleaned up without a scaling.
        let single = Cluster::healthy(1, 0);
        let plan = single.plan(1, 1, 3, &[&claim(0), &claim(1)]);
        assert!(plan.settled);
        assert_eq!(plan.step, Some(ScalingStep::DeleteClaim { ordinal: 1, claim: claim(1) }));
        assert_eq!(plan.progress, None);
    }

    #[test]
    fn no_member_is_removed_from_an_unhealthy_cluster() {
        let mut cluster = Cluster::healthy(3, 0);
        cluster.unhealthy(1);
        let plan = cluster.plan(1, 3, 3, &[]);
        assert_eq!(plan.step, None);
        let progress = plan.progress.expect("progress");
        assert!(!progress.healthy);
        assert!(
            progress.detail.contains("no member is removed while team-a-etcd-1 is not healthy"),
            "{}",
            progress.detail
        );
        // Split leaders: no removal either.
        let mut split = Cluster::healthy(3, 0);
        if let Ok(answer) = &mut split.observation.reports[2].answer {
            answer.status.leader = BASE + 2;
        }
        assert_eq!(split.plan(1, 3, 3, &[]).step, None);
    }

    #[test]
    fn nothing_shrinks_without_a_trusted_member_list() {
        // The list came from a member that is not healthy.
        let mut cluster = Cluster::healthy(3, 0);
        cluster.unhealthy(0);
        let plan = cluster.plan(1, 3, 3, &[&claim(0), &claim(1), &claim(2)]);
        assert_eq!((plan.members, plan.step), (3, None));
        let progress = plan.progress.expect("progress");
        assert!(progress.detail.contains("from a healthy member"), "{}", progress.detail);
        // Not probed at all: the live StatefulSet stays as it is.
        let plan = plan_without_probe(Some(2), 3);
        assert_eq!((plan.members, plan.step.is_none()), (2, true));
        // A new tenant: the spec.
        assert_eq!(plan_without_probe(None, 3).members, 3);
    }

    fn plan_without_probe(statefulset: Option<i32>, wanted: i32) -> ScalingPlan {
        plan(
            &names(),
            &ScalingInput {
                wanted,
                statefulset_replicas: statefulset,
                settled: None,
                observation: None,
                claims: &[],
            },
        )
    }

    #[test]
    fn a_hand_scaled_statefulset_is_restored_from_the_member_list() {
        let plan = Cluster::healthy(3, 0).plan(3, 1, 3, &[]);
        assert_eq!(plan.members, 3);
        assert!(plan.settled);
    }

    #[test]
    fn a_learner_no_longer_wanted_is_removed_and_a_gap_waits_for_the_repair() {
        let mut cluster = Cluster::healthy(1, 0);
        cluster.add(1, true, false, 0);
        let plan = cluster.plan(1, 2, 1, &[]);
        assert_eq!(plan.step, Some(ScalingStep::Remove { ordinal: 1, id: BASE + 1, via: target(0) }));

        let mut gap = Cluster::healthy(3, 0);
        gap.observation.member_list.as_mut().expect("list").members.remove(1);
        let plan = gap.plan(5, 3, 3, &[]);
        assert_eq!(plan.step, None);
        assert!(plan.progress.expect("progress").detail.contains("member repair"));
    }

    #[test]
    fn claim_names_map_to_ordinals() {
        assert_eq!(claim_ordinal(&names(), "data-team-a-etcd-4"), Some(4));
        assert_eq!(claim_ordinal(&names(), "data-team-ab-etcd-4"), None);
        assert_eq!(claim_ordinal(&names(), "data-team-a-etcd-x"), None);
    }
}
