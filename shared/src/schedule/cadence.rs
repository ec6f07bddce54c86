//! When a (connection, resource) is due: standard 5-field cron expressions (as
//! users write them) or fixed intervals, in the connection's time zone, with a
//! stable per-resource jitter so thousands of connections due at 09:00 do not
//! hit a provider in the same second.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use sha2::{Digest, Sha256};

/// A parsed schedule.
#[derive(Debug, Clone)]
pub enum Cadence {
    Cron(Box<cron::Schedule>),
    Every(Duration),
}

const DAY_NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// Standard cron counts weekdays 0-7 from Sunday; the cron crate counts 1-7. Names agree.
fn weekday_field(field: &str) -> String {
    field
        .split(',')
        .map(|part| {
            let (range, step) = match part.split_once('/') {
                Some((r, s)) => (r, Some(s)),
                None => (part, None),
            };
            let name = |n: &str| {
                n.parse::<usize>()
                    .ok()
                    .filter(|n| *n <= 7)
                    .map(|n| DAY_NAMES[n % 7].to_string())
            };
            let mapped = match range.split_once('-') {
                // A range ending on 7 (Sunday) does not wrap in the crate: split off Sunday.
                Some((a, "7")) => match name(a) {
                    Some(a) => format!("{a}-SAT,SUN"),
                    None => range.to_string(),
                },
                Some((a, b)) => match (name(a), name(b)) {
                    (Some(a), Some(b)) => format!("{a}-{b}"),
                    _ => range.to_string(),
                },
                None => name(range).unwrap_or_else(|| range.to_string()),
            };
            match step {
                Some(s) => format!("{mapped}/{s}"),
                None => mapped,
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = text.split_at(split);
    let n: u64 = n.parse().ok()?;
    let secs = match unit.trim() {
        "s" | "sec" | "secs" | "seconds" => n,
        "m" | "min" | "mins" | "minutes" => n * 60,
        "h" | "hour" | "hours" => n * 3600,
        "d" | "day" | "days" => n * 86_400,
        _ => return None,
    };
    (secs > 0).then(|| Duration::from_secs(secs))
}

impl FromStr for Cadence {
    type Err = String;

    /// `*/15 * * * *` (5 fields), `@hourly`, `@daily`, `@weekly`, `@monthly`, or `@every 15m`.
    fn from_str(expr: &str) -> Result<Self, String> {
        let expr = expr.trim();
        if let Some(every) = expr.strip_prefix("@every") {
            return parse_duration(every).map(Cadence::Every).ok_or_else(|| {
                format!("`{expr}`: write an interval like `@every 15m` (units s, m, h, d)")
            });
        }
        let fields: Vec<&str> = match expr {
            "@hourly" => vec!["0", "*", "*", "*", "*"],
            "@daily" | "@midnight" => vec!["0", "0", "*", "*", "*"],
            "@weekly" => vec!["0", "0", "*", "*", "0"],
            "@monthly" => vec!["0", "0", "1", "*", "*"],
            _ => expr.split_whitespace().collect(),
        };
        if fields.len() != 5 {
            return Err(format!(
                "`{expr}` has {} fields; a schedule is a 5-field cron expression (minute hour day-of-month month day-of-week, e.g. `*/15 * * * *`) or `@every 15m`",
                fields.len()
            ));
        }
        let six = format!(
            "0 {} {} {} {} {}",
            fields[0],
            fields[1],
            fields[2],
            fields[3],
            weekday_field(fields[4])
        );
        cron::Schedule::from_str(&six)
            .map(|s| Cadence::Cron(Box::new(s)))
            .map_err(|e| format!("`{expr}` is not a valid cron expression: {e}"))
    }
}

impl Cadence {
    /// The first occurrence strictly after `after`, in `tz`.
    pub fn next_after(&self, after: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        match self {
            Cadence::Every(d) => Some(after + chrono::Duration::from_std(*d).ok()?),
            Cadence::Cron(s) => s
                .after(&after.with_timezone(&tz))
                .next()
                .map(|t| t.with_timezone(&Utc)),
        }
    }

    /// A typical gap between occurrences (bounds the jitter).
    pub fn period(&self, tz: Tz) -> Duration {
        match self {
            Cadence::Every(d) => *d,
            Cadence::Cron(s) => {
                let mut it = s.upcoming(tz);
                match (it.next(), it.next()) {
                    (Some(a), Some(b)) => (b - a).to_std().unwrap_or(Duration::from_secs(60)),
                    _ => Duration::from_secs(86_400),
                }
            }
        }
    }
}

/// A stable offset for one (connection, resource): a tenth of the period at most,
/// and never more than `max`.
pub fn jitter(key: &str, period: Duration, max: Duration) -> Duration {
    let bound = (period / 10).min(max);
    if bound.is_zero() {
        return Duration::ZERO;
    }
    let h = Sha256::digest(key.as_bytes());
    let n = u64::from_le_bytes(h[..8].try_into().expect("8 bytes"));
    Duration::from_millis(n % bound.as_millis().max(1) as u64)
}

/// The next due time after `after`, jitter included.
pub fn next_due(
    cadence: &Cadence,
    tz: Tz,
    after: DateTime<Utc>,
    jitter: Duration,
) -> Option<DateTime<Utc>> {
    let j = chrono::Duration::from_std(jitter).ok()?;
    cadence.next_after(after - j, tz).map(|t| t + j)
}

pub fn parse_timezone(name: &str) -> Result<Tz, String> {
    name.parse::<Tz>().map_err(|_| {
        format!(
            "`{name}` is not an IANA time zone (e.g. `Europe/Paris`, `America/New_York`, `UTC`)"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, TimeZone, Timelike, Weekday};

    fn utc(y: i32, m: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, mi, 0).single().unwrap()
    }

    #[test]
    fn five_field_cron_with_standard_weekdays() {
        let c: Cadence = "0 9 * * 1-5".parse().unwrap();
        // Saturday 2026-11-28 -> next is Monday 09:00.
        let next = c
            .next_after(utc(2026, 11, 28, 10, 0), chrono_tz::UTC)
            .unwrap();
        assert_eq!((next.weekday(), next.hour()), (Weekday::Mon, 9));
        let sunday: Cadence = "30 6 * * 0".parse().unwrap();
        assert_eq!(
            sunday
                .next_after(utc(2026, 11, 28, 10, 0), chrono_tz::UTC)
                .unwrap()
                .weekday(),
            Weekday::Sun
        );
        let weekend: Cadence = "0 0 * * 6-7".parse().unwrap();
        let t = weekend
            .next_after(utc(2026, 11, 28, 10, 0), chrono_tz::UTC)
            .unwrap();
        assert_eq!(t.weekday(), Weekday::Sun);
        assert!("*/15 * * * *".parse::<Cadence>().is_ok());
        assert!("@daily".parse::<Cadence>().is_ok());
    }

    #[test]
    fn the_connection_time_zone_applies() {
        let c: Cadence = "0 9 * * *".parse().unwrap();
        let paris = parse_timezone("Europe/Paris").unwrap();
        let next = c.next_after(utc(2026, 11, 28, 0, 0), paris).unwrap();
        assert_eq!(
            next,
            utc(2026, 11, 28, 8, 0),
            "09:00 in Paris in winter is 08:00 UTC"
        );
        assert!(parse_timezone("Mars/Olympus").is_err());
    }

    #[test]
    fn intervals_and_bad_input() {
        let c: Cadence = "@every 15m".parse().unwrap();
        assert_eq!(
            c.next_after(utc(2026, 1, 1, 0, 0), chrono_tz::UTC).unwrap(),
            utc(2026, 1, 1, 0, 15)
        );
        assert!("@every soon"
            .parse::<Cadence>()
            .unwrap_err()
            .contains("@every 15m"));
        assert!("* * * *"
            .parse::<Cadence>()
            .unwrap_err()
            .contains("has 4 fields"));
        assert!("61 * * * *"
            .parse::<Cadence>()
            .unwrap_err()
            .contains("not a valid cron"));
    }

    #[test]
    fn jitter_is_stable_bounded_and_spreads() {
        let period = Duration::from_secs(86_400);
        let max = Duration::from_secs(300);
        assert_eq!(
            jitter("c1/contacts", period, max),
            jitter("c1/contacts", period, max)
        );
        let spread: std::collections::HashSet<u64> = (0..1000)
            .map(|i| jitter(&format!("c{i}/contacts"), period, max).as_secs())
            .collect();
        assert!(
            spread.len() > 200,
            "1000 connections spread over many seconds: {}",
            spread.len()
        );
        assert!((0..1000).all(|i| jitter(&format!("c{i}/x"), period, max) < max));
        assert!(jitter("k", Duration::from_secs(60), max) < Duration::from_secs(6));
        let c: Cadence = "0 9 * * *".parse().unwrap();
        let j = Duration::from_secs(100);
        let due = next_due(&c, chrono_tz::UTC, utc(2026, 11, 28, 8, 0), j).unwrap();
        assert_eq!(
            due,
            utc(2026, 11, 28, 9, 0) + chrono::Duration::seconds(100)
        );
        // Right after it fires, the next one is the next day's.
        let again = next_due(&c, chrono_tz::UTC, due, j).unwrap();
        assert_eq!(again, due + chrono::Duration::days(1));
    }
}
