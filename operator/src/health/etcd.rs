//! The verdict on a tenant's etcd (pure): from every member's answers and the member
//! list that [`crate::etcd::gateway::member_answers`] collected, whether etcd serves.

use super::ProbeOutcome;
use crate::etcd::gateway::{Member, MemberReport, StatusResponse};
use crate::etcd::maintenance::{is_nospace, mib};

/// A database this full (percent of its quota) is worth a word in a healthy verdict.
const NEAR_QUOTA_PERCENT: u64 = 80;

/// "database 16.0 MiB of quota 16.0 MiB, 3.2 MiB in use".
fn sizes(status: &StatusResponse) -> String {
    let quota = if status.db_size_quota > 0 { mib(status.db_size_quota) } else { "its quota".into() };
    format!("database {} of quota {quota}, {} in use", mib(status.db_size), mib(status.db_size_in_use))
}

/// "; database at 85% of its quota" for the fullest member past [`NEAR_QUOTA_PERCENT`],
/// else nothing. Whole percents, so the message (and the status) changes seldom.
fn near_quota(reports: &[MemberReport]) -> String {
    let fullest = reports
        .iter()
        .filter_map(|report| report.answer.as_ref().ok())
        .filter(|answer| answer.status.db_size_quota > 0)
        .map(|answer| answer.status.db_size.saturating_mul(100) / answer.status.db_size_quota)
        .max();
    match fullest {
        Some(percent) if percent >= NEAR_QUOTA_PERCENT => format!("; database at {percent}% of its quota"),
        _ => String::new(),
    }
}

