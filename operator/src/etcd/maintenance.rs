//! Keeping a tenant's etcd inside its space quota: defragmentation when the database
//! file is mostly free pages, and recovery from the `NOSPACE` alarm.
//!
//! Why the operator must: etcd compares the size of its database *file* with
//! `--quota-backend-bytes`, and only a defragmentation shrinks the file. The apiserver
//! compacts old revisions every five minutes, which frees pages inside the file but
//! never returns them. Once a write would pass the quota, etcd raises `NOSPACE` and
//! refuses every write ("mvcc: database space exceeded") until someone disarms the
//! alarm, which nothing in Kubernetes does: the tenant stays read-only for good. etcd's
//! documented way out, done here one step per pass: compact to the current revision,
//! defragment each member, disarm the alarm once every database is below its quota.
//!
//! [`plan`] is pure (the probe's answers, the quota wanted and what earlier passes did
//! in, at most one [`SpaceStep`] out); [`run_step`] does the gateway calls of a step.
//! Restarting a member's pod and publishing Events are the reconciler's
//! ([`crate::reconcile`]'s heal step).
//!
//! Safety rules, on purpose:
//! - one member is defragmented at a time (a defragmentation blocks that member's
//!   reads and writes), followers first and the leader last, and only while the other
//!   members alone still hold a quorum (a single member is defragmented anyway: it has
//!   nobody to stand in for it, and its tenant waits the few seconds it takes);
//! - nothing is done while the quorum is unhealthy or the membership changes;
//! - a member's pod is restarted (to take a raised quota) only while the alarm holds
//!   it unready, when every other member serves, never with ephemeral storage (its data
//!   would go with the pod); volumes and data directories are never touched.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use serde::Deserialize;

use super::gateway::{MemberTarget, StatusResponse, gateway_call};
use super::membership::{EtcdObservation, MemberPod};
use crate::transport::TlsClient;

/// etcd's own default `--quota-backend-bytes` (2 GiB), used when the spec sets none.
pub const DEFAULT_QUOTA_BYTES: u64 = 2 * 1024 * 1024 * 1024;
/// Smallest quota admission accepts (16 MiB): a new tenant's etcd holds a few MiB.
pub const MIN_QUOTA_BYTES: u64 = 16 * 1024 * 1024;
/// Largest quota admission accepts (8 GiB): etcd's documented suggested maximum.
pub const MAX_QUOTA_BYTES: u64 = 8 * 1024 * 1024 * 1024;

const MIB: u64 = 1024 * 1024;
/// Routine defragmentation: at least this many free bytes (or a tenth of the quota,
/// whichever is smaller), so a small database is not defragmented for kilobytes.
const ROUTINE_MIN_FREE: u64 = 16 * MIB;
/// Under `NOSPACE`, a member with at least this many free bytes is defragmented.
const NOSPACE_MIN_FREE: u64 = MIB;
/// The alarm is disarmed only when every database leaves this share of its quota
/// free (in percent): disarming a database one write below its quota would only let
/// the next write raise the alarm again.
const DISARM_HEADROOM_PERCENT: u64 = 5;
/// A member is not defragmented again this soon after its last routine defragmentation.
pub const DEFRAG_COOLDOWN: Duration = Duration::from_secs(60);
/// Under `NOSPACE`, the same for a member defragmented in this alarm: short, since
/// deletions meanwhile free more, and the tenant cannot write until it is done.
pub const NOSPACE_DEFRAG_COOLDOWN: Duration = Duration::from_secs(10);
/// While the alarm holds, the operator compacts again at most this often (deletions
/// meanwhile leave new revisions to compact).
pub const COMPACT_INTERVAL: Duration = Duration::from_secs(10);
/// How long one defragmentation may take before the call gives up. etcd goes on
/// with it regardless, so no other member is defragmented for this long after a
/// call that failed (see [`SpaceMemory::hold_until`]).
pub const DEFRAG_TIMEOUT: Duration = Duration::from_secs(300);

/// One member as the space maintenance sees it: a member that answered its status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberSpace {
    /// Where it is reached.
    pub target: MemberTarget,
    /// Its member ID.
    pub member_id: u64,
    /// The leader it follows (0: none).
    pub leader: u64,
    /// Database file size, the figure compared with the quota.
    pub db_size: u64,
    /// Bytes in use.
    pub in_use: u64,
    /// Its own `--quota-backend-bytes`, when it reports it (etcd 3.6 and later).
    pub quota: Option<u64>,
    /// The store's revision it answered with.
    pub revision: u64,
    /// It reports the `NOSPACE` alarm (alarms are cluster-wide: every member does).
    pub nospace: bool,
    /// It serves: it has a leader and is healthy, or unhealthy for `NOSPACE` alone.
    pub serving: bool,
}

