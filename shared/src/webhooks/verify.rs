//! Whether a delivery comes from the provider: its signature, token or credentials
//! checked against the raw bytes as they arrived, with every key that may sign (a key
//! being rotated and its successor), in constant time. Pure: the request, the keys
//! and the time in; which scheme passed, or why none did, out.

use base64::Engine as _;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::spec::compile_webhooks::{CompiledVerify, KeyRef, SignedPart};
use crate::spec::webhooks::{Encoding, Scheme, TimestampFormat};

/// A delivery as the receiver read it.
#[derive(Debug, Clone, Copy)]
pub struct Incoming<'a> {
    pub method: &'a str,
    /// The public URL the provider called (scheme, host, path and query).
    pub url: &'a str,
    /// Header names in lower case.
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
    /// The body's items, where a scheme checks a token per item (`item_token`).
    pub items: Option<&'a [serde_json::Value]>,
}

impl Incoming<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Why a delivery was refused (never carrying a secret or a signature).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("no signature: none of the headers {0} is present")]
    Unsigned(String),
    #[error("the signature in `{0}` does not match the body")]
    BadSignature(String),
    #[error(
        "the timestamp in `{header}` is {age_seconds} s away from now (at most {tolerance} s)"
    )]
    Stale {
        header: String,
        age_seconds: i64,
        tolerance: u64,
    },
    #[error("the timestamp in `{0}` is missing or unreadable")]
    BadTimestamp(String),
    #[error(
        "no key is configured to check `{0}` (see TRIBUTARY_APPS_FILE or the connection's webhook)"
    )]
    NoKey(String),
}

impl Refusal {
    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::Unsigned(_) => "unsigned",
            Refusal::BadSignature(_) => "bad_signature",
            Refusal::Stale { .. } => "stale",
            Refusal::BadTimestamp(_) => "bad_timestamp",
            Refusal::NoKey(_) => "no_key",
        }
    }
}

/// Check a delivery: the first scheme whose signature header is present decides.
/// `keys` gives the keys a scheme's `key` names (several while one is rotated).
pub fn verify(
    schemes: &[CompiledVerify],
    req: &Incoming<'_>,
    keys: &dyn Fn(&KeyRef) -> Vec<String>,
    now: DateTime<Utc>,
) -> Result<usize, Refusal> {
    for (i, scheme) in schemes.iter().enumerate() {
        if scheme.scheme == Scheme::ItemToken {
            match req.items.filter(|items| !items.is_empty()) {
                Some(items) => return item_tokens(i, scheme, items, &keys(&scheme.key)),
                None => continue,
            }
        }
        let Some(given) = req.header(&scheme.signature_header) else {
            continue;
        };
        let keys = keys(&scheme.key);
        if keys.is_empty() {
            return Err(Refusal::NoKey(scheme.signature_header.clone()));
        }
        if let Some(ts) = &scheme.timestamp {
            fresh(req, ts, now)?;
        }
        let passes = keys.iter().any(|key| check(scheme, req, given, key));
        return if passes {
            Ok(i)
        } else {
            Err(Refusal::BadSignature(scheme.signature_header.clone()))
        };
    }
    let names: Vec<&str> = schemes
        .iter()
        .map(|s| s.signature_header.as_str())
        .collect();
    Err(Refusal::Unsigned(names.join(", ")))
}

/// `item_token`: every item carries one of the keys.
fn item_tokens(
    i: usize,
    scheme: &CompiledVerify,
    items: &[serde_json::Value],
    keys: &[String],
) -> Result<usize, Refusal> {
    if keys.is_empty() {
        return Err(Refusal::NoKey(scheme.signature_header.clone()));
    }
    let expr = scheme.item.as_ref().expect("compiled with item_token");
    let carries_a_key = |item: &serde_json::Value| match expr.eval_json(item) {
        Ok(Some(serde_json::Value::String(token))) => {
            keys.iter().any(|k| same(token.as_bytes(), k.as_bytes()))
        }
        _ => false,
    };
    if items.iter().all(carries_a_key) {
        Ok(i)
    } else {
        Err(Refusal::BadSignature(scheme.signature_header.clone()))
    }
}

fn check(scheme: &CompiledVerify, req: &Incoming<'_>, given: &str, key: &str) -> bool {
    match scheme.scheme {
        Scheme::HmacSha256 => {
            let Some(signature) = decode(scheme, given) else {
                return false;
            };
            let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes())
                .expect("HMAC takes keys of any length");
            for part in &scheme.signed {
                mac.update(&part_bytes(scheme, part, req));
            }
            mac.verify_slice(&signature).is_ok()
        }
        Scheme::Token => same(given.trim().as_bytes(), key.as_bytes()),
        Scheme::ItemToken => false,
        Scheme::Basic => {
            let credentials = match &scheme.user {
                Some(user) => format!("{user}:{key}"),
                None => key.to_string(),
            };
            let expected = base64::engine::general_purpose::STANDARD.encode(credentials);
            let given = given.trim();
            let Some(b64) = given
                .strip_prefix("Basic ")
                .or_else(|| given.strip_prefix("basic "))
            else {
                return false;
            };
            same(b64.trim().as_bytes(), expected.as_bytes())
        }
    }
}

