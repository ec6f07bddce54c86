//! A sandbox profile: how the sandbox imitates one provider's API (routes,
//! paging inputs, record and page shapes, auth, throttles, how strictly a
//! listing answers), as data; `Profile::load` reads one from YAML.

use std::path::Path;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::SandboxError;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub name: String,
    #[serde(default = "default_seed")]
    pub seed: u64,
    #[serde(default)]
    pub auth: AuthCheck,
    #[serde(default)]
    pub oauth: Option<OAuthServer>,
    #[serde(default)]
    pub rate_limit: Option<RateLimitRule>,
    /// Headers on every data answer (JSONata over `{remaining, limit, reset_epoch_seconds}`).
    #[serde(default)]
    pub headers: IndexMap<String, String>,
    /// How the sandbox writes the values it generates for custom fields.
    #[serde(default)]
    pub field_values: FieldValues,
    /// Endpoints describing the resources' fields and objects (`schema`).
    #[serde(default)]
    pub schema_routes: Vec<SchemaRoute>,
    pub resources: IndexMap<String, ResourceProfile>,
    /// Signed webhook deliveries the sandbox sends on demand (`POST /_sandbox/webhooks/send`),
    /// and the routes registering webhook subscriptions.
    #[serde(default)]
    pub webhooks: Option<crate::webhooks::WebhookProfile>,
}

fn default_seed() -> u64 {
    42
}

/// How data requests are authenticated.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthCheck {
    #[serde(rename = "type", default)]
    pub kind: AuthKind,
    /// Header or parameter name for `header` / `query` (`Authorization` for bearer).
    #[serde(default)]
    pub name: Option<String>,
    /// Text before the token (`Bearer ` for bearer).
    #[serde(default)]
    pub prefix: Option<String>,
    /// Tokens always accepted; for `basic`, user names (any password), or `user:password`
    /// pairs (that password only).
    #[serde(default)]
    pub tokens: Vec<String>,
    /// The answer to a missing or wrong credential.
    #[serde(default)]
    pub unauthorized: Answer,
    /// For `oauth1`: the keys and realm signatures are checked against.
    #[serde(default)]
    pub oauth1: Option<Oauth1Check>,
}

/// OAuth 1.0a token-based authentication, verified for real: a request must carry
/// this realm, consumer key and token, the signature method, a timestamp within
/// `max_skew_seconds` of now, a nonce never used before, and a valid signature.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Oauth1Check {
    pub consumer_key: String,
    pub consumer_secret: String,
    pub token_id: String,
    pub token_secret: String,
    pub realm: String,
    #[serde(default)]
    pub signature_method: SignatureMethod,
    #[serde(default = "default_max_skew")]
    pub max_skew_seconds: u64,
}

fn default_max_skew() -> u64 {
    300
}

/// The HMAC an OAuth 1.0a signature uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum SignatureMethod {
    #[default]
    #[serde(rename = "HMAC-SHA256")]
    HmacSha256,
    #[serde(rename = "HMAC-SHA1")]
    HmacSha1,
}

impl SignatureMethod {
    /// As `oauth_signature_method` names it.
    pub fn name(self) -> &'static str {
        match self {
            SignatureMethod::HmacSha256 => "HMAC-SHA256",
            SignatureMethod::HmacSha1 => "HMAC-SHA1",
        }
    }
}

/// Where a data request carries its credential.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthKind {
    /// Every request is accepted.
    #[default]
    None,
    /// `Authorization: Bearer <token>` (or the named header and prefix).
    Bearer,
    /// A named header (`x-api-key` unless named), minus an optional prefix.
    Header,
    /// A named query parameter (`api_key` unless named).
    Query,
    /// HTTP Basic: the user name is the token, or `user:password` when `tokens` name the pair.
    Basic,
    /// OAuth 1.0a signatures, checked as `oauth1` says.
    Oauth1,
}

/// A fixed error answer: status, JSONata body (over the request context), headers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Answer {
    #[serde(default = "default_401")]
    pub status: u16,
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default)]
    pub headers: IndexMap<String, String>,
    /// `xml`: the body's JSON result is written as XML (e.g. a SOAP fault).
    #[serde(default)]
    pub format: Format,
}

impl Default for Answer {
    fn default() -> Self {
        Answer {
            status: default_401(),
            body: None,
            headers: IndexMap::new(),
            format: Format::Json,
        }
    }
}

