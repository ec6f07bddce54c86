//! Request budgets, shared by every replica that uses the same ledger.
//!
//! A spec declares budgets (requests per window, per UTC day, in flight at once) at a
//! scope: each connection, or every connection of one provider app. Each request takes
//! its place in every budget that applies before it goes, so the provider never sees
//! more than the budget however many workers run. Window budgets are spaced (one
//! request every window/requests, plus headroom), which also keeps any sliding window
//! of the provider's under its limit. A provider's own signals hold a budget: a throttle
//! holds the connection, a "0 remaining" header holds the scope the spec names.

pub mod ledger;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use tracing::Instrument;

pub use ledger::{Ledger, LedgerError, MemoryLedger, Reservation};

use crate::spec::model::{BudgetScope, Quota, RateLimit};
use crate::telemetry::{metrics, OwnedLabels};

/// Fleet-wide knobs of every budget.
#[derive(Debug, Clone)]
pub struct BudgetSettings {
    /// Spacing added to every window budget (0.05 = requests go at most at 95% of the
    /// budget), so clock skew and network jitter never push a provider over it.
    pub headroom: f64,
    /// How long an in-flight slot is leased (a replica that dies frees it then).
    pub slot_lease: Duration,
}

impl Default for BudgetSettings {
    fn default() -> Self {
        BudgetSettings {
            headroom: 0.05,
            slot_lease: Duration::from_secs(120),
        }
    }
}

/// Who the budget belongs to.
#[derive(Debug, Clone)]
pub struct BudgetOwner {
    pub provider: String,
    pub connection: String,
    /// What identifies the provider app (an OAuth client id); connections with the same
    /// value share app budgets. Stored only as a hash.
    pub app: Option<String>,
}

/// Why a request cannot go soon: the job should park and come back at `until`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exhausted {
    pub until: DateTime<Utc>,
    pub reason: String,
}

#[derive(Debug, thiserror::Error)]
pub enum AcquireError {
    #[error("{}: no request before {}", .0.reason, crate::domain::time::human(.0.until))]
    Exhausted(Exhausted),
    #[error("{0}")]
    Ledger(#[from] LedgerError),
}

#[derive(Debug, Clone)]
struct Spaced {
    key: String,
    /// Microseconds between requests; 0 when the key only carries holds.
    interval: i64,
    /// How late after its slot a request may still go (microseconds). Lateness up to the
    /// headroom's share of the window can never put N+1 requests in one window; past it,
    /// the request takes a new slot.
    tolerance: i64,
    what: &'static str,
}

#[derive(Debug, Clone)]
struct Daily {
    key: String,
    limit: i64,
}

#[derive(Debug, Clone)]
struct InFlight {
    key: String,
    max: u32,
}

/// The budgets one connection's requests go through.
pub struct Budget {
    ledger: Arc<dyn Ledger>,
    settings: BudgetSettings,
    spaced: Vec<Spaced>,
    daily: Vec<Daily>,
    in_flight: Vec<InFlight>,
    connection_key: String,
    scope_key: String,
    holder: String,
    labels: OwnedLabels,
}

/// Holding this is permission to have one request in flight.
pub struct BudgetPermit {
    ledger: Arc<dyn Ledger>,
    slots: Vec<(String, u32)>,
    holder: String,
}

impl std::fmt::Debug for BudgetPermit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BudgetPermit")
            .field("slots", &self.slots)
            .finish()
    }
}

impl Drop for BudgetPermit {
    fn drop(&mut self) {
        if self.slots.is_empty() {
            return;
        }
        let (ledger, slots, holder) = (
            self.ledger.clone(),
            std::mem::take(&mut self.slots),
            self.holder.clone(),
        );
        let free = async move {
            for (key, slot) in slots {
                // A slot that cannot be freed now is freed by its lease.
                let _ = ledger.free_slot(&key, slot, &holder).await;
            }
        };
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(free);
        }
    }
}

