//! Job messages on the jobs topic (JSON, versioned), keyed by tenant so one
//! tenant's jobs stay in order on one partition.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::RunMode;

pub const JOB_SCHEMA_VERSION: u32 = 1;

/// Why a job exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobReason {
    Schedule,
    Resync,
    Webhook,
    Continuation,
}

impl JobReason {
    pub fn as_str(self) -> &'static str {
        match self {
            JobReason::Schedule => "schedule",
            JobReason::Resync => "resync",
            JobReason::Webhook => "webhook",
            JobReason::Continuation => "continuation",
        }
    }
}

/// One slice of work for one (connection, resource).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub schema_version: u32,
    pub job_id: String,
    pub tenant: String,
    pub connection: String,
    pub resource: String,
    pub mode: RunMode,
    pub reason: JobReason,
    /// The sync run this job belongs to (continuations carry their run's id).
    pub run_id: String,
    /// Which slice of the run this is (0 for the first).
    pub slice: i64,
    /// Where the slice's starting point is stored: `<connection>/<resource>` in the checkpoints table.
    pub checkpoint: String,
    pub attempt: u32,
    /// Do not start before this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<DateTime<Utc>>,
}

impl Job {
    /// The first slice of a new run.
    pub fn new_run(
        tenant: &str,
        connection: &str,
        resource: &str,
        mode: RunMode,
        reason: JobReason,
    ) -> Job {
        let run_id = format!("run_{}", uuid::Uuid::now_v7().simple());
        Job {
            schema_version: JOB_SCHEMA_VERSION,
            job_id: format!("{run_id}.0"),
            tenant: tenant.to_string(),
            connection: connection.to_string(),
            resource: resource.to_string(),
            mode,
            reason,
            run_id,
            slice: 0,
            checkpoint: format!("{connection}/{resource}"),
            attempt: 0,
            not_before: None,
        }
    }

    /// The job for the run's next slice.
    pub fn continuation(&self) -> Job {
        let slice = self.slice + 1;
        Job {
            job_id: format!("{}.{slice}", self.run_id),
            reason: JobReason::Continuation,
            slice,
            attempt: 0,
            not_before: None,
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_round_trip_and_continue() {
        let job = Job::new_run("acme", "c1", "contacts", RunMode::Full, JobReason::Schedule);
        let text = serde_json::to_string(&job).unwrap();
        assert!(text.contains("\"schema_version\":1") && text.contains("\"mode\":\"full\""));
        assert_eq!(serde_json::from_str::<Job>(&text).unwrap(), job);
        let next = job.continuation();
        assert_eq!(
            (next.slice, next.reason, &next.run_id),
            (1, JobReason::Continuation, &job.run_id)
        );
        assert_eq!(next.job_id, format!("{}.1", job.run_id));
    }
}
