//! The provider spec, format v1, as serde types.
//!
//! These types are the single source of truth for the format: the JSON Schema
//! in `provider-specs/spec.schema.json` is generated from them (see
//! `spec::schema`), and a test keeps the committed file in step.
//! Strings documented as *template* are minijinja templates; strings documented
//! as *JSONata* are JSONata expressions. Both are compiled once when the spec loads.

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One provider: how to reach it, authenticate, page through it and map its records.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProviderSpec {
    /// Format version of this file. Only `1` exists.
    pub spec_version: u32,
    /// Stable identifier of the provider (what connections name in `provider`).
    pub name: String,
    /// Human-readable name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Link to the provider's API documentation this spec was written from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docs_url: Option<String>,
    /// Base URL (template over `config`). A connection's `base_url` setting replaces it.
    pub base_url: String,
    /// Host patterns (globs such as `*.api.example.com`) that every resolved URL must match.
    pub allowed_hosts: Vec<String>,
    /// Settings a connection supplies (e.g. `subdomain`, `instance_url`), by name.
    #[serde(default)]
    pub config: IndexMap<String, ConfigField>,
    /// How requests are authenticated.
    pub auth: Auth,
    /// Headers sent on every request (values are templates).
    #[serde(default)]
    pub headers: IndexMap<String, String>,
    /// Query parameters sent on every request (values are templates).
    #[serde(default)]
    pub query: IndexMap<String, String>,
    /// The provider's documented rate limits and throttle signals.
    #[serde(default)]
    pub rate_limit: RateLimit,
    /// How the provider's error bodies are read.
    #[serde(default)]
    pub errors: ErrorHandling,
    /// How answers are decoded (JSON unless said); a resource's `response` replaces it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<ResponseFormat>,
    /// Default number of records asked for per page.
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    /// The resources this provider exposes, by name.
    pub resources: IndexMap<String, Resource>,
    /// How to list a tenant's fields of an object, by name; a resource names the one it
    /// uses in its `discovery`, and several may share one.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub discovery: IndexMap<String, Discovery>,
    /// How to list a tenant's custom objects and read any of them (`custom:<name>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_objects: Option<CustomObjects>,
    /// How an account is connected through the hosted connect page: the OAuth
    /// authorization and identity capture, or the credential fields to ask for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect: Option<super::connect::Connect>,
    /// How the provider pushes changes (webhooks): receiving, verifying, routing and
    /// reading them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhooks: Option<super::webhooks::Webhooks>,
}

/// A request listing the fields one tenant's account has on an object, and how to read
/// its answer into field definitions. It goes through the same templates, auth, budgets
/// and pagination as any resource's request.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Discovery {
    /// The request (templates over `config`, `page_size`, the paging variables, and
    /// `object` inside `custom_objects`).
    pub request: Request,
    /// How the answer's pages follow each other (default: one page).
    #[serde(default = "single_page")]
    pub pagination: Pagination,
    /// Where the entries are (`path`) and what identifies one (`primary_key`).
    pub records: Records,
    /// JSONata from one entry to a field definition `{name, label, type, custom,
    /// required, options}` (`type`: string, number, integer, boolean, date, datetime,
    /// picklist, multipicklist, reference; anything else is `other`); an entry it maps to
    /// nothing is skipped.
    pub field: String,
    /// Discover again once the last discovery is this old (seconds; default one day).
    #[serde(default = "one_day")]
    pub every_seconds: u64,
}

fn single_page() -> Pagination {
    Pagination {
        kind: PaginationKind::None,
        cursor_path: None,
        next_url_path: None,
        param: None,
        limit_param: None,
        start: None,
        has_more: None,
        total: None,
        stop_on_empty_page: true,
        stop_on_short_page: false,
        max_pages: None,
        total_pages: None,
        capture: IndexMap::new(),
    }
}

fn one_day() -> u64 {
    86_400
}

