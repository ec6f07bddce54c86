//! Connecting an account by OAuth (the spec's `connect.authorize`), apart from where
//! the flow is driven (the scheduler's connect pages, `spec run --authorize`): the
//! authorize URL a browser is sent to, and once the provider calls back, the code
//! exchanged for the first tokens and the connection's identity captured (its
//! `external_id` and config values, from the token answer, the callback and an
//! optional identity request); and, for typed-in credentials, `check_credentials` (a
//! first page read with them). Nothing here stores anything: the caller writes the
//! connection only when `complete` or the check succeeds.

pub mod apps;
pub mod pkce;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::http::auth::{AuthError, Authenticator, DiscardTokens};
use crate::http::guard;
use crate::mapping::jsonata::Jsonata;
use crate::secrets::Credentials;
use crate::spec::compile::{CompiledAuth, CompiledAuthorize};
use crate::spec::model::Method;
use crate::spec::CompiledSpec;

/// The connect flow's deployment settings (`TRIBUTARY_PUBLIC_URL`, `TRIBUTARY_APPS_FILE`,
/// `TRIBUTARY_CONNECT_RETURN_ORIGINS`, `TRIBUTARY_CONNECT_SESSION_SECONDS`).
#[derive(Debug, Clone)]
pub struct ConnectSettings {
    /// Where browsers reach the scheduler: connect URLs and the OAuth callback start here.
    pub public_url: Option<String>,
    /// The OAuth apps file.
    pub apps_file: Option<std::path::PathBuf>,
    /// Origins (`https://app.example.com`) a session's `return_url` may have.
    pub return_origins: Vec<String>,
    /// How long a session's URL stays valid.
    pub session_ttl: Duration,
}

impl Default for ConnectSettings {
    fn default() -> Self {
        ConnectSettings {
            public_url: None,
            apps_file: None,
            return_origins: Vec::new(),
            session_ttl: Duration::from_secs(30 * 60),
        }
    }
}

/// Why a connect step failed. The messages name the step and never carry a secret.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("{provider} has no `connect.authorize` section: it is not connected by OAuth")]
    NotOauth { provider: String },
    #[error("the authorize URL: {0}")]
    AuthorizeUrl(String),
    #[error("the callback has no `{0}` parameter, which {1} sends with the code")]
    CallbackMissing(String, String),
    #[error("the code exchange failed: {0}")]
    Exchange(String),
    #[error("the identity capture failed: {0}")]
    Identity(String),
}

impl ConnectError {
    /// A short machine-readable reason (for a session's state and the return URL).
    pub fn reason(&self) -> &'static str {
        match self {
            ConnectError::NotOauth { .. } => "not_oauth",
            ConnectError::AuthorizeUrl(_) => "authorize_url",
            ConnectError::CallbackMissing(..) => "callback_incomplete",
            ConnectError::Exchange(_) => "code_exchange_failed",
            ConnectError::Identity(_) => "identity_capture_failed",
        }
    }
}