/// How an answer's body is written: JSON, or XML by the inverse of the engine's decoding
/// (`tributary::mapping::xml::encode`: the one key is the root, `@name` attributes,
/// `#text` text, arrays repeated elements).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Json,
    Xml,
    /// The body's result as plain text (`text/plain`), as APIs that answer some errors
    /// with a sentence rather than JSON.
    Text,
}

fn default_401() -> u16 {
    401
}

/// An OAuth2 token endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthServer {
    pub path: String,
    #[serde(default = "default_ttl")]
    pub access_token_ttl_seconds: u64,
    /// Issue a new refresh token on each refresh and invalidate the old one.
    #[serde(default)]
    pub rotate_refresh_tokens: bool,
    pub client_id: String,
    pub client_secret: String,
    /// Refresh tokens valid from the start.
    #[serde(default)]
    pub refresh_tokens: Vec<String>,
    /// How the client must authenticate at the token endpoint.
    #[serde(default)]
    pub client_auth: ClientAuth,
    /// JSONata over `{access_token, refresh_token, expires_in}`: the success answer.
    #[serde(default)]
    pub response: Option<String>,
    /// The answer to an unknown or revoked refresh token (and to a bad authorization code).
    #[serde(default = "default_invalid_grant")]
    pub invalid_grant: Answer,
    /// The authorization-code flow: a consent page, and codes the token endpoint exchanges.
    #[serde(default)]
    pub authorize: Option<AuthorizeServer>,
    /// Endpoints telling who an access token belongs to (e.g. an access-token info route).
    #[serde(default)]
    pub identity: Vec<IdentityRoute>,
}

/// The consent page at `path` (GET shows it, POST is the user's decision), strict as an
/// authorization server is: only the app's client id and registered redirect URIs, only
/// known scopes, PKCE as `pkce` says.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorizeServer {
    pub path: String,
    /// Redirect URIs registered for the app, compared exactly (tests register theirs).
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    /// Scopes the app may ask for; any other is `invalid_scope`.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// How `scope` separates its scopes (a space unless given).
    #[serde(default = "default_scope_separator")]
    pub scope_separator: String,
    #[serde(default)]
    pub pkce: PkceRule,
    /// JSONata over `{request}` to further query parameters of the redirect back (e.g.
    /// `{"realmId": "..."}`), beside `code` and `state`.
    #[serde(default)]
    pub callback: Option<String>,
    /// How long a code may be exchanged (single use).
    #[serde(default = "default_code_ttl")]
    pub code_ttl_seconds: u64,
    /// The account the consent grants access to, shown on the page (e.g. a portal id).
    #[serde(default)]
    pub account: Option<String>,
}

fn default_scope_separator() -> String {
    " ".into()
}

fn default_code_ttl() -> u64 {
    600
}

/// Whether the authorization server takes PKCE (RFC 7636).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PkceRule {
    /// A code challenge is refused without one (invalid_request).
    Required,
    /// Verified when the authorize request carried a challenge.
    #[default]
    Optional,
    /// Not part of this provider's flow: a challenge is ignored.
    Unsupported,
}

/// An identity endpoint: `path` (may hold `{token}`, the access token), answered with
/// `body` (JSONata over `{access_token, scope, params, request}`) for a valid token.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityRoute {
    #[serde(default = "default_method")]
    pub method: String,
    pub path: String,
    pub body: String,
    /// The answer to an unknown or expired token.
    #[serde(default)]
    pub unknown: Answer,
}

fn default_ttl() -> u64 {
    3600
}

/// How an OAuth client presents its id and secret.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// `client_id` and `client_secret` in the form body.
    #[default]
    Body,
    /// HTTP Basic with the id and secret.
    Basic,
}
fn default_invalid_grant() -> Answer {
    Answer {
        status: 400,
        body: Some(r#"{"error": "invalid_grant", "error_description": "refresh token is invalid or revoked"}"#.into()),
        headers: IndexMap::new(),
        format: Format::Json,
    }
}

/// The sandbox's own budget: requests over it get the throttle answer and are counted.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitRule {
    pub requests: u32,
    pub per_seconds: f64,
    /// Count every window of `per_seconds` ending at each request (a sliding log), the
    /// strictest reading of a budget; by default a fixed window starts at the first request.
    #[serde(default)]
    pub sliding: bool,
    /// JSONata over `{wait_seconds, wait_millis, reset_epoch_seconds, reset_epoch_millis, http_date}`.
    pub throttle: Answer,
}

