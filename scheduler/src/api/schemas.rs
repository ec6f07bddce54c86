//! A connection's discovered schemas: `GET .../schema` shows them, `POST .../discover`
//! discovers them now (the provider is asked at once, through the connection's budgets);
//! `GET .../objects` lists the account's custom objects.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::Json;
use serde_json::{json, Value};
use tributary::domain::time::stamp;
use tributary::store::StoredSchema;

use super::connections::visible;
use super::{ApiError, ApiState, Caller};

/// Per subject: when it was discovered, whether the last attempt failed (the last good
/// schema stays in use), how many fields, and the custom ones. Shown with the connection.
pub fn summaries(schemas: &[StoredSchema]) -> Value {
    Value::Array(
        schemas
            .iter()
            .map(|s| {
                json!({
                    "subject": s.subject,
                    "status": if s.error.is_some() { "stale" } else { "current" },
                    "discovered_at": s.discovered_at.map(stamp),
                    "checked_at": s.checked_at.map(stamp),
                    "error": s.error,
                    "fields": s.schema.fields.len(),
                    "custom_fields": s.schema.custom(),
                })
            })
            .collect(),
    )
}

/// `GET /v1/connections/{id}/schema`: every discovered field of every subject.
pub async fn show(
    caller: Caller,
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let conn = visible(&state, &caller, &id).await?;
    let schemas = state.store.schemas(&conn.id).await?;
    let out: Vec<Value> = schemas
        .iter()
        .map(|s| {
            json!({
                "subject": s.subject,
                "discovered_at": s.discovered_at.map(stamp),
                "checked_at": s.checked_at.map(stamp),
                "error": s.error,
                "fields": s.schema.fields,
            })
        })
        .collect();
    Ok(Json(json!({"connection": conn.id, "schemas": out})))
}

/// `POST /v1/connections/{id}/discover`: discover now; changes go out as
/// `connection.schema_changed`, and the next sync reads with the new schema.
pub async fn discover(
    caller: Caller,
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let conn = visible(&state, &caller, &id).await?;
    let reports = state
        .syncer
        .discover_connection(&conn)
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::bad_request)?;
    Ok(Json(json!({"connection": conn.id, "discovered": reports})))
}

/// `GET /v1/connections/{id}/objects`: the account's custom objects (ask the provider now),
/// each named as a connection's resources name it (`custom:<name>`).
pub async fn objects(
    caller: Caller,
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let conn = visible(&state, &caller, &id).await?;
    let objects = state
        .syncer
        .custom_objects(&conn)
        .await
        .map_err(ApiError::bad_gateway)?
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "the {} spec declares no custom objects",
                conn.provider
            ))
        })?;
    let listed: Vec<Value> = objects
        .iter()
        .map(
            |o| json!({"name": o.name, "label": o.label, "resource": format!("custom:{}", o.name)}),
        )
        .collect();
    Ok(Json(json!({"connection": conn.id, "objects": listed})))
}
