//! The sandbox HTTP server: serves a profile's resources with generated data,
//! issues OAuth tokens, enforces its own budget, and fails on demand.
//!
//! Control endpoints (under `/_sandbox/`) let tests change data, inject faults
//! and read counters: `GET stats`, `POST faults` / `DELETE faults`,
//! `GET resources/{name}`, `POST resources/{name}/mutate`, `POST oauth/revoke`,
//! `POST oauth/expire`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::data::{self, Stored};
use super::profile::{Answer, Profile, ResourceProfile};
use crate::mapping::jsonata::{truthy, Jsonata};

/// A fault to inject into data answers.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Fault {
    /// `status`, `slow`, `malformed_json`, `repeat_cursor`, `throttle`, `unauthorized`.
    pub kind: String,
    /// Only for this resource.
    #[serde(default)]
    pub resource: Option<String>,
    /// Only on this page (1-based, from offset and limit).
    #[serde(default)]
    pub page: Option<u64>,
    /// How many times it fires; 0 = every time.
    #[serde(default)]
    pub times: u32,
    /// For `status`.
    #[serde(default)]
    pub status: Option<u16>,
    /// For `slow`.
    #[serde(default)]
    pub delay_ms: Option<u64>,
    /// For `throttle`: the wait the answer asks for.
    #[serde(default)]
    pub wait_seconds: Option<f64>,
}

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

