//! Webhooks in the store: each connection's channel (the hashed hook token of its URL,
//! the subscription registered with the provider and its sealed signing secret, the
//! channel's health), the event ids already handled (deduplication, with a time to
//! live), routing by a connection's `external_id`, and a fetch's commit: fingerprints
//! written and records forgotten without touching the resource's checkpoint.

use chrono::{DateTime, Utc};

use super::{Store, StoreError};
use crate::domain::time::{now_stamp, stamp};
use crate::domain::StoredFingerprint;

/// The hash a hook token is stored and looked up by.
pub fn hook_token_hash(token: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}

/// A connection's webhook channel as the receiver needs it.
#[derive(Debug, Clone)]
pub struct ChannelKey {
    pub connection: String,
    pub tenant: String,
    pub provider: String,
    /// The subscription's signing secret, opened (never logged).
    pub secret: Option<String>,
}

/// A channel's health, for the connection's status.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ChannelHealth {
    pub subscription_id: Option<String>,
    pub expires_at: Option<String>,
    pub last_delivery_at: Option<String>,
    pub deliveries: i64,
    pub failures: i64,
    pub last_failure: Option<String>,
    pub last_failure_at: Option<String>,
}

/// A connection's subscription at the provider, its secret opened (never logged).
#[derive(Debug, Clone)]
pub struct Registration {
    pub subscription_id: Option<String>,
    pub secret: Option<String>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// A channel and how long it has been quiet.
#[derive(Debug, Clone)]
pub struct QuietChannel {
    pub connection: String,
    pub provider: String,
    pub quiet_since: DateTime<Utc>,
}

/// What a fetch job commits (see `Store::commit_fetch`).
pub struct FetchCommit<'a> {
    pub connection: &'a str,
    pub resource: &'a str,
    pub fetch_id: &'a str,
    pub written: &'a [StoredFingerprint],
    pub touched: &'a [String],
    pub deleted: &'a [String],
}

#[derive(sqlx::FromRow)]
struct ChannelRow {
    connection: String,
    tenant: String,
    provider: String,
    secret: Option<String>,
    secret_key_id: Option<String>,
}

