//! Engine events as progress lines on stderr.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tributary::engine::{EngineEvent, Observer};

/// Counts and prints what the engine reports.
#[derive(Default)]
pub struct Progress {
    pub records: AtomicU64,
    pub pages: AtomicU64,
    pub quiet: bool,
}

impl Progress {
    pub fn observer(self: &Arc<Self>) -> Observer {
        let me = self.clone();
        Arc::new(move |event: &EngineEvent| me.on_event(event))
    }

    fn on_event(&self, event: &EngineEvent) {
        match event {
            EngineEvent::Page {
                page,
                records,
                bytes,
            } => {
                self.pages.fetch_add(1, Ordering::Relaxed);
                let total =
                    self.records.fetch_add(*records as u64, Ordering::Relaxed) + *records as u64;
                if !self.quiet {
                    eprintln!(
                        "page {page}: {records} records ({:.1} KB), {total} so far",
                        *bytes as f64 / 1024.0
                    );
                }
            }
            EngineEvent::Waiting { page, wait, reason } => {
                eprintln!("page {page}: waiting {:.1}s: {reason}", wait.as_secs_f64());
            }
            EngineEvent::Retrying {
                page,
                attempt,
                wait,
                reason,
            } => {
                eprintln!(
                    "page {page}: attempt {attempt} failed ({reason}); retrying in {:.1}s",
                    wait.as_secs_f64()
                );
            }
            EngineEvent::TokenRefreshed {
                rotated_refresh_token,
                expires_in_seconds,
            } => {
                eprintln!(
                    "access token refreshed (valid {expires_in_seconds}s){}",
                    if *rotated_refresh_token {
                        "; the provider rotated the refresh token"
                    } else {
                        ""
                    }
                );
            }
            EngineEvent::Warning(w) => eprintln!("warning: {w}"),
        }
    }
}