/// One resource's routes, paging inputs and shapes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceProfile {
    /// How many records exist at start.
    #[serde(default = "default_count")]
    pub count: u64,
    pub routes: Vec<Route>,
    /// JSONata over `{query, body, params, headers}` for each paging input.
    #[serde(default)]
    pub input: Inputs,
    /// How `input.since` reads: rfc3339 (any RFC 3339 or SOQL-like literal), epoch_seconds, epoch_millis, or a strftime pattern.
    #[serde(default)]
    pub since_format: SinceFormat,
    /// Offsets the provider counts from (1 for start positions).
    #[serde(default)]
    pub offset_base: u64,
    #[serde(default = "default_limit")]
    pub default_limit: u64,
    #[serde(default = "default_max_limit")]
    pub max_limit: u64,
    /// The answer to a page size outside 1..=`max_limit` (JSONata body over `{limit,
    /// max_limit, request}`); without it such sizes are clamped.
    #[serde(default)]
    pub over_limit: Option<Answer>,
    /// JSONata from the canonical generated record to the provider's record.
    pub record: String,
    /// The page answer.
    pub response: PageShape,
    /// A listing returns only the properties a request names (fields are opt-in).
    #[serde(default)]
    pub named_properties: Option<NamedProperties>,
    /// A query parameter in a SELECT language names the fields: unknown ones are
    /// refused, and only the selected ones are returned.
    #[serde(default)]
    pub select_query: Option<SelectQuery>,
    /// Delta queries: listings bounded by a delta token report what changed after it,
    /// removed records included.
    #[serde(default)]
    pub delta: Option<DeltaQuery>,
    /// The object's fields as the provider describes them; custom ones get generated values.
    #[serde(default)]
    pub schema: ResourceSchema,
}

/// A resource's object and fields, as `schema_routes` describe them. Standard
/// fields are those the `record` expression writes; custom fields are the
/// tenant's own, and the sandbox writes a generated value for each into every
/// record (at `under`, or at the top level).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceSchema {
    /// What a describe route's object parameter may name (the resource name when empty).
    #[serde(default)]
    pub names: Vec<String>,
    /// The object's own attributes (name, labels, ids, ...), given to the answers as `object`.
    #[serde(default)]
    pub object: IndexMap<String, Value>,
    /// The record's key holding the fields (`properties`); the top level when absent.
    #[serde(default)]
    pub under: Option<String>,
    #[serde(default)]
    pub fields: Vec<FieldDef>,
    #[serde(default)]
    pub custom_fields: Vec<FieldDef>,
}

/// One field's definition: its name, label and type as the provider names them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldDef {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// The provider's type name (`enumeration`, `picklist`, `double`, ...).
    #[serde(rename = "type")]
    pub kind: String,
    /// A picklist's values: a bare value, or `{value, label}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<FieldOption>,
    /// How values are generated; by default `field_values.kinds[type]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generate: Option<ValueKind>,
    /// Generated numbers' range and decimals (0 to 1000, whole, unless given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decimals: Option<u32>,
    /// Provider-specific attributes, copied into the field as the answers see it.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub attributes: IndexMap<String, Value>,
}

impl FieldDef {
    pub fn label(&self) -> &str {
        self.label.as_deref().unwrap_or(&self.name)
    }
}

/// A picklist value, with its label.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FieldOption {
    Value(String),
    Labelled { value: String, label: String },
}

impl FieldOption {
    pub fn value(&self) -> &str {
        match self {
            FieldOption::Value(v) | FieldOption::Labelled { value: v, .. } => v,
        }
    }
    pub fn label(&self) -> &str {
        match self {
            FieldOption::Value(v) | FieldOption::Labelled { label: v, .. } => v,
        }
    }
}

/// What kind of value the sandbox generates for a custom field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueKind {
    Text,
    Number,
    Boolean,
    Date,
    Datetime,
    /// One of the field's options.
    Option,
}

/// How generated custom values are written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldValues {
    /// The provider's type names and the kind of value each gets.
    #[serde(default)]
    pub kinds: IndexMap<String, ValueKind>,
    /// Every value as a string (numbers and booleans too).
    #[serde(default)]
    pub as_strings: bool,
    /// strftime pattern of datetimes.
    #[serde(default = "default_datetime_format")]
    pub datetime_format: String,
}

impl Default for FieldValues {
    fn default() -> Self {
        FieldValues {
            kinds: IndexMap::new(),
            as_strings: false,
            datetime_format: default_datetime_format(),
        }
    }
}

fn default_datetime_format() -> String {
    "%Y-%m-%dT%H:%M:%S%.3fZ".into()
}

