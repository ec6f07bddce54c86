//! Putting credentials on requests, and keeping OAuth2 access tokens fresh.

use std::sync::Arc;

use chrono::{Duration as ChronoDuration, Utc};
use futures::future::BoxFuture;
use minijinja::Value as Ctx;
use reqwest::header::{HeaderName, HeaderValue};
use serde_json::Value;
use tracing::Instrument;

use super::oauth1::{self, Freshness, Oauth1Keys};
use crate::secrets::Credentials;
use crate::spec::compile::{CompiledAuth, CompiledOAuth2, CompiledSpec, Grant};
use crate::spec::model::{ClientAuth, KeyLocation};
use crate::telemetry::{metrics, OwnedLabels};

/// What a request signature covers: the method and the full URL (query included).
#[derive(Clone, Copy)]
pub struct SignTarget<'a> {
    pub method: &'a str,
    pub url: &'a url::Url,
}

/// What authentication adds to one request. Header values are marked sensitive.
#[derive(Default)]
pub struct AuthParts {
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub query: Vec<(String, String)>,
    /// The OAuth access token sent, to name it as stale if the provider refuses it.
    pub oauth_token: Option<String>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    #[error("the credentials lack `{0}`, which this spec's auth needs")]
    Missing(&'static str),
    #[error("cannot build the credential: {0}")]
    Template(String),
    #[error("the token endpoint refused the grant (re-authorization needed): {0}")]
    InvalidGrant(String),
    #[error("the token endpoint failed: {0}")]
    TokenEndpoint(String),
}

/// Where renewed credentials go (the state store in a worker; a file or nowhere in `spec run`).
/// `store` is called before the new access token is used, so a crash never loses a rotated
/// refresh token. A fleet-wide sink also serializes refreshes: `lock` waits until this process
/// may refresh, `reload` reads what another process may have stored meanwhile.
pub trait TokenSink: Send + Sync {
    fn store(&self, credentials: &Credentials) -> BoxFuture<'_, Result<(), String>>;

    fn lock(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }

    fn unlock(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }

    /// The latest stored credentials, when this sink stores them somewhere shared.
    fn reload(&self) -> BoxFuture<'_, Result<Option<Credentials>, String>> {
        Box::pin(async { Ok(None) })
    }
}

/// A sink that keeps nothing.
pub struct DiscardTokens;

impl TokenSink for DiscardTokens {
    fn store(&self, _: &Credentials) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
}

/// What happened at the token endpoint (for progress output).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refreshed {
    pub rotated_refresh_token: bool,
    pub expires_in_seconds: i64,
}

/// Credentials of one connection, shared by all its requests.
pub struct Authenticator {
    spec: Arc<CompiledSpec>,
    config: Ctx,
    state: tokio::sync::Mutex<Credentials>,
    sink: Arc<dyn TokenSink>,
    labels: OwnedLabels,
}

impl Authenticator {
    pub fn new(
        spec: Arc<CompiledSpec>,
        config: Ctx,
        credentials: Credentials,
        sink: Arc<dyn TokenSink>,
    ) -> Self {
        Authenticator {
            spec,
            config,
            state: tokio::sync::Mutex::new(credentials),
            sink,
            labels: OwnedLabels::default(),
        }
    }

    /// Who refreshes, for the `token.refresh` span and the token refresh metric.
    pub fn with_labels(mut self, labels: OwnedLabels) -> Self {
        self.labels = labels;
        self
    }

    /// Whether a refused token can be replaced by asking the token endpoint.
    pub async fn can_refresh(&self) -> bool {
        match &self.spec.auth {
            CompiledAuth::OAuth2(o) => match o.grant {
                Grant::RefreshToken => self.state.lock().await.get("refresh_token").is_some(),
                Grant::ClientCredentials => true,
            },
            _ => false,
        }
    }

