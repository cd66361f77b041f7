//! What a backup Job tells the operator, and what the operator makes of it (pure).
//!
//! The agent writes one JSON [`AgentReport`] as its container's termination message
//! (`/dev/termination-log`); the kubelet copies it into the pod's status, where the
//! operator reads it from the finished Job's pod. So the agent needs no right to write
//! the TenantCluster's status, and what it did is visible with `kubectl get pod -o yaml`.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::{Deserialize, Serialize};

use crate::api::LastBackup;

/// Where the agent writes its report.
pub const TERMINATION_LOG: &str = "/dev/termination-log";
/// The container name of the agent in the backup Job's pod.
pub const AGENT_CONTAINER: &str = "backup-agent";
/// The init container of an etcd member restoring a snapshot.
pub const RESTORE_CONTAINER: &str = "etcd-restore";

/// Why a backup failed, as `BackupReady`'s reason.
pub mod failure {
    /// No etcd member answered healthy as a voter.
    pub const ETCD_UNAVAILABLE: &str = "EtcdUnavailable";
    /// The store refused or did not answer.
    pub const STORE_UNREACHABLE: &str = "StoreUnreachable";
    /// Anything else (the message says what).
    pub const FAILED: &str = "Failed";
}

/// The agent's report, one JSON object.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AgentReport {
    /// `Succeeded` or `Failed`.
    pub result: String,
    /// On failure, one of [`failure`].
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// On failure, what went wrong, one line.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// The snapshot's key.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key: String,
    /// Bytes.
    #[serde(default)]
    pub size: i64,
    /// etcd revision.
    #[serde(default)]
    pub revision: i64,
    /// Where it went.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub location: String,
    /// When it was taken, RFC 3339.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub time: String,
    /// Seconds the snapshot and upload took.
    #[serde(default)]
    pub seconds: f64,
    /// Snapshots deleted by retention.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deleted: Vec<String>,
    /// The etcd member the snapshot was streamed from.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub member: String,
    /// The members not chosen, each with why (`<member>: learner`, `<member>: not
    /// resolvable`...): what a backup during a scaling step or a member replacement saw.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub passed_over: Vec<String>,
}

impl AgentReport {
    /// A failure report.
    pub fn failed(reason: &str, message: impl Into<String>) -> Self {
        Self { result: "Failed".into(), reason: reason.into(), message: message.into(), ..Self::default() }
    }

    /// Whether the backup succeeded.
    pub fn succeeded(&self) -> bool {
        self.result == "Succeeded"
    }

    /// The `status.lastBackup` a successful report gives.
    pub fn last_backup(&self) -> Option<LastBackup> {
        if !self.succeeded() {
            return None;
        }
        let time = self.time.parse::<jiff::Timestamp>().ok()?;
        Some(LastBackup {
            time: Time(time),
            key: self.key.clone(),
            size: self.size,
            revision: self.revision,
            location: self.location.clone(),
        })
    }
}

/// The outcome of one finished backup Job.
#[derive(Clone, Debug, PartialEq)]
pub struct JobOutcome {
    /// The Job's name.
    pub job: String,
    /// When it finished.
    pub finished: jiff::Timestamp,
    /// The report of its last pod, or a stand-in when none could be read.
    pub report: AgentReport,
}

/// When `job` finished, and whether it succeeded; `None` while it runs.
pub fn job_finished(job: &Job) -> Option<(jiff::Timestamp, bool)> {
    let status = job.status.as_ref()?;
    let condition = status.conditions.iter().flatten().find(|condition| {
        (condition.type_ == "Complete" || condition.type_ == "Failed") && condition.status == "True"
    })?;
    let at = condition
        .last_transition_time
        .as_ref()
        .map(|time| time.0)
        .or(status.completion_time.as_ref().map(|time| time.0))?;
    Some((at, condition.type_ == "Complete"))
}

/// The report in the agent container's termination message of `pod`, if it wrote one.
pub fn pod_report(pod: &Pod, container: &str) -> Option<AgentReport> {
    let statuses = pod.status.as_ref()?;
    let status = statuses
        .container_statuses
        .iter()
        .chain(statuses.init_container_statuses.iter())
        .flatten()
        .find(|status| status.name == container)?;
    let terminated = status
        .state
        .as_ref()
        .and_then(|state| state.terminated.as_ref())
        .or(status.last_state.as_ref().and_then(|state| state.terminated.as_ref()))?;
    let message = terminated.message.as_deref()?.trim();
    serde_json::from_str(message).ok().or_else(|| {
        // A panic or a kill: the last log lines (FallbackToLogsOnError).
        let last = message.lines().last().unwrap_or(message);
        Some(AgentReport::failed(failure::FAILED, last.chars().take(300).collect::<String>()))
    })
}

