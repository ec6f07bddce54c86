//! The control API under `/_sandbox/`, for tests and demos: `GET stats`,
//! `POST faults` / `DELETE faults`, `GET resources/{name}` (every record, whole),
//! `POST resources/{name}/mutate`, `POST oauth/revoke`, `POST oauth/expire`, and
//! a resource's fields:
//! - `GET resources/{name}/fields`: `{"standard": [FieldDef], "custom": [FieldDef]}`;
//! - `POST resources/{name}/fields` with a `FieldDef` (`{"name", "type", "label"?,
//!   "options"?, "generate"?, "min"?, "max"?, "decimals"?, "attributes"?}`): a new
//!   custom field, 201; its generated values appear in every record (records keep
//!   their last-modified time, as when a provider adds a property); 409 when the
//!   resource has a field of that name, 400 when its type has no value kind;
//! - `DELETE resources/{name}/fields/{field}`: the field (standard or custom) is
//!   gone from describe answers and records (selecting it is then an unknown
//!   field), 204; 404 when there is none.
//!
//! Its HTTP contract is what the test harness (`SandboxControl`) relies on.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::data;
use crate::faults::Fault;
use crate::fields::FieldError;
use crate::lock;
use crate::profile::FieldDef;
use crate::state::{Sandbox, Tombstone};

/// Counters tests assert on.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Stats {
    pub requests: u64,
    pub data_requests: u64,
    /// Describe requests (`schema_routes`): counted in `requests`, not in `data_requests`.
    #[serde(default)]
    pub schema_requests: u64,
    pub over_budget: u64,
    pub throttled: u64,
    /// When the first and the last data request arrived (Unix milliseconds; 0 before any).
    pub first_data_request_ms: u64,
    pub last_data_request_ms: u64,
    /// The same over every request the budget counts (data and describe requests).
    #[serde(default)]
    pub first_budgeted_ms: u64,
    #[serde(default)]
    pub last_budgeted_ms: u64,
    pub unauthorized: u64,
    /// Requests a route refused (`routes[].refuse`), e.g. an API key on an OAuth-only endpoint.
    #[serde(default)]
    pub refused: u64,
    /// OAuth 1.0a requests refused (wrong signature, realm, key, stale timestamp, reused
    /// nonce), and the reason the last one was.
    #[serde(default)]
    pub signature_failures: u64,
    #[serde(default)]
    pub last_signature_failure: Option<String>,
    pub token_requests: u64,
    /// The authorization-code flow: consent pages shown, decisions, codes exchanged, and
    /// exchanges refused for a code verifier that did not match.
    #[serde(default)]
    pub consent_pages: u64,
    #[serde(default)]
    pub consents_approved: u64,
    #[serde(default)]
    pub consents_denied: u64,
    #[serde(default)]
    pub code_exchanges: u64,
    #[serde(default)]
    pub pkce_failures: u64,
    /// Why the last authorization code was refused (unknown or used, expired, another
    /// client, another redirect URI, a verifier that does not match).
    #[serde(default)]
    pub last_grant_failure: Option<String>,
    pub refreshes: u64,
    pub invalid_grants: u64,
    /// Webhook deliveries sent (`/_sandbox/webhooks/send`; a repeat is one more) and the
    /// HTTP attempts they took (retries included).
    #[serde(default)]
    pub webhooks_sent: u64,
    #[serde(default)]
    pub webhook_attempts: u64,
    pub by_resource: BTreeMap<String, u64>,
}

impl Stats {
    /// A request the budget counts arrived at `now_ms`.
    pub(crate) fn budgeted_at(&mut self, now_ms: u64) {
        if self.first_budgeted_ms == 0 {
            self.first_budgeted_ms = now_ms;
        }
        self.last_budgeted_ms = now_ms;
    }
}

pub async fn stats(State(s): State<Arc<Sandbox>>) -> Json<Stats> {
    Json(lock(&s.stats).clone())
}

pub async fn set_faults(
    State(s): State<Arc<Sandbox>>,
    Json(faults): Json<Vec<Fault>>,
) -> StatusCode {
    s.faults.set(faults);
    StatusCode::NO_CONTENT
}

pub async fn clear_faults(State(s): State<Arc<Sandbox>>) -> StatusCode {
    s.faults.clear();
    StatusCode::NO_CONTENT
}

/// Every token invalid: refreshes answer invalid_grant, data requests 401.
pub async fn revoke(State(s): State<Arc<Sandbox>>) -> StatusCode {
    let mut t = lock(&s.tokens);
    t.refresh.clear();
    t.access.clear();
    StatusCode::NO_CONTENT
}

