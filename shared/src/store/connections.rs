//! Connections: a tenant's account at a provider, with its credentials sealed at rest
//! (AES-256-GCM; the key's id beside each row, so keys can rotate online).

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::{corrupt, Store, StoreError};
use crate::domain::time::{now_stamp, parse_stored, stamp};
use crate::domain::ConnectionState;
use crate::secrets::Credentials;

/// A connection to create.
#[derive(Debug, Clone)]
pub struct NewConnection {
    /// Chosen by the caller, or generated.
    pub id: Option<String>,
    pub tenant: String,
    pub provider: String,
    pub config: Map<String, Value>,
    pub credentials: Credentials,
    pub resources: Vec<String>,
    pub schedule: Option<String>,
    /// Cadence of full syncs (deletion sweeps).
    pub full_schedule: Option<String>,
    /// IANA time zone the schedules are read in.
    pub timezone: String,
    /// The account's id at the provider, when the connect flow captured it.
    pub external_id: Option<String>,
}

/// A stored connection, credentials opened.
#[derive(Debug, Clone)]
pub struct ConnectionRecord {
    pub id: String,
    pub tenant: String,
    pub provider: String,
    pub config: Map<String, Value>,
    pub credentials: Credentials,
    pub resources: Vec<String>,
    pub schedule: Option<String>,
    pub full_schedule: Option<String>,
    pub timezone: String,
    pub state: ConnectionState,
    pub state_message: Option<String>,
    /// The account's id at the provider (captured by the connect flow).
    pub external_id: Option<String>,
    /// Consecutive failed or throttled slices (the circuit breaker's count).
    pub failure_streak: i64,
    /// Jobs of this connection wait until then (a provider throttle, a spent budget, an
    /// open circuit); shown as the expected resume time.
    pub blocked_until: Option<DateTime<Utc>>,
}

/// A `connections` row as stored (credentials sealed, JSON as text).
#[derive(sqlx::FromRow)]
struct ConnectionRow {
    id: String,
    tenant: String,
    provider: String,
    config: String,
    credentials: String,
    key_id: String,
    resources: String,
    schedule: Option<String>,
    full_schedule: Option<String>,
    timezone: String,
    #[sqlx(try_from = "String")]
    state: ConnectionState,
    state_message: Option<String>,
    external_id: Option<String>,
    failure_streak: i64,
    blocked_until: Option<String>,
}

const CONNECTION_COLUMNS: &str = "id, tenant, provider, config, credentials, key_id, resources, schedule, full_schedule, timezone, state, state_message, external_id, failure_streak, blocked_until";

/// `state NOT IN ($n, $n+1)` takes these: the states whose jobs are neither scheduled nor run.
pub(super) fn halted() -> [&'static str; 2] {
    ConnectionState::HALTED.map(ConnectionState::as_str)
}

impl Store {
    pub async fn create_connection(&self, new: &NewConnection) -> Result<String, StoreError> {
        self.require_tenant(&new.tenant).await?;
        let id = new
            .id
            .clone()
            .unwrap_or_else(|| format!("conn_{}", uuid::Uuid::now_v7().simple()));
        let (key_id, sealed) = self.cipher.seal(new.credentials.expose_json().as_bytes());
        let t = now_stamp();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO connections (id, tenant, provider, config, credentials, key_id, resources, schedule, state, state_message, created_at, updated_at, full_schedule, timezone, external_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL, $10, $11, $12, $13, $14)",
        )
        .bind(&id)
        .bind(&new.tenant)
        .bind(&new.provider)
        .bind(Value::Object(new.config.clone()).to_string())
        .bind(sealed)
        .bind(key_id)
        .bind(serde_json::to_string(&new.resources).expect("strings serialize"))
        .bind(new.schedule.clone())
        .bind(ConnectionState::Healthy.as_str())
        .bind(&t)
        .bind(&t)
        .bind(new.full_schedule.clone())
        .bind(&new.timezone)
        .bind(new.external_id.clone())
        .execute(&mut *tx)
        .await?;
        // Due at once: a new connection's first run is a full one.
        for resource in &new.resources {
            sqlx::query(
                "INSERT INTO schedules (connection, resource, tenant, next_run_at, next_full_at, lease_run_id, lease_expires_at)
                 VALUES ($1, $2, $3, $4, $5, NULL, NULL)",
            )
            .bind(&id)
            .bind(resource)
            .bind(&new.tenant)
            .bind(&t)
            .bind(&t)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(id)
    }

