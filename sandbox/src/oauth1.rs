//! OAuth 1.0a signatures checked for real (RFC 5849), as a provider using
//! token-based authentication does: the `Authorization: OAuth ...` header's realm,
//! consumer key, token and signature method must be the profile's, its timestamp
//! recent, its nonce never seen before, and its signature the HMAC of the request's
//! base string (method, base URI, query and `oauth_*` parameters) under the consumer
//! and token secrets. Written apart from the engine's signer, so that a mistake in
//! one is not repeated by the other.

use std::collections::HashMap;

use axum::http::{HeaderMap, Method, Uri};
use base64::Engine;
use hmac::{Hmac, Mac};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::profile::{Oauth1Check, SignatureMethod};

/// RFC 5849 §3.6: everything but ALPHA, DIGIT, `-`, `.`, `_` and `~` is encoded.
const RFC3986: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn encode(s: &str) -> String {
    utf8_percent_encode(s, RFC3986).to_string()
}

/// The parameters of an `Authorization: OAuth k="v", ...` header, decoded.
pub fn header_params(value: &str) -> Option<HashMap<String, String>> {
    let rest = value.trim().strip_prefix("OAuth ")?;
    let mut params = HashMap::new();
    for part in rest.split(',') {
        let (k, v) = part.trim().split_once('=')?;
        let v = v.trim().strip_prefix('"')?.strip_suffix('"')?;
        let v = percent_decode_str(v).decode_utf8().ok()?.into_owned();
        params.insert(k.trim().to_string(), v);
    }
    Some(params)
}

/// The signature base string (RFC 5849 §3.4.1) of a request with these `oauth_*`
/// parameters (realm and signature left out, as the RFC says).
pub fn base_string(
    method: &str,
    base_uri: &str,
    query: &str,
    oauth: &HashMap<String, String>,
) -> String {
    let mut pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (encode(&k), encode(&v)))
        .collect();
    pairs.extend(
        oauth
            .iter()
            .filter(|(k, _)| k.as_str() != "realm" && k.as_str() != "oauth_signature")
            .map(|(k, v)| (encode(k), encode(v))),
    );
    pairs.sort();
    let normalized: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!(
        "{}&{}&{}",
        method.to_ascii_uppercase(),
        encode(base_uri),
        encode(&normalized.join("&"))
    )
}

/// The base64 HMAC of `base` under `consumer_secret&token_secret`.
pub fn sign(
    method: SignatureMethod,
    base: &str,
    consumer_secret: &str,
    token_secret: &str,
) -> String {
    let key = format!("{}&{}", encode(consumer_secret), encode(token_secret));
    let mac = match method {
        SignatureMethod::HmacSha256 => {
            let mut m = Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).expect("any key");
            m.update(base.as_bytes());
            m.finalize().into_bytes().to_vec()
        }
        SignatureMethod::HmacSha1 => {
            let mut m = Hmac::<sha1::Sha1>::new_from_slice(key.as_bytes()).expect("any key");
            m.update(base.as_bytes());
            m.finalize().into_bytes().to_vec()
        }
    };
    base64::engine::general_purpose::STANDARD.encode(mac)
}

/// Why a signed request is refused (what `Stats::last_signature_failure` says).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("no OAuth Authorization header")]
    NoHeader,
    #[error("the realm {0:?} is not this account's")]
    Realm(String),
    #[error("unknown consumer key or token")]
    UnknownKey,
    #[error("signature method {0:?} is not accepted")]
    Method(String),
    #[error("oauth_version {0:?} is not 1.0")]
    Version(String),
    #[error("the timestamp {0:?} is missing or too far from now")]
    Timestamp(String),
    #[error("the nonce was used before")]
    NonceReused,
    #[error("the signature does not match the request")]
    Signature,
}

/// A request as the signature covers it.
pub struct Signed<'a> {
    pub method: &'a Method,
    pub uri: &'a Uri,
    pub headers: &'a HeaderMap,
    /// Seconds since the epoch, now.
    pub now: i64,
}

/// Check a request against the profile's keys. `fresh_nonce` records the nonce and
/// says whether it was new; it is asked only once everything else holds.
pub fn verify(
    check: &Oauth1Check,
    request: &Signed,
    fresh_nonce: impl FnOnce(&str, i64) -> bool,
) -> Result<(), Refused> {
    let header = request
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .ok_or(Refused::NoHeader)?;
    let p = header_params(header).ok_or(Refused::NoHeader)?;
    let get = |k: &str| p.get(k).map(String::as_str).unwrap_or_default();
    if get("realm") != check.realm {
        return Err(Refused::Realm(get("realm").to_string()));
    }
    if get("oauth_consumer_key") != check.consumer_key || get("oauth_token") != check.token_id {
        return Err(Refused::UnknownKey);
    }
    if get("oauth_signature_method") != check.signature_method.name() {
        return Err(Refused::Method(get("oauth_signature_method").to_string()));
    }
    if p.contains_key("oauth_version") && get("oauth_version") != "1.0" {
        return Err(Refused::Version(get("oauth_version").to_string()));
    }
    let timestamp: i64 = get("oauth_timestamp")
        .parse()
        .map_err(|_| Refused::Timestamp(get("oauth_timestamp").to_string()))?;
    if (request.now - timestamp).abs() > check.max_skew_seconds as i64 {
        return Err(Refused::Timestamp(timestamp.to_string()));
    }
    let base = base_string(
        request.method.as_str(),
        &base_uri(request.uri, request.headers),
        request.uri.query().unwrap_or(""),
        &p,
    );
    let expected = sign(
        check.signature_method,
        &base,
        &check.consumer_secret,
        &check.token_secret,
    );
    if get("oauth_signature") != expected {
        return Err(Refused::Signature);
    }
    if get("oauth_nonce").is_empty() || !fresh_nonce(get("oauth_nonce"), timestamp) {
        return Err(Refused::NonceReused);
    }
    Ok(())
}

