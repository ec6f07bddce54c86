//! How long to wait: after a throttle (the provider's headers, else exponential
//! backoff with full jitter) and between retries of transient failures.

use std::time::{Duration, SystemTime};

use backon::{BackoffBuilder, ExponentialBuilder};
use rand::Rng;
use reqwest::header::HeaderMap;

use crate::spec::model::{RateLimit, ResetFormat};

/// Where a wait came from (shown in progress output).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitSource {
    RetryAfter,
    ResetHeader,
    Backoff,
}

impl WaitSource {
    pub fn as_str(self) -> &'static str {
        match self {
            WaitSource::RetryAfter => "Retry-After",
            WaitSource::ResetHeader => "rate-limit reset header",
            WaitSource::Backoff => "backoff",
        }
    }
}

/// Wait asked for by the Retry-After header: seconds, or an HTTP date.
pub fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Wait until the reset a header announces.
pub fn until_reset(value: &str, format: ResetFormat, now: SystemTime) -> Option<Duration> {
    let n: f64 = value.trim().parse().ok()?;
    if !n.is_finite() || n < 0.0 {
        return None;
    }
    let since_epoch = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .ok()?
        .as_secs_f64();
    let secs = match format {
        ResetFormat::EpochSeconds => n - since_epoch,
        ResetFormat::EpochMillis => n / 1000.0 - since_epoch,
        ResetFormat::DeltaSeconds => n,
        ResetFormat::DeltaMillis => n / 1000.0,
    };
    Some(Duration::from_secs_f64(secs.max(0.0)))
}

/// Full jitter: a uniformly random wait between zero and `cap`.
pub fn full_jitter(cap: Duration, rng: &mut impl Rng) -> Duration {
    cap.mul_f64(rng.random::<f64>())
}

/// The exponential sequence for the `attempt`-th consecutive failure (0-based),
/// from backon, before jitter.
pub fn exponential(base: Duration, max: Duration, attempt: u32) -> Duration {
    ExponentialBuilder::default()
        .with_min_delay(base)
        .with_max_delay(max)
        .with_factor(2.0)
        .without_max_times()
        .build()
        .nth(attempt as usize)
        .unwrap_or(max)
}

/// The wait after a throttled answer. Headers the spec names win; otherwise
/// exponential backoff from `default_backoff_seconds` with full jitter.
pub fn throttle_wait(
    headers: &HeaderMap,
    rate: &RateLimit,
    consecutive: u32,
    now: SystemTime,
    rng: &mut impl Rng,
) -> (Duration, WaitSource) {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(wait) = rate
        .retry_after_header
        .as_deref()
        .and_then(header)
        .and_then(|v| retry_after(v, now))
    {
        return (wait, WaitSource::RetryAfter);
    }
    if let Some(reset) = &rate.reset_header {
        if let Some(wait) = header(&reset.name).and_then(|v| until_reset(v, reset.format, now)) {
            return (wait, WaitSource::ResetHeader);
        }
    }
    let base = Duration::from_secs_f64(rate.default_backoff_seconds.max(0.001));
    let cap = exponential(base, Duration::from_secs(3600), consecutive);
    (full_jitter(cap, rng), WaitSource::Backoff)
}