/// Constant-time equality (lengths are not secret).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

fn decode(scheme: &CompiledVerify, given: &str) -> Option<Vec<u8>> {
    let text = given.trim();
    let text = text.strip_prefix(scheme.prefix.as_str()).unwrap_or(text);
    match scheme.encoding {
        Encoding::Base64 => base64::engine::general_purpose::STANDARD.decode(text).ok(),
        Encoding::Hex => hex::decode(text.to_ascii_lowercase()).ok(),
    }
}

fn part_bytes(scheme: &CompiledVerify, part: &SignedPart, req: &Incoming<'_>) -> Vec<u8> {
    match part {
        SignedPart::Method => req.method.as_bytes().to_vec(),
        SignedPart::Url => decoded_url(req.url, &scheme.url_decode).into_bytes(),
        SignedPart::Body => req.body.to_vec(),
        SignedPart::Header(h) => req.header(h).unwrap_or_default().as_bytes().to_vec(),
        SignedPart::Literal(l) => l.as_bytes().to_vec(),
    }
}

/// The URL with the listed percent-escapes decoded (either case).
fn decoded_url(url: &str, escapes: &[(String, String)]) -> String {
    let mut out = url.to_string();
    for (esc, ch) in escapes {
        out = out
            .replace(esc.as_str(), ch)
            .replace(&esc.to_ascii_lowercase(), ch);
    }
    out
}

