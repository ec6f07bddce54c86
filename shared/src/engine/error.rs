//! Engine errors: each says which spec, resource and page, and why.

use std::path::PathBuf;
use std::time::Duration;

use crate::http::auth::AuthError;
use crate::http::guard::HostRefused;

/// A run of one resource stopped.
#[derive(Debug, thiserror::Error)]
#[error("{} resource `{resource}`{}: {kind}", spec.display(), at_page(*.page))]
pub struct EngineError {
    pub spec: PathBuf,
    pub resource: String,
    pub page: u32,
    /// Boxed: errors travel in `Result`s on the hot path and should stay small.
    pub kind: Box<ErrorKind>,
}

#[derive(Debug, thiserror::Error)]
pub enum ErrorKind {
    #[error("connection settings: {0}")]
    Config(String),
    #[error("{0}")]
    Host(#[from] HostRefused),
    #[error("invalid URL `{url}`: {message}")]
    Url { url: String, message: String },
    #[error("{0}")]
    Template(String),
    #[error("{0}")]
    Auth(#[from] AuthError),
    #[error("{method} {path} answered {status}{}: the provider refused the credentials; renew them (reconnect the account) and retry", message_suffix(.message))]
    Unauthorized {
        method: &'static str,
        path: String,
        status: u16,
        message: Option<String>,
    },
    #[error("{method} {path} answered {status}{}", message_suffix(.message))]
    Status {
        method: &'static str,
        path: String,
        status: u16,
        message: Option<String>,
    },
    #[error("{method} {path}: still failing after {attempts} attempts: {last}")]
    Exhausted {
        method: &'static str,
        path: String,
        attempts: u32,
        last: String,
    },
    #[error("throttled: the next wait ({}s, from {origin}) is longer than the wait ceiling of {}s; try later, or raise the ceiling (--max-wait)", .asked.as_secs_f64().ceil(), .ceiling.as_secs())]
    WaitTooLong {
        asked: Duration,
        ceiling: Duration,
        origin: &'static str,
    },
    #[error("throttled for {}s in a row on one request, more than the wait ceiling of {}s; try later, or raise the ceiling (--max-wait)", .waited.as_secs(), .ceiling.as_secs())]
    ThrottleStorm { waited: Duration, ceiling: Duration },
    #[error("the body is not JSON ({message}); it starts with: {snippet}")]
    NotJson { message: String, snippet: String },
    #[error("the body is not well-formed XML ({message}); it starts with: {snippet}")]
    NotXml { message: String, snippet: String },
    #[error("{method} {path} answered {status} with a SOAP fault{}: {message}", .code.as_ref().map(|c| format!(" ({c})")).unwrap_or_default())]
    SoapFault {
        method: &'static str,
        path: String,
        status: u16,
        code: Option<String>,
        message: String,
    },
    #[error("`records.path` ({path}) gave {found}, not a list of records")]
    Records { path: String, found: String },
    #[error(
        "the provider sent the same {what} twice ({value}); stopping to avoid an endless loop"
    )]
    RepeatedCursor { what: &'static str, value: String },
    #[error("stopped at the page limit ({max} pages) with more pages left; raise --max-pages to read everything")]
    MaxPages { max: u32 },
    #[error("evaluating `{what}` failed: {message}")]
    Evaluation { what: &'static str, message: String },
    /// Not a failure: the job should park (checkpoint, come back at `until`).
    #[error("rate limited until {}: {reason}", crate::domain::time::human(*.until))]
    RateLimited {
        until: chrono::DateTime<chrono::Utc>,
        reason: String,
        /// The provider throttled (counts towards the circuit breaker), rather than our
        /// own budget being spent.
        throttled: bool,
    },
    #[error("{0}; the job is retried")]
    Ledger(#[from] crate::budget::LedgerError),
}

/// Page 0 means "before the first request".
fn at_page(page: u32) -> String {
    if page == 0 {
        String::new()
    } else {
        format!(", page {page}")
    }
}

fn message_suffix(m: &Option<String>) -> String {
    match m {
        Some(m) => format!(" ({m})"),
        None => String::new(),
    }
}

impl ErrorKind {
    /// A failure that may pass by itself (the provider is down or throttling): it counts
    /// towards the connection's circuit breaker.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ErrorKind::Exhausted { .. }
                | ErrorKind::ThrottleStorm { .. }
                | ErrorKind::WaitTooLong { .. }
        )
    }

    /// The provider refused the credentials for good: the connection needs re-authorization
    /// (new credentials) before any further sync can work.
    pub fn needs_reauth(&self) -> bool {
        matches!(
            self,
            ErrorKind::Unauthorized { .. }
                | ErrorKind::Auth(AuthError::InvalidGrant(_))
                | ErrorKind::Auth(AuthError::Missing(_))
        )
    }
}