/// The OAuth app a connection is made with.
#[derive(Clone)]
pub struct App {
    pub client_id: String,
    pub client_secret: String,
    /// Scopes asked for beside the spec's.
    pub scopes: Vec<String>,
    /// Keys webhooks are verified with, by name (never shown).
    pub webhook_keys: std::collections::BTreeMap<String, Vec<String>>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("scopes", &self.scopes)
            .field(
                "webhook_keys",
                &self.webhook_keys.keys().collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// What an authorization asks for.
pub struct AuthorizeRequest<'a> {
    pub spec: &'a CompiledSpec,
    /// The connection's settings so far (a session's `config`).
    pub config: &'a Map<String, Value>,
    pub resources: &'a [String],
    pub app: &'a App,
    pub redirect_uri: &'a str,
    pub state: &'a str,
    /// The PKCE challenge (S256), sent when the spec says `pkce: true`.
    pub challenge: Option<&'a str>,
}

fn compiled_authorize(spec: &CompiledSpec) -> Result<&CompiledAuthorize, ConnectError> {
    spec.authorize
        .as_ref()
        .ok_or_else(|| ConnectError::NotOauth {
            provider: spec.name().to_string(),
        })
}

/// The scopes an authorization asks for: the spec's, those of the resources synced, and
/// the app's, each once, in that order.
pub fn scopes(spec: &CompiledSpec, resources: &[String], app: &App) -> Vec<String> {
    let Some(a) = spec
        .spec
        .connect
        .as_ref()
        .and_then(|c| c.authorize.as_ref())
    else {
        return Vec::new();
    };
    let mut out: Vec<String> = Vec::new();
    let by_resource = resources
        .iter()
        .filter_map(|r| a.resource_scopes.get(r))
        .flatten();
    for s in a.scopes.iter().chain(by_resource).chain(&app.scopes) {
        if !out.contains(s) {
            out.push(s.clone());
        }
    }
    out
}

/// Whether the spec sends a PKCE challenge.
pub fn uses_pkce(spec: &CompiledSpec) -> bool {
    spec.spec
        .connect
        .as_ref()
        .and_then(|c| c.authorize.as_ref())
        .is_some_and(|a| a.pkce)
}

/// An authorization begun: where to send the browser, and what the callback must be
/// checked and completed with (kept by the flow, never shown).
pub struct Begun {
    pub url: url::Url,
    /// The `state` the callback must bring back.
    pub state: String,
    /// The PKCE verifier, when the spec sends a challenge.
    pub verifier: Option<String>,
}

/// Begin an authorization: a fresh state (and PKCE pair where the spec uses one) and the
/// authorize URL carrying them.
pub fn begin(
    spec: &CompiledSpec,
    config: &Map<String, Value>,
    resources: &[String],
    app: &App,
    redirect_uri: &str,
) -> Result<Begun, ConnectError> {
    let state = pkce::Pkce::new().verifier;
    let pair = uses_pkce(spec).then(pkce::Pkce::new);
    let url = authorize_url(&AuthorizeRequest {
        spec,
        config,
        resources,
        app,
        redirect_uri,
        state: &state,
        challenge: pair.as_ref().map(|p| p.challenge.as_str()),
    })?;
    Ok(Begun {
        url,
        state,
        verifier: pair.map(|p| p.verifier),
    })
}

/// The provider's authorize URL for this request.
pub fn authorize_url(req: &AuthorizeRequest) -> Result<url::Url, ConnectError> {
    let compiled = compiled_authorize(req.spec)?;
    let written = req
        .spec
        .spec
        .connect
        .as_ref()
        .and_then(|c| c.authorize.as_ref());
    let separator = written.map_or(" ", |a| a.scope_separator.as_str());
    let ctx = minijinja::context! { config => minijinja::value::Serde(req.config) };
    let render = |id| {
        req.spec
            .templates
            .render(id, &ctx)
            .map_err(|e| ConnectError::AuthorizeUrl(e.to_string()))
    };
    let base = match req.config.get("authorize_url").and_then(Value::as_str) {
        Some(u) => u.to_string(),
        None => render(&compiled.url)?,
    };
    let mut url =
        url::Url::parse(&base).map_err(|e| ConnectError::AuthorizeUrl(format!("`{base}`: {e}")))?;
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("response_type", "code")
            .append_pair("client_id", &req.app.client_id)
            .append_pair("redirect_uri", req.redirect_uri)
            .append_pair("state", req.state);
        let scopes = scopes(req.spec, req.resources, req.app);
        if !scopes.is_empty() {
            q.append_pair("scope", &scopes.join(separator));
        }
        if let (Some(challenge), true) = (req.challenge, written.is_some_and(|a| a.pkce)) {
            q.append_pair("code_challenge", challenge)
                .append_pair("code_challenge_method", "S256");
        }
        for (k, t) in &compiled.params {
            q.append_pair(k, &render(t)?);
        }
    }
    Ok(url)
}

/// What a callback brought, to be completed into a connection.
pub struct Completion<'a> {
    pub spec: &'a Arc<CompiledSpec>,
    pub config: &'a Map<String, Value>,
    pub app: &'a App,
    pub code: &'a str,
    pub redirect_uri: &'a str,
    pub verifier: Option<&'a str>,
    /// The callback's query parameters.
    pub callback: &'a Map<String, Value>,
    /// Loopback and private addresses allowed (tests and local sandboxes only).
    pub allow_private_hosts: bool,
}

