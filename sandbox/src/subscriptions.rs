//! Webhook subscriptions a tenant registers through the provider's API, as the profile's
//! `webhooks.subscriptions` declares the routes: `create` stores a subscription (the
//! profile's `record` over the request, with a generated id and a signing secret, generated
//! or read from the record by `secret_from`), `list`, `show` and `secret` answer it,
//! `update` replaces it by the profile's `record` over the stored one and the request,
//! `delete` removes it. The routes sit behind the profile's normal credential check and
//! their `refuse` rules (e.g. a missing required field). A `create` or `update` route can
//! `validate` the URLs a request names first: each gets a request carrying a random token
//! in a query parameter and must echo it back in time, else the route answers `failed`.
//! `POST /_sandbox/webhooks/send` without a URL delivers to every active one, signed
//! with its secret; `GET /_sandbox/webhooks/subscriptions` lists them (no secrets).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{SecondsFormat, Utc};
use indexmap::IndexMap;
use rand::distr::{Alphanumeric, SampleString};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tributary::mapping::jsonata::{truthy, Jsonata};

use crate::profile::{Answer, Refusal};
use crate::respond::{json_response, text, FixedAnswer};
use crate::state::Sandbox;
use crate::webhooks::uuid_v4;
use crate::{auth, lock, routes};

/// `webhooks.subscriptions`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionProfile {
    /// How ids are generated: `ulid` (26 characters, time-ordered) or `counter`.
    #[serde(default)]
    pub id_format: IdFormat,
    /// Length of the generated signing secrets (letters and digits).
    #[serde(default = "default_secret_length")]
    pub secret_length: usize,
    /// JSONata over the stored subscription: its secret (e.g. a value the client chose
    /// when it registered), instead of a generated one; null or undefined is no secret.
    #[serde(default)]
    pub secret_from: Option<String>,
    /// JSONata over the stored subscription: the URL deliveries go to.
    pub endpoint: String,
    /// Body format name -> JSONata over the stored subscription: the URL deliveries of
    /// that format go to instead of `endpoint`.
    #[serde(default)]
    pub endpoints: IndexMap<String, String>,
    /// JSONata over the stored subscription: whether it gets deliveries (always, if absent).
    #[serde(default)]
    pub active: Option<String>,
    /// JSONata over `{subscription, body}` (a delivery's body as rendered): whether the
    /// subscription gets that delivery (every delivery, if absent).
    #[serde(default)]
    pub accepts: Option<String>,
    pub routes: Vec<SubscriptionRoute>,
    /// The answer when the id in the path names no subscription: JSONata body over
    /// `{id, request}`.
    pub not_found: Answer,
}

fn default_secret_length() -> usize {
    44
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdFormat {
    #[default]
    Ulid,
    Counter,
    /// A random version-4 UUID in its usual text form.
    Uuid,
}

/// One subscription route.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionRoute {
    pub action: Action,
    #[serde(default = "default_method")]
    pub method: String,
    pub path: String,
    /// The path parameter holding the subscription's id (`show`, `secret`, `update`, `delete`).
    #[serde(default)]
    pub param: Option<String>,
    /// Requests refused (JSONata over the request context), checked in order.
    #[serde(default)]
    pub refuse: Vec<Refusal>,
    /// For `create`: JSONata over `{request, id, now}`, the subscription as stored and shown.
    /// For `update`: JSONata over `{subscription, request, id, now}`, the subscription that
    /// replaces the stored one.
    #[serde(default)]
    pub record: Option<String>,
    /// For `create` and `update`: the URLs the request names are validated first.
    #[serde(default)]
    pub validate: Option<Validation>,
    /// JSONata body over `{subscription, secret, subscriptions, request}`.
    pub answer: Answer,
}

/// A validation handshake: every URL gets a request (`method`, `Content-Type:
/// content_type`, empty body) with a fresh token in the query parameter `param`, and
/// must answer 200 within `timeout_ms`, with a `Content-Type` starting with
/// `answer_content_type` and a body that is exactly the token.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Validation {
    /// JSONata over `{request, subscription}` (`subscription`: the stored one, for
    /// `update`): the URL or the array of URLs to validate (undefined and null ones are
    /// skipped).
    pub urls: String,
    /// The query parameter carrying the token.
    pub param: String,
    /// JSONata over `{request, random}` (`random`: a fresh v4 UUID): the token; the
    /// UUID itself when absent.
    #[serde(default)]
    pub token: Option<String>,
    #[serde(default = "post")]
    pub method: String,
    #[serde(default = "text_plain_utf8")]
    pub content_type: String,
    #[serde(default = "text_plain")]
    pub answer_content_type: String,
    #[serde(default = "ten_seconds")]
    pub timeout_ms: u64,
    /// The answer when a URL fails: JSONata body over `{request, url, reason}`.
    pub failed: Answer,
}