    /// Delete a connection and everything kept for it (credentials, schedules,
    /// checkpoints, fingerprints, runs, schemas, overrides, webhook channel), in one
    /// transaction. False when there was no such connection. Jobs already on the bus
    /// find it gone and end as skipped.
    pub async fn delete_connection(&self, id: &str) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        for delete in CONNECTION_ROWS {
            sqlx::query(*delete).bind(id).execute(&mut *tx).await?;
        }
        let gone = sqlx::query("DELETE FROM connections WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(gone > 0)
    }

    /// Ids of a tenant's connections (all tenants' when None), newest first.
    pub async fn connection_ids(&self, tenant: Option<&str>) -> Result<Vec<String>, StoreError> {
        let q = match tenant {
            Some(t) => sqlx::query_scalar(
                "SELECT id FROM connections WHERE tenant = $1 ORDER BY created_at DESC",
            )
            .bind(t),
            None => sqlx::query_scalar("SELECT id FROM connections ORDER BY created_at DESC"),
        };
        Ok(q.fetch_all(&self.pool).await?)
    }

    /// A tenant's connections (all tenants' when None), newest first, in one query.
    pub async fn connections(
        &self,
        tenant: Option<&str>,
    ) -> Result<Vec<ConnectionRecord>, StoreError> {
        let rows: Vec<ConnectionRow> = match tenant {
            Some(t) => {
                sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT {CONNECTION_COLUMNS} FROM connections WHERE tenant = $1 ORDER BY created_at DESC"
                )))
                .bind(t)
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT {CONNECTION_COLUMNS} FROM connections ORDER BY created_at DESC"
                )))
                .fetch_all(&self.pool)
                .await?
            }
        };
        rows.into_iter().map(|r| self.open_connection(r)).collect()
    }

    pub async fn connection(&self, id: &str) -> Result<ConnectionRecord, StoreError> {
        let row: ConnectionRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {CONNECTION_COLUMNS} FROM connections WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::NotFound {
            what: "connection",
            id: id.to_string(),
        })?;
        self.open_connection(row)
    }

    /// The row's JSON parsed and its credentials opened.
    /// Set (or clear) the account id a connection's app-level webhooks are routed by.
    pub async fn set_external_id(
        &self,
        id: &str,
        external_id: Option<&str>,
    ) -> Result<(), StoreError> {
        let done =
            sqlx::query("UPDATE connections SET external_id = $1, updated_at = $2 WHERE id = $3")
                .bind(external_id)
                .bind(crate::domain::time::now_stamp())
                .bind(id)
                .execute(&self.pool)
                .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                what: "connection",
                id: id.to_string(),
            });
        }
        Ok(())
    }

    fn open_connection(&self, row: ConnectionRow) -> Result<ConnectionRecord, StoreError> {
        let plain = self
            .cipher
            .open(&row.key_id, &row.credentials)
            .map_err(|source| StoreError::Crypto {
                connection: row.id.clone(),
                source,
            })?;
        Ok(ConnectionRecord {
            config: serde_json::from_str(&row.config).map_err(corrupt("connection config"))?,
            resources: serde_json::from_str(&row.resources)
                .map_err(corrupt("connection resources"))?,
            credentials: serde_json::from_slice(&plain).map_err(corrupt("credentials"))?,
            blocked_until: parse_stored(row.blocked_until.as_deref()),
            id: row.id,
            tenant: row.tenant,
            provider: row.provider,
            schedule: row.schedule,
            full_schedule: row.full_schedule,
            timezone: row.timezone,
            state: row.state,
            state_message: row.state_message,
            external_id: row.external_id,
            failure_streak: row.failure_streak,
        })
    }

    /// Replace a connection's credentials (sealed with the current key).
    pub async fn store_credentials(
        &self,
        connection: &str,
        credentials: &Credentials,
    ) -> Result<(), StoreError> {
        let (key_id, sealed) = self.cipher.seal(credentials.expose_json().as_bytes());
        let done = sqlx::query(
            "UPDATE connections SET credentials = $1, key_id = $2, updated_at = $3 WHERE id = $4",
        )
        .bind(sealed)
        .bind(key_id)
        .bind(now_stamp())
        .bind(connection)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                what: "connection",
                id: connection.to_string(),
            });
        }
        Ok(())
    }

    /// Store credentials the token endpoint just renewed (and note when).
    pub async fn store_refreshed_credentials(
        &self,
        connection: &str,
        credentials: &Credentials,
    ) -> Result<(), StoreError> {
        self.store_credentials(connection, credentials).await?;
        sqlx::query("UPDATE connections SET refreshed_at = $1 WHERE id = $2")
            .bind(now_stamp())
            .bind(connection)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Connections of these providers whose token was last refreshed (or, never refreshed,
    /// created) before `before`, and which are not paused or waiting for re-authorization.
    pub async fn idle_connections(
        &self,
        providers: &[String],
        before: DateTime<Utc>,
    ) -> Result<Vec<String>, StoreError> {
        let [paused, reauth] = halted();
        let before = stamp(before);
        let mut out = Vec::new();
        for provider in providers {
            let ids: Vec<String> = sqlx::query_scalar(
                "SELECT id FROM connections WHERE provider = $1 AND state NOT IN ($2, $3)
                 AND COALESCE(refreshed_at, created_at) < $4",
            )
            .bind(provider)
            .bind(paused)
            .bind(reauth)
            .bind(&before)
            .fetch_all(&self.pool)
            .await?;
            out.extend(ids);
        }
        Ok(out)
    }

    pub async fn set_connection_state(
        &self,
        connection: &str,
        state: ConnectionState,
        message: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE connections SET state = $1, state_message = $2, updated_at = $3 WHERE id = $4",
        )
        .bind(state.as_str())
        .bind(message)
        .bind(now_stamp())
        .bind(connection)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Re-seal every credential not sealed with the current key (key rotation, online:
    /// each row is swapped only if nobody rewrote it meanwhile). Returns the rows re-sealed.
    pub async fn reseal_all(&self) -> Result<u64, StoreError> {
        let current = self.cipher.current_key_id().to_string();
        let rows: Vec<(String, String, String)> =
            sqlx::query_as("SELECT id, key_id, credentials FROM connections WHERE key_id <> $1")
                .bind(&current)
                .fetch_all(&self.pool)
                .await?;
        let mut done = 0;
        for (id, key_id, sealed) in rows {
            let plain =
                self.cipher
                    .open(&key_id, &sealed)
                    .map_err(|source| StoreError::Crypto {
                        connection: id.clone(),
                        source,
                    })?;
            let (new_key, resealed) = self.cipher.seal(&plain);
            let r = sqlx::query("UPDATE connections SET credentials = $1, key_id = $2 WHERE id = $3 AND key_id = $4 AND credentials = $5")
                .bind(resealed)
                .bind(new_key)
                .bind(&id)
                .bind(&key_id)
                .bind(&sealed)
                .execute(&self.pool)
                .await?;
            done += r.rows_affected();
        }
        Ok(done)
    }
}

/// Deleting the rows of one connection, table by table (column `connection`).
const CONNECTION_ROWS: &[&str] = &[
    "DELETE FROM schedules WHERE connection = $1",
    "DELETE FROM checkpoints WHERE connection = $1",
    "DELETE FROM fingerprints WHERE connection = $1",
    "DELETE FROM sync_runs WHERE connection = $1",
    "DELETE FROM token_locks WHERE connection = $1",
    "DELETE FROM connection_schemas WHERE connection = $1",
    "DELETE FROM connection_overrides WHERE connection = $1",
    "DELETE FROM webhook_channels WHERE connection = $1",
];