/// A connection's first credentials and its identity.
#[derive(Debug)]
pub struct Connected {
    pub credentials: Credentials,
    pub external_id: Option<String>,
    /// The session's config with the captured values added.
    pub config: Map<String, Value>,
}

/// Exchange the code, then capture the identity: everything a new connection needs.
pub async fn complete(c: &Completion<'_>) -> Result<Connected, ConnectError> {
    let compiled = compiled_authorize(c.spec)?;
    let callback = callback_values(c)?;
    let http = client(c.allow_private_hosts).map_err(ConnectError::Exchange)?;
    let mut credentials = Credentials::default();
    credentials.set("client_id", c.app.client_id.clone());
    credentials.set("client_secret", c.app.client_secret.clone());
    let config_ctx = minijinja::Value::from(minijinja::value::Serde(c.config.clone()));
    let auth = Authenticator::new(
        c.spec.clone(),
        config_ctx,
        credentials.clone(),
        Arc::new(DiscardTokens),
    );
    let token_url = |u: &str| guard::checked_url(u, &c.spec.hosts, c.allow_private_hosts);
    let token = auth
        .exchange_code(
            &http,
            &token_url,
            c.code,
            c.redirect_uri,
            c.verifier,
            &mut credentials,
        )
        .await
        .map_err(|e| ConnectError::Exchange(exchange_message(&e)))?;
    let identity = match &compiled.identity_request {
        Some(request) => {
            Some(identity_answer(c, &http, request, &token, &callback, &credentials).await?)
        }
        None => None,
    };
    let scope = json!({"token": token, "callback": callback, "identity": identity});
    let external_id = match &compiled.external_id {
        Some(e) => Some(
            text(eval(e, &scope)?)
                .ok_or_else(|| ConnectError::Identity("external_id is empty".into()))?,
        ),
        None => None,
    };
    let mut config = c.config.clone();
    for (name, e) in &compiled.config {
        let value = eval(e, &scope)?.ok_or_else(|| {
            ConnectError::Identity(format!("config.{name} is not in the answers"))
        })?;
        config.insert(name.clone(), value);
    }
    Ok(Connected {
        credentials,
        external_id,
        config,
    })
}

/// The declared `callback_params`, each required.
fn callback_values(c: &Completion<'_>) -> Result<Map<String, Value>, ConnectError> {
    let declared = c
        .spec
        .spec
        .connect
        .as_ref()
        .and_then(|x| x.authorize.as_ref())
        .map_or(&[][..], |a| a.callback_params.as_slice());
    declared
        .iter()
        .map(|name| match c.callback.get(name) {
            Some(v) => Ok((name.clone(), v.clone())),
            None => Err(ConnectError::CallbackMissing(
                name.clone(),
                c.spec.name().to_string(),
            )),
        })
        .collect()
}

fn client(allow_private: bool) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .dns_resolver(guard::resolver(allow_private))
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("tributary/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| e.to_string())
}

fn exchange_message(e: &AuthError) -> String {
    match e {
        AuthError::InvalidGrant(d) => format!("the provider refused the code ({d})"),
        other => other.to_string(),
    }
}

