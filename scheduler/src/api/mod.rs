//! The control API (axum, JSON): tenants and their tokens, connections, status,
//! resync, pause and resume, runs, credentials, overrides and their preview. Admin token
//! for the host product; tenant-scoped tokens see and trigger only their tenant's
//! connections.
//! Bad input gets a 4xx with a JSON error that says what is wrong.

mod connect;
mod connections;
mod error;
mod overrides;
mod schemas;
mod tenants;
pub mod webhooks;

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::routing::{any, get, post, put};
use axum::Router;
use tributary::bus::{Publisher, Topics};
use tributary::store::Store;

pub use connect::ConnectState;
pub use error::ApiError;

/// The OpenAPI document, committed beside the code and served at `/openapi.json`.
pub const OPENAPI: &str = include_str!("../../openapi.json");

pub struct ApiState {
    pub store: Store,
    pub publisher: Publisher,
    pub topics: Topics,
    pub specs_dir: PathBuf,
    pub admin_token: String,
    /// Runs provider requests the API makes itself (on-demand discovery, previews), with
    /// the workers' settings (the environment's overrides too), budgets and token handling.
    pub syncer: Arc<tributary::sync::Syncer>,
    /// The hosted connect flow's settings and OAuth apps.
    pub connect: ConnectState,
    /// The webhook receiver's publisher and patience.
    pub webhooks: webhooks::WebhookState,
}

pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        // Liveness: the process runs (it waits out store and broker outages by itself).
        .route("/healthz", get(|| async { "ok\n" }))
        // Readiness: 503 with a JSON body naming the unreachable dependency.
        .route("/readyz", get(readyz))
        .route(
            "/metrics",
            get(|| async { tributary::telemetry::prometheus::response() }),
        )
        .route(
            "/openapi.json",
            get(|| async { ([("content-type", "application/json")], OPENAPI) }),
        )
        .route("/v1/tenants", post(tenants::create))
        .route("/v1/tenants/{tenant}/tokens", post(tenants::create_token))
        .route(
            "/v1/connections",
            post(connections::create).get(connections::list),
        )
        .route(
            "/v1/connections/{id}",
            get(connections::show).delete(connections::delete),
        )
        .route("/v1/connections/{id}/resync", post(connections::resync))
        .route("/v1/connections/{id}/pause", post(connections::pause))
        .route("/v1/connections/{id}/resume", post(connections::resume))
        .route("/v1/connections/{id}/runs", get(connections::runs))
        .route("/v1/connections/{id}/schema", get(schemas::show))
        .route("/v1/connections/{id}/discover", post(schemas::discover))
        .route("/v1/connections/{id}/objects", get(schemas::objects))
        .route(
            "/v1/connections/{id}/credentials",
            put(connections::replace_credentials),
        )
        .route(
            "/v1/connections/{id}/overrides",
            get(overrides::show)
                .put(overrides::set)
                .delete(overrides::remove),
        )
        .route(
            "/v1/connections/{id}/preview",
            post(overrides::preview_handler),
        )
        .route("/v1/connect/sessions", post(connect::create_session))
        .route("/v1/connect/sessions/{id}", get(connect::show_session))
        .route("/v1/connect/callback", get(connect::callback))
        .route("/connect/{token}", get(connect::connect_page))
        .route("/connect/{token}/start", get(connect::start))
        .route(
            "/connect/{token}/credentials",
            post(connect::credentials_form),
        )
        .route("/webhooks/{provider}", any(webhooks::app_delivery))
        .route(
            "/webhooks/{provider}/{token}",
            any(webhooks::connection_delivery),
        )
        .layer(axum::extract::DefaultBodyLimit::max(webhooks::BODY_LIMIT))
        .fallback(|| async { ApiError::not_found("no such endpoint; see /openapi.json") })
        .with_state(state)
}

/// 200 when the store and the broker answer, else 503; the body says which is down.
async fn readyz() -> (axum::http::StatusCode, axum::Json<serde_json::Value>) {
    let (ready, body) = tributary::readiness::report();
    let status = if ready {
        axum::http::StatusCode::OK
    } else {
        axum::http::StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body))
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    Admin,
    Tenant(String),
}

impl Caller {
    /// Whether this caller may see the tenant's resources.
    pub fn sees(&self, tenant: &str) -> bool {
        match self {
            Caller::Admin => true,
            Caller::Tenant(t) => t == tenant,
        }
    }

    pub fn require_admin(&self) -> Result<(), ApiError> {
        match self {
            Caller::Admin => Ok(()),
            Caller::Tenant(_) => Err(ApiError::forbidden("this endpoint needs the admin token")),
        }
    }
}

/// Constant-time comparison, so response timing does not reveal the admin token.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

impl FromRequestParts<Arc<ApiState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<ApiState>,
    ) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                ApiError::unauthorized(
                    "send `Authorization: Bearer <token>` (the admin token or a tenant token)",
                )
            })?;
        let token = header
            .strip_prefix("Bearer ")
            .ok_or_else(|| {
                ApiError::unauthorized("the Authorization header must be `Bearer <token>`")
            })?
            .trim();
        if same(token, &state.admin_token) {
            return Ok(Caller::Admin);
        }
        match state.store.token_tenant(token).await {
            Ok(Some(tenant)) => Ok(Caller::Tenant(tenant)),
            Ok(None) => Err(ApiError::unauthorized("unknown token")),
            Err(e) => Err(ApiError::internal(e)),
        }
    }
}
