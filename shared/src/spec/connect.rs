//! The spec's `connect` section: what connecting an account takes. For an OAuth
//! provider, the authorization request (URL, scopes, PKCE, extra parameters), what the
//! callback carries besides `code` and `state`, and how the new connection's identity
//! is captured (its `external_id` and config values, from the token answer, the
//! callback and an optional identity request). For a credential provider, the fields
//! the connect page asks for.

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::model::Method;

/// How an account is connected through the hosted connect page.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Connect {
    /// OAuth providers: the authorization request and the identity capture.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorize: Option<Authorize>,
    /// Credential providers (API key, basic auth, OAuth 1.0a tokens): the credential
    /// fields the connect page's form asks for, by credential name.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub fields: IndexMap<String, CredentialField>,
}

/// The OAuth 2.0 authorization-code request (RFC 6749 section 4.1).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Authorize {
    /// The authorize endpoint (template over `config`). A session's `authorize_url`
    /// setting replaces it.
    pub url: String,
    /// Scopes asked for whatever the connection syncs.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Scopes asked for when the connection syncs a resource, by resource name.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub resource_scopes: IndexMap<String, Vec<String>>,
    /// How `scope` joins its scopes (a space unless given).
    #[serde(default = "default_separator")]
    pub scope_separator: String,
    /// Send a PKCE challenge (S256, RFC 7636) and its verifier at the exchange: for
    /// providers that support it.
    #[serde(default)]
    pub pkce: bool,
    /// Further authorize parameters (templates over `config`), e.g. `prompt: consent`.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub params: IndexMap<String, String>,
    /// Query parameters the callback carries besides `code` and `state` (e.g. a company
    /// id), kept for the identity capture as `callback.<name>`; a callback without one
    /// of them fails.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub callback_params: Vec<String>,
    /// How the connection's identity is read.
    #[serde(default)]
    pub identity: Identity,
}

fn default_separator() -> String {
    " ".into()
}

/// The connection's identity, read once the code is exchanged. The JSONata expressions
/// see `token` (the token answer), `callback` (the `callback_params`) and `identity`
/// (the identity request's answer, when there is one).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    /// A request telling whom the new token belongs to (templates see `token`, `config`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<IdentityRequest>,
    /// JSONata to the account's id at the provider (a portal, org, company or tenant id):
    /// the connection's `external_id`, which webhooks route by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// Config values the connection gets, by name: JSONata each (e.g. an instance URL).
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub config: IndexMap<String, String>,
}

/// The identity request, sent with the new access token as the spec's auth sends it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IdentityRequest {
    #[serde(default)]
    pub method: Method,
    /// Path joined to the base URL, or an absolute URL (template).
    pub path: String,
}

/// One credential the connect page's form asks for.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CredentialField {
    /// The form label.
    pub label: String,
    /// Where the tenant finds the value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
    /// A secret (a password input, never shown again); `false` for names and ids.
    #[serde(default = "yes")]
    pub secret: bool,
}

fn yes() -> bool {
    true
}
