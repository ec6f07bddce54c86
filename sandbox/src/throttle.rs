//! The sandbox's own budget (`rate_limit`): a fixed window from its first
//! request, or a sliding log; requests over it get the profile's throttle
//! answer and are counted. Also the rate headers every data answer carries.

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime};

use axum::response::Response;
use serde_json::json;

use crate::lock;
use crate::respond::{json_response, text};
use crate::state::Sandbox;

/// Requests counted against the budget.
pub struct Window {
    started: Instant,
    used: u32,
    /// Accepted requests of the last `per_seconds` (sliding windows only).
    log: VecDeque<Instant>,
}

impl Window {
    pub fn new() -> Window {
        Window {
            started: Instant::now(),
            used: 0,
            log: VecDeque::new(),
        }
    }
}

impl Default for Window {
    fn default() -> Self {
        Window::new()
    }
}

/// The throttle answer when this request is over the sandbox's budget.
pub fn over_budget(s: &Sandbox) -> Option<Response> {
    let rl = s.profile.rate_limit.as_ref()?;
    let mut w = lock(&s.window);
    let period = Duration::from_secs_f64(rl.per_seconds);
    let now = Instant::now();
    let wait = if rl.sliding {
        while w
            .log
            .front()
            .is_some_and(|t| now.duration_since(*t) >= period)
        {
            w.log.pop_front();
        }
        if w.log.len() < rl.requests as usize {
            w.log.push_back(now);
            return None;
        }
        period.saturating_sub(now.duration_since(w.log[0]))
    } else {
        if w.started.elapsed() >= period {
            w.started = now;
            w.used = 0;
        }
        if w.used < rl.requests {
            w.used += 1;
            return None;
        }
        period.saturating_sub(w.started.elapsed())
    };
    drop(w);
    let mut st = lock(&s.stats);
    st.over_budget += 1;
    st.throttled += 1;
    drop(st);
    Some(answer(s, wait))
}

/// The throttle answer asking for `wait`: the profile's, or a plain 429 with
/// Retry-After when the profile has no budget.
pub fn answer(s: &Sandbox, wait: Duration) -> Response {
    let reset = SystemTime::now() + wait;
    let reset_ms = epoch_millis(reset);
    let wait_seconds = wait.as_secs_f64().ceil() as u64;
    let ctx = json!({
        "wait_seconds": wait_seconds,
        "wait_millis": wait.as_millis() as u64,
        "reset_epoch_seconds": reset_ms.div_ceil(1000),
        "reset_epoch_millis": reset_ms,
        "http_date": httpdate::fmt_http_date(reset + Duration::from_secs(1)),
    });
    match &s.compiled.throttle {
        Some(a) => a.render(&ctx),
        None => json_response(
            429,
            &json!({"error": "rate limited"}),
            vec![("Retry-After".into(), wait_seconds.to_string())],
        ),
    }
}

/// The profile's `headers` over `{limit, remaining, reset_epoch_seconds}`.
pub fn rate_headers(s: &Sandbox) -> Vec<(String, String)> {
    if s.compiled.global_headers.is_empty() {
        return Vec::new();
    }
    let (limit, remaining, reset) = match &s.profile.rate_limit {
        Some(rl) => {
            let w = lock(&s.window);
            let reset = SystemTime::now()
                + Duration::from_secs_f64(rl.per_seconds).saturating_sub(w.started.elapsed());
            let used = if rl.sliding {
                w.log.len() as u32
            } else {
                w.used
            };
            (rl.requests, rl.requests.saturating_sub(used), reset)
        }
        None => (1000, 1000, SystemTime::now()),
    };
    // Rounded up: a client waiting until this second never arrives before the reset.
    let reset_s = epoch_millis(reset).div_ceil(1000);
    let ctx = json!({"limit": limit, "remaining": remaining, "reset_epoch_seconds": reset_s});
    s.compiled
        .global_headers
        .iter()
        .filter_map(|(k, e)| Some((k.clone(), text(&e.eval_json(&ctx).ok()??))))
        .collect()
}

pub(crate) fn epoch_millis(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