impl MemberSpace {
    /// Free pages a defragmentation would return.
    pub fn free(&self) -> u64 {
        self.db_size.saturating_sub(self.in_use)
    }

    /// Whether it is the leader.
    pub fn is_leader(&self) -> bool {
        self.leader != 0 && self.leader == self.member_id
    }

    /// `leader` or `follower`, for messages.
    pub fn role(&self) -> &'static str {
        if self.is_leader() { "leader" } else { "follower" }
    }
}

/// Whether `error` (a status `errors` entry or a `/health` reason) is the `NOSPACE` alarm.
pub fn is_nospace(error: &str) -> bool {
    error.contains("NOSPACE")
}

/// The members that answered, from a probe's observation (pure).
pub fn member_spaces(observation: &EtcdObservation) -> Vec<MemberSpace> {
    observation
        .targets
        .iter()
        .zip(&observation.reports)
        .filter_map(|(target, report)| {
            let answer = report.answer.as_ref().ok()?;
            let status = &answer.status;
            let nospace = status.errors.iter().any(|error| is_nospace(error));
            let other_errors = status.errors.iter().any(|error| !is_nospace(error));
            let health_ok = answer.health.is_healthy() || is_nospace(&answer.health.reason);
            Some(MemberSpace {
                target: target.clone(),
                member_id: status.header.member_id,
                leader: status.leader,
                db_size: status.db_size,
                in_use: status.db_size_in_use,
                quota: (status.db_size_quota > 0).then_some(status.db_size_quota),
                revision: status.header.revision,
                nospace: nospace || is_nospace(&answer.health.reason),
                serving: status.leader != 0 && health_ok && !other_errors && !status.is_learner,
            })
        })
        .collect()
}

/// What earlier passes did for one tenant; kept by [`SpaceTracker`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SpaceMemory {
    /// The revision last compacted to while the alarm holds, and when.
    pub compacted: Option<(u64, Timestamp)>,
    /// When each member (by name) was last defragmented.
    pub defragmented: BTreeMap<String, Timestamp>,
    /// No defragmentation before this: one may still run in etcd after a call that failed.
    pub hold_until: Option<Timestamp>,
    /// The "live data exceeds the quota" Event was published for the current alarm.
    pub quota_reported: bool,
}

/// Everything [`plan`] reads.
#[derive(Clone, Debug)]
pub struct SpaceInput<'a> {
    /// The members that answered (see [`member_spaces`]).
    pub members: &'a [MemberSpace],
    /// Voting members in the member list.
    pub voters: usize,
    /// Learners in the member list (a scaling in progress).
    pub learners: usize,
    /// The quota the spec asks for (or etcd's default).
    pub wanted_quota: u64,
    /// The etcd pods.
    pub pods: &'a [MemberPod],
    /// The data lives in emptyDirs: a restarted pod loses it.
    pub ephemeral: bool,
    /// What earlier passes did.
    pub memory: &'a SpaceMemory,
    /// Now.
    pub now: Timestamp,
}

/// One maintenance action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SpaceStep {
    /// Compact the store to `revision` through `via` (the alarm is raised).
    Compact {
        /// A serving member.
        via: MemberTarget,
        /// The current revision.
        revision: u64,
    },
    /// Defragment one member.
    Defragment {
        /// The member.
        member: MemberSpace,
        /// Why, for the log and the Event.
        why: String,
    },
    /// Deactivate every `NOSPACE` alarm through `via`.
    Disarm {
        /// A serving member.
        via: MemberTarget,
        /// The largest database and its member's quota, for the Event.
        largest: (u64, u64),
    },
    /// Delete a member's pod so that it restarts with the wanted quota.
    RestartMember {
        /// Pod (and member) name.
        pod: String,
        /// Pod UID, the deletion precondition.
        uid: String,
        /// The quota it runs with.
        quota: u64,
        /// The quota wanted.
        wanted: u64,
    },
}

/// What [`plan`] decided.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SpacePlan {
    /// The next action, if any.
    pub step: Option<SpaceStep>,
    /// The `NOSPACE` alarm is raised.
    pub nospace: bool,
    /// What the user must do, in plain words, when the operator cannot free enough.
    pub problem: Option<String>,
    /// Why nothing is done although something should be (for the log).
    pub waiting: Option<String>,
}

impl SpacePlan {
    /// Whether the maintenance is under way: the reconciler comes back soon.
    pub fn busy(&self) -> bool {
        self.step.is_some() || (self.nospace && self.problem.is_none())
    }
}

/// Bytes as MiB with one decimal, for messages.
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / MIB as f64)
}

/// The quota a member runs with: its own report, else the wanted one.
fn quota_of(member: &MemberSpace, wanted: u64) -> u64 {
    member.quota.unwrap_or(wanted)
}

/// Whether `member`'s database fits under `quota` with the disarm headroom.
fn fits(db_size: u64, quota: u64) -> bool {
    db_size.saturating_mul(100) < quota.saturating_mul(100 - DISARM_HEADROOM_PERCENT)
}