/// An endpoint describing objects: with `object`, the one object its path
/// parameter names (its fields, as they are now); without, every resource's object.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaRoute {
    #[serde(default = "default_method")]
    pub method: String,
    pub path: String,
    /// The path parameter naming the object (matched against `schema.names`).
    #[serde(default)]
    pub object: Option<String>,
    /// Names compare without case.
    #[serde(default)]
    pub ignore_case: bool,
    /// JSONata over `{resource, object, fields, request, base_url}` (one object) or
    /// `{objects, request, base_url}` (every object). Nothing (undefined) answers `not_found`.
    pub body: String,
    /// The answer when the parameter names no object: JSONata body over `{name, request}`.
    #[serde(default = "default_not_found")]
    pub not_found: Answer,
}

fn default_not_found() -> Answer {
    Answer {
        status: 404,
        body: Some(r#"{"error": "not_found", "object": name}"#.into()),
        headers: IndexMap::new(),
        format: Format::Json,
    }
}

/// How `input.since` values read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(from = "String")]
pub enum SinceFormat {
    /// RFC 3339, or the same with a `+0000` offset, optionally quoted.
    #[default]
    Rfc3339,
    EpochSeconds,
    EpochMillis,
    /// A strftime pattern, with or without an offset.
    Pattern(String),
}

impl From<String> for SinceFormat {
    fn from(s: String) -> Self {
        match s.as_str() {
            "rfc3339" => SinceFormat::Rfc3339,
            "epoch_seconds" => SinceFormat::EpochSeconds,
            "epoch_millis" => SinceFormat::EpochMillis,
            _ => SinceFormat::Pattern(s),
        }
    }
}

impl std::fmt::Display for SinceFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SinceFormat::Rfc3339 => f.write_str("rfc3339"),
            SinceFormat::EpochSeconds => f.write_str("epoch_seconds"),
            SinceFormat::EpochMillis => f.write_str("epoch_millis"),
            SinceFormat::Pattern(p) => f.write_str(p),
        }
    }
}

/// Properties are opt-in: a listing returns, inside each record's properties
/// object (or among its top-level keys when `under` is absent, as OData's
/// `$select` does), only those the request names, plus the ones always returned. A named
/// property the records do not have is ignored; one they hold as `null` is
/// returned as `null`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedProperties {
    /// JSONata over the request context (`{query, body, params, headers}`): the names
    /// asked for, as a comma-separated string or an array of strings.
    pub names: String,
    /// The record's key holding the properties object; absent: the record's own keys.
    #[serde(default)]
    pub under: Option<String>,
    /// Returned whether named or not.
    #[serde(default)]
    pub always: Vec<String>,
    /// Returned (besides `always`) when the request names none.
    #[serde(default)]
    pub when_none: Vec<String>,
    /// Without `under`: the answer to a named property no record has (JSONata body over
    /// `{name, request}`), as OData refuses a `$select` of an unknown property. Without
    /// it, unknown names are ignored.
    #[serde(default)]
    pub unknown: Option<Answer>,
}

/// Delta queries (change tracking, as in OData delta links): a listing without a token
/// serves every record and its last page hands out a token (the page context's
/// `delta_token`, an opaque string encoding the sandbox's change clock); a listing
/// carrying the token in `token_param` serves only the records created or updated
/// after it, then the records deleted after it (the control API's `mutate` keeps a
/// tombstone with each deletion's time) as `removed` writes them, and its last page
/// hands out a new token. Later pages of a round keep its bound (the cursor carries it).
/// A token the sandbox did not hand out (unknown resource, malformed) gets `invalid_token`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeltaQuery {
    /// The query parameter carrying the delta token (`$deltatoken`).
    pub token_param: String,
    /// JSONata over `{record, deleted_at}` (the provider's record as it was when deleted,
    /// and the deletion time, RFC 3339): how a removed record is reported.
    pub removed: String,
    /// The answer to a token the sandbox did not hand out (JSONata body over the request).
    #[serde(default)]
    pub invalid_token: Answer,
}

/// A query parameter holding `SELECT f1, f2 FROM Object [WHERE ...] [ORDER BY ...]
/// [LIMIT n]`: the resource serves the queries on its object, answers
/// `invalid_field` for a selected field its records do not have, and returns only
/// the selected fields (query locators remember the selection).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelectQuery {
    /// The query parameter's name (or the JSON body field's, `in: body`).
    pub param: String,
    /// Where the statement is: a query parameter (`query`, the default, as SOQL's `q`)
    /// or a field of the JSON body (`body`, as SuiteQL's `{"q": ...}`).
    #[serde(rename = "in", default)]
    pub location: StatementLocation,
    /// The object after FROM that this resource serves (compared case-insensitively).
    pub object: String,
    /// Record keys returned whatever is selected.
    #[serde(default)]
    pub always: Vec<String>,
    /// JSONata body over `{field, object, query}`.
    #[serde(default = "default_invalid_field")]
    pub invalid_field: Answer,
    /// The answer to a query the sandbox cannot read: JSONata body over `{message, query}`.
    #[serde(default = "default_malformed")]
    pub malformed: Answer,
    /// The answer to a query FROM an object no resource at the route serves:
    /// JSONata body over `{object, query}` (the first resource reading queries answers).
    #[serde(default = "default_invalid_type")]
    pub invalid_type: Answer,
}

