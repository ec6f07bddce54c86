//! The state store: tenants, connections (credentials sealed), checkpoints,
//! record fingerprints and sync runs. One implementation on sqlx's `Any`
//! driver, so PostgreSQL (a fleet) and SQLite (one machine) run the same SQL;
//! migrations are embedded and applied at start.

mod ledger;
mod rows;

use std::str::FromStr;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

pub use ledger::StoreLedger;
pub use rows::*;

use crate::secrets::crypto::{Cipher, CryptoError};
use crate::secrets::Credentials;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// A run that ended (or could not be enqueued) gives its schedule's lease back.
const RELEASE_LEASE: &str =
    "UPDATE schedules SET lease_run_id = NULL, lease_expires_at = NULL WHERE lease_run_id = $1";

/// `$first, $first+1, ...` for `n` values of an IN list.
fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn fingerprint_from_row(row: &AnyRow) -> Result<StoredFingerprint, StoreError> {
    let fields: String = row.try_get("field_hashes")?;
    Ok(StoredFingerprint {
        record_id: row.try_get("record_id")?,
        hash: row.try_get("hash")?,
        field_hashes: serde_json::from_str(&fields).map_err(|e| StoreError::Corrupt {
            what: "field hashes",
            message: e.to_string(),
        })?,
    })
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(
        "`{0}` is not a database URL; use postgres://user@host/db or sqlite://path/to/file.db"
    )]
    Url(String),
    #[error("{what} `{id}` does not exist")]
    NotFound { what: &'static str, id: String },
    #[error("{what} `{id}` already exists")]
    Conflict { what: &'static str, id: String },
    #[error("credentials of connection `{connection}`: {source}")]
    Crypto {
        connection: String,
        #[source]
        source: CryptoError,
    },
    #[error("stored {what} is not valid: {message}")]
    Corrupt { what: &'static str, message: String },
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn time(text: Option<String>) -> Option<DateTime<Utc>> {
    text.and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// How long a query waits for a pooled connection before it fails (and is retried by
/// its caller): short, so an unreachable database shows within seconds.
const ACQUIRE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Where state lives.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    cipher: Cipher,
    postgres: bool,
    lease: chrono::Duration,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Store({})",
            if self.postgres { "postgres" } else { "sqlite" }
        )
    }
}

impl Store {
    /// Connect (creating a SQLite file if needed) and apply migrations.
    pub async fn connect(url: &str, cipher: Cipher) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let postgres = url.starts_with("postgres://") || url.starts_with("postgresql://");
        let sqlite = url.starts_with("sqlite:");
        if !postgres && !sqlite {
            return Err(StoreError::Url(url.to_string()));
        }
        let mut options = AnyPoolOptions::new().max_connections(if postgres { 16 } else { 1 });
        if postgres {
            // A database that went away is noticed in seconds (the caller retries with
            // backoff and reports not-ready), not after sqlx's default 30 s wait. (SQLite's
            // single connection is shared by every job of the process: it keeps the default.)
            options = options.acquire_timeout(ACQUIRE_TIMEOUT);
        }
        if sqlite {
            // One writer at a time is SQLite's model; waiting beats failing with SQLITE_BUSY.
            options = options.after_connect(|conn, _| {
                Box::pin(async move {
                    sqlx::query("PRAGMA busy_timeout = 10000")
                        .execute(&mut *conn)
                        .await?;
                    sqlx::query("PRAGMA journal_mode = WAL")
                        .execute(&mut *conn)
                        .await?;
                    sqlx::query("PRAGMA foreign_keys = ON")
                        .execute(&mut *conn)
                        .await?;
                    Ok(())
                })
            });
        }
        let url = if sqlite && !url.contains("mode=") {
            format!("{url}{}mode=rwc", if url.contains('?') { "&" } else { "?" })
        } else {
            url.to_string()
        };
        let pool = options.connect(&url).await?;
        MIGRATOR.run(&pool).await?;
        if postgres {
            // Rate budgets are short-lived bookkeeping, written on every request: not worth a
            // WAL flush each. After a database crash they start empty: spacing resumes at once,
            // but a day's counts restart.
            for table in ["rate_budgets", "rate_budget_days", "rate_budget_slots"] {
                let logged = sqlx::query(
                    "SELECT 1 AS one FROM pg_class WHERE relname = $1 AND relpersistence = 'p'",
                )
                .bind(table)
                .fetch_optional(&pool)
                .await?
                .is_some();
                if logged {
                    sqlx::query(sqlx::AssertSqlSafe(format!(
                        "ALTER TABLE {table} SET UNLOGGED"
                    )))
                    .execute(&pool)
                    .await?;
                }
            }
        }
        Ok(Store {
            pool,
            cipher,
            postgres,
            lease: chrono::Duration::minutes(15),
        })
    }

    /// How long a job's lease lasts without a slice renewing it (TRIBUTARY_LEASE_SECONDS).
    pub fn with_lease(mut self, lease: std::time::Duration) -> Self {
        self.lease = chrono::Duration::from_std(lease).unwrap_or(self.lease);
        self
    }

    pub fn lease_until(&self) -> String {
        (Utc::now() + self.lease).to_rfc3339_opts(SecondsFormat::Millis, true)
    }

    pub fn is_postgres(&self) -> bool {
        self.postgres
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    // ---- tenants -------------------------------------------------------------------------

    pub async fn create_tenant(&self, id: &str) -> Result<(), StoreError> {
        let done = sqlx::query(
            "INSERT INTO tenants (id, created_at) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(now())
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::Conflict {
                what: "tenant",
                id: id.to_string(),
            });
        }
        Ok(())
    }

    pub async fn tenant_exists(&self, id: &str) -> Result<bool, StoreError> {
        Ok(sqlx::query("SELECT id FROM tenants WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .is_some())
    }

    // ---- connections ---------------------------------------------------------------------

    pub async fn create_connection(&self, new: &NewConnection) -> Result<String, StoreError> {
        if !self.tenant_exists(&new.tenant).await? {
            return Err(StoreError::NotFound {
                what: "tenant",
                id: new.tenant.clone(),
            });
        }
        let id = new
            .id
            .clone()
            .unwrap_or_else(|| format!("conn_{}", uuid::Uuid::now_v7().simple()));
        let (key_id, sealed) = self.cipher.seal(new.credentials.expose_json().as_bytes());
        let t = now();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO connections (id, tenant, provider, config, credentials, key_id, resources, schedule, state, state_message, created_at, updated_at, full_schedule, timezone)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'healthy', NULL, $9, $10, $11, $12)",
        )
        .bind(&id)
        .bind(&new.tenant)
        .bind(&new.provider)
        .bind(Value::Object(new.config.clone()).to_string())
        .bind(sealed)
        .bind(key_id)
        .bind(serde_json::to_string(&new.resources).expect("strings serialize"))
        .bind(new.schedule.clone())
        .bind(&t)
        .bind(&t)
        .bind(new.full_schedule.clone())
        .bind(&new.timezone)
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

    /// Connections of a tenant (all tenants when None), newest first.
    pub async fn connection_ids(&self, tenant: Option<&str>) -> Result<Vec<String>, StoreError> {
        let rows = match tenant {
            Some(t) => {
                sqlx::query("SELECT id FROM connections WHERE tenant = $1 ORDER BY created_at DESC")
                    .bind(t)
                    .fetch_all(&self.pool)
                    .await?
            }
            None => {
                sqlx::query("SELECT id FROM connections ORDER BY created_at DESC")
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        rows.iter()
            .map(|r| r.try_get("id").map_err(StoreError::from))
            .collect()
    }

    // ---- schedules -----------------------------------------------------------------------

    /// Schedules due now (or whose job's lease expired), oldest first.
    pub async fn due_schedules(
        &self,
        now: &str,
        limit: i64,
    ) -> Result<Vec<DueSchedule>, StoreError> {
        let rows = sqlx::query(
            "SELECT s.connection, s.resource, s.tenant, c.schedule, c.full_schedule, c.timezone, s.next_run_at, s.next_full_at, s.lease_run_id
             FROM schedules s JOIN connections c ON c.id = s.connection
             WHERE c.state NOT IN ('paused', 'needs_reauth')
               AND ((s.lease_run_id IS NULL AND s.next_run_at <= $1) OR (s.lease_run_id IS NOT NULL AND s.lease_expires_at < $2))
             ORDER BY s.next_run_at LIMIT $3",
        )
        .bind(now)
        .bind(now)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DueSchedule {
                    connection: r.try_get("connection")?,
                    resource: r.try_get("resource")?,
                    tenant: r.try_get("tenant")?,
                    schedule: r.try_get("schedule")?,
                    full_schedule: r.try_get("full_schedule")?,
                    timezone: r.try_get("timezone")?,
                    next_run_at: r.try_get("next_run_at")?,
                    next_full_at: r.try_get("next_full_at")?,
                    lease_run_id: r.try_get("lease_run_id")?,
                })
            })
            .collect()
    }

    /// Take due schedules for their runs, in one transaction; one flag per claim. A claim
    /// succeeds for exactly one scheduler replica (compare-and-set on what `due_schedules`
    /// saw) and sets the lease and the next due times.
    /// `now` is the tick's time: leases run from it.
    pub async fn claim_schedules<'a>(
        &self,
        now: DateTime<Utc>,
        claims: impl Iterator<Item = (&'a DueSchedule, &'a str, &'a str, &'a str)>,
    ) -> Result<Vec<bool>, StoreError> {
        let lease_until = (now + self.lease).to_rfc3339_opts(SecondsFormat::Millis, true);
        let mut tx = self.pool.begin().await?;
        let mut won = Vec::new();
        for (due, run_id, next_run_at, next_full_at) in claims {
            let q = match &due.lease_run_id {
                None => sqlx::query(
                    "UPDATE schedules SET lease_run_id = $1, lease_expires_at = $2, next_run_at = $3, next_full_at = $4
                     WHERE connection = $5 AND resource = $6 AND next_run_at = $7 AND lease_run_id IS NULL",
                )
                .bind(run_id)
                .bind(&lease_until)
                .bind(next_run_at)
                .bind(next_full_at)
                .bind(&due.connection)
                .bind(&due.resource)
                .bind(&due.next_run_at),
                Some(old) => sqlx::query(
                    "UPDATE schedules SET lease_run_id = $1, lease_expires_at = $2, next_run_at = $3, next_full_at = $4
                     WHERE connection = $5 AND resource = $6 AND next_run_at = $7 AND lease_run_id = $8",
                )
                .bind(run_id)
                .bind(&lease_until)
                .bind(next_run_at)
                .bind(next_full_at)
                .bind(&due.connection)
                .bind(&due.resource)
                .bind(&due.next_run_at)
                .bind(old),
            };
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

    // ---- token refresh locks -------------------------------------------------------------

    /// Take the connection's refresh lock for `holder` (waits while another holds it).
    /// A lock whose holder died expires after `ttl`.
    pub async fn lock_refresh(
        &self,
        connection: &str,
        holder: &str,
        ttl: std::time::Duration,
    ) -> Result<(), StoreError> {
        loop {
            let now_t = Utc::now();
            let expires = (now_t
                + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::seconds(30)))
            .to_rfc3339_opts(SecondsFormat::Millis, true);
            let done = sqlx::query(
                "INSERT INTO token_locks (connection, holder, expires_at) VALUES ($1, $2, $3)
                 ON CONFLICT (connection) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
                 WHERE token_locks.expires_at < $4",
            )
            .bind(connection)
            .bind(holder)
            .bind(&expires)
            .bind(now_t.to_rfc3339_opts(SecondsFormat::Millis, true))
            .execute(&self.pool)
            .await?;
            if done.rows_affected() == 1 {
                return Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
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

    /// Re-seal every credential not sealed with the current key (key rotation, online:
    /// each row is swapped only if nobody rewrote it meanwhile). Returns the rows re-sealed.
    pub async fn reseal_all(&self) -> Result<u64, StoreError> {
        let current = self.cipher.current_key_id().to_string();
        let rows =
            sqlx::query("SELECT id, key_id, credentials FROM connections WHERE key_id <> $1")
                .bind(&current)
                .fetch_all(&self.pool)
                .await?;
        let mut done = 0;
        for row in rows {
            let id: String = row.try_get("id")?;
            let key_id: String = row.try_get("key_id")?;
            let sealed: String = row.try_get("credentials")?;
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

    // ---- API tokens ----------------------------------------------------------------------

    /// A new tenant-scoped token; only its hash is stored.
    pub async fn create_token(&self, tenant: &str) -> Result<String, StoreError> {
        if !self.tenant_exists(tenant).await? {
            return Err(StoreError::NotFound {
                what: "tenant",
                id: tenant.to_string(),
            });
        }
        let mut raw = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut raw);
        let token = format!("trib_{}", hex::encode(raw));
        sqlx::query("INSERT INTO api_tokens (token_hash, tenant, created_at) VALUES ($1, $2, $3)")
            .bind(token_hash(&token))
            .bind(tenant)
            .bind(now())
            .execute(&self.pool)
            .await?;
        Ok(token)
    }

    pub async fn token_tenant(&self, token: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT tenant FROM api_tokens WHERE token_hash = $1")
            .bind(token_hash(token))
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => Some(r.try_get("tenant")?),
            None => None,
        })
    }

    /// The latest run of each of a connection's resources.
    pub async fn last_runs(&self, connection: &str) -> Result<Vec<RunRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT r.* FROM sync_runs r WHERE r.connection = $1 AND r.started_at = (
               SELECT MAX(r2.started_at) FROM sync_runs r2 WHERE r2.connection = r.connection AND r2.resource = r.resource)
             ORDER BY r.resource",
        )
        .bind(connection)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(run_from_row).collect()
    }

    pub async fn connection(&self, id: &str) -> Result<ConnectionRecord, StoreError> {
        let row = sqlx::query(
            "SELECT id, tenant, provider, config, credentials, key_id, resources, schedule, full_schedule, timezone, state, state_message, failure_streak, blocked_until FROM connections WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::NotFound { what: "connection", id: id.to_string() })?;
        self.connection_from_row(&row)
    }

    fn connection_from_row(&self, row: &AnyRow) -> Result<ConnectionRecord, StoreError> {
        let id: String = row.try_get("id")?;
        let config: String = row.try_get("config")?;
        let config: Map<String, Value> =
            serde_json::from_str(&config).map_err(|e| StoreError::Corrupt {
                what: "connection config",
                message: e.to_string(),
            })?;
        let resources: String = row.try_get("resources")?;
        let resources: Vec<String> =
            serde_json::from_str(&resources).map_err(|e| StoreError::Corrupt {
                what: "connection resources",
                message: e.to_string(),
            })?;
        let key_id: String = row.try_get("key_id")?;
        let sealed: String = row.try_get("credentials")?;
        let plain = self
            .cipher
            .open(&key_id, &sealed)
            .map_err(|source| StoreError::Crypto {
                connection: id.clone(),
                source,
            })?;
        let credentials: Credentials =
            serde_json::from_slice(&plain).map_err(|e| StoreError::Corrupt {
                what: "credentials",
                message: e.to_string(),
            })?;
        Ok(ConnectionRecord {
            tenant: row.try_get("tenant")?,
            provider: row.try_get("provider")?,
            config,
            credentials,
            resources,
            schedule: row.try_get("schedule")?,
            full_schedule: row.try_get("full_schedule")?,
            timezone: row.try_get("timezone")?,
            state: row.try_get("state")?,
            state_message: row.try_get("state_message")?,
            failure_streak: row.try_get("failure_streak")?,
            blocked_until: time(row.try_get("blocked_until")?),
            id,
        })
    }

    /// Store credentials the token endpoint just renewed (and note when).
    pub async fn store_refreshed_credentials(
        &self,
        connection: &str,
        credentials: &Credentials,
    ) -> Result<(), StoreError> {
        self.store_credentials(connection, credentials).await?;
        sqlx::query("UPDATE connections SET refreshed_at = $1 WHERE id = $2")
            .bind(now())
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
        before: &str,
    ) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        for provider in providers {
            let rows = sqlx::query(
                "SELECT id FROM connections WHERE provider = $1 AND state NOT IN ('paused', 'needs_reauth')
                 AND COALESCE(refreshed_at, created_at) < $2",
            )
            .bind(provider)
            .bind(before)
            .fetch_all(&self.pool)
            .await?;
            for r in rows {
                out.push(r.try_get("id")?);
            }
        }
        Ok(out)
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
        .bind(now())
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

    pub async fn set_connection_state(
        &self,
        connection: &str,
        state: &str,
        message: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE connections SET state = $1, state_message = $2, updated_at = $3 WHERE id = $4",
        )
        .bind(state)
        .bind(message)
        .bind(now())
        .bind(connection)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    // ---- circuit breaker -----------------------------------------------------------------

    /// One more failed or throttled slice in a row; returns the streak.
    pub async fn record_failure(&self, connection: &str) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "UPDATE connections SET failure_streak = failure_streak + 1 WHERE id = $1 RETURNING failure_streak",
        )
        .bind(connection)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::NotFound {
            what: "connection",
            id: connection.to_string(),
        })?;
        Ok(row.try_get("failure_streak")?)
    }

    /// Hold the connection's jobs until `until`; with a state, also show it (e.g. `rate_limited`).
    pub async fn block_connection(
        &self,
        connection: &str,
        until: DateTime<Utc>,
        state: Option<(&str, &str)>,
    ) -> Result<(), StoreError> {
        let until = until.to_rfc3339_opts(SecondsFormat::Millis, true);
        match state {
            Some((state, message)) => {
                sqlx::query(
                    "UPDATE connections SET blocked_until = $1, state = $2, state_message = $3, updated_at = $4
                     WHERE id = $5 AND state NOT IN ('paused', 'needs_reauth')",
                )
                .bind(&until)
                .bind(state)
                .bind(message)
                .bind(now())
                .bind(connection)
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
    /// replica claimed it first.
    pub async fn claim_probe(
        &self,
        connection: &str,
        seen: DateTime<Utc>,
        hold_others_until: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE connections SET blocked_until = $1 WHERE id = $2 AND blocked_until = $3",
        )
        .bind(hold_others_until.to_rfc3339_opts(SecondsFormat::Millis, true))
        .bind(connection)
        .bind(seen.to_rfc3339_opts(SecondsFormat::Millis, true))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// A page came back: the circuit closes and a rate-limited connection is healthy again.
    pub async fn clear_breaker(&self, connection: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE connections SET failure_streak = 0, blocked_until = NULL,
               state = CASE WHEN state = 'rate_limited' THEN 'healthy' ELSE state END,
               state_message = CASE WHEN state = 'rate_limited' THEN NULL ELSE state_message END
             WHERE id = $1",
        )
        .bind(connection)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A parked slice hands its place in the run to the continuation job (slice `to`).
    pub async fn advance_slice(
        &self,
        connection: &str,
        resource: &str,
        run_id: &str,
        from: i64,
        to: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE checkpoints SET slice = $1, updated_at = $2
             WHERE connection = $3 AND resource = $4 AND run_id = $5 AND slice = $6",
        )
        .bind(to)
        .bind(now())
        .bind(connection)
        .bind(resource)
        .bind(run_id)
        .bind(from)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    // ---- checkpoints ---------------------------------------------------------------------

    pub async fn checkpoint(
        &self,
        connection: &str,
        resource: &str,
    ) -> Result<Checkpoint, StoreError> {
        let row = sqlx::query(
            "SELECT run_id, mode, slice, page_state, run_max_updated, since FROM checkpoints WHERE connection = $1 AND resource = $2",
        )
        .bind(connection)
        .bind(resource)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(Checkpoint::default());
        };
        let page_state: Option<String> = row.try_get("page_state")?;
        Ok(Checkpoint {
            run_id: row.try_get("run_id")?,
            mode: row.try_get("mode")?,
            slice: row.try_get("slice")?,
            page_state: match page_state {
                Some(p) => Some(serde_json::from_str(&p).map_err(|e| StoreError::Corrupt {
                    what: "page state",
                    message: e.to_string(),
                })?),
                None => None,
            },
            run_max_updated: time(row.try_get("run_max_updated")?),
            since: time(row.try_get("since")?),
        })
    }

    // ---- runs ----------------------------------------------------------------------------

    pub async fn start_run(&self, run: &NewRun<'_>) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO sync_runs (id, connection, resource, mode, reason, status, started_at, slices, pages, records, created, updated, deleted, dead_lettered)
             VALUES ($1, $2, $3, $4, $5, 'running', $6, 0, 0, 0, 0, 0, 0, 0) ON CONFLICT (id) DO NOTHING",
        )
        .bind(run.id)
        .bind(run.connection)
        .bind(run.resource)
        .bind(run.mode)
        .bind(run.reason)
        .bind(now())
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO checkpoints (connection, resource, run_id, mode, slice, page_state, run_max_updated, since, updated_at)
             VALUES ($1, $2, $3, $4, 0, NULL, NULL, NULL, $5)
             ON CONFLICT (connection, resource) DO UPDATE SET run_id = excluded.run_id, mode = excluded.mode, slice = 0,
               page_state = NULL, run_max_updated = NULL, updated_at = excluded.updated_at",
        )
        .bind(run.connection)
        .bind(run.resource)
        .bind(run.id)
        .bind(run.mode)
        .bind(now())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn run(&self, id: &str) -> Result<RunRecord, StoreError> {
        let row = sqlx::query("SELECT * FROM sync_runs WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound {
                what: "sync run",
                id: id.to_string(),
            })?;
        run_from_row(&row)
    }

    pub async fn runs(&self, connection: &str, limit: i64) -> Result<Vec<RunRecord>, StoreError> {
        sqlx::query("SELECT * FROM sync_runs WHERE connection = $1 ORDER BY started_at DESC, id DESC LIMIT $2")
            .bind(connection)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(run_from_row)
            .collect()
    }

    // ---- fingerprints --------------------------------------------------------------------

    /// Stored fingerprints of these records.
    pub async fn fingerprints(
        &self,
        connection: &str,
        resource: &str,
        ids: &[String],
    ) -> Result<Vec<StoredFingerprint>, StoreError> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(500) {
            let placeholders = placeholders(3, chunk.len());
            let sql = format!(
                "SELECT record_id, hash, field_hashes FROM fingerprints WHERE connection = $1 AND resource = $2 AND record_id IN ({})",
                placeholders
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(connection)
                .bind(resource);
            for id in chunk {
                q = q.bind(id);
            }
            for row in q.fetch_all(&self.pool).await? {
                out.push(fingerprint_from_row(&row)?);
            }
        }
        Ok(out)
    }

    /// Everything one slice learned, in one transaction: fingerprints of the records
    /// it saw (marked seen by this run), the run's counters and where the next slice starts.
    /// Called only after the broker acknowledged the slice's events.
    pub async fn commit_slice(&self, c: &SliceCommit<'_>) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let t = now();
        for chunk in c.seen.chunks(200) {
            let mut sql = String::from(
                "INSERT INTO fingerprints (connection, resource, record_id, hash, field_hashes, seen_run, updated_at) VALUES ",
            );
            let mut n = 0;
            for i in 0..chunk.len() {
                if i > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&format!(
                    "(${}, ${}, ${}, ${}, ${}, ${}, ${})",
                    n + 1,
                    n + 2,
                    n + 3,
                    n + 4,
                    n + 5,
                    n + 6,
                    n + 7
                ));
                n += 7;
            }
            sql.push_str(
                " ON CONFLICT (connection, resource, record_id) DO UPDATE SET hash = excluded.hash, field_hashes = excluded.field_hashes,
                  seen_run = excluded.seen_run, updated_at = excluded.updated_at",
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for f in chunk {
                q = q
                    .bind(c.connection)
                    .bind(c.resource)
                    .bind(&f.record_id)
                    .bind(&f.hash)
                    .bind(serde_json::to_string(&f.field_hashes).expect("map serializes"))
                    .bind(c.run_id)
                    .bind(&t);
            }
            q.execute(&mut *tx).await?;
        }
        for chunk in c.touched.chunks(500) {
            let placeholders = placeholders(4, chunk.len());
            let sql = format!(
                "UPDATE fingerprints SET seen_run = $1 WHERE connection = $2 AND resource = $3 AND record_id IN ({})",
                placeholders
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(c.run_id)
                .bind(c.connection)
                .bind(c.resource);
            for id in chunk {
                q = q.bind(id);
            }
            q.execute(&mut *tx).await?;
        }
        for chunk in c.deleted.chunks(500) {
            let placeholders = placeholders(3, chunk.len());
            let sql = format!(
                "DELETE FROM fingerprints WHERE connection = $1 AND resource = $2 AND record_id IN ({})",
                placeholders
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(c.connection)
                .bind(c.resource);
            for id in chunk {
                q = q.bind(id);
            }
            q.execute(&mut *tx).await?;
        }
        let page_state = c
            .next
            .map(|p| serde_json::to_string(p).expect("page state serializes"));
        let max_updated = c
            .run_max_updated
            .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true));
        match c.finished_since {
            // The run completed: its high-water mark becomes the next incremental start.
            Some(since) => {
                sqlx::query(
                    "UPDATE checkpoints SET run_id = NULL, mode = NULL, slice = $1, page_state = NULL, run_max_updated = NULL,
                       since = $2, updated_at = $3 WHERE connection = $4 AND resource = $5",
                )
                .bind(c.slice)
                .bind(since.map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true)))
                .bind(&t)
                .bind(c.connection)
                .bind(c.resource)
                .execute(&mut *tx)
                .await?;
            }
            None => {
                sqlx::query(
                    "UPDATE checkpoints SET slice = $1, page_state = $2, run_max_updated = $3, updated_at = $4
                     WHERE connection = $5 AND resource = $6 AND run_id = $7",
                )
                .bind(c.slice)
                .bind(page_state)
                .bind(max_updated)
                .bind(&t)
                .bind(c.connection)
                .bind(c.resource)
                .bind(c.run_id)
                .execute(&mut *tx)
                .await?;
            }
        }
        // The run's lease: released when it completes, renewed by every slice until then.
        if c.finished_since.is_some() {
            sqlx::query(RELEASE_LEASE)
                .bind(c.run_id)
                .execute(&mut *tx)
                .await?;
        } else {
            sqlx::query("UPDATE schedules SET lease_expires_at = $1 WHERE lease_run_id = $2")
                .bind(self.lease_until())
                .bind(c.run_id)
                .execute(&mut *tx)
                .await?;
        }
        let status = if c.finished_since.is_some() {
            "completed"
        } else {
            "running"
        };
        sqlx::query(
            "UPDATE sync_runs SET slices = slices + $11, pages = pages + $1, records = records + $2, created = created + $3,
               updated = updated + $4, deleted = deleted + $5, dead_lettered = dead_lettered + $6, status = $7,
               finished_at = CASE WHEN $8 = 'completed' THEN $9 ELSE finished_at END
             WHERE id = $10",
        )
        .bind(c.counts.pages)
        .bind(c.counts.records)
        .bind(c.counts.created)
        .bind(c.counts.updated)
        .bind(c.counts.deleted)
        .bind(c.counts.dead_lettered)
        .bind(status)
        .bind(status)
        .bind(&t)
        .bind(c.run_id)
        .bind(c.counts.slices)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records this run did not see: the candidates of a completed full sync's sweep.
    pub async fn unseen(
        &self,
        connection: &str,
        resource: &str,
        run_id: &str,
    ) -> Result<Vec<StoredFingerprint>, StoreError> {
        let rows = sqlx::query(
            "SELECT record_id, hash, field_hashes FROM fingerprints
             WHERE connection = $1 AND resource = $2 AND seen_run <> $3
               AND updated_at <= (SELECT started_at FROM sync_runs WHERE id = $4)
             ORDER BY record_id",
        )
        .bind(connection)
        .bind(resource)
        .bind(run_id)
        .bind(run_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(fingerprint_from_row).collect()
    }

    /// The run failed: it stays failed, its checkpoint is cleared, nothing is deleted.
    pub async fn fail_run(
        &self,
        connection: &str,
        resource: &str,
        run_id: &str,
        error: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE sync_runs SET status = 'failed', error = $1, finished_at = $2 WHERE id = $3",
        )
        .bind(error)
        .bind(now())
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
        .bind(now())
        .bind(connection)
        .bind(resource)
        .bind(run_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

fn token_hash(token: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}

fn run_from_row(row: &AnyRow) -> Result<RunRecord, StoreError> {
    Ok(RunRecord {
        id: row.try_get("id")?,
        connection: row.try_get("connection")?,
        resource: row.try_get("resource")?,
        mode: row.try_get("mode")?,
        reason: row.try_get("reason")?,
        status: row.try_get("status")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        counts: RunCounts {
            slices: row.try_get("slices")?,
            pages: row.try_get("pages")?,
            records: row.try_get("records")?,
            created: row.try_get("created")?,
            updated: row.try_get("updated")?,
            deleted: row.try_get("deleted")?,
            dead_lettered: row.try_get("dead_lettered")?,
        },
        error: row.try_get("error")?,
    })
}

impl FromStr for RunMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "full" => Ok(RunMode::Full),
            "incremental" => Ok(RunMode::Incremental),
            other => Err(format!("unknown mode `{other}`")),
        }
    }
}
