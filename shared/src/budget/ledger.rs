//! Where budget state lives. Every replica that reads and writes the same ledger
//! shares the same budgets: the state store's ledger (PostgreSQL) serves a fleet,
//! the in-memory one serves a single process (`spec run`, SQLite deployments).
//!
//! Times are microseconds since the Unix epoch, from the caller's clock: replicas
//! are expected to run NTP, and the budget's headroom absorbs the skew.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use futures::future::BoxFuture;

/// The ledger could not be read or written (the state store is unreachable).
#[derive(Debug, thiserror::Error)]
#[error("rate budget ledger: {0}")]
pub struct LedgerError(pub String);

/// What a reservation on a spaced budget came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reservation {
    /// The request may go at this time (and the slot is taken).
    At(i64),
    /// The first free slot is later than the caller accepts; nothing was taken.
    NotBefore(i64),
}

/// Shared budget state, one key per budget.
pub trait Ledger: Send + Sync {
    /// Take the next send slot of a budget whose requests are `interval` apart, if it
    /// is no later than `latest`.
    fn reserve(
        &self,
        key: &str,
        now: i64,
        interval: i64,
        latest: i64,
    ) -> BoxFuture<'_, Result<Reservation, LedgerError>>;

    /// No request of this budget goes before `until` (a provider said so).
    fn hold_until(&self, key: &str, until: i64) -> BoxFuture<'_, Result<(), LedgerError>>;

    /// Count one request against a budget of `limit` per `day`; false when it is spent.
    fn count_in_day(
        &self,
        key: &str,
        day: &str,
        limit: i64,
    ) -> BoxFuture<'_, Result<bool, LedgerError>>;

    /// Take one of `max` in-flight slots for `holder`, leased until `lease_until`
    /// (a holder that dies frees its slot then). `None` when all are taken.
    fn take_slot(
        &self,
        key: &str,
        max: u32,
        holder: &str,
        now: i64,
        lease_until: i64,
    ) -> BoxFuture<'_, Result<Option<u32>, LedgerError>>;

    fn free_slot(
        &self,
        key: &str,
        slot: u32,
        holder: &str,
    ) -> BoxFuture<'_, Result<(), LedgerError>>;
}

/// One process's ledger.
#[derive(Debug, Default)]
pub struct MemoryLedger {
    next_free: Mutex<HashMap<String, i64>>,
    days: Mutex<HashMap<(String, String), i64>>,
    slots: Mutex<HashMap<(String, u32), (String, i64)>>,
}

impl Ledger for MemoryLedger {
    fn reserve(
        &self,
        key: &str,
        now: i64,
        interval: i64,
        latest: i64,
    ) -> BoxFuture<'_, Result<Reservation, LedgerError>> {
        let mut map = self
            .next_free
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let next = map.entry(key.to_string()).or_insert(0);
        let at = (*next).max(now);
        let out = if at > latest {
            Reservation::NotBefore(at)
        } else {
            *next = at + interval;
            Reservation::At(at)
        };
        Box::pin(async move { Ok(out) })
    }

    fn hold_until(&self, key: &str, until: i64) -> BoxFuture<'_, Result<(), LedgerError>> {
        let mut map = self
            .next_free
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let next = map.entry(key.to_string()).or_insert(0);
        *next = (*next).max(until);
        Box::pin(async { Ok(()) })
    }

    fn count_in_day(
        &self,
        key: &str,
        day: &str,
        limit: i64,
    ) -> BoxFuture<'_, Result<bool, LedgerError>> {
        let mut days = self.days.lock().unwrap_or_else(PoisonError::into_inner);
        let used = days.entry((key.to_string(), day.to_string())).or_insert(0);
        let ok = *used < limit;
        if ok {
            *used += 1;
        }
        Box::pin(async move { Ok(ok) })
    }

    fn take_slot(
        &self,
        key: &str,
        max: u32,
        holder: &str,
        now: i64,
        lease_until: i64,
    ) -> BoxFuture<'_, Result<Option<u32>, LedgerError>> {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        let free = (0..max).find(|i| {
            slots
                .get(&(key.to_string(), *i))
                .is_none_or(|(_, expires)| *expires < now)
        });
        if let Some(i) = free {
            slots.insert((key.to_string(), i), (holder.to_string(), lease_until));
        }
        Box::pin(async move { Ok(free) })
    }

    fn free_slot(
        &self,
        key: &str,
        slot: u32,
        holder: &str,
    ) -> BoxFuture<'_, Result<(), LedgerError>> {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        if slots
            .get(&(key.to_string(), slot))
            .is_some_and(|(h, _)| h == holder)
        {
            slots.remove(&(key.to_string(), slot));
        }
        Box::pin(async { Ok(()) })
    }
}