fn micros(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

fn from_micros(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap_or_default()
}

fn app_key(owner: &BudgetOwner) -> String {
    let app = owner.app.as_deref().map_or_else(
        || "default".to_string(),
        |a| hex::encode(&Sha256::digest(a.as_bytes())[..8]),
    );
    format!("app:{}:{app}", owner.provider)
}

impl Budget {
    pub fn new(
        rate: &RateLimit,
        owner: &BudgetOwner,
        ledger: Arc<dyn Ledger>,
        settings: BudgetSettings,
    ) -> Budget {
        let connection_key = format!("conn:{}:{}", owner.provider, owner.connection);
        let app = app_key(owner);
        let scope_key = match rate.scope {
            BudgetScope::Connection => connection_key.clone(),
            BudgetScope::App => app.clone(),
        };
        let mut budget = Budget {
            ledger,
            spaced: Vec::new(),
            daily: Vec::new(),
            in_flight: Vec::new(),
            connection_key: connection_key.clone(),
            scope_key: scope_key.clone(),
            holder: uuid::Uuid::new_v4().simple().to_string(),
            settings,
            labels: OwnedLabels::default(),
        };
        let scoped = [
            (scope_key.clone(), rate.quota(), rate.scope.as_str()),
            (
                format!("{app}:extra"),
                rate.app_budget.clone().unwrap_or_default(),
                "app",
            ),
        ];
        for (key, quota, what) in scoped {
            budget.add(&key, &quota, what);
        }
        // Throttles hold the connection even when its budgets are all app-wide.
        if !budget.spaced.iter().any(|s| s.key == connection_key) {
            budget.spaced.push(Spaced {
                key: connection_key,
                interval: 0,
                tolerance: i64::MAX,
                what: "connection",
            });
        }
        budget
    }

    /// Whose requests these are, for the `budget.wait` span and the budget wait metric.
    pub fn with_labels(mut self, labels: OwnedLabels) -> Self {
        self.labels = labels;
        self
    }

    /// A span over one wait for budget, and the wait measured once it ends.
    fn waiting(&self, budget: &str) -> (tracing::Span, Instant) {
        let span = tracing::info_span!(
            "budget.wait",
            budget,
            tributary.provider = %self.labels.provider,
            tributary.tenant = %self.labels.tenant,
        );
        (span, Instant::now())
    }

    fn waited(&self, since: Instant) {
        metrics().budget_wait(&self.labels.labels(), since.elapsed());
    }

    /// A budget this process alone keeps (one run on a terminal, token upkeep).
    pub fn local(rate: &RateLimit, owner: &BudgetOwner) -> Budget {
        Budget::new(
            rate,
            owner,
            Arc::new(MemoryLedger::default()),
            BudgetSettings::default(),
        )
    }

    fn add(&mut self, key: &str, quota: &Quota, what: &'static str) {
        if let (Some(n), Some(per)) = (quota.requests, quota.per_seconds) {
            if n > 0 && per > 0.0 {
                let interval = per * 1e6 / f64::from(n) * (1.0 + self.settings.headroom.max(0.0));
                // Half the headroom; the other half is for the way to the provider (a busy
                // host can take tens of milliseconds between this check and the socket).
                let tolerance = (per * 1e6 * self.settings.headroom.max(0.0) * 0.5).max(2_000.0);
                self.spaced.push(Spaced {
                    key: key.to_string(),
                    interval: interval.ceil() as i64,
                    tolerance: tolerance as i64,
                    what,
                });
            }
        }
        if let Some(limit) = quota.requests_per_day {
            self.daily.push(Daily {
                key: format!("{key}:day"),
                limit: i64::from(limit),
            });
        }
        if let Some(max) = quota.max_concurrency {
            self.in_flight.push(InFlight {
                key: format!("{key}:in_flight"),
                max: max.max(1),
            });
        }
    }

    async fn take_slot(&self, f: &InFlight) -> Result<Option<u32>, LedgerError> {
        let now = SystemTime::now();
        let lease = micros(now + self.settings.slot_lease);
        self.ledger
            .take_slot(&f.key, f.max, &self.holder, micros(now), lease)
            .await
    }

    async fn wait_for_slot(&self, f: &InFlight) -> Result<u32, LedgerError> {
        let mut poll = Duration::from_millis(5);
        loop {
            tokio::time::sleep(poll).await;
            poll = (poll * 2).min(Duration::from_millis(100));
            if let Some(slot) = self.take_slot(f).await? {
                return Ok(slot);
            }
        }
    }

    /// Wait for budget. A wait longer than `park_after` is not waited: the caller gets
    /// `Exhausted` with the time to come back. `on_wait` hears of waits over 5 ms.
    pub async fn acquire(
        &self,
        park_after: Duration,
        mut on_wait: impl FnMut(Duration, &str),
    ) -> Result<BudgetPermit, AcquireError> {
        let mut permit = BudgetPermit {
            ledger: self.ledger.clone(),
            slots: Vec::new(),
            holder: self.holder.clone(),
        };
        for f in &self.in_flight {
            let slot = match self.take_slot(f).await? {
                Some(slot) => slot,
                None => {
                    let (span, since) = self.waiting("in_flight");
                    let slot = self.wait_for_slot(f).instrument(span).await?;
                    self.waited(since);
                    slot
                }
            };
            permit.slots.push((f.key.clone(), slot));
        }
        let mut counted = false;
        for _attempt in 0..4 {
            let now = micros(SystemTime::now());
            let latest = now + park_after.as_micros() as i64;
            let mut go_at = now;
            let mut why = "";
            let mut tolerance = i64::MAX;
            for s in &self.spaced {
                match self.ledger.reserve(&s.key, now, s.interval, latest).await? {
                    Reservation::At(at) => {
                        if s.interval > 0 {
                            tolerance = tolerance.min(s.tolerance);
                        }
                        if at > go_at {
                            go_at = at;
                            why = s.what;
                        }
                    }
                    Reservation::NotBefore(at) => {
                        return Err(AcquireError::Exhausted(Exhausted {
                            until: from_micros(at),
                            reason: format!("the {} request budget is held", s.what),
                        }))
                    }
                }
            }
            // Counted before the wait (once), so no round trip to the ledger sits between
            // the lateness check below and the request going out.
            if !counted {
                self.count_in_days().await?;
                counted = true;
            }
            let wait = Duration::from_micros((go_at - now).max(0) as u64);
            if wait > Duration::from_millis(5) {
                on_wait(wait, why);
            }
            // The timer's granularity is a millisecond: a shorter sleep would cost more than
            // the wait, and going that little early is well inside the headroom.
            if wait >= Duration::from_micros(500) {
                let (span, since) = self.waiting(why);
                tokio::time::sleep(wait).instrument(span).await;
                self.waited(since);
            }
            let late = micros(SystemTime::now()) - go_at;
            if late > tolerance && wait >= Duration::from_micros(500) {
                // Sent this late the request would crowd the next slot; take a new one.
                continue;
            }
            return Ok(permit);
        }
        Err(AcquireError::Exhausted(Exhausted {
            until: Utc::now() + chrono::Duration::seconds(1),
            reason: "this process keeps waking up late for its budget slots".into(),
        }))
    }

    async fn count_in_days(&self) -> Result<(), AcquireError> {
        let day = Utc::now().date_naive();
        for d in &self.daily {
            if !self
                .ledger
                .count_in_day(&d.key, &day.to_string(), d.limit)
                .await?
            {
                let midnight = day
                    .succ_opt()
                    .and_then(|n| n.and_hms_opt(0, 0, 0))
                    .map(|n| n.and_utc())
                    .unwrap_or_else(Utc::now);
                return Err(AcquireError::Exhausted(Exhausted {
                    until: midnight,
                    reason: format!("the daily budget of {} requests is spent", d.limit),
                }));
            }
        }
        Ok(())
    }

    /// The provider throttled this connection: none of its requests go before `until`.
    pub async fn hold_connection(&self, until: SystemTime) -> Result<(), LedgerError> {
        self.ledger
            .hold_until(&self.connection_key, micros(until))
            .await
    }

    /// The provider said its window (at the spec's scope) is spent until `until`.
    pub async fn hold_scope(&self, until: SystemTime) -> Result<(), LedgerError> {
        self.ledger.hold_until(&self.scope_key, micros(until)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(connection: &str) -> BudgetOwner {
        BudgetOwner {
            provider: "p".into(),
            connection: connection.into(),
            app: Some("client".into()),
        }
    }

    fn rate(requests: u32, per_seconds: f64, scope: BudgetScope) -> RateLimit {
        RateLimit {
            requests: Some(requests),
            per_seconds: Some(per_seconds),
            scope,
            ..RateLimit::default()
        }
    }

    fn no_headroom() -> BudgetSettings {
        BudgetSettings {
            headroom: 0.0,
            ..BudgetSettings::default()
        }
    }

    #[tokio::test]
    async fn an_app_budget_spaces_the_requests_of_every_connection() {
        let ledger: Arc<dyn Ledger> = Arc::new(MemoryLedger::default());
        let r = rate(20, 1.0, BudgetScope::App);
        // The default headroom: its tolerance for waking up late keeps a loaded test host
        // from taking a new slot on every request.
        let a = Budget::new(&r, &owner("a"), ledger.clone(), BudgetSettings::default());
        let b = Budget::new(&r, &owner("b"), ledger.clone(), BudgetSettings::default());
        let start = std::time::Instant::now();
        for _ in 0..5 {
            a.acquire(Duration::from_secs(5), |_, _| {}).await.unwrap();
            b.acquire(Duration::from_secs(5), |_, _| {}).await.unwrap();
        }
        // 10 requests 52.5 ms apart: the 10th goes 472 ms after the first.
        assert!(
            start.elapsed() >= Duration::from_millis(440),
            "{:?}",
            start.elapsed()
        );
    }

    #[tokio::test]
    async fn connection_budgets_are_separate() {
        let ledger: Arc<dyn Ledger> = Arc::new(MemoryLedger::default());
        let r = rate(2, 10.0, BudgetScope::Connection);
        let a = Budget::new(&r, &owner("a"), ledger.clone(), no_headroom());
        let b = Budget::new(&r, &owner("b"), ledger.clone(), no_headroom());
        a.acquire(Duration::from_secs(1), |_, _| {}).await.unwrap();
        b.acquire(Duration::from_secs(1), |_, _| {}).await.unwrap();
        // The second of `a` would wait 5 s: longer than the caller accepts, so it parks.
        let parked = a.acquire(Duration::from_secs(1), |_, _| {}).await;
        assert!(
            matches!(parked, Err(AcquireError::Exhausted(_))),
            "{parked:?}"
        );
    }

    #[tokio::test]
    async fn a_throttle_holds_only_its_connection_and_a_spent_day_parks_until_midnight() {
        let ledger: Arc<dyn Ledger> = Arc::new(MemoryLedger::default());
        let mut r = rate(1000, 1.0, BudgetScope::App);
        r.requests_per_day = Some(2);
        let a = Budget::new(&r, &owner("a"), ledger.clone(), no_headroom());
        let b = Budget::new(&r, &owner("b"), ledger.clone(), no_headroom());
        a.hold_connection(SystemTime::now() + Duration::from_secs(60))
            .await
            .unwrap();
        let held = a.acquire(Duration::from_secs(1), |_, _| {}).await;
        match held {
            Err(AcquireError::Exhausted(e)) => assert!(e.reason.contains("connection"), "{e:?}"),
            other => panic!("{other:?}"),
        }
        b.acquire(Duration::from_secs(1), |_, _| {}).await.unwrap();
        // The daily budget is per scope (the app): b's first request used one of its 2.
        let b2 = Budget::new(&r, &owner("c"), ledger.clone(), no_headroom());
        b2.acquire(Duration::from_secs(1), |_, _| {}).await.unwrap();
        match b.acquire(Duration::from_secs(1), |_, _| {}).await {
            Err(AcquireError::Exhausted(e)) => {
                assert!(e.until > Utc::now());
                assert_eq!(e.until.time(), chrono::NaiveTime::MIN);
                assert!(e.reason.contains("daily"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_spent_window_at_app_scope_holds_every_connection_of_the_app() {
        let ledger: Arc<dyn Ledger> = Arc::new(MemoryLedger::default());
        let r = rate(1000, 1.0, BudgetScope::App);
        let a = Budget::new(&r, &owner("a"), ledger.clone(), no_headroom());
        let b = Budget::new(&r, &owner("b"), ledger.clone(), no_headroom());
        let other_app = Budget::new(
            &r,
            &BudgetOwner {
                app: Some("another client".into()),
                ..owner("c")
            },
            ledger.clone(),
            no_headroom(),
        );
        let reset = SystemTime::now() + Duration::from_secs(30);
        a.hold_scope(reset).await.unwrap();
        match b.acquire(Duration::from_secs(1), |_, _| {}).await {
            Err(AcquireError::Exhausted(e)) => {
                assert_eq!(
                    e.until.timestamp_millis(),
                    from_micros(micros(reset)).timestamp_millis()
                );
                assert!(e.reason.contains("app"), "{e:?}");
            }
            other => panic!("{other:?}"),
        }
        other_app
            .acquire(Duration::from_secs(1), |_, _| {})
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn in_flight_requests_are_bounded_across_connections_of_one_app() {
        let ledger: Arc<dyn Ledger> = Arc::new(MemoryLedger::default());
        let r = RateLimit {
            max_concurrency: Some(1),
            scope: BudgetScope::App,
            ..RateLimit::default()
        };
        let a = Arc::new(Budget::new(&r, &owner("a"), ledger.clone(), no_headroom()));
        let b = Arc::new(Budget::new(&r, &owner("b"), ledger.clone(), no_headroom()));
        let first = a.acquire(Duration::from_secs(1), |_, _| {}).await.unwrap();
        let second = tokio::spawn(async move {
            b.acquire(Duration::from_secs(1), |_, _| {})
                .await
                .map(|_| ())
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !second.is_finished(),
            "a second request went while one was in flight"
        );
        drop(first);
        second.await.unwrap().unwrap();
    }
}
