//! The admit stage: whether a job runs at all, and the run it belongs to.
//!
//! Reads the connection and the checkpoint; skips jobs of paused or unauthorized
//! connections and stale or replayed slices; asks the circuit breaker; starts a new
//! run (`run.started`) or resumes the one in progress. Touches the store and, to
//! re-enqueue a held job or announce a run, the bus; nothing else.

use chrono::Utc;

use super::{SliceOutcome, SyncError, Syncer};
use crate::breaker::{Admission, BreakerState};
use crate::bus::envelope::{RunRef, StatusKind};
use crate::bus::{Job, JobReason, StatusEvent};
use crate::store::{Checkpoint, ConnectionRecord, NewRun, StoreError};

/// A job that may run.
pub struct Admitted {
    pub conn: ConnectionRecord,
    pub checkpoint: Checkpoint,
    /// The job continues the run in progress (its checkpoint's page state applies).
    pub resuming: bool,
    pub run: RunRef,
}

/// Where a job stands against its resource's checkpoint.
#[derive(Debug, PartialEq, Eq)]
pub enum Position {
    /// The next slice of the run in progress.
    Resume,
    /// The first slice of a new run.
    Start,
    /// This slice is done but its continuation was never confirmed sent (the bus went
    /// away, or the worker died, between the commit and the send): send it now.
    HandOver,
    Skip(String),
}

/// Pure: a continuation of a run that is over, or a slice already done, is skipped.
pub fn position(job: &Job, checkpoint: &Checkpoint) -> Position {
    let resuming = checkpoint.run_id.as_deref() == Some(job.run_id.as_str());
    if job.reason == JobReason::Continuation && !resuming {
        return Position::Skip(format!("run {} is no longer in progress", job.run_id));
    }
    if resuming && checkpoint.handover_pending && checkpoint.slice == job.slice + 1 {
        return Position::HandOver;
    }
    if resuming && checkpoint.slice != job.slice {
        return Position::Skip(format!(
            "slice {} of run {} is already done",
            job.slice, job.run_id
        ));
    }
    if resuming {
        Position::Resume
    } else {
        Position::Start
    }
}

/// Pure: connections whose jobs do not run until someone acts.
fn inactive_reason(conn: &ConnectionRecord) -> Option<String> {
    conn.state
        .is_halted()
        .then(|| format!("connection `{}` is {}", conn.id, conn.state))
}

pub enum Verdict {
    Run(Box<Admitted>),
    Done(Box<SliceOutcome>),
}

impl Syncer {
    #[tracing::instrument(name = "admit", skip_all)]
    pub(super) async fn admit(&self, job: &Job) -> Result<Verdict, SyncError> {
        let conn = match self.store.connection(&job.connection).await {
            Ok(c) => c,
            Err(StoreError::NotFound { .. }) => {
                let reason = format!("connection `{}` does not exist", job.connection);
                return Ok(Verdict::Done(Box::new(SliceOutcome::Skipped(reason))));
            }
            Err(e) => return Err(e.into()),
        };
        if let Some(reason) = inactive_reason(&conn) {
            return Ok(Verdict::Done(Box::new(SliceOutcome::Skipped(reason))));
        }
        if let Some(held) = self.held_by_breaker(&conn, job).await? {
            return Ok(Verdict::Done(Box::new(held)));
        }
        let checkpoint = self
            .store
            .checkpoint(&job.connection, &job.resource)
            .await?;
        let run = RunRef::of(job, &conn.provider);
        let resuming = match position(job, &checkpoint) {
            Position::Skip(reason) => {
                return Ok(Verdict::Done(Box::new(SliceOutcome::Skipped(reason))))
            }
            Position::Resume => true,
            Position::HandOver => {
                tracing::warn!(job = %job.job_id, "slice already done but its continuation was never confirmed sent: sending it again");
                let next = self.hand_over(job, job.continuation()).await?;
                return Ok(Verdict::Done(Box::new(SliceOutcome::Continued(next))));
            }
            Position::Start => {
                if self.store.run(&job.run_id).await.is_ok() {
                    let reason = format!("run {} already ran", job.run_id);
                    return Ok(Verdict::Done(Box::new(SliceOutcome::Skipped(reason))));
                }
                let now = chrono::Utc::now();
                if let Some(reason) = self.reconciled_by_webhooks(job, &conn, now).await? {
                    return Ok(Verdict::Done(Box::new(SliceOutcome::Skipped(reason))));
                }
                self.start_run(job, &checkpoint, &run).await?;
                false
            }
        };
        Ok(Verdict::Run(Box::new(Admitted {
            conn,
            checkpoint,
            resuming,
            run,
        })))
    }

