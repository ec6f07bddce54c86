//! Schedules: one row per (connection, resource) with its next due times and the lease
//! that keeps one job in flight. Replicas claim with a compare-and-set on what they read,
//! a batch at a time: a batch travels as one JSON text parameter (the `Any` driver cannot
//! bind arrays) that the SQL expands into rows.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::connections::halted;
use super::{Store, StoreError, RELEASE_LEASE};
use crate::domain::time::stamp;

/// A (connection, resource) the scheduler found due.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
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
    /// As stored: a claim that is given back puts it back.
    pub lease_expires_at: Option<String>,
}

/// The two ways a schedule is due; a tick walks each in its own key order, so every read
/// is a range of one index (migration 0007) that starts where the last batch ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Leased to a job whose lease ran out: in order of expiry.
    LeaseExpired,
    /// No job in flight and its time came: in order of due time.
    Time,
}

impl Due {
    /// Both, in the order a tick takes them (the overdue leases first).
    pub const ALL: [Due; 2] = [Due::LeaseExpired, Due::Time];
}

const DUE_COLUMNS: &str = "s.connection, s.resource, s.tenant, c.schedule, c.full_schedule, c.timezone, s.next_run_at, s.next_full_at, s.lease_run_id, s.lease_expires_at";

/// `$1` now, `$2..$4` the walk's last key, `$5, $6` the halted states, `$7` the limit.
/// SQLite is told its index: without statistics it would take `schedules_lease` for
/// `lease_run_id IS NULL`, then sort every due row for each batch (PostgreSQL: see
/// `due_schedules`).
fn due_sql(due: Due, postgres: bool) -> String {
    let (index, filter, key) = match due {
        Due::LeaseExpired => (
            "schedules_lease_expiry",
            "s.lease_run_id IS NOT NULL AND s.lease_expires_at < $1",
            "s.lease_expires_at",
        ),
        Due::Time => (
            "schedules_free_due",
            "s.lease_run_id IS NULL AND s.next_run_at <= $1",
            "s.next_run_at",
        ),
    };
    let indexed = if postgres {
        String::new()
    } else {
        format!(" INDEXED BY {index}")
    };
    format!(
        "SELECT {DUE_COLUMNS}
         FROM schedules AS s{indexed} JOIN connections c ON c.id = s.connection
         WHERE {filter} AND ({key}, s.connection, s.resource) > ($2, $3, $4)
           AND c.state NOT IN ($5, $6)
         ORDER BY {key}, s.connection, s.resource LIMIT $7"
    )
}

/// One claim as the claim statement reads it.
#[derive(Serialize)]
struct ClaimRow<'a> {
    connection: &'a str,
    resource: &'a str,
    seen_run_at: &'a str,
    seen_lease: Option<&'a str>,
    run_id: &'a str,
    next_run_at: &'a str,
    next_full_at: &'a str,
}

/// PostgreSQL: the compare-and-set over the batch expanded from JSON. Replicas' claims
/// take turns (`CLAIM_TURN`): two statements locking overlapping rows in different orders
/// could deadlock. A claim that waited for its turn no longer matches the rows claimed
/// before it: they are lost to it.
const CLAIM_POSTGRES: &str = "UPDATE schedules s SET lease_run_id = c.run_id, lease_expires_at = $2, next_run_at = c.next_run_at, next_full_at = c.next_full_at
FROM json_to_recordset($1::json) AS c(connection text, resource text, seen_run_at text, seen_lease text, run_id text, next_run_at text, next_full_at text)
WHERE s.connection = c.connection AND s.resource = c.resource
  AND s.next_run_at = c.seen_run_at AND s.lease_run_id IS NOT DISTINCT FROM c.seen_lease
RETURNING s.connection, s.resource";

/// Held until the claim's transaction ends; no other code takes this advisory lock.
const CLAIM_TURN: &str = "SELECT pg_advisory_xact_lock($1)";
/// "TribSchd": the scheduler's claims among the database's advisory locks.
const CLAIM_TURN_KEY: i64 = 0x5472_6962_5363_6864;

/// SQLite: one writer at a time, so the compare-and-set in one statement is the claim.
/// (A VALUES list of bound values instead of JSON made the tick bench three times slower.)
const CLAIM_SQLITE: &str = "UPDATE schedules SET lease_run_id = c.run_id, lease_expires_at = $2, next_run_at = c.next_run_at, next_full_at = c.next_full_at
FROM (
    SELECT value ->> 'connection' AS connection, value ->> 'resource' AS resource,
           value ->> 'seen_run_at' AS seen_run_at, value ->> 'seen_lease' AS seen_lease,
           value ->> 'run_id' AS run_id, value ->> 'next_run_at' AS next_run_at,
           value ->> 'next_full_at' AS next_full_at
    FROM json_each($1)
) AS c
WHERE schedules.connection = c.connection AND schedules.resource = c.resource
  AND schedules.next_run_at = c.seen_run_at AND schedules.lease_run_id IS c.seen_lease
RETURNING connection, resource";

/// One claim to give back: the schedule as it was read, keyed by the lease taken.
#[derive(Serialize)]
struct UndoRow<'a> {
    run_id: &'a str,
    lease_run_id: Option<&'a str>,
    lease_expires_at: Option<&'a str>,
    next_run_at: &'a str,
    next_full_at: &'a str,
}

const UNDO_POSTGRES: &str = "UPDATE schedules s SET lease_run_id = r.lease_run_id, lease_expires_at = r.lease_expires_at, next_run_at = r.next_run_at, next_full_at = r.next_full_at
FROM json_to_recordset($1::json) AS r(run_id text, lease_run_id text, lease_expires_at text, next_run_at text, next_full_at text)
WHERE s.lease_run_id = r.run_id";

