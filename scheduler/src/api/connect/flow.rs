//! The connect flow's steps after the page: the Connect button
//! (`GET /connect/{token}/start`, to the provider's consent screen), the provider's
//! callback (`GET /v1/connect/callback`, the code exchanged, the identity captured) and
//! the credential form (`POST /connect/{token}/credentials`). The connection is written
//! only once everything succeeded; a failure records its reason on the session and
//! sends the user back with `status=error&reason=...`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Form, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};
use tributary::bus::envelope::StatusKind;
use tributary::bus::StatusEvent;
use tributary::connect::{self, pkce::Pkce, App, Completion};
use tributary::domain::ConnectionState;
use tributary::secrets::Credentials;
use tributary::spec::CompiledSpec;
use tributary::store::{ConnectSession, NewConnection, SessionState};

use super::super::connections::provider_spec;
use super::super::ApiState;
use super::page::{closed, error_page, unavailable, unknown_link};

/// A 303 to the session's return URL with these parameters.
fn back_to(return_url: &str, params: &[(&str, &str)]) -> Response {
    let mut url = match url::Url::parse(return_url) {
        Ok(u) => u,
        Err(_) => return unavailable("a stored return_url does not parse"),
    };
    {
        let mut q = url.query_pairs_mut();
        for (k, v) in params {
            q.append_pair(k, v);
        }
    }
    (StatusCode::SEE_OTHER, [("location", url.to_string())]).into_response()
}

/// What a failure's reason means, for the user the host product shows it to.
fn explain(reason: &str) -> &'static str {
    match reason {
        "access_denied" => "Access was not granted at the provider, so nothing was connected.",
        "expired" => "The connect link expired before the sign-in finished. Start again.",
        "authorization_failed" => "The provider could not complete the sign-in. Start again.",
        "missing_code" | "callback_incomplete" => {
            "The provider's answer was incomplete. Start again."
        }
        "code_exchange_failed" => {
            "The provider did not accept the sign-in (it may have been used already). Start again."
        }
        "identity_capture_failed" => {
            "The provider did not say which account was connected. Start again, or contact support."
        }
        _ => "The account could not be connected. Try again in a minute.",
    }
}

/// Record the failure on the session and send the user back with it: `reason` for the
/// host product's code, `message` for its user.
async fn fail(state: &ApiState, session: &ConnectSession, reason: &str, detail: &str) -> Response {
    tracing::info!(session = %session.id, tenant = %session.tenant, %reason, %detail, "connect session failed");
    if let Err(e) = state
        .store
        .finish_connect_session(&session.id, Err(reason))
        .await
    {
        return unavailable(&e.to_string());
    }
    back_to(
        &session.return_url,
        &[
            ("status", "error"),
            ("reason", reason),
            ("message", explain(reason)),
            ("session_id", &session.id),
        ],
    )
}

/// The session a link's token opens, if it may still be used; otherwise the page to show.
async fn open_session(state: &ApiState, token: &str) -> Result<ConnectSession, Box<Response>> {
    match state.store.connect_session_by_token(token).await {
        Ok(Some(s)) => match closed(&s) {
            Some(page) => Err(Box::new(page)),
            None => Ok(s),
        },
        Ok(None) => Err(Box::new(unknown_link())),
        Err(e) => Err(Box::new(unavailable(&e.to_string()))),
    }
}

/// The provider a form chose, if the session offers it.
fn offered(session: &ConnectSession, chosen: Option<&String>) -> Result<String, Box<Response>> {
    match chosen {
        Some(p) if session.providers.contains(p) => Ok(p.clone()),
        _ => Err(Box::new(error_page(
            StatusCode::BAD_REQUEST,
            "Choose a provider",
            "This link does not offer that provider. Go back and choose one of those shown.",
            None,
        ))),
    }
}

/// The session a link opens, the provider its form chose and that provider's spec; or
/// the page to show instead.
async fn chosen(
    state: &ApiState,
    token: &str,
    provider: Option<&String>,
) -> Result<(ConnectSession, String, Arc<CompiledSpec>), Box<Response>> {
    let session = open_session(state, token).await?;
    let provider = offered(&session, provider)?;
    let spec = provider_spec(state, &provider)
        .map_err(|_| Box::new(unavailable("the provider's spec is missing")))?;
    Ok((session, provider, spec))
}

fn resources(session: &ConnectSession, spec: &CompiledSpec) -> Vec<String> {
    session
        .resources
        .clone()
        .unwrap_or_else(|| spec.resources.keys().cloned().collect())
}

