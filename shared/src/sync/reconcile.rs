//! Webhooks and polling together: while a connection's channel is healthy (a verified
//! delivery within the spec's `silence_seconds`), a scheduled incremental run is skipped
//! when the resource's last completed run is more recent than `reconcile_every_seconds`;
//! a channel silent for longer than `silence_seconds` gets incremental runs of every
//! resource of its connection (events may have been lost), once per such silence.

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use tracing::info;

use super::{SyncError, Syncer};
use crate::bus::{Job, JobReason};
use crate::domain::time::stamp;
use crate::domain::RunMode;
use crate::store::{ConnectionRecord, StoreError};

impl Syncer {
    /// Why a scheduled incremental run of `job` is not needed now (webhooks keep the
    /// resource current), or None: it runs.
    pub(super) async fn reconciled_by_webhooks(
        &self,
        job: &Job,
        conn: &ConnectionRecord,
        now: DateTime<Utc>,
    ) -> Result<Option<String>, SyncError> {
        if job.mode != RunMode::Incremental || job.reason != JobReason::Schedule {
            return Ok(None);
        }
        let Some((every, silence)) = self.spec(&conn.provider).ok().and_then(|s| {
            let w = s.webhooks.as_ref()?;
            Some((w.reconcile_every_seconds?, w.silence_seconds?))
        }) else {
            return Ok(None);
        };
        let Some(last_delivery) = (self.store.channel_health(&conn.id).await?)
            .and_then(|h| h.last_delivery_at)
            .and_then(|t| crate::domain::time::parse_stamp(&t))
        else {
            return Ok(None);
        };
        if now - last_delivery > seconds(silence) {
            return Ok(None);
        }
        let Some(last_run) = self
            .store
            .last_completed_end(&conn.id, &job.resource)
            .await?
        else {
            return Ok(None);
        };
        let due = last_run + seconds(every);
        Ok((now < due).then(|| {
            format!(
                "webhooks keep `{}` current (last verified delivery {}); polling reconciles \
                 from {} (the spec's reconcile_every_seconds)",
                job.resource,
                stamp(last_delivery),
                stamp(due)
            )
        }))
    }

    /// The incremental runs silent channels call for, per connection. The caller
    /// enqueues them and then marks the channel (`Store::mark_silence_run`), so a failed
    /// enqueue is tried again on the next pass.
    pub async fn silence_runs(
        &self,
        now: DateTime<Utc>,
    ) -> Result<Vec<(String, Vec<Job>)>, StoreError> {
        let mut runs = Vec::new();
        for quiet in self.store.quiet_channels().await? {
            let Some(silence) = (self.spec(&quiet.provider).ok())
                .and_then(|s| s.webhooks.as_ref()?.silence_seconds)
            else {
                continue;
            };
            if now - quiet.quiet_since <= seconds(silence) {
                continue;
            }
            let conn = match self.store.connection(&quiet.connection).await {
                Ok(c) => c,
                Err(StoreError::NotFound { .. }) => continue,
                Err(e) => return Err(e),
            };
            if conn.state.is_halted() {
                continue;
            }
            info!(connection = %conn.id, quiet_since = %stamp(quiet.quiet_since),
                  "no verified webhook for longer than the spec expects: incremental runs");
            let jobs = (conn.resources.iter())
                .map(|resource| {
                    Job::new_run(
                        &conn.tenant,
                        &conn.id,
                        resource,
                        RunMode::Incremental,
                        JobReason::Webhook,
                    )
                })
                .collect();
            runs.push((conn.id, jobs));
        }
        Ok(runs)
    }
}

fn seconds(s: u64) -> ChronoDuration {
    ChronoDuration::seconds(s.min(i64::MAX as u64 / 1000) as i64)
}
