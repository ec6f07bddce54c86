//! Connections: create, show (state and last runs), list, resync, pause, resume,
//! runs, credentials. Credentials are written, never returned.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tributary::bus::{Job, JobReason};
use tributary::domain::time::stamp;
use tributary::domain::{ConnectionState, RunCounts, RunMode, RunStatus};
use tributary::schedule::tick::job_message;
use tributary::schedule::{parse_timezone, Cadence};
use tributary::secrets::Credentials;
use tributary::spec::{load_layered, OverlayError, SpecError};
use tributary::store::{ConnectionRecord, NewConnection, RunRecord};

use super::tenants::check_id;
use super::{ApiError, ApiState, Caller};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewConnectionBody {
    tenant: String,
    provider: String,
    #[serde(default)]
    config: Map<String, Value>,
    #[serde(default)]
    credentials: Map<String, Value>,
    resources: Option<Vec<String>>,
    schedule: Option<String>,
    full_schedule: Option<String>,
    timezone: Option<String>,
    /// The account's id at the provider (a portal or realm id): app-level webhooks are
    /// routed by it. The connect flow captures it by itself.
    external_id: Option<String>,
}

fn credentials_from(map: Map<String, Value>) -> Result<Credentials, ApiError> {
    for (k, v) in &map {
        if !(v.is_string() || v.is_null()) {
            return Err(ApiError::bad_request(format!(
                "credentials.{k} must be a string"
            )));
        }
    }
    serde_json::from_value(Value::Object(map))
        .map_err(|_| ApiError::bad_request("credentials must be an object of strings"))
}

fn check_schedule(field: &str, expr: &Option<String>) -> Result<(), ApiError> {
    if let Some(e) = expr {
        e.parse::<Cadence>()
            .map_err(|m| ApiError::bad_request(format!("{field}: {m}")))?;
    }
    Ok(())
}

pub async fn create(
    caller: Caller,
    State(state): State<Arc<ApiState>>,
    body: Result<Json<NewConnectionBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Json(body) = body?;
    check_id("tenant", &body.tenant)?;
    if !caller.sees(&body.tenant) {
        return Err(ApiError::forbidden(
            "a tenant token can only create connections for its own tenant",
        ));
    }
    if !state.store.tenant_exists(&body.tenant).await? {
        return Err(ApiError::not_found(format!(
            "tenant `{}` does not exist; create it with POST /v1/tenants",
            body.tenant
        )));
    }
    check_id("provider", &body.provider)?;
    let spec = provider_spec(&state, &body.provider)?;
    let resources = chosen_resources(&spec, &body.provider, body.resources)?;
    check_schedule("schedule", &body.schedule)?;
    check_schedule("full_schedule", &body.full_schedule)?;
    let timezone = body.timezone.unwrap_or_else(|| "UTC".into());
    parse_timezone(&timezone).map_err(|m| ApiError::bad_request(format!("timezone: {m}")))?;
    for (name, field) in &spec.spec.config {
        if field.required
            && field.default.is_none()
            && !body.config.contains_key(name)
            && !body.config.contains_key("base_url")
        {
            let about = field
                .description
                .as_deref()
                .map(|d| format!(" ({d})"))
                .unwrap_or_default();
            return Err(ApiError::bad_request(format!(
                "config.{name} is required by {}{about}",
                body.provider
            )));
        }
    }
    let credentials = credentials_from(body.credentials)?;
    let id = state
        .store
        .create_connection(&NewConnection {
            id: None,
            tenant: body.tenant.clone(),
            provider: body.provider.clone(),
            config: body.config,
            credentials,
            resources,
            schedule: body.schedule,
            full_schedule: body.full_schedule,
            timezone,
            external_id: body.external_id.filter(|e| !e.trim().is_empty()),
        })
        .await?;
    tracing::info!(tenant = %body.tenant, connection = %id, provider = %body.provider, "connection created");
    let mut answer = json!({"id": id});
    if let Some(channel) = super::webhooks::open_channel(&state, &id).await {
        answer["webhooks"] = channel;
    }
    Ok((StatusCode::CREATED, Json(answer)))
}

