//! Job messages on the jobs topic (JSON, versioned), keyed by tenant so one
//! tenant's jobs stay in order on one partition.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::kafka::OutMessage;

use crate::domain::RunMode;
use crate::telemetry::{exporting_spans, traceparent_of_current_span};

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
    /// W3C trace context of the span that enqueued the job: the worker's slice joins its
    /// trace. Absent when the enqueuer exports no spans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// A fetch job (`mode: fetch`): the records to read by id.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ids: Vec<String>,
    /// Of `ids`, those a webhook said were deleted: not found, they emit `deleted`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deleted_ids: Vec<String>,
    /// A fetch job: records webhooks pushed (`webhooks.event.record`), applied without a
    /// read, in delivery order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pushed: Vec<Pushed>,
}

/// A record a webhook pushed, or the provider's word that it was deleted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pushed {
    /// The record's provider id.
    pub id: String,
    /// The record in the resource's own shape; absent: deleted at the provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<serde_json::Value>,
}

impl Job {
    /// The first slice of a new run, which starts a trace of its own: an `enqueue` span
    /// (linked to the caller's span, e.g. the scheduler's tick or the API request) whose
    /// context the job carries, so one trace is one run.
    pub fn new_run(
        tenant: &str,
        connection: &str,
        resource: &str,
        mode: RunMode,
        reason: JobReason,
    ) -> Job {
        let run_id = format!("run_{}", uuid::Uuid::now_v7().simple());
        let traceparent = exporting_spans()
            .then(|| Self::enqueue_span(tenant, connection, resource, &run_id, mode, reason))
            .flatten();
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
            traceparent,
            ids: Vec::new(),
            deleted_ids: Vec::new(),
            pushed: Vec::new(),
        }
    }

    /// The `enqueue` span of a new run (a new root, linked to the caller's span) and the
    /// trace context the job carries from it.
    fn enqueue_span(
        tenant: &str,
        connection: &str,
        resource: &str,
        run_id: &str,
        mode: RunMode,
        reason: JobReason,
    ) -> Option<String> {
        let span = tracing::info_span!(
            parent: None,
            "enqueue",
            tributary.tenant = tenant,
            tributary.connection = connection,
            tributary.resource = resource,
            tributary.run_id = run_id,
            tributary.mode = mode.as_str(),
            tributary.reason = reason.as_str(),
        );
        span.follows_from(tracing::Span::current());
        span.in_scope(traceparent_of_current_span)
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

/// A job as a message on a jobs topic (keyed by tenant), carrying its trace context as the
/// `traceparent` header too.
pub fn job_message(topic: &str, job: &Job) -> OutMessage {
    let mut headers = vec![
        ("tenant", job.tenant.clone()),
        ("job_id", job.job_id.clone()),
    ];
    if let Some(tp) = &job.traceparent {
        headers.push(("traceparent", tp.clone()));
    }
    // A bus that delays messages itself (RabbitMQ's delay queues) reads it from here.
    if let Some(at) = job.not_before {
        headers.push(("not_before", at.to_rfc3339()));
    }
    OutMessage {
        topic: topic.to_string(),
        key: job.tenant.clone(),
        payload: Some(serde_json::to_vec(job).expect("jobs serialize")),
        headers,
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

    #[test]
    fn jobs_without_trace_context_read_as_before() {
        let job = Job::new_run("acme", "c1", "contacts", RunMode::Full, JobReason::Schedule);
        assert_eq!(job.traceparent, None, "no tracer in unit tests");
        let text = serde_json::to_string(&job).unwrap();
        assert!(!text.contains("traceparent"), "{text}");
        let traced = Job {
            traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
            ..job
        };
        let back: Job = serde_json::from_str(&serde_json::to_string(&traced).unwrap()).unwrap();
        assert_eq!(back, traced);
        let message = job_message("t.jobs", &traced);
        assert!(message
            .headers
            .contains(&("traceparent", traced.traceparent.clone().unwrap())));
    }
}
