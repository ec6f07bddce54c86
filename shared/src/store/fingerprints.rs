//! Fingerprints (what was last published for each record), the slice commit that writes
//! them with the run's counters and checkpoint in one transaction, and the deletion
//! sweep's candidates.
//!
//! "Seen after this run started" is ordered by the (connection, resource)'s sequence
//! (`checkpoints.seq`), not by clocks: a run takes a value when it starts (`start_seq`),
//! every slice commit takes a new one and stamps the records it saw with it (`seen_seq`).
//! A record whose `seen_seq` is at least the run's `start_seq` was seen after the run
//! started (by any run), so the run's sweep leaves it alone, whatever two workers' clocks say.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::checkpoints::next_seq;
use super::{corrupt, Store, StoreError, RELEASE_LEASE};
use crate::domain::time::{now_stamp, stamp};
use crate::domain::{PageState, RunCounts, RunStatus, StoredFingerprint};

/// What one slice commits (see `Store::commit_slice`).
pub struct SliceCommit<'a> {
    pub connection: &'a str,
    pub resource: &'a str,
    pub run_id: &'a str,
    /// Slices committed including this one.
    pub slice: i64,
    pub seen: &'a [StoredFingerprint],
    /// Records seen but not rewritten (unchanged, or dead-lettered): kept, only marked
    /// seen by this run.
    pub touched: &'a [String],
    pub deleted: &'a [String],
    /// Where the next slice starts (None with `finished_since`).
    pub next: Option<&'a PageState>,
    pub run_max_updated: Option<DateTime<Utc>>,
    /// Set when the run completed: the new incremental start (may itself be None).
    pub finished_since: Option<Option<DateTime<Utc>>>,
    /// Set when the run completed with a delta link: where the next incremental run starts
    /// (otherwise the stored one is kept).
    pub finished_delta_link: Option<&'a str>,
    pub counts: RunCounts,
}

#[derive(sqlx::FromRow)]
struct FingerprintRow {
    record_id: String,
    hash: String,
    field_hashes: String,
    source_updated_at: Option<String>,
}

impl TryFrom<FingerprintRow> for StoredFingerprint {
    type Error = StoreError;
    fn try_from(row: FingerprintRow) -> Result<Self, StoreError> {
        Ok(StoredFingerprint {
            field_hashes: serde_json::from_str(&row.field_hashes)
                .map_err(corrupt("field hashes"))?,
            source_updated_at: crate::domain::time::parse_stored(row.source_updated_at.as_deref()),
            record_id: row.record_id,
            hash: row.hash,
        })
    }
}

