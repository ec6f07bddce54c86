//! The spec's `webhooks` section: how the provider pushes changes to Tributary. Where a
//! delivery arrives (one URL for the provider's app, or one per connection), what the
//! receiver accepts and answers, how a delivery's authenticity is verified (against the
//! raw bytes, before anything in it is believed), how one delivery splits into items,
//! how each item is routed to a connection, and what each item says changed: an event
//! id (deduplication), a resource, a record id and an operation. Thin items (ids only)
//! become fetch-by-ids jobs, read with `fetch`.

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::model::Request;

/// How the provider's webhooks are received and read.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Webhooks {
    /// `app`: one URL for every connection of the provider (`/webhooks/<spec name>`),
    /// items routed by `route.key`; `connection`: one URL per connection
    /// (`/webhooks/<spec name>/<hook token>`), the token deciding the connection.
    pub delivery: Delivery,
    /// What the receiver accepts.
    #[serde(default)]
    pub accept: Accept,
    /// Requests answered at once, before verification and without being stored (a
    /// subscription's validation handshake), in order: the first whose `when` holds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub handshake: Vec<Handshake>,
    /// The answer once a delivery is durably stored.
    #[serde(default)]
    pub ack: Ack,
    /// Authenticity checks, in order: the first whose signature is present decides; a
    /// delivery none of them can check is refused.
    pub verify: Vec<Verify>,
    /// JSONata over the parsed body: the delivery's items (a single object is one item).
    #[serde(default = "default_items")]
    pub items: String,
    /// App delivery: which connection an item belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<Route>,
    /// What each item says changed.
    pub event: ItemEvent,
    /// How long an event id is remembered, to drop the provider's retries and
    /// duplicates (longer than its retry horizon). Default three days.
    #[serde(default = "default_dedup_ttl")]
    pub dedup_ttl_seconds: u64,
    /// More ids than this for one (connection, resource) in one window (an import
    /// storm) become one incremental run instead of fetches. Default 500.
    #[serde(default = "default_storm")]
    pub storm_threshold: usize,
    /// Reading records by id, per resource. A resource without one is refreshed by an
    /// incremental run.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub fetch: IndexMap<String, Fetch>,
    /// Connection delivery: how the connection's URL is registered with the provider
    /// when the connection is created, renewed before it expires and removed when the
    /// connection is deleted. Without it the URL is shown for the tenant to register.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscribe: Option<Subscribe>,
    /// A verified delivery is expected at least this often. After a longer silence each
    /// of the connection's resources gets an incremental run (events may have been lost),
    /// and again after each further such silence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub silence_seconds: Option<u64>,
    /// While the channel is healthy (a verified delivery within `silence_seconds`), a
    /// scheduled incremental run is skipped when the resource's last completed run ended
    /// less than this long ago: webhooks keep it current and polling only reconciles.
    /// Full runs always run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconcile_every_seconds: Option<u64>,
}

/// Registering a connection's webhook URL with the provider. Every request is made with
/// the connection's auth and budgets; their templates also see `webhook_url` (the URL
/// deliveries must go to), `connection_id`, `subscription_id` (after `create`), `secret`
/// (the one `generate_secret` made) and `expires_at` (now + `lifetime_seconds`, RFC 3339).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Subscribe {
    /// Tributary makes the subscription's secret (random, 48 characters) and sends it in
    /// `create` as `{{ secret }}` (e.g. a `clientState` echoed in each notification);
    /// otherwise the provider makes it (`create.secret` or the `secret` request).
    #[serde(default)]
    pub generate_secret: bool,
    /// The lifetime asked for (`{{ expires_at }}`), for subscriptions that expire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifetime_seconds: Option<u64>,
    pub create: SubscribeCreate,
    /// A second request reading the signing secret the provider made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<SubscribeSecret>,
    /// Extending an expiring subscription.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renew: Option<SubscribeRenew>,
    /// Removing the subscription (a 404 answer counts as removed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete: Option<SubscribeCall>,
}

/// The request creating the subscription and what its answer holds.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscribeCreate {
    pub request: Request,
    /// JSONata over the answer: the subscription's id.
    pub id: String,
    /// JSONata over the answer: the signing secret, when the answer carries it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// JSONata over the answer: when the subscription expires (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

/// The request reading the subscription's signing secret.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscribeSecret {
    pub request: Request,
    /// JSONata over the answer: the secret.
    pub value: String,
}

/// The request extending a subscription, made `before_seconds` before it expires.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscribeRenew {
    pub request: Request,
    /// JSONata over the answer: the new expiry (else the one asked for).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// Default 3600.
    #[serde(default = "default_renew_before")]
    pub before_seconds: u64,
}

fn default_renew_before() -> u64 {
    3600
}

/// A request whose answer is not read.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscribeCall {
    pub request: Request,
}

fn default_items() -> String {
    "$".into()
}
fn default_dedup_ttl() -> u64 {
    3 * 24 * 3600
}
fn default_storm() -> usize {
    500
}

/// Where deliveries arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    App,
    Connection,
}

/// What the receiver accepts.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Accept {
    /// HTTP methods (upper case). Default `[POST]`.
    #[serde(default = "default_methods")]
    pub methods: Vec<String>,
    /// Larger bodies are refused with 413. Default 1 MiB.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Headers kept with the stored delivery (lower case); signature headers are kept
    /// anyway. Everything else is dropped.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<String>,
    /// Query parameters the handshake may read (unsigned: never used for routing).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query: Vec<String>,
}

