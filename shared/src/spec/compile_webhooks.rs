//! The `webhooks` section compiled: every JSONata once, the verification schemes read
//! into typed parts, each `fetch` made a one-page [`Plan`] over its resource's records
//! (the same primary key and updated-at), so a fetched record is read, normalized and
//! fingerprinted exactly as a listed one.

use indexmap::IndexMap;

use super::compile::{Compiler, Plan};
use super::model::Request;
use super::model::{Pagination, PaginationKind, Records};
use super::webhooks::{
    Ack, Delivery, Encoding, Fetch, Scheme, Subscribe, TimestampFormat, Verify, Webhooks,
};
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
    pub subscribe: Option<CompiledSubscribe>,
    pub silence_seconds: Option<u64>,
    pub reconcile_every_seconds: Option<u64>,
}

/// `subscribe`: each request a one-request [`Plan`] (its answer read whole), each
/// expression over an answer compiled.
#[derive(Debug)]
pub struct CompiledSubscribe {
    pub generate_secret: bool,
    pub lifetime_seconds: Option<u64>,
    pub create: Plan,
    pub create_id: Jsonata,
    pub create_secret: Option<Jsonata>,
    pub create_expires_at: Option<Jsonata>,
    /// The request reading the secret, and where it is in the answer.
    pub secret: Option<(Plan, Jsonata)>,
    pub renew: Option<CompiledRenew>,
    pub delete: Option<Plan>,
}

#[derive(Debug)]
pub struct CompiledRenew {
    pub plan: Plan,
    pub expires_at: Option<Jsonata>,
    pub before_seconds: u64,
}

/// One of `subscribe`'s requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscribeStep {
    Create,
    Secret,
    Renew,
    Delete,
}

impl SubscribeStep {
    pub fn name(self) -> &'static str {
        match self {
            SubscribeStep::Create => "create",
            SubscribeStep::Secret => "secret",
            SubscribeStep::Renew => "renew",
            SubscribeStep::Delete => "delete",
        }
    }
}

impl CompiledSubscribe {
    /// The request of a step, if the spec declares it.
    pub fn plan(&self, step: SubscribeStep) -> Option<&Plan> {
        match step {
            SubscribeStep::Create => Some(&self.create),
            SubscribeStep::Secret => self.secret.as_ref().map(|(p, _)| p),
            SubscribeStep::Renew => self.renew.as_ref().map(|r| &r.plan),
            SubscribeStep::Delete => self.delete.as_ref(),
        }
    }
}