impl Store {
    /// Stored fingerprints of these records: one statement, whatever the page's size
    /// (the ids travel as one JSON parameter, so the statement is prepared once and its
    /// plan is the index lookup however many ids there are).
    pub async fn fingerprints(
        &self,
        connection: &str,
        resource: &str,
        ids: &[String],
    ) -> Result<Vec<StoredFingerprint>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = if self.is_postgres() {
            "SELECT f.record_id, f.hash, f.field_hashes, f.source_updated_at FROM json_array_elements_text($3::json) AS ids(id)
             CROSS JOIN LATERAL (SELECT record_id, hash, field_hashes, source_updated_at FROM fingerprints
               WHERE connection = $1 AND resource = $2 AND record_id = ids.id OFFSET 0) AS f"
                .to_string()
        } else {
            "SELECT record_id, hash, field_hashes, source_updated_at FROM fingerprints
             WHERE connection = $1 AND resource = $2 AND record_id IN (SELECT value FROM json_each($3))"
                .to_string()
        };
        let rows: Vec<FingerprintRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(connection)
            .bind(resource)
            .bind(json_list(ids))
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(StoredFingerprint::try_from).collect()
    }

    /// `<table alias> ... WHERE <the rows of these ids>`: the rows of the (connection,
    /// resource) at `$conn`, `$res` whose ids are in the JSON array at `$ids`, for an UPDATE
    /// (`FROM`) or a DELETE (`USING`) of `fingerprints AS f`.
    ///
    /// On PostgreSQL each id is one probe of the primary key (a lateral lookup the planner
    /// cannot flatten), then the row by its ctid. Written as `record_id IN (...)`, a cached
    /// generic plan made while the table had no statistics scans every row of the
    /// connection per statement (it believes `connection = $1` matches one row), which made
    /// a page's cost grow with what was stored.
    fn rows_of_ids(&self, join: &str, conn: usize, res: usize, ids: usize) -> String {
        if self.is_postgres() {
            format!(
                "{join} (SELECT h.ctid AS hit FROM json_array_elements_text(${ids}::json) AS ids(id)
                   CROSS JOIN LATERAL (SELECT ctid FROM fingerprints
                     WHERE connection = ${conn} AND resource = ${res} AND record_id = ids.id OFFSET 0) AS h) AS x
                 WHERE f.ctid = x.hit"
            )
        } else {
            format!(
                "WHERE f.connection = ${conn} AND f.resource = ${res} AND f.record_id IN (SELECT value FROM json_each(${ids}))"
            )
        }
    }

    /// `SELECT record_id, hash, field_hashes, source_updated_at FROM ...` (columns so
    /// named): the rows of the JSON array of objects bound at `$param`.
    fn json_fingerprints(&self, param: usize) -> String {
        if self.is_postgres() {
            format!(
                "SELECT r.record_id, r.hash, r.field_hashes, r.source_updated_at FROM json_to_recordset(${param}::json) AS r(record_id text, hash text, field_hashes text, source_updated_at text)"
            )
        } else {
            format!(
                "SELECT json_extract(value, '$.record_id') AS record_id, json_extract(value, '$.hash') AS hash,
                   json_extract(value, '$.field_hashes') AS field_hashes,
                   json_extract(value, '$.source_updated_at') AS source_updated_at FROM json_each(${param})"
            )
        }
    }

    /// Everything one slice learned, in one transaction: fingerprints of the records
    /// it saw (marked seen by this run, at a new sequence value), the run's counters and
    /// where the next slice starts. Called only after the broker acknowledged the slice's
    /// events. The run must have been started (`start_run`).
    pub async fn commit_slice(&self, c: &SliceCommit<'_>) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let t = now_stamp();
        let seq = next_seq(&mut tx, c.connection, c.resource).await?;
        self.write_seen(&mut tx, c, seq, &t).await?;
        self.forget(&mut tx, c).await?;
        self.advance_run(&mut tx, c, &t).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Fingerprints and deletions alone (a fetch by id): stamped at a new sequence value
    /// like a slice's, with no run, counters or checkpoint moved. A resource that never
    /// ran gets its checkpoint row (empty) for the sequence.
    pub(super) async fn commit_seen_only(&self, c: &SliceCommit<'_>) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let t = now_stamp();
        sqlx::query(
            "INSERT INTO checkpoints (connection, resource, run_id, mode, slice, page_state, run_max_updated, since, updated_at)
             VALUES ($1, $2, NULL, NULL, 0, NULL, NULL, NULL, $3) ON CONFLICT (connection, resource) DO NOTHING",
        )
        .bind(c.connection)
        .bind(c.resource)
        .bind(&t)
        .execute(&mut *tx)
        .await?;
        let seq = next_seq(&mut tx, c.connection, c.resource).await?;
        self.write_seen(&mut tx, c, seq, &t).await?;
        self.forget(&mut tx, c).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Delete the fingerprints of the records a commit says are gone.
    async fn forget(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        c: &SliceCommit<'_>,
    ) -> Result<(), StoreError> {
        if c.deleted.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "DELETE FROM fingerprints AS f {}",
            self.rows_of_ids("USING", 1, 2, 3)
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(c.connection)
            .bind(c.resource)
            .bind(json_list(c.deleted))
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// The checkpoint, the lease and the run's counters after a slice.
    async fn advance_run(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        c: &SliceCommit<'_>,
        t: &str,
    ) -> Result<(), StoreError> {
        match c.finished_since {
            // The run completed: its high-water mark becomes the next incremental start,
            // and its lease is released.
            Some(since) => {
                sqlx::query(
                    "UPDATE checkpoints SET run_id = NULL, mode = NULL, slice = $1, page_state = NULL, run_max_updated = NULL,
                       since = $2, delta_link = COALESCE($3, delta_link), updated_at = $4
                     WHERE connection = $5 AND resource = $6",
                )
                .bind(c.slice)
                .bind(since.map(stamp))
                .bind(c.finished_delta_link)
                .bind(t)
                .bind(c.connection)
                .bind(c.resource)
                .execute(&mut **tx)
                .await?;
                sqlx::query(RELEASE_LEASE)
                    .bind(c.run_id)
                    .execute(&mut **tx)
                    .await?;
            }
            // More to come: where the next slice starts, and the lease renewed.
            None => {
                let page_state = c
                    .next
                    .map(|p| serde_json::to_string(p).expect("page state serializes"));
                sqlx::query(
                    // A slice handed to a continuation stays pending until the bus has it.
                    "UPDATE checkpoints SET slice = $1, page_state = $2, run_max_updated = $3, updated_at = $4,
                       handover_pending = CASE WHEN slice <> $1 THEN 1 ELSE handover_pending END
                     WHERE connection = $5 AND resource = $6 AND run_id = $7",
                )
                .bind(c.slice)
                .bind(page_state)
                .bind(c.run_max_updated.map(stamp))
                .bind(t)
                .bind(c.connection)
                .bind(c.resource)
                .bind(c.run_id)
                .execute(&mut **tx)
                .await?;
                sqlx::query("UPDATE schedules SET lease_expires_at = $1 WHERE lease_run_id = $2")
                    .bind(self.lease_until())
                    .bind(c.run_id)
                    .execute(&mut **tx)
                    .await?;
            }
        }
        let status = if c.finished_since.is_some() {
            RunStatus::Completed
        } else {
            RunStatus::Running
        };
        sqlx::query(
            "UPDATE sync_runs SET slices = slices + $1, pages = pages + $2, records = records + $3, created = created + $4,
               updated = updated + $5, deleted = deleted + $6, dead_lettered = dead_lettered + $7, status = $8,
               finished_at = CASE WHEN $9 THEN $10 ELSE finished_at END
             WHERE id = $11",
        )
        .bind(c.counts.slices)
        .bind(c.counts.pages)
        .bind(c.counts.records)
        .bind(c.counts.created)
        .bind(c.counts.updated)
        .bind(c.counts.deleted)
        .bind(c.counts.dead_lettered)
        .bind(status.as_str())
        .bind(status == RunStatus::Completed)
        .bind(t)
        .bind(c.run_id)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Records the run did not see and nobody saw after it started: the candidates of a
    /// completed full sync's sweep. A run started before migration 0006 (no `start_seq`)
    /// sweeps nothing; the next full run does.
    pub async fn unseen(
        &self,
        connection: &str,
        resource: &str,
        run_id: &str,
    ) -> Result<Vec<StoredFingerprint>, StoreError> {
        let rows: Vec<FingerprintRow> = sqlx::query_as(
            "SELECT record_id, hash, field_hashes, source_updated_at FROM fingerprints
             WHERE connection = $1 AND resource = $2 AND seen_run <> $3
               AND seen_seq < (SELECT start_seq FROM sync_runs WHERE id = $4)
             ORDER BY record_id",
        )
        .bind(connection)
        .bind(resource)
        .bind(run_id)
        .bind(run_id)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(StoredFingerprint::try_from).collect()
    }
}

/// The ids as one JSON array parameter.
fn json_list(ids: &[String]) -> String {
    serde_json::to_string(ids).expect("strings serialize")
}

/// The fingerprints as one JSON array parameter, the last of a record seen twice winning
/// (one statement must not upsert a row twice).
fn json_rows(seen: &[StoredFingerprint]) -> String {
    let mut at: HashMap<&str, usize> = HashMap::with_capacity(seen.len());
    for (i, f) in seen.iter().enumerate() {
        at.insert(&f.record_id, i);
    }
    let rows: Vec<serde_json::Value> = seen
        .iter()
        .enumerate()
        .filter(|(i, f)| at[f.record_id.as_str()] == *i)
        .map(|(_, f)| {
            serde_json::json!({
                "record_id": f.record_id,
                "hash": f.hash,
                "field_hashes": serde_json::to_string(&f.field_hashes).expect("map serializes"),
                "source_updated_at": f.source_updated_at.map(stamp),
            })
        })
        .collect();
    serde_json::to_string(&rows).expect("rows serialize")
}

impl Store {
    /// Fingerprints of what the slice saw new or changed (upserted), and the ids of what
    /// it saw unchanged or only touched (dead letters: kept, re-marked), stamped with this
    /// run and this commit's sequence value: two statements, whatever the page's size.
    /// A stored fingerprint with a newer provider updated-at is kept (a writer that read
    /// before another committed a newer version must not put the older one back; stamps
    /// are fixed-width UTC, so they compare as text).
    async fn write_seen(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        c: &SliceCommit<'_>,
        seq: i64,
        t: &str,
    ) -> Result<(), StoreError> {
        if !c.seen.is_empty() {
            let sql = format!(
                "INSERT INTO fingerprints (connection, resource, record_id, hash, field_hashes, seen_run, seen_seq, updated_at, source_updated_at)
                 SELECT $1, $2, f.record_id, f.hash, f.field_hashes, $4, $5, $6, f.source_updated_at FROM ({}) AS f WHERE true
                 ON CONFLICT (connection, resource, record_id) DO UPDATE SET hash = excluded.hash, field_hashes = excluded.field_hashes,
                   seen_run = excluded.seen_run, seen_seq = excluded.seen_seq, updated_at = excluded.updated_at,
                   source_updated_at = COALESCE(excluded.source_updated_at, fingerprints.source_updated_at)
                 WHERE excluded.source_updated_at IS NULL OR fingerprints.source_updated_at IS NULL
                   OR excluded.source_updated_at >= fingerprints.source_updated_at",
                self.json_fingerprints(3)
            );
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(c.connection)
                .bind(c.resource)
                .bind(json_rows(c.seen))
                .bind(c.run_id)
                .bind(seq)
                .bind(t)
                .execute(&mut **tx)
                .await?;
        }
        if !c.touched.is_empty() {
            let sql = format!(
                "UPDATE fingerprints AS f SET seen_run = $1, seen_seq = $2 {}",
                self.rows_of_ids("FROM", 3, 4, 5)
            );
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(c.run_id)
                .bind(seq)
                .bind(c.connection)
                .bind(c.resource)
                .bind(json_list(c.touched))
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }
}
