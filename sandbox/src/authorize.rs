//! The authorization-code flow (RFC 6749 §4.1 with PKCE, RFC 7636), as strict as a
//! provider's authorization server: the consent page (GET `authorize.path`) knows only
//! the app's client id and its registered redirect URIs, and asks nothing of a request
//! it cannot send back (those get an error page, never a redirect); a request it can
//! send back but refuses (response type, scope, PKCE) is redirected with `error`. The
//! user's decision (POST) redirects with a single-use code, or `error=access_denied`.
//! The token endpoint exchanges a code once, for the same client and redirect URI, and
//! only with the verifier of its challenge.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use base64::Engine;
use rand::Rng;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::lock;
use crate::profile::{AuthorizeServer, OAuthServer, PkceRule};
use crate::state::{IssuedCode, Sandbox};

/// The query (GET) or form (POST) of an authorize request.
type Params = HashMap<String, String>;

/// GET: the consent page, or why there is none.
pub fn consent_page(s: &Sandbox, o: &OAuthServer, a: &AuthorizeServer, query: &str) -> Response {
    let p: Params = url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    if let Some(answer) = refusal(o, a, &p) {
        return answer;
    }
    lock(&s.stats).consent_pages += 1;
    let get = |k: &str| p.get(k).map(String::as_str).unwrap_or_default();
    let hidden: String = [
        "client_id",
        "redirect_uri",
        "state",
        "scope",
        "code_challenge",
        "code_challenge_method",
        "response_type",
    ]
    .iter()
    .filter(|k| p.contains_key(**k))
    .map(|k| {
        format!(
            r#"<input type="hidden" name="{k}" value="{}">"#,
            escape(get(k))
        )
    })
    .collect();
    let account = a.account.as_deref().unwrap_or(&s.profile.name);
    let scopes: String = split_scopes(a, get("scope"))
        .iter()
        .map(|sc| format!("<li>{}</li>", escape(sc)))
        .collect();
    Html(format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Authorize access</title></head>
<body><main><h1>Allow access to {account}?</h1>
<p>An application asks to read your {provider} account with these permissions:</p><ul>{scopes}</ul>
<form method="post" action="{path}">{hidden}
<button type="submit" name="decision" value="approve" id="approve">Allow</button>
<button type="submit" name="decision" value="deny" id="deny">Deny</button>
</form></main></body></html>"#,
        account = escape(account),
        provider = escape(&s.profile.name),
        path = escape(&a.path),
    ))
    .into_response()
}

/// POST: the user's decision, redirected back to the app.
pub fn decide(s: &Sandbox, o: &OAuthServer, a: &AuthorizeServer, form: &[u8]) -> Response {
    let p: Params = url::form_urlencoded::parse(form).into_owned().collect();
    if let Some(answer) = refusal(o, a, &p) {
        return answer;
    }
    let redirect_uri = &p["redirect_uri"];
    let state = p.get("state").cloned();
    if p.get("decision").map(String::as_str) != Some("approve") {
        lock(&s.stats).consents_denied += 1;
        return back(
            redirect_uri,
            &pairs(&[
                ("error", "access_denied"),
                ("error_description", "The user denied the request."),
            ]),
            state,
        );
    }
    let code = format!("sbx-code-{}", random_token());
    let challenge = match a.pkce {
        PkceRule::Unsupported => None,
        _ => p.get("code_challenge").map(|c| {
            let method = p.get("code_challenge_method").cloned();
            (c.clone(), method.unwrap_or_else(|| "plain".into()))
        }),
    };
    lock(&s.tokens).codes.insert(
        code.clone(),
        IssuedCode {
            client_id: p["client_id"].clone(),
            redirect_uri: redirect_uri.clone(),
            scope: p.get("scope").cloned().unwrap_or_default(),
            challenge,
            expires: Instant::now() + Duration::from_secs(a.code_ttl_seconds),
        },
    );
    lock(&s.stats).consents_approved += 1;
    let mut extra = vec![("code".to_string(), code)];
    extra.extend(callback_params(s, &p));
    back(redirect_uri, &extra, state)
}

/// The profile's further callback parameters (`authorize.callback`).
fn callback_params(s: &Sandbox, p: &Params) -> Vec<(String, String)> {
    let Some(expr) = &s.compiled.authorize_callback else {
        return Vec::new();
    };
    let ctx = json!({"request": p});
    let Ok(Some(serde_json::Value::Object(map))) = expr.eval_json(&ctx) else {
        return Vec::new();
    };
    map.into_iter()
        .map(|(k, v)| (k, crate::respond::text(&v)))
        .collect()
}

