//! `POST /v1/tenants`, `POST /v1/tenants/{tenant}/tokens` (admin only).

use std::sync::{Arc, LazyLock};

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use regex::Regex;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{ApiError, ApiState, Caller};

static ID: LazyLock<Regex> =
    LazyLock::new(|| Regex::new("^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$").expect("valid regex"));

/// Ids are used in topic keys and URLs: keep them plain.
pub fn check_id(what: &str, id: &str) -> Result<(), ApiError> {
    if ID.is_match(id) {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "{what} id `{id}` is not valid: use 1 to 64 letters, digits, `_`, `.` or `-`, starting with a letter or digit"
        )))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTenant {
    id: String,
}

pub async fn create(
    caller: Caller,
    State(state): State<Arc<ApiState>>,
    body: Result<Json<NewTenant>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require_admin()?;
    let Json(body) = body?;
    check_id("tenant", &body.id)?;
    state.store.create_tenant(&body.id).await?;
    tracing::info!(tenant = %body.id, "tenant created");
    Ok((StatusCode::CREATED, Json(json!({"id": body.id}))))
}

pub async fn create_token(
    caller: Caller,
    State(state): State<Arc<ApiState>>,
    Path(tenant): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require_admin()?;
    let token = state.store.create_token(&tenant).await?;
    tracing::info!(%tenant, "tenant token issued");
    Ok((
        StatusCode::CREATED,
        Json(json!({"token": token, "tenant": tenant})),
    ))
}