/// The variables `subscribe`'s request templates see besides the usual ones.
pub const SUBSCRIBE_VARS: &[&str] = &[
    "webhook_url",
    "connection_id",
    "subscription_id",
    "secret",
    "expires_at",
];

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
    /// `item_token`: the token each item carries.
    pub item: Option<Jsonata>,
    pub key: KeyRef,
    pub signed: Vec<SignedPart>,
    pub url_decode: Vec<(String, String)>,
    /// The header carrying the signature or token (lower case); `Authorization` for basic.
    pub signature_header: String,
    pub encoding: Encoding,
    pub prefix: String,
    pub timestamp: Option<CompiledTimestamp>,
    /// `basic`: the user name the key is the password of.
    pub user: Option<String>,
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
    pub id: Option<Jsonata>,
    pub resource: Jsonata,
    pub record_id: Jsonata,
    pub op: Jsonata,
    pub coalesce_when: Option<Jsonata>,
    /// The pushed record, where the provider sends it.
    pub record: Option<Jsonata>,
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
                id: match &e.id {
                    Some(id) => Some(self.jsonata(&format!("{at}.event.id"), id)?),
                    None => None,
                },
                resource: self.jsonata(&format!("{at}.event.resource"), &e.resource)?,
                record_id: self.jsonata(&format!("{at}.event.record_id"), &e.record_id)?,
                op: self.jsonata(&format!("{at}.event.op"), &e.op)?,
                coalesce_when: match &e.coalesce_when {
                    Some(c) => Some(self.jsonata(&format!("{at}.event.coalesce_when"), c)?),
                    None => None,
                },
                record: match &e.record {
                    Some(r) => Some(self.jsonata(&format!("{at}.event.record"), r)?),
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
            if v.scheme != Scheme::ItemToken {
                keep_headers.push(v.signature_header.clone());
            }
            keep_headers.extend(v.timestamp.iter().map(|t| t.header.clone()));
            keep_headers.extend(v.signed.iter().filter_map(|p| match p {
                SignedPart::Header(h) => Some(h.clone()),
                _ => None,
            }));
        }
        keep_headers.sort();
        keep_headers.dedup();
        let subscribe = (w.subscribe.as_ref()).and_then(|sub| self.subscribe(w, sub));
        if w.reconcile_every_seconds.is_some() && w.silence_seconds.is_none() {
            self.problem(
                &format!("{at}.reconcile_every_seconds"),
                "polling is relaxed only while the channel is healthy: set `silence_seconds`, \
                 how often a verified delivery is expected",
            );
        }
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
            subscribe,
            silence_seconds: w.silence_seconds,
            reconcile_every_seconds: w.reconcile_every_seconds,
        })
    }

    fn subscribe(&mut self, w: &Webhooks, sub: &Subscribe) -> Option<CompiledSubscribe> {
        let at = "webhooks.subscribe";
        if w.delivery != Delivery::Connection {
            self.problem(
                at,
                "only a connection delivery registers a URL per connection: set \
                 `delivery: connection` or remove `subscribe`",
            );
        }
        let signs_with_connection = w.verify.iter().any(|v| v.key == "connection.secret");
        let gives_secret =
            sub.generate_secret || sub.create.secret.is_some() || sub.secret.is_some();
        if signs_with_connection && !gives_secret {
            self.problem(
                at,
                "`verify` checks with `connection.secret`, but nothing gives it: set \
                 `generate_secret`, `create.secret` or a `secret` request",
            );
        }
        if sub.renew.is_some() && sub.lifetime_seconds.is_none() {
            self.problem(
                &format!("{at}.renew"),
                "a renewal asks for a new expiry: set `lifetime_seconds`",
            );
        }
        let create = self.call_plan(&format!("{at}.create"), &sub.create.request);
        let create_id = self.jsonata(&format!("{at}.create.id"), &sub.create.id);
        let optional = |c: &mut Self, path: &str, e: &Option<String>| match e {
            Some(e) => c.jsonata(path, e).map(Some),
            None => Some(None),
        };
        let create_secret = optional(self, &format!("{at}.create.secret"), &sub.create.secret);
        let create_expires_at = optional(
            self,
            &format!("{at}.create.expires_at"),
            &sub.create.expires_at,
        );
        let secret = match &sub.secret {
            Some(s) => {
                let plan = self.call_plan(&format!("{at}.secret"), &s.request);
                let value = self.jsonata(&format!("{at}.secret.value"), &s.value);
                Some((plan?, value?))
            }
            None => None,
        };
        let renew = match &sub.renew {
            Some(r) => Some(CompiledRenew {
                plan: self.call_plan(&format!("{at}.renew"), &r.request)?,
                expires_at: optional(self, &format!("{at}.renew.expires_at"), &r.expires_at)?,
                before_seconds: r.before_seconds,
            }),
            None => None,
        };
        let delete = match &sub.delete {
            Some(d) => Some(self.call_plan(&format!("{at}.delete"), &d.request)?),
            None => None,
        };
        Some(CompiledSubscribe {
            generate_secret: sub.generate_secret,
            lifetime_seconds: sub.lifetime_seconds,
            create: create?,
            create_id: create_id?,
            create_secret: create_secret?,
            create_expires_at: create_expires_at?,
            secret,
            renew,
            delete,
        })
    }

    /// One request whose answer is read whole (the records expressions are not used).
    fn call_plan(&mut self, at: &str, request: &Request) -> Option<Plan> {
        let whole = Records {
            path: "$".into(),
            primary_key: "$".into(),
            updated_at: None,
            deleted: None,
        };
        let once = Pagination::of_kind(PaginationKind::None);
        self.writes_allowed = true;
        let plan = self.with_vars(SUBSCRIBE_VARS, |c| c.plan(at, request, &once, &whole));
        self.writes_allowed = false;
        plan
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
        let item = match (v.scheme, &v.item) {
            (Scheme::ItemToken, Some(e)) => Some(self.jsonata(&format!("{at}.item"), e)?),
            (Scheme::ItemToken, None) => {
                self.problem(
                    &format!("{at}.item"),
                    "say where each item carries its token: a JSONata such as `clientState`",
                );
                return None;
            }
            (_, Some(_)) => {
                self.problem(
                    &format!("{at}.item"),
                    "only `item_token` reads a token per item",
                );
                None
            }
            (_, None) => None,
        };
        let signature_header = match (v.scheme, v.signature.as_deref()) {
            (Scheme::Basic, None) => "authorization".to_string(),
            // Named in refusals and in `verified_by`; no header carries it.
            (Scheme::ItemToken, None) => format!("item.{}", v.item.as_deref().unwrap_or("")),
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
        if v.user.is_some() && v.scheme != Scheme::Basic {
            self.problem(
                &format!("{at}.user"),
                "only the `basic` scheme has a user name",
            );
        }
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
            item,
            key,
            signed,
            url_decode,
            signature_header,
            encoding: v.encoding,
            prefix: v.prefix.clone(),
            timestamp,
            user: v.user.clone(),
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::spec::compile::compile;
    use crate::spec::load::parse_spec;

    /// A spec with one resource and the given `webhooks` section (YAML, indented by two).
    fn spec(webhooks: &str) -> String {
        format!(
            r#"spec_version: 1
name: demo
base_url: "https://api.example.com"
allowed_hosts: ["api.example.com"]
auth: {{type: bearer}}
resources:
  tickets:
    model: ticketing.ticket
    request: {{path: /tickets}}
    pagination: {{type: none}}
    records: {{path: tickets, primary_key: id}}
    mapping: "{{ 'id': $string(id) }}"
webhooks:
{webhooks}"#
        )
    }

    const CONNECTION_DELIVERY: &str = r#"  delivery: connection
  verify:
    - {scheme: hmac_sha256, key: connection.secret, signed: [body], signature: header.x-signature}
  event: {id: id, resource: "'tickets'", record_id: ticket, op: op}
"#;

    fn problems(text: &str) -> String {
        match compile(parse_spec(Path::new("demo.yaml"), text).unwrap()) {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_subscription_compiles_with_its_writes() {
        let text = spec(&format!(
            "{CONNECTION_DELIVERY}  subscribe:
    create:
      request: {{method: POST, path: /hooks, body: {{url: \"{{{{ webhook_url }}}}\"}}}}
      id: hook.id
    secret:
      request: {{path: \"/hooks/{{{{ subscription_id }}}}/secret\"}}
      value: secret
    delete:
      request: {{method: DELETE, path: \"/hooks/{{{{ subscription_id }}}}\"}}
"
        ));
        let spec = compile(parse_spec(Path::new("demo.yaml"), &text).unwrap()).unwrap();
        let sub = spec.webhooks.as_ref().unwrap().subscribe.as_ref().unwrap();
        assert!(sub.secret.is_some() && sub.delete.is_some() && sub.renew.is_none());
    }

    #[test]
    fn a_secret_nobody_gives_is_refused() {
        let text = spec(&format!(
            "{CONNECTION_DELIVERY}  subscribe:
    create:
      request: {{method: POST, path: /hooks}}
      id: hook.id
"
        ));
        assert!(
            problems(&text).contains("nothing gives it"),
            "{}",
            problems(&text)
        );
    }

    #[test]
    fn writes_outside_subscribe_are_refused() {
        let text = spec(CONNECTION_DELIVERY).replace(
            "request: {path: /tickets}",
            "request: {method: DELETE, path: /tickets}",
        );
        let found = problems(&text);
        assert!(
            found.contains("resources.tickets") && found.contains("a read is GET or POST"),
            "{found}"
        );
    }

    #[test]
    fn subscribe_variables_are_unknown_elsewhere() {
        let text = spec(CONNECTION_DELIVERY).replace(
            "request: {path: /tickets}",
            "request: {path: \"/tickets/{{ subscription_id }}\"}",
        );
        assert!(
            problems(&text).contains("subscription_id"),
            "{}",
            problems(&text)
        );
    }
}