/// Why the server will not go on with an authorize request: a page for errors it must
/// not redirect (unknown client, unregistered redirect URI), a redirect for the rest.
fn refusal(o: &OAuthServer, a: &AuthorizeServer, p: &Params) -> Option<Response> {
    let get = |k: &str| p.get(k).map(String::as_str).unwrap_or_default();
    if get("client_id") != o.client_id {
        return Some(error_page(
            "invalid_client",
            "The client_id is not a registered application.",
        ));
    }
    let redirect_uri = get("redirect_uri");
    if !a.redirect_uris.iter().any(|r| r == redirect_uri) {
        return Some(error_page(
            "invalid_request",
            "The redirect_uri is not registered for this application.",
        ));
    }
    let state = p.get("state").cloned();
    let refuse = |error: &str, description: &str| {
        back(
            redirect_uri,
            &pairs(&[("error", error), ("error_description", description)]),
            state.clone(),
        )
    };
    if get("response_type") != "code" {
        return Some(refuse(
            "unsupported_response_type",
            "response_type must be code.",
        ));
    }
    let unknown: Vec<String> = split_scopes(a, get("scope"))
        .into_iter()
        .filter(|sc| !a.scopes.contains(sc))
        .collect();
    if !unknown.is_empty() {
        return Some(refuse(
            "invalid_scope",
            &format!("Unknown scope: {}", unknown.join(", ")),
        ));
    }
    let challenge = p.get("code_challenge");
    if a.pkce == PkceRule::Required && challenge.is_none() {
        return Some(refuse("invalid_request", "code_challenge is required."));
    }
    if challenge.is_some() && a.pkce != PkceRule::Unsupported {
        let method = get("code_challenge_method");
        if !(method.is_empty() || method == "S256" || method == "plain") {
            return Some(refuse(
                "invalid_request",
                "code_challenge_method must be S256 or plain.",
            ));
        }
    }
    None
}

fn split_scopes(a: &AuthorizeServer, scope: &str) -> Vec<String> {
    scope
        .split(a.scope_separator.as_str())
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// Exchange a code (grant_type=authorization_code): the scope it was granted, or the
/// reason it is refused (answered as the profile's invalid grant).
pub fn exchange(
    s: &Sandbox,
    client_id: &str,
    form: &HashMap<String, String>,
) -> Result<String, String> {
    let code = form.get("code").cloned().unwrap_or_default();
    // Taken out whatever happens next: a code is good for one attempt.
    let issued = lock(&s.tokens)
        .codes
        .remove(&code)
        .ok_or("the code is unknown or was already used")?;
    if issued.expires < Instant::now() {
        return Err("the code expired".into());
    }
    if issued.client_id != client_id {
        return Err("the code was issued to another client".into());
    }
    if form.get("redirect_uri") != Some(&issued.redirect_uri) {
        return Err("redirect_uri differs from the authorize request's".into());
    }
    if let Some((challenge, method)) = &issued.challenge {
        let verifier = form
            .get("code_verifier")
            .ok_or("code_verifier is missing")?;
        let derived = match method.as_str() {
            "S256" => base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(Sha256::digest(verifier.as_bytes())),
            _ => verifier.clone(),
        };
        if &derived != challenge {
            lock(&s.stats).pkce_failures += 1;
            return Err("code_verifier does not match the code_challenge".into());
        }
    }
    Ok(issued.scope)
}

fn random_token() -> String {
    let bytes: [u8; 18] = rand::rng().random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A 302 to `redirect_uri` with these parameters and the request's state.
fn back(redirect_uri: &str, params: &[(String, String)], state: Option<String>) -> Response {
    let mut url = match url::Url::parse(redirect_uri) {
        Ok(u) => u,
        Err(_) => return error_page("invalid_request", "The redirect_uri is not a URL."),
    };
    {
        let mut q = url.query_pairs_mut();
        for (k, v) in params {
            q.append_pair(k, v);
        }
        if let Some(st) = &state {
            q.append_pair("state", st);
        }
    }
    (StatusCode::FOUND, [("location", url.to_string())]).into_response()
}

/// An error the authorization server shows instead of redirecting.
fn error_page(error: &str, description: &str) -> Response {
    let body = format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Authorization error</title></head>
<body><main><h1>Authorization error</h1><p id="error">{}: {}</p></main></body></html>"#,
        escape(error),
        escape(description)
    );
    (StatusCode::BAD_REQUEST, Html(body)).into_response()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
