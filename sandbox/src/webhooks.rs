//! Signed webhook deliveries the sandbox sends on demand, as the profile's `webhooks`
//! section declares them (data, not code): the key, the default account, the body
//! (one JSONata per format), the headers, the timestamp header and the signature
//! recipes. `POST /_sandbox/webhooks/send` renders the deliveries for the events it is
//! given and sends them over HTTP, each attempt rendered and signed afresh; it can
//! repeat a delivery (`times`), re-send it after a failure (`retry`) and spoil it on
//! purpose (`tamper`), and answers what every attempt got back.
//!
//! Request: `{"url"?, "events": [{"resource", "id", "op": "created"|"updated"|"deleted",
//! "account"?, "data"?}], "times"?, "tamper"?: "signature"|"body"|"stale"|"wrong_key",
//! "retry"?: {"attempts", "delay_ms"}, "format"?, "secret"?}`. Without `url` every active
//! registered subscription (`subscriptions`) gets the deliveries, signed with its own
//! secret, at the endpoint it gives for the format (`subscriptions.endpoints`). Answer: `{"deliveries": [{"url", "subscription_id", "event_ids", "attempts":
//! [{"status", "elapsed_ms", "body", "error"?}]}]}`, status 0 for a connection error.
//! With `"hold": true` nothing is sent yet: the answer is `{"held": id}`, and
//! `POST /_sandbox/webhooks/release` with `{"held": id}` sends those deliveries later
//! (rendered from the records as they were when held), answering as a send does.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use chrono::{DateTime, SecondsFormat, Utc};
use hmac::{Hmac, Mac};
use indexmap::IndexMap;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tributary::mapping::jsonata::Jsonata;

use crate::lock;
use crate::respond::text;
use crate::state::Sandbox;
use crate::subscriptions::{self, CompiledSubscriptions, SubscriptionProfile};
use crate::throttle::epoch_millis;

/// The profile's `webhooks` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookProfile {
    /// The signing key of app-level deliveries (a registered subscription has its own).
    pub secret: String,
    /// The account events belong to unless an event names one.
    #[serde(default)]
    pub account: Option<String>,
    /// All events of a send in one body (`true`), or one request per event.
    #[serde(default = "yes")]
    pub batch: bool,
    /// At most this many events in one batched body (more are split over several requests).
    #[serde(default)]
    pub max_batch: Option<usize>,
    /// The deliveries' HTTP method.
    #[serde(default = "post")]
    pub method: String,
    /// Format name -> JSONata body over `{events, attempt, now_ms, now, account,
    /// subscription, url, timestamp, secret}` (`secret`: the delivery's key, spoiled
    /// under `tamper` `signature` or `wrong_key`, null when there is none, for a provider
    /// that sends a shared secret in the body instead of signing it); the first is the
    /// default format. Each event is
    /// `{resource, id, op, account, event_id, event_number, occurred_at_ms, occurred_at,
    /// record, data}` (`record`: the provider's record as the routes answer it, null when
    /// there is none).
    pub bodies: IndexMap<String, String>,
    /// Header name -> JSONata over the same context (an undefined result leaves the header
    /// out); `Content-Type: application/json` unless given.
    #[serde(default)]
    pub headers: IndexMap<String, String>,
    /// The header carrying the signing time, and how it is written.
    #[serde(default)]
    pub timestamp: Option<TimestampRecipe>,
    /// The signatures each delivery carries.
    #[serde(default)]
    pub signatures: Vec<SignatureRecipe>,
    /// How event ids are made: `uuid` (random, v4 form) or `counter` (a number, as text).
    #[serde(default)]
    pub event_ids: EventIds,
    /// Answer statuses after which the provider does not re-send (under `retry`).
    #[serde(default)]
    pub no_retry: Vec<u16>,
    /// How long the provider waits for an answer.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// Routes registering webhook subscriptions (endpoint, generated id and secret).
    #[serde(default)]
    pub subscriptions: Option<SubscriptionProfile>,
}

fn yes() -> bool {
    true
}

fn post() -> String {
    "POST".into()
}

