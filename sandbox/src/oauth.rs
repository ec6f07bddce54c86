//! The OAuth2 token endpoint: client authentication (form body or HTTP
//! Basic), the refresh-token and client-credentials grants, rotation of refresh
//! tokens, and access tokens that expire after the profile's lifetime.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::{json, Value};

use crate::auth::basic_credentials;
use crate::lock;
use crate::profile::{ClientAuth, OAuthServer};
use crate::respond::json_response;
use crate::state::Sandbox;

/// Answer a token request (the caller checked that the profile has OAuth).
pub fn token_endpoint(s: &Sandbox, o: &OAuthServer, headers: &HeaderMap, body: &[u8]) -> Response {
    lock(&s.stats).token_requests += 1;
    let form: HashMap<String, String> = url::form_urlencoded::parse(body).into_owned().collect();
    let (client_id, client_secret) = match o.client_auth {
        ClientAuth::Basic => basic_credentials(headers).unwrap_or_default(),
        ClientAuth::Body => (
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
    let (n, refresh_out) = match grant(s, o, &form) {
        Ok(granted) => granted,
        Err(answer) => return *answer,
    };
    let access = format!("sbx-at-{n}");
    lock(&s.tokens).access.insert(
        access.clone(),
        Instant::now() + Duration::from_secs(o.access_token_ttl_seconds),
    );
    let ttl = o.access_token_ttl_seconds;
    let ctx = json!({"access_token": access, "refresh_token": refresh_out, "expires_in": ttl});
    let body = match &s.compiled.token_body {
        Some(e) => e.eval_json(&ctx).ok().flatten().unwrap_or(Value::Null),
        None => {
            json!({"access_token": access, "token_type": "bearer", "expires_in": ttl, "refresh_token": refresh_out})
        }
    };
    json_response(200, &body, Vec::new())
}

/// Check the grant: the number of this issue and the refresh token to hand out
/// (the same one, a rotated one, or none for client credentials), or the error
/// answer.
fn grant(
    s: &Sandbox,
    o: &OAuthServer,
    form: &HashMap<String, String>,
) -> Result<(u64, Option<String>), Box<Response>> {
    let mut tokens = lock(&s.tokens);
    tokens.issued += 1;
    let n = tokens.issued;
    match form.get("grant_type").map(String::as_str) {
        Some("refresh_token") => {
            let presented = form.get("refresh_token").cloned().unwrap_or_default();
            if !tokens.refresh.contains(&presented) {
                drop(tokens);
                lock(&s.stats).invalid_grants += 1;
                return Err(Box::new(match &s.compiled.invalid_grant {
                    Some(answer) => answer.render(&json!({})),
                    None => json_response(400, &json!({"error": "invalid_grant"}), Vec::new()),
                }));
            }
            lock(&s.stats).refreshes += 1;
            if !o.rotate_refresh_tokens {
                return Ok((n, Some(presented)));
            }
            tokens.refresh.remove(&presented);
            let fresh = format!("sbx-rt-{n}");
            tokens.refresh.insert(fresh.clone());
            Ok((n, Some(fresh)))
        }
        Some("client_credentials") => {
            lock(&s.stats).refreshes += 1;
            Ok((n, None))
        }
        other => Err(Box::new(json_response(
            400,
            &json!({"error": "unsupported_grant_type", "error_description": format!("{other:?}")}),
            Vec::new(),
        ))),
    }
}