/// `GET /connect/{token}/start?provider=...`: to the provider's consent screen.
pub async fn start(
    State(state): State<Arc<ApiState>>,
    Path(token): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let (session, provider, spec) = match chosen(&state, &token, q.get("provider")).await {
        Ok(c) => c,
        Err(page) => return *page,
    };
    let (Some(app), Some(callback)) = (
        state.connect.apps.for_tenant(&session.tenant, &provider),
        state.connect.callback_url(),
    ) else {
        return unavailable("the provider's OAuth app or TRIBUTARY_PUBLIC_URL is missing");
    };
    let begun = match connect::begin(
        &spec,
        &session.config,
        &resources(&session, &spec),
        app,
        &callback,
    ) {
        Ok(b) => b,
        Err(e) => return unavailable(&e.to_string()),
    };
    match state
        .store
        .start_authorization(
            &session.id,
            &provider,
            &begun.state,
            begun.verifier.as_deref(),
        )
        .await
    {
        Ok(true) => (StatusCode::SEE_OTHER, [("location", begun.url.to_string())]).into_response(),
        Ok(false) => unknown_link(),
        Err(e) => unavailable(&e.to_string()),
    }
}

/// `GET /v1/connect/callback`: where the provider sends the user back.
pub async fn callback(
    State(state): State<Arc<ApiState>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(oauth_state) = q.get("state") else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "This sign-in is incomplete",
            "The provider sent no state back. Go back to the application and start again.",
            None,
        );
    };
    let (session, verifier) = match state.store.take_authorization(oauth_state).await {
        Ok(Some(taken)) => taken,
        Ok(None) => {
            return error_page(
                StatusCode::BAD_REQUEST,
                "This sign-in cannot be used",
                "It was already completed, or it did not start here. Go back to the application and start again.",
                None,
            )
        }
        Err(e) => return unavailable(&e.to_string()),
    };
    if session.state == SessionState::Expired {
        return fail(
            &state,
            &session,
            "expired",
            "the session expired before the callback",
        )
        .await;
    }
    if let Some(error) = q.get("error") {
        let reason = match error.as_str() {
            "access_denied" | "access-denied" => "access_denied",
            _ => "authorization_failed",
        };
        let detail = q
            .get("error_description")
            .map_or(error.as_str(), String::as_str);
        return fail(&state, &session, reason, detail).await;
    }
    let Some(code) = q.get("code") else {
        return fail(
            &state,
            &session,
            "missing_code",
            "the callback carried no code",
        )
        .await;
    };
    match complete(&state, &session, code, verifier.as_deref(), &q).await {
        Ok(connection) => back_to(
            &session.return_url,
            &[
                ("status", "connected"),
                ("connection_id", &connection),
                ("session_id", &session.id),
            ],
        ),
        Err((reason, detail)) => fail(&state, &session, reason, &detail).await,
    }
}

/// Exchange the code and capture the identity, then write the connection: the new
/// connection's id, or the failure's reason and detail (nothing written).
async fn complete(
    state: &ApiState,
    session: &ConnectSession,
    code: &str,
    verifier: Option<&str>,
    query: &HashMap<String, String>,
) -> Result<String, (&'static str, String)> {
    let internal = |e: String| ("internal", e);
    let provider = session
        .provider
        .clone()
        .ok_or_else(|| internal("no provider chosen".into()))?;
    let spec = provider_spec(state, &provider).map_err(|e| internal(format!("{e:?}")))?;
    let app: &App = state
        .connect
        .apps
        .for_tenant(&session.tenant, &provider)
        .ok_or_else(|| internal("the OAuth app is gone".into()))?;
    let callback: Map<String, Value> = query
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    let redirect_uri = state.connect.callback_url().unwrap_or_default();
    let connected = connect::complete(&Completion {
        spec: &spec,
        config: &session.config,
        app,
        code,
        redirect_uri: &redirect_uri,
        verifier,
        callback: &callback,
        allow_private_hosts: state.syncer.settings().engine.allow_private_hosts,
    })
    .await
    .map_err(|e| (e.reason(), e.to_string()))?;
    save(
        state,
        session,
        &provider,
        &spec,
        connected.credentials,
        connected.config,
        connected.external_id,
    )
    .await
}

