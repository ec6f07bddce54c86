//! `POST /v1/connect/sessions` (admin token) mints a session for one tenant;
//! `GET /v1/connect/sessions/{id}` shows where it is. Everything a session names is
//! checked when it is created, so its user never meets a broken page: the tenant, the
//! providers and resources, the connection to re-authorize, the return URL's origin and,
//! for OAuth providers, an app to connect with.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tributary::store::{NewConnectSession, StoreError};

use super::super::connections::{chosen_resources, provider_spec};
use super::super::tenants::check_id;
use super::super::{ApiError, ApiState, Caller};

/// One provider, or a list the user chooses from.
#[derive(Deserialize)]
#[serde(untagged)]
enum Providers {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSessionBody {
    tenant: String,
    provider: Providers,
    resources: Option<Vec<String>>,
    return_url: String,
    #[serde(default)]
    config: Map<String, Value>,
    /// Re-authorize this connection (its provider must be the session's).
    connection: Option<String>,
}

pub async fn create(
    caller: Caller,
    State(state): State<Arc<ApiState>>,
    body: Result<Json<NewSessionBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require_admin()?;
    let Json(body) = body?;
    let public_url = state.connect.public_url().ok_or_else(|| {
        ApiError::conflict(
            "connect sessions need TRIBUTARY_PUBLIC_URL (where browsers reach this scheduler)",
        )
    })?;
    check_id("tenant", &body.tenant)?;
    if !state.store.tenant_exists(&body.tenant).await? {
        return Err(ApiError::not_found(format!(
            "tenant `{}` does not exist; create it with POST /v1/tenants",
            body.tenant
        )));
    }
    let providers = match body.provider {
        Providers::One(p) => vec![p],
        Providers::Many(list) if list.is_empty() => {
            return Err(ApiError::bad_request(
                "provider: name one provider, or a list of them",
            ))
        }
        Providers::Many(list) => list,
    };
    for provider in &providers {
        check_provider(
            &state,
            &body.tenant,
            provider,
            &body.resources,
            providers.len(),
        )?;
    }
    check_return_url(&state, &body.return_url)?;
    if let Some(id) = &body.connection {
        check_reauthorization(&state, &body.tenant, id, &providers).await?;
    }
    let (session, token) = state
        .store
        .create_connect_session(&NewConnectSession {
            tenant: body.tenant.clone(),
            providers,
            resources: body.resources,
            return_url: body.return_url,
            config: body.config,
            reauthorize: body.connection,
            ttl: state.connect.settings.session_ttl,
        })
        .await?;
    tracing::info!(tenant = %session.tenant, session = %session.id, "connect session created");
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "id": session.id,
            "url": format!("{public_url}/connect/{token}"),
            "expires_at": session.expires_at,
        })),
    ))
}

/// The provider exists, its resources are known (when one provider is offered), and an
/// OAuth provider has an app for this tenant.
fn check_provider(
    state: &ApiState,
    tenant: &str,
    provider: &str,
    resources: &Option<Vec<String>>,
    offered: usize,
) -> Result<(), ApiError> {
    check_id("provider", provider)?;
    let spec = provider_spec(state, provider)?;
    if offered == 1 {
        chosen_resources(&spec, provider, resources.clone())?;
    }
    let connect = spec.spec.connect.as_ref();
    let oauth = spec.authorize.is_some();
    if oauth && state.connect.apps.for_tenant(tenant, provider).is_none() {
        return Err(ApiError::bad_request(format!(
            "no OAuth app for {provider}: add its client id and secret under `apps.{provider}` (or `tenants.{tenant}.{provider}`) in TRIBUTARY_APPS_FILE"
        )));
    }
    if !oauth && connect.is_none_or(|c| c.fields.is_empty()) {
        return Err(ApiError::bad_request(format!(
            "{provider} cannot be connected through a connect page: its spec has no `connect` section"
        )));
    }
    Ok(())
}

/// The return URL's origin must be one of TRIBUTARY_CONNECT_RETURN_ORIGINS: the flow
/// never redirects anywhere else.
fn check_return_url(state: &ApiState, return_url: &str) -> Result<(), ApiError> {
    let url = url::Url::parse(return_url)
        .map_err(|e| ApiError::bad_request(format!("return_url `{return_url}`: {e}")))?;
    let origin = url.origin().ascii_serialization();
    let allowed = &state.connect.settings.return_origins;
    if !allowed.iter().any(|o| o.trim_end_matches('/') == origin) {
        return Err(ApiError::bad_request(format!(
            "return_url's origin {origin} is not allowed; allowed origins (TRIBUTARY_CONNECT_RETURN_ORIGINS): {}",
            if allowed.is_empty() { "none".to_string() } else { allowed.join(", ") }
        )));
    }
    Ok(())
}

async fn check_reauthorization(
    state: &ApiState,
    tenant: &str,
    id: &str,
    providers: &[String],
) -> Result<(), ApiError> {
    let missing = || {
        ApiError::not_found(format!(
            "connection `{id}` does not exist for tenant `{tenant}`"
        ))
    };
    let conn = match state.store.connection(id).await {
        Ok(c) => c,
        Err(StoreError::NotFound { .. }) => return Err(missing()),
        Err(e) => return Err(ApiError::internal(e)),
    };
    if conn.tenant != tenant {
        return Err(missing());
    }
    if providers != [conn.provider.clone()] {
        return Err(ApiError::bad_request(format!(
            "connection `{id}` is a {} connection: re-authorize it with provider `{}` alone",
            conn.provider, conn.provider
        )));
    }
    Ok(())
}

pub async fn show(
    caller: Caller,
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let not_found = || ApiError::not_found(format!("connect session `{id}` does not exist"));
    let session = match state.store.connect_session(&id).await {
        Ok(s) => s,
        Err(StoreError::NotFound { .. }) => return Err(not_found()),
        Err(e) => return Err(ApiError::internal(e)),
    };
    if !caller.sees(&session.tenant) {
        return Err(not_found());
    }
    Ok(Json(
        serde_json::to_value(&session).map_err(ApiError::internal)?,
    ))
}
