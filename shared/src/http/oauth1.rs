//! OAuth 1.0a request signing (RFC 5849), as token-based authentication uses it: a
//! consumer key and secret plus an access token and secret, no token endpoint.
//!
//! Every attempt is signed afresh (new nonce and timestamp), so a retried request is
//! never a replay. The signature covers the method, the URL without its query, the
//! query parameters and the `oauth_*` parameters; bodies here are JSON or XML, which
//! RFC 5849 leaves out of the signature (only form bodies are signed).

use base64::Engine;
use hmac::{Hmac, Mac};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use rand::distr::{Alphanumeric, SampleString};
use url::Url;

use crate::spec::model::Oauth1SignatureMethod;

/// RFC 5849 section 3.6: everything but ALPHA, DIGIT, `-`, `.`, `_` and `~` is encoded.
const ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn encode(s: &str) -> String {
    utf8_percent_encode(s, ENCODE).to_string()
}

/// The four secrets of token-based authentication.
pub struct Oauth1Keys<'a> {
    pub consumer_key: &'a str,
    pub consumer_secret: &'a str,
    pub token: &'a str,
    pub token_secret: &'a str,
}

/// What makes one signature unique: chosen fresh per attempt, fixed in tests.
pub struct Freshness {
    pub nonce: String,
    pub timestamp: u64,
}

impl Freshness {
    /// A random 32-character nonce and the current Unix time.
    pub fn now() -> Freshness {
        Freshness {
            nonce: Alphanumeric.sample_string(&mut rand::rng(), 32),
            timestamp: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or_default(),
        }
    }
}

impl Oauth1SignatureMethod {
    fn name(self) -> &'static str {
        match self {
            Oauth1SignatureMethod::HmacSha256 => "HMAC-SHA256",
            Oauth1SignatureMethod::HmacSha1 => "HMAC-SHA1",
        }
    }

    fn sign(self, key: &str, text: &str) -> String {
        fn mac<M: Mac + hmac::digest::KeyInit>(key: &str, text: &str) -> Vec<u8> {
            let mut m = <M as hmac::digest::KeyInit>::new_from_slice(key.as_bytes())
                .expect("HMAC takes a key of any length");
            m.update(text.as_bytes());
            m.finalize().into_bytes().to_vec()
        }
        let raw = match self {
            Oauth1SignatureMethod::HmacSha256 => mac::<Hmac<sha2::Sha256>>(key, text),
            Oauth1SignatureMethod::HmacSha1 => mac::<Hmac<sha1::Sha1>>(key, text),
        };
        base64::engine::general_purpose::STANDARD.encode(raw)
    }
}

/// The `oauth_*` protocol parameters of one request, before the signature.
fn protocol_params(
    keys: &Oauth1Keys,
    method: Oauth1SignatureMethod,
    fresh: &Freshness,
) -> Vec<(&'static str, String)> {
    vec![
        ("oauth_consumer_key", keys.consumer_key.to_string()),
        ("oauth_nonce", fresh.nonce.clone()),
        ("oauth_signature_method", method.name().to_string()),
        ("oauth_timestamp", fresh.timestamp.to_string()),
        ("oauth_token", keys.token.to_string()),
        ("oauth_version", "1.0".to_string()),
    ]
}

/// RFC 5849 section 3.4.1: method, base string URI and normalized parameters, each
/// encoded and joined by `&`.
pub fn base_string(http_method: &str, url: &Url, oauth: &[(&str, String)]) -> String {
    let mut params: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| (encode(&k), encode(&v)))
        .chain(oauth.iter().map(|(k, v)| (encode(k), encode(v))))
        .collect();
    params.sort();
    let normalized = params
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    format!(
        "{}&{}&{}",
        http_method.to_ascii_uppercase(),
        encode(&base_uri(url)),
        encode(&normalized)
    )
}

/// Scheme and host lower-case (as `Url` keeps them), the port only when not the
/// scheme's default, the path, and no query or fragment.
fn base_uri(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{}://{host}:{port}{}", url.scheme(), url.path()),
        None => format!("{}://{host}{}", url.scheme(), url.path()),
    }
}