/// A tenant's custom objects: how to list them, how to discover one's fields, and the
/// resource any of them is read with. A connection syncs one by naming `custom:<name>`
/// in its resources; its records map into `custom.object` on the topic
/// `<prefix>.custom.<name lowercased>`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CustomObjects {
    /// Lists the objects: `field` maps an entry to `{name, label}` for each custom object
    /// (nothing for the others).
    pub list: Discovery,
    /// One object's fields; `{{ object }}` is its name.
    pub discovery: Discovery,
    /// How any custom object is read; `{{ object }}` is its name in the templates. Its
    /// `model` must be `custom.object`; its mapping gives `fields`, `created_at` and
    /// `updated_at` (the engine sets `object` and `id`), and `discovery` above is implied.
    pub resource: Resource,
}

fn default_page_size() -> u32 {
    100
}

/// A per-connection setting the spec uses.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigField {
    /// Whether a connection must supply it.
    #[serde(default)]
    pub required: bool,
    /// What it is and where the tenant finds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Value used when the connection does not supply one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
}

/// Authentication scheme.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Auth {
    /// No authentication.
    None,
    /// A static API key in a header or a query parameter.
    ApiKey {
        /// Where the key goes.
        #[serde(rename = "in")]
        location: KeyLocation,
        /// Header or query parameter name.
        name: String,
        /// Template producing the sent value.
        #[serde(default = "default_api_key_value")]
        value: String,
    },
    /// HTTP Basic authentication.
    Basic {
        /// Template producing the user name.
        #[serde(default = "default_username")]
        username: String,
        /// Template producing the password.
        #[serde(default = "default_password")]
        password: String,
    },
    /// A static bearer token.
    Bearer {
        /// Header carrying the token.
        #[serde(default = "default_auth_header")]
        header: String,
        /// Text put before the token in the header.
        #[serde(default = "default_bearer_prefix")]
        prefix: String,
        /// Template producing the token.
        #[serde(default = "default_access_token")]
        value: String,
    },
    /// OAuth2 authorization-code tokens: an access token refreshed with a refresh token.
    Oauth2RefreshToken {
        /// Token endpoint URL (template over `config`). A connection's `token_url` setting replaces it.
        token_url: String,
        /// How the client authenticates to the token endpoint.
        #[serde(default)]
        client_auth: ClientAuth,
        /// Extra form parameters sent to the token endpoint (values are templates).
        #[serde(default)]
        token_params: IndexMap<String, String>,
        /// JSONata paths into the token response.
        #[serde(default)]
        token_response: TokenResponse,
        /// Header carrying the token.
        #[serde(default = "default_auth_header")]
        header: String,
        /// Text put before the token in the header.
        #[serde(default = "default_bearer_prefix")]
        prefix: String,
        /// Refresh a token that expires within this many seconds before using it.
        #[serde(default = "default_refresh_margin")]
        refresh_margin_seconds: u64,
        /// The provider expires a refresh token left unused this many days: idle connections
        /// are refreshed in the background (by the scheduler) at half that age.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        refresh_token_idle_days: Option<u32>,
    },
    /// OAuth2 client-credentials grant: tokens fetched with the client id and secret.
    Oauth2ClientCredentials {
        /// Token endpoint URL (template over `config`). A connection's `token_url` setting replaces it.
        token_url: String,
        /// How the client authenticates to the token endpoint.
        #[serde(default)]
        client_auth: ClientAuth,
        /// Extra form parameters sent to the token endpoint (values are templates).
        #[serde(default)]
        token_params: IndexMap<String, String>,
        /// JSONata paths into the token response.
        #[serde(default)]
        token_response: TokenResponse,
        /// Header carrying the token.
        #[serde(default = "default_auth_header")]
        header: String,
        /// Text put before the token in the header.
        #[serde(default = "default_bearer_prefix")]
        prefix: String,
        /// Scopes requested (space-joined).
        #[serde(default)]
        scopes: Vec<String>,
    },
    /// OAuth 1.0a signed requests (token-based authentication): every request carries a
    /// fresh signature made with the credentials `consumer_key`, `consumer_secret`,
    /// `token_id` and `token_secret`. There is no token endpoint and nothing to refresh.
    Oauth1 {
        /// How requests are signed.
        #[serde(default)]
        signature_method: Oauth1SignatureMethod,
        /// Template producing the `realm` the provider expects (e.g. an account id).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        realm: Option<String>,
    },
}

