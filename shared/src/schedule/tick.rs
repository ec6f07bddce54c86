//! One scheduling tick: find due (connection, resource) schedules, claim each for
//! one run (a lease: one job in flight; an expired lease is enqueued again), and
//! enqueue the jobs together. Replicas may tick at once: a claim succeeds once.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tracing::{warn, Instrument};

use super::cadence::{jitter, next_due, parse_timezone, Cadence};
use crate::bus::{BusError, Job, JobReason, OutMessage, Publisher, Topics};
use crate::domain::time::stamp;
use crate::domain::RunMode;
use crate::store::{DueSchedule, Store, StoreError};

pub use crate::bus::job::job_message;

/// Scheduler settings.
#[derive(Debug, Clone)]
pub struct ScheduleSettings {
    /// Cadence when a connection has none (`*/15 * * * *`).
    pub default_schedule: String,
    /// Cadence of full syncs when a connection has none (`0 3 * * *`).
    pub default_full_schedule: String,
    /// Upper bound of the per-resource jitter.
    pub max_jitter: Duration,
    /// Schedules claimed per transaction.
    pub batch: i64,
}

impl Default for ScheduleSettings {
    fn default() -> Self {
        ScheduleSettings {
            default_schedule: "*/15 * * * *".into(),
            default_full_schedule: "0 3 * * *".into(),
            max_jitter: Duration::from_secs(300),
            batch: 1000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TickError {
    #[error("state store: {0}")]
    Store(#[from] StoreError),
    #[error("broker: {0}")]
    Bus(#[from] BusError),
}

/// What a tick did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TickReport {
    pub due: usize,
    pub enqueued: usize,
    /// Claimed by another replica first.
    pub lost: usize,
    /// Schedules that could not be read (logged).
    pub invalid: usize,
}

pub struct Scheduler {
    store: Store,
    publisher: Publisher,
    topics: Topics,
    settings: ScheduleSettings,
}

impl Scheduler {
    pub fn new(
        store: Store,
        publisher: Publisher,
        topics: Topics,
        settings: ScheduleSettings,
    ) -> Self {
        Scheduler {
            store,
            publisher,
            topics,
            settings,
        }
    }

    /// Next times for a due schedule: (next run, next full, this run's mode).
    fn plan(
        &self,
        due: &DueSchedule,
        now: DateTime<Utc>,
    ) -> Result<(String, String, RunMode), String> {
        let tz = parse_timezone(&due.timezone)?;
        let cadence: Cadence = due
            .schedule
            .as_deref()
            .unwrap_or(&self.settings.default_schedule)
            .parse()?;
        let full: Cadence = due
            .full_schedule
            .as_deref()
            .unwrap_or(&self.settings.default_full_schedule)
            .parse()?;
        let key = format!("{}/{}", due.connection, due.resource);
        let j = jitter(&key, cadence.period(tz), self.settings.max_jitter);
        let next = next_due(&cadence, tz, now, j).ok_or("the schedule has no next occurrence")?;
        let full_due = due.next_full_at.as_str() <= stamp(now).as_str();
        let next_full = if full_due {
            let jf = jitter(&key, full.period(tz), self.settings.max_jitter);
            stamp(
                next_due(&full, tz, now, jf)
                    .ok_or("the full-sync schedule has no next occurrence")?,
            )
        } else {
            due.next_full_at.clone()
        };
        Ok((
            stamp(next),
            next_full,
            if full_due {
                RunMode::Full
            } else {
                RunMode::Incremental
            },
        ))
    }

    /// Enqueue everything due at `now`, in a `schedule.tick` span (each run's `enqueue` span
    /// starts the run's own trace, linked to it).
    pub async fn tick(&self, now: DateTime<Utc>) -> Result<TickReport, TickError> {
        let span = tracing::info_span!(
            "schedule.tick",
            due = tracing::field::Empty,
            enqueued = tracing::field::Empty,
            lost = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        let outcome = self.enqueue_due(now).instrument(span.clone()).await;
        match &outcome {
            Ok(r) => {
                span.record("due", r.due);
                span.record("enqueued", r.enqueued);
                span.record("lost", r.lost);
            }
            Err(_) => {
                span.record("otel.status_code", "ERROR");
            }
        }
        outcome
    }

    async fn enqueue_due(&self, now: DateTime<Utc>) -> Result<TickReport, TickError> {
        let mut report = TickReport::default();
        loop {
            let due = self.store.due_schedules(now, self.settings.batch).await?;
            if due.is_empty() {
                return Ok(report);
            }
            report.due += due.len();
            let mut claims = Vec::with_capacity(due.len());
            for d in &due {
                match self.plan(d, now) {
                    Ok((next, next_full, mode)) => {
                        let job = Job::new_run(
                            &d.tenant,
                            &d.connection,
                            &d.resource,
                            mode,
                            JobReason::Schedule,
                        );
                        claims.push((d, job, next, next_full));
                    }
                    Err(e) => {
                        report.invalid += 1;
                        warn!(connection = %d.connection, resource = %d.resource, "cannot schedule: {e}");
                    }
                }
            }
            let won = self
                .store
                .claim_schedules(
                    now,
                    claims.iter().map(|(d, job, next, full)| {
                        (*d, job.run_id.as_str(), next.as_str(), full.as_str())
                    }),
                )
                .await?;
            let jobs: Vec<&Job> = claims
                .iter()
                .zip(&won)
                .filter(|(_, w)| **w)
                .map(|((_, job, _, _), _)| job)
                .collect();
            report.lost += won.iter().filter(|w| !**w).count();
            let messages: Vec<OutMessage> = jobs
                .iter()
                .map(|j| job_message(&self.topics.jobs(), j))
                .collect();
            if let Err(e) = self.publisher.publish_all(&messages).await {
                for j in &jobs {
                    self.store.release_lease(&j.run_id).await?;
                }
                return Err(e.into());
            }
            report.enqueued += jobs.len();
            if (due.len() as i64) < self.settings.batch || claims.is_empty() {
                return Ok(report);
            }
        }
    }
}
