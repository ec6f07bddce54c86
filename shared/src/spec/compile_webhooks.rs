//! The `webhooks` section compiled: every JSONata once, the verification schemes read
//! into typed parts, each `fetch` made a one-page [`Plan`] over its resource's records
//! (the same primary key and updated-at), so a fetched record is read, normalized and
//! fingerprinted exactly as a listed one.

use indexmap::IndexMap;

use super::compile::{Compiler, Plan};
use super::model::{Pagination, PaginationKind, Records};
use super::webhooks::{Ack, Delivery, Encoding, Fetch, Scheme, TimestampFormat, Verify, Webhooks};
use crate::mapping::jsonata::Jsonata;

/// A spec's webhooks, ready to receive and read.
#[derive(Debug)]
pub struct CompiledWebhooks {
    pub delivery: Delivery,
    pub methods: Vec<String>,
    pub max_body_bytes: usize,
    /// Headers kept with a stored delivery (lower case), signature headers included.
    pub keep_headers: Vec<String>,
    pub keep_query: Vec<String>,
    pub handshakes: Vec<CompiledHandshake>,
    pub ack: Ack,
    pub verify: Vec<CompiledVerify>,
    pub items: Jsonata,
    pub route: Option<Jsonata>,
    pub event: CompiledItemEvent,
    pub dedup_ttl_seconds: u64,
    pub storm_threshold: usize,
    pub fetch: IndexMap<String, CompiledFetch>,
}

#[derive(Debug)]
pub struct CompiledHandshake {
    pub when: Jsonata,
    pub status: u16,
    pub content_type: String,
    pub body: Jsonata,
}

/// One verification scheme, its parts typed.
#[derive(Debug, Clone)]
pub struct CompiledVerify {
    pub scheme: Scheme,
    pub key: KeyRef,
    pub signed: Vec<SignedPart>,
    pub url_decode: Vec<(String, String)>,
    /// The header carrying the signature or token (lower case); `Authorization` for basic.
    pub signature_header: String,
    pub encoding: Encoding,
    pub prefix: String,
    pub timestamp: Option<CompiledTimestamp>,
}

#[derive(Debug, Clone)]
pub struct CompiledTimestamp {
    pub header: String,
    pub format: TimestampFormat,
    pub tolerance_seconds: u64,
}

/// Whose secret a scheme checks with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRef {
    /// The provider's app, by key name (`client_secret` or a `webhook_keys` entry).
    App(String),
    /// The connection's stored webhook secret.
    Connection,
}

/// One part of a signed string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignedPart {
    Method,
    Url,
    Body,
    Header(String),
    Literal(String),
}

#[derive(Debug)]
pub struct CompiledItemEvent {
    pub id: Jsonata,
    pub resource: Jsonata,
    pub record_id: Jsonata,
    pub op: Jsonata,
    pub coalesce_when: Option<Jsonata>,
}

#[derive(Debug)]
pub struct CompiledFetch {
    pub plan: Plan,
    pub batch_max: usize,
}

/// The variables a fetch request's templates see besides the usual ones.
pub const FETCH_VARS: &[&str] = &["ids", "ids_as_objects"];