    /// Send `next`, the continuation of `job`'s slice (already committed), and note that
    /// the bus has it. A duplicate it may make (the first send did arrive) is skipped as a
    /// done slice.
    pub(super) async fn hand_over(&self, job: &Job, next: Job) -> Result<Job, SyncError> {
        self.publisher.enqueue(&self.settings.topics, &next).await?;
        self.store
            .handed_over(&job.connection, &job.resource, &job.run_id, next.slice)
            .await?;
        Ok(next)
    }

    /// An open circuit (or a held budget) sends the job back for later without using a
    /// worker slot; once the circuit's time is over, one job wins the half-open probe.
    async fn held_by_breaker(
        &self,
        conn: &ConnectionRecord,
        job: &Job,
    ) -> Result<Option<SliceOutcome>, SyncError> {
        let state = BreakerState {
            failure_streak: conn.failure_streak,
            blocked_until: conn.blocked_until,
        };
        let until = match self.breaker().admit(&state, Utc::now()) {
            Admission::Run => return Ok(None),
            Admission::Hold(until) => until,
            Admission::Probe {
                opened_until,
                probe_until,
            } => {
                if self
                    .store
                    .claim_probe(&conn.id, opened_until, probe_until)
                    .await?
                {
                    return Ok(None);
                }
                probe_until
            }
        };
        let mut again = job.clone();
        again.not_before = Some(until);
        again.attempt += 1;
        self.publisher
            .enqueue(&self.settings.topics, &again)
            .await?;
        Ok(Some(SliceOutcome::Parked(again)))
    }

    /// Record a new run (superseding one left in progress) and announce it.
    async fn start_run(
        &self,
        job: &Job,
        checkpoint: &Checkpoint,
        run: &RunRef,
    ) -> Result<(), SyncError> {
        if let Some(other) = &checkpoint.run_id {
            let reason = format!("superseded by run {}", job.run_id);
            self.store
                .fail_run(&job.connection, &job.resource, other, &reason)
                .await?;
        }
        self.store
            .start_run(&NewRun {
                id: &job.run_id,
                connection: &job.connection,
                resource: &job.resource,
                mode: job.mode,
                reason: job.reason.as_str(),
            })
            .await?;
        let started = StatusEvent::new(run, StatusKind::RunStarted, Utc::now());
        self.publisher
            .publish_all(&[started.to_message(&self.settings.topics)])
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::RunMode;

    fn checkpoint(run: Option<&str>, slice: i64) -> Checkpoint {
        Checkpoint {
            run_id: run.map(str::to_string),
            mode: None,
            slice,
            page_state: None,
            run_max_updated: None,
            since: None,
            delta_link: None,
            handover_pending: false,
        }
    }

    fn job() -> Job {
        Job::new_run("acme", "c1", "contacts", RunMode::Full, JobReason::Schedule)
    }

    #[test]
    fn a_new_job_starts_a_run() {
        assert_eq!(position(&job(), &checkpoint(None, 0)), Position::Start);
        // Another run in progress: this one supersedes it.
        assert_eq!(
            position(&job(), &checkpoint(Some("run_old"), 3)),
            Position::Start
        );
    }

    #[test]
    fn the_next_slice_resumes_and_a_done_slice_is_skipped() {
        let next = job().continuation();
        assert_eq!(
            position(&next, &checkpoint(Some(&next.run_id), 1)),
            Position::Resume
        );
        assert!(matches!(
            position(&next, &checkpoint(Some(&next.run_id), 2)),
            Position::Skip(r) if r.contains("already done")
        ));
    }

    #[test]
    fn a_done_slice_whose_continuation_was_not_sent_hands_over_again() {
        let next = job().continuation();
        let mut pending = checkpoint(Some(&next.run_id), 2);
        pending.handover_pending = true;
        assert_eq!(position(&next, &pending), Position::HandOver);
        // Only the slice just before the pending one: older slices are duplicates.
        pending.slice = 3;
        assert!(matches!(position(&next, &pending), Position::Skip(_)));
        // Another run's pending handover is not this job's.
        let other = checkpoint(Some("run_other"), 2);
        let stale = Checkpoint {
            handover_pending: true,
            ..other
        };
        assert!(matches!(position(&next, &stale), Position::Skip(_)));
    }

    #[test]
    fn a_continuation_of_a_finished_run_is_skipped() {
        let next = job().continuation();
        assert!(matches!(
            position(&next, &checkpoint(Some("run_other"), 1)),
            Position::Skip(r) if r.contains("no longer in progress")
        ));
        assert!(matches!(
            position(&next, &checkpoint(None, 0)),
            Position::Skip(_)
        ));
    }
}
