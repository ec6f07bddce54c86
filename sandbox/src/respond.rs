//! JSON answers: status, body and headers; and the profile's fixed answers
//! (unauthorized, throttle, invalid grant, invalid field, ...), compiled once
//! and rendered over each request's context.

use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use tributary::mapping::jsonata::Jsonata;

use crate::profile::Answer;

/// A profile's fixed answer with its JSONata compiled.
pub struct FixedAnswer {
    status: u16,
    body: Option<Jsonata>,
    headers: Vec<(String, Jsonata)>,
}

impl FixedAnswer {
    /// `at` names the answer in errors (`auth.unauthorized`, ...).
    pub fn compile(at: &str, answer: &Answer) -> Result<FixedAnswer, String> {
        let expr = |src: &str| Jsonata::compile(src).map_err(|e| format!("{at}: {e}"));
        Ok(FixedAnswer {
            status: answer.status,
            body: answer.body.as_deref().map(expr).transpose()?,
            headers: answer
                .headers
                .iter()
                .map(|(k, v)| Ok((k.clone(), expr(v)?)))
                .collect::<Result<_, String>>()?,
        })
    }

    /// The answer over `ctx`; a body that evaluates to nothing is `null`, a header
    /// that does is left out.
    pub fn render(&self, ctx: &Value) -> Response {
        let body = self
            .body
            .as_ref()
            .and_then(|e| e.eval_json(ctx).ok().flatten())
            .unwrap_or(Value::Null);
        let headers = self
            .headers
            .iter()
            .filter_map(|(h, e)| Some((h.clone(), text(&e.eval_json(ctx).ok()??))))
            .collect();
        json_response(self.status, &body, headers)
    }
}

/// A JSON answer; headers whose name or value HTTP cannot carry are left out.
pub fn json_response(status: u16, body: &Value, headers: Vec<(String, String)>) -> Response {
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

/// The sandbox's own refusal of a request it cannot serve (not a provider's answer).
pub fn bad_request(message: String) -> Response {
    json_response(
        400,
        &json!({"error": "bad_request", "message": message}),
        Vec::new(),
    )
}

pub fn not_found(path: &str) -> Response {
    json_response(
        404,
        &json!({"error": "not_found", "path": path}),
        Vec::new(),
    )
}

/// A JSON value as header or parameter text: strings bare, the rest as JSON.
pub fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
