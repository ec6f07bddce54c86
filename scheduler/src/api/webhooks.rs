//! The webhook receiver: `/webhooks/{provider}` (app delivery) and
//! `/webhooks/{provider}/{hook token}` (per-connection delivery). The raw bytes are
//! checked by `tributary::webhooks::receive` (handshake, method, size, signature); a
//! verified delivery is appended to `<prefix>.webhooks` and answered only once the
//! broker acknowledged it. An append that fails or outlasts
//! `TRIBUTARY_WEBHOOK_ACK_TIMEOUT_MS` gets 503, so the provider retries: nothing is
//! acknowledged that was not stored. App deliveries touch no database on the way.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use tracing::warn;
use tributary::bus::Publisher;
use tributary::spec::compile_webhooks::{CompiledWebhooks, KeyRef};
use tributary::spec::webhooks::Delivery;
use tributary::store::ChannelKey;
use tributary::webhooks::receive::{receive, Reception, Request};

use super::{ApiError, ApiState};

/// What the receiver sends with: a publisher whose appends give up after the timeout.
pub struct WebhookState {
    pub publisher: Publisher,
    pub ack_timeout: Duration,
}

impl WebhookState {
    pub fn new(brokers: &str, ack_timeout: Duration) -> Result<Self, tributary::bus::BusError> {
        Ok(WebhookState {
            publisher: Publisher::with_message_timeout(brokers, ack_timeout)?,
            ack_timeout,
        })
    }

    /// Appends through `publisher` (deliveries on RabbitMQ: its confirms are awaited
    /// within the timeout).
    pub fn on(publisher: Publisher, ack_timeout: Duration) -> Self {
        WebhookState {
            publisher,
            ack_timeout,
        }
    }
}

/// Larger bodies are cut off before the spec's own limit is checked (413 either way).
pub const BODY_LIMIT: usize = 16 * 1024 * 1024;

/// One request as axum hands it over.
pub struct Arrived {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub body: Bytes,
}

pub async fn app_delivery(
    State(state): State<Arc<ApiState>>,
    Path(provider): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let arrived = Arrived {
        method,
        uri,
        headers,
        body,
    };
    deliver(&state, &provider, None, arrived).await
}