/// The verdict on etcd from every member's answers and the member list (pure).
///
/// Healthy when every expected member answers healthy without errors, they all
/// follow the same non-zero leader, and the member list has the expected size (a
/// member list longer than the spec means a member was added and not removed). A
/// learner that has not answered yet is not missed: it was just added by a scale-up
/// and counts toward no quorum (see [`crate::etcd::scaling`]).
pub fn verdict(
    expected_members: usize,
    reports: &[MemberReport],
    member_list: Option<&[Member]>,
) -> ProbeOutcome {
    let mut problems = Vec::new();
    let mut leaders = std::collections::BTreeSet::new();
    let mut healthy = 0;
    let learners: std::collections::BTreeSet<&str> = member_list
        .into_iter()
        .flatten()
        .filter(|member| member.is_learner && !member.name.is_empty())
        .map(|member| member.name.as_str())
        .collect();
    for report in reports {
        let learner = learners.contains(report.name.as_str());
        match &report.answer {
            // A learner catching up (its client port opens once it joined) is the
            // scaling's business, not a fault of the cluster that serves.
            Err(_) if learner => {}
            Ok(answer) if learner && !answer.health.is_healthy() => {}
            Err(error) => problems.push(format!("{}: {error}", report.name)),
            // Sizes matter here: they say whether compaction and defragmentation can
            // free enough or the quota must grow (see crate::etcd::maintenance).
            Ok(answer)
                if answer.status.errors.iter().any(|error| is_nospace(error))
                    || is_nospace(&answer.health.reason) =>
            {
                problems.push(format!("{}: alarm NOSPACE, {}", report.name, sizes(&answer.status)))
            }
            Ok(answer) if !answer.health.is_healthy() => {
                problems.push(format!("{}: unhealthy: {}", report.name, answer.health.reason))
            }
            Ok(answer) if !answer.status.errors.is_empty() => {
                problems.push(format!("{}: {}", report.name, answer.status.errors.join(", ")))
            }
            Ok(answer) if answer.status.leader == 0 => problems.push(format!("{}: no leader", report.name)),
            Ok(answer) => {
                healthy += 1;
                leaders.insert(answer.status.leader);
            }
        }
    }
    let starting_learners = member_list.map_or(0, |members| {
        members
            .iter()
            .filter(|member| member.is_learner)
            .filter(|member| !reports.iter().any(|report| report.name == member.name))
            .count()
    });
    if reports.len() + starting_learners < expected_members {
        problems.push(format!("{} of {expected_members} member pods running", reports.len()));
    }
    if leaders.len() > 1 {
        problems.push(format!("members follow {} different leaders", leaders.len()));
    }
    let leader_name = leaders.iter().next().and_then(|leader| {
        let members = member_list?;
        members.iter().find(|member| member.id == *leader).map(|member| member.name.clone())
    });
    match member_list {
        Some(members) if members.len() != expected_members => {
            problems.push(format!("member list has {} members, expected {expected_members}", members.len()))
        }
        Some(_) => {}
        None if healthy > 0 => problems.push("no member answered the member list".into()),
        None => {}
    }
    if problems.is_empty() {
        let listed = member_list.map_or(0, <[Member]>::len);
        ProbeOutcome::Healthy(format!(
            "{healthy}/{expected_members} members healthy, leader {}, member list has {listed}{}",
            leader_name.as_deref().unwrap_or("unnamed"),
            near_quota(reports)
        ))
    } else {
        ProbeOutcome::Unhealthy(problems.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::etcd::gateway::{HealthResponse, MemberAnswer, StatusResponse};

    const LEADER: u64 = 7868280335097373653;

    fn answer(leader: u64) -> MemberAnswer {
        MemberAnswer {
            health: HealthResponse { health: "true".into(), reason: String::new() },
            status: StatusResponse { leader, ..StatusResponse::default() },
        }
    }

    fn report(name: &str, answer: Result<MemberAnswer, String>) -> MemberReport {
        MemberReport { name: name.into(), answer }
    }

    fn members(count: u64) -> Vec<Member> {
        (0..count)
            .map(|index| Member {
                id: LEADER + index,
                name: format!("team-a-etcd-{index}"),
                peer_urls: Vec::new(),
                is_learner: false,
            })
            .collect()
    }

    #[test]
    fn one_healthy_member_with_its_list_is_healthy() {
        let reports = [report("team-a-etcd-0", Ok(answer(LEADER)))];
        let outcome = verdict(1, &reports, Some(&members(1)));
        assert_eq!(
            outcome,
            ProbeOutcome::Healthy("1/1 members healthy, leader team-a-etcd-0, member list has 1".into())
        );
    }

    #[test]
    fn an_unreachable_member_makes_etcd_unhealthy_and_is_named() {
        let reports = [
            report("team-a-etcd-0", Ok(answer(LEADER))),
            report("team-a-etcd-1", Err("no answer within 2s".into())),
            report("team-a-etcd-2", Ok(answer(LEADER))),
        ];
        let ProbeOutcome::Unhealthy(message) = verdict(3, &reports, Some(&members(3))) else {
            panic!("must be unhealthy");
        };
        assert_eq!(message, "team-a-etcd-1: no answer within 2s");
    }

    #[test]
    fn split_leaders_missing_pods_alarms_and_list_size_are_problems() {
        let mut alarmed = answer(LEADER);
        alarmed.status.errors = vec!["NOSPACE".into()];
        let reports = [
            report("team-a-etcd-0", Ok(answer(LEADER))),
            report("team-a-etcd-1", Ok(answer(LEADER + 1))),
            report("team-a-etcd-2", Ok(alarmed)),
        ];
        let ProbeOutcome::Unhealthy(message) = verdict(3, &reports, Some(&members(4))) else {
            panic!("must be unhealthy");
        };
        assert!(
            message.contains("team-a-etcd-2: alarm NOSPACE, database 0.0 MiB of quota its quota"),
            "{message}"
        );
        assert!(message.contains("2 different leaders"), "{message}");
        assert!(message.contains("member list has 4 members, expected 3"), "{message}");

        let ProbeOutcome::Unhealthy(missing) = verdict(3, &reports[..1], Some(&members(3))) else {
            panic!("must be unhealthy");
        };
        assert!(missing.contains("1 of 3 member pods running"), "{missing}");
    }

    #[test]
    fn nospace_and_a_nearly_full_database_say_their_sizes() {
        let mib = 1024 * 1024;
        let mut full = answer(LEADER);
        full.health = HealthResponse { health: "false".into(), reason: "ALARM NOSPACE".into() };
        full.status.errors = vec!["memberID:1 alarm:NOSPACE ".into()];
        (full.status.db_size, full.status.db_size_in_use, full.status.db_size_quota) =
            (16 * mib, 3 * mib, 16 * mib);
        let reports = [report("team-a-etcd-0", Ok(full))];
        assert_eq!(
            verdict(1, &reports, Some(&members(1))),
            ProbeOutcome::Unhealthy(
                "team-a-etcd-0: alarm NOSPACE, database 16.0 MiB of quota 16.0 MiB, 3.0 MiB in use".into()
            )
        );
        let mut nearly = answer(LEADER);
        (nearly.status.db_size, nearly.status.db_size_quota) = (14 * mib, 16 * mib);
        let reports = [report("team-a-etcd-0", Ok(nearly))];
        let ProbeOutcome::Healthy(message) = verdict(1, &reports, Some(&members(1))) else {
            panic!("healthy")
        };
        assert!(message.ends_with("; database at 87% of its quota"), "{message}");
    }

    #[test]
    fn a_learner_that_is_still_starting_is_not_missed() {
        let mut listed = members(2);
        listed[1].is_learner = true;
        listed[1].name = String::new();
        let reports = [report("team-a-etcd-0", Ok(answer(LEADER)))];
        assert!(
            verdict(2, &reports, Some(&listed)).is_healthy(),
            "{:?}",
            verdict(2, &reports, Some(&listed))
        );
        listed[1].name = "team-a-etcd-1".into();
        let catching_up = [
            report("team-a-etcd-0", Ok(answer(LEADER))),
            report("team-a-etcd-1", Err("no answer within 2s".into())),
        ];
        assert!(verdict(2, &catching_up, Some(&listed)).is_healthy());
        listed[1].is_learner = false;
        assert!(!verdict(2, &catching_up, Some(&listed)).is_healthy(), "a voter must answer");
        assert!(!verdict(2, &reports, Some(&listed)).is_healthy(), "a voter is missed");
    }

    #[test]
    fn no_leader_and_no_member_list_are_problems() {
        let reports = [report("team-a-etcd-0", Ok(answer(0)))];
        assert_eq!(
            verdict(1, &reports, Some(&members(1))),
            ProbeOutcome::Unhealthy("team-a-etcd-0: no leader".into())
        );
        let reports = [report("team-a-etcd-0", Ok(answer(LEADER)))];
        assert_eq!(
            verdict(1, &reports, None),
            ProbeOutcome::Unhealthy("no member answered the member list".into())
        );
    }
}
