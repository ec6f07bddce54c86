//! The control API under `/_sandbox/`, for tests and demos: `GET stats`,
//! `POST faults` / `DELETE faults`, `GET resources/{name}` (every record, whole),
//! `POST resources/{name}/mutate`, `POST oauth/revoke`, `POST oauth/expire`.
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
use crate::lock;
use crate::state::Sandbox;

/// Counters tests assert on.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Stats {
    pub requests: u64,
    pub data_requests: u64,
    pub over_budget: u64,
    pub throttled: u64,
    /// When the first and the last data request arrived (Unix milliseconds; 0 before any).
    pub first_data_request_ms: u64,
    pub last_data_request_ms: u64,
    pub unauthorized: u64,
    pub token_requests: u64,
    pub refreshes: u64,
    pub invalid_grants: u64,
    pub by_resource: BTreeMap<String, u64>,
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
            deleted.push(set.records[i].id);
        }
    }
    set.records.retain(|r| !deleted.contains(&r.id));
    let mut created = Vec::new();
    for _ in 0..m.create {
        let id = set.next_id;
        set.next_id += 1;
        let mut rec = data::generate(s.profile.seed, &name, id);
        rec.updated_at = now;
        let created_at = data::base_time() + chrono::Duration::minutes(id as i64 * 7);
        data::refresh_times(&mut rec, created_at);
        set.records.push(rec);
        created.push(id);
    }
    set.changed(None);
    Json(json!({"updated": updated, "deleted": deleted, "created": created})).into_response()
}
