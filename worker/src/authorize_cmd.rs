//! `spec run --authorize`: connect an account by hand, as the connect page would. It
//! prints the provider's authorize URL, waits on a loopback callback for the browser to
//! come back, exchanges the code (with a PKCE verifier where the spec uses one),
//! captures the identity, and hands the run its new credentials and settings; with
//! `--save-credentials FILE` they are kept for the next run.

use anyhow::{anyhow, Context};
use axum::extract::Query;
use axum::response::Html;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::mpsc;
use tributary::connect::{self, App, Completion};
use tributary::secrets::Credentials;
use tributary::spec::CompiledSpec;

/// What an authorization gave the run.
pub struct Authorized {
    pub credentials: Credentials,
    pub config: Map<String, Value>,
}

/// The app is the credentials' `client_id` and `client_secret`.
fn app_from(credentials: &Credentials) -> anyhow::Result<App> {
    let field = |name: &str| {
        credentials
            .get(name)
            .map(str::to_string)
            .ok_or_else(|| anyhow!("--authorize needs the OAuth app's `{name}` in --credentials"))
    };
    Ok(App {
        client_id: field("client_id")?,
        client_secret: field("client_secret")?,
        scopes: Vec::new(),
        webhook_keys: Default::default(),
    })
}

/// A loopback redirect URI's listening address.
fn loopback(redirect_uri: &url::Url) -> anyhow::Result<std::net::SocketAddr> {
    let host = redirect_uri.host_str().unwrap_or_default();
    if host != "127.0.0.1" && host != "localhost" {
        return Err(anyhow!(
            "--redirect-uri must be a loopback URL (http://127.0.0.1:PORT/...), got {redirect_uri}"
        ));
    }
    let port = redirect_uri.port().unwrap_or(80);
    Ok(([127, 0, 0, 1], port).into())
}

pub async fn authorize(
    spec: &Arc<CompiledSpec>,
    resource: &str,
    config: &Map<String, Value>,
    credentials: &Credentials,
    redirect_uri: &str,
    allow_private_hosts: bool,
) -> anyhow::Result<Authorized> {
    let app = app_from(credentials)?;
    let redirect = url::Url::parse(redirect_uri).context("--redirect-uri")?;
    let addr = loopback(&redirect)?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for the callback"))?;
    let (tx, mut rx) = mpsc::channel::<HashMap<String, String>>(1);
    let path = redirect.path().to_string();
    let router = axum::Router::new().route(
        &path,
        axum::routing::get(move |Query(q): Query<HashMap<String, String>>| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(q).await;
                Html("<!doctype html><html lang=\"en\"><title>Authorized</title><p>Authorized: you can close this window and go back to the terminal.</p></html>")
            }
        }),
    );
    let server = tokio::spawn(async move { axum::serve(listener, router).await });
    let begun = connect::begin(spec, config, &[resource.to_string()], &app, redirect_uri)?;
    let (url, state) = (&begun.url, &begun.state);
    eprintln!("open this URL in a browser to authorize: {url}");
    eprintln!("waiting for the callback on {redirect_uri}");
    let callback = rx
        .recv()
        .await
        .ok_or_else(|| anyhow!("the callback server stopped"))?;
    server.abort();
    if callback.get("state") != Some(state) {
        return Err(anyhow!(
            "the callback's state does not match this authorization: start again"
        ));
    }
    if let Some(error) = callback.get("error") {
        let about = callback
            .get("error_description")
            .cloned()
            .unwrap_or_default();
        return Err(anyhow!(
            "the provider refused the authorization: {error} {about}"
        ));
    }
    let code = callback
        .get("code")
        .ok_or_else(|| anyhow!("the callback carried no code"))?;
    let query: Map<String, Value> = callback
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    let connected = connect::complete(&Completion {
        spec,
        config,
        app: &app,
        code,
        redirect_uri,
        verifier: begun.verifier.as_deref(),
        callback: &query,
        allow_private_hosts,
    })
    .await?;
    let captured: Vec<String> = connected
        .config
        .iter()
        .filter(|(k, v)| config.get(*k) != Some(v))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    eprintln!(
        "authorized: external_id {}{}",
        connected.external_id.as_deref().unwrap_or("(none)"),
        if captured.is_empty() {
            String::new()
        } else {
            format!(", config {}", captured.join(", "))
        }
    );
    Ok(Authorized {
        credentials: connected.credentials,
        config: connected.config,
    })
}