struct Compiled {
    record: Jsonata,
    body: Jsonata,
    headers: Vec<(String, Jsonata)>,
    inputs: [(&'static str, Option<Jsonata>); 5],
}

struct ResourceData {
    records: Vec<Stored>,
    rendered: HashMap<u64, Arc<Value>>,
    next_id: u64,
}

struct Tokens {
    access: HashMap<String, Instant>,
    refresh: HashSet<String>,
    issued: u64,
}

struct Window {
    started: Instant,
    used: u32,
    /// Accepted requests of the last `per_seconds` (sliding windows only).
    log: std::collections::VecDeque<Instant>,
}

/// The resources a route may serve, each with its optional `when` predicate.
type Candidates = Vec<(String, Option<Jsonata>)>;

struct Shared {
    profile: Profile,
    compiled: HashMap<String, Compiled>,
    routes: HashMap<String, matchit::Router<Candidates>>,
    answers: HashMap<String, Jsonata>,
    global_headers: Vec<(String, Jsonata)>,
    data: Mutex<HashMap<String, ResourceData>>,
    faults: Mutex<Vec<Fault>>,
    stats: Mutex<Stats>,
    tokens: Mutex<Tokens>,
    window: Mutex<Window>,
}

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

impl Profile {
    pub fn load(path: &Path) -> Result<Profile, SandboxError> {
        let fail = |message: String| SandboxError::Profile {
            file: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
        let de = serde_yaml_ng::Deserializer::from_str(&text);
        serde_path_to_error::deserialize(de)
            .map_err(|e| fail(format!("at `{}`: {}", e.path(), e.inner())))
    }
}

/// Start serving a profile on `addr` (port 0 picks a free port).
pub async fn start(profile: Profile, addr: SocketAddr) -> Result<SandboxHandle, SandboxError> {
    let shared = Arc::new(compile(profile)?);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| SandboxError::Bind { addr, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| SandboxError::Bind { addr, source })?;
    let app = Router::new()
        .route("/_sandbox/stats", get(stats))
        .route("/_sandbox/faults", post(set_faults).delete(clear_faults))
        .route("/_sandbox/resources/{name}", get(list_resource))
        .route("/_sandbox/resources/{name}/mutate", post(mutate))
        .route("/_sandbox/oauth/revoke", post(revoke))
        .route("/_sandbox/oauth/expire", post(expire))
        .fallback(provider)
        .with_state(shared);
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(SandboxHandle { addr, task })
}

fn compile(profile: Profile) -> Result<Shared, SandboxError> {
    let fail = |message: String| SandboxError::Profile {
        file: profile.name.clone(),
        message,
    };
    let expr = |at: &str, src: &str| Jsonata::compile(src).map_err(|e| fail(format!("{at}: {e}")));
    let mut compiled = HashMap::new();
    let mut by_route: HashMap<(String, String), Candidates> = HashMap::new();
    let mut data_sets = HashMap::new();
    for (name, r) in &profile.resources {
        let at = |f: &str| format!("resources.{name}.{f}");
        let input = |f: &'static str,
                     src: &Option<String>|
         -> Result<(&'static str, Option<Jsonata>), SandboxError> {
            Ok((
                f,
                src.as_deref()
                    .map(|s| expr(&at(&format!("input.{f}")), s))
                    .transpose()?,
            ))
        };
        compiled.insert(
            name.clone(),
            Compiled {
                record: expr(&at("record"), &r.record)?,
                body: expr(&at("response.body"), &r.response.body)?,
                headers: r
                    .response
                    .headers
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), expr(&at("response.headers"), v)?)))
                    .collect::<Result<_, SandboxError>>()?,
                inputs: [
                    input("cursor", &r.input.cursor)?,
                    input("offset", &r.input.offset)?,
                    input("page", &r.input.page)?,
                    input("limit", &r.input.limit)?,
                    input("since", &r.input.since)?,
                ],
            },
        );
        for route in &r.routes {
            let when = route
                .when
                .as_deref()
                .map(|w| expr(&at("routes.when"), w))
                .transpose()?;
            by_route
                .entry((route.method.to_uppercase(), route.path.clone()))
                .or_default()
                .push((name.clone(), when));
        }
        data_sets.insert(
            name.clone(),
            ResourceData {
                records: (1..=r.count)
                    .map(|id| data::generate(profile.seed, name, id))
                    .collect(),
                rendered: HashMap::new(),
                next_id: r.count + 1,
            },
        );
    }
    let mut routes: HashMap<String, matchit::Router<_>> = HashMap::new();
    for ((method, path), candidates) in by_route {
        routes
            .entry(method)
            .or_default()
            .insert(path.clone(), candidates)
            .map_err(|e| fail(format!("route {path}: {e}")))?;
    }
    let mut answers = HashMap::new();
    let mut add_answer = |key: &str, a: &Answer| -> Result<(), SandboxError> {
        if let Some(b) = &a.body {
            answers.insert(format!("{key}.body"), expr(key, b)?);
        }
        for (h, v) in &a.headers {
            answers.insert(format!("{key}.headers.{h}"), expr(key, v)?);
        }
        Ok(())
    };
    add_answer("unauthorized", &profile.auth.unauthorized)?;
    if let Some(rl) = &profile.rate_limit {
        add_answer("throttle", &rl.throttle)?;
    }
    if let Some(o) = &profile.oauth {
        add_answer("invalid_grant", &o.invalid_grant)?;
        if let Some(r) = &o.response {
            answers.insert("token.body".into(), expr("oauth.response", r)?);
        }
    }
    let global_headers = profile
        .headers
        .iter()
        .map(|(k, v)| Ok((k.clone(), expr("headers", v)?)))
        .collect::<Result<_, SandboxError>>()?;
    let refresh = profile
        .oauth
        .as_ref()
        .map(|o| o.refresh_tokens.iter().cloned().collect())
        .unwrap_or_default();
    Ok(Shared {
        compiled,
        routes,
        answers,
        global_headers,
        data: Mutex::new(data_sets),
        faults: Mutex::new(Vec::new()),
        stats: Mutex::new(Stats::default()),
        tokens: Mutex::new(Tokens {
            access: HashMap::new(),
            refresh,
            issued: 0,
        }),
        window: Mutex::new(Window {
            started: Instant::now(),
            used: 0,
            log: std::collections::VecDeque::new(),
        }),
        profile,
    })
}

async fn stats(State(s): State<Arc<Shared>>) -> Json<Stats> {
    Json(s.stats.lock().expect("stats").clone())
}

async fn set_faults(State(s): State<Arc<Shared>>, Json(faults): Json<Vec<Fault>>) -> StatusCode {
    *s.faults.lock().expect("faults") = faults;
    StatusCode::NO_CONTENT
}

async fn clear_faults(State(s): State<Arc<Shared>>) -> StatusCode {
    s.faults.lock().expect("faults").clear();
    StatusCode::NO_CONTENT
}

async fn revoke(State(s): State<Arc<Shared>>) -> StatusCode {
    let mut t = s.tokens.lock().expect("tokens");
    t.refresh.clear();
    t.access.clear();
    StatusCode::NO_CONTENT
}