fn elapsed(since: Timestamp, now: Timestamp) -> Duration {
    Duration::try_from(now.duration_since(since)).unwrap_or_default()
}

/// Whether a routine defragmentation of `member` is worth it: at least half of the
/// file is free (and the free part is at least [`ROUTINE_MIN_FREE`] or a tenth of the
/// quota), or the file passed 80% of the quota with a tenth of it free.
pub fn fragmented(member: &MemberSpace, quota: u64) -> bool {
    let free = member.free();
    let half_free = free.saturating_mul(2) >= member.db_size && free >= ROUTINE_MIN_FREE.min(quota / 10);
    let near_quota = member.db_size.saturating_mul(5) >= quota.saturating_mul(4)
        && free.saturating_mul(10) >= member.db_size;
    free > 0 && (half_free || near_quota)
}

/// The next maintenance action, if any (pure); see the module comment for the rules.
///
/// Under `NOSPACE`, in order: compact to the current revision (again at most every
/// [`COMPACT_INTERVAL`] while deletions leave new revisions); restart a member still
/// running with another quota than the spec's (a raised quota); defragment the
/// members with free pages; disarm once every database fits under its quota; else
/// say that the live data needs a larger quota. Otherwise, defragment a member
/// [`fragmented`] past the threshold.
pub fn plan(input: &SpaceInput<'_>) -> SpacePlan {
    let members = input.members;
    let nospace = members.iter().any(|member| member.nospace);
    let mut plan = SpacePlan { nospace, ..SpacePlan::default() };
    let serving: Vec<&MemberSpace> = members.iter().filter(|member| member.serving).collect();
    let leaders: std::collections::BTreeSet<u64> = serving.iter().map(|member| member.leader).collect();
    if input.voters == 0 {
        plan.waiting = Some("no member list".into());
        return plan;
    }
    if input.learners > 0 {
        plan.waiting = Some("etcd's membership is changing".into());
        return plan;
    }
    if serving.len() * 2 <= input.voters || leaders.len() > 1 {
        plan.waiting =
            Some(format!("{} of {} members serve: no quorum to maintain with", serving.len(), input.voters));
        return plan;
    }
    let all_serve = serving.len() == input.voters;
    let via = serving.iter().find(|member| member.is_leader()).unwrap_or(&serving[0]).target.clone();
    let memory = input.memory;

    if nospace {
        let revision = serving.iter().map(|member| member.revision).max().unwrap_or(0);
        let compacted_to = memory.compacted.map(|(revision, _)| revision);
        let compact_due = memory.compacted.is_none_or(|(_, at)| elapsed(at, input.now) >= COMPACT_INTERVAL);
        if revision > compacted_to.unwrap_or(0) && compact_due {
            plan.step = Some(SpaceStep::Compact { via, revision });
            return plan;
        }
        if let Some(step) = restart_for_quota(input, &serving, all_serve) {
            plan.step = Some(step);
            return plan;
        }
        let wanted = input.wanted_quota;
        if let Some(step) = next_defragmentation(input, &serving, |member| {
            (member.free() >= NOSPACE_MIN_FREE)
                .then(|| format!("alarm NOSPACE: {} of {} free", mib(member.free()), mib(member.db_size)))
        }) {
            plan.step = Some(step);
            return plan;
        }
        if serving.iter().all(|member| fits(member.db_size, quota_of(member, wanted))) {
            let largest = serving
                .iter()
                .map(|member| (member.db_size, quota_of(member, wanted)))
                .max()
                .unwrap_or_default();
            plan.step = Some(SpaceStep::Disarm { via, largest });
            return plan;
        }
        // Nothing to free now. Either a defragmentation waits for its turn, members
        // restart with a new quota, or the live data itself does not fit.
        let crowded: Vec<&&MemberSpace> =
            serving.iter().filter(|member| !fits(member.in_use, quota_of(member, wanted))).collect();
        let live = crowded.iter().map(|member| member.in_use).max().unwrap_or(0);
        let quota = crowded.iter().map(|member| quota_of(member, wanted)).min().unwrap_or(wanted);
        if crowded.is_empty() {
            plan.waiting = Some("a defragmentation waits for its turn".into());
        } else if serving.iter().any(|member| member.quota.is_some_and(|quota| quota != wanted)) {
            plan.waiting = Some(format!("members restart with quota {} one at a time", mib(wanted)));
        } else if live >= quota {
            plan.problem = Some(format!(
                "live data {} exceeds quota {}: raise spec.etcd.quotaBackendBytes",
                mib(live),
                mib(quota)
            ));
        } else {
            plan.problem = Some(format!(
                "live data {} leaves less than {DISARM_HEADROOM_PERCENT}% of quota {} free: raise \
                 spec.etcd.quotaBackendBytes",
                mib(live),
                mib(quota)
            ));
        }
        return plan;
    }

    if !all_serve {
        return plan;
    }
    plan.step = next_defragmentation(input, &serving, |member| {
        let quota = quota_of(member, input.wanted_quota);
        fragmented(member, quota).then(|| {
            format!(
                "{} of {} free ({}% fragmented), quota {}",
                mib(member.free()),
                mib(member.db_size),
                member.free() * 100 / member.db_size.max(1),
                mib(quota)
            )
        })
    });
    plan
}

