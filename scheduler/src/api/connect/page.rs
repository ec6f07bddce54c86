//! The connect page at a session's URL, and the flow's error pages: plain, accessible
//! HTML (labels, headings, one action per form) that works without JavaScript.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use tributary::store::{ConnectSession, SessionState};

use super::super::connections::provider_spec;
use super::super::ApiState;

/// Text put into HTML, escaped.
pub(super) fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn document(title: &str, body: &str) -> String {
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:36rem;margin:3rem auto;padding:0 1rem;line-height:1.5;color:#1b1b1b}}
button{{font-size:1rem;padding:.6rem 1.2rem;border-radius:.4rem;border:1px solid #1b1b1b;background:#1b1b1b;color:#fff;cursor:pointer}}
label{{display:block;margin-top:1rem;font-weight:600}} input{{font-size:1rem;padding:.4rem;width:100%;box-sizing:border-box}}
.help{{font-size:.9rem;color:#444}} section{{border-top:1px solid #ddd;margin-top:1.5rem;padding-top:1rem}}</style>
</head><body><main>{body}</main></body></html>"#,
        title = escape(title),
    )
}

/// An error page: what happened and what to do, with a way back when there is one.
pub(super) fn error_page(
    status: StatusCode,
    title: &str,
    message: &str,
    back: Option<&str>,
) -> Response {
    let back = back
        .map(|u| {
            format!(
                r#"<p><a href="{}" id="back">Return to the application</a></p>"#,
                escape(u)
            )
        })
        .unwrap_or_default();
    let body = format!(
        r#"<h1>{}</h1><p id="message" role="alert">{}</p>{back}"#,
        escape(title),
        escape(message)
    );
    (status, Html(document(title, &body))).into_response()
}

/// `GET /connect/{token}`.
pub async fn show(State(state): State<Arc<ApiState>>, Path(token): Path<String>) -> Response {
    let session = match state.store.connect_session_by_token(&token).await {
        Ok(Some(s)) => s,
        Ok(None) => return unknown_link(),
        Err(e) => return unavailable(&e.to_string()),
    };
    if let Some(closed) = closed(&session) {
        return closed;
    }
    let mut sections = String::new();
    for provider in &session.providers {
        match provider_section(&state, &token, &session, provider) {
            Ok(html) => sections.push_str(&html),
            Err(message) => return unavailable(&message),
        }
    }
    let title = match session.providers.as_slice() {
        [one] => format!("Connect {}", display_name(&state, one)),
        _ => "Connect an account".to_string(),
    };
    let intro = if session.reauthorize.is_some() {
        "Sign in again so the connection can go on syncing."
    } else {
        "Connect your account so its data can be synced."
    };
    let body = format!("<h1>{}</h1><p>{intro}</p>{sections}", escape(&title));
    Html(document(&title, &body)).into_response()
}

/// The page a session that is no longer pending gets instead of the connect page.
pub(super) fn closed(session: &ConnectSession) -> Option<Response> {
    let back = Some(session.return_url.as_str());
    match session.state {
        SessionState::Pending => None,
        SessionState::Expired => Some(error_page(
            StatusCode::GONE,
            "This link has expired",
            "Connect links are valid for a limited time. Go back to the application and start again.",
            back,
        )),
        SessionState::Connected | SessionState::Failed => Some(error_page(
            StatusCode::GONE,
            "This link was already used",
            "Each connect link works once. Go back to the application and start again.",
            back,
        )),
    }
}

pub(super) fn unknown_link() -> Response {
    error_page(
        StatusCode::NOT_FOUND,
        "This link is not valid",
        "Check that the link was copied whole, or go back to the application and start again.",
        None,
    )
}

pub(super) fn unavailable(detail: &str) -> Response {
    tracing::warn!(%detail, "connect page unavailable");
    error_page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Something went wrong",
        "The connection could not be prepared. Try again in a minute.",
        None,
    )
}

pub(super) fn display_name(state: &ApiState, provider: &str) -> String {
    provider_spec(state, provider)
        .ok()
        .and_then(|s| s.spec.display_name.clone())
        .unwrap_or_else(|| provider.to_string())
}

/// One provider's part of the page: what will be synced, then a Connect button (OAuth)
/// or the credential form.
fn provider_section(
    state: &ApiState,
    token: &str,
    session: &ConnectSession,
    provider: &str,
) -> Result<String, String> {
    let spec = provider_spec(state, provider).map_err(|e| format!("{e:?}"))?;
    let name = spec
        .spec
        .display_name
        .clone()
        .unwrap_or_else(|| provider.to_string());
    let resources: Vec<String> = match &session.resources {
        Some(r) => r.clone(),
        None => spec.resources.keys().cloned().collect(),
    };
    let listed: String = resources
        .iter()
        .map(|r| format!("<li>{}</li>", escape(&r.replace('_', " "))))
        .collect();
    let token = escape(token);
    let action = if spec.authorize.is_some() {
        format!(
            r#"<form method="get" action="/connect/{token}/start"><input type="hidden" name="provider" value="{p}"><button type="submit" id="connect-{p}">Connect {n}</button></form>"#,
            p = escape(provider),
            n = escape(&name),
        )
    } else {
        credential_form(&spec, &token, provider, &name)
    };
    Ok(format!(
        r#"<section aria-labelledby="h-{p}"><h2 id="h-{p}">{n}</h2><p>What will be synced:</p><ul>{listed}</ul>{action}</section>"#,
        p = escape(provider),
        n = escape(&name),
    ))
}

fn credential_form(
    spec: &tributary::spec::CompiledSpec,
    token: &str,
    provider: &str,
    name: &str,
) -> String {
    let fields: String = spec
        .spec
        .connect
        .as_ref()
        .map(|c| {
            c.fields
                .iter()
                .map(|(key, f)| {
                    let id = format!("f-{}-{}", escape(provider), escape(key));
                    let help = f
                        .help
                        .as_deref()
                        .map(|h| format!(r#"<span class="help" id="{id}-help">{}</span>"#, escape(h)))
                        .unwrap_or_default();
                    format!(
                        r#"<label for="{id}">{label}</label>{help}<input id="{id}" name="{key}" type="{kind}" required autocomplete="off" aria-describedby="{id}-help">"#,
                        label = escape(&f.label),
                        key = escape(key),
                        kind = if f.secret { "password" } else { "text" },
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    format!(
        r#"<form method="post" action="/connect/{token}/credentials"><input type="hidden" name="provider" value="{p}">{fields}<p><button type="submit" id="connect-{p}">Connect {n}</button></p></form>"#,
        p = escape(provider),
        n = escape(name),
    )
}
