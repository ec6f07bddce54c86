//! What the engine reports while it works (progress on a terminal, metrics in a worker).

use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub enum EngineEvent {
    /// A page arrived.
    Page {
        page: u32,
        records: usize,
        bytes: usize,
    },
    /// Waiting before a request: for the budget, or because the provider throttled.
    Waiting {
        page: u32,
        wait: Duration,
        reason: String,
    },
    /// A transient failure; the request goes again after `wait`.
    Retrying {
        page: u32,
        attempt: u32,
        wait: Duration,
        reason: String,
    },
    /// A new access token came from the token endpoint.
    TokenRefreshed {
        rotated_refresh_token: bool,
        expires_in_seconds: i64,
    },
    /// Something the user should know that does not stop the run.
    Warning(String),
}

/// Receives engine events.
pub type Observer = std::sync::Arc<dyn Fn(&EngineEvent) + Send + Sync>;

pub fn ignore_events() -> Observer {
    std::sync::Arc::new(|_| {})
}