fn post() -> String {
    "POST".into()
}

fn text_plain_utf8() -> String {
    "text/plain; charset=utf-8".into()
}

fn text_plain() -> String {
    "text/plain".into()
}

fn ten_seconds() -> u64 {
    10_000
}

fn default_method() -> String {
    "GET".into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Create,
    List,
    Show,
    Secret,
    Update,
    Delete,
}

struct CompiledValidation {
    urls: Jsonata,
    param: String,
    token: Option<Jsonata>,
    method: reqwest::Method,
    content_type: String,
    answer_content_type: String,
    timeout: Duration,
    failed: FixedAnswer,
}

struct CompiledRoute {
    action: Action,
    param: Option<String>,
    refuse: Vec<(Jsonata, FixedAnswer)>,
    record: Option<Jsonata>,
    validate: Option<CompiledValidation>,
    answer: FixedAnswer,
}

pub struct CompiledSubscriptions {
    by_method: HashMap<String, matchit::Router<usize>>,
    routes: Vec<CompiledRoute>,
    secret_from: Option<Jsonata>,
    endpoint: Jsonata,
    endpoints: IndexMap<String, Jsonata>,
    active: Option<Jsonata>,
    accepts: Option<Jsonata>,
    not_found: FixedAnswer,
}

pub fn compile(p: &SubscriptionProfile) -> Result<CompiledSubscriptions, String> {
    let at = "webhooks.subscriptions";
    let expr = |w: &str, src: &str| Jsonata::compile(src).map_err(|e| format!("{at}.{w}: {e}"));
    let mut by_method: HashMap<String, matchit::Router<usize>> = HashMap::new();
    let mut routes = Vec::new();
    for (i, r) in p.routes.iter().enumerate() {
        let here = format!("{at}.routes[{i}]");
        by_method
            .entry(r.method.to_uppercase())
            .or_default()
            .insert(r.path.clone(), i)
            .map_err(|e| format!("{here}: route {}: {e}", r.path))?;
        let needs_param = matches!(
            r.action,
            Action::Show | Action::Secret | Action::Update | Action::Delete
        );
        if needs_param && r.param.is_none() {
            return Err(format!("{here}: {:?} needs `param`", r.action));
        }
        if matches!(r.action, Action::Create | Action::Update) && r.record.is_none() {
            return Err(format!("{here}: {:?} needs `record`", r.action));
        }
        if r.validate.is_some() && !matches!(r.action, Action::Create | Action::Update) {
            return Err(format!("{here}: only create and update can `validate`"));
        }
        let validate = match &r.validate {
            Some(v) => Some(CompiledValidation {
                urls: expr("validate.urls", &v.urls)?,
                param: v.param.clone(),
                token: v
                    .token
                    .as_deref()
                    .map(|t| expr("validate.token", t))
                    .transpose()?,
                method: reqwest::Method::from_bytes(v.method.to_uppercase().as_bytes())
                    .map_err(|e| format!("{here}.validate.method: {e}"))?,
                content_type: v.content_type.clone(),
                answer_content_type: v.answer_content_type.to_lowercase(),
                timeout: Duration::from_millis(v.timeout_ms),
                failed: FixedAnswer::compile(&format!("{here}.validate.failed"), &v.failed)?,
            }),
            None => None,
        };
        routes.push(CompiledRoute {
            action: r.action,
            param: r.param.clone(),
            refuse: r
                .refuse
                .iter()
                .map(|f| {
                    Ok((
                        expr("refuse", &f.when)?,
                        FixedAnswer::compile(&here, &f.answer)?,
                    ))
                })
                .collect::<Result<_, String>>()?,
            record: r.record.as_deref().map(|s| expr("record", s)).transpose()?,
            validate,
            answer: FixedAnswer::compile(&here, &r.answer)?,
        });
    }
    Ok(CompiledSubscriptions {
        by_method,
        routes,
        secret_from: p
            .secret_from
            .as_deref()
            .map(|s| expr("secret_from", s))
            .transpose()?,
        endpoint: expr("endpoint", &p.endpoint)?,
        endpoints: p
            .endpoints
            .iter()
            .map(|(k, v)| Ok((k.clone(), expr(&format!("endpoints.{k}"), v)?)))
            .collect::<Result<_, String>>()?,
        active: p.active.as_deref().map(|s| expr("active", s)).transpose()?,
        accepts: p
            .accepts
            .as_deref()
            .map(|s| expr("accepts", s))
            .transpose()?,
        not_found: FixedAnswer::compile(&format!("{at}.not_found"), &p.not_found)?,
    })
}