/// OAuth 1.0a signature methods (RFC 5849 section 3.4, with SHA-256 as providers use it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Oauth1SignatureMethod {
    #[default]
    #[serde(rename = "HMAC-SHA256")]
    HmacSha256,
    #[serde(rename = "HMAC-SHA1")]
    HmacSha1,
}

impl Auth {
    /// The scheme's name as written in specs.
    pub fn kind(&self) -> &'static str {
        match self {
            Auth::None => "none",
            Auth::ApiKey { .. } => "api_key",
            Auth::Basic { .. } => "basic",
            Auth::Bearer { .. } => "bearer",
            Auth::Oauth2RefreshToken { .. } => "oauth2_refresh_token",
            Auth::Oauth2ClientCredentials { .. } => "oauth2_client_credentials",
            Auth::Oauth1 { .. } => "oauth1",
        }
    }
}

fn default_api_key_value() -> String {
    "{{ credentials.api_key }}".into()
}
fn default_username() -> String {
    "{{ credentials.username }}".into()
}
fn default_password() -> String {
    "{{ credentials.password }}".into()
}
fn default_access_token() -> String {
    "{{ credentials.access_token }}".into()
}
fn default_refresh_margin() -> u64 {
    300
}

/// Where an API key goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum KeyLocation {
    Header,
    Query,
}

fn default_auth_header() -> String {
    "Authorization".into()
}
fn default_bearer_prefix() -> String {
    "Bearer ".into()
}

/// How the client id and secret reach the token endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// `client_id` and `client_secret` as form fields.
    #[default]
    Body,
    /// HTTP Basic with the client id and secret.
    Basic,
}

/// Where the token endpoint's answer carries each value (JSONata).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenResponse {
    #[serde(default = "default_tr_access")]
    pub access_token: String,
    /// Lifetime in seconds. When absent from the answer, `default_expires_in_seconds` applies.
    #[serde(default = "default_tr_expires")]
    pub expires_in: String,
    /// A rotated refresh token, when the provider issues one.
    #[serde(default = "default_tr_refresh")]
    pub refresh_token: String,
    /// Lifetime assumed when the answer gives none.
    #[serde(default = "default_expires_in_seconds")]
    pub default_expires_in_seconds: u64,
    /// JSONata predicate over an error answer meaning the grant is revoked (re-authorization needed).
    #[serde(default = "default_invalid_grant")]
    pub invalid_grant: String,
}

impl Default for TokenResponse {
    fn default() -> Self {
        TokenResponse {
            access_token: default_tr_access(),
            expires_in: default_tr_expires(),
            refresh_token: default_tr_refresh(),
            default_expires_in_seconds: default_expires_in_seconds(),
            invalid_grant: default_invalid_grant(),
        }
    }
}

fn default_tr_access() -> String {
    "access_token".into()
}
fn default_tr_expires() -> String {
    "expires_in".into()
}
fn default_tr_refresh() -> String {
    "refresh_token".into()
}
fn default_expires_in_seconds() -> u64 {
    3600
}
fn default_invalid_grant() -> String {
    "error = 'invalid_grant'".into()
}