async fn expire(State(s): State<Arc<Shared>>) -> StatusCode {
    s.tokens.lock().expect("tokens").access.clear();
    StatusCode::NO_CONTENT
}

async fn list_resource(State(s): State<Arc<Shared>>, UrlPath(name): UrlPath<String>) -> Response {
    let Some(compiled) = s.compiled.get(&name) else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": format!("no resource {name}")})),
        )
            .into_response();
    };
    let mut data = s.data.lock().expect("data");
    let set = data.get_mut(&name).expect("every resource has data");
    let ids: Vec<u64> = set.records.iter().map(|r| r.id).collect();
    let records: Vec<Value> = (0..set.records.len())
        .map(|i| (*render(compiled, set, i)).clone())
        .collect();
    Json(json!({"ids": ids, "records": records})).into_response()
}

#[derive(Deserialize)]
struct Mutation {
    #[serde(default)]
    update: usize,
    #[serde(default)]
    delete: usize,
    #[serde(default)]
    create: usize,
}

async fn mutate(
    State(s): State<Arc<Shared>>,
    UrlPath(name): UrlPath<String>,
    Json(m): Json<Mutation>,
) -> Response {
    let mut data = s.data.lock().expect("data");
    let Some(set) = data.get_mut(&name) else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": format!("no resource {name}")})),
        )
            .into_response();
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
            set.rendered.remove(&set.records[i].id);
            updated.push(set.records[i].id);
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
    Json(json!({"updated": updated, "deleted": deleted, "created": created})).into_response()
}

fn render(compiled: &Compiled, set: &mut ResourceData, index: usize) -> Arc<Value> {
    let rec = &set.records[index];
    set.rendered
        .entry(rec.id)
        .or_insert_with(|| {
            Arc::new(
                compiled
                    .record
                    .eval_json(&rec.canonical)
                    .ok()
                    .flatten()
                    .unwrap_or(Value::Null),
            )
        })
        .clone()
}

fn json_response(status: u16, body: &Value, headers: Vec<(String, String)>) -> Response {
    let mut resp = (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        body.to_string(),
    )
        .into_response();
    resp.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    for (k, v) in headers {
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(&v),
        ) {
            resp.headers_mut().insert(k, v);
        }
    }
    resp
}

impl Shared {
    fn answer(&self, key: &str, a: &Answer, ctx: &Value) -> Response {
        let body = self
            .answers
            .get(&format!("{key}.body"))
            .and_then(|e| e.eval_json(ctx).ok().flatten())
            .unwrap_or(Value::Null);
        let headers = a
            .headers
            .keys()
            .filter_map(|h| {
                let v = self
                    .answers
                    .get(&format!("{key}.headers.{h}"))?
                    .eval_json(ctx)
                    .ok()??;
                Some((h.clone(), text(&v)))
            })
            .collect();
        json_response(a.status, &body, headers)
    }

    /// Returns the throttle answer when this request is over the sandbox's budget.
    fn over_budget(&self) -> Option<Response> {
        let rl = self.profile.rate_limit.as_ref()?;
        let mut w = self.window.lock().expect("window");
        let period = Duration::from_secs_f64(rl.per_seconds);
        let now = Instant::now();
        let wait = if rl.sliding {
            while w
                .log
                .front()
                .is_some_and(|t| now.duration_since(*t) >= period)
            {
                w.log.pop_front();
            }
            if w.log.len() < rl.requests as usize {
                w.log.push_back(now);
                return None;
            }
            period.saturating_sub(now.duration_since(w.log[0]))
        } else {
            if w.started.elapsed() >= period {
                w.started = now;
                w.used = 0;
            }
            if w.used < rl.requests {
                w.used += 1;
                return None;
            }
            period.saturating_sub(w.started.elapsed())
        };
        drop(w);
        let mut st = self.stats.lock().expect("stats");
        st.over_budget += 1;
        st.throttled += 1;
        drop(st);
        Some(self.throttle_answer(wait))
    }

