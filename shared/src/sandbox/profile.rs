//! A sandbox profile: how the sandbox imitates one provider's API (routes,
//! paging inputs, record and page shapes, auth, throttles), as data.

use indexmap::IndexMap;
use serde::Deserialize;

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
    pub resources: IndexMap<String, ResourceProfile>,
}

fn default_seed() -> u64 {
    42
}

/// How data requests are authenticated.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthCheck {
    /// `none`, `bearer`, `header` (a named header), `query` (a named parameter), or `basic`.
    #[serde(rename = "type", default = "default_auth_type")]
    pub kind: String,
    /// Header or parameter name for `header` / `query` (`Authorization` for bearer).
    #[serde(default)]
    pub name: Option<String>,
    /// Text before the token (`Bearer ` for bearer).
    #[serde(default)]
    pub prefix: Option<String>,
    /// Tokens (or basic user names) always accepted.
    #[serde(default)]
    pub tokens: Vec<String>,
    /// The answer to a missing or wrong credential.
    #[serde(default)]
    pub unauthorized: Answer,
}

impl Default for AuthCheck {
    fn default() -> Self {
        AuthCheck {
            kind: default_auth_type(),
            name: None,
            prefix: None,
            tokens: Vec::new(),
            unauthorized: Answer::default(),
        }
    }
}

fn default_auth_type() -> String {
    "none".into()
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
}

impl Default for Answer {
    fn default() -> Self {
        Answer {
            status: default_401(),
            body: None,
            headers: IndexMap::new(),
        }
    }
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
    /// `body` or `basic`: how the client must authenticate.
    #[serde(default = "default_client_auth")]
    pub client_auth: String,
    /// JSONata over `{access_token, refresh_token, expires_in}`: the success answer.
    #[serde(default)]
    pub response: Option<String>,
    /// The answer to an unknown or revoked refresh token.
    #[serde(default = "default_invalid_grant")]
    pub invalid_grant: Answer,
}

fn default_ttl() -> u64 {
    3600
}
fn default_client_auth() -> String {
    "body".into()
}
fn default_invalid_grant() -> Answer {
    Answer {
        status: 400,
        body: Some(r#"{"error": "invalid_grant", "error_description": "refresh token is invalid or revoked"}"#.into()),
        headers: IndexMap::new(),
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
    #[serde(default = "default_since_format")]
    pub since_format: String,
    /// Offsets the provider counts from (1 for start positions).
    #[serde(default)]
    pub offset_base: u64,
    #[serde(default = "default_limit")]
    pub default_limit: u64,
    #[serde(default = "default_max_limit")]
    pub max_limit: u64,
    /// JSONata from the canonical generated record to the provider's record.
    pub record: String,
    /// The page answer.
    pub response: PageShape,
}

fn default_count() -> u64 {
    50
}
fn default_since_format() -> String {
    "rfc3339".into()
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
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageShape {
    /// JSONata over the page context: `records`, `next_cursor`, `next_offset`, `next_page`,
    /// `has_more`, `total`, `limit`, `offset`, `page`, `base_url`, `request`.
    pub body: String,
    /// Header templates (JSONata over the same context); an undefined result omits the header.
    #[serde(default)]
    pub headers: IndexMap<String, String>,
}