/// One registered subscription.
#[derive(Clone)]
struct Stored {
    id: String,
    secret: String,
    record: Value,
}

/// The subscriptions registered so far.
#[derive(Default)]
pub struct Store {
    all: Mutex<Vec<Stored>>,
    next: AtomicU64,
}

/// A subscription as deliveries use it.
pub struct Active {
    pub id: String,
    /// Empty when the subscription has none.
    pub secret: String,
    pub endpoint: String,
    pub record: Value,
}

/// The active subscriptions, oldest first, with the endpoint deliveries of `format` go to.
pub fn active(s: &Sandbox, format: &str) -> Vec<Active> {
    let Some(c) = s
        .compiled
        .webhooks
        .as_ref()
        .and_then(|w| w.subscriptions.as_ref())
    else {
        return Vec::new();
    };
    lock(&s.subscriptions.all)
        .iter()
        .filter(|st| is_active(c, &st.record))
        .map(|st| Active {
            id: st.id.clone(),
            secret: st.secret.clone(),
            endpoint: endpoint_for(c, &st.record, format),
            record: st.record.clone(),
        })
        .collect()
}

/// Whether a subscription gets a delivery with this body.
pub fn accepts(s: &Sandbox, subscription: &Value, body: &Value) -> bool {
    let Some(e) = s
        .compiled
        .webhooks
        .as_ref()
        .and_then(|w| w.subscriptions.as_ref())
        .and_then(|c| c.accepts.as_ref())
    else {
        return true;
    };
    truthy(
        &e.eval_json(&json!({"subscription": subscription, "body": body}))
            .ok()
            .flatten(),
    )
}

fn is_active(c: &CompiledSubscriptions, record: &Value) -> bool {
    c.active
        .as_ref()
        .is_none_or(|e| truthy(&e.eval_json(record).ok().flatten()))
}

fn endpoint(c: &CompiledSubscriptions, record: &Value) -> String {
    endpoint_for(c, record, "")
}

/// The URL deliveries of a format go to: the format's own `endpoints` entry when it has
/// one that gives a URL, else `endpoint`.
fn endpoint_for(c: &CompiledSubscriptions, record: &Value, format: &str) -> String {
    let own = c
        .endpoints
        .get(format)
        .and_then(|e| e.eval_json(record).ok().flatten())
        .filter(|v| !v.is_null());
    if let Some(v) = own {
        return text(&v);
    }
    c.endpoint
        .eval_json(record)
        .ok()
        .flatten()
        .map(|v| text(&v))
        .unwrap_or_default()
}

/// `GET /_sandbox/webhooks/subscriptions`: `{"subscriptions": [{id, endpoint, status}]}`
/// (status `active` or `inactive`; never the secret).
pub async fn list_control(State(s): State<Arc<Sandbox>>) -> Response {
    let Some(c) = s
        .compiled
        .webhooks
        .as_ref()
        .and_then(|w| w.subscriptions.as_ref())
    else {
        return Json(json!({"subscriptions": []})).into_response();
    };
    let list: Vec<Value> = lock(&s.subscriptions.all)
        .iter()
        .map(|st| {
            json!({
                "id": st.id,
                "endpoint": endpoint(c, &st.record),
                "status": if is_active(c, &st.record) { "active" } else { "inactive" },
            })
        })
        .collect();
    Json(json!({"subscriptions": list})).into_response()
}