#[derive(Debug, Default, Deserialize)]
pub struct DeleteQuery {
    /// Delete even when the provider would not remove the webhook subscription.
    #[serde(default)]
    force: bool,
}

/// Delete a connection: its webhook subscription removed at the provider first (a
/// provider that refuses answers 502 and nothing is deleted, unless `force=true`), then
/// everything stored for it.
pub async fn delete(
    caller: Caller,
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
    Query(query): Query<DeleteQuery>,
) -> Result<StatusCode, ApiError> {
    let conn = visible(&state, &caller, &id).await?;
    if let Err(e) = state.syncer.close_webhooks(&conn.id).await {
        if !query.force {
            return Err(ApiError::bad_gateway(format!(
                "{e}; nothing was deleted: retry, or pass force=true to delete the connection \
                 and leave the subscription at the provider"
            )));
        }
        tracing::warn!(connection = %conn.id, error = %e, "webhook subscription left at the provider (force)");
    }
    state.store.delete_connection(&conn.id).await?;
    tracing::info!(tenant = %conn.tenant, connection = %conn.id, provider = %conn.provider, "connection deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// A provider's spec as this environment layers it; an unknown provider is a 400 that
/// lists the known ones.
pub(super) fn provider_spec(
    state: &ApiState,
    provider: &str,
) -> Result<std::sync::Arc<tributary::spec::CompiledSpec>, ApiError> {
    let specs_dir = &state.specs_dir;
    let overlays = state.syncer.settings().overrides_dir.as_deref();
    load_layered(specs_dir, overlays, provider).map_err(|e| match e {
        OverlayError::Spec(SpecError::Io { .. }) => {
            let mut known: Vec<String> = std::fs::read_dir(specs_dir)
                .map(|d| {
                    d.filter_map(|e| e.ok())
                        .filter_map(|e| {
                            e.file_name()
                                .to_str()
                                .and_then(|n| n.strip_suffix(".yaml"))
                                .map(String::from)
                        })
                        .collect()
                })
                .unwrap_or_default();
            known.sort();
            ApiError::bad_request(format!(
                "unknown provider `{provider}`; known providers: {}",
                known.join(", ")
            ))
        }
        other => ApiError::internal(other),
    })
}

/// The resources asked for (all of the provider's when none is named), each checked.
pub(super) fn chosen_resources(
    spec: &tributary::spec::CompiledSpec,
    provider: &str,
    asked: Option<Vec<String>>,
) -> Result<Vec<String>, ApiError> {
    match asked {
        None => Ok(spec.resources.keys().cloned().collect()),
        Some(r) if r.is_empty() => Err(ApiError::bad_request(
            "resources is empty; leave it out to sync all of the provider's resources",
        )),
        Some(r) => {
            for name in &r {
                if spec.resource(name).is_none() {
                    let mut known: Vec<&str> = spec.resources.keys().map(String::as_str).collect();
                    if spec.custom_objects.is_some() {
                        known.push("custom:<object name>");
                    }
                    return Err(ApiError::bad_request(format!(
                        "{provider} has no resource `{name}`; it has: {}",
                        known.join(", ")
                    )));
                }
            }
            Ok(r)
        }
    }
}

/// The connection if the caller may see it; otherwise 404 (not 403: ids of other
/// tenants' connections are not confirmed to exist).
pub(super) async fn visible(
    state: &ApiState,
    caller: &Caller,
    id: &str,
) -> Result<ConnectionRecord, ApiError> {
    let not_found = || ApiError::not_found(format!("connection `{id}` does not exist"));
    let conn = match state.store.connection(id).await {
        Ok(c) => c,
        Err(tributary::store::StoreError::NotFound { .. }) => return Err(not_found()),
        Err(e) => return Err(ApiError::internal(e)),
    };
    if caller.sees(&conn.tenant) {
        Ok(conn)
    } else {
        Err(not_found())
    }
}

/// What the API shows of a connection, given the latest run of each of its resources.
fn describe(conn: &ConnectionRecord, runs: &[RunRecord]) -> Value {
    let mut last_runs = BTreeMap::new();
    for r in runs {
        last_runs.insert(
            r.resource.clone(),
            serde_json::to_value(r).expect("runs serialize"),
        );
    }
    for res in &conn.resources {
        last_runs.entry(res.clone()).or_insert(Value::Null);
    }
    let failed = runs.iter().find(|r| r.status == RunStatus::Failed);
    // A healthy connection shows what its runs are doing: one running, or the latest failed.
    let (state_name, message) = match conn.state {
        ConnectionState::Healthy if runs.iter().any(|r| r.status == RunStatus::Running) => {
            (ConnectionState::Syncing, None)
        }
        ConnectionState::Healthy if failed.is_some() => {
            (ConnectionState::Error, failed.and_then(|r| r.error.clone()))
        }
        other => (other, conn.state_message.clone()),
    };
    let mut totals = RunCounts::default();
    for r in runs {
        totals.created += r.counts.created;
        totals.updated += r.counts.updated;
        totals.deleted += r.counts.deleted;
        totals.dead_lettered += r.counts.dead_lettered;
        totals.records += r.counts.records;
    }
    json!({
        "id": conn.id,
        "tenant": conn.tenant,
        "provider": conn.provider,
        "external_id": conn.external_id,
        "config": conn.config,
        "credentials": {"fields": conn.credentials.field_names().collect::<Vec<_>>()},
        "resources": conn.resources,
        "schedule": conn.schedule,
        "full_schedule": conn.full_schedule,
        "timezone": conn.timezone,
        "state": state_name,
        "state_message": message,
        "resume_at": conn
            .blocked_until
            .filter(|t| *t > chrono::Utc::now())
            .map(stamp),
        "last_runs": last_runs,
        "counts": totals,
    })
}

pub async fn show(
    caller: Caller,
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let conn = visible(&state, &caller, &id).await?;
    let runs = state.store.last_runs(&conn.id).await?;
    let mut shown = describe(&conn, &runs);
    let schemas = state.store.schemas(&conn.id).await?;
    shown["schemas"] = super::schemas::summaries(&schemas);
    // The webhook channel: last verified delivery, counts, the last refusal's reason.
    shown["webhooks"] = json!(state.store.channel_health(&conn.id).await?);
    Ok(Json(shown))
}

/// Two queries whatever the number of connections: the connections, then their last runs.
pub async fn list(
    caller: Caller,
    State(state): State<Arc<ApiState>>,
) -> Result<Json<Value>, ApiError> {
    let tenant = match &caller {
        Caller::Admin => None,
        Caller::Tenant(t) => Some(t.as_str()),
    };
    let connections = state.store.connections(tenant).await?;
    let mut runs: HashMap<String, Vec<RunRecord>> = HashMap::new();
    for r in state.store.last_runs_of_tenant(tenant).await? {
        runs.entry(r.connection.clone()).or_default().push(r);
    }
    let out: Vec<Value> = connections
        .iter()
        .map(|c| describe(c, runs.get(&c.id).map_or(&[][..], Vec::as_slice)))
        .collect();
    Ok(Json(json!({"connections": out})))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ResyncBody {
    resources: Option<Vec<String>>,
    #[serde(default)]
    full: bool,
    /// Discover the connection's fields again at the start of these runs.
    #[serde(default)]
    rediscover: bool,
}

/// Runs ahead of scheduled work: the jobs go to the urgent jobs topic. In an `api.resync`
/// span; each run's `enqueue` span (its own trace) links to it.
#[tracing::instrument(name = "api.resync", skip_all, fields(tributary.connection = tracing::field::Empty))]
pub async fn resync(
    caller: Caller,
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    tracing::Span::current().record("tributary.connection", id.as_str());
    let conn = visible(&state, &caller, &id).await?;
    let body: ResyncBody = if body.iter().all(u8::is_ascii_whitespace) {
        ResyncBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_request(format!(
                "the body is not valid: {e}; expected {{\"resources\": [...], \"full\": true, \"rediscover\": true}}"
            ))
        })?
    };
    if conn.state.is_halted() {
        return Err(ApiError::conflict(format!(
            "connection `{id}` is {}; {}",
            conn.state,
            if conn.state == ConnectionState::Paused {
                "resume it first"
            } else {
                "update its credentials first"
            }
        )));
    }
    let resources = match body.resources {
        None => conn.resources.clone(),
        Some(r) => {
            for name in &r {
                if !conn.resources.contains(name) {
                    return Err(ApiError::bad_request(format!(
                        "connection `{id}` does not sync `{name}`; it syncs: {}",
                        conn.resources.join(", ")
                    )));
                }
            }
            r
        }
    };
    if body.rediscover {
        state.store.request_discovery(&conn.id).await?;
    }
    let mode = if body.full {
        RunMode::Full
    } else {
        RunMode::Incremental
    };
    let jobs: Vec<Job> = resources
        .iter()
        .map(|r| Job::new_run(&conn.tenant, &conn.id, r, mode, JobReason::Resync))
        .collect();
    let messages: Vec<_> = jobs
        .iter()
        .map(|j| job_message(&state.topics.urgent_jobs(), j))
        .collect();
    state
        .publisher
        .publish_all(&messages)
        .await
        .map_err(ApiError::unavailable)?;
    tracing::info!(connection = %id, jobs = jobs.len(), "resync enqueued");
    let out: Vec<Value> = jobs
        .iter()
        .map(|j| json!({"resource": j.resource, "run_id": j.run_id, "mode": j.mode}))
        .collect();
    Ok((StatusCode::ACCEPTED, Json(json!({"jobs": out}))))
}

pub async fn pause(
    caller: Caller,
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let conn = visible(&state, &caller, &id).await?;
    state
        .store
        .set_connection_state(&conn.id, ConnectionState::Paused, None)
        .await?;
    Ok(Json(
        json!({"id": conn.id, "state": ConnectionState::Paused}),
    ))
}

pub async fn resume(
    caller: Caller,
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let conn = visible(&state, &caller, &id).await?;
    if conn.state == ConnectionState::NeedsReauth {
        return Err(ApiError::conflict(format!(
            "connection `{id}` needs new credentials: PUT /v1/connections/{id}/credentials"
        )));
    }
    state
        .store
        .set_connection_state(&conn.id, ConnectionState::Healthy, None)
        .await?;
    Ok(Json(
        json!({"id": conn.id, "state": ConnectionState::Healthy}),
    ))
}

#[derive(Deserialize)]
pub struct RunsQuery {
    limit: Option<i64>,
}

pub async fn runs(
    caller: Caller,
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
    query: Result<Query<RunsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let conn = visible(&state, &caller, &id).await?;
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("limit must be between 1 and 1000"));
    }
    let runs = state.store.runs(&conn.id, limit).await?;
    Ok(Json(json!({"runs": runs})))
}

/// Replace the credentials; a connection waiting for re-authorization resumes.
pub async fn replace_credentials(
    caller: Caller,
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
    body: Result<Json<Map<String, Value>>, JsonRejection>,
) -> Result<StatusCode, ApiError> {
    let conn = visible(&state, &caller, &id).await?;
    let Json(body) = body?;
    let credentials = credentials_from(body)?;
    state
        .store
        .store_credentials(&conn.id, &credentials)
        .await?;
    if conn.state == ConnectionState::NeedsReauth {
        state
            .store
            .set_connection_state(&conn.id, ConnectionState::Healthy, None)
            .await?;
    }
    tracing::info!(connection = %id, "credentials replaced");
    Ok(StatusCode::NO_CONTENT)
}
