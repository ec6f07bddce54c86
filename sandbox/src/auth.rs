//! Data request credentials: where the profile says a request carries its
//! token, and whether the token is one the profile accepts or one the OAuth
//! endpoint issued and is still valid. HTTP Basic decoding lives here, once.

use std::time::Instant;

use axum::http::HeaderMap;
use base64::Engine;
use serde_json::{Map, Value};

use crate::lock;
use crate::profile::AuthKind;
use crate::state::Sandbox;

/// `Authorization: Basic base64(user:password)` as (user, password); a value
/// without a colon is all user name.
pub fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let raw = header(headers, "authorization")?;
    let encoded = raw.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    Some(match text.split_once(':') {
        Some((u, p)) => (u.to_string(), p.to_string()),
        None => (text, String::new()),
    })
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// The credential the request presents where the profile expects it.
fn presented(s: &Sandbox, headers: &HeaderMap, query: &Map<String, Value>) -> Option<String> {
    let auth = &s.profile.auth;
    match auth.kind {
        AuthKind::None => None,
        AuthKind::Bearer => {
            let prefix = auth.prefix.as_deref().unwrap_or("Bearer ");
            header(headers, auth.name.as_deref().unwrap_or("authorization"))
                .and_then(|v| v.strip_prefix(prefix).map(str::to_string))
        }
        AuthKind::Header => header(headers, auth.name.as_deref().unwrap_or("x-api-key")).map(|v| {
            let prefix = auth.prefix.as_deref().unwrap_or_default();
            v.strip_prefix(prefix).unwrap_or(&v).to_string()
        }),
        AuthKind::Query => query
            .get(auth.name.as_deref().unwrap_or("api_key"))
            .and_then(|v| v.as_str())
            .map(str::to_string),
        AuthKind::Basic => basic_credentials(headers).map(|(user, _)| user),
    }
}

/// Whether a data request may be served.
pub fn authorized(s: &Sandbox, headers: &HeaderMap, query: &Map<String, Value>) -> bool {
    if s.profile.auth.kind == AuthKind::None {
        return true;
    }
    let Some(token) = presented(s, headers, query) else {
        return false;
    };
    if s.profile.auth.tokens.contains(&token) {
        return true;
    }
    lock(&s.tokens)
        .access
        .get(&token)
        .is_some_and(|exp| *exp > Instant::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_authorization(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("authorization", value.parse().unwrap());
        h
    }

    #[test]
    fn basic_credentials_split_at_the_first_colon() {
        // "id:se:cret" and "key-only".
        let h = with_authorization("Basic aWQ6c2U6Y3JldA==");
        assert_eq!(basic_credentials(&h), Some(("id".into(), "se:cret".into())));
        let h = with_authorization("Basic a2V5LW9ubHk=");
        assert_eq!(
            basic_credentials(&h),
            Some(("key-only".into(), String::new()))
        );
        assert_eq!(basic_credentials(&with_authorization("Bearer x")), None);
        assert_eq!(basic_credentials(&with_authorization("Basic !!")), None);
    }
}