    /// Parts for the next attempt at `target` (what a signature covers). With `stale`
    /// (the token a 401 answered), an OAuth token is refreshed unless another request
    /// already replaced it.
    pub async fn parts(
        &self,
        http: &reqwest::Client,
        token_url: &(dyn Fn(&str) -> Result<url::Url, String> + Sync),
        stale: Option<&str>,
        target: SignTarget<'_>,
    ) -> Result<(AuthParts, Option<Refreshed>), AuthError> {
        let templates = &self.spec.templates;
        let render = |id, creds: &Credentials| {
            let ctx = minijinja::context! { config => self.config.clone(), credentials => Ctx::from(minijinja::value::Serde(creds.expose_for_templates())) };
            templates.render(id, &ctx).map_err(AuthError::Template)
        };
        let mut parts = AuthParts::default();
        match &self.spec.auth {
            CompiledAuth::None => Ok((parts, None)),
            CompiledAuth::ApiKey {
                location,
                name,
                value,
            } => {
                let creds = self.state.lock().await;
                let v = render(value, &creds)?;
                match location {
                    KeyLocation::Header => parts.headers.push(header(name, &v)?),
                    KeyLocation::Query => parts.query.push((name.clone(), v)),
                }
                Ok((parts, None))
            }
            CompiledAuth::Basic { username, password } => {
                use base64::Engine;
                let creds = self.state.lock().await;
                let pair = format!(
                    "{}:{}",
                    render(username, &creds)?,
                    render(password, &creds)?
                );
                let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
                parts
                    .headers
                    .push(header("Authorization", &format!("Basic {encoded}"))?);
                Ok((parts, None))
            }
            CompiledAuth::Bearer {
                header: name,
                prefix,
                value,
            } => {
                let creds = self.state.lock().await;
                let v = render(value, &creds)?;
                parts.headers.push(header(name, &format!("{prefix}{v}"))?);
                Ok((parts, None))
            }
            CompiledAuth::OAuth2(o) => {
                let mut creds = self.state.lock().await;
                let mut refreshed = None;
                let current = creds.get("access_token").map(str::to_string);
                let must_refresh = match (&current, stale) {
                    (None, _) => true,
                    (Some(cur), Some(stale)) => cur == stale,
                    (Some(_), None) => expires_soon(&creds, o.refresh_margin_seconds),
                };
                if must_refresh {
                    self.sink.lock().await.map_err(AuthError::TokenEndpoint)?;
                    let refresh =
                        self.refresh_once(http, o, token_url, &mut creds, current.as_deref());
                    // A refresh that panics gives the fleet's lock back before unwinding
                    // (else every retry of the job waits for the lock to expire).
                    let outcome =
                        futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(refresh))
                            .await;
                    self.sink.unlock().await;
                    refreshed = match outcome {
                        Ok(outcome) => outcome?,
                        Err(panic) => std::panic::resume_unwind(panic),
                    };
                }
                let token = creds
                    .get("access_token")
                    .ok_or(AuthError::Missing("access_token"))?;
                parts
                    .headers
                    .push(header(&o.header, &format!("{}{}", o.prefix, token))?);
                parts.oauth_token = Some(token.to_string());
                Ok((parts, refreshed))
            }
            CompiledAuth::OAuth1 {
                signature_method,
                realm,
            } => {
                let creds = self.state.lock().await;
                let realm = match realm {
                    Some(r) => Some(render(r, &creds)?),
                    None => None,
                };
                let field = |name: &'static str| creds.get(name).ok_or(AuthError::Missing(name));
                let keys = Oauth1Keys {
                    consumer_key: field("consumer_key")?,
                    consumer_secret: field("consumer_secret")?,
                    token: field("token_id")?,
                    token_secret: field("token_secret")?,
                };
                let value = oauth1::authorization(
                    target.method,
                    target.url,
                    &keys,
                    *signature_method,
                    realm.as_deref(),
                    &Freshness::now(),
                );
                parts.headers.push(header("Authorization", &value)?);
                Ok((parts, None))
            }
        }
    }

    /// Refresh now (an idle connection kept alive), under the fleet-wide lock.
    pub async fn refresh_now(
        &self,
        http: &reqwest::Client,
        token_url: &(dyn Fn(&str) -> Result<url::Url, String> + Sync),
    ) -> Result<Option<Refreshed>, AuthError> {
        let CompiledAuth::OAuth2(o) = &self.spec.auth else {
            return Ok(None);
        };
        let mut creds = self.state.lock().await;
        self.sink.lock().await.map_err(AuthError::TokenEndpoint)?;
        let latest = self.sink.reload().await.map_err(AuthError::TokenEndpoint)?;
        if let Some(latest) = latest {
            *creds = latest;
        }
        let outcome = async {
            let url = token_url(&self.render_token_url(o)?).map_err(AuthError::TokenEndpoint)?;
            let r = self.refresh(http, o, url, &mut creds).await?;
            self.sink
                .store(&creds)
                .await
                .map_err(AuthError::TokenEndpoint)?;
            Ok(Some(r))
        }
        .await;
        self.sink.unlock().await;
        outcome
    }

    /// Under the refresh lock: adopt a token another process stored meanwhile, or refresh
    /// and store the result before it is used.
    async fn refresh_once(
        &self,
        http: &reqwest::Client,
        o: &CompiledOAuth2,
        token_url: &(dyn Fn(&str) -> Result<url::Url, String> + Sync),
        creds: &mut Credentials,
        had: Option<&str>,
    ) -> Result<Option<Refreshed>, AuthError> {
        if let Some(latest) = self.sink.reload().await.map_err(AuthError::TokenEndpoint)? {
            let newer = latest.get("access_token").is_some_and(|t| Some(t) != had);
            if newer && !expires_soon(&latest, o.refresh_margin_seconds) {
                *creds = latest;
                return Ok(None);
            }
            // Keep the latest refresh token: another process may have rotated it.
            *creds = latest;
        }
        let url = token_url(&self.render_token_url(o)?).map_err(AuthError::TokenEndpoint)?;
        let r = self.refresh(http, o, url, creds).await?;
        self.sink
            .store(creds)
            .await
            .map_err(AuthError::TokenEndpoint)?;
        Ok(Some(r))
    }

    fn render_token_url(&self, o: &CompiledOAuth2) -> Result<String, AuthError> {
        if let Some(url) = self
            .config
            .get_attr("token_url")
            .ok()
            .filter(|v| !v.is_undefined() && !v.is_none())
        {
            return Ok(url.to_string());
        }
        let ctx = minijinja::context! { config => self.config.clone() };
        self.spec
            .templates
            .render(&o.token_url, &ctx)
            .map_err(AuthError::Template)
    }

    /// One call to the token endpoint, in a `token.refresh` span, counted by outcome.
    async fn refresh(
        &self,
        http: &reqwest::Client,
        o: &CompiledOAuth2,
        url: url::Url,
        creds: &mut Credentials,
    ) -> Result<Refreshed, AuthError> {
        let span = tracing::info_span!(
            "token.refresh",
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            http.request.method = "POST",
            url.path = url.path(),
            tributary.provider = %self.labels.provider,
            tributary.tenant = %self.labels.tenant,
            rotated_refresh_token = tracing::field::Empty,
            error.type = tracing::field::Empty,
        );
        let outcome = self
            .call_token_endpoint(http, o, url, creds)
            .instrument(span.clone())
            .await;
        match &outcome {
            Ok(r) => {
                span.record("rotated_refresh_token", r.rotated_refresh_token);
            }
            Err(e) => {
                let kind = match e {
                    AuthError::InvalidGrant(_) => "invalid_grant",
                    AuthError::Missing(_) | AuthError::Template(_) => "credentials",
                    AuthError::TokenEndpoint(_) => "token_endpoint",
                };
                span.record("error.type", kind);
                span.record("otel.status_code", "ERROR");
            }
        }
        metrics().token_refresh(&self.labels.labels(), outcome.is_ok());
        outcome
    }

    async fn call_token_endpoint(
        &self,
        http: &reqwest::Client,
        o: &CompiledOAuth2,
        url: url::Url,
        creds: &mut Credentials,
    ) -> Result<Refreshed, AuthError> {
        let mut form: Vec<(String, String)> = Vec::new();
        match o.grant {
            Grant::RefreshToken => {
                let rt = creds
                    .get("refresh_token")
                    .ok_or(AuthError::Missing("refresh_token"))?;
                form.push(("grant_type".into(), "refresh_token".into()));
                form.push(("refresh_token".into(), rt.to_string()));
            }
            Grant::ClientCredentials => {
                form.push(("grant_type".into(), "client_credentials".into()));
                if !o.scopes.is_empty() {
                    form.push(("scope".into(), o.scopes.join(" ")));
                }
            }
        }
        let body = self.post_token_form(http, o, url, form, creds).await?;
        adopt_token_answer(o, &body, creds)
    }

    /// Exchange an authorization code (RFC 6749 section 4.1.3, with the PKCE verifier when
    /// one was sent) for the connection's first tokens: `creds` (holding the app's
    /// `client_id` and `client_secret`) gains them; the answer is returned whole for the
    /// identity capture.
    pub async fn exchange_code(
        &self,
        http: &reqwest::Client,
        token_url: &(dyn Fn(&str) -> Result<url::Url, String> + Sync),
        code: &str,
        redirect_uri: &str,
        verifier: Option<&str>,
        creds: &mut Credentials,
    ) -> Result<Value, AuthError> {
        let CompiledAuth::OAuth2(o) = &self.spec.auth else {
            return Err(AuthError::TokenEndpoint(
                "this spec's auth has no token endpoint".into(),
            ));
        };
        let url = token_url(&self.render_token_url(o)?).map_err(AuthError::TokenEndpoint)?;
        let mut form = vec![
            ("grant_type".to_string(), "authorization_code".to_string()),
            ("code".into(), code.to_string()),
            ("redirect_uri".into(), redirect_uri.to_string()),
        ];
        if let Some(v) = verifier {
            form.push(("code_verifier".into(), v.to_string()));
        }
        let body = self.post_token_form(http, o, url, form, creds).await?;
        adopt_token_answer(o, &body, creds)?;
        Ok(body)
    }

    /// POST a grant's form (with the spec's `token_params` and the client's
    /// authentication) to the token endpoint: its JSON answer, or why there is none.
    async fn post_token_form(
        &self,
        http: &reqwest::Client,
        o: &CompiledOAuth2,
        url: url::Url,
        mut form: Vec<(String, String)>,
        creds: &Credentials,
    ) -> Result<Value, AuthError> {
        let client_id = creds.get("client_id").map(str::to_string);
        let client_secret = creds.get("client_secret").map(str::to_string);
        let ctx = minijinja::context! { config => self.config.clone(), credentials => Ctx::from(minijinja::value::Serde(creds.expose_for_templates())) };
        for (k, t) in &o.token_params {
            form.push((
                k.clone(),
                self.spec
                    .templates
                    .render(t, &ctx)
                    .map_err(AuthError::Template)?,
            ));
        }
        let mut req = http.post(url.clone());
        match o.client_auth {
            ClientAuth::Body => {
                let id = client_id.ok_or(AuthError::Missing("client_id"))?;
                form.push(("client_id".into(), id));
                if let Some(secret) = client_secret {
                    form.push(("client_secret".into(), secret));
                }
            }
            ClientAuth::Basic => {
                let id = client_id.ok_or(AuthError::Missing("client_id"))?;
                req = req.basic_auth(id, client_secret);
            }
        }
        let resp = req
            .header("Accept", "application/json")
            .form(&form)
            .send()
            .await
            .map_err(|e| {
                AuthError::TokenEndpoint(format!("{} {}: {}", "POST", url.path(), without_url(&e)))
            })?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| AuthError::TokenEndpoint(without_url(&e)))?;
        let body: Option<Value> = serde_json::from_str(&text).ok();
        if !status.is_success() {
            let body = body.unwrap_or(Value::Null);
            let description = token_error_description(&body, status);
            if crate::mapping::jsonata::truthy(&o.invalid_grant.eval_json(&body).unwrap_or(None)) {
                return Err(AuthError::InvalidGrant(description));
            }
            return Err(AuthError::TokenEndpoint(description));
        }
        body.ok_or_else(|| {
            AuthError::TokenEndpoint(format!("status {status} with a body that is not JSON"))
        })
    }
}