fn default_timeout() -> u64 {
    10_000
}

/// The timestamp header.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimestampRecipe {
    pub header: String,
    pub format: TimestampFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimestampFormat {
    EpochMillis,
    EpochSeconds,
    /// RFC 3339 in whole seconds, UTC (`2024-04-17T17:18:10Z`).
    Rfc3339,
}

/// One signature header: a digest over the parts, in order, concatenated.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureRecipe {
    pub header: String,
    #[serde(default)]
    pub algorithm: DigestAlgorithm,
    pub parts: Vec<SignedPart>,
    #[serde(default)]
    pub encoding: Encoding,
    /// Text before the encoded digest (`sha256=`).
    #[serde(default)]
    pub prefix: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DigestAlgorithm {
    /// HMAC-SHA256 keyed with the secret.
    #[default]
    HmacSha256,
    /// A plain SHA-256 digest (the secret, if signed, is one of the parts).
    Sha256,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignedPart {
    Method,
    /// The full URL the delivery is sent to.
    Url,
    Body,
    /// The timestamp header's value.
    Timestamp,
    Secret,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    #[default]
    Base64,
    Hex,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventIds {
    #[default]
    Uuid,
    Counter,
}

/// The section's expressions, compiled once.
pub struct CompiledWebhooks {
    pub bodies: IndexMap<String, Jsonata>,
    pub headers: Vec<(String, Jsonata)>,
    pub subscriptions: Option<CompiledSubscriptions>,
}

pub fn compile(w: &WebhookProfile) -> Result<CompiledWebhooks, String> {
    let expr = |at: String, src: &str| Jsonata::compile(src).map_err(|e| format!("{at}: {e}"));
    if w.bodies.is_empty() {
        return Err("webhooks.bodies: give at least one body".into());
    }
    Ok(CompiledWebhooks {
        bodies: w
            .bodies
            .iter()
            .map(|(k, v)| Ok((k.clone(), expr(format!("webhooks.bodies.{k}"), v)?)))
            .collect::<Result<_, String>>()?,
        headers: w
            .headers
            .iter()
            .map(|(k, v)| Ok((k.clone(), expr(format!("webhooks.headers.{k}"), v)?)))
            .collect::<Result<_, String>>()?,
        subscriptions: w
            .subscriptions
            .as_ref()
            .map(subscriptions::compile)
            .transpose()?,
    })
}

/// `POST /_sandbox/webhooks/send`'s body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    #[serde(default)]
    url: Option<String>,
    events: Vec<EventIn>,
    #[serde(default = "one")]
    times: u32,
    #[serde(default)]
    tamper: Option<Tamper>,
    #[serde(default)]
    retry: Option<Retry>,
    #[serde(default)]
    format: Option<String>,
    #[serde(default)]
    secret: Option<String>,
    /// Prepare the deliveries (records as they are now) but send them only on
    /// `POST /_sandbox/webhooks/release`: a delivery that arrives late, after newer ones.
    #[serde(default)]
    hold: bool,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventIn {
    resource: String,
    id: Value,
    op: Op,
    #[serde(default)]
    account: Option<Value>,
    /// Free-form details the body may read (e.g. which property changed).
    #[serde(default)]
    data: Option<Value>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Op {
    Created,
    Updated,
    Deleted,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Created => "created",
            Op::Updated => "updated",
            Op::Deleted => "deleted",
        }
    }
}

/// How a delivery is spoiled on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tamper {
    /// A signature value that does not match the request.
    Signature,
    /// The body changed after it was signed.
    Body,
    /// Signed correctly, with a timestamp 10 minutes old.
    Stale,
    /// Signed correctly with another key.
    WrongKey,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
struct Retry {
    attempts: u32,
    #[serde(default)]
    delay_ms: u64,
}

/// Where a delivery goes, with which key, for which subscription.
struct Target {
    url: String,
    secret: String,
    subscription: Option<Value>,
    subscription_id: Option<String>,
}

fn refuse(message: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": "bad_request", "message": message})),
    )
        .into_response()
}