/// The `Authorization` header value for one request.
pub fn authorization(
    http_method: &str,
    url: &Url,
    keys: &Oauth1Keys,
    method: Oauth1SignatureMethod,
    realm: Option<&str>,
    fresh: &Freshness,
) -> String {
    let mut oauth = protocol_params(keys, method, fresh);
    let key = format!(
        "{}&{}",
        encode(keys.consumer_secret),
        encode(keys.token_secret)
    );
    let signature = method.sign(&key, &base_string(http_method, url, &oauth));
    oauth.push(("oauth_signature", signature));
    let mut fields: Vec<String> = realm
        .map(|r| format!("realm=\"{}\"", encode(r)))
        .into_iter()
        .collect();
    fields.extend(oauth.iter().map(|(k, v)| format!("{k}=\"{}\"", encode(v))));
    format!("OAuth {}", fields.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of RFC 5849 section 1.2 (signed with HMAC-SHA1, without
    /// `oauth_version`, which the RFC marks optional).
    #[test]
    fn signs_the_rfc_5849_example() {
        let url =
            Url::parse("http://photos.example.net/photos?file=vacation.jpg&size=original").unwrap();
        let oauth = vec![
            ("oauth_consumer_key", "dpf43f3p2l4k3l03".to_string()),
            ("oauth_nonce", "chapoH".to_string()),
            ("oauth_signature_method", "HMAC-SHA1".to_string()),
            ("oauth_timestamp", "137131202".to_string()),
            ("oauth_token", "nnch734d00sl2jdk".to_string()),
        ];
        let base = base_string("GET", &url, &oauth);
        assert_eq!(
            base,
            "GET&http%3A%2F%2Fphotos.example.net%2Fphotos&file%3Dvacation.jpg%26\
             oauth_consumer_key%3Ddpf43f3p2l4k3l03%26oauth_nonce%3DchapoH%26\
             oauth_signature_method%3DHMAC-SHA1%26oauth_timestamp%3D137131202%26\
             oauth_token%3Dnnch734d00sl2jdk%26size%3Doriginal"
        );
        let signature =
            Oauth1SignatureMethod::HmacSha1.sign("kd94hf93k423kf44&pfkkdhi9sl3r4s00", &base);
        assert_eq!(signature, "MdpQcU8iPSUjWoN/UDMsK2sui9I=");
    }

    /// RFC 5849 section 3.4.1.1: repeated and encoded query parameters, sorted by
    /// encoded name then value (its form body parameters are left out: bodies here are
    /// never forms).
    #[test]
    fn normalizes_parameters_as_rfc_5849_section_3_4_1() {
        let url =
            Url::parse("http://EXAMPLE.COM:80/request?b5=%3D%253D&a3=a&c%40=&a2=r%20b").unwrap();
        let oauth = vec![
            ("oauth_consumer_key", "9djdj82h48djs9d2".to_string()),
            ("oauth_token", "kkk9d7dh3k39sjv7".to_string()),
            ("oauth_signature_method", "HMAC-SHA1".to_string()),
            ("oauth_timestamp", "137131201".to_string()),
            ("oauth_nonce", "7d8f3e4a".to_string()),
        ];
        assert_eq!(
            base_string("post", &url, &oauth),
            "POST&http%3A%2F%2Fexample.com%2Frequest&a2%3Dr%2520b%26a3%3Da%26\
             b5%3D%253D%25253D%26c%2540%3D%26oauth_consumer_key%3D9djdj82h48djs9d2%26\
             oauth_nonce%3D7d8f3e4a%26oauth_signature_method%3DHMAC-SHA1%26\
             oauth_timestamp%3D137131201%26oauth_token%3Dkkk9d7dh3k39sjv7"
        );
    }

    #[test]
    fn every_signature_is_fresh_and_names_realm_first() {
        let url = Url::parse("https://acct.example.com/q?limit=5").unwrap();
        let keys = Oauth1Keys {
            consumer_key: "ck",
            consumer_secret: "cs",
            token: "tk",
            token_secret: "ts",
        };
        let sign = || {
            authorization(
                "POST",
                &url,
                &keys,
                Oauth1SignatureMethod::HmacSha256,
                Some("123_SB1"),
                &Freshness::now(),
            )
        };
        let (a, b) = (sign(), sign());
        assert_ne!(a, b, "a fresh nonce per request");
        assert!(a.starts_with("OAuth realm=\"123_SB1\", oauth_consumer_key=\"ck\""));
        assert!(a.contains("oauth_signature_method=\"HMAC-SHA256\""));
        assert!(
            !a.contains("\"cs\"") && !a.contains("\"ts\""),
            "no secret is sent"
        );
    }
}