/// Take a token answer's access token, lifetime and (rotated) refresh token into `creds`.
fn adopt_token_answer(
    o: &CompiledOAuth2,
    body: &Value,
    creds: &mut Credentials,
) -> Result<Refreshed, AuthError> {
    let access = as_text(o.access_token.eval_json(body).ok().flatten())
        .ok_or_else(|| AuthError::TokenEndpoint("the answer has no access token".into()))?;
    let expires_in = o
        .expires_in
        .eval_json(body)
        .ok()
        .flatten()
        .and_then(|v| {
            v.as_f64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        })
        .map(|f| f as i64)
        .unwrap_or(o.default_expires_in_seconds as i64);
    let rotated = as_text(o.refresh_token.eval_json(body).ok().flatten());
    let rotated_refresh_token = rotated
        .as_deref()
        .is_some_and(|r| Some(r) != creds.get("refresh_token"));
    creds.set("access_token", access);
    creds.set(
        "expires_at",
        crate::domain::time::human(Utc::now() + ChronoDuration::seconds(expires_in)),
    );
    if let Some(rt) = rotated {
        creds.set("refresh_token", rt);
    }
    Ok(Refreshed {
        rotated_refresh_token,
        expires_in_seconds: expires_in,
    })
}

fn expires_soon(creds: &Credentials, margin_seconds: u64) -> bool {
    match creds
        .get("expires_at")
        .and_then(crate::domain::time::parse_stamp)
    {
        Some(at) => at - ChronoDuration::seconds(margin_seconds as i64) <= Utc::now(),
        // Without an expiry we trust the token until the provider answers 401.
        None => false,
    }
}

