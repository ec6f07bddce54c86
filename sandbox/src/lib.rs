//! The sandbox provider: an HTTP server with deterministic generated data that
//! imitates a provider's API as a profile (YAML) describes it, as strictly as the
//! real API answers. Tests and the standalone demo run against it.
//!
//! One module per job: `profile` (the format), `data` (generated records),
//! `compile` (a profile's expressions and route tables, compiled once), `state`
//! (the records and counters a running sandbox holds), `routes` (dispatch of data
//! requests), `paging` (paging inputs, cursors, the page answer), `select` (which
//! fields a request gets) with `soql` (the SELECT parser), `auth` (data request
//! credentials) with `oauth1` (OAuth 1.0a signatures, verified), `oauth` (the token endpoint and identity endpoints), `authorize` (the consent
//! page and authorization codes, PKCE), `throttle` (the sandbox's own
//! budget), `faults` (failures on demand), `control` (the `/_sandbox/` API),
//! `fields` (a resource's fields as they are now, and generated custom values),
//! `describe` (the describe endpoints, `schema_routes`), `respond` (JSON
//! answers), `webhooks` (signed deliveries the sandbox sends, as the profile's
//! `webhooks` section declares them) with `subscriptions` (webhook subscriptions
//! registered through the provider's API) and `server` (the router, `start`). The public API is the profile
//! format, `start`, the handle, and the control API's types.

mod auth;
mod authorize;
mod compile;
mod control;
mod data;
mod describe;
mod faults;
mod fields;
mod oauth;
mod oauth1;
mod paging;
pub mod profile;
mod respond;
mod routes;
mod select;
mod server;
mod soql;
mod state;
mod subscriptions;
mod throttle;
pub mod webhooks;

use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};

pub use control::Stats;
pub use faults::{Fault, FaultKind};
pub use profile::Profile;
pub use server::{start, SandboxHandle};

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("{file}: {message}")]
    Profile { file: String, message: String },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Lock shared sandbox state. A handler that panicked while holding a lock left
/// counters or records at worst half-updated, which a test double can live with:
/// later requests go on instead of panicking in turn.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