pub async fn send(State(s): State<Arc<Sandbox>>, Json(req): Json<SendRequest>) -> Response {
    let planned = match plan(&s, &req) {
        Ok(p) => p,
        Err(message) => return refuse(message),
    };
    if req.hold {
        let id = format!("held_{}", s.webhook_events.next());
        lock(&s.held).insert(id.clone(), planned);
        return Json(json!({"held": id})).into_response();
    }
    match deliver_all(&s, &planned).await {
        Ok(deliveries) => Json(json!({"deliveries": deliveries})).into_response(),
        Err(message) => refuse(message),
    }
}

/// `POST /_sandbox/webhooks/release` (`{"held"}`): send what a `hold` send prepared,
/// now, as it was rendered then (the records as they were), signed afresh.
pub async fn release(State(s): State<Arc<Sandbox>>, Json(req): Json<ReleaseRequest>) -> Response {
    let Some(planned) = lock(&s.held).remove(&req.held) else {
        return refuse(format!("nothing is held as {}", req.held));
    };
    match deliver_all(&s, &planned).await {
        Ok(deliveries) => Json(json!({"deliveries": deliveries})).into_response(),
        Err(message) => refuse(message),
    }
}

/// `POST /_sandbox/webhooks/release`'s body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseRequest {
    held: String,
}

/// A send made ready: its events (with their ids and records as they are now), grouped
/// into bodies, and where each group goes.
pub struct Planned {
    format: String,
    targets: Vec<Target>,
    groups: Vec<Vec<Value>>,
    times: u32,
    tamper: Option<Tamper>,
    retries: u32,
    delay: Duration,
}

fn plan(s: &Sandbox, req: &SendRequest) -> Result<Planned, String> {
    let (Some(profile), Some(compiled)) = (&s.profile.webhooks, &s.compiled.webhooks) else {
        return Err("this profile declares no webhooks".into());
    };
    if req.events.is_empty() {
        return Err("no events".into());
    }
    if req.times == 0 {
        return Err("times must be at least 1".into());
    }
    let format = match &req.format {
        Some(f) if compiled.bodies.contains_key(f) => f.clone(),
        Some(f) => {
            let known: Vec<&String> = compiled.bodies.keys().collect();
            return Err(format!("no body format {f} (the profile has {known:?})"));
        }
        None => compiled.bodies.keys().next().cloned().unwrap_or_default(),
    };
    for e in &req.events {
        if !s.profile.resources.contains_key(&e.resource) {
            return Err(format!("no resource {}", e.resource));
        }
    }
    let targets = targets(s, profile, req, &format)?;
    // Each event gets its id once: repeats and retries carry the same ids.
    let events = events(s, profile, &req.events);
    let size = match (profile.batch, profile.max_batch) {
        (false, _) => 1,
        (true, Some(n)) => n.max(1),
        (true, None) => events.len(),
    };
    Ok(Planned {
        format,
        targets,
        groups: events.chunks(size).map(<[Value]>::to_vec).collect(),
        times: req.times,
        tamper: req.tamper,
        retries: req.retry.map_or(0, |r| r.attempts),
        delay: Duration::from_millis(req.retry.map_or(0, |r| r.delay_ms)),
    })
}