/// The member to defragment next among those `due` gives a reason for: followers
/// first (by name), the leader last; none while a defragmentation may still run, a
/// member within [`DEFRAG_COOLDOWN`] of its last one, or when the others alone would
/// not hold a quorum.
fn next_defragmentation(
    input: &SpaceInput<'_>,
    serving: &[&MemberSpace],
    due: impl Fn(&MemberSpace) -> Option<String>,
) -> Option<SpaceStep> {
    if input.memory.hold_until.is_some_and(|until| input.now < until) {
        return None;
    }
    let others_hold_quorum = input.voters == 1 || (serving.len() - 1) * 2 > input.voters;
    if !others_hold_quorum {
        return None;
    }
    let nospace = serving.iter().any(|member| member.nospace);
    let cooldown = if nospace { NOSPACE_DEFRAG_COOLDOWN } else { DEFRAG_COOLDOWN };
    let mut candidates: Vec<&&MemberSpace> = serving
        .iter()
        .filter(|member| {
            input
                .memory
                .defragmented
                .get(&member.target.name)
                .is_none_or(|at| elapsed(*at, input.now) >= cooldown)
        })
        .collect();
    candidates.sort_by_key(|member| (member.is_leader(), member.target.name.clone()));
    candidates
        .into_iter()
        .find_map(|member| due(member).map(|why| SpaceStep::Defragment { member: (*member).clone(), why }))
}

/// Under `NOSPACE`, a member whose reported quota is not the wanted one: its pod, to
/// delete so that it restarts with the StatefulSet's new flag. The StatefulSet does
/// this itself, but waits for each restarted pod to be Ready, which the alarm
/// prevents. Followers first, the leader last, only when every other member serves
/// and no pod is being deleted, never with ephemeral storage.
fn restart_for_quota(input: &SpaceInput<'_>, serving: &[&MemberSpace], all_serve: bool) -> Option<SpaceStep> {
    if input.ephemeral || !all_serve || input.pods.iter().any(|pod| pod.deleting) {
        return None;
    }
    let mut outdated: Vec<&&MemberSpace> = serving
        .iter()
        .filter(|member| member.quota.is_some_and(|quota| quota != input.wanted_quota))
        .collect();
    outdated.sort_by_key(|member| (member.is_leader(), member.target.name.clone()));
    outdated.into_iter().find_map(|member| {
        let pod = input.pods.iter().find(|pod| pod.name == member.target.name)?;
        Some(SpaceStep::RestartMember {
            pod: pod.name.clone(),
            uid: pod.uid.clone(),
            quota: member.quota.unwrap_or_default(),
            wanted: input.wanted_quota,
        })
    })
}

/// What a step did, for the Event.
#[derive(Clone, Debug, PartialEq)]
pub enum StepOutcome {
    /// Compacted to this revision (or found it compacted already).
    Compacted {
        /// The revision.
        revision: u64,
    },
    /// One member defragmented.
    Defragmented {
        /// Its name.
        member: String,
        /// `leader` or `follower`.
        role: &'static str,
        /// File size before and after.
        before: u64,
        /// File size after.
        after: u64,
        /// How long the call took.
        took: Duration,
    },
    /// Alarms deactivated.
    Disarmed {
        /// How many.
        alarms: usize,
    },
}

impl StepOutcome {
    /// One line for the log and the Event.
    pub fn describe(&self) -> String {
        match self {
            StepOutcome::Compacted { revision } => {
                format!("etcd compacted to revision {revision} (alarm NOSPACE raised)")
            }
            StepOutcome::Defragmented { member, role, before, after, took } => format!(
                "etcd member {member} ({role}) defragmented in {:.2}s: {} -> {}, {} freed",
                took.as_secs_f64(),
                mib(*before),
                mib(*after),
                mib(before.saturating_sub(*after))
            ),
            StepOutcome::Disarmed { alarms } => {
                format!("etcd alarm NOSPACE disarmed ({alarms} member alarm(s)): writes are accepted again")
            }
        }
    }
}

#[derive(Debug, Default, Deserialize)]
struct AlarmMember {
    #[serde(rename = "memberID", default)]
    member_id: serde_json::Value,
    #[serde(default)]
    alarm: String,
}