/// When the provider says no requests remain, the wait until its window resets.
pub fn exhausted_wait(headers: &HeaderMap, rate: &RateLimit, now: SystemTime) -> Option<Duration> {
    let remaining: f64 = headers
        .get(rate.remaining_header.as_deref()?)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    if remaining > 0.0 {
        return None;
    }
    let reset = rate.reset_header.as_ref()?;
    until_reset(headers.get(&reset.name)?.to_str().ok()?, reset.format, now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::model::ResetHeader;
    use rand::SeedableRng;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn retry_after_in_seconds_and_as_http_date() {
        let now = at(1_700_000_000);
        assert_eq!(retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(retry_after("1.5", now), Some(Duration::from_millis(1500)));
        let date = httpdate::fmt_http_date(at(1_700_000_030));
        assert_eq!(retry_after(&date, now), Some(Duration::from_secs(30)));
        // A date in the past means "now", not a negative wait.
        let past = httpdate::fmt_http_date(at(1_699_999_000));
        assert_eq!(retry_after(&past, now), Some(Duration::ZERO));
        assert_eq!(retry_after("soon", now), None);
        assert_eq!(retry_after("-3", now), None);
    }

    #[test]
    fn reset_in_epoch_seconds_millis_and_deltas() {
        let now = at(1_700_000_000);
        assert_eq!(
            until_reset("1700000012", ResetFormat::EpochSeconds, now),
            Some(Duration::from_secs(12))
        );
        assert_eq!(
            until_reset("1700000002500", ResetFormat::EpochMillis, now),
            Some(Duration::from_millis(2500))
        );
        assert_eq!(
            until_reset("9", ResetFormat::DeltaSeconds, now),
            Some(Duration::from_secs(9))
        );
        assert_eq!(
            until_reset("250", ResetFormat::DeltaMillis, now),
            Some(Duration::from_millis(250))
        );
        assert_eq!(
            until_reset("1600000000", ResetFormat::EpochSeconds, now),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn headers_win_over_backoff_and_backoff_is_jittered_within_bounds() {
        let now = at(1_700_000_000);
        let mut rate = RateLimit {
            reset_header: Some(ResetHeader {
                name: "X-Reset".into(),
                format: ResetFormat::EpochSeconds,
            }),
            default_backoff_seconds: 2.0,
            ..RateLimit::default()
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let (w, s) = throttle_wait(
            &headers(&[("retry-after", "4"), ("x-reset", "1700000010")]),
            &rate,
            0,
            now,
            &mut rng,
        );
        assert_eq!((w, s), (Duration::from_secs(4), WaitSource::RetryAfter));
        let (w, s) = throttle_wait(
            &headers(&[("x-reset", "1700000010")]),
            &rate,
            0,
            now,
            &mut rng,
        );
        assert_eq!((w, s), (Duration::from_secs(10), WaitSource::ResetHeader));
        rate.reset_header = None;
        for attempt in 0..6u32 {
            let cap = Duration::from_secs_f64(2.0 * 2f64.powi(attempt as i32));
            let mut seen_low = false;
            for _ in 0..200 {
                let (w, s) = throttle_wait(&HeaderMap::new(), &rate, attempt, now, &mut rng);
                assert_eq!(s, WaitSource::Backoff);
                assert!(w <= cap, "attempt {attempt}: {w:?} > {cap:?}");
                seen_low |= w < cap / 2;
            }
            assert!(seen_low, "full jitter reaches below half the cap");
        }
    }

    #[test]
    fn exhausted_budget_waits_for_reset() {
        let now = at(1_700_000_000);
        let rate = RateLimit {
            remaining_header: Some("X-Remaining".into()),
            reset_header: Some(ResetHeader {
                name: "X-Reset".into(),
                format: ResetFormat::EpochMillis,
            }),
            ..RateLimit::default()
        };
        let h = headers(&[("x-remaining", "0"), ("x-reset", "1700000003000")]);
        assert_eq!(exhausted_wait(&h, &rate, now), Some(Duration::from_secs(3)));
        let h = headers(&[("x-remaining", "5"), ("x-reset", "1700000003000")]);
        assert_eq!(exhausted_wait(&h, &rate, now), None);
    }

    #[test]
    fn exponential_is_capped() {
        let base = Duration::from_millis(100);
        let ms = |attempt| exponential(base, Duration::from_secs(1), attempt).as_millis();
        assert_eq!(ms(0), 100);
        assert_eq!(ms(2), 400);
        assert_eq!(ms(10), 1000);
    }
}

/// A single wait is never longer than the ceiling: `Err` carries the wait asked for.
pub fn within_ceiling(wait: Duration, ceiling: Duration) -> Result<Duration, Duration> {
    if wait > ceiling {
        Err(wait)
    } else {
        Ok(wait)
    }
}

#[cfg(test)]
mod ceiling_tests {
    use super::*;

    #[test]
    fn the_ceiling_refuses_longer_waits() {
        let ceiling = Duration::from_secs(60);
        assert_eq!(
            within_ceiling(Duration::from_secs(59), ceiling),
            Ok(Duration::from_secs(59))
        );
        assert_eq!(within_ceiling(ceiling, ceiling), Ok(ceiling));
        assert_eq!(
            within_ceiling(Duration::from_secs(61), ceiling),
            Err(Duration::from_secs(61))
        );
    }
}