/// The provider's rate limits and how it signals a throttle.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Requests allowed per window (with `per_seconds`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<u32>,
    /// Window length in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_seconds: Option<f64>,
    /// Requests allowed per UTC day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_day: Option<u32>,
    /// Requests in flight at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u32>,
    /// Who shares the budget above: each connection, or every connection of one provider
    /// app (connections with the same OAuth `client_id`). Every worker replica shares it.
    #[serde(default)]
    pub scope: BudgetScope,
    /// A further budget shared by every connection of the same provider app, on top of a
    /// per-connection one (e.g. an app-wide daily allocation). Only with `scope: connection`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_budget: Option<Quota>,
    /// Statuses that mean "throttled".
    #[serde(default = "default_throttle_statuses")]
    pub throttle_statuses: Vec<u16>,
    /// Statuses that mean "too many requests in flight" (a provider that governs
    /// concurrency, not a rate window): the request is retried after a short backoff, as a
    /// transient failure, without holding the connection's budget or parking the run. They
    /// take precedence over `throttle_statuses`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub in_flight_statuses: Vec<u16>,
    /// JSONata predicate over a JSON error body that means "throttled" (any status >= 400).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttle_body: Option<String>,
    /// Header with the wait, in seconds or as an HTTP date.
    #[serde(default = "default_retry_after")]
    pub retry_after_header: Option<String>,
    /// Header with the time the window resets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset_header: Option<ResetHeader>,
    /// Header with the requests left in the window; at 0 the engine waits for the reset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining_header: Option<String>,
    /// First wait when throttled without a usable header (doubles per consecutive throttle, full jitter).
    #[serde(default = "default_backoff")]
    pub default_backoff_seconds: f64,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit {
            requests: None,
            per_seconds: None,
            requests_per_day: None,
            max_concurrency: None,
            scope: BudgetScope::default(),
            app_budget: None,
            throttle_statuses: default_throttle_statuses(),
            in_flight_statuses: Vec::new(),
            throttle_body: None,
            retry_after_header: default_retry_after(),
            reset_header: None,
            remaining_header: None,
            default_backoff_seconds: default_backoff(),
        }
    }
}

fn default_throttle_statuses() -> Vec<u16> {
    vec![429]
}
fn default_retry_after() -> Option<String> {
    Some("Retry-After".into())
}
fn default_backoff() -> f64 {
    1.0
}

impl RateLimit {
    /// The budget declared at `scope`.
    pub fn quota(&self) -> Quota {
        Quota {
            requests: self.requests,
            per_seconds: self.per_seconds,
            requests_per_day: self.requests_per_day,
            max_concurrency: self.max_concurrency,
        }
    }
}

/// A budget: requests per window, per UTC day, and in flight at once.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    /// Requests allowed per window (with `per_seconds`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<u32>,
    /// Window length in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_seconds: Option<f64>,
    /// Requests allowed per UTC day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_day: Option<u32>,
    /// Requests in flight at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u32>,
}

/// Who shares a budget.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BudgetScope {
    #[default]
    Connection,
    App,
}

impl BudgetScope {
    pub fn as_str(self) -> &'static str {
        match self {
            BudgetScope::Connection => "connection",
            BudgetScope::App => "app",
        }
    }
}

/// A header carrying the time the rate window resets.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetHeader {
    pub name: String,
    pub format: ResetFormat,
}

/// How a reset header's number reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ResetFormat {
    /// Unix time in seconds.
    EpochSeconds,
    /// Unix time in milliseconds.
    EpochMillis,
    /// Seconds from now.
    DeltaSeconds,
    /// Milliseconds from now.
    DeltaMillis,
}

/// How error answers are read.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorHandling {
    /// JSONata over a JSON error body giving the provider's message (shown in errors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Header carrying the provider's error message, for providers that put it there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_header: Option<String>,
    /// Statuses meaning the credentials were refused (default 401).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_statuses: Option<Vec<u16>>,
    /// JSONata predicate over a decoded SOAP `Fault` element (XML answers): true when the
    /// fault means the credentials were refused (the connection then needs re-auth).
    /// Other faults stop the run with their fault string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_fault: Option<String>,
}

/// How a provider's answers are decoded.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResponseFormat {
    /// `json` (the default) or `xml`.
    #[serde(default)]
    pub format: BodyFormat,
    /// XML only: element names (local, without prefix) always decoded as arrays, so a
    /// page holding one record still gives a list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub arrays: Vec<String>,
}

/// The format of answer bodies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum BodyFormat {
    #[default]
    Json,
    /// Decoded into the JSON tree described in provider-specs/README.md ("XML answers").
    Xml,
}