#[derive(Debug, Default, Deserialize)]
struct AlarmResponse {
    #[serde(default)]
    alarms: Vec<AlarmMember>,
}

/// Does the gateway calls of `step` (not [`SpaceStep::RestartMember`], a pod
/// deletion). `timeout` bounds each call but the defragmentation ([`DEFRAG_TIMEOUT`]).
pub async fn run_step(
    client: &TlsClient,
    step: &SpaceStep,
    timeout: Duration,
) -> Result<StepOutcome, String> {
    match step {
        SpaceStep::Compact { via, revision } => {
            // physical: the answer waits until the compaction reached the backend, so
            // the next probe sees the freed pages.
            let body = serde_json::json!({ "revision": revision.to_string(), "physical": true }).to_string();
            match gateway_call::<serde_json::Value>(client, via, "/v3/kv/compaction", &body, timeout).await {
                Ok(_) => Ok(StepOutcome::Compacted { revision: *revision }),
                Err(error) if error.contains("compacted") => {
                    Ok(StepOutcome::Compacted { revision: *revision })
                }
                Err(error) => Err(error),
            }
        }
        SpaceStep::Defragment { member, .. } => {
            let started = Instant::now();
            gateway_call::<serde_json::Value>(
                client,
                &member.target,
                "/v3/maintenance/defragment",
                "{}",
                DEFRAG_TIMEOUT,
            )
            .await?;
            let took = started.elapsed();
            let status: StatusResponse =
                gateway_call(client, &member.target, "/v3/maintenance/status", "{}", timeout).await?;
            Ok(StepOutcome::Defragmented {
                member: member.target.name.clone(),
                role: member.role(),
                before: member.db_size,
                after: status.db_size,
                took,
            })
        }
        SpaceStep::Disarm { via, .. } => {
            let listed: AlarmResponse =
                gateway_call(client, via, "/v3/maintenance/alarm", r#"{"action":"GET"}"#, timeout).await?;
            let mut alarms = 0;
            for alarm in listed.alarms.iter().filter(|alarm| is_nospace(&alarm.alarm)) {
                // The gateway renders the uint64 member ID as a string; send it back as given.
                let member_id = match &alarm.member_id {
                    serde_json::Value::String(id) => id.clone(),
                    other => other.to_string(),
                };
                let body =
                    serde_json::json!({ "action": "DEACTIVATE", "memberID": member_id, "alarm": "NOSPACE" })
                        .to_string();
                gateway_call::<serde_json::Value>(client, via, "/v3/maintenance/alarm", &body, timeout)
                    .await?;
                alarms += 1;
            }
            Ok(StepOutcome::Disarmed { alarms })
        }
        SpaceStep::RestartMember { .. } => Err("a member restart is a pod deletion, not an etcd call".into()),
    }
}

/// Each tenant's [`SpaceMemory`], kept between passes, by (namespace, name).
#[derive(Default)]
pub struct SpaceTracker {
    tenants: Mutex<HashMap<(String, String), SpaceMemory>>,
}

impl SpaceTracker {
    /// The memory of a tenant (empty when none).
    pub fn get(&self, namespace: &str, name: &str) -> SpaceMemory {
        self.lock().get(&(namespace.to_string(), name.to_string())).cloned().unwrap_or_default()
    }

    /// Replaces the memory of a tenant.
    pub fn set(&self, namespace: &str, name: &str, memory: SpaceMemory) {
        self.lock().insert((namespace.to_string(), name.to_string()), memory);
    }

    /// Forgets a tenant (deleted).
    pub fn forget(&self, namespace: &str, name: &str) {
        self.lock().remove(&(namespace.to_string(), name.to_string()));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), SpaceMemory>> {
        self.tenants.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The memory after `step` was tried at `now` with `result` (pure). A new alarm-free
/// pass forgets the compaction and the report of the last alarm.
pub fn remember(
    mut memory: SpaceMemory,
    plan: &SpacePlan,
    result: Option<&Result<StepOutcome, String>>,
    now: Timestamp,
) -> SpaceMemory {
    if !plan.nospace {
        memory.compacted = None;
        memory.quota_reported = false;
    }
    if plan.problem.is_some() {
        memory.quota_reported = true;
    }
    let hold = jiff::SignedDuration::try_from(DEFRAG_TIMEOUT).unwrap_or_default();
    match (&plan.step, result) {
        (Some(SpaceStep::Compact { revision, .. }), Some(Ok(_))) => memory.compacted = Some((*revision, now)),
        (Some(SpaceStep::Defragment { member, .. }), Some(Ok(_))) => {
            memory.defragmented.insert(member.target.name.clone(), now);
            memory.hold_until = None;
        }
        (Some(SpaceStep::Defragment { member, .. }), Some(Err(_))) => {
            memory.defragmented.insert(member.target.name.clone(), now);
            memory.hold_until = now.checked_add(hold).ok();
        }
        _ => {}
    }
    memory
}

#[cfg(test)]
mod tests {
    use super::super::gateway::{HealthResponse, MemberAnswer, MemberReport, ResponseHeader};
    use super::*;

    const LEADER: u64 = 100;
    const QUOTA: u64 = 64 * MIB;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_750_000_000 + second).expect("valid")
    }

    fn member(ordinal: u64, db_size: u64, in_use: u64, nospace: bool) -> MemberSpace {
        MemberSpace {
            target: MemberTarget {
                name: format!("team-a-etcd-{ordinal}"),
                ip: format!("10.200.0.{}", 10 + ordinal).parse().expect("ip"),
                server_name: format!("team-a-etcd-{ordinal}.team-a-etcd.tenants.svc"),
            },
            member_id: LEADER + ordinal,
            leader: LEADER,
            db_size,
            in_use,
            quota: Some(QUOTA),
            revision: 5000,
            nospace,
            serving: true,
        }
    }

    fn input<'a>(members: &'a [MemberSpace], memory: &'a SpaceMemory, now: Timestamp) -> SpaceInput<'a> {
        SpaceInput {
            members,
            voters: members.len(),
            learners: 0,
            wanted_quota: QUOTA,
            pods: &[],
            ephemeral: false,
            memory,
            now,
        }
    }

    fn defragmented(plan: &SpacePlan) -> Option<&str> {
        match &plan.step {
            Some(SpaceStep::Defragment { member, .. }) => Some(member.target.name.as_str()),
            _ => None,
        }
    }

    #[test]
    fn members_are_read_from_the_probe_with_nospace_as_the_only_tolerated_fault() {
        let target = member(0, 0, 0, false).target;
        let answer = |health: &str, reason: &str, errors: Vec<String>| MemberAnswer {
            health: HealthResponse { health: health.into(), reason: reason.into() },
            status: StatusResponse {
                header: ResponseHeader { member_id: LEADER, cluster_id: 7, revision: 42 },
                leader: LEADER,
                errors,
                db_size: 32 * MIB,
                db_size_in_use: 8 * MIB,
                db_size_quota: QUOTA,
                ..StatusResponse::default()
            },
        };
        let observation = |answer: MemberAnswer| EtcdObservation {
            targets: vec![target.clone()],
            reports: vec![MemberReport { name: target.name.clone(), answer: Ok(answer) }],
            ..EtcdObservation::default()
        };
        let alarmed = member_spaces(&observation(answer(
            "false",
            "ALARM NOSPACE",
            vec!["memberID:100 alarm:NOSPACE ".into()],
        )));
        assert_eq!(alarmed.len(), 1);
        let space = &alarmed[0];
        assert!(space.nospace && space.serving && space.is_leader());
        assert_eq!(
            (space.db_size, space.in_use, space.free(), space.quota),
            (32 * MIB, 8 * MIB, 24 * MIB, Some(QUOTA))
        );
        assert_eq!(space.revision, 42);
        let corrupt =
            member_spaces(&observation(answer("false", "ALARM CORRUPT", vec!["alarm:CORRUPT".into()])));
        assert!(!corrupt[0].serving, "any other alarm stops maintenance");
        assert!(member_spaces(&EtcdObservation::default()).is_empty());
    }

    #[test]
    fn fragmentation_threshold_needs_half_free_or_a_full_file() {
        assert!(fragmented(&member(0, 40 * MIB, 10 * MIB, false), QUOTA), "75% free, 30 MiB");
        assert!(!fragmented(&member(0, 40 * MIB, 30 * MIB, false), QUOTA), "25% free, far from the quota");
        assert!(!fragmented(&member(0, 4 * MIB, MIB, false), 2048 * MIB), "75% free but only 3 MiB");
        assert!(fragmented(&member(0, 4 * MIB, MIB, false), 16 * MIB), "3 MiB is a tenth of a small quota");
        assert!(fragmented(&member(0, 56 * MIB, 48 * MIB, false), QUOTA), "near the quota, 14% free");
        assert!(!fragmented(&member(0, 56 * MIB, 54 * MIB, false), QUOTA), "near the quota, nothing to free");
    }

    #[test]
    fn routine_defragmentation_takes_followers_first_and_the_leader_last_one_at_a_time() {
        let memory = SpaceMemory::default();
        let members = [
            member(0, 40 * MIB, 5 * MIB, false),
            member(1, 40 * MIB, 5 * MIB, false),
            member(2, 40 * MIB, 5 * MIB, false),
        ];
        let plan = plan(&input(&members, &memory, at(0)));
        assert_eq!(defragmented(&plan), Some("team-a-etcd-1"), "member 0 leads: last");
        assert!(!plan.nospace && plan.problem.is_none());

        let mut memory = SpaceMemory::default();
        for name in ["team-a-etcd-1", "team-a-etcd-2"] {
            memory.defragmented.insert(name.into(), at(0));
        }
        let next = super::plan(&input(&members, &memory, at(10)));
        assert_eq!(defragmented(&next), Some("team-a-etcd-0"), "then the leader");
        memory.defragmented.insert("team-a-etcd-0".into(), at(10));
        assert_eq!(super::plan(&input(&members, &memory, at(20))).step, None, "each within its cooldown");
        assert_eq!(
            defragmented(&super::plan(&input(&members, &memory, at(70)))),
            Some("team-a-etcd-1"),
            "after the cooldown, again if still fragmented"
        );
    }

    #[test]
    fn no_defragmentation_without_a_quorum_to_spare_or_while_one_may_still_run() {
        let memory = SpaceMemory::default();
        let mut members = [
            member(0, 40 * MIB, 5 * MIB, false),
            member(1, 40 * MIB, 5 * MIB, false),
            member(2, 40 * MIB, 5 * MIB, false),
        ];
        members[2].serving = false;
        assert_eq!(plan(&input(&members, &memory, at(0))).step, None, "2 of 3: defragmenting one leaves one");
        let mut five: Vec<MemberSpace> =
            (0..5).map(|ordinal| member(ordinal, 40 * MIB, 5 * MIB, false)).collect();
        five[4].serving = false;
        assert_eq!(plan(&input(&five, &memory, at(0))).step, None, "routine: only with every member serving");
        for member in &mut five {
            member.nospace = true;
        }
        let compacted = SpaceMemory { compacted: Some((5000, at(0))), ..SpaceMemory::default() };
        assert_eq!(
            defragmented(&plan(&input(&five, &compacted, at(5)))),
            Some("team-a-etcd-1"),
            "NOSPACE, 4 of 5: 3 remain"
        );
        let lone = [member(0, 40 * MIB, 5 * MIB, false)];
        assert_eq!(
            defragmented(&plan(&input(&lone, &memory, at(0)))),
            Some("team-a-etcd-0"),
            "a single member"
        );

        let held = SpaceMemory { hold_until: Some(at(300)), ..SpaceMemory::default() };
        assert_eq!(plan(&input(&lone, &held, at(100))).step, None, "a failed call may still run in etcd");
        let mut scaling = input(&lone, &memory, at(0));
        scaling.learners = 1;
        assert_eq!(plan(&scaling).step, None, "membership changing");
        let mut split = [
            member(0, 40 * MIB, 5 * MIB, false),
            member(1, 40 * MIB, 5 * MIB, false),
            member(2, 40 * MIB, 5 * MIB, false),
        ];
        split[2].leader = LEADER + 2;
        assert_eq!(plan(&input(&split, &memory, at(0))).step, None, "two leaders");
    }

    #[test]
    fn nospace_recovery_compacts_defragments_then_disarms() {
        let full = |db_size, in_use| member(0, db_size, in_use, true);
        let mut memory = SpaceMemory::default();

        // 1. compact to the current revision
        let members = [full(QUOTA, 60 * MIB)];
        let first = plan(&input(&members, &memory, at(0)));
        assert!(first.nospace && first.busy());
        assert_eq!(first.step, Some(SpaceStep::Compact { via: members[0].target.clone(), revision: 5000 }));
        memory = remember(memory, &first, Some(&Ok(StepOutcome::Compacted { revision: 5000 })), at(0));

        // 2. the compaction freed pages: defragment
        let members = [full(QUOTA, 10 * MIB)];
        let second = plan(&input(&members, &memory, at(2)));
        assert_eq!(defragmented(&second), Some("team-a-etcd-0"));
        let outcome = StepOutcome::Defragmented {
            member: "team-a-etcd-0".into(),
            role: "leader",
            before: QUOTA,
            after: 10 * MIB,
            took: Duration::from_millis(800),
        };
        assert_eq!(
            outcome.describe(),
            "etcd member team-a-etcd-0 (leader) defragmented in 0.80s: 64.0 MiB -> 10.0 MiB, 54.0 MiB freed"
        );
        memory = remember(memory, &second, Some(&Ok(outcome)), at(2));

        // 3. every database fits: disarm
        let members = [full(10 * MIB, 10 * MIB)];
        let third = plan(&input(&members, &memory, at(4)));
        assert_eq!(
            third.step,
            Some(SpaceStep::Disarm { via: members[0].target.clone(), largest: (10 * MIB, QUOTA) })
        );
        assert_eq!(third.problem, None);

        // Alarm gone: the episode is forgotten.
        let calm = [member(0, 10 * MIB, 10 * MIB, false)];
        let after = plan(&input(&calm, &memory, at(6)));
        assert_eq!(after, SpacePlan::default());
        let memory = remember(memory, &after, None, at(6));
        assert_eq!(memory.compacted, None);
    }

    #[test]
    fn nospace_compacts_again_after_deletions_but_not_in_a_loop() {
        let memory = SpaceMemory { compacted: Some((5000, at(0))), ..SpaceMemory::default() };
        let mut members = [member(0, QUOTA, 63 * MIB, true)];
        members[0].revision = 5100;
        let soon = plan(&input(&members, &memory, at(5)));
        assert!(!matches!(soon.step, Some(SpaceStep::Compact { .. })), "{soon:?}");
        let later = plan(&input(&members, &memory, at(10)));
        assert!(matches!(later.step, Some(SpaceStep::Compact { revision: 5100, .. })), "{later:?}");
    }

    #[test]
    fn under_nospace_a_defragmentation_in_its_cooldown_is_waited_for_not_blamed_on_the_data() {
        let mut memory = SpaceMemory { compacted: Some((5000, at(0))), ..SpaceMemory::default() };
        memory.defragmented.insert("team-a-etcd-0".into(), at(0));
        let members = [member(0, QUOTA, 7 * MIB, true)];
        let waiting = plan(&input(&members, &memory, at(5)));
        assert_eq!((waiting.step.clone(), waiting.problem.clone()), (None, None), "{waiting:?}");
        assert!(waiting.busy(), "comes back soon");
        assert_eq!(
            defragmented(&plan(&input(&members, &memory, at(11)))),
            Some("team-a-etcd-0"),
            "10 s later"
        );
    }

    #[test]
    fn live_data_above_the_quota_is_said_plainly_and_nothing_is_disarmed() {
        let memory = SpaceMemory { compacted: Some((5000, at(0))), ..SpaceMemory::default() };
        let members = [member(0, QUOTA + MIB, QUOTA + 512 * 1024, true)];
        let plan = plan(&input(&members, &memory, at(5)));
        assert_eq!(plan.step, None);
        assert!(!plan.busy());
        assert_eq!(
            plan.problem.as_deref(),
            Some("live data 64.5 MiB exceeds quota 64.0 MiB: raise spec.etcd.quotaBackendBytes")
        );
        let close = [member(0, 62 * MIB, 62 * MIB, true)];
        let close_plan = super::plan(&input(&close, &memory, at(5)));
        assert!(
            close_plan.problem.as_deref().is_some_and(|problem| problem.contains("less than 5%")),
            "{close_plan:?}"
        );
        assert!(remember(memory, &close_plan, None, at(5)).quota_reported);
    }

    #[test]
    fn a_raised_quota_restarts_members_still_on_the_old_one_followers_first() {
        let memory = SpaceMemory { compacted: Some((5000, at(0))), ..SpaceMemory::default() };
        let wanted = 128 * MIB;
        let mut members: Vec<MemberSpace> =
            (0..3).map(|ordinal| member(ordinal, QUOTA, QUOTA - MIB / 2, true)).collect();
        members[2].quota = Some(wanted); // the StatefulSet restarted it already
        let pods: Vec<MemberPod> = (0..3)
            .map(|ordinal| MemberPod {
                name: format!("team-a-etcd-{ordinal}"),
                uid: format!("uid-{ordinal}"),
                ready: ordinal == 2,
                not_ready_since: None,
                deleting: false,
            })
            .collect();
        let mut raised = input(&members, &memory, at(5));
        raised.wanted_quota = wanted;
        raised.pods = &pods;
        assert_eq!(
            plan(&raised).step,
            Some(SpaceStep::RestartMember {
                pod: "team-a-etcd-1".into(),
                uid: "uid-1".into(),
                quota: QUOTA,
                wanted
            })
        );
        let mut ephemeral = raised.clone();
        ephemeral.ephemeral = true;
        let waiting = plan(&ephemeral);
        assert_eq!(waiting.step, None, "an emptyDir would lose the data");
        assert_eq!(waiting.problem, None, "the quota was raised: not the user's turn");

        let mut one_down = members.clone();
        one_down[0].serving = false;
        let mut partial = raised.clone();
        partial.members = &one_down;
        assert_eq!(plan(&partial).step, None, "a restart needs every other member serving");

        // Every member on the new quota: disarm.
        let rolled: Vec<MemberSpace> = members
            .iter()
            .cloned()
            .map(|mut member| {
                member.quota = Some(wanted);
                member
            })
            .collect();
        let mut done = raised.clone();
        done.members = &rolled;
        assert!(matches!(plan(&done).step, Some(SpaceStep::Disarm { .. })), "{:?}", plan(&done));
    }

    #[test]
    fn a_failed_defragmentation_holds_the_others_back() {
        let members = [member(0, 40 * MIB, 5 * MIB, false)];
        let plan = plan(&input(&members, &SpaceMemory::default(), at(0)));
        let memory = remember(SpaceMemory::default(), &plan, Some(&Err("timed out".into())), at(0));
        assert_eq!(memory.hold_until, Some(at(300)));
    }
}