/// Every group to every target, `times` times, each attempt rendered and signed afresh;
/// what each delivery's attempts got back.
async fn deliver_all(s: &Sandbox, p: &Planned) -> Result<Vec<Value>, String> {
    let (Some(profile), Some(compiled)) = (&s.profile.webhooks, &s.compiled.webhooks) else {
        return Err("this profile declares no webhooks".into());
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(profile.timeout_ms))
        .build()
        .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
    let mut deliveries = Vec::new();
    for target in &p.targets {
        for group in &p.groups {
            // A registered subscription gets only the events it subscribed to.
            if let Some(sub) = &target.subscription {
                let probe = render(profile, compiled, &p.format, group, 0, target, None)?;
                let body: Value = serde_json::from_str(&probe.body).unwrap_or(Value::Null);
                if !subscriptions::accepts(s, sub, &body) {
                    continue;
                }
            }
            let event_ids: Vec<Value> = group.iter().map(|e| e["event_id"].clone()).collect();
            let mut attempt = 0u32;
            for _ in 0..p.times {
                let mut attempts = Vec::new();
                for r in 0..=p.retries {
                    if r > 0 && !p.delay.is_zero() {
                        tokio::time::sleep(p.delay).await;
                    }
                    let rendered = render(
                        profile, compiled, &p.format, group, attempt, target, p.tamper,
                    )?;
                    attempt += 1;
                    let outcome = deliver(&client, &profile.method, target, rendered).await;
                    lock(&s.stats).webhook_attempts += 1;
                    let status = outcome["status"].as_u64().unwrap_or(0) as u16;
                    attempts.push(outcome);
                    let done = (200..300).contains(&status)
                        || (status != 0 && profile.no_retry.contains(&status));
                    if done {
                        break;
                    }
                }
                lock(&s.stats).webhooks_sent += 1;
                deliveries.push(json!({
                    "url": target.url,
                    "subscription_id": target.subscription_id,
                    "event_ids": event_ids,
                    "attempts": attempts,
                }));
            }
        }
    }
    Ok(deliveries)
}

/// The request's URL, or every active registered subscription.
fn targets(
    s: &Sandbox,
    profile: &WebhookProfile,
    req: &SendRequest,
    format: &str,
) -> Result<Vec<Target>, String> {
    if let Some(url) = &req.url {
        let url = reqwest::Url::parse(url).map_err(|e| format!("url {url}: {e}"))?;
        return Ok(vec![Target {
            url: url.to_string(),
            secret: req.secret.clone().unwrap_or_else(|| profile.secret.clone()),
            subscription: None,
            subscription_id: None,
        }]);
    }
    let registered = subscriptions::active(s, format);
    if profile.subscriptions.is_none() {
        return Err("give a url: this profile registers no subscriptions".into());
    }
    if registered.is_empty() {
        return Err("no url, and no active subscription is registered".into());
    }
    registered
        .into_iter()
        .map(|sub| {
            let url = reqwest::Url::parse(&sub.endpoint)
                .map_err(|e| format!("subscription {} endpoint {}: {e}", sub.id, sub.endpoint))?;
            Ok(Target {
                url: url.to_string(),
                secret: req.secret.clone().unwrap_or(sub.secret),
                subscription: Some(sub.record),
                subscription_id: Some(sub.id),
            })
        })
        .collect()
}

/// The events as the bodies read them, each with its id and time.
fn events(s: &Sandbox, profile: &WebhookProfile, given: &[EventIn]) -> Vec<Value> {
    let now = Utc::now();
    given
        .iter()
        .map(|e| {
            let number = s.webhook_events.next();
            let event_id = match profile.event_ids {
                EventIds::Counter => number.to_string(),
                EventIds::Uuid => uuid_v4(),
            };
            let id = text(&e.id);
            let account = e
                .account
                .as_ref()
                .map(text)
                .or_else(|| profile.account.clone());
            json!({
                "resource": e.resource,
                "id": id,
                "op": e.op.name(),
                "account": account,
                "event_id": event_id,
                "event_number": number,
                "occurred_at_ms": now.timestamp_millis(),
                "occurred_at": now.to_rfc3339_opts(SecondsFormat::Millis, true),
                "record": record(s, &e.resource, &id),
                "data": e.data,
            })
        })
        .collect()
}

/// The provider's record with this id as the routes answer it (or as it was when
/// deleted), null when there is none.
fn record(s: &Sandbox, resource: &str, id: &str) -> Value {
    let (Some(compiled), Ok(id)) = (s.compiled.resources.get(resource), id.parse::<u64>()) else {
        return Value::Null;
    };
    let mut data = lock(&s.data);
    let Some(set) = data.get_mut(resource) else {
        return Value::Null;
    };
    if let Some(i) = set.records.iter().position(|r| r.id == id) {
        return (*set.render(compiled, i)).clone();
    }
    set.tombstones
        .iter()
        .rev()
        .find(|t| t.id == id)
        .map_or(Value::Null, |t| (*t.record).clone())
}

