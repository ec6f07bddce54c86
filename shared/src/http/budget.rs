//! The request budget of one process: requests per window, per day, and at once.
//! Requests wait here instead of provoking throttles.

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::spec::model::RateLimit;

/// Budget state shared by every request of one connection (or one app).
#[derive(Debug)]
pub struct LocalBudget {
    window: Option<DefaultDirectRateLimiter>,
    daily: Option<DefaultDirectRateLimiter>,
    concurrency: Option<Arc<Semaphore>>,
    /// Set when the provider said no requests remain until a reset.
    paused_until: Mutex<Option<Instant>>,
}

/// Holding this is permission to have one request in flight.
#[derive(Debug)]
pub struct BudgetPermit {
    _slot: Option<OwnedSemaphorePermit>,
}

fn quota(requests: u32, per: Duration) -> Option<Quota> {
    let n = NonZeroU32::new(requests)?;
    Quota::with_period(per / requests).map(|q| q.allow_burst(n))
}

impl LocalBudget {
    pub fn from_spec(rate: &RateLimit) -> Self {
        let window = match (rate.requests, rate.per_seconds) {
            (Some(r), Some(s)) => quota(r, Duration::from_secs_f64(s)).map(RateLimiter::direct),
            _ => None,
        };
        let daily = rate
            .requests_per_day
            .and_then(|r| quota(r, Duration::from_secs(86_400)))
            .map(RateLimiter::direct);
        LocalBudget {
            window,
            daily,
            concurrency: rate
                .max_concurrency
                .map(|n| Arc::new(Semaphore::new(n.max(1) as usize))),
            paused_until: Mutex::new(None),
        }
    }

    /// How long until a request may go, without taking budget; zero when it may go now.
    fn wait_needed(&self) -> Duration {
        let now = Instant::now();
        if let Some(until) = *self.paused_until.lock().expect("budget lock") {
            if until > now {
                return until - now;
            }
        }
        Duration::ZERO
    }

    /// Wait for budget. `on_wait` is told each wait longer than a few milliseconds.
    pub async fn acquire(&self, mut on_wait: impl FnMut(Duration)) -> BudgetPermit {
        let slot = match &self.concurrency {
            Some(sem) => Some(
                sem.clone()
                    .acquire_owned()
                    .await
                    .expect("semaphore is never closed"),
            ),
            None => None,
        };
        loop {
            let paused = self.wait_needed();
            if !paused.is_zero() {
                on_wait(paused);
                tokio::time::sleep(paused).await;
                continue;
            }
            let mut waited = false;
            for limiter in [&self.window, &self.daily].into_iter().flatten() {
                if let Err(not_until) = limiter.check() {
                    let wait = not_until.wait_time_from(DefaultClock::default().now());
                    if wait > Duration::from_millis(5) {
                        on_wait(wait);
                    }
                    tokio::time::sleep(wait).await;
                    waited = true;
                    break;
                }
            }
            if !waited {
                return BudgetPermit { _slot: slot };
            }
        }
    }

    /// The provider said the window is spent: hold every request until it resets.
    pub fn pause_for(&self, wait: Duration) {
        let until = Instant::now() + wait;
        let mut paused = self.paused_until.lock().expect("budget lock");
        if paused.is_none_or(|p| p < until) {
            *paused = Some(until);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_window_budget_spaces_requests() {
        let rate = RateLimit {
            requests: Some(5),
            per_seconds: Some(0.5),
            ..RateLimit::default()
        };
        let budget = LocalBudget::from_spec(&rate);
        let start = Instant::now();
        for _ in 0..10 {
            budget.acquire(|_| {}).await;
        }
        // 5 go at once (the burst), the next 5 need at least 0.4 s more.
        assert!(
            start.elapsed() >= Duration::from_millis(380),
            "{:?}",
            start.elapsed()
        );
    }

    #[tokio::test]
    async fn concurrency_is_bounded() {
        let rate = RateLimit {
            max_concurrency: Some(1),
            ..RateLimit::default()
        };
        let budget = Arc::new(LocalBudget::from_spec(&rate));
        let first = budget.acquire(|_| {}).await;
        let b = budget.clone();
        let second = tokio::spawn(async move { b.acquire(|_| {}).await });
        tokio::task::yield_now().await;
        assert!(!second.is_finished());
        drop(first);
        second.await.unwrap();
    }
}
