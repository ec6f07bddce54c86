//! Schedules: one row per (connection, resource) with its next due times and the lease
//! that keeps one job in flight. Replicas claim with a compare-and-set on what they read.

use chrono::{DateTime, Utc};

use super::connections::halted;
use super::{Store, StoreError, RELEASE_LEASE};
use crate::domain::time::stamp;

/// A (connection, resource) the scheduler found due.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DueSchedule {
    pub connection: String,
    pub resource: String,
    pub tenant: String,
    pub schedule: Option<String>,
    pub full_schedule: Option<String>,
    pub timezone: String,
    /// As stored: the claim compares it for equality.
    pub next_run_at: String,
    pub next_full_at: String,
    pub lease_run_id: Option<String>,
}

impl Store {
    /// Schedules due at `now` (or whose job's lease expired), oldest first.
    pub async fn due_schedules(
        &self,
        now: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<DueSchedule>, StoreError> {
        let now = stamp(now);
        let [paused, reauth] = halted();
        Ok(sqlx::query_as(
            "SELECT s.connection, s.resource, s.tenant, c.schedule, c.full_schedule, c.timezone, s.next_run_at, s.next_full_at, s.lease_run_id
             FROM schedules s JOIN connections c ON c.id = s.connection
             WHERE c.state NOT IN ($1, $2)
               AND ((s.lease_run_id IS NULL AND s.next_run_at <= $3) OR (s.lease_run_id IS NOT NULL AND s.lease_expires_at < $4))
             ORDER BY s.next_run_at LIMIT $5",
        )
        .bind(paused)
        .bind(reauth)
        .bind(&now)
        .bind(&now)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Take due schedules for their runs, in one transaction; one flag per claim. A claim
    /// succeeds for exactly one scheduler replica (compare-and-set on what `due_schedules`
    /// saw) and sets the lease and the next due times (`stamp` text).
    /// `now` is the tick's time: leases run from it.
    pub async fn claim_schedules<'a>(
        &self,
        now: DateTime<Utc>,
        claims: impl Iterator<Item = (&'a DueSchedule, &'a str, &'a str, &'a str)>,
    ) -> Result<Vec<bool>, StoreError> {
        let lease_until = stamp(now + self.lease);
        let mut tx = self.pool.begin().await?;
        let mut won = Vec::new();
        for (due, run_id, next_run_at, next_full_at) in claims {
            // Compare-and-set on the schedule as it was read: the same due time and the
            // same lease holder (none, or the expired one being taken over).
            let q = sqlx::query(
                "UPDATE schedules SET lease_run_id = $1, lease_expires_at = $2, next_run_at = $3, next_full_at = $4
                 WHERE connection = $5 AND resource = $6 AND next_run_at = $7
                   AND lease_run_id IS NOT DISTINCT FROM $8",
            )
            .bind(run_id)
            .bind(&lease_until)
            .bind(next_run_at)
            .bind(next_full_at)
            .bind(&due.connection)
            .bind(&due.resource)
            .bind(&due.next_run_at)
            .bind(due.lease_run_id.as_deref());
            won.push(q.execute(&mut *tx).await?.rows_affected() == 1);
        }
        tx.commit().await?;
        Ok(won)
    }

    /// Give a lease back (its job could not be enqueued) so the next tick retries.
    pub async fn release_lease(&self, run_id: &str) -> Result<(), StoreError> {
        sqlx::query(RELEASE_LEASE)
            .bind(run_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