fn as_text(v: Option<Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.is_empty() => Some(s),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The provider's own words about a token error, never echoing tokens back.
fn token_error_description(body: &Value, status: reqwest::StatusCode) -> String {
    let field = |k: &str| body.get(k).and_then(|v| v.as_str()).map(str::to_string);
    let parts: Vec<String> = ["error", "error_description", "status", "message"]
        .iter()
        .filter_map(|k| field(k).map(|v| format!("{k}: {v}")))
        .collect();
    if parts.is_empty() {
        format!("status {status}")
    } else {
        format!("status {status}, {}", parts.join(", "))
    }
}

fn header(name: &str, value: &str) -> Result<(HeaderName, HeaderValue), AuthError> {
    let name = HeaderName::from_bytes(name.as_bytes())
        .map_err(|e| AuthError::Template(format!("header name `{name}`: {e}")))?;
    let mut value = HeaderValue::from_str(value).map_err(|_| {
        AuthError::Template(format!(
            "the value for header `{name}` is not a valid header value"
        ))
    })?;
    value.set_sensitive(true);
    Ok((name, value))
}

/// reqwest errors print the URL, which may carry an API key in its query.
pub fn without_url(err: &reqwest::Error) -> String {
    let mut shown = err.to_string();
    if let Some(url) = err.url() {
        shown = shown.replace(url.as_str(), url.path());
    }
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        shown.push_str(": ");
        shown.push_str(&s.to_string());
        source = s.source();
    }
    shown
}
