//! Checkpoints: one row per (connection, resource): the run in progress (where its next
//! slice starts), the high-water mark incremental runs start from, and the resource's
//! sequence (`seq`), the logical clock the deletion sweep orders "seen" by.

use chrono::{DateTime, Utc};

use super::{corrupt, Store, StoreError};
use crate::domain::time::{now_stamp, parse_stored};
use crate::domain::{PageState, RunMode};

/// Where a (connection, resource) stands.
#[derive(Debug, Clone, Default)]
pub struct Checkpoint {
    /// The run in progress, if any.
    pub run_id: Option<String>,
    pub mode: Option<RunMode>,
    /// Slices committed (of the run in progress, or of the last run).
    pub slice: i64,
    /// Where the run's next slice starts.
    pub page_state: Option<PageState>,
    /// Latest updated-at seen so far by the run in progress.
    pub run_max_updated: Option<DateTime<Utc>>,
    /// Where the next incremental run starts (the last completed run's high-water mark).
    pub since: Option<DateTime<Utc>>,
    /// Where the next incremental run of a delta-tracked resource starts: the link the
    /// last completed round ended with.
    pub delta_link: Option<String>,
    /// The run's slice `slice` may not be on the bus yet: the slice before it committed,
    /// and its continuation job was not confirmed sent (see `Store::handed_over`).
    pub handover_pending: bool,
}

#[derive(sqlx::FromRow)]
struct CheckpointRow {
    run_id: Option<String>,
    mode: Option<String>,
    slice: i64,
    page_state: Option<String>,
    run_max_updated: Option<String>,
    since: Option<String>,
    delta_link: Option<String>,
    handover_pending: i64,
}

impl TryFrom<CheckpointRow> for Checkpoint {
    type Error = StoreError;
    fn try_from(row: CheckpointRow) -> Result<Self, StoreError> {
        Ok(Checkpoint {
            run_id: row.run_id,
            mode: row.mode.map(|m| m.parse()).transpose().map_err(
                |e: crate::domain::UnknownName| StoreError::Corrupt {
                    what: "checkpoint mode",
                    message: e.to_string(),
                },
            )?,
            slice: row.slice,
            page_state: row
                .page_state
                .map(|p| serde_json::from_str(&p))
                .transpose()
                .map_err(corrupt("page state"))?,
            run_max_updated: parse_stored(row.run_max_updated.as_deref()),
            since: parse_stored(row.since.as_deref()),
            delta_link: row.delta_link,
            handover_pending: row.handover_pending != 0,
        })
    }
}

impl Store {
    pub async fn checkpoint(
        &self,
        connection: &str,
        resource: &str,
    ) -> Result<Checkpoint, StoreError> {
        let row: Option<CheckpointRow> = sqlx::query_as(
            "SELECT run_id, mode, slice, page_state, run_max_updated, since, delta_link, handover_pending FROM checkpoints WHERE connection = $1 AND resource = $2",
        )
        .bind(connection)
        .bind(resource)
        .fetch_optional(&self.pool)
        .await?;
        row.map_or(Ok(Checkpoint::default()), Checkpoint::try_from)
    }

    /// A parked slice hands its place in the run to the continuation job (slice `to`),
    /// which is then pending until `handed_over`.
    pub async fn advance_slice(
        &self,
        connection: &str,
        resource: &str,
        run_id: &str,
        from: i64,
        to: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE checkpoints SET slice = $1, handover_pending = 1, updated_at = $2
             WHERE connection = $3 AND resource = $4 AND run_id = $5 AND slice = $6",
        )
        .bind(to)
        .bind(now_stamp())
        .bind(connection)
        .bind(resource)
        .bind(run_id)
        .bind(from)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The bus confirmed the continuation job of the run's slice `slice`: a retry of the
    /// slice before it is now a plain duplicate, skipped.
    pub async fn handed_over(
        &self,
        connection: &str,
        resource: &str,
        run_id: &str,
        slice: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE checkpoints SET handover_pending = 0
             WHERE connection = $1 AND resource = $2 AND run_id = $3 AND slice = $4",
        )
        .bind(connection)
        .bind(resource)
        .bind(run_id)
        .bind(slice)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

/// Tick the (connection, resource)'s sequence inside `tx` and return the new value. The row
/// update also locks the row until `tx` ends, so values are handed out in commit order:
/// whatever took a smaller value committed before a larger one was taken.
pub(super) async fn next_seq(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    connection: &str,
    resource: &str,
) -> Result<i64, StoreError> {
    sqlx::query_scalar(
        "UPDATE checkpoints SET seq = seq + 1 WHERE connection = $1 AND resource = $2 RETURNING seq",
    )
    .bind(connection)
    .bind(resource)
    .fetch_optional(&mut **tx)
    .await?
    .ok_or_else(|| StoreError::NotFound {
        what: "checkpoint (start the run first)",
        id: format!("{connection}/{resource}"),
    })
}
