//! The OAuth2 token endpoint: client authentication (form body or HTTP
//! Basic), the authorization-code (see `authorize`), refresh-token and
//! client-credentials grants, rotation of refresh tokens, and access tokens that
//! expire after the profile's lifetime; and the identity endpoints that say whom
//! an access token belongs to.

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
    let Granted {
        n,
        refresh: refresh_out,
        scope,
    } = match grant(s, o, &client_id, &form) {
        Ok(granted) => granted,
        Err(answer) => return *answer,
    };
    let access = format!("sbx-at-{n}");
    {
        let mut tokens = lock(&s.tokens);
        tokens.access.insert(
            access.clone(),
            Instant::now() + Duration::from_secs(o.access_token_ttl_seconds),
        );
        if let Some(scope) = &scope {
            tokens.scopes.insert(access.clone(), scope.clone());
        }
    }
    let ttl = o.access_token_ttl_seconds;
    let ctx = json!({"access_token": access, "refresh_token": refresh_out, "expires_in": ttl,
        "scope": scope, "grant_type": form.get("grant_type")});
    let body = match &s.compiled.token_body {
        Some(e) => e.eval_json(&ctx).ok().flatten().unwrap_or(Value::Null),
        None => {
            json!({"access_token": access, "token_type": "bearer", "expires_in": ttl, "refresh_token": refresh_out})
        }
    };
    json_response(200, &body, Vec::new())
}

/// What a grant hands out: the number of this issue, the refresh token (the same one,
/// a rotated one, a new one for a code, or none for client credentials), and the
/// scope a code was granted.
struct Granted {
    n: u64,
    refresh: Option<String>,
    scope: Option<String>,
}

fn invalid_grant(s: &Sandbox) -> Box<Response> {
    lock(&s.stats).invalid_grants += 1;
    Box::new(match &s.compiled.invalid_grant {
        Some(answer) => answer.render(&json!({})),
        None => json_response(400, &json!({"error": "invalid_grant"}), Vec::new()),
    })
}

/// Check the grant: what it hands out, or the error answer.
fn grant(
    s: &Sandbox,
    o: &OAuthServer,
    client_id: &str,
    form: &HashMap<String, String>,
) -> Result<Granted, Box<Response>> {
    let given = |n, refresh| Granted {
        n,
        refresh,
        scope: None,
    };
    if form.get("grant_type").map(String::as_str) == Some("authorization_code") {
        if o.authorize.is_none() {
            return Err(unsupported(form));
        }
        let scope = crate::authorize::exchange(s, client_id, form).map_err(|why| {
            lock(&s.stats).last_grant_failure = Some(why);
            invalid_grant(s)
        })?;
        lock(&s.stats).code_exchanges += 1;
        let mut tokens = lock(&s.tokens);
        tokens.issued += 1;
        let n = tokens.issued;
        let fresh = format!("sbx-rt-{n}");
        tokens.refresh.insert(fresh.clone());
        return Ok(Granted {
            n,
            refresh: Some(fresh),
            scope: Some(scope),
        });
    }
    let mut tokens = lock(&s.tokens);
    tokens.issued += 1;
    let n = tokens.issued;
    match form.get("grant_type").map(String::as_str) {
        Some("refresh_token") => {
            let presented = form.get("refresh_token").cloned().unwrap_or_default();
            if !tokens.refresh.contains(&presented) {
                drop(tokens);
                return Err(invalid_grant(s));
            }
            lock(&s.stats).refreshes += 1;
            if !o.rotate_refresh_tokens {
                return Ok(given(n, Some(presented)));
            }
            tokens.refresh.remove(&presented);
            let fresh = format!("sbx-rt-{n}");
            tokens.refresh.insert(fresh.clone());
            Ok(given(n, Some(fresh)))
        }
        Some("client_credentials") => {
            lock(&s.stats).refreshes += 1;
            Ok(given(n, None))
        }
        _ => Err(unsupported(form)),
    }
}

fn unsupported(form: &HashMap<String, String>) -> Box<Response> {
    let other = form.get("grant_type");
    Box::new(json_response(
        400,
        &json!({"error": "unsupported_grant_type", "error_description": format!("{other:?}")}),
        Vec::new(),
    ))
}

/// An identity endpoint's answer for the access token in its path (`{token}`) or in
/// `Authorization: Bearer`; the route's `unknown` answer for one not issued or expired.
pub fn identity(
    s: &Sandbox,
    index: usize,
    params: &serde_json::Map<String, Value>,
    headers: &HeaderMap,
    request: &Value,
) -> Response {
    let token = params
        .get("token")
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| {
            headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::to_string)
        })
        .unwrap_or_default();
    let (body, unknown) = &s.compiled.identity_answers[index];
    let tokens = lock(&s.tokens);
    let valid = tokens
        .access
        .get(&token)
        .is_some_and(|exp| *exp > Instant::now())
        || s.profile.auth.tokens.contains(&token);
    if !valid {
        return unknown.render(request);
    }
    let scope = tokens.scopes.get(&token).cloned();
    drop(tokens);
    let ctx = json!({"access_token": token, "scope": scope, "params": params, "request": request});
    let answer = body.eval_json(&ctx).ok().flatten().unwrap_or(Value::Null);
    json_response(200, &answer, Vec::new())
}