impl Store {
    /// Open (or replace) a connection's channel: the hook token's hash and the
    /// subscription with its secret, sealed.
    pub async fn open_channel(
        &self,
        connection: &str,
        provider: &str,
        token: Option<&str>,
        subscription_id: Option<&str>,
        secret: Option<&str>,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError> {
        let sealed = secret.map(|s| self.cipher.seal(s.as_bytes()));
        sqlx::query(
            "INSERT INTO webhook_channels (connection, provider, token_hash, subscription_id, secret, secret_key_id, expires_at, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (connection) DO UPDATE SET provider = excluded.provider, token_hash = excluded.token_hash,
               subscription_id = excluded.subscription_id, secret = excluded.secret, secret_key_id = excluded.secret_key_id,
               expires_at = excluded.expires_at",
        )
        .bind(connection)
        .bind(provider)
        .bind(token.map(hook_token_hash))
        .bind(subscription_id)
        .bind(sealed.as_ref().map(|(_, s)| s.clone()))
        .bind(sealed.as_ref().map(|(k, _)| k.clone()))
        .bind(expires_at.map(stamp))
        .bind(now_stamp())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The channel a hook token opens, with its secret; None for an unknown token.
    pub async fn channel_by_token(&self, token: &str) -> Result<Option<ChannelKey>, StoreError> {
        let row: Option<ChannelRow> = sqlx::query_as(
            "SELECT w.connection AS connection, c.tenant AS tenant, w.provider AS provider, w.secret AS secret, w.secret_key_id AS secret_key_id
             FROM webhook_channels AS w JOIN connections AS c ON c.id = w.connection
             WHERE w.token_hash = $1",
        )
        .bind(hook_token_hash(token))
        .fetch_optional(&self.pool)
        .await?;
        let Some(ChannelRow {
            connection,
            tenant,
            provider,
            secret: sealed,
            secret_key_id: key_id,
        }) = row
        else {
            return Ok(None);
        };
        let secret = match (sealed, key_id) {
            (Some(s), Some(k)) => Some(self.open_secret(&connection, &k, &s)?),
            _ => None,
        };
        Ok(Some(ChannelKey {
            connection,
            tenant,
            provider,
            secret,
        }))
    }

    fn open_secret(
        &self,
        connection: &str,
        key_id: &str,
        sealed: &str,
    ) -> Result<String, StoreError> {
        let plain = self
            .cipher
            .open(key_id, sealed)
            .map_err(|source| StoreError::Crypto {
                connection: connection.to_string(),
                source,
            })?;
        String::from_utf8(plain).map_err(|_| StoreError::Corrupt {
            what: "webhook secret",
            message: "not UTF-8".into(),
        })
    }

    /// A connection's registration with the provider (to renew or remove it); None when
    /// it has no channel.
    pub async fn channel_registration(
        &self,
        connection: &str,
    ) -> Result<Option<Registration>, StoreError> {
        #[allow(clippy::type_complexity)]
        let row: Option<(
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
        )> = sqlx::query_as(
            "SELECT subscription_id, secret, secret_key_id, expires_at FROM webhook_channels
                 WHERE connection = $1",
        )
        .bind(connection)
        .fetch_optional(&self.pool)
        .await?;
        let Some((subscription_id, sealed, key_id, expires_at)) = row else {
            return Ok(None);
        };
        let secret = match (sealed, key_id) {
            (Some(s), Some(k)) => Some(self.open_secret(connection, &k, &s)?),
            _ => None,
        };
        Ok(Some(Registration {
            subscription_id,
            secret,
            expires_at: expires_at.and_then(|e| crate::domain::time::parse_stamp(&e)),
        }))
    }

    /// A subscription's new expiry, after a renewal.
    pub async fn renew_channel(
        &self,
        connection: &str,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE webhook_channels SET expires_at = $1 WHERE connection = $2")
            .bind(expires_at.map(stamp))
            .bind(connection)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Connections whose channel needs the provider's attention before `before`: an
    /// expiry then or earlier (renew), or a URL with no subscription yet (a registration
    /// that failed, to try again).
    pub async fn channels_due(&self, before: DateTime<Utc>) -> Result<Vec<String>, StoreError> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT connection FROM webhook_channels
             WHERE (expires_at IS NOT NULL AND expires_at <= $1)
                OR (token_hash IS NOT NULL AND subscription_id IS NULL)
             ORDER BY connection",
        )
        .bind(stamp(before))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(c,)| c).collect())
    }

    /// Every channel with the time it has been quiet since: its last verified delivery,
    /// its last silence run, or its creation, whichever is latest.
    pub async fn quiet_channels(&self) -> Result<Vec<QuietChannel>, StoreError> {
        #[allow(clippy::type_complexity)]
        let rows: Vec<(String, String, Option<String>, Option<String>, String)> = sqlx::query_as(
            "SELECT connection, provider, last_delivery_at, silence_run_at, created_at
             FROM webhook_channels ORDER BY connection",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(connection, provider, delivery, silence, created)| {
                let quiet_since = [delivery, silence, Some(created)]
                    .into_iter()
                    .flatten()
                    .filter_map(|t| crate::domain::time::parse_stamp(&t))
                    .max()
                    .unwrap_or_else(Utc::now);
                QuietChannel {
                    connection,
                    provider,
                    quiet_since,
                }
            })
            .collect())
    }

    /// A silent channel's connection got its incremental runs at `at`.
    pub async fn mark_silence_run(
        &self,
        connection: &str,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE webhook_channels SET silence_run_at = $1 WHERE connection = $2")
            .bind(stamp(at))
            .bind(connection)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Forget a connection's channel (its subscription was removed at the provider).
    pub async fn close_channel(&self, connection: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM webhook_channels WHERE connection = $1")
            .bind(connection)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// A channel's health; None when the connection has no channel row.
    pub async fn channel_health(
        &self,
        connection: &str,
    ) -> Result<Option<ChannelHealth>, StoreError> {
        #[allow(clippy::type_complexity)]
        let row: Option<(Option<String>, Option<String>, Option<String>, i64, i64, Option<String>, Option<String>)> =
            sqlx::query_as(
                "SELECT subscription_id, expires_at, last_delivery_at, deliveries, failures, last_failure, last_failure_at
                 FROM webhook_channels WHERE connection = $1",
            )
            .bind(connection)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| ChannelHealth {
            subscription_id: r.0,
            expires_at: r.1,
            last_delivery_at: r.2,
            deliveries: r.3,
            failures: r.4,
            last_failure: r.5,
            last_failure_at: r.6,
        }))
    }

    /// Count verified deliveries that reached a connection (the row is made if needed).
    pub async fn record_deliveries(
        &self,
        connection: &str,
        provider: &str,
        count: i64,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO webhook_channels (connection, provider, deliveries, last_delivery_at, created_at)
             VALUES ($1, $2, $3, $4, $4)
             ON CONFLICT (connection) DO UPDATE SET deliveries = webhook_channels.deliveries + excluded.deliveries,
               last_delivery_at = excluded.last_delivery_at",
        )
        .bind(connection)
        .bind(provider)
        .bind(count)
        .bind(stamp(at))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Count a refused delivery on a connection's channel (its URL was right, its
    /// signature was not), with the reason (no secret in it).
    pub async fn record_delivery_failure(
        &self,
        connection: &str,
        reason: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE webhook_channels SET failures = failures + 1, last_failure = $1, last_failure_at = $2
             WHERE connection = $3",
        )
        .bind(reason)
        .bind(now_stamp())
        .bind(connection)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The connection (and its tenant) of a provider whose account id is `external_id`.
    pub async fn connection_by_external_id(
        &self,
        provider: &str,
        external_id: &str,
    ) -> Result<Option<(String, String)>, StoreError> {
        let row: Option<(String, String)> = sqlx::query_as(
            "SELECT id, tenant FROM connections WHERE provider = $1 AND external_id = $2 ORDER BY created_at LIMIT 1",
        )
        .bind(provider)
        .bind(external_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row)
    }

    /// Of these event ids, those already handled (and not expired).
    pub async fn seen_events(
        &self,
        provider: &str,
        ids: &[String],
    ) -> Result<Vec<String>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let list = serde_json::to_string(ids).expect("strings serialize");
        let sql = if self.is_postgres() {
            "SELECT event_id FROM webhook_events_seen WHERE provider = $1 AND expires_at > $2
               AND event_id IN (SELECT json_array_elements_text($3::json))"
        } else {
            "SELECT event_id FROM webhook_events_seen WHERE provider = $1 AND expires_at > $2
               AND event_id IN (SELECT value FROM json_each($3))"
        };
        let rows: Vec<(String,)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(provider)
            .bind(now_stamp())
            .bind(list)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }

    /// Remember these event ids as handled until `expires_at`; expired ones are
    /// forgotten on the way.
    pub async fn mark_events_seen(
        &self,
        provider: &str,
        ids: &[String],
        expires_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let list = serde_json::to_string(ids).expect("strings serialize");
        let ids_of = if self.is_postgres() {
            "SELECT $1, e.id, $2 FROM json_array_elements_text($3::json) AS e(id)"
        } else {
            "SELECT $1, value, $2 FROM json_each($3)"
        };
        let sql = format!(
            "INSERT INTO webhook_events_seen (provider, event_id, expires_at) {ids_of} WHERE true
             ON CONFLICT (provider, event_id) DO UPDATE SET expires_at = excluded.expires_at"
        );
        let mut tx = self.pool.begin().await?;
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(provider)
            .bind(stamp(expires_at))
            .bind(list)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM webhook_events_seen WHERE provider = $1 AND expires_at <= $2")
            .bind(provider)
            .bind(now_stamp())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// What a fetch learned, in one transaction: fingerprints written and marked seen at
    /// a new sequence value (so a full run that started before is told a fetch saw them
    /// and does not sweep them), deleted records forgotten. The checkpoint is untouched.
    pub async fn commit_fetch(&self, c: &FetchCommit<'_>) -> Result<(), StoreError> {
        let slice = super::fingerprints::SliceCommit {
            connection: c.connection,
            resource: c.resource,
            run_id: c.fetch_id,
            slice: 0,
            seen: c.written,
            touched: c.touched,
            deleted: c.deleted,
            next: None,
            run_max_updated: None,
            finished_since: None,
            finished_delta_link: None,
            counts: Default::default(),
        };
        self.commit_seen_only(&slice).await
    }
}
