//! JSON answers: status, body and headers; and the profile's fixed answers
//! (unauthorized, throttle, invalid grant, invalid field, ...), compiled once
//! and rendered over each request's context.

use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use tributary::mapping::jsonata::Jsonata;

use crate::profile::{Answer, Format};

/// A profile's fixed answer with its JSONata compiled.
pub struct FixedAnswer {
    status: u16,
    body: Option<Jsonata>,
    headers: Vec<(String, Jsonata)>,
    format: Format,
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
            format: answer.format,
        })
    }

    pub fn status(&self) -> u16 {
        self.status
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
        respond(self.format, self.status, &body, headers)
    }
}

/// An answer in the given format.
pub fn respond(
    format: Format,
    status: u16,
    body: &Value,
    headers: Vec<(String, String)>,
) -> Response {
    match format {
        Format::Json => json_response(status, body, headers),
        Format::Xml => xml_response(status, body, headers),
        Format::Text => with_headers(status, text(body), "text/plain; charset=utf-8", headers),
    }
}

/// An XML answer: `body` written by the inverse of the engine's decoding. A body that
/// cannot be written (not one root) is the profile's mistake: a 500 saying so.
pub fn xml_response(status: u16, body: &Value, headers: Vec<(String, String)>) -> Response {
    match tributary::mapping::xml::encode(body) {
        Ok(text) => with_headers(status, text, "text/xml; charset=utf-8", headers),
        Err(message) => json_response(
            500,
            &json!({"error": "sandbox_profile", "message": format!("the XML body: {message}")}),
            Vec::new(),
        ),
    }
}

/// A JSON answer; headers whose name or value HTTP cannot carry are left out.
pub fn json_response(status: u16, body: &Value, headers: Vec<(String, String)>) -> Response {
    with_headers(status, body.to_string(), "application/json", headers)
}

/// A text body of one content type; headers whose name or value HTTP cannot carry are
/// left out.
pub fn with_headers(
    status: u16,
    body: String,
    content_type: &'static str,
    headers: Vec<(String, String)>,
) -> Response {
    let mut resp = (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        body,
    )
        .into_response();
    resp.headers_mut()
        .insert("content-type", HeaderValue::from_static(content_type));
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