/// One resource: a list of records of one unified model.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Resource {
    /// Unified model the records map into, e.g. `crm.contact`.
    pub model: String,
    /// The request for a page.
    pub request: Request,
    /// How pages follow each other.
    pub pagination: Pagination,
    /// Where the records are and how to identify them.
    pub records: Records,
    /// How to ask only for records changed since a time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incremental: Option<Incremental>,
    /// Records per page for this resource (overrides the spec's `page_size`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_size: Option<u32>,
    /// How this resource's answers are decoded (replaces the spec's `response`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<ResponseFormat>,
    /// JSONata from one provider record to the unified model's fields.
    pub mapping: String,
    /// Which provider fields become `custom_fields`.
    #[serde(default)]
    pub custom_fields: CustomFields,
    /// JSONata per unified field (or `custom_fields.<name>`), evaluated over the provider
    /// record and merged into the mapping's result: one field added or replaced without
    /// restating the whole mapping. A result of null removes the field.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub fields: IndexMap<String, String>,
    /// The `discovery` entry that lists this resource's fields for each connection: its
    /// names are `fields.all`, `fields.custom` and `fields.standard` in the request
    /// templates, and its types type the `custom_fields`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery: Option<String>,
    /// For a list that carries ids only: the request reading one record in full, sent
    /// for every entry of every page (full and incremental runs alike).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<Detail>,
}

/// Reading each listed record in full, when the list answer carries ids (and links) only.
/// The requests go through the same budgets, auth, host guard, throttles and retries as
/// any other; the records keep the list's order.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Detail {
    /// The request for one record: templates see `record` (the list entry) besides the
    /// usual variables, e.g. `path: "/record/v1/customer/{{ record.id }}"`.
    pub request: Request,
    /// JSONata to the record in the detail answer (default: the whole answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<String>,
    /// Detail requests in flight at once for one page (default 4). The rate budget's
    /// `max_concurrency`, shared by the fleet, still bounds every request.
    #[serde(default = "default_detail_concurrency")]
    pub concurrency: u32,
}

fn default_detail_concurrency() -> u32 {
    4
}

/// A request template.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Request {
    #[serde(default)]
    pub method: Method,
    /// Path (template) joined to the base URL.
    pub path: String,
    /// Query parameters (templates). A parameter whose value renders empty is left out.
    #[serde(default)]
    pub query: IndexMap<String, String>,
    /// Headers (templates).
    #[serde(default)]
    pub headers: IndexMap<String, String>,
    /// JSON body for POST. String leaves are templates; a leaf that is exactly one
    /// `{{ expression }}` keeps the expression's type, and is left out when it is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<serde_json::Value>,
    /// XML body for POST (a template, e.g. a SOAP envelope): every value it prints is
    /// XML-escaped (`| safe` prints markup as is). It is the one request template that may
    /// read `credentials` (a WS-Security UsernameToken in the envelope's header). `Content-Type` defaults to
    /// `text/xml; charset=utf-8`; `SOAPAction` and the like go in `headers`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xml_body: Option<String>,
}

/// HTTP method.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    #[default]
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
        }
    }

    /// Reads are GET or POST (a search); the others change the provider's data and are
    /// allowed only where a spec registers its webhooks (`webhooks.subscribe`).
    pub fn is_read(self) -> bool {
        matches!(self, Method::Get | Method::Post)
    }

    pub fn to_http(self) -> reqwest::Method {
        match self {
            Method::Get => reqwest::Method::GET,
            Method::Post => reqwest::Method::POST,
            Method::Put => reqwest::Method::PUT,
            Method::Patch => reqwest::Method::PATCH,
            Method::Delete => reqwest::Method::DELETE,
        }
    }
}

/// Pagination styles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PaginationKind {
    /// One page only.
    None,
    /// An opaque cursor read from the body (`cursor_path`) and sent back.
    Cursor,
    /// A next-page URL read from the body (`next_url_path`), absolute or relative to the base URL.
    NextUrl,
    /// The RFC 8288 `Link` header's `rel="next"` URL.
    LinkHeader,
    /// An offset advanced by the number of records received (`start: 1` for 1-based start positions).
    Offset,
    /// A page number advanced by one.
    PageNumber,
}

