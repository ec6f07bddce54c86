//! One scheduling tick: find due (connection, resource) schedules, claim each for
//! one run (a lease: one job in flight; an expired lease is enqueued again), and
//! enqueue the jobs, a batch at a time: a statement reads a batch, one claims it, one
//! publish sends its jobs. Replicas may tick at once: a claim succeeds once.

use std::collections::HashMap;
use std::future::Future;
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
    /// Schedules read, claimed (one statement) and published together; a tick holds at
    /// most three batches at once.
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

    /// Walk each way of being due a batch at a time, in a pipeline (at most three batches
    /// in memory): while one batch is published, the next is claimed and the one after it
    /// read and planned.
    async fn enqueue_due(&self, now: DateTime<Utc>) -> Result<TickReport, TickError> {
        let mut report = TickReport::default();
        let mut plans = Plans::new(&self.settings, now);
        let (mut publishing, mut planned) = (Batch::default(), Planned::default());
        // The way being walked (an index in `Due::ALL`) and the last row read of it.
        let mut walk: Option<(usize, Option<DueSchedule>)> = Some((0, None));
        while walk.is_some() || !planned.claims.is_empty() || !publishing.taken.is_empty() {
            let read = self.read_batch(now, walk.as_ref(), &mut plans);
            let claim = self.claim_batch(std::mem::take(&mut planned.claims), now);
            let (claimed, mut read) = self
                .publish_during(&publishing, self.claim_then(claim, read))
                .await?;
            report.enqueued += publishing.taken.len();
            report.lost += claimed.lost;
            report.due += read.read;
            report.invalid += read.invalid;
            publishing = claimed;
            if let Some((way, after)) = &mut walk {
                // The walk resumes after the batch's last row: a schedule that stays due
                // (an invalid one) is read once per tick, not once per batch.
                if read.read == 0 || (read.read as i64) < self.settings.batch {
                    walk = (*way + 1 < Due::ALL.len()).then(|| (*way + 1, None));
                } else {
                    *after = read.last.take();
                }
            }
            planned = read;
        }
        Ok(report)
    }

    /// Publish `batch` while `next` runs; a failed publish gives back the claims of both
    /// (one statement each) and fails the tick, as does a failed `next` (once `batch` is
    /// published).
    async fn publish_during<T>(
        &self,
        batch: &Batch,
        next: impl Future<Output = Result<(Batch, T), StoreError>>,
    ) -> Result<(Batch, T), TickError> {
        let published = async {
            if batch.messages.is_empty() {
                return Ok(());
            }
            self.publisher.publish_all(&batch.messages).await
        };
        let (published, next) = tokio::join!(published, next);
        if let Err(e) = published {
            self.store.release_claims(batch.claims()).await?;
            if let Ok((next, _)) = next {
                self.store.release_claims(next.claims()).await?;
            }
            return Err(e.into());
        }
        Ok(next?)
    }

    /// Claim while reading; a failed read gives the claims back.
    async fn claim_then(
        &self,
        claim: impl Future<Output = Result<Batch, StoreError>>,
        read: impl Future<Output = Result<Planned, StoreError>>,
    ) -> Result<(Batch, Planned), StoreError> {
        let (claimed, read) = tokio::join!(claim, read);
        let claimed = claimed?;
        match read {
            Ok(read) => Ok((claimed, read)),
            Err(e) => {
                self.store.release_claims(claimed.claims()).await?;
                Err(e)
            }
        }
    }

    /// Read the walk's next batch (none when the walk is over) and plan each schedule.
    async fn read_batch(
        &self,
        now: DateTime<Utc>,
        walk: Option<&(usize, Option<DueSchedule>)>,
        plans: &mut Plans<'_>,
    ) -> Result<Planned, StoreError> {
        let Some((way, after)) = walk else {
            return Ok(Planned::default());
        };
        let due = self
            .store
            .due_schedules(now, Due::ALL[*way], after.as_ref(), self.settings.batch)
            .await?;
        let mut planned = Planned {
            read: due.len(),
            last: due.last().cloned(),
            ..Planned::default()
        };
        let topic = self.topics.jobs();
        for d in due {
            match plans.plan(&d) {
                Ok((next_run_at, next_full_at, mode)) => {
                    let job = Job::new_run(
                        &d.tenant,
                        &d.connection,
                        &d.resource,
                        mode,
                        JobReason::Schedule,
                    );
                    planned.claims.push(Claim {
                        message: job_message(&topic, &job),
                        run_id: job.run_id,
                        due: d,
                        next_run_at,
                        next_full_at,
                    });
                }
                Err(e) => {
                    planned.invalid += 1;
                    warn!(connection = %d.connection, resource = %d.resource, "cannot schedule: {e}");
                }
            }
        }
        Ok(planned)
    }

    /// Claim planned schedules (one statement).
    async fn claim_batch(
        &self,
        claims: Vec<Claim>,
        now: DateTime<Utc>,
    ) -> Result<Batch, StoreError> {
        let mut batch = Batch::default();
        if claims.is_empty() {
            return Ok(batch);
        }
        let won = self
            .store
            .claim_schedules(
                now,
                claims.iter().map(|c| {
                    (
                        &c.due,
                        c.run_id.as_str(),
                        c.next_run_at.as_str(),
                        c.next_full_at.as_str(),
                    )
                }),
            )
            .await?;
        for (c, won) in claims.into_iter().zip(won) {
            if won {
                batch.messages.push(c.message);
                batch.taken.push((c.due, c.run_id));
            } else {
                batch.lost += 1;
            }
        }
        Ok(batch)
    }
}

/// A batch read and planned.
#[derive(Default)]
struct Planned {
    read: usize,
    invalid: usize,
    /// The walk's next batch starts after this row.
    last: Option<DueSchedule>,
    claims: Vec<Claim>,
}

/// A due schedule as read, with its run's job message and its next due times.
struct Claim {
    due: DueSchedule,
    run_id: String,
    message: OutMessage,
    next_run_at: String,
    next_full_at: String,
}

/// What this replica claimed of a batch, with the messages of its jobs.
#[derive(Default)]
struct Batch {
    /// Claimed by another replica first.
    lost: usize,
    /// Each claimed schedule as read, and the run it was claimed for.
    taken: Vec<(DueSchedule, String)>,
    messages: Vec<OutMessage>,
}

impl Batch {
    fn claims(&self) -> impl Iterator<Item = (&DueSchedule, &str)> {
        self.taken.iter().map(|(d, run)| (d, run.as_str()))
    }
}

/// A parsed cadence and its period in one time zone.
type Parsed = Result<Arc<(Cadence, Duration)>, String>;

/// Plans due schedules; parsed cadences and their periods are kept for the tick, as
/// thousands of connections share a few schedules and time zones.
struct Plans<'a> {
    settings: &'a ScheduleSettings,
    /// The tick's time, and as stored.
    now: DateTime<Utc>,
    now_stamp: String,
    cadences: HashMap<String, HashMap<Tz, Parsed>>,
}

impl<'a> Plans<'a> {
    fn new(settings: &'a ScheduleSettings, now: DateTime<Utc>) -> Self {
        Plans {
            settings,
            now,
            now_stamp: stamp(now),
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
    fn plan(&mut self, due: &DueSchedule) -> Result<(String, String, RunMode), String> {
        let now = self.now;
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
        let full_due = due.next_full_at <= self.now_stamp;
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
