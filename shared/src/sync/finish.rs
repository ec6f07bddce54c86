//! The finish stage: what a slice comes to once its last page is committed (the run
//! completed, or its continuation enqueued), and the other ways a slice ends: failed,
//! parked for a rate limit, or stopped for re-authorization. Every status event and
//! breaker update a slice makes on its way out is here.

use chrono::Utc;

use super::admit::Admitted;
use super::{SliceOutcome, SyncError, Syncer};
use crate::breaker::BreakerState;
use crate::bus::envelope::{RunRef, StatusKind};
use crate::bus::{Job, StatusEvent};
use crate::domain::ConnectionState;
use crate::engine::{EngineError, ErrorKind};
use crate::store::ConnectionRecord;
use crate::telemetry::{self, Labels};

fn labels(conn: &ConnectionRecord) -> Labels<'_> {
    Labels {
        provider: &conn.provider,
        tenant: &conn.tenant,
    }
}

/// Why a run was parked.
pub struct ParkReason<'a> {
    pub until: chrono::DateTime<Utc>,
    pub reason: &'a str,
    /// The provider throttled (it counts towards the circuit), rather than our own budget.
    pub throttled: bool,
}

impl Syncer {
    /// After a committed page: the run completed, or the slice hands over to its
    /// continuation, or (None) the slice goes on.
    #[tracing::instrument(name = "finish", skip_all)]
    pub(super) async fn finish(
        &self,
        job: &Job,
        run: &RunRef,
        last: bool,
        ends_slice: bool,
    ) -> Result<Option<SliceOutcome>, SyncError> {
        if last {
            let totals = self.store.run(&job.run_id).await?.counts;
            let done =
                StatusEvent::new(run, StatusKind::RunCompleted, Utc::now()).with_counts(totals);
            self.publish(&[done.to_message(&self.settings.topics)])
                .await?;
            return Ok(Some(SliceOutcome::Completed(totals)));
        }
        if ends_slice {
            let next = self.hand_over(job, job.continuation()).await?;
            return Ok(Some(SliceOutcome::Continued(next)));
        }
        Ok(None)
    }

    /// The run failed (it never deletes); the reason goes out as `run.failed`.
    pub(super) async fn fail(
        &self,
        run: &RunRef,
        job: &Job,
        reason: String,
    ) -> Result<SliceOutcome, SyncError> {
        self.store
            .fail_run(&job.connection, &job.resource, &job.run_id, &reason)
            .await?;
        let failed = StatusEvent::new(run, StatusKind::RunFailed, Utc::now()).with_reason(&reason);
        self.publish(&[failed.to_message(&self.settings.topics)])
            .await?;
        Ok(SliceOutcome::Failed(reason))
    }

    /// A job's slice panicked (a bug): its run fails (which releases the lease and ends
    /// the checkpoint's run, so its continuations are skipped), with the panic as reason.
    pub async fn fail_panicked(&self, job: &Job, reason: &str) -> Result<(), SyncError> {
        let provider = match self.store.connection(&job.connection).await {
            Ok(c) => c.provider,
            Err(crate::store::StoreError::NotFound { .. }) => String::new(),
            Err(e) => return Err(e.into()),
        };
        self.fail(&RunRef::of(job, &provider), job, reason.to_string())
            .await
            .map(|_| ())
    }

    /// The engine stopped the slice: re-authorization, a rate limit (park), an
    /// infrastructure error (retried), or a failure (perhaps one towards the circuit).
    pub(super) async fn on_engine_error(
        &self,
        admitted: &Admitted,
        job: &Job,
        error: EngineError,
    ) -> Result<SliceOutcome, SyncError> {
        let reason = error.to_string();
        if error.kind.needs_reauth() {
            return self.needs_reauth(admitted, job, reason).await;
        }
        match *error.kind {
            ErrorKind::RateLimited {
                until,
                reason,
                throttled,
            } => {
                let why = ParkReason {
                    until,
                    reason: &reason,
                    throttled,
                };
                self.park(admitted, job, why).await
            }
            ErrorKind::Ledger(e) => Err(SyncError::Ledger(e)),
            kind => {
                if kind.is_transient() {
                    self.note_failure(&admitted.conn).await?;
                }
                self.fail(&admitted.run, job, reason).await
            }
        }
    }

    /// Stop this connection's jobs until new credentials arrive (PUT credentials).
    async fn needs_reauth(
        &self,
        admitted: &Admitted,
        job: &Job,
        reason: String,
    ) -> Result<SliceOutcome, SyncError> {
        self.store
            .set_connection_state(
                &admitted.conn.id,
                ConnectionState::NeedsReauth,
                Some(&reason),
            )
            .await?;
        let event = StatusEvent::new(&admitted.run, StatusKind::NeedsReauth, Utc::now())
            .with_reason(&reason);
        self.publish(&[event.to_message(&self.settings.topics)])
            .await?;
        self.fail(&admitted.run, job, reason).await
    }

    /// The connection is rate limited until then: hand the run to a continuation that
    /// starts then (what this slice read is already committed), show the state, and
    /// free the worker slot.
    async fn park(
        &self,
        admitted: &Admitted,
        job: &Job,
        why: ParkReason<'_>,
    ) -> Result<SliceOutcome, SyncError> {
        let conn = &admitted.conn;
        let mut until = why.until;
        if why.throttled {
            // Opening the circuit: the longer the provider keeps throttling, the longer we stay away.
            let streak = self.store.record_failure(&conn.id).await?;
            until = self.breaker().after_throttle(streak, until, Utc::now());
            telemetry::metrics().circuit_opened(&labels(conn));
        }
        telemetry::metrics().parked_run(&labels(conn));
        let message = format!(
            "{}; resuming at {}",
            why.reason,
            crate::domain::time::human(until)
        );
        self.store
            .block_connection(
                &conn.id,
                until,
                Some((ConnectionState::RateLimited, &message)),
            )
            .await?;
        let mut next = job.continuation();
        next.not_before = Some(until);
        self.store
            .advance_slice(
                &job.connection,
                &job.resource,
                &job.run_id,
                job.slice,
                next.slice,
            )
            .await?;
        let status = StatusEvent::new(&admitted.run, StatusKind::RateLimited, Utc::now())
            .with_reason(message)
            .with_resume_at(until);
        self.publish(&[status.to_message(&self.settings.topics)])
            .await?;
        Ok(SliceOutcome::Parked(self.hand_over(job, next).await?))
    }

    /// A run failed on something that may pass (5xx, timeouts, throttle storms): count
    /// it; the breaker decides whether the circuit opens.
    async fn note_failure(&self, conn: &ConnectionRecord) -> Result<(), SyncError> {
        let streak = self.store.record_failure(&conn.id).await?;
        if let Some(until) = self.breaker().after_failed_run(streak, Utc::now()) {
            self.store.block_connection(&conn.id, until, None).await?;
            telemetry::metrics().circuit_opened(&labels(conn));
        }
        Ok(())
    }

    /// The provider answered this slice's first page: whatever circuit or rate-limit
    /// state the connection had is over.
    pub(super) async fn close_breaker(&self, conn: &ConnectionRecord) -> Result<(), SyncError> {
        let state = BreakerState {
            failure_streak: conn.failure_streak,
            blocked_until: conn.blocked_until,
        };
        if self
            .breaker()
            .closes_on_page(&state, conn.state == ConnectionState::RateLimited)
        {
            self.store.clear_breaker(&conn.id).await?;
        }
        Ok(())
    }
}