fn fresh(
    req: &Incoming<'_>,
    ts: &crate::spec::compile_webhooks::CompiledTimestamp,
    now: DateTime<Utc>,
) -> Result<(), Refusal> {
    let unreadable = || Refusal::BadTimestamp(ts.header.clone());
    let text = req.header(&ts.header).ok_or_else(unreadable)?.trim();
    let at = match ts.format {
        TimestampFormat::EpochMillis => text
            .parse::<i64>()
            .ok()
            .and_then(DateTime::from_timestamp_millis),
        TimestampFormat::EpochSeconds => text
            .parse::<i64>()
            .ok()
            .and_then(|s| DateTime::from_timestamp(s, 0)),
        TimestampFormat::Rfc3339 => DateTime::parse_from_rfc3339(text)
            .ok()
            .map(|t| t.with_timezone(&Utc)),
    }
    .ok_or_else(unreadable)?;
    let age = (now - at).num_seconds();
    if age.unsigned_abs() > ts.tolerance_seconds {
        return Err(Refusal::Stale {
            header: ts.header.clone(),
            age_seconds: age,
            tolerance: ts.tolerance_seconds,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::compile_webhooks::CompiledTimestamp;

    fn hmac_b64(key: &str, parts: &[&[u8]]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
        for p in parts {
            mac.update(p);
        }
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    }

    fn app_scheme() -> CompiledVerify {
        CompiledVerify {
            scheme: Scheme::HmacSha256,
            item: None,
            key: KeyRef::App("client_secret".into()),
            signed: vec![
                SignedPart::Method,
                SignedPart::Url,
                SignedPart::Body,
                SignedPart::Header("x-ts".into()),
            ],
            url_decode: vec![("%3A".into(), ":".into())],
            signature_header: "x-sig".into(),
            encoding: Encoding::Base64,
            prefix: String::new(),
            timestamp: Some(CompiledTimestamp {
                header: "x-ts".into(),
                format: TimestampFormat::EpochMillis,
                tolerance_seconds: 300,
            }),
            user: None,
        }
    }

    fn keys(k: &KeyRef) -> Vec<String> {
        match k {
            KeyRef::App(_) => vec!["old-secret".into(), "new-secret".into()],
            KeyRef::Connection => vec![],
        }
    }

    #[test]
    fn a_signature_by_any_current_key_passes_and_anything_changed_fails() {
        let now = Utc::now();
        let ts = now.timestamp_millis().to_string();
        let url = "https://hooks.example.com/webhooks/x?a=b%3Ac";
        let body = br#"[{"id":1}]"#;
        let sig = hmac_b64(
            "new-secret",
            &[
                b"POST",
                b"https://hooks.example.com/webhooks/x?a=b:c",
                body,
                ts.as_bytes(),
            ],
        );
        let headers = vec![
            ("x-sig".to_string(), sig.clone()),
            ("x-ts".to_string(), ts.clone()),
        ];
        let req = Incoming {
            method: "POST",
            url,
            headers: &headers,
            body,
            items: None,
        };
        assert_eq!(verify(&[app_scheme()], &req, &keys, now), Ok(0));
        let tampered = Incoming {
            body: br#"[{"id":2}]"#,
            ..req
        };
        assert!(matches!(
            verify(&[app_scheme()], &tampered, &keys, now),
            Err(Refusal::BadSignature(_))
        ));
        let later = now + chrono::Duration::minutes(6);
        assert!(matches!(
            verify(&[app_scheme()], &req, &keys, later),
            Err(Refusal::Stale { .. })
        ));
        let none: Vec<(String, String)> = vec![];
        let unsigned = Incoming {
            headers: &none,
            ..req
        };
        assert!(matches!(
            verify(&[app_scheme()], &unsigned, &keys, now),
            Err(Refusal::Unsigned(_))
        ));
        let other = hmac_b64(
            "someone-else",
            &[b"POST", url.as_bytes(), body, ts.as_bytes()],
        );
        let forged = vec![("x-sig".to_string(), other), ("x-ts".to_string(), ts)];
        let forged = Incoming {
            headers: &forged,
            ..req
        };
        assert!(verify(&[app_scheme()], &forged, &keys, now).is_err());
    }

    #[test]
    fn basic_and_token_schemes_compare_the_whole_value() {
        let basic = CompiledVerify {
            scheme: Scheme::Basic,
            item: None,
            key: KeyRef::App("hook".into()),
            signed: vec![],
            url_decode: vec![],
            signature_header: "authorization".into(),
            encoding: Encoding::Base64,
            prefix: String::new(),
            timestamp: None,
            user: None,
        };
        let keys = |_: &KeyRef| vec!["user:pass".to_string()];
        let good = vec![(
            "authorization".to_string(),
            "Basic dXNlcjpwYXNz".to_string(),
        )];
        let bad = vec![("authorization".to_string(), "Basic dXNlcjpwYXN".to_string())];
        let req = |h: &'static [(String, String)]| Incoming {
            method: "POST",
            url: "u",
            headers: h,
            body: b"",
            items: None,
        };
        let good: &'static [(String, String)] = Box::leak(good.into_boxed_slice());
        let bad: &'static [(String, String)] = Box::leak(bad.into_boxed_slice());
        assert_eq!(
            verify(std::slice::from_ref(&basic), &req(good), &keys, Utc::now()),
            Ok(0)
        );
        assert!(verify(std::slice::from_ref(&basic), &req(bad), &keys, Utc::now()).is_err());
        // With a user name, the key is the password.
        let with_user = CompiledVerify {
            user: Some("user".into()),
            ..basic.clone()
        };
        let password = |_: &KeyRef| vec!["pass".to_string()];
        assert_eq!(
            verify(
                std::slice::from_ref(&with_user),
                &req(good),
                &password,
                Utc::now()
            ),
            Ok(0)
        );
        assert!(verify(&[with_user], &req(good), &keys, Utc::now()).is_err());
        let token = CompiledVerify {
            scheme: Scheme::Token,
            signature_header: "x-token".into(),
            ..basic
        };
        let h: &'static [(String, String)] =
            Box::leak(vec![("x-token".to_string(), "user:pass".to_string())].into_boxed_slice());
        assert_eq!(verify(&[token], &req(h), &keys, Utc::now()), Ok(0));
    }

    #[test]
    fn an_item_token_must_be_in_every_item() {
        let scheme = CompiledVerify {
            scheme: Scheme::ItemToken,
            item: Some(crate::mapping::jsonata::Jsonata::compile("clientState").unwrap()),
            key: KeyRef::Connection,
            signed: vec![],
            url_decode: vec![],
            signature_header: "item.clientState".into(),
            encoding: Encoding::Base64,
            prefix: String::new(),
            timestamp: None,
            user: None,
        };
        let keys = |_: &KeyRef| vec!["s3cret".to_string()];
        let check = |items: &[serde_json::Value]| {
            let req = Incoming {
                method: "POST",
                url: "u",
                headers: &[],
                body: b"",
                items: Some(items),
            };
            verify(std::slice::from_ref(&scheme), &req, &keys, Utc::now())
        };
        let good = serde_json::json!({"clientState": "s3cret", "id": 1});
        let wrong = serde_json::json!({"clientState": "s3cre7", "id": 2});
        let missing = serde_json::json!({"id": 3});
        assert_eq!(check(&[good.clone(), good.clone()]), Ok(0));
        assert!(matches!(
            check(&[good.clone(), wrong]),
            Err(Refusal::BadSignature(_))
        ));
        assert!(matches!(
            check(&[missing, good]),
            Err(Refusal::BadSignature(_))
        ));
        assert!(matches!(check(&[]), Err(Refusal::Unsigned(_))));
        let no_key = |_: &KeyRef| Vec::new();
        let req = Incoming {
            method: "POST",
            url: "u",
            headers: &[],
            body: b"",
            items: Some(&[]),
        };
        let one = [serde_json::json!({"clientState": "x"})];
        let req = Incoming {
            items: Some(&one),
            ..req
        };
        assert!(matches!(
            verify(std::slice::from_ref(&scheme), &req, &no_key, Utc::now()),
            Err(Refusal::NoKey(_))
        ));
    }
}