/// A request for a subscription route, answered; `None` when no such route matches.
pub fn route(
    s: &Sandbox,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
    arrival: &auth::Arrival,
) -> Option<Response> {
    let c = s.compiled.webhooks.as_ref()?.subscriptions.as_ref()?;
    let found = c.by_method.get(method.as_str())?.at(uri.path()).ok()?;
    let params: Map<String, Value> = found
        .params
        .iter()
        .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
        .collect();
    let r = &c.routes[*found.value];
    let (query, request) = routes::request_context(uri, params, headers, body);
    if !auth::authorized(s, headers, &query, arrival) {
        lock(&s.stats).unauthorized += 1;
        return Some(s.compiled.unauthorized.render(&request));
    }
    for (i, (when, answer)) in r.refuse.iter().enumerate() {
        match when.eval_json(&request) {
            Ok(v) if truthy(&v) => {
                lock(&s.stats).refused += 1;
                return Some(answer.render(&request));
            }
            Ok(_) => {}
            Err(e) => {
                let message = json!({"error": format!(
                    "sandbox profile: webhooks.subscriptions refuse[{i}].when failed: {e}"
                )});
                return Some(json_response(500, &message, Vec::new()));
            }
        }
    }
    let store = &s.subscriptions;
    let id = r
        .param
        .as_ref()
        .map(|p| text(&request["params"][p.as_str()]));
    let answer = |ctx: Value| -> Response {
        if r.answer.status() == 204 {
            return StatusCode::NO_CONTENT.into_response();
        }
        r.answer.render(&ctx)
    };
    let profile_error = |what: &str, e: String| -> Response {
        let message = json!({"error": format!(
            "sandbox profile: webhooks.subscriptions {what} failed: {e}"
        )});
        json_response(500, &message, Vec::new())
    };
    let now = Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true);
    let response = match r.action {
        Action::Create => {
            if let Some(v) = &r.validate {
                let ctx = json!({"request": request, "subscription": null});
                if let Some(failed) = validate(v, &ctx, &request) {
                    return Some(failed);
                }
            }
            let subscription_profile = s
                .profile
                .webhooks
                .as_ref()
                .and_then(|w| w.subscriptions.as_ref());
            let id = match subscription_profile.map(|p| p.id_format) {
                Some(IdFormat::Counter) => {
                    (store.next.fetch_add(1, Ordering::Relaxed) + 1).to_string()
                }
                Some(IdFormat::Uuid) => uuid_v4(),
                _ => ulid(),
            };
            let ctx = json!({"request": request, "id": id, "now": now});
            let record = match r.record.as_ref().map(|e| e.eval_json(&ctx)) {
                Some(Ok(Some(v))) if v.is_object() => v,
                Some(Err(e)) => return Some(profile_error("create record", e.to_string())),
                _ => json!({"id": id}),
            };
            let secret = match &c.secret_from {
                Some(_) => secret_of(c, &record),
                None => {
                    let length =
                        subscription_profile.map_or(default_secret_length(), |p| p.secret_length);
                    Alphanumeric.sample_string(&mut rand::rng(), length)
                }
            };
            lock(&store.all).push(Stored {
                id,
                secret: secret.clone(),
                record: record.clone(),
            });
            answer(json!({"subscription": record, "secret": secret, "request": request}))
        }
        Action::List => {
            let all: Vec<Value> = lock(&store.all)
                .iter()
                .map(|st| st.record.clone())
                .collect();
            answer(json!({"subscriptions": all, "request": request}))
        }
        Action::Update => {
            let id = id.unwrap_or_default();
            let Some(current) = lock(&store.all).iter().find(|st| st.id == id).cloned() else {
                return Some(c.not_found.render(&json!({"id": id, "request": request})));
            };
            if let Some(v) = &r.validate {
                let ctx = json!({"request": request, "subscription": current.record});
                if let Some(failed) = validate(v, &ctx, &request) {
                    return Some(failed);
                }
            }
            let ctx = json!({"subscription": current.record, "request": request,
                "id": id, "now": now});
            let record = match r.record.as_ref().map(|e| e.eval_json(&ctx)) {
                Some(Ok(Some(v))) if v.is_object() => v,
                Some(Err(e)) => return Some(profile_error("update record", e.to_string())),
                _ => current.record.clone(),
            };
            let secret = match &c.secret_from {
                Some(_) => secret_of(c, &record),
                None => current.secret.clone(),
            };
            let mut all = lock(&store.all);
            let Some(st) = all.iter_mut().find(|st| st.id == id) else {
                // Deleted while the URLs were being validated.
                drop(all);
                return Some(c.not_found.render(&json!({"id": id, "request": request})));
            };
            st.record = record.clone();
            st.secret = secret.clone();
            drop(all);
            answer(json!({"subscription": record, "secret": secret, "request": request}))
        }
        Action::Show | Action::Secret | Action::Delete => {
            let id = id.unwrap_or_default();
            let mut all = lock(&store.all);
            let Some(at) = all.iter().position(|st| st.id == id) else {
                drop(all);
                return Some(c.not_found.render(&json!({"id": id, "request": request})));
            };
            let st = if r.action == Action::Delete {
                all.remove(at)
            } else {
                all[at].clone()
            };
            drop(all);
            answer(json!({"subscription": st.record, "secret": st.secret, "request": request}))
        }
    };
    Some(response)
}

