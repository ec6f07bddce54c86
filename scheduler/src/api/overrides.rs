//! A connection's overrides (the top layer over its provider's spec and the environment's
//! overlay): show, set, remove, and preview before setting. Setting validates everything
//! first (the layer compiles over the spec, and each overridden resource's first page,
//! read live, maps into valid records); a refused layer leaves the stored one in force.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use tributary::bus::StatusEvent;
use tributary::domain::time::stamp;
use tributary::spec::overrides::{compile_with, render_problems, Overrides};
use tributary::spec::{load_layered, CompiledSpec};
use tributary::store::{ConnectionRecord, StoredOverrides};
use tributary::sync::preview::{Preview, PreviewError};

use super::connections::visible;
use super::{ApiError, ApiState, Caller};

/// Records a preview returns unless asked for another number.
const DEFAULT_LIMIT: usize = 10;
const MAX_LIMIT: usize = 100;

fn shown(conn: &ConnectionRecord, stored: &StoredOverrides) -> Value {
    json!({
        "connection": conn.id,
        "version": stored.version,
        "overrides": stored.overrides,
        "updated_at": stored.updated_at.map(stamp),
    })
}

pub async fn show(
    caller: Caller,
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let conn = visible(&state, &caller, &id).await?;
    let stored = state.store.connection_overrides(&conn.id).await?;
    Ok(Json(shown(&conn, &stored)))
}

/// Replace the connection's overrides, once they compile and preview cleanly.
pub async fn set(
    caller: Caller,
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
    body: Result<Json<Overrides>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let conn = visible(&state, &caller, &id).await?;
    let Json(layer) = body?;
    let spec = effective(&state, &conn, &layer)?;
    for resource in layer.resources.keys() {
        let found = preview(&state, &conn, spec.clone(), resource, 0)
            .await
            .map_err(|mut e| {
                e.message.push_str("; nothing was changed");
                e
            })?;
        if let Some(v) = found.violations.first() {
            return Err(ApiError::bad_request(format!(
                "resource `{resource}`: {} of the {} records of the first page do not map into a valid {} record with these overrides (nothing was changed); record {}: {}",
                found.violations.len(),
                found.page_records,
                found.model,
                v.id.as_deref().unwrap_or("without an id"),
                v.message
            )));
        }
    }
    let value = serde_json::to_value(&layer).expect("overrides serialize");
    let version = state
        .store
        .set_connection_overrides(&conn.id, Some(&value))
        .await?;
    announce(&state, &conn, version, false).await?;
    tracing::info!(connection = %id, version, "overrides set");
    let stored = state.store.connection_overrides(&conn.id).await?;
    Ok(Json(shown(&conn, &stored)))
}

pub async fn remove(
    caller: Caller,
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let conn = visible(&state, &caller, &id).await?;
    let version = state.store.set_connection_overrides(&conn.id, None).await?;
    announce(&state, &conn, version, true).await?;
    tracing::info!(connection = %id, version, "overrides removed");
    let stored = state.store.connection_overrides(&conn.id).await?;
    Ok(Json(shown(&conn, &stored)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreviewBody {
    resource: String,
    /// Proposed connection overrides; without them, the stored ones.
    overrides: Option<Overrides>,
    limit: Option<usize>,
}

/// The first page of a resource mapped with proposed (or the stored) overrides; nothing
/// is published or stored.
pub async fn preview_handler(
    caller: Caller,
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
    body: Result<Json<PreviewBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let conn = visible(&state, &caller, &id).await?;
    let Json(body) = body?;
    let limit = body.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit must be between 1 and {MAX_LIMIT}"
        )));
    }
    let stored = state.store.connection_overrides(&conn.id).await?;
    let (layer, version) = match body.overrides {
        Some(proposed) => (proposed, None),
        None => (stored_layer(&stored)?, Some(stored.version)),
    };
    let spec = effective(&state, &conn, &layer)?;
    let found = preview(&state, &conn, spec, &body.resource, limit).await?;
    let mut out = serde_json::to_value(&found).expect("previews serialize");
    out["overrides_version"] = json!(version);
    Ok(Json(out))
}

fn stored_layer(stored: &StoredOverrides) -> Result<Overrides, ApiError> {
    match &stored.overrides {
        None => Ok(Overrides::default()),
        Some(v) => serde_json::from_value(v.clone()).map_err(ApiError::internal),
    }
}

/// The provider's spec with the environment's overlay and `layer` on top; a layer that
/// does not compile is the caller's to fix (400, naming resource, field and problem).
fn effective(
    state: &ApiState,
    conn: &ConnectionRecord,
    layer: &Overrides,
) -> Result<Arc<CompiledSpec>, ApiError> {
    let settings = state.syncer.settings();
    let base = load_layered(
        &state.specs_dir,
        settings.overrides_dir.as_deref(),
        &conn.provider,
    )
    .map_err(ApiError::internal)?;
    if layer.is_empty() {
        return Ok(base);
    }
    compile_with(&base, layer)
        .map(Arc::new)
        .map_err(|problems| ApiError::bad_request(render_problems(&problems)))
}

async fn preview(
    state: &ApiState,
    conn: &ConnectionRecord,
    spec: Arc<CompiledSpec>,
    resource: &str,
    limit: usize,
) -> Result<Preview, ApiError> {
    state
        .syncer
        .preview(conn, spec, resource, limit)
        .await
        .map_err(|e| match e {
            PreviewError::UnknownResource { .. } => ApiError::bad_request(e.to_string()),
            PreviewError::Read { .. } => ApiError::bad_gateway(e.to_string()),
            PreviewError::Store(e) => ApiError::internal(e),
        })
}

/// `connection.overrides_changed` on the status topic.
async fn announce(
    state: &ApiState,
    conn: &ConnectionRecord,
    version: i64,
    removed: bool,
) -> Result<(), ApiError> {
    let event = StatusEvent::overrides_changed(
        &conn.tenant,
        &conn.id,
        &conn.provider,
        version,
        removed,
        chrono::Utc::now(),
    );
    state
        .publisher
        .publish_all(&[event.to_message(&state.topics)])
        .await
        .map_err(ApiError::unavailable)
}
