//! The sandbox as an HTTP server: the control API's routes, every other
//! request to the provider routes, and the handle that stops it when dropped.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::routing::{delete, get, post};
use axum::Router;

use crate::profile::Profile;
use crate::state::Sandbox;
use crate::{control, routes, subscriptions, webhooks, SandboxError};

/// A running sandbox.
pub struct SandboxHandle {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl SandboxHandle {
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for SandboxHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The router over one sandbox's state.
pub fn router(sandbox: Arc<Sandbox>) -> Router {
    Router::new()
        .route("/_sandbox/stats", get(control::stats))
        .route(
            "/_sandbox/faults",
            post(control::set_faults).delete(control::clear_faults),
        )
        .route("/_sandbox/resources/{name}", get(control::list_resource))
        .route("/_sandbox/resources/{name}/mutate", post(control::mutate))
        .route(
            "/_sandbox/resources/{name}/fields",
            get(control::list_fields).post(control::add_field),
        )
        .route(
            "/_sandbox/resources/{name}/fields/{field}",
            delete(control::remove_field),
        )
        .route("/_sandbox/oauth/revoke", post(control::revoke))
        .route("/_sandbox/oauth/expire", post(control::expire))
        .route("/_sandbox/webhooks/send", post(webhooks::send))
        .route("/_sandbox/webhooks/release", post(webhooks::release))
        .route(
            "/_sandbox/webhooks/subscriptions",
            get(subscriptions::list_control),
        )
        .fallback(routes::provider)
        .with_state(sandbox)
}

/// Start serving a profile on `addr` (port 0 picks a free port).
pub async fn start(profile: Profile, addr: SocketAddr) -> Result<SandboxHandle, SandboxError> {
    let sandbox = Arc::new(Sandbox::new(profile)?);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| SandboxError::Bind { addr, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| SandboxError::Bind { addr, source })?;
    let app = router(sandbox);
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(SandboxHandle { addr, task })
}