/// The secret `secret_from` reads from a stored subscription; empty when none.
fn secret_of(c: &CompiledSubscriptions, record: &Value) -> String {
    c.secret_from
        .as_ref()
        .and_then(|e| e.eval_json(record).ok().flatten())
        .filter(|v| !v.is_null())
        .map(|v| text(&v))
        .unwrap_or_default()
}

/// Validate every URL the request names, in order: the `failed` answer for the first
/// that does not echo its token, `None` when all do.
fn validate(v: &CompiledValidation, ctx: &Value, request: &Value) -> Option<Response> {
    let urls: Vec<String> = match v.urls.eval_json(ctx) {
        Ok(Some(Value::Array(items))) => items.iter().filter(|u| !u.is_null()).map(text).collect(),
        Ok(Some(Value::Null)) | Ok(None) => Vec::new(),
        Ok(Some(one)) => vec![text(&one)],
        Err(e) => {
            let message = json!({"error": format!(
                "sandbox profile: webhooks.subscriptions validate.urls failed: {e}"
            )});
            return Some(json_response(500, &message, Vec::new()));
        }
    };
    for url in urls {
        let random = uuid_v4();
        let token = match &v.token {
            Some(e) => e
                .eval_json(&json!({"request": request, "random": random}))
                .ok()
                .flatten()
                .map(|t| text(&t))
                .unwrap_or(random),
            None => random,
        };
        if let Err(reason) = run_to_end(handshake(v, &url, &token)) {
            return Some(v.failed.render(&json!({
                "request": request, "url": url, "reason": reason
            })));
        }
    }
    None
}

/// One URL's handshake: why it failed, if it did.
async fn handshake(v: &CompiledValidation, url: &str, token: &str) -> Result<(), String> {
    let mut target = reqwest::Url::parse(url).map_err(|e| format!("{url}: {e}"))?;
    target.query_pairs_mut().append_pair(&v.param, token);
    let client = reqwest::Client::builder()
        .timeout(v.timeout)
        .build()
        .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
    let resp = client
        .request(v.method.clone(), target)
        .header(reqwest::header::CONTENT_TYPE, v.content_type.as_str())
        .body("")
        .send()
        .await
        .map_err(|e| format!("no answer from {url}: {e}"))?;
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .to_lowercase();
    let body = resp
        .text()
        .await
        .map_err(|e| format!("no answer body from {url}: {e}"))?;
    if status != 200 {
        return Err(format!("{url} answered {status}, not 200"));
    }
    if !content_type.starts_with(&v.answer_content_type) {
        return Err(format!(
            "{url} answered Content-Type {content_type:?}, not {}",
            v.answer_content_type
        ));
    }
    if body != token {
        return Err(format!("{url} did not answer the token it was given"));
    }
    Ok(())
}

/// Run a future to its end from a synchronous request handler: on a multi-threaded
/// runtime in place (the other workers go on serving, e.g. a receiver in the same
/// process); otherwise on a thread of its own with its own runtime (a receiver served by
/// the very runtime thread that waits here cannot answer in time).
fn run_to_end<F>(f: F) -> Result<(), String>
where
    F: Future<Output = Result<(), String>> + Send,
{
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(|| h.block_on(f))
        }
        _ => std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(|e| format!("cannot start a runtime: {e}"))?
                        .block_on(f)
                })
                .join()
                .unwrap_or_else(|_| Err("the validation thread panicked".into()))
        }),
    }
}

/// A ULID: 48 bits of milliseconds, then 80 random bits, in Crockford's base 32.
fn ulid() -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let ms = Utc::now().timestamp_millis().max(0) as u128;
    let random: u128 = rand::random::<u128>() & ((1u128 << 80) - 1);
    let mut n = (ms << 80) | random;
    let mut out = [0u8; 26];
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(n & 31) as usize];
        n >>= 5;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn ulids_are_26_characters_and_ordered_by_time() {
        let a = super::ulid();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = super::ulid();
        assert_eq!(a.len(), 26);
        assert!(a[..10] < b[..10], "{a} {b}");
    }
}