/// How pages follow each other, and when to stop.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Pagination {
    #[serde(rename = "type")]
    pub kind: PaginationKind,
    /// JSONata to the next cursor (`cursor`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor_path: Option<String>,
    /// JSONata to the next page's URL (`next_url`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_url_path: Option<String>,
    /// Query parameter carrying the cursor, offset or page number. Without it, use
    /// `{{ cursor }}`, `{{ offset }}` or `{{ page }}` in the request templates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub param: Option<String>,
    /// Query parameter carrying the page size (or use `{{ page_size }}` in templates).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_param: Option<String>,
    /// First offset (default 0) or first page number (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<u64>,
    /// JSONata to a has-more flag: stop when it is false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub has_more: Option<String>,
    /// JSONata to the total number of records: stop when that many were read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<String>,
    /// Stop on a page without records (default true).
    #[serde(default = "default_true")]
    pub stop_on_empty_page: bool,
    /// Stop on a page with fewer records than asked for.
    #[serde(default)]
    pub stop_on_short_page: bool,
    /// Upper bound on pages per run; reaching it is an error, not a silent stop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pages: Option<u32>,
    /// JSONata to the number of pages there are (`page_number`): stop after that page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_pages: Option<String>,
    /// Values read from the first page's answer (name -> JSONata) that later requests of
    /// the same run send again as `{{ captured.<name> }}`: e.g. the snapshot time page 1
    /// was read at, so pages 2..n read the same snapshot.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub capture: IndexMap<String, String>,
}

fn default_true() -> bool {
    true
}

impl Pagination {
    /// Pagination of this kind with every option at its default.
    pub fn of_kind(kind: PaginationKind) -> Pagination {
        Pagination {
            kind,
            cursor_path: None,
            next_url_path: None,
            param: None,
            limit_param: None,
            start: None,
            has_more: None,
            total: None,
            stop_on_empty_page: true,
            stop_on_short_page: false,
            max_pages: None,
            total_pages: None,
            capture: IndexMap::new(),
        }
    }
}

/// Where records are in a page and how to identify them.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Records {
    /// JSONata to the records in the body (`$` when the body is the array).
    pub path: String,
    /// JSONata to a record's primary key (its provider id).
    pub primary_key: String,
    /// JSONata to a record's last-modified time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
    /// JSONata predicate: the provider says this record was removed (e.g. `status =
    /// 'deleted'`, `$exists($.'@removed')`). Such a record emits a `deleted` event at once,
    /// in an incremental run too: the provider itself asserts the delete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted: Option<String>,
}

/// How to ask for records changed since a time.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Incremental {
    /// How `{{ since }}` renders: `rfc3339`, `rfc3339_millis`, `epoch_seconds`,
    /// `epoch_millis`, or a chrono strftime pattern such as `%Y-%m-%dT%H:%M:%S%z`.
    #[serde(default = "default_since_format")]
    pub since_format: String,
    /// Seconds subtracted from the since time, for clocks and late writes.
    #[serde(default)]
    pub lookback_seconds: u64,
    /// The request to use instead of `request` when a since time is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<Request>,
    /// The pagination to use with the incremental request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pagination: Option<Pagination>,
    /// Records the incremental endpoint pages through, when they sit elsewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records: Option<Records>,
    /// JSONata to a delta link on the last page of a round (e.g. `` `@odata.deltaLink` ``):
    /// an opaque URL the provider gives for "changes after this round". It is stored as
    /// the resource's checkpoint, and the next incremental run starts by fetching it
    /// instead of sending a since time; without a stored link, an incremental run starts
    /// with `request` (the first round, which lists everything and ends with a link).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta_link: Option<String>,
}

fn default_since_format() -> String {
    "rfc3339".into()
}

/// Which provider fields become `custom_fields`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CustomFields {
    /// JSONata to the object holding the provider's fields (`$` for the record itself).
    #[serde(default = "default_custom_from")]
    pub from: String,
    /// Fields never reported as custom (system fields).
    #[serde(default)]
    pub exclude: Vec<String>,
    /// When set, only fields whose names match this regular expression are custom.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_pattern: Option<String>,
    /// When set, only these provider fields are custom (by name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include: Option<Vec<String>>,
}

impl Default for CustomFields {
    fn default() -> Self {
        CustomFields {
            from: default_custom_from(),
            exclude: Vec::new(),
            include_pattern: None,
            include: None,
        }
    }
}

fn default_custom_from() -> String {
    "$".into()
}