impl Compiler<'_> {
    pub(super) fn webhooks(&mut self, w: &Webhooks) -> Option<CompiledWebhooks> {
        let at = "webhooks";
        if w.verify.is_empty() {
            self.problem(
                &format!("{at}.verify"),
                "a webhook must be verified: give at least one scheme (hmac_sha256, basic, token)",
            );
        }
        if w.delivery == Delivery::App && w.route.is_none() {
            self.problem(
                &format!("{at}.route"),
                "app delivery needs `route.key`: the account id each item names",
            );
        }
        let verify: Vec<_> = (w.verify.iter().enumerate())
            .filter_map(|(i, v)| self.verify(&format!("{at}.verify[{i}]"), v, w.delivery))
            .collect();
        let handshakes = (w.handshake.iter().enumerate())
            .filter_map(|(i, h)| {
                let p = format!("{at}.handshake[{i}]");
                Some(CompiledHandshake {
                    when: self.jsonata(&format!("{p}.when"), &h.when)?,
                    status: h.status,
                    content_type: h.content_type.clone(),
                    body: self.jsonata(&format!("{p}.body"), &h.body)?,
                })
            })
            .collect();
        let items = self.jsonata(&format!("{at}.items"), &w.items);
        let route =
            (w.route.as_ref()).and_then(|r| self.jsonata(&format!("{at}.route.key"), &r.key));
        let e = &w.event;
        let event = (|| {
            Some(CompiledItemEvent {
                id: self.jsonata(&format!("{at}.event.id"), &e.id)?,
                resource: self.jsonata(&format!("{at}.event.resource"), &e.resource)?,
                record_id: self.jsonata(&format!("{at}.event.record_id"), &e.record_id)?,
                op: self.jsonata(&format!("{at}.event.op"), &e.op)?,
                coalesce_when: match &e.coalesce_when {
                    Some(c) => Some(self.jsonata(&format!("{at}.event.coalesce_when"), c)?),
                    None => None,
                },
            })
        })();
        let mut fetch = IndexMap::new();
        for (name, f) in &w.fetch {
            if let Some(c) = self.fetch(&format!("{at}.fetch.{name}"), name, f) {
                fetch.insert(name.clone(), c);
            }
        }
        let mut keep_headers: Vec<String> = w
            .accept
            .headers
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect();
        for v in &verify {
            keep_headers.push(v.signature_header.clone());
            keep_headers.extend(v.timestamp.iter().map(|t| t.header.clone()));
            keep_headers.extend(v.signed.iter().filter_map(|p| match p {
                SignedPart::Header(h) => Some(h.clone()),
                _ => None,
            }));
        }
        keep_headers.sort();
        keep_headers.dedup();
        Some(CompiledWebhooks {
            delivery: w.delivery,
            methods: w
                .accept
                .methods
                .iter()
                .map(|m| m.to_ascii_uppercase())
                .collect(),
            max_body_bytes: w.accept.max_body_bytes,
            keep_headers,
            keep_query: w.accept.query.clone(),
            handshakes,
            ack: w.ack.clone(),
            verify,
            items: items?,
            route,
            event: event?,
            dedup_ttl_seconds: w.dedup_ttl_seconds,
            storm_threshold: w.storm_threshold.max(1),
            fetch,
        })
    }

    fn verify(&mut self, at: &str, v: &Verify, delivery: Delivery) -> Option<CompiledVerify> {
        let key = match v.key.split_once('.') {
            Some(("app", name)) if !name.is_empty() => KeyRef::App(name.to_string()),
            _ if v.key == "connection.secret" => KeyRef::Connection,
            _ => {
                self.problem(
                    &format!("{at}.key"),
                    format!(
                        "`{}` names no key: use `app.<name>` or `connection.secret`",
                        v.key
                    ),
                );
                return None;
            }
        };
        if key == KeyRef::Connection && delivery == Delivery::App {
            self.problem(
                &format!("{at}.key"),
                "an app delivery is verified before it is routed: use an `app.<name>` key",
            );
        }
        let mut signed = Vec::new();
        for (i, part) in v.signed.iter().enumerate() {
            match signed_part(part) {
                Ok(p) => signed.push(p),
                Err(m) => self.problem(&format!("{at}.signed[{i}]"), m),
            }
        }
        let header = |s: &str| s.strip_prefix("header.").map(str::to_ascii_lowercase);
        let signature_header = match (v.scheme, v.signature.as_deref()) {
            (Scheme::Basic, None) => "authorization".to_string(),
            (_, Some(s)) => match header(s) {
                Some(h) => h,
                None => {
                    self.problem(
                        &format!("{at}.signature"),
                        "write where it is as `header.<name>`",
                    );
                    return None;
                }
            },
            (_, None) => {
                self.problem(
                    &format!("{at}.signature"),
                    "say where the signature is: `header.<name>`",
                );
                return None;
            }
        };
        if v.scheme == Scheme::HmacSha256 && signed.is_empty() {
            self.problem(
                &format!("{at}.signed"),
                "list the parts signed (e.g. [body])",
            );
        }
        let timestamp = match &v.timestamp {
            None => None,
            Some(t) => match header(&t.from) {
                Some(h) => Some(CompiledTimestamp {
                    header: h,
                    format: t.format,
                    tolerance_seconds: t.tolerance_seconds,
                }),
                None => {
                    self.problem(
                        &format!("{at}.timestamp.from"),
                        "write where it is as `header.<name>`",
                    );
                    None
                }
            },
        };
        let url_decode = v
            .url_decode
            .iter()
            .filter_map(|esc| {
                let hex = esc.strip_prefix('%').filter(|h| h.len() == 2)?;
                let byte = u8::from_str_radix(hex, 16).ok()?;
                Some((esc.to_ascii_uppercase(), (byte as char).to_string()))
            })
            .collect::<Vec<_>>();
        if url_decode.len() != v.url_decode.len() {
            self.problem(
                &format!("{at}.url_decode"),
                "each entry is one percent-escape, e.g. `%3A`",
            );
        }
        Some(CompiledVerify {
            scheme: v.scheme,
            key,
            signed,
            url_decode,
            signature_header,
            encoding: v.encoding,
            prefix: v.prefix.clone(),
            timestamp,
        })
    }

    /// A fetch as a one-page plan over the resource's own record expressions.
    fn fetch(&mut self, at: &str, resource: &str, f: &Fetch) -> Option<CompiledFetch> {
        let Some(r) = self.src.spec.resources.get(resource) else {
            let known: Vec<&str> = self.src.spec.resources.keys().map(String::as_str).collect();
            self.problem(
                at,
                format!(
                    "the spec has no resource `{resource}`; it has: {}",
                    known.join(", ")
                ),
            );
            return None;
        };
        let records = Records {
            path: f.records.clone(),
            ..r.records.clone()
        };
        let once = Pagination::of_kind(PaginationKind::None);
        // A resource whose fields are discovered names them here too.
        let mut vars = FETCH_VARS.to_vec();
        if r.discovery.is_some() {
            vars.push("fields");
        }
        let plan = self.with_vars(&vars, |c| c.plan(at, &f.request, &once, &records))?;
        Some(CompiledFetch {
            plan,
            batch_max: f.batch_max.max(1),
        })
    }
}

fn signed_part(part: &str) -> Result<SignedPart, String> {
    Ok(match part {
        "method" => SignedPart::Method,
        "url" => SignedPart::Url,
        "body" => SignedPart::Body,
        p => match (p.strip_prefix("header."), p.strip_prefix("literal:")) {
            (Some(h), _) if !h.is_empty() => SignedPart::Header(h.to_ascii_lowercase()),
            (_, Some(l)) => SignedPart::Literal(l.to_string()),
            _ => {
                return Err(format!(
                    "`{part}` is not a part: use method, url, body, header.<name> or literal:<text>"
                ))
            }
        },
    })
}