/// One attempt's request: body and headers, signed.
struct Rendered {
    body: String,
    headers: Vec<(String, String)>,
}

fn render(
    profile: &WebhookProfile,
    compiled: &CompiledWebhooks,
    format: &str,
    events: &[Value],
    attempt: u32,
    target: &Target,
    tamper: Option<Tamper>,
) -> Result<Rendered, String> {
    let now = Utc::now();
    let signed_at = match tamper {
        Some(Tamper::Stale) => now - chrono::Duration::minutes(10),
        _ => now,
    };
    let timestamp = profile
        .timestamp
        .as_ref()
        .map(|t| format_time(signed_at, t.format));
    let key = match tamper {
        Some(Tamper::WrongKey) => format!("{}-not-the-key", target.secret),
        _ => target.secret.clone(),
    };
    // The secret as a body carrying it shows it: spoiled as the signatures would be.
    let shown_secret = match tamper {
        Some(Tamper::Signature) => json!(format!("{key}-tampered")),
        Some(Tamper::WrongKey) => json!(key),
        _ if key.is_empty() => Value::Null,
        _ => json!(key),
    };
    let ctx = json!({
        "secret": shown_secret,
        "events": events,
        "attempt": attempt,
        "now_ms": epoch_millis(SystemTime::now()),
        "now": now.to_rfc3339_opts(SecondsFormat::Millis, true),
        "account": events.first().map_or(Value::Null, |e| e["account"].clone()),
        "subscription": target.subscription,
        "url": target.url,
        "timestamp": timestamp,
    });
    let body = compiled.bodies[format]
        .eval_json(&ctx)
        .map_err(|e| format!("webhooks.bodies.{format}: {e}"))?
        .unwrap_or(Value::Null);
    let mut body_text = body.to_string();
    let mut headers: Vec<(String, String)> = Vec::new();
    for (name, e) in &compiled.headers {
        if let Some(v) = e
            .eval_json(&ctx)
            .map_err(|e| format!("webhooks.headers.{name}: {e}"))?
        {
            if !v.is_null() {
                headers.push((name.clone(), text(&v)));
            }
        }
    }
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
    {
        headers.push(("Content-Type".into(), "application/json".into()));
    }
    if let (Some(t), Some(ts)) = (&profile.timestamp, &timestamp) {
        headers.push((t.header.clone(), ts.clone()));
    }
    for recipe in &profile.signatures {
        let mut message = Vec::new();
        for part in &recipe.parts {
            match part {
                SignedPart::Method => message.extend(profile.method.to_uppercase().bytes()),
                SignedPart::Url => message.extend(target.url.bytes()),
                SignedPart::Body => message.extend(body_text.bytes()),
                SignedPart::Timestamp => message.extend(timestamp.iter().flat_map(|t| t.bytes())),
                SignedPart::Secret => message.extend(key.bytes()),
            }
        }
        if tamper == Some(Tamper::Signature) {
            message.extend(b"-tampered");
        }
        let signature = sign(recipe, key.as_bytes(), &message);
        headers.push((recipe.header.clone(), signature));
    }
    if tamper == Some(Tamper::Body) {
        let mut altered: Value = serde_json::from_str(&body_text).unwrap_or(Value::Null);
        body_text = if alter(&mut altered) {
            altered.to_string()
        } else {
            format!("{body_text} ")
        };
    }
    Ok(Rendered {
        body: body_text,
        headers,
    })
}

/// The digest of `message` as the recipe encodes it.
pub fn sign(recipe: &SignatureRecipe, key: &[u8], message: &[u8]) -> String {
    let digest: Vec<u8> = match recipe.algorithm {
        DigestAlgorithm::HmacSha256 => {
            let mut mac =
                Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
            mac.update(message);
            mac.finalize().into_bytes().to_vec()
        }
        DigestAlgorithm::Sha256 => Sha256::digest(message).to_vec(),
    };
    let encoded = match recipe.encoding {
        Encoding::Base64 => base64::engine::general_purpose::STANDARD.encode(&digest),
        Encoding::Hex => digest.iter().map(|b| format!("{b:02x}")).collect(),
    };
    format!("{}{encoded}", recipe.prefix.as_deref().unwrap_or_default())
}