    fn throttle_answer(&self, wait: Duration) -> Response {
        let reset = SystemTime::now() + wait;
        let reset_ms = reset
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let ctx = json!({
            "wait_seconds": wait.as_secs_f64().ceil() as u64,
            "wait_millis": wait.as_millis() as u64,
            "reset_epoch_seconds": reset_ms.div_ceil(1000),
            "reset_epoch_millis": reset_ms,
            "http_date": httpdate::fmt_http_date(reset + Duration::from_secs(1)),
        });
        match self.profile.rate_limit.as_ref() {
            Some(rl) => self.answer("throttle", &rl.throttle, &ctx),
            None => json_response(
                429,
                &json!({"error": "rate limited"}),
                vec![("Retry-After".into(), ctx["wait_seconds"].to_string())],
            ),
        }
    }

    fn remaining_headers(&self) -> Vec<(String, String)> {
        if self.global_headers.is_empty() {
            return Vec::new();
        }
        let (limit, remaining, reset) = match &self.profile.rate_limit {
            Some(rl) => {
                let w = self.window.lock().expect("window");
                let reset = SystemTime::now()
                    + Duration::from_secs_f64(rl.per_seconds).saturating_sub(w.started.elapsed());
                let used = if rl.sliding {
                    w.log.len() as u32
                } else {
                    w.used
                };
                (rl.requests, rl.requests.saturating_sub(used), reset)
            }
            None => (1000, 1000, SystemTime::now()),
        };
        // Rounded up: a client waiting until this second never arrives before the reset.
        let reset_s = reset
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis().div_ceil(1000) as u64)
            .unwrap_or(0);
        let ctx = json!({"limit": limit, "remaining": remaining, "reset_epoch_seconds": reset_s});
        self.global_headers
            .iter()
            .filter_map(|(k, e)| Some((k.clone(), text(&e.eval_json(&ctx).ok()??))))
            .collect()
    }

    fn authorized(&self, headers: &HeaderMap, query: &Map<String, Value>) -> bool {
        let auth = &self.profile.auth;
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let presented = match auth.kind.as_str() {
            "none" => return true,
            "bearer" => {
                let prefix = auth.prefix.clone().unwrap_or_else(|| "Bearer ".into());
                header(auth.name.as_deref().unwrap_or("authorization"))
                    .and_then(|v| v.strip_prefix(&prefix).map(str::to_string))
            }
            "header" => header(auth.name.as_deref().unwrap_or("x-api-key")).map(|v| {
                let prefix = auth.prefix.clone().unwrap_or_default();
                v.strip_prefix(&prefix).unwrap_or(&v).to_string()
            }),
            "query" => query
                .get(auth.name.as_deref().unwrap_or("api_key"))
                .and_then(|v| v.as_str())
                .map(str::to_string),
            "basic" => header("authorization").and_then(|v| {
                use base64::Engine;
                let raw = v.strip_prefix("Basic ")?;
                let decoded = base64::engine::general_purpose::STANDARD.decode(raw).ok()?;
                let text = String::from_utf8(decoded).ok()?;
                Some(
                    text.split_once(':')
                        .map(|(u, _)| u.to_string())
                        .unwrap_or(text),
                )
            }),
            _ => None,
        };
        let Some(token) = presented else { return false };
        if auth.tokens.contains(&token) {
            return true;
        }
        let tokens = self.tokens.lock().expect("tokens");
        tokens
            .access
            .get(&token)
            .is_some_and(|exp| *exp > Instant::now())
    }

    fn take_fault(&self, resource: &str, page: u64) -> Option<Fault> {
        let mut faults = self.faults.lock().expect("faults");
        let i = faults.iter().position(|f| {
            f.resource.as_deref().is_none_or(|r| r == resource) && f.page.is_none_or(|p| p == page)
        })?;
        let fault = faults[i].clone();
        if fault.times == 1 {
            faults.remove(i);
        } else if fault.times > 1 {
            faults[i].times -= 1;
        }
        Some(fault)
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn query_map(uri: &Uri) -> Map<String, Value> {
    url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
        .collect()
}

/// Cursors the sandbox hands out: `<resource>.<offset>.<since millis or "all">`.
fn encode_cursor(resource: &str, offset: u64, since: Option<DateTime<Utc>>) -> String {
    match since {
        Some(s) => format!("{resource}.{offset}.{}", s.timestamp_millis()),
        None => format!("{resource}.{offset}.all"),
    }
}

fn decode_cursor(cursor: &str) -> Option<(String, u64, Option<DateTime<Utc>>)> {
    let mut parts = cursor.rsplitn(3, '.');
    let since = parts.next()?;
    let offset = parts.next()?.parse().ok()?;
    let resource = parts.next()?.to_string();
    let since = match since {
        "all" => None,
        ms => Some(Utc.timestamp_millis_opt(ms.parse().ok()?).single()?),
    };
    Some((resource, offset, since))
}

fn parse_since(v: &Value, format: &str) -> Option<DateTime<Utc>> {
    let s = text(v);
    let s = s.trim().trim_matches('\'');
    match format {
        "epoch_seconds" => Utc.timestamp_opt(s.parse::<f64>().ok()? as i64, 0).single(),
        "epoch_millis" => Utc
            .timestamp_millis_opt(s.parse::<f64>().ok()? as i64)
            .single(),
        "rfc3339" => DateTime::parse_from_rfc3339(s)
            .or_else(|_| DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%z"))
            .ok()
            .map(|d| d.with_timezone(&Utc)),
        pattern => chrono::NaiveDateTime::parse_from_str(s, pattern)
            .ok()
            .map(|n| n.and_utc())
            .or_else(|| {
                DateTime::parse_from_str(s, pattern)
                    .ok()
                    .map(|d| d.with_timezone(&Utc))
            }),
    }
}

fn bad_request(message: String) -> Response {
    json_response(
        400,
        &json!({"error": "bad_request", "message": message}),
        Vec::new(),
    )
}

async fn provider(
    State(s): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    s.stats.lock().expect("stats").requests += 1;
    let path = uri.path().to_string();
    if let Some(o) = &s.profile.oauth {
        if method == Method::POST && path == o.path {
            return token_endpoint(&s, &headers, &body);
        }
    }
    let query = query_map(&uri);
    let body_json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let header_map: Map<String, Value> = headers
        .iter()
        .filter_map(|(k, v)| {
            Some((
                k.as_str().to_string(),
                Value::String(v.to_str().ok()?.to_string()),
            ))
        })
        .collect();
    let Some(router) = s.routes.get(method.as_str()) else {
        return json_response(
            404,
            &json!({"error": "not_found", "path": path}),
            Vec::new(),
        );
    };
    let Ok(matched) = router.at(&path) else {
        return json_response(
            404,
            &json!({"error": "not_found", "path": path}),
            Vec::new(),
        );
    };
    let params: Map<String, Value> = matched
        .params
        .iter()
        .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
        .collect();
    let request =
        json!({"query": query, "body": body_json, "params": params, "headers": header_map});
    let resource = matched
        .value
        .iter()
        .find(|(_, when)| {
            when.as_ref()
                .is_none_or(|w| truthy(&w.eval_json(&request).unwrap_or(None)))
        })
        .map(|(name, _)| name.clone());
    let Some(resource) = resource else {
        return bad_request(format!("no resource at {path} matches this request"));
    };
    {
        let mut st = s.stats.lock().expect("stats");
        st.data_requests += 1;
        *st.by_resource.entry(resource.clone()).or_default() += 1;
        let now_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        if st.first_data_request_ms == 0 {
            st.first_data_request_ms = now_ms;
        }
        st.last_data_request_ms = now_ms;
    }
    if let Some(throttled) = s.over_budget() {
        return throttled;
    }
    let rp = &s.profile.resources[&resource];
    let compiled = &s.compiled[&resource];
    let input = |name: &str| -> Option<Value> {
        let (_, e) = compiled.inputs.iter().find(|(n, _)| *n == name)?;
        e.as_ref()?
            .eval_json(&request)
            .ok()
            .flatten()
            .filter(|v| !v.is_null() && v != "")
    };
    let number =
        |v: Option<Value>| v.and_then(|v| v.as_u64().or_else(|| text(&v).trim().parse().ok()));
    let limit = number(input("limit"))
        .unwrap_or(rp.default_limit)
        .clamp(1, rp.max_limit);
    let cursor = input("cursor").map(|v| text(&v));
    let mut since = input("since").and_then(|v| parse_since(&v, &rp.since_format));
    if input("since").is_some() && since.is_none() {
        return bad_request(format!(
            "cannot read the since value as {}",
            rp.since_format
        ));
    }
    let offset = match &cursor {
        Some(c) => match decode_cursor(c) {
            Some((r, off, cs)) if r == resource => {
                since = since.or(cs);
                off
            }
            _ => return bad_request(format!("invalid cursor {c}")),
        },
        None => match (number(input("offset")), number(input("page"))) {
            (Some(o), _) => o.saturating_sub(rp.offset_base),
            (None, Some(p)) => p.saturating_sub(1) * limit,
            (None, None) => 0,
        },
    };
    let page_number = offset / limit + 1;
    let mut repeat_cursor = false;
    if let Some(fault) = s.take_fault(&resource, page_number) {
        match fault.kind.as_str() {
            "status" => {
                let status = fault.status.unwrap_or(503);
                return json_response(
                    status,
                    &json!({"error": "injected failure", "status": status}),
                    Vec::new(),
                );
            }
            "slow" => {
                tokio::time::sleep(Duration::from_millis(fault.delay_ms.unwrap_or(2000))).await
            }
            "malformed_json" => {
                let mut resp = (StatusCode::OK, "{\"results\": [{\"id\": 1,").into_response();
                resp.headers_mut()
                    .insert("content-type", HeaderValue::from_static("application/json"));
                return resp;
            }
            "throttle" => {
                s.stats.lock().expect("stats").throttled += 1;
                return s
                    .throttle_answer(Duration::from_secs_f64(fault.wait_seconds.unwrap_or(1.0)));
            }
            "unauthorized" => {
                s.stats.lock().expect("stats").unauthorized += 1;
                return s.answer("unauthorized", &s.profile.auth.unauthorized, &request);
            }
            "repeat_cursor" => repeat_cursor = true,
            other => return bad_request(format!("unknown fault kind {other}")),
        }
    }
    if !s.authorized(&headers, &query) {
        s.stats.lock().expect("stats").unauthorized += 1;
        return s.answer("unauthorized", &s.profile.auth.unauthorized, &request);
    }
    let page = page_body(
        &s,
        rp,
        compiled,
        &resource,
        offset,
        limit,
        since,
        cursor,
        repeat_cursor,
        &headers,
        request,
    );
    let mut resp_headers = s.remaining_headers();
    for (k, e) in &compiled.headers {
        if let Ok(Some(v)) = e.eval_json(&page) {
            if !v.is_null() {
                resp_headers.push((k.clone(), text(&v)));
            }
        }
    }
    let body = compiled
        .body
        .eval_json(&page)
        .ok()
        .flatten()
        .unwrap_or(Value::Null);
    json_response(200, &body, resp_headers)
}

#[allow(clippy::too_many_arguments)]
fn page_body(
    s: &Shared,
    rp: &ResourceProfile,
    compiled: &Compiled,
    resource: &str,
    offset: u64,
    limit: u64,
    since: Option<DateTime<Utc>>,
    cursor: Option<String>,
    repeat_cursor: bool,
    headers: &HeaderMap,
    request: Value,
) -> Value {
    let mut data = s.data.lock().expect("data");
    let set = data.get_mut(resource).expect("every resource has data");
    let matching: Vec<usize> = (0..set.records.len())
        .filter(|&i| since.is_none_or(|t| set.records[i].updated_at >= t))
        .collect();
    let total = matching.len() as u64;
    let start = (offset as usize).min(matching.len());
    let end = (start + limit as usize).min(matching.len());
    let records: Vec<Value> = matching[start..end]
        .iter()
        .map(|&i| (*render(compiled, set, i)).clone())
        .collect();
    drop(data);
    let has_more = (end as u64) < total;
    let next_offset = has_more.then_some(end as u64);
    let mut next_cursor = next_offset.map(|o| encode_cursor(resource, o, since));
    if repeat_cursor {
        if let Some(c) = &cursor {
            next_cursor = Some(c.clone());
        }
    }
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    json!({
        "records": records,
        "count": records.len(),
        "has_more": has_more,
        "next_cursor": next_cursor,
        "next_offset": next_offset.map(|o| o + rp.offset_base),
        "next_page": has_more.then_some(offset / limit + 2),
        "total": total,
        "limit": limit,
        "offset": offset + rp.offset_base,
        "page": offset / limit + 1,
        "base_url": format!("http://{host}"),
        "cursor": cursor,
        "request": request,
    })
}

fn token_endpoint(s: &Shared, headers: &HeaderMap, body: &[u8]) -> Response {
    let o = s.profile.oauth.as_ref().expect("checked by caller");
    s.stats.lock().expect("stats").token_requests += 1;
    let form: HashMap<String, String> = url::form_urlencoded::parse(body).into_owned().collect();
    let (client_id, client_secret) = match o.client_auth.as_str() {
        "basic" => headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "))
            .and_then(|raw| {
                use base64::Engine;
                let text =
                    String::from_utf8(base64::engine::general_purpose::STANDARD.decode(raw).ok()?)
                        .ok()?;
                let (u, p) = text.split_once(':')?;
                Some((u.to_string(), p.to_string()))
            })
            .unwrap_or_default(),
        _ => (
            form.get("client_id").cloned().unwrap_or_default(),
            form.get("client_secret").cloned().unwrap_or_default(),
        ),
    };
    if client_id != o.client_id || client_secret != o.client_secret {
        return json_response(
            401,
            &json!({"error": "invalid_client", "error_description": "client authentication failed"}),
            Vec::new(),
        );
    }
    let mut tokens = s.tokens.lock().expect("tokens");
    tokens.issued += 1;
    let n = tokens.issued;
    let mut refresh_out = None;
    match form.get("grant_type").map(String::as_str) {
        Some("refresh_token") => {
            let presented = form.get("refresh_token").cloned().unwrap_or_default();
            if !tokens.refresh.contains(&presented) {
                drop(tokens);
                s.stats.lock().expect("stats").invalid_grants += 1;
                return s.answer("invalid_grant", &o.invalid_grant, &json!({}));
            }
            s.stats.lock().expect("stats").refreshes += 1;
            if o.rotate_refresh_tokens {
                tokens.refresh.remove(&presented);
                let fresh = format!("sbx-rt-{n}");
                tokens.refresh.insert(fresh.clone());
                refresh_out = Some(fresh);
            } else {
                refresh_out = Some(presented);
            }
        }
        Some("client_credentials") => {
            s.stats.lock().expect("stats").refreshes += 1;
        }
        other => {
            return json_response(
                400,
                &json!({"error": "unsupported_grant_type", "error_description": format!("{other:?}")}),
                Vec::new(),
            );
        }
    }
    let access = format!("sbx-at-{n}");
    tokens.access.insert(
        access.clone(),
        Instant::now() + Duration::from_secs(o.access_token_ttl_seconds),
    );
    drop(tokens);
    let ctx = json!({"access_token": access, "refresh_token": refresh_out, "expires_in": o.access_token_ttl_seconds});
    let body = match s.answers.get("token.body") {
        Some(e) => e.eval_json(&ctx).ok().flatten().unwrap_or(Value::Null),
        None => {
            json!({"access_token": access, "token_type": "bearer", "expires_in": o.access_token_ttl_seconds, "refresh_token": refresh_out})
        }
    };
    json_response(200, &body, Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip() {
        let t = Utc.timestamp_millis_opt(1_700_000_000_123).single();
        assert_eq!(
            decode_cursor(&encode_cursor("contacts", 40, t)),
            Some(("contacts".into(), 40, t))
        );
        assert_eq!(
            decode_cursor(&encode_cursor("a.b", 0, None)),
            Some(("a.b".into(), 0, None))
        );
        assert_eq!(decode_cursor("garbage"), None);
    }

    #[test]
    fn since_values_in_each_format() {
        let t = Utc.with_ymd_and_hms(2024, 5, 1, 10, 0, 0).single();
        assert_eq!(parse_since(&json!("2024-05-01T10:00:00Z"), "rfc3339"), t);
        assert_eq!(
            parse_since(&json!("2024-05-01T10:00:00.000+0000"), "rfc3339"),
            t
        );
        assert_eq!(
            parse_since(&json!("'2024-05-01T10:00:00-00:00'"), "rfc3339"),
            t
        );
        assert_eq!(parse_since(&json!(1714557600), "epoch_seconds"), t);
        assert_eq!(parse_since(&json!("1714557600000"), "epoch_millis"), t);
        assert_eq!(
            parse_since(&json!("2024-05-01 10:00:00"), "%Y-%m-%d %H:%M:%S"),
            t
        );
    }
}
