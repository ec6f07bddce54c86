//! The circuit breaker of one connection, as one state machine.
//!
//! A connection whose provider keeps throttling or failing stops using worker time:
//! its circuit opens (its jobs wait, holding no slot), stays open for a time that
//! doubles while it keeps failing, then lets exactly one job through as the
//! half-open probe; a page that comes back closes it.
//!
//! Every decision is here and pure (state and clock in, verdict out); the store keeps
//! the state (`failure_streak`, `blocked_until`, a compare-and-set for the probe) and
//! the engine asks [`Breaker::should_park`] whether a wait is worth holding a slot for.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// How the breaker behaves. Defaults match the documented settings.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerSettings {
    /// How long the circuit stays open the first time (doubles per reopening).
    pub open: Duration,
    /// The longest it stays open.
    pub max_open: Duration,
    /// Throttles in a row on one request that open the circuit.
    pub throttles_to_open: u32,
    /// Failed runs in a row (provider down, retries exhausted) that open it.
    pub failed_runs_to_open: i64,
    /// How long the other jobs wait while one job is the half-open probe.
    pub probe_hold: Duration,
    /// A wait (budget or throttle) longer than this parks the job instead of holding a slot.
    pub park_after: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        BreakerSettings {
            open: Duration::from_secs(60),
            max_open: Duration::from_secs(600),
            throttles_to_open: 5,
            failed_runs_to_open: 3,
            probe_hold: Duration::from_secs(30),
            park_after: Duration::from_secs(30),
        }
    }
}

/// A connection's breaker state as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BreakerState {
    /// Consecutive throttled parks or failed runs.
    pub failure_streak: i64,
    /// Jobs wait until then (an open circuit, a provider throttle, a spent budget).
    pub blocked_until: Option<DateTime<Utc>>,
}

/// The three states of a circuit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Circuit {
    Closed,
    /// Jobs wait until then.
    Open {
        until: DateTime<Utc>,
    },
    /// The open time is over and the connection has failures: one job may probe.
    HalfOpen {
        opened_until: DateTime<Utc>,
    },
}

/// What to do with a job of the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Run,
    /// Run only if this job wins the probe (the store's compare-and-set from
    /// `opened_until` to `probe_until`); otherwise wait until `probe_until`.
    Probe {
        opened_until: DateTime<Utc>,
        probe_until: DateTime<Utc>,
    },
    /// Come back then, without running.
    Hold(DateTime<Utc>),
}

/// The breaker's rules.
#[derive(Debug, Clone, Default)]
pub struct Breaker {
    pub settings: BreakerSettings,
}

impl Breaker {
    pub fn new(settings: BreakerSettings) -> Self {
        Breaker { settings }
    }

    /// Which state a stored state is in at `now`.
    pub fn circuit(&self, state: &BreakerState, now: DateTime<Utc>) -> Circuit {
        match state.blocked_until {
            Some(until) if until > now => Circuit::Open { until },
            Some(until) if state.failure_streak > 0 => Circuit::HalfOpen {
                opened_until: until,
            },
            _ => Circuit::Closed,
        }
    }

    /// The verdict on a job that is about to run.
    pub fn admit(&self, state: &BreakerState, now: DateTime<Utc>) -> Admission {
        match self.circuit(state, now) {
            Circuit::Closed => Admission::Run,
            Circuit::Open { until } => Admission::Hold(until),
            Circuit::HalfOpen { opened_until } => Admission::Probe {
                opened_until,
                probe_until: now + chrono_duration(self.settings.probe_hold),
            },
        }
    }

    /// Whether the engine should give up waiting and park the job: the wait is long, or
    /// the provider has throttled one request too many times in a row.
    pub fn should_park(&self, wait: Duration, throttles_in_a_row: u32) -> bool {
        wait > self.settings.park_after || throttles_in_a_row >= self.settings.throttles_to_open
    }

    /// When a circuit opened for the `reopened`-th time in a row (0 = the first) closes:
    /// the open time doubles each time, up to the maximum.
    pub fn open_until(&self, reopened: i64, now: DateTime<Utc>) -> DateTime<Utc> {
        let open = self
            .settings
            .open
            .saturating_mul(1u32 << reopened.clamp(0, 16) as u32)
            .min(self.settings.max_open);
        now + chrono_duration(open)
    }

