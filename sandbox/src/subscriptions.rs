//! Webhook subscriptions a tenant registers through the provider's API, as the profile's
//! `webhooks.subscriptions` declares the routes: `create` stores a subscription (the
//! profile's `record` over the request, with a generated id and signing secret), `list`,
//! `show` and `secret` answer it, `delete` removes it. The routes sit behind the profile's
//! normal credential check and their `refuse` rules (e.g. a missing required field).
//! `POST /_sandbox/webhooks/send` without a URL delivers to every active one, signed
//! with its secret; `GET /_sandbox/webhooks/subscriptions` lists them (no secrets).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{SecondsFormat, Utc};
use rand::distr::{Alphanumeric, SampleString};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tributary::mapping::jsonata::{truthy, Jsonata};

use crate::profile::{Answer, Refusal};
use crate::respond::{json_response, text, FixedAnswer};
use crate::state::Sandbox;
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
    /// JSONata over the stored subscription: the URL deliveries go to.
    pub endpoint: String,
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
}

/// One subscription route.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionRoute {
    pub action: Action,
    #[serde(default = "default_method")]
    pub method: String,
    pub path: String,
    /// The path parameter holding the subscription's id (`show`, `secret`, `delete`).
    #[serde(default)]
    pub param: Option<String>,
    /// Requests refused (JSONata over the request context), checked in order.
    #[serde(default)]
    pub refuse: Vec<Refusal>,
    /// For `create`: JSONata over `{request, id, now}`, the subscription as stored and shown.
    #[serde(default)]
    pub record: Option<String>,
    /// JSONata body over `{subscription, secret, subscriptions, request}`.
    pub answer: Answer,
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
    Delete,
}

struct CompiledRoute {
    action: Action,
    param: Option<String>,
    refuse: Vec<(Jsonata, FixedAnswer)>,
    record: Option<Jsonata>,
    answer: FixedAnswer,
}

pub struct CompiledSubscriptions {
    by_method: HashMap<String, matchit::Router<usize>>,
    routes: Vec<CompiledRoute>,
    endpoint: Jsonata,
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
        let needs_param = matches!(r.action, Action::Show | Action::Secret | Action::Delete);
        if needs_param && r.param.is_none() {
            return Err(format!("{here}: {:?} needs `param`", r.action));
        }
        if r.action == Action::Create && r.record.is_none() {
            return Err(format!("{here}: create needs `record`"));
        }
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
            answer: FixedAnswer::compile(&here, &r.answer)?,
        });
    }
    Ok(CompiledSubscriptions {
        by_method,
        routes,
        endpoint: expr("endpoint", &p.endpoint)?,
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
    pub secret: String,
    pub endpoint: String,
    pub record: Value,
}

/// The active subscriptions, oldest first.
pub fn active(s: &Sandbox) -> Vec<Active> {
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
            endpoint: endpoint(c, &st.record),
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
    let response = match r.action {
        Action::Create => {
            let id = match s
                .profile
                .webhooks
                .as_ref()
                .and_then(|w| w.subscriptions.as_ref())
            {
                Some(p) if p.id_format == IdFormat::Counter => {
                    (store.next.fetch_add(1, Ordering::Relaxed) + 1).to_string()
                }
                _ => ulid(),
            };
            let length = s
                .profile
                .webhooks
                .as_ref()
                .and_then(|w| w.subscriptions.as_ref())
                .map_or(default_secret_length(), |p| p.secret_length);
            let secret = Alphanumeric.sample_string(&mut rand::rng(), length);
            let now = Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true);
            let ctx = json!({"request": request, "id": id, "now": now});
            let record = match r.record.as_ref().map(|e| e.eval_json(&ctx)) {
                Some(Ok(Some(v))) if v.is_object() => v,
                Some(Err(e)) => {
                    let message = json!({"error": format!(
                        "sandbox profile: webhooks.subscriptions create record failed: {e}"
                    )});
                    return Some(json_response(500, &message, Vec::new()));
                }
                _ => json!({"id": id}),
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
