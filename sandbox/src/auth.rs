//! Data request credentials: where the profile says a request carries its
//! token, and whether the token is one the profile accepts or one the OAuth
//! endpoint issued and is still valid; or, for OAuth 1.0a, whether the request's
//! signature holds (checked on arrival: a nonce is spent by its first use, even when
//! a fault answers that request). HTTP Basic decoding lives here, once.

use std::time::{Instant, SystemTime};

use axum::http::{HeaderMap, Method, Uri};
use base64::Engine;
use serde_json::{Map, Value};

use crate::lock;
use crate::oauth1::{self, Signed};
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
        AuthKind::Basic => basic_credentials(headers).map(|(user, password)| {
            let pair = format!("{user}:{password}");
            if auth.tokens.contains(&pair) {
                pair
            } else {
                user
            }
        }),
        AuthKind::Oauth1 => None,
    }
}

/// What was decided about a request's credential when it arrived.
pub struct Arrival {
    /// Whether its OAuth 1.0a signature holds (under an `oauth1` profile).
    signed: Option<bool>,
}

/// Check an OAuth 1.0a signature as the request arrives, spending its nonce; a
/// refusal is counted with its reason.
pub fn arrive(s: &Sandbox, method: &Method, uri: &Uri, headers: &HeaderMap) -> Arrival {
    let (AuthKind::Oauth1, Some(check)) = (s.profile.auth.kind, &s.profile.auth.oauth1) else {
        return Arrival { signed: None };
    };
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let request = Signed {
        method,
        uri,
        headers,
        now,
    };
    let fresh_nonce = |nonce: &str, timestamp: i64| {
        let mut seen = lock(&s.nonces);
        // Nonces older than any timestamp still accepted can no longer be replayed.
        let horizon = now - 2 * check.max_skew_seconds as i64;
        seen.retain(|_, t| *t >= horizon);
        seen.insert(nonce.to_string(), timestamp).is_none()
    };
    let verdict = oauth1::verify(check, &request, fresh_nonce);
    if let Err(reason) = &verdict {
        let mut st = lock(&s.stats);
        st.signature_failures += 1;
        st.last_signature_failure = Some(reason.to_string());
    }
    Arrival {
        signed: Some(verdict.is_ok()),
    }
}

/// Whether a data request may be served.
pub fn authorized(
    s: &Sandbox,
    headers: &HeaderMap,
    query: &Map<String, Value>,
    arrival: &Arrival,
) -> bool {
    if s.profile.auth.kind == AuthKind::None {
        return true;
    }
    if let Some(signed) = arrival.signed {
        return signed;
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
