//! Token refresh locks: one OAuth refresh per connection at a time across the fleet. The
//! holder of a connection's row refreshes; the others wait, then re-read what it stored.

use std::time::Duration;

use chrono::Utc;

use super::{Store, StoreError};
use crate::domain::time::stamp;

/// How often a waiting process tries the lock again.
const LOCK_POLL: Duration = Duration::from_millis(25);

impl Store {
    /// Take the connection's refresh lock for `holder` (waits while another holds it).
    /// A lock whose holder died expires after `ttl`.
    pub async fn lock_refresh(
        &self,
        connection: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let ttl = chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::seconds(30));
        loop {
            let now = Utc::now();
            let done = sqlx::query(
                "INSERT INTO token_locks (connection, holder, expires_at) VALUES ($1, $2, $3)
                 ON CONFLICT (connection) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
                 WHERE token_locks.expires_at < $4",
            )
            .bind(connection)
            .bind(holder)
            .bind(stamp(now + ttl))
            .bind(stamp(now))
            .execute(&self.pool)
            .await?;
            if done.rows_affected() == 1 {
                return Ok(());
            }
            tokio::time::sleep(LOCK_POLL).await;
        }
    }

    pub async fn unlock_refresh(&self, connection: &str, holder: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM token_locks WHERE connection = $1 AND holder = $2")
            .bind(connection)
            .bind(holder)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

impl Store {
    /// Claim a (connection, resource) for `holder` (a job running on one worker) for `ttl`,
    /// or renew the claim it holds. False while another holder's claim has not expired.
    pub async fn claim_resource(
        &self,
        connection: &str,
        resource: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let ttl = chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::seconds(30));
        let now = Utc::now();
        let done = sqlx::query(
            "INSERT INTO resource_claims (connection, resource, holder, expires_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (connection, resource) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
             WHERE resource_claims.expires_at < $5 OR resource_claims.holder = excluded.holder",
        )
        .bind(connection)
        .bind(resource)
        .bind(holder)
        .bind(stamp(now + ttl))
        .bind(stamp(now))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Give a claim back (only its holder's).
    pub async fn release_resource(
        &self,
        connection: &str,
        resource: &str,
        holder: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "DELETE FROM resource_claims WHERE connection = $1 AND resource = $2 AND holder = $3",
        )
        .bind(connection)
        .bind(resource)
        .bind(holder)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