const UNDO_SQLITE: &str = "UPDATE schedules SET lease_run_id = json_extract(r.value, '$.lease_run_id'), lease_expires_at = json_extract(r.value, '$.lease_expires_at'),
    next_run_at = json_extract(r.value, '$.next_run_at'), next_full_at = json_extract(r.value, '$.next_full_at')
FROM json_each($1) AS r
WHERE schedules.lease_run_id = json_extract(r.value, '$.run_id')";

impl Store {
    /// Up to `limit` schedules due at `now` in the `due` way, the first ones after `after`
    /// (the last of the previous batch; None: from the start) in that way's order.
    pub async fn due_schedules(
        &self,
        now: DateTime<Utc>,
        due: Due,
        after: Option<&DueSchedule>,
        limit: i64,
    ) -> Result<Vec<DueSchedule>, StoreError> {
        // An empty key sorts before every stored one.
        let (key, connection, resource) = match after {
            None => ("", "", ""),
            Some(a) => (
                match due {
                    Due::LeaseExpired => a.lease_expires_at.as_deref().unwrap_or_default(),
                    Due::Time => a.next_run_at.as_str(),
                },
                a.connection.as_str(),
                a.resource.as_str(),
            ),
        };
        let [paused, reauth] = halted();
        let sql = due_sql(due, self.postgres);
        let query = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(stamp(now))
            .bind(key)
            .bind(connection)
            .bind(resource)
            .bind(paused)
            .bind(reauth)
            .bind(limit);
        if !self.postgres {
            return Ok(query.fetch_all(&self.pool).await?);
        }
        // Without statistics (a table just loaded, not yet analyzed) PostgreSQL would
        // rather sort every due row than walk the index in order, for every batch.
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET LOCAL enable_sort = off")
            .execute(&mut *tx)
            .await?;
        let rows = query.fetch_all(&mut *tx).await?;
        tx.commit().await?;
        Ok(rows)
    }

    /// Take due schedules for their runs in one statement; one flag per claim, in order.
    /// A claim succeeds for exactly one scheduler replica (compare-and-set on what
    /// `due_schedules` saw) and sets the lease and the next due times (`stamp` text).
    /// `now` is the tick's time: leases run from it.
    pub async fn claim_schedules<'a>(
        &self,
        now: DateTime<Utc>,
        claims: impl Iterator<Item = (&'a DueSchedule, &'a str, &'a str, &'a str)>,
    ) -> Result<Vec<bool>, StoreError> {
        let rows: Vec<ClaimRow<'a>> = claims
            .map(|(due, run_id, next_run_at, next_full_at)| ClaimRow {
                connection: &due.connection,
                resource: &due.resource,
                seen_run_at: &due.next_run_at,
                seen_lease: due.lease_run_id.as_deref(),
                run_id,
                next_run_at,
                next_full_at,
            })
            .collect();
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let lease_until = stamp(now + self.lease);
        let taken = if self.postgres {
            self.claim_postgres(&rows, &lease_until).await?
        } else {
            self.claim_sqlite(&rows, &lease_until).await?
        };
        Ok(rows
            .iter()
            .map(|r| taken.contains(&(r.connection.to_string(), r.resource.to_string())))
            .collect())
    }

    /// The claims won: (connection, resource).
    async fn claim_postgres(
        &self,
        rows: &[ClaimRow<'_>],
        lease_until: &str,
    ) -> Result<HashSet<(String, String)>, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(CLAIM_TURN)
            .bind(CLAIM_TURN_KEY)
            .execute(&mut *tx)
            .await?;
        let taken: Vec<(String, String)> = sqlx::query_as(CLAIM_POSTGRES)
            .bind(serde_json::to_string(rows).expect("strings serialize"))
            .bind(lease_until)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(taken.into_iter().collect())
    }

    /// The claims won: (connection, resource).
    async fn claim_sqlite(
        &self,
        rows: &[ClaimRow<'_>],
        lease_until: &str,
    ) -> Result<HashSet<(String, String)>, StoreError> {
        let taken: Vec<(String, String)> = sqlx::query_as(CLAIM_SQLITE)
            .bind(serde_json::to_string(rows).expect("strings serialize"))
            .bind(lease_until)
            .fetch_all(&self.pool)
            .await?;
        Ok(taken.into_iter().collect())
    }

    /// Give claims back (their jobs could not be enqueued), in one statement: each
    /// schedule still leased to the claim's run is put back as `due_schedules` read it, so
    /// the next tick finds it due again exactly as this one did.
    pub async fn release_claims<'a>(
        &self,
        claims: impl Iterator<Item = (&'a DueSchedule, &'a str)>,
    ) -> Result<(), StoreError> {
        let rows: Vec<UndoRow<'a>> = claims
            .map(|(due, run_id)| UndoRow {
                run_id,
                lease_run_id: due.lease_run_id.as_deref(),
                lease_expires_at: due.lease_expires_at.as_deref(),
                next_run_at: &due.next_run_at,
                next_full_at: &due.next_full_at,
            })
            .collect();
        if rows.is_empty() {
            return Ok(());
        }
        let sql = if self.postgres {
            UNDO_POSTGRES
        } else {
            UNDO_SQLITE
        };
        sqlx::query(sql)
            .bind(serde_json::to_string(&rows).expect("strings serialize"))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Give a lease back (its run ended or its job could not be enqueued): the schedule
    /// waits for its next due time.
    pub async fn release_lease(&self, run_id: &str) -> Result<(), StoreError> {
        sqlx::query(RELEASE_LEASE)
            .bind(run_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