/// Where a query statement is carried.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatementLocation {
    #[default]
    Query,
    Body,
}

impl SelectQuery {
    /// The statement a request carries (its request context's `query.<param>` or
    /// `body.<param>`), null when there is none.
    pub fn statement<'r>(&self, request: &'r serde_json::Value) -> &'r serde_json::Value {
        let at = match self.location {
            StatementLocation::Query => "query",
            StatementLocation::Body => "body",
        };
        &request[at][&self.param]
    }
}

fn default_invalid_type() -> Answer {
    Answer {
        status: 400,
        body: Some(r#"{"error": "invalid_type", "object": object}"#.into()),
        headers: IndexMap::new(),
        format: Format::Json,
    }
}

fn default_invalid_field() -> Answer {
    Answer {
        status: 400,
        body: Some(r#"{"error": "invalid_field", "field": field, "object": object}"#.into()),
        headers: IndexMap::new(),
        format: Format::Json,
    }
}

fn default_malformed() -> Answer {
    Answer {
        status: 400,
        body: Some(r#"{"error": "malformed_query", "message": message}"#.into()),
        headers: IndexMap::new(),
        format: Format::Json,
    }
}

fn default_count() -> u64 {
    50
}
fn default_limit() -> u64 {
    10
}
fn default_max_limit() -> u64 {
    100
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    #[serde(default = "default_method")]
    pub method: String,
    /// Path pattern; `{name}` captures a segment into `params`.
    pub path: String,
    /// JSONata predicate over the request context: this route serves the resource only when true.
    #[serde(default)]
    pub when: Option<String>,
    /// Requests this route refuses although it serves them otherwise, each with the
    /// provider's answer: e.g. an endpoint that takes OAuth tokens only, refusing an API
    /// key the rest of the API accepts. Checked in order, after `when`.
    #[serde(default)]
    pub refuse: Vec<Refusal>,
}

/// A request a route refuses: `when` (JSONata over the request context) and the answer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Refusal {
    pub when: String,
    pub answer: Answer,
}

fn default_method() -> String {
    "GET".into()
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inputs {
    pub cursor: Option<String>,
    pub offset: Option<String>,
    pub page: Option<String>,
    pub limit: Option<String>,
    pub since: Option<String>,
    /// An as-of-entry snapshot time (RFC 3339): records entered after it are left out, as
    /// a provider pinning a long read to the moment its first page was served does.
    pub as_of: Option<String>,
    /// The record ids a request fetches (an array of strings or numbers, or one id): when it
    /// evaluates to an array, the route answers exactly the records with those ids that exist,
    /// in the order asked, in one page (`ids` and `missing_ids` in the page context).
    pub ids: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageShape {
    /// JSONata over the page context: `records`, `next_cursor`, `next_offset`, `next_page`,
    /// `has_more`, `total`, `limit`, `offset`, `page`, `base_url`, `now` (RFC 3339 with
    /// microseconds: a snapshot time to hand out), `request` (`{query, body, params,
    /// headers, path}`), and with `delta` `delta_token` (on a listing's last page).
    pub body: String,
    /// The answer's status (JSONata over the same context, a number); 200 when absent or
    /// undefined.
    #[serde(default)]
    pub status: Option<String>,
    /// Header templates (JSONata over the same context); an undefined result omits the header.
    #[serde(default)]
    pub headers: IndexMap<String, String>,
    /// `xml`: the body is written as XML (see `Format`).
    #[serde(default)]
    pub format: Format,
}

impl Profile {
    /// Read a profile file; errors name the file and the path inside it.
    pub fn load(path: &Path) -> Result<Profile, SandboxError> {
        let fail = |message: String| SandboxError::Profile {
            file: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
        let de = serde_yaml_ng::Deserializer::from_str(&text);
        serde_path_to_error::deserialize(de)
            .map_err(|e| fail(format!("at `{}`: {}", e.path(), e.inner())))
    }
}
