//! The OAuth connect steps of the engine (`tributary::connect`) against the HubSpot
//! sandbox's authorization server: the authorize URL a browser is sent to (the spec's
//! scopes for the resources synced), the consent approved, the code exchanged once, the
//! portal's id captured from the access-token info endpoint, and the new credentials
//! reading contacts. A code exchanged twice, or with the wrong redirect URI, fails the
//! exchange.

use reqwest::{redirect, Url};
use serde_json::{json, Map, Value};
use tributary::connect::{self, App, AuthorizeRequest, Completion, ConnectError};
use tributary::engine::{ignore_events, Connection, RunOptions};
use tributary::spec::load_spec;
use tributary_e2e::engine::read_resource;
use tributary_e2e::{repo_root, shipped_sandbox};
use tributary_sandbox::SandboxHandle;

const CALLBACK: &str = "http://127.0.0.1:9/v1/connect/callback";

fn app() -> App {
    App {
        client_id: "sandbox-client".into(),
        client_secret: "sandbox-client-secret".into(),
        scopes: Vec::new(),
        webhook_keys: Default::default(),
    }
}

fn config(sbx: &SandboxHandle) -> Map<String, Value> {
    json!({
        "base_url": sbx.base_url(),
        "token_url": format!("{}/oauth/v1/token", sbx.base_url()),
        "authorize_url": format!("{}/oauth/authorize", sbx.base_url()),
    })
    .as_object()
    .unwrap()
    .clone()
}

/// The HubSpot sandbox (its app registering `CALLBACK`), the spec, and the settings
/// pointing at the sandbox.
async fn hubspot() -> (
    SandboxHandle,
    std::sync::Arc<tributary::spec::CompiledSpec>,
    Map<String, Value>,
) {
    let (sbx, _control) = shipped_sandbox("hubspot.yaml", |p| {
        let a = p.oauth.as_mut().unwrap().authorize.as_mut().unwrap();
        a.redirect_uris = vec![CALLBACK.into()];
    })
    .await;
    let spec = load_spec(&repo_root().join("provider-specs/hubspot.yaml")).unwrap();
    let config = config(&sbx);
    (sbx, spec, config)
}

/// The browser's part: open the authorize URL, press Allow, come back with a code.
async fn consent(authorize: &Url) -> Url {
    let http = reqwest::Client::builder()
        .redirect(redirect::Policy::none())
        .build()
        .unwrap();
    let page = http.get(authorize.clone()).send().await.unwrap();
    assert_eq!(page.status(), 200, "{}", page.text().await.unwrap());
    let mut form: Vec<(String, String)> = authorize.query_pairs().into_owned().collect();
    form.push(("decision".into(), "approve".into()));
    let mut action = authorize.clone();
    action.set_query(None);
    let back = http.post(action).form(&form).send().await.unwrap();
    assert_eq!(back.status(), 302);
    Url::parse(back.headers()["location"].to_str().unwrap()).unwrap()
}

#[tokio::test]
async fn a_consented_code_becomes_a_connection_with_its_portal_id() {
    let (_sbx, spec, config) = hubspot().await;
    let resources = vec!["contacts".to_string()];
    let pkce = connect::pkce::Pkce::new();
    let url = connect::authorize_url(&AuthorizeRequest {
        spec: &spec,
        config: &config,
        resources: &resources,
        app: &app(),
        redirect_uri: CALLBACK,
        state: "state-1",
        challenge: Some(&pkce.challenge),
    })
    .unwrap();
    let scope = url
        .query_pairs()
        .find(|(k, _)| k == "scope")
        .unwrap()
        .1
        .into_owned();
    assert_eq!(
        scope,
        "oauth crm.objects.contacts.read crm.schemas.contacts.read"
    );
    assert!(
        !url.query_pairs().any(|(k, _)| k == "code_challenge"),
        "the spec sends no PKCE challenge"
    );

    let back = consent(&url).await;
    let params: Map<String, Value> = back
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
        .collect();
    assert_eq!(params["state"], "state-1");
    let code = params["code"].as_str().unwrap().to_string();
    let completion = Completion {
        spec: &spec,
        config: &config,
        app: &app(),
        code: &code,
        redirect_uri: CALLBACK,
        verifier: None,
        callback: &params,
        allow_private_hosts: true,
    };
    let connected = connect::complete(&completion).await.unwrap();
    assert_eq!(connected.external_id.as_deref(), Some("4711"));
    assert!(connected.credentials.get("refresh_token").is_some());
    assert!(connected.credentials.get("expires_at").is_some());

    let again = connect::complete(&completion).await.unwrap_err();
    assert!(matches!(again, ConnectError::Exchange(_)), "{again}");
    assert_eq!(again.reason(), "code_exchange_failed");

    let connection = Connection {
        config: connected.config.clone(),
        credentials: connected.credentials.clone(),
    };
    let options = RunOptions {
        allow_private_hosts: true,
        ..RunOptions::default()
    };
    let (records, _, error) =
        read_resource(&spec, &connection, "contacts", options, ignore_events()).await;
    assert!(error.is_none(), "{error:?}");
    assert!(!records.is_empty());
}

#[tokio::test]
async fn an_exchange_with_another_redirect_uri_fails_and_says_so() {
    let (_sbx, spec, config) = hubspot().await;
    let url = connect::authorize_url(&AuthorizeRequest {
        spec: &spec,
        config: &config,
        resources: &["contacts".to_string()],
        app: &app(),
        redirect_uri: CALLBACK,
        state: "s",
        challenge: None,
    })
    .unwrap();
    let back = consent(&url).await;
    let code = back
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    let err = connect::complete(&Completion {
        spec: &spec,
        config: &config,
        app: &app(),
        code: &code,
        redirect_uri: "http://127.0.0.1:9/elsewhere",
        verifier: None,
        callback: &Map::new(),
        allow_private_hosts: true,
    })
    .await
    .unwrap_err();
    let message = err.to_string();
    assert!(message.contains("refused the code"), "{message}");
    assert!(!message.contains("sandbox-client-secret"));
}
