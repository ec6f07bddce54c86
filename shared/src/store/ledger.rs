//! The state store as a rate-budget ledger: every replica connected to the same
//! PostgreSQL database shares the same budgets. Each call is one short statement
//! on one row, so replicas queue for budget in the order the rows are updated.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use sqlx::Row;

use super::Store;
use crate::budget::{Ledger, LedgerError, Reservation};

/// Budgets kept in the state store.
#[derive(Clone)]
pub struct StoreLedger {
    store: Store,
    /// Keys whose row this process knows exists (saves an insert per request).
    known: Arc<Mutex<HashSet<String>>>,
}

impl StoreLedger {
    pub fn new(store: Store) -> Self {
        StoreLedger {
            store,
            known: Arc::default(),
        }
    }

    async fn ensure(&self, key: &str) -> Result<(), sqlx::Error> {
        if self.known.lock().expect("keys").contains(key) {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO rate_budgets (key, next_at) VALUES ($1, 0) ON CONFLICT (key) DO NOTHING",
        )
        .bind(key)
        .execute(self.store.pool())
        .await?;
        self.known.lock().expect("keys").insert(key.to_string());
        Ok(())
    }
}

fn ledger_error(e: sqlx::Error) -> LedgerError {
    LedgerError(e.to_string())
}

impl Ledger for StoreLedger {
    fn reserve(
        &self,
        key: &str,
        now: i64,
        interval: i64,
        latest: i64,
    ) -> BoxFuture<'_, Result<Reservation, LedgerError>> {
        let key = key.to_string();
        Box::pin(async move {
            if interval == 0 {
                // A budget that only carries holds: reading is enough (no row lock, no write).
                let next: i64 = sqlx::query("SELECT next_at FROM rate_budgets WHERE key = $1")
                    .bind(&key)
                    .fetch_optional(self.store.pool())
                    .await
                    .map_err(ledger_error)?
                    .map(|row| row.try_get("next_at"))
                    .transpose()
                    .map_err(ledger_error)?
                    .unwrap_or(0);
                let at = next.max(now);
                return Ok(if at > latest {
                    Reservation::NotBefore(at)
                } else {
                    Reservation::At(at)
                });
            }
            self.ensure(&key).await.map_err(ledger_error)?;
            let taken = sqlx::query(
                "UPDATE rate_budgets SET next_at = (CASE WHEN next_at > $2 THEN next_at ELSE $2 END) + $3
                 WHERE key = $1 AND next_at <= $4 RETURNING next_at",
            )
            .bind(&key)
            .bind(now)
            .bind(interval)
            .bind(latest)
            .fetch_optional(self.store.pool())
            .await
            .map_err(ledger_error)?;
            if let Some(row) = taken {
                let next: i64 = row.try_get("next_at").map_err(ledger_error)?;
                return Ok(Reservation::At(next - interval));
            }
            let row = sqlx::query("SELECT next_at FROM rate_budgets WHERE key = $1")
                .bind(&key)
                .fetch_one(self.store.pool())
                .await
                .map_err(ledger_error)?;
            let next: i64 = row.try_get("next_at").map_err(ledger_error)?;
            Ok(Reservation::NotBefore(next.max(now)))
        })
    }

    fn hold_until(&self, key: &str, until: i64) -> BoxFuture<'_, Result<(), LedgerError>> {
        let key = key.to_string();
        Box::pin(async move {
            self.ensure(&key).await.map_err(ledger_error)?;
            sqlx::query("UPDATE rate_budgets SET next_at = $2 WHERE key = $1 AND next_at < $2")
                .bind(&key)
                .bind(until)
                .execute(self.store.pool())
                .await
                .map_err(ledger_error)?;
            Ok(())
        })
    }

    fn count_in_day(
        &self,
        key: &str,
        day: &str,
        limit: i64,
    ) -> BoxFuture<'_, Result<bool, LedgerError>> {
        let (key, day) = (key.to_string(), day.to_string());
        Box::pin(async move {
            sqlx::query(
                "INSERT INTO rate_budget_days (key, day, used) VALUES ($1, $2, 0)
                 ON CONFLICT (key, day) DO NOTHING",
            )
            .bind(&key)
            .bind(&day)
            .execute(self.store.pool())
            .await
            .map_err(ledger_error)?;
            let done = sqlx::query(
                "UPDATE rate_budget_days SET used = used + 1 WHERE key = $1 AND day = $2 AND used < $3",
            )
            .bind(&key)
            .bind(&day)
            .bind(limit)
            .execute(self.store.pool())
            .await
            .map_err(ledger_error)?;
            Ok(done.rows_affected() == 1)
        })
    }

    fn take_slot(
        &self,
        key: &str,
        max: u32,
        holder: &str,
        now: i64,
        lease_until: i64,
    ) -> BoxFuture<'_, Result<Option<u32>, LedgerError>> {
        let (key, holder) = (key.to_string(), holder.to_string());
        Box::pin(async move {
            // Start at a random slot so replicas do not all contend for slot 0.
            let start = rand::random_range(0..max.max(1));
            for i in 0..max {
                let slot = (start + i) % max;
                let done = sqlx::query(
                    "INSERT INTO rate_budget_slots (key, slot, holder, expires_at) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (key, slot) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
                     WHERE rate_budget_slots.expires_at < $5",
                )
                .bind(&key)
                .bind(i64::from(slot))
                .bind(&holder)
                .bind(lease_until)
                .bind(now)
                .execute(self.store.pool())
                .await
                .map_err(ledger_error)?;
                if done.rows_affected() == 1 {
                    return Ok(Some(slot));
                }
            }
            Ok(None)
        })
    }

    fn free_slot(
        &self,
        key: &str,
        slot: u32,
        holder: &str,
    ) -> BoxFuture<'_, Result<(), LedgerError>> {
        let (key, holder) = (key.to_string(), holder.to_string());
        Box::pin(async move {
            sqlx::query(
                "DELETE FROM rate_budget_slots WHERE key = $1 AND slot = $2 AND holder = $3",
            )
            .bind(&key)
            .bind(i64::from(slot))
            .bind(&holder)
            .execute(self.store.pool())
            .await
            .map_err(ledger_error)?;
            Ok(())
        })
    }
}

/// Rate budgets are short-lived bookkeeping, written on every request: not worth a WAL
/// flush each, so on PostgreSQL their tables are unlogged. After a database crash they
/// start empty: spacing resumes at once, but a day's counts restart.
///
/// Not a migration: `SET UNLOGGED` is PostgreSQL's alone and the migrations are one
/// portable set that SQLite runs too. Idempotent (a table already unlogged is left alone).
pub(super) async fn unlog_budget_tables(pool: &sqlx::AnyPool) -> Result<(), sqlx::Error> {
    for table in ["rate_budgets", "rate_budget_days", "rate_budget_slots"] {
        let logged = sqlx::query(
            "SELECT 1 AS one FROM pg_class WHERE relname = $1 AND relpersistence = 'p'",
        )
        .bind(table)
        .fetch_optional(pool)
        .await?
        .is_some();
        if logged {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "ALTER TABLE {table} SET UNLOGGED"
            )))
            .execute(pool)
            .await?;
        }
    }
    Ok(())
}