impl Default for Accept {
    fn default() -> Self {
        Accept {
            methods: default_methods(),
            max_body_bytes: default_max_body(),
            headers: Vec::new(),
            query: Vec::new(),
        }
    }
}

fn default_methods() -> Vec<String> {
    vec!["POST".into()]
}
fn default_max_body() -> usize {
    1024 * 1024
}

/// A request answered at once (e.g. echoing a validation token).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Handshake {
    /// JSONata over `{method, query, headers}`: this request is the handshake.
    pub when: String,
    #[serde(default = "default_status")]
    pub status: u16,
    #[serde(default = "default_text")]
    pub content_type: String,
    /// JSONata over the same input: the answer's body.
    pub body: String,
}

fn default_status() -> u16 {
    200
}
fn default_text() -> String {
    "text/plain".into()
}

/// The answer to a stored delivery.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Ack {
    /// Default 200.
    #[serde(default = "default_status")]
    pub status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// A literal body (none by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

impl Default for Ack {
    fn default() -> Self {
        Ack {
            status: 200,
            content_type: None,
            body: None,
        }
    }
}

/// One authenticity check.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Verify {
    pub scheme: Scheme,
    /// Whose secret signs: `app.<name>` (the app's `client_secret`, or a named
    /// `webhook_keys` entry of the apps file; several values are tried, for rotation) or
    /// `connection.secret` (the one the subscription stored, sealed).
    pub key: String,
    /// `hmac_sha256`: the parts signed, concatenated in order: `method`, `url` (the public
    /// URL the provider called), `body` (the raw bytes), `header.<name>`, `literal:<text>`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signed: Vec<String>,
    /// Percent-escapes decoded in the URL before it is signed (e.g. `%3A`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub url_decode: Vec<String>,
    /// Where the signature (`hmac_sha256`) or the token (`token`) is: `header.<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// How the signature is written. Default base64.
    #[serde(default)]
    pub encoding: Encoding,
    /// Text before the signature (e.g. `sha256=`), removed before comparing.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prefix: String,
    /// A signed timestamp and how old it may be.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<Timestamp>,
    /// `item_token`: JSONata over one item, the token it carries (e.g. `clientState`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item: Option<String>,
    /// `basic`: the user name, the key being the password (the credentials are then
    /// `user:key`); without it the key is the whole `user:password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// How a delivery proves where it comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Scheme {
    /// An HMAC-SHA256 of the `signed` parts with the key.
    HmacSha256,
    /// HTTP Basic credentials `user:password` equal to the key.
    Basic,
    /// A header (`signature`) equal to the key.
    Token,
    /// Every item of the delivery carries a token (`item`) equal to the key: for
    /// providers that sign nothing and echo a secret set on the subscription.
    ItemToken,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    #[default]
    Base64,
    Hex,
}

/// A timestamp the signature covers.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Timestamp {
    /// `header.<name>`.
    pub from: String,
    pub format: TimestampFormat,
    /// Older (or further in the future) than this is refused. Default 300.
    #[serde(default = "default_tolerance")]
    pub tolerance_seconds: u64,
}

fn default_tolerance() -> u64 {
    300
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TimestampFormat {
    EpochMillis,
    EpochSeconds,
    Rfc3339,
}

/// App delivery: the connection an item belongs to.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// JSONata over one item: the account id it names, matched against the connection's
    /// `external_id` (captured when it was connected, or set through the API).
    pub key: String,
}

/// What one item says changed, each a JSONata over the item (the `items` expression
/// copies into each item what it needs from around it, e.g. a batch's account id).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ItemEvent {
    /// The provider's event id (the same on its retries): duplicates are dropped by it.
    /// Absent (or null) where the provider has none: nothing is dropped, and a repeated
    /// item costs one fetch, which emits nothing new.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// A resource of this spec, or null: the item is about something not synced.
    pub resource: String,
    /// The record's provider id.
    pub record_id: String,
    /// `created`, `updated` or `deleted` (anything else reads as `updated`).
    pub op: String,
    /// Where the provider pushes the record itself in the resource's own shape (as the
    /// resource's list answers it): the record. It is normalized and published from the
    /// delivery, with no read, unless the provider's updated-at (`records.updated_at`)
    /// is older than the version already published. Null or undefined: the record is
    /// read by `fetch`. A `deleted` item of a spec that pushes records and has no `fetch`
    /// for the resource is the provider's own deletion signal (verified like every item):
    /// a known record gets its `deleted` event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<String>,
    /// JSONata predicate: the item is part of a bulk change (an import), or the provider
    /// says events were missed, and goes into one incremental run of its resource instead
    /// of a fetch (such an item needs no record id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coalesce_when: Option<String>,
}

/// Reading a resource's records by id.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Fetch {
    /// The request; templates also see `ids` (the ids, as strings) and `ids_as_objects`
    /// (`[{"id": ...}]`).
    pub request: Request,
    /// JSONata to the records in the answer (same shape as the resource's records).
    pub records: String,
    /// At most this many ids per request. Default 100.
    #[serde(default = "default_batch")]
    pub batch_max: usize,
}

fn default_batch() -> usize {
    100
}