/// Write the connection (or the re-authorized one's credentials), finish the session and
/// publish the news.
async fn save(
    state: &ApiState,
    session: &ConnectSession,
    provider: &str,
    spec: &CompiledSpec,
    credentials: Credentials,
    config: Map<String, Value>,
    external_id: Option<String>,
) -> Result<String, (&'static str, String)> {
    let internal = |e: String| ("internal", e);
    let (id, kind): (String, StatusKind) = match &session.reauthorize {
        Some(id) => {
            let conn = state
                .store
                .connection(id)
                .await
                .map_err(|e| internal(e.to_string()))?;
            if conn.tenant != session.tenant {
                return Err((
                    "wrong_tenant",
                    "the connection belongs to another tenant".into(),
                ));
            }
            state
                .store
                .store_credentials(id, &credentials)
                .await
                .map_err(|e| internal(e.to_string()))?;
            state
                .store
                .set_connection_state(id, ConnectionState::Healthy, None)
                .await
                .map_err(|e| internal(e.to_string()))?;
            (id.to_string(), StatusKind::ConnectionReauthorized)
        }
        None => {
            let id = state
                .store
                .create_connection(&NewConnection {
                    id: None,
                    tenant: session.tenant.clone(),
                    provider: provider.to_string(),
                    config,
                    credentials,
                    resources: resources(session, spec),
                    schedule: None,
                    full_schedule: None,
                    timezone: "UTC".into(),
                    external_id,
                })
                .await
                .map_err(|e| internal(e.to_string()))?;
            super::super::webhooks::open_channel(state, &id).await;
            (id, StatusKind::ConnectionCreated)
        }
    };
    state
        .store
        .finish_connect_session(&session.id, Ok(&id))
        .await
        .map_err(|e| internal(e.to_string()))?;
    let news = StatusEvent::connection_news(
        kind,
        &session.tenant,
        &id,
        provider,
        format!("connect session {}", session.id),
        chrono::Utc::now(),
    );
    if let Err(e) = state
        .publisher
        .publish_all(&[news.to_message(&state.topics)])
        .await
    {
        // The connection exists and syncs; only the news is late.
        tracing::warn!(connection = %id, error = %e, "connection news not published");
    }
    tracing::info!(tenant = %session.tenant, connection = %id, %provider, event = kind.as_str(), "connected through a connect session");
    Ok(id)
}

/// `POST /connect/{token}/credentials`: a credential provider's form.
pub async fn credentials_form(
    State(state): State<Arc<ApiState>>,
    Path(token): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let (session, provider, spec) = match chosen(&state, &token, form.get("provider")).await {
        Ok(c) => c,
        Err(page) => return *page,
    };
    let fields = spec.spec.connect.as_ref().map(|c| &c.fields);
    let Some(fields) = fields.filter(|f| !f.is_empty() && spec.authorize.is_none()) else {
        return *offered(&session, None).unwrap_err();
    };
    let mut credentials = Credentials::default();
    for (name, field) in fields {
        match form.get(name).map(|v| v.trim()).filter(|v| !v.is_empty()) {
            Some(v) => credentials.set(name, v.to_string()),
            None => {
                let again = format!("/connect/{token}");
                return error_page(
                    StatusCode::BAD_REQUEST,
                    "Some information is missing",
                    &format!("Fill in “{}”, then connect again.", field.label),
                    Some(&again),
                );
            }
        }
    }
    let config = session.config.clone();
    let resource = resources(&session, &spec)
        .into_iter()
        .next()
        .unwrap_or_default();
    let options = state.syncer.settings().engine.clone();
    match connect::check_credentials(&spec, &resource, &config, &credentials, options).await {
        Ok(()) => {}
        Err(connect::CheckError::Refused) => {
            let again = format!("/connect/{token}");
            return error_page(
                StatusCode::BAD_REQUEST,
                "These credentials were refused",
                "The provider did not accept them. Check them and connect again.",
                Some(&again),
            );
        }
        Err(connect::CheckError::Unreachable(detail)) => return unavailable(&detail),
    }
    // Taken like an OAuth state, so that two submissions cannot both connect.
    let claim = Pkce::new().verifier;
    match state
        .store
        .start_authorization(&session.id, &provider, &claim, None)
        .await
    {
        Ok(true) => {}
        Ok(false) => return unknown_link(),
        Err(e) => return unavailable(&e.to_string()),
    }
    let session = match state.store.take_authorization(&claim).await {
        Ok(Some((s, _))) => s,
        Ok(None) => return unknown_link(),
        Err(e) => return unavailable(&e.to_string()),
    };
    match save(
        &state,
        &session,
        &provider,
        &spec,
        credentials,
        session.config.clone(),
        None,
    )
    .await
    {
        Ok(id) => back_to(
            &session.return_url,
            &[
                ("status", "connected"),
                ("connection_id", &id),
                ("session_id", &session.id),
            ],
        ),
        Err((reason, detail)) => fail(&state, &session, reason, &detail).await,
    }
}