fn format_time(t: DateTime<Utc>, format: TimestampFormat) -> String {
    match format {
        TimestampFormat::EpochMillis => t.timestamp_millis().to_string(),
        TimestampFormat::EpochSeconds => t.timestamp().to_string(),
        TimestampFormat::Rfc3339 => t.to_rfc3339_opts(SecondsFormat::Secs, true),
    }
}

/// Change the first string or number in a JSON value (depth first); false when it has none.
fn alter(v: &mut Value) -> bool {
    match v {
        Value::String(s) => {
            s.push('9');
            true
        }
        Value::Number(n) => {
            *v = match n.as_i64() {
                Some(i) => json!(i.wrapping_add(1)),
                None => json!(n.as_f64().unwrap_or(0.0) + 1.0),
            };
            true
        }
        Value::Array(items) => items.iter_mut().any(alter),
        Value::Object(map) => map.values_mut().any(alter),
        _ => false,
    }
}

/// Send one attempt; `{status, elapsed_ms, body, error?}` (status 0 when no answer came).
async fn deliver(
    client: &reqwest::Client,
    method: &str,
    target: &Target,
    rendered: Rendered,
) -> Value {
    let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes())
        .unwrap_or(reqwest::Method::POST);
    let mut request = client.request(method, &target.url).body(rendered.body);
    for (k, v) in rendered.headers {
        request = request.header(k, v);
    }
    let started = Instant::now();
    match request.send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let body = resp.text().await.unwrap_or_default();
            let body: String = body.chars().take(4000).collect();
            json!({"status": status, "elapsed_ms": started.elapsed().as_millis() as u64, "body": body})
        }
        Err(e) => json!({
            "status": 0,
            "elapsed_ms": started.elapsed().as_millis() as u64,
            "body": "",
            "error": e.to_string(),
        }),
    }
}

/// A random version-4 UUID in its usual text form.
pub(crate) fn uuid_v4() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// The event counter (numbers handed out in order, from 1001).
#[derive(Default)]
pub struct EventCounter(std::sync::atomic::AtomicU64);

impl EventCounter {
    pub fn next(&self) -> u64 {
        1001 + self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recipe(algorithm: DigestAlgorithm, encoding: Encoding) -> SignatureRecipe {
        SignatureRecipe {
            header: "X-Signature".into(),
            algorithm,
            parts: vec![SignedPart::Body],
            encoding,
            prefix: None,
        }
    }

    #[test]
    fn signatures_are_the_documented_digests() {
        // RFC 4231 test case 2.
        let r = recipe(DigestAlgorithm::HmacSha256, Encoding::Hex);
        assert_eq!(
            sign(&r, b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let r = recipe(DigestAlgorithm::Sha256, Encoding::Hex);
        assert_eq!(
            sign(&r, b"", b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let r = recipe(DigestAlgorithm::Sha256, Encoding::Base64);
        assert_eq!(
            sign(&r, b"", b"abc"),
            "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0="
        );
    }

    #[test]
    fn altering_changes_the_first_leaf() {
        let mut v = json!([{"a": 1, "b": "x"}]);
        assert!(alter(&mut v));
        assert_eq!(v, json!([{"a": 2, "b": "x"}]));
        let mut v = json!({"k": [null, "s"]});
        assert!(alter(&mut v));
        assert_eq!(v, json!({"k": [null, "s9"]}));
        assert!(!alter(&mut json!([null, {}])));
    }

    #[test]
    fn timestamps_in_each_format() {
        let t = DateTime::parse_from_rfc3339("2024-04-17T17:18:10.123Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            format_time(t, TimestampFormat::EpochMillis),
            "1713374290123"
        );
        assert_eq!(format_time(t, TimestampFormat::EpochSeconds), "1713374290");
        assert_eq!(
            format_time(t, TimestampFormat::Rfc3339),
            "2024-04-17T17:18:10Z"
        );
        let u = uuid_v4();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
    }
}
