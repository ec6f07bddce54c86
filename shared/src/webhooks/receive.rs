//! What the receiver does with one request, apart from HTTP and the broker: answer a
//! handshake, refuse a wrong method, an oversize body or an unverified delivery, or
//! hand back the [`RawDelivery`] to append. Pure (the keys and the time are inputs), so
//! every refusal is unit-tested.

use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use super::items::split_items;
use super::verify::{verify, Incoming, Refusal};
use super::{RawDelivery, DELIVERY_SCHEMA_VERSION};
use crate::spec::compile_webhooks::{CompiledWebhooks, KeyRef};
use crate::spec::webhooks::Scheme;

/// One request as the server read it.
pub struct Request<'a> {
    pub provider: &'a str,
    pub method: &'a str,
    /// The public URL the provider called (`TRIBUTARY_PUBLIC_URL` + path + query).
    pub url: &'a str,
    pub query: &'a [(String, String)],
    /// Lower-case names.
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
    /// Per-connection delivery: the connection the token opened (and its tenant).
    pub channel: Option<(&'a str, &'a str)>,
}

/// What to do with it.
#[derive(Debug, PartialEq)]
pub enum Reception {
    /// Answer this now; nothing is stored.
    Answer {
        status: u16,
        content_type: String,
        body: String,
    },
    /// Refused; nothing is stored.
    Refused {
        status: u16,
        reason: String,
        label: &'static str,
    },
    /// Append it, then answer the spec's `ack`.
    Store(Box<RawDelivery>),
}

/// Decide one request. `keys` gives the keys a scheme names.
pub fn receive(
    hooks: &CompiledWebhooks,
    req: &Request<'_>,
    keys: &dyn Fn(&KeyRef) -> Vec<String>,
    now: DateTime<Utc>,
) -> Reception {
    if let Some(answer) = handshake(hooks, req) {
        return answer;
    }
    if !hooks.methods.iter().any(|m| m == req.method) {
        return Reception::Refused {
            status: 405,
            reason: format!(
                "{} is not accepted here; send {}",
                req.method,
                hooks.methods.join(" or ")
            ),
            label: "method",
        };
    }
    if req.body.len() > hooks.max_body_bytes {
        return Reception::Refused {
            status: 413,
            reason: format!(
                "the body has {} bytes, more than the {} accepted",
                req.body.len(),
                hooks.max_body_bytes
            ),
            label: "too_large",
        };
    }
    // Only a scheme checking a token per item reads the body before it is verified.
    let items = (hooks.verify.iter().any(|v| v.scheme == Scheme::ItemToken))
        .then(|| split_items(hooks, req.body).unwrap_or_default());
    let incoming = Incoming {
        method: req.method,
        url: req.url,
        headers: req.headers,
        body: req.body,
        items: items.as_deref(),
    };
    let scheme = match verify(&hooks.verify, &incoming, keys, now) {
        Ok(i) => &hooks.verify[i],
        Err(refusal) => return refused(refusal),
    };
    let kept = req
        .headers
        .iter()
        .filter(|(k, _)| hooks.keep_headers.contains(k))
        .cloned()
        .collect();
    Reception::Store(Box::new(RawDelivery {
        schema_version: DELIVERY_SCHEMA_VERSION,
        id: format!("whd_{}", uuid::Uuid::now_v7().simple()),
        provider: req.provider.to_string(),
        connection: req.channel.map(|(c, _)| c.to_string()),
        tenant: req.channel.map(|(_, t)| t.to_string()),
        received_at: now,
        method: req.method.to_string(),
        headers: kept,
        body: base64::engine::general_purpose::STANDARD.encode(req.body),
        verified_by: scheme.signature_header.clone(),
    }))
}

fn refused(refusal: Refusal) -> Reception {
    Reception::Refused {
        status: 401,
        label: refusal.label(),
        reason: refusal.to_string(),
    }
}

/// The first handshake whose `when` holds, answered (over the method, the allowed query
/// parameters and the headers: nothing else reaches it).
fn handshake(hooks: &CompiledWebhooks, req: &Request<'_>) -> Option<Reception> {
    if hooks.handshakes.is_empty() {
        return None;
    }
    let query: Map<String, Value> = req
        .query
        .iter()
        .filter(|(k, _)| hooks.keep_query.contains(k))
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    let headers: Map<String, Value> = req
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    let input = json!({"method": req.method, "query": query, "headers": headers});
    let hs = hooks
        .handshakes
        .iter()
        .find(|h| crate::mapping::jsonata::truthy(&h.when.eval_json(&input).ok().flatten()))?;
    let body = match hs.body.eval_json(&input) {
        Ok(Some(Value::String(s))) => s,
        Ok(Some(other)) => other.to_string(),
        Ok(None) => String::new(),
        Err(e) => {
            return Some(Reception::Refused {
                status: 400,
                reason: format!("the handshake answer could not be made: {e}"),
                label: "handshake",
            })
        }
    };
    Some(Reception::Answer {
        status: hs.status,
        content_type: hs.content_type.clone(),
        body,
    })
}