pub async fn connection_delivery(
    State(state): State<Arc<ApiState>>,
    Path((provider, token)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let arrived = Arrived {
        method,
        uri,
        headers,
        body,
    };
    deliver(&state, &provider, Some(&token), arrived).await
}

async fn deliver(
    state: &ApiState,
    provider: &str,
    token: Option<&str>,
    arrived: Arrived,
) -> Response {
    let started = Instant::now();
    let (answer, outcome) = match answer(state, provider, token, arrived).await {
        Ok(done) => done,
        Err(e) => {
            let outcome = if e.status == StatusCode::SERVICE_UNAVAILABLE {
                "unavailable"
            } else {
                "rejected"
            };
            (e.into_response(), outcome)
        }
    };
    tributary::telemetry::metrics().webhook_received(provider, outcome, started.elapsed());
    answer
}

async fn answer(
    state: &ApiState,
    provider: &str,
    token: Option<&str>,
    arrived: Arrived,
) -> Result<(Response, &'static str), ApiError> {
    let spec = state
        .syncer
        .spec(provider)
        .ok()
        .filter(|s| s.webhooks.is_some())
        .ok_or_else(|| {
            ApiError::not_found(format!("no provider `{provider}` receives webhooks here"))
        })?;
    let hooks = spec.webhooks.as_ref().expect("filtered");
    let channel = channel(state, provider, hooks, token).await?;
    let headers = lower_headers(&arrived.headers);
    let query: Vec<(String, String)> =
        url::form_urlencoded::parse(arrived.uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let url = public_url(state, &arrived);
    let request = Request {
        provider,
        method: arrived.method.as_str(),
        url: &url,
        query: &query,
        headers: &headers,
        body: &arrived.body,
        channel: channel
            .as_ref()
            .map(|c| (c.connection.as_str(), c.tenant.as_str())),
    };
    let keys = |key: &KeyRef| match key {
        KeyRef::App(name) => state.connect.apps.webhook_keys(provider, name),
        KeyRef::Connection => channel
            .as_ref()
            .and_then(|c| c.secret.clone())
            .into_iter()
            .collect(),
    };
    match receive(hooks, &request, &keys, chrono::Utc::now()) {
        Reception::Answer {
            status,
            content_type,
            body,
        } => Ok((
            (status_code(status), [("content-type", content_type)], body).into_response(),
            "handshake",
        )),
        Reception::Refused {
            status,
            reason,
            label,
        } => {
            warn!(provider, connection = ?channel.as_ref().map(|c| &c.connection), "webhook refused: {reason}");
            if let Some(c) = &channel {
                let _ = state
                    .store
                    .record_delivery_failure(&c.connection, &reason)
                    .await;
            }
            Ok(((status_code(status), reason).into_response(), label))
        }
        Reception::Store(delivery) => {
            append(state, &delivery).await?;
            let ack = &hooks.ack;
            let mut response = (
                status_code(ack.status),
                ack.body.clone().unwrap_or_default(),
            )
                .into_response();
            if let Some(ct) = &ack.content_type {
                if let Ok(v) = ct.parse() {
                    response.headers_mut().insert("content-type", v);
                }
            }
            Ok((response, "stored"))
        }
    }
}

/// Per-connection delivery: the channel the token opens (404 for an unknown one, and for
/// a URL shape the spec does not use).
async fn channel(
    state: &ApiState,
    provider: &str,
    hooks: &CompiledWebhooks,
    token: Option<&str>,
) -> Result<Option<ChannelKey>, ApiError> {
    let unknown = || ApiError::not_found(format!("no such webhook endpoint for `{provider}`"));
    match (hooks.delivery, token) {
        (Delivery::App, None) => Ok(None),
        (Delivery::Connection, Some(token)) => {
            let found = state
                .store
                .channel_by_token(token)
                .await
                .map_err(ApiError::unavailable)?
                .filter(|c| c.provider == provider)
                .ok_or_else(unknown)?;
            Ok(Some(found))
        }
        _ => Err(unknown()),
    }
}

/// Append and wait for the broker, at most the ack timeout.
async fn append(
    state: &ApiState,
    delivery: &tributary::webhooks::RawDelivery,
) -> Result<(), ApiError> {
    let message = delivery.message(&state.topics.webhooks());
    let hooks = &state.webhooks;
    match tokio::time::timeout(hooks.ack_timeout, hooks.publisher.publish_all(&[message])).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(ApiError::unavailable(format!("webhook not stored: {e}"))),
        Err(_) => Err(ApiError::unavailable(format!(
            "webhook not stored: the broker did not acknowledge within {} ms",
            hooks.ack_timeout.as_millis()
        ))),
    }
}

/// The URL the provider called: `TRIBUTARY_PUBLIC_URL` (where a proxy or load balancer
/// sits in front), else this server as the Host header names it.
fn public_url(state: &ApiState, arrived: &Arrived) -> String {
    let path = arrived
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    match state.connect.settings.public_url.as_deref() {
        Some(base) => format!("{}{path}", base.trim_end_matches('/')),
        None => {
            let host = arrived
                .headers
                .get("host")
                .and_then(|h| h.to_str().ok())
                .unwrap_or("localhost");
            format!("http://{host}{path}")
        }
    }
}

fn lower_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .filter_map(|(k, v)| {
            Some((
                k.as_str().to_ascii_lowercase(),
                v.to_str().ok()?.to_string(),
            ))
        })
        .collect()
}

fn status_code(status: u16) -> StatusCode {
    StatusCode::from_u16(status).unwrap_or(StatusCode::OK)
}

/// Open a new connection's webhook channel (its URL, and the provider's subscription
/// where the spec registers one). None when its spec delivers no webhooks per
/// connection; a registration that failed is said in the answer (the connection syncs
/// by polling meanwhile, and the scheduler's upkeep tries again).
pub async fn open_channel(state: &ApiState, connection: &str) -> Option<serde_json::Value> {
    let base = state.connect.settings.public_url.as_deref()?;
    match state.syncer.open_webhooks(connection, base).await {
        Ok(Some(setup)) => Some(serde_json::json!(setup)),
        Ok(None) => None,
        Err(e) => {
            tracing::warn!(connection, error = %e, "webhooks not registered");
            Some(serde_json::json!({"registered": false, "error": e.to_string()}))
        }
    }
}