/// The identity request's JSON answer, sent with the new access token.
async fn identity_answer(
    c: &Completion<'_>,
    http: &reqwest::Client,
    (method, path): &(Method, crate::spec::template::TemplateId),
    token: &Value,
    callback: &Map<String, Value>,
    credentials: &Credentials,
) -> Result<Value, ConnectError> {
    let fail = |m: String| ConnectError::Identity(m);
    let ctx = minijinja::context! {
        config => minijinja::value::Serde(c.config),
        token => minijinja::value::Serde(token),
        callback => minijinja::value::Serde(callback),
    };
    let path = c
        .spec
        .templates
        .render(path, &ctx)
        .map_err(|e| fail(e.to_string()))?;
    let url = resolve(c, &path).map_err(fail)?;
    let CompiledAuth::OAuth2(o) = &c.spec.auth else {
        return Err(fail("the spec's auth is not OAuth".into()));
    };
    let access = credentials.get("access_token").unwrap_or_default();
    let req = http.request(method.to_http(), url.clone());
    let resp = req
        .header(o.header.as_str(), format!("{}{access}", o.prefix))
        .header("Accept", "application/json")
        .send()
        .await
        // The URL may carry the token: only its host is named.
        .map_err(|_| {
            fail(format!(
                "the identity request to {} failed",
                url.host_str().unwrap_or("?")
            ))
        })?;
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        return Err(fail(format!("the identity request answered {status}")));
    }
    Ok(body)
}

/// A path joined to the connection's base URL (or an absolute URL), host-checked.
fn resolve(c: &Completion<'_>, path: &str) -> Result<url::Url, String> {
    let base = match c.config.get("base_url").and_then(Value::as_str) {
        Some(b) => b.to_string(),
        None => {
            let ctx = minijinja::context! { config => minijinja::value::Serde(c.config) };
            c.spec
                .templates
                .render(&c.spec.base_url, &ctx)
                .map_err(|e| format!("base_url: {e}"))?
        }
    };
    let base = url::Url::parse(&base).map_err(|e| format!("base_url `{base}`: {e}"))?;
    let url = if path.starts_with("http://") || path.starts_with("https://") {
        url::Url::parse(path).map_err(|e| e.to_string())?
    } else {
        let joined = format!("{}{}", base.as_str().trim_end_matches('/'), path);
        url::Url::parse(&joined).map_err(|e| e.to_string())?
    };
    guard::check_url(&url, &c.spec.hosts, c.allow_private_hosts).map_err(|e| e.to_string())?;
    Ok(url)
}

fn eval(e: &Jsonata, scope: &Value) -> Result<Option<Value>, ConnectError> {
    e.eval_json(scope)
        .map(|v| v.filter(|v| !v.is_null()))
        .map_err(|err| ConnectError::Identity(err.to_string()))
}

fn text(v: Option<Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.is_empty() => Some(s),
        Value::String(_) => None,
        other => Some(other.to_string()),
    }
}

/// Why typed-in credentials are not kept.
#[derive(Debug)]
pub enum CheckError {
    /// The provider answered that they are wrong.
    Refused,
    /// The provider could not be asked; the detail is for the log.
    Unreachable(String),
}

/// Read the first page of `resource` with these credentials, as the first sync would, so
/// that only credentials the provider accepts are stored. Nothing is kept: tokens a
/// scheme fetches on the way are discarded.
pub async fn check_credentials(
    spec: &Arc<CompiledSpec>,
    resource: &str,
    config: &Map<String, Value>,
    credentials: &Credentials,
    mut options: crate::engine::RunOptions,
) -> Result<(), CheckError> {
    use crate::budget::{Budget, BudgetOwner};
    use crate::engine::{ignore_events, Connection, ConnectionRuntime, ResourceRun};
    use futures::StreamExt;
    let connection = Connection {
        config: config.clone(),
        credentials: credentials.clone(),
    };
    options.max_pages = Some(1);
    let owner = BudgetOwner {
        provider: spec.name().to_string(),
        connection: "credential check".into(),
        app: None,
    };
    let budget = Budget::local(&spec.spec.rate_limit, &owner);
    let runtime =
        ConnectionRuntime::new(spec, &connection, &options, Arc::new(DiscardTokens), budget)
            .map_err(CheckError::Unreachable)?;
    let run = ResourceRun::new(
        spec.clone(),
        resource,
        &connection,
        &runtime,
        options,
        ignore_events(),
    )
    .map_err(|e| CheckError::Unreachable(e.to_string()))?;
    let mut pages = std::pin::pin!(run.pages());
    match pages.next().await {
        Some(Err(e)) if e.kind.needs_reauth() => Err(CheckError::Refused),
        Some(Err(e)) => Err(CheckError::Unreachable(e.to_string())),
        _ => Ok(()),
    }
}