/// The newest finished Job among `jobs` with its pods' report (pure). A succeeded Job
/// whose pod is gone is still a success; a failed one reports the newest failure its
/// pods wrote.
pub fn newest_outcome(jobs: &[Job], pods: &[Pod]) -> Option<JobOutcome> {
    let (job, finished, succeeded) = jobs
        .iter()
        .filter_map(|job| job_finished(job).map(|(at, succeeded)| (job, at, succeeded)))
        .max_by_key(|(_, at, _)| *at)?;
    let name = job.metadata.name.clone().unwrap_or_default();
    let mut job_pods: Vec<&Pod> = pods
        .iter()
        .filter(|pod| pod.metadata.labels.as_ref().and_then(|labels| labels.get("job-name")) == Some(&name))
        .collect();
    job_pods.sort_by_key(|pod| pod.metadata.creation_timestamp.as_ref().map(|time| time.0));
    let reports: Vec<AgentReport> =
        job_pods.iter().filter_map(|pod| pod_report(pod, AGENT_CONTAINER)).collect();
    let report = if succeeded {
        reports
            .into_iter()
            .rev()
            .find(AgentReport::succeeded)
            .unwrap_or_else(|| AgentReport { result: "Succeeded".into(), ..AgentReport::default() })
    } else {
        reports.into_iter().rev().find(|report| !report.succeeded()).unwrap_or_else(|| {
            AgentReport::failed(failure::FAILED, format!("backup Job {name} failed without a report"))
        })
    };
    Some(JobOutcome { job: name, finished, report })
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};
    use k8s_openapi::api::core::v1::{ContainerState, ContainerStateTerminated, ContainerStatus, PodStatus};
    use kube::api::ObjectMeta;

    use super::*;

    fn at(second: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_750_000_000 + second).expect("valid")
    }

    fn job(name: &str, finished: Option<(i64, &str)>) -> Job {
        Job {
            metadata: ObjectMeta { name: Some(name.into()), ..ObjectMeta::default() },
            status: Some(JobStatus {
                conditions: finished.map(|(second, type_)| {
                    vec![JobCondition {
                        type_: type_.into(),
                        status: "True".into(),
                        last_transition_time: Some(Time(at(second))),
                        ..JobCondition::default()
                    }]
                }),
                ..JobStatus::default()
            }),
            ..Job::default()
        }
    }

    fn pod(job: &str, message: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(format!("{job}-x")),
                labels: Some([("job-name".to_string(), job.to_string())].into()),
                ..ObjectMeta::default()
            },
            status: Some(PodStatus {
                container_statuses: Some(vec![ContainerStatus {
                    name: AGENT_CONTAINER.into(),
                    state: Some(ContainerState {
                        terminated: Some(ContainerStateTerminated {
                            message: Some(message.into()),
                            ..ContainerStateTerminated::default()
                        }),
                        ..ContainerState::default()
                    }),
                    ..ContainerStatus::default()
                }]),
                ..PodStatus::default()
            }),
            ..Pod::default()
        }
    }

    #[test]
    fn the_newest_finished_job_reports_its_pods_result() {
        let success = AgentReport {
            result: "Succeeded".into(),
            key: "t-1".into(),
            size: 4096,
            revision: 42,
            location: "pvc://t-backup/ns/t/t-1.db".into(),
            time: at(5).to_string(),
            ..AgentReport::default()
        };
        let jobs = [job("b-1", Some((10, "Complete"))), job("b-2", None), job("b-0", Some((1, "Failed")))];
        let pods = [pod("b-1", &serde_json::to_string(&success).expect("json")), pod("b-0", "boom")];
        let outcome = newest_outcome(&jobs, &pods).expect("one finished");
        assert_eq!((outcome.job.as_str(), outcome.finished), ("b-1", at(10)));
        let last = outcome.report.last_backup().expect("a success");
        assert_eq!((last.key.as_str(), last.size, last.revision, last.time.0), ("t-1", 4096, 42, at(5)));

        let failed = AgentReport::failed(failure::STORE_UNREACHABLE, "s3: connection refused");
        let jobs = [job("b-1", Some((10, "Complete"))), job("b-3", Some((20, "Failed")))];
        let pods = [pod("b-3", &serde_json::to_string(&failed).expect("json"))];
        let outcome = newest_outcome(&jobs, &pods).expect("one finished");
        assert_eq!(outcome.report, failed);
        assert_eq!(outcome.report.last_backup(), None);

        let pods = [pod("b-3", "thread 'main' panicked\nat agent.rs:1")];
        assert_eq!(newest_outcome(&jobs, &pods).expect("finished").report.message, "at agent.rs:1");
        assert!(newest_outcome(&[job("b-2", None)], &[]).is_none(), "nothing finished yet");
    }
}