/// Every issued access token expired; refresh tokens stay valid.
pub async fn expire(State(s): State<Arc<Sandbox>>) -> StatusCode {
    lock(&s.tokens).access.clear();
    StatusCode::NO_CONTENT
}

fn no_resource(name: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": format!("no resource {name}")})),
    )
        .into_response()
}

/// `{"ids": [...], "records": [...]}`: every record as the provider holds it.
pub async fn list_resource(State(s): State<Arc<Sandbox>>, Path(name): Path<String>) -> Response {
    let Some(compiled) = s.compiled.resources.get(&name) else {
        return no_resource(&name);
    };
    let mut data = lock(&s.data);
    let Some(set) = data.get_mut(&name) else {
        return no_resource(&name);
    };
    let ids: Vec<u64> = set.records.iter().map(|r| r.id).collect();
    let records: Vec<Value> = (0..set.records.len())
        .map(|i| (*set.render(compiled, i)).clone())
        .collect();
    Json(json!({"ids": ids, "records": records})).into_response()
}

#[derive(Deserialize)]
pub struct Mutation {
    #[serde(default)]
    update: usize,
    #[serde(default)]
    delete: usize,
    #[serde(default)]
    create: usize,
}

/// Update, delete and create records; answers the ids touched.
pub async fn mutate(
    State(s): State<Arc<Sandbox>>,
    Path(name): Path<String>,
    Json(m): Json<Mutation>,
) -> Response {
    let mut data = lock(&s.data);
    let Some(set) = data.get_mut(&name) else {
        return no_resource(&name);
    };
    let now = Utc::now();
    // Updates and deletions are spread over the list, and never hit the same record.
    let n = set.records.len();
    let picks = (m.update + m.delete).min(n);
    let stride = n.checked_div(picks).unwrap_or(1).max(1);
    let chosen: Vec<usize> = (0..picks)
        .map(|i| (i * stride + stride / 2).min(n - 1))
        .collect();
    let mut updated = Vec::new();
    let mut deleted = Vec::new();
    for (k, &i) in chosen.iter().enumerate() {
        if k < m.update {
            data::touch(&mut set.records[i], now);
            let id = set.records[i].id;
            set.changed(Some(id));
            updated.push(id);
        } else {
            let id = set.records[i].id;
            let record = set.render(&s.compiled.resources[&name], i);
            set.tombstones.push(Tombstone {
                id,
                deleted_at: now,
                record,
            });
            deleted.push(id);
        }
    }
    set.records.retain(|r| !deleted.contains(&r.id));
    let created: Vec<u64> = (0..m.create).map(|_| set.create(now, false)).collect();
    set.changed(None);
    Json(json!({"updated": updated, "deleted": deleted, "created": created})).into_response()
}

/// The fields a resource has now.
pub async fn list_fields(State(s): State<Arc<Sandbox>>, Path(name): Path<String>) -> Response {
    let data = lock(&s.data);
    let Some(set) = data.get(&name) else {
        return no_resource(&name);
    };
    Json(json!({"standard": set.schema.standard, "custom": set.schema.custom})).into_response()
}

/// Add a custom field: its values appear in every record, whose versions and
/// last-modified times stay as they were.
pub async fn add_field(
    State(s): State<Arc<Sandbox>>,
    Path(name): Path<String>,
    Json(def): Json<FieldDef>,
) -> Response {
    let mut data = lock(&s.data);
    let Some(set) = data.get_mut(&name) else {
        return no_resource(&name);
    };
    let field = def.name.clone();
    match set.schema.add(def, &s.profile.field_values) {
        Ok(()) => {
            set.fields_changed();
            (StatusCode::CREATED, Json(json!({"added": field}))).into_response()
        }
        Err(e) => {
            let status = match e {
                FieldError::Exists(_) => StatusCode::CONFLICT,
                FieldError::NoKind { .. } => StatusCode::BAD_REQUEST,
            };
            let message = format!("resource {name}: {e}");
            (status, Json(json!({"error": message}))).into_response()
        }
    }
}

/// Remove a standard or custom field from the resource's describe answers and records.
pub async fn remove_field(
    State(s): State<Arc<Sandbox>>,
    Path((name, field)): Path<(String, String)>,
) -> Response {
    let mut data = lock(&s.data);
    let Some(set) = data.get_mut(&name) else {
        return no_resource(&name);
    };
    if !set.schema.remove(&field) {
        let message = format!("resource {name} has no field {field}");
        return (StatusCode::NOT_FOUND, Json(json!({"error": message}))).into_response();
    }
    set.fields_changed();
    StatusCode::NO_CONTENT.into_response()
}
