//! One scheduling tick: find due (connection, resource) schedules, claim each for
//! one run (a lease: one job in flight; an expired lease is enqueued again), and
//! enqueue the jobs together. Replicas may tick at once: a claim succeeds once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use tracing::{warn, Instrument};

use super::cadence::{jitter, next_due, parse_timezone, Cadence};
use crate::bus::{BusError, Job, JobReason, OutMessage, Publisher, Topics};
use crate::domain::time::stamp;
use crate::domain::RunMode;
use crate::store::{Due, DueSchedule, Store, StoreError};

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

    /// Walk each way of being due a batch at a time (never more than `batch` schedules
    /// in memory), claiming and enqueuing each batch before reading the next.
    async fn enqueue_due(&self, now: DateTime<Utc>) -> Result<TickReport, TickError> {
        let mut report = TickReport::default();
        let mut plans = Plans::new(&self.settings);
        for way in Due::ALL {
            let mut after: Option<DueSchedule> = None;
            loop {
                let due = self
                    .store
                    .due_schedules(now, way, after.as_ref(), self.settings.batch)
                    .await?;
                report.due += due.len();
                self.enqueue_batch(&due, now, &mut plans, &mut report)
                    .await?;
                // The walk resumes after the batch's last row: schedules that stay due (an
                // invalid one, a halted connection's) are read once per tick, not per batch.
                if due.is_empty() || (due.len() as i64) < self.settings.batch {
                    break;
                }
                after = due.into_iter().last();
            }
        }
        Ok(report)
    }

    /// Plan, claim (one statement) and publish one batch; a failed publish gives the
    /// batch's claims back (one statement) and fails the tick.
    async fn enqueue_batch(
        &self,
        due: &[DueSchedule],
        now: DateTime<Utc>,
        plans: &mut Plans<'_>,
        report: &mut TickReport,
    ) -> Result<(), TickError> {
        let mut claims = Vec::with_capacity(due.len());
        for d in due {
            match plans.plan(d, now) {
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
        let taken: Vec<(&DueSchedule, &Job)> = claims
            .iter()
            .zip(&won)
            .filter(|(_, w)| **w)
            .map(|((d, job, _, _), _)| (*d, job))
            .collect();
        report.lost += claims.len() - taken.len();
        let topic = self.topics.jobs();
        let messages: Vec<OutMessage> = taken.iter().map(|(_, j)| job_message(&topic, j)).collect();
        if let Err(e) = self.publisher.publish_all(&messages).await {
            self.store
                .release_claims(taken.iter().map(|(d, j)| (*d, j.run_id.as_str())))
                .await?;
            return Err(e.into());
        }
        report.enqueued += taken.len();
        Ok(())
    }
}

/// A parsed cadence and its period in one time zone.
type Parsed = Result<Arc<(Cadence, Duration)>, String>;

/// Plans due schedules; parsed cadences and their periods are kept for the tick, as
/// thousands of connections share a few schedules and time zones.
struct Plans<'a> {
    settings: &'a ScheduleSettings,
    cadences: HashMap<String, HashMap<Tz, Parsed>>,
}

impl<'a> Plans<'a> {
    fn new(settings: &'a ScheduleSettings) -> Self {
        Plans {
            settings,
            cadences: HashMap::new(),
        }
    }

    fn cadence(&mut self, expr: &str, tz: Tz) -> Parsed {
        if let Some(known) = self.cadences.get(expr).and_then(|by_tz| by_tz.get(&tz)) {
            return known.clone();
        }
        let parsed: Parsed = expr.parse::<Cadence>().map(|c| {
            let period = c.period(tz);
            Arc::new((c, period))
        });
        self.cadences
            .entry(expr.to_string())
            .or_default()
            .insert(tz, parsed.clone());
        parsed
    }

    /// Next times for a due schedule: (next run, next full, this run's mode).
    fn plan(
        &mut self,
        due: &DueSchedule,
        now: DateTime<Utc>,
    ) -> Result<(String, String, RunMode), String> {
        let tz = parse_timezone(&due.timezone)?;
        let settings = self.settings;
        let cadence = self.cadence(
            due.schedule
                .as_deref()
                .unwrap_or(&settings.default_schedule),
            tz,
        )?;
        let full = self.cadence(
            due.full_schedule
                .as_deref()
                .unwrap_or(&settings.default_full_schedule),
            tz,
        )?;
        let key = format!("{}/{}", due.connection, due.resource);
        let j = jitter(&key, cadence.1, settings.max_jitter);
        let next = next_due(&cadence.0, tz, now, j).ok_or("the schedule has no next occurrence")?;
        let full_due = due.next_full_at.as_str() <= stamp(now).as_str();
        let next_full = if full_due {
            let jf = jitter(&key, full.1, settings.max_jitter);
            stamp(
                next_due(&full.0, tz, now, jf)
                    .ok_or("the full-sync schedule has no next occurrence")?,
            )
        } else {
            due.next_full_at.clone()
        };
        let mode = if full_due {
            RunMode::Full
        } else {
            RunMode::Incremental
        };
        Ok((stamp(next), next_full, mode))
    }
}
