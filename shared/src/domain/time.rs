//! The one text form of instants. The state store keeps times as text and SQL compares
//! them as text (`next_run_at <= $1`, `blocked_until = $3`), which is right only if every
//! writer produces exactly the same form: RFC 3339, UTC, milliseconds, `Z`
//! (`2026-11-28T06:40:12.331Z`). [`stamp`] is the only function that writes it; events
//! use it too, so what a consumer reads compares the same way.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;

/// The stored and published text of an instant (millisecond precision, UTC, `Z`).
pub fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// [`stamp`] of now.
pub fn now_stamp() -> String {
    stamp(Utc::now())
}

/// An instant as [`stamp`] wrote it (any RFC 3339 text is read, in UTC). None when it is not one.
pub fn parse_stamp(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// A stored optional instant (a nullable column).
pub fn parse_stored(text: Option<&str>) -> Option<DateTime<Utc>> {
    text.and_then(parse_stamp)
}

/// An instant to the second, for messages people read ("resuming at ...").
pub fn human(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A time as providers write it: RFC 3339, an ISO offset without a colon (`+0000`),
/// `YYYY-MM-DD HH:MM:SS` (read as UTC), or seconds / milliseconds since the epoch
/// (as text or as a number).
pub fn parse_provider(v: &Value) -> Option<DateTime<Utc>> {
    match v {
        Value::String(s) => parse_provider_text(s),
        Value::Number(n) => n.as_i64().and_then(from_epoch),
        _ => None,
    }
}

/// [`parse_provider`] of a text.
pub fn parse_provider_text(s: &str) -> Option<DateTime<Utc>> {
    parse_stamp(s)
        .or_else(|| {
            DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%z")
                .ok()
                .map(|t| t.with_timezone(&Utc))
        })
        .or_else(|| {
            chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S")
                .ok()
                .map(|n| n.and_utc())
        })
        .or_else(|| s.parse::<i64>().ok().and_then(from_epoch))
}

/// Seconds or milliseconds since the epoch, told apart by size (a count of seconds that
/// large would be past the year 5000).
pub fn from_epoch(n: i64) -> Option<DateTime<Utc>> {
    if n > 100_000_000_000 {
        DateTime::from_timestamp_millis(n)
    } else {
        DateTime::from_timestamp(n, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_stored_form_round_trips_and_sorts_like_time() {
        let t = DateTime::parse_from_rfc3339("2026-11-28T06:40:12.331+01:00")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(stamp(t), "2026-11-28T05:40:12.331Z");
        assert_eq!(parse_stamp(&stamp(t)), Some(t));
        assert_eq!(stamp(parse_stamp(&stamp(t)).unwrap()), stamp(t));
        // Text order is time order, including across a second boundary and whole seconds.
        let a = parse_stamp("2026-11-28T05:40:12.999Z").unwrap();
        let b = parse_stamp("2026-11-28T05:40:13Z").unwrap();
        assert!(stamp(a) < stamp(b));
        assert_eq!(stamp(b), "2026-11-28T05:40:13.000Z");
        assert_eq!(parse_stored(None), None);
        assert_eq!(parse_stored(Some("not a time")), None);
    }

    #[test]
    fn provider_times_in_their_usual_forms() {
        let want = parse_stamp("2026-11-28T05:40:12Z").unwrap();
        for v in [
            json!("2026-11-28T05:40:12Z"),
            json!("2026-11-28T06:40:12+01:00"),
            json!("2026-11-28T05:40:12.000+0000"),
            json!("2026-11-28 05:40:12"),
            json!("1795844412"),
            json!(1795844412),
            json!(1795844412000i64),
        ] {
            assert_eq!(parse_provider(&v), Some(want), "{v}");
        }
        assert_eq!(parse_provider(&json!(true)), None);
        assert_eq!(parse_provider(&json!("yesterday")), None);
    }
}