    /// A job parked because the provider throttled; `streak` is the failure count
    /// including this one. The connection waits for the provider's time or the open
    /// circuit's, whichever is later.
    pub fn after_throttle(
        &self,
        streak: i64,
        provider_until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> DateTime<Utc> {
        provider_until.max(self.open_until(streak - 1, now))
    }

    /// A run failed on something that may pass (5xx, timeouts, throttle storms);
    /// `streak` includes it. Returns when the circuit closes, if it opens.
    pub fn after_failed_run(&self, streak: i64, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let threshold = self.settings.failed_runs_to_open;
        (streak >= threshold).then(|| self.open_until(streak - threshold, now))
    }

    /// The provider answered a page: whether there is breaker state to clear.
    pub fn closes_on_page(&self, state: &BreakerState, rate_limited: bool) -> bool {
        state.failure_streak > 0 || state.blocked_until.is_some() || rate_limited
    }
}

fn chrono_duration(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    fn breaker() -> Breaker {
        Breaker::default()
    }

    #[test]
    fn a_fresh_connection_runs() {
        let state = BreakerState::default();
        assert_eq!(breaker().circuit(&state, at(0)), Circuit::Closed);
        assert_eq!(breaker().admit(&state, at(0)), Admission::Run);
    }

    #[test]
    fn an_open_circuit_holds_jobs_until_it_ends() {
        let state = BreakerState {
            failure_streak: 1,
            blocked_until: Some(at(60)),
        };
        assert_eq!(breaker().admit(&state, at(10)), Admission::Hold(at(60)));
    }

    #[test]
    fn after_the_open_time_one_job_probes_and_the_others_wait() {
        let state = BreakerState {
            failure_streak: 2,
            blocked_until: Some(at(60)),
        };
        assert_eq!(
            breaker().admit(&state, at(61)),
            Admission::Probe {
                opened_until: at(60),
                probe_until: at(91),
            }
        );
    }

    #[test]
    fn a_held_budget_without_failures_just_runs_when_it_ends() {
        // `blocked_until` also carries a plain budget hold (no failure): no probe needed.
        let state = BreakerState {
            failure_streak: 0,
            blocked_until: Some(at(5)),
        };
        assert_eq!(breaker().admit(&state, at(6)), Admission::Run);
    }

    #[test]
    fn open_time_doubles_up_to_the_maximum() {
        let b = breaker();
        assert_eq!(b.open_until(0, at(0)), at(60));
        assert_eq!(b.open_until(1, at(0)), at(120));
        assert_eq!(b.open_until(3, at(0)), at(480));
        assert_eq!(b.open_until(4, at(0)), at(600));
        assert_eq!(b.open_until(40, at(0)), at(600));
    }

    #[test]
    fn a_throttle_waits_for_the_later_of_provider_and_circuit() {
        let b = breaker();
        assert_eq!(b.after_throttle(1, at(10), at(0)), at(60));
        assert_eq!(b.after_throttle(1, at(900), at(0)), at(900));
        assert_eq!(b.after_throttle(2, at(10), at(0)), at(120));
    }

    #[test]
    fn failed_runs_open_the_circuit_from_the_third_in_a_row() {
        let b = breaker();
        assert_eq!(b.after_failed_run(1, at(0)), None);
        assert_eq!(b.after_failed_run(2, at(0)), None);
        assert_eq!(b.after_failed_run(3, at(0)), Some(at(60)));
        assert_eq!(b.after_failed_run(4, at(0)), Some(at(120)));
    }

    #[test]
    fn the_engine_parks_long_waits_and_throttle_runs() {
        let b = breaker();
        assert!(!b.should_park(Duration::from_secs(30), 1));
        assert!(b.should_park(Duration::from_secs(31), 1));
        assert!(!b.should_park(Duration::from_secs(1), 4));
        assert!(b.should_park(Duration::from_secs(1), 5));
    }

    #[test]
    fn a_page_closes_whatever_is_left() {
        let b = breaker();
        assert!(!b.closes_on_page(&BreakerState::default(), false));
        assert!(b.closes_on_page(&BreakerState::default(), true));
        let failing = BreakerState {
            failure_streak: 1,
            blocked_until: None,
        };
        assert!(b.closes_on_page(&failing, false));
    }
}
