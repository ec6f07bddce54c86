//! The state store: one `Store` handle over sqlx's `Any` driver, so PostgreSQL (a fleet)
//! and SQLite (one machine) run the same SQL; migrations are embedded and applied at
//! start. One file per kind of row, each an `impl Store` block:
//! `tenants`, `tokens` (API tokens), `connections` (sealed credentials, key rotation),
//! `connect_sessions` (the hosted connect flow: hashed tokens and OAuth states, sealed verifiers),
//! `schedules` (and leases), `runs`, `checkpoints`, `schemas` (discovered schemas), `fingerprints` (the slice commit, the
//! sweep's candidates), `locks` (token refresh locks), `overrides` (a connection's overrides and their
//! version), `breaker` (the circuit breaker's
//! columns) and `ledger` (rate budgets). Times are stored as `domain::time::stamp` text.

mod breaker;
mod checkpoints;
mod connect_sessions;
mod connections;
mod fingerprints;
mod ledger;
mod locks;
mod overrides;
mod runs;
mod schedules;
mod schemas;
mod tenants;
mod tokens;
mod webhooks;

use chrono::Utc;
use sqlx::any::AnyPoolOptions;
use sqlx::AnyPool;

pub use checkpoints::Checkpoint;
pub use connect_sessions::{ConnectSession, NewConnectSession, SessionState};
pub use connections::{ConnectionRecord, NewConnection};
pub use fingerprints::SliceCommit;
pub use ledger::StoreLedger;
pub use overrides::StoredOverrides;
pub use runs::{NewRun, RunRecord};
pub use schedules::{Due, DueSchedule};
pub use schemas::StoredSchema;
pub use webhooks::{
    hook_token_hash, ChannelHealth, ChannelKey, FetchCommit, QuietChannel, Registration,
};

use crate::domain::time::stamp;
use crate::secrets::crypto::{Cipher, CryptoError};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// A run that ended (or could not be enqueued) gives its schedule's lease back.
const RELEASE_LEASE: &str =
    "UPDATE schedules SET lease_run_id = NULL, lease_expires_at = NULL WHERE lease_run_id = $1";

/// A JSON text column that does not parse: the row was written by something else.
fn corrupt(what: &'static str) -> impl FnOnce(serde_json::Error) -> StoreError {
    move |e| StoreError::Corrupt {
        what,
        message: e.to_string(),
    }
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
    /// How long a job's lease lasts unless set (`with_lease`).
    pub const DEFAULT_LEASE: std::time::Duration = std::time::Duration::from_secs(900);

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
            ledger::unlog_budget_tables(&pool).await?;
        }
        Ok(Store {
            pool,
            cipher,
            postgres,
            lease: chrono::Duration::seconds(Self::DEFAULT_LEASE.as_secs() as i64),
        })
    }

    /// How long a job's lease lasts without a slice renewing it (TRIBUTARY_LEASE_SECONDS).
    pub fn with_lease(mut self, lease: std::time::Duration) -> Self {
        self.lease = chrono::Duration::from_std(lease).unwrap_or(self.lease);
        self
    }

    /// When a lease taken now ends (stored text).
    pub fn lease_until(&self) -> String {
        stamp(Utc::now() + self.lease)
    }

    pub fn is_postgres(&self) -> bool {
        self.postgres
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }
}
