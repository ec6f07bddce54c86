//! Sync runs: one row per run of a (connection, resource), with its counters, its status
//! and, at its start, the resource's sequence value (`start_seq`; see `fingerprints`).

use serde::Serialize;

use super::checkpoints::next_seq;
use super::{Store, StoreError, RELEASE_LEASE};
use crate::domain::time::now_stamp;
use crate::domain::{RunCounts, RunMode, RunStatus};

/// A run as stored (and as the API returns it).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct RunRecord {
    pub id: String,
    pub connection: String,
    pub resource: String,
    #[sqlx(try_from = "String")]
    pub mode: RunMode,
    pub reason: String,
    #[sqlx(try_from = "String")]
    pub status: RunStatus,
    pub started_at: String,
    pub finished_at: Option<String>,
    #[sqlx(flatten, try_from = "CountsRow")]
    pub counts: RunCounts,
    pub error: Option<String>,
}

/// The counter columns of `sync_runs` (the domain's `RunCounts` knows no SQL).
#[derive(sqlx::FromRow)]
struct CountsRow {
    slices: i64,
    pages: i64,
    records: i64,
    created: i64,
    updated: i64,
    deleted: i64,
    dead_lettered: i64,
}

impl From<CountsRow> for RunCounts {
    fn from(r: CountsRow) -> Self {
        RunCounts {
            slices: r.slices,
            pages: r.pages,
            records: r.records,
            created: r.created,
            updated: r.updated,
            deleted: r.deleted,
            dead_lettered: r.dead_lettered,
        }
    }
}

const RUN_COLUMNS: &str = "id, connection, resource, mode, reason, status, started_at, finished_at, slices, pages, records, created, updated, deleted, dead_lettered, error";

/// A run to record as started.
pub struct NewRun<'a> {
    pub id: &'a str,
    pub connection: &'a str,
    pub resource: &'a str,
    pub mode: RunMode,
    pub reason: &'a str,
}

impl Store {
    /// Record the run as running and make it the checkpoint's run in progress (slice 0).
    /// Its `start_seq` is the resource's next sequence value: what is seen later has a
    /// larger one, whatever the workers' clocks say.
    pub async fn start_run(&self, run: &NewRun<'_>) -> Result<(), StoreError> {
        let t = now_stamp();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO checkpoints (connection, resource, run_id, mode, slice, page_state, run_max_updated, since, updated_at)
             VALUES ($1, $2, $3, $4, 0, NULL, NULL, NULL, $5)
             ON CONFLICT (connection, resource) DO UPDATE SET run_id = excluded.run_id, mode = excluded.mode, slice = 0,
               page_state = NULL, run_max_updated = NULL, handover_pending = 0, updated_at = excluded.updated_at",
        )
        .bind(run.connection)
        .bind(run.resource)
        .bind(run.id)
        .bind(run.mode.as_str())
        .bind(&t)
        .execute(&mut *tx)
        .await?;
        let start_seq = next_seq(&mut tx, run.connection, run.resource).await?;
        sqlx::query(
            "INSERT INTO sync_runs (id, connection, resource, mode, reason, status, started_at, slices, pages, records, created, updated, deleted, dead_lettered, start_seq)
             VALUES ($1, $2, $3, $4, $5, $6, $7, 0, 0, 0, 0, 0, 0, 0, $8) ON CONFLICT (id) DO NOTHING",
        )
        .bind(run.id)
        .bind(run.connection)
        .bind(run.resource)
        .bind(run.mode.as_str())
        .bind(run.reason)
        .bind(RunStatus::Running.as_str())
        .bind(&t)
        .bind(start_seq)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn run(&self, id: &str) -> Result<RunRecord, StoreError> {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {RUN_COLUMNS} FROM sync_runs WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::NotFound {
            what: "sync run",
            id: id.to_string(),
        })
    }

    /// A connection's runs, newest first.
    pub async fn runs(&self, connection: &str, limit: i64) -> Result<Vec<RunRecord>, StoreError> {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {RUN_COLUMNS} FROM sync_runs WHERE connection = $1 ORDER BY started_at DESC, id DESC LIMIT $2"
        )))
        .bind(connection)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// When the last completed run (full or incremental) of a connection's resource ended
    /// (None: none has).
    pub async fn last_completed_end(
        &self,
        connection: &str,
        resource: &str,
    ) -> Result<Option<chrono::DateTime<chrono::Utc>>, StoreError> {
        let row: Option<(Option<String>,)> = sqlx::query_as(
            "SELECT MAX(finished_at) FROM sync_runs
             WHERE connection = $1 AND resource = $2 AND status = $3 AND mode <> $4",
        )
        .bind(connection)
        .bind(resource)
        .bind(RunStatus::Completed.as_str())
        .bind(RunMode::Fetch.as_str())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row
            .and_then(|(t,)| t)
            .and_then(|t| crate::domain::time::parse_stamp(&t)))
    }

    /// The latest run of each of a connection's resources.
    pub async fn last_runs(&self, connection: &str) -> Result<Vec<RunRecord>, StoreError> {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {} FROM sync_runs r WHERE r.connection = $1 AND r.started_at = (
               SELECT MAX(r2.started_at) FROM sync_runs r2 WHERE r2.connection = r.connection AND r2.resource = r.resource)
             ORDER BY r.resource",
            prefixed("r")
        )))
        .bind(connection)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The latest run of each resource of every connection of a tenant (all tenants' when
    /// None), in one query: the connection list's last runs.
    pub async fn last_runs_of_tenant(
        &self,
        tenant: Option<&str>,
    ) -> Result<Vec<RunRecord>, StoreError> {
        let sql = format!(
            "SELECT {} FROM sync_runs r JOIN connections c ON c.id = r.connection
             WHERE {} r.started_at = (
               SELECT MAX(r2.started_at) FROM sync_runs r2 WHERE r2.connection = r.connection AND r2.resource = r.resource)
             ORDER BY r.connection, r.resource",
            prefixed("r"),
            if tenant.is_some() { "c.tenant = $1 AND" } else { "" },
        );
        let q = sqlx::query_as(sqlx::AssertSqlSafe(sql));
        let q = match tenant {
            Some(t) => q.bind(t),
            None => q,
        };
        Ok(q.fetch_all(&self.pool).await?)
    }

    /// The run failed: it stays failed, its checkpoint is cleared, nothing is deleted.
    pub async fn fail_run(
        &self,
        connection: &str,
        resource: &str,
        run_id: &str,
        error: &str,
    ) -> Result<(), StoreError> {
        let t = now_stamp();
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE sync_runs SET status = $1, error = $2, finished_at = $3 WHERE id = $4")
            .bind(RunStatus::Failed.as_str())
            .bind(error)
            .bind(&t)
            .bind(run_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(RELEASE_LEASE)
            .bind(run_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE checkpoints SET run_id = NULL, mode = NULL, page_state = NULL, run_max_updated = NULL, updated_at = $1
             WHERE connection = $2 AND resource = $3 AND run_id = $4",
        )
        .bind(&t)
        .bind(connection)
        .bind(resource)
        .bind(run_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

/// `RUN_COLUMNS` qualified by a table alias (and named: SQLite leaves unnamed ones unspecified).
fn prefixed(alias: &str) -> String {
    RUN_COLUMNS
        .split(", ")
        .map(|c| format!("{alias}.{c} AS {c}"))
        .collect::<Vec<_>>()
        .join(", ")
}
