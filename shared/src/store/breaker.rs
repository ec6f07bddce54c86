//! The circuit breaker's columns on `connections`: consecutive failed or throttled slices
//! (`failure_streak`), until when the connection's jobs wait (`blocked_until`), and the one
//! half-open probe after that (claimed by a compare-and-set on `blocked_until`).

use chrono::{DateTime, Utc};

use super::connections::halted;
use super::{Store, StoreError};
use crate::domain::time::{now_stamp, stamp};
use crate::domain::ConnectionState;

impl Store {
    /// One more failed or throttled slice in a row; returns the streak.
    pub async fn record_failure(&self, connection: &str) -> Result<i64, StoreError> {
        sqlx::query_scalar(
            "UPDATE connections SET failure_streak = failure_streak + 1 WHERE id = $1 RETURNING failure_streak",
        )
        .bind(connection)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::NotFound {
            what: "connection",
            id: connection.to_string(),
        })
    }

    /// Hold the connection's jobs until `until`; with a state, also show it (e.g.
    /// `RateLimited`), unless the connection is paused or waiting for re-authorization.
    pub async fn block_connection(
        &self,
        connection: &str,
        until: DateTime<Utc>,
        state: Option<(ConnectionState, &str)>,
    ) -> Result<(), StoreError> {
        let until = stamp(until);
        match state {
            Some((state, message)) => {
                let [paused, reauth] = halted();
                sqlx::query(
                    "UPDATE connections SET blocked_until = $1, state = $2, state_message = $3, updated_at = $4
                     WHERE id = $5 AND state NOT IN ($6, $7)",
                )
                .bind(&until)
                .bind(state.as_str())
                .bind(message)
                .bind(now_stamp())
                .bind(connection)
                .bind(paused)
                .bind(reauth)
                .execute(&self.pool)
                .await?
            }
            None => {
                sqlx::query("UPDATE connections SET blocked_until = $1 WHERE id = $2")
                    .bind(&until)
                    .bind(connection)
                    .execute(&self.pool)
                    .await?
            }
        };
        Ok(())
    }

    /// Half-open: the first job after `seen` (the block that ended) claims the one probe,
    /// holding other jobs of the connection until `hold_others_until`. False when another
    /// replica claimed it first. `seen` came from `blocked_until` through the one codec, so
    /// its text is the stored text.
    pub async fn claim_probe(
        &self,
        connection: &str,
        seen: DateTime<Utc>,
        hold_others_until: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE connections SET blocked_until = $1 WHERE id = $2 AND blocked_until = $3",
        )
        .bind(stamp(hold_others_until))
        .bind(connection)
        .bind(stamp(seen))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// A page came back: the circuit closes and a rate-limited connection is healthy again.
    pub async fn clear_breaker(&self, connection: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE connections SET failure_streak = 0, blocked_until = NULL,
               state = CASE WHEN state = $1 THEN $2 ELSE state END,
               state_message = CASE WHEN state = $3 THEN NULL ELSE state_message END
             WHERE id = $4",
        )
        .bind(ConnectionState::RateLimited.as_str())
        .bind(ConnectionState::Healthy.as_str())
        .bind(ConnectionState::RateLimited.as_str())
        .bind(connection)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