/// `http://host[:port]/path` as the request reached the sandbox (which serves plain HTTP).
fn base_uri(uri: &Uri, headers: &HeaderMap) -> String {
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1")
        .to_ascii_lowercase();
    let host = host.strip_suffix(":80").unwrap_or(&host);
    format!("http://{host}{}", uri.path())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 5849 §1.2: the photo example's request, keys and signature.
    fn rfc_check() -> Oauth1Check {
        Oauth1Check {
            consumer_key: "dpf43f3p2l4k3l03".into(),
            consumer_secret: "kd94hf93k423kf44".into(),
            token_id: "nnch734d00sl2jdk".into(),
            token_secret: "pfkkdhi9sl3r4s00".into(),
            realm: "Photos".into(),
            signature_method: SignatureMethod::HmacSha1,
            max_skew_seconds: 300,
        }
    }

    fn rfc_request(signature: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("host", "photos.example.net".parse().unwrap());
        let auth = format!(
            "OAuth realm=\"Photos\", oauth_consumer_key=\"dpf43f3p2l4k3l03\", \
             oauth_token=\"nnch734d00sl2jdk\", oauth_signature_method=\"HMAC-SHA1\", \
             oauth_timestamp=\"137131202\", oauth_nonce=\"chapoH\", oauth_signature=\"{signature}\""
        );
        h.insert("authorization", auth.parse().unwrap());
        h
    }

    fn check(headers: &HeaderMap, now: i64, nonce_new: bool) -> Result<(), Refused> {
        let uri: Uri = "/photos?file=vacation.jpg&size=original".parse().unwrap();
        let signed = Signed {
            method: &Method::GET,
            uri: &uri,
            headers,
            now,
        };
        verify(&rfc_check(), &signed, |_, _| nonce_new)
    }

    #[test]
    fn the_rfc_example_request_verifies() {
        let good = rfc_request("MdpQcU8iPSUjWoN%2FUDMsK2sui9I%3D");
        assert_eq!(check(&good, 137131202, true), Ok(()));
        assert_eq!(
            check(&good, 137131202 + 301, true),
            Err(Refused::Timestamp("137131202".into()))
        );
        assert_eq!(check(&good, 137131202, false), Err(Refused::NonceReused));
        let bad = rfc_request("MdpQcU8iPSUjWoN%2FUDMsK2sui9J%3D");
        assert_eq!(check(&bad, 137131202, true), Err(Refused::Signature));
    }

    #[test]
    fn the_rfc_normalization_example_gives_its_base_string() {
        // RFC 5849 §3.4.1.1 (its body parameters moved to the query: a form body is
        // signed the same way).
        let oauth: HashMap<String, String> = [
            ("realm", "Example"),
            ("oauth_consumer_key", "9djdj82h48djs9d2"),
            ("oauth_token", "kkk9d7dh3k39sjv7"),
            ("oauth_signature_method", "HMAC-SHA1"),
            ("oauth_timestamp", "137131201"),
            ("oauth_nonce", "7d8f3e4a"),
            ("oauth_signature", "ignored"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let base = base_string(
            "post",
            "http://example.com/request",
            "b5=%3D%253D&a3=a&c%40=&a2=r%20b&c2=&a3=2+q",
            &oauth,
        );
        assert_eq!(
            base,
            "POST&http%3A%2F%2Fexample.com%2Frequest&a2%3Dr%2520b%26a3%3D2%2520q\
             %26a3%3Da%26b5%3D%253D%25253D%26c%2540%3D%26c2%3D%26oauth_consumer_\
             key%3D9djdj82h48djs9d2%26oauth_nonce%3D7d8f3e4a%26oauth_signature_m\
             ethod%3DHMAC-SHA1%26oauth_timestamp%3D137131201%26oauth_token%3Dkkk\
             9d7dh3k39sjv7"
        );
    }

    #[test]
    fn a_header_that_is_not_oauth_is_not_read() {
        assert_eq!(header_params("Bearer abc"), None);
        assert_eq!(header_params("OAuth realm=unquoted"), None);
        let p = header_params("OAuth realm=\"A_B\", oauth_nonce=\"x%2By\"").unwrap();
        assert_eq!(p["realm"], "A_B");
        assert_eq!(p["oauth_nonce"], "x+y");
    }
}
