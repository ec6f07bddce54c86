//! The authorization-code flow of the shipped HubSpot profile, as strict as an
//! authorization server: the consent page only for the app's client id and a registered
//! redirect URI; approve redirects with a single-use code, deny with
//! `error=access_denied`; the code is exchanged once, for the same redirect URI and
//! only with the verifier of its PKCE challenge; the access token it gives reads data
//! and is known to the identity endpoint.

mod common;

use base64::Engine;
use reqwest::{redirect, StatusCode, Url};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tributary_sandbox::SandboxHandle;

const CALLBACK: &str = "http://127.0.0.1:9/v1/connect/callback";

async fn hubspot() -> SandboxHandle {
    common::serve_with("hubspot.yaml", |p| {
        let a = p.oauth.as_mut().unwrap().authorize.as_mut().unwrap();
        a.redirect_uris = vec![CALLBACK.into()];
    })
    .await
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(redirect::Policy::none())
        .build()
        .unwrap()
}

fn challenge(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

fn authorize_params(client_id: &str, redirect_uri: &str, verifier: &str) -> Vec<(String, String)> {
    [
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", redirect_uri),
        ("scope", "oauth crm.objects.contacts.read"),
        ("state", "st-123"),
        ("code_challenge", &challenge(verifier)),
        ("code_challenge_method", "S256"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// The user's decision on the consent page: where the server sends the browser.
async fn decide(sbx: &SandboxHandle, params: &[(String, String)], decision: &str) -> Url {
    let mut form = params.to_vec();
    form.push(("decision".into(), decision.into()));
    let resp = no_redirects()
        .post(format!("{}/oauth/authorize", sbx.base_url()))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FOUND);
    Url::parse(resp.headers()["location"].to_str().unwrap()).unwrap()
}

fn param(url: &Url, name: &str) -> Option<String> {
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

async fn exchange(
    sbx: &SandboxHandle,
    code: &str,
    redirect_uri: &str,
    verifier: &str,
) -> (StatusCode, Value) {
    let resp = reqwest::Client::new()
        .post(format!("{}/oauth/v1/token", sbx.base_url()))
        .form(&[
            ("grant_type", "authorization_code"),
            ("client_id", "sandbox-client"),
            ("client_secret", "sandbox-client-secret"),
            ("redirect_uri", redirect_uri),
            ("code", code),
            ("code_verifier", verifier),
        ])
        .send()
        .await
        .unwrap();
    (resp.status(), resp.json().await.unwrap())
}

#[tokio::test]
async fn an_approved_consent_gives_a_code_that_is_exchanged_once_with_its_verifier() {
    let sbx = hubspot().await;
    let verifier = "a-verifier-of-enough-length-0123456789-abcdefghijklmnop";
    let params = authorize_params("sandbox-client", CALLBACK, verifier);

    let page = no_redirects()
        .get(format!("{}/oauth/authorize", sbx.base_url()))
        .query(&params)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(
        html.contains("Portal 4711") && html.contains("crm.objects.contacts.read"),
        "{html}"
    );

    let back = decide(&sbx, &params, "approve").await;
    assert!(back.as_str().starts_with(CALLBACK), "{back}");
    assert_eq!(param(&back, "state").as_deref(), Some("st-123"));
    let code = param(&back, "code").expect("a code");

    let (status, body) = exchange(&sbx, &code, CALLBACK, "not-the-verifier").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "a wrong verifier: {body}");
    let stats = common::stats(&sbx).await;
    assert_eq!(stats.pkce_failures, 1);

    // The failed attempt spent the code: a second try with the right verifier is refused.
    let (status, _) = exchange(&sbx, &code, CALLBACK, verifier).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let code = param(&decide(&sbx, &params, "approve").await, "code").unwrap();
    let (status, _) = exchange(&sbx, &code, "http://127.0.0.1:9/elsewhere", verifier).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "another redirect_uri");

    let code = param(&decide(&sbx, &params, "approve").await, "code").unwrap();
    let (status, tokens) = exchange(&sbx, &code, CALLBACK, verifier).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    let access = tokens["access_token"].as_str().unwrap();
    assert!(tokens["refresh_token"].as_str().is_some());
    let (status, _) = exchange(&sbx, &code, CALLBACK, verifier).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "a code is single use");

    let (status, info) = common::get(
        format!("{}/oauth/v1/access-tokens/{access}", sbx.base_url()),
        "",
    )
    .await;
    assert_eq!(status, 200, "{info}");
    assert_eq!(info["hub_id"], 4711);
    assert_eq!(
        info["scopes"],
        serde_json::json!(["oauth", "crm.objects.contacts.read"])
    );
    let (status, _) = common::get(
        format!("{}/crm/v3/objects/contacts", sbx.base_url()),
        access,
    )
    .await;
    assert_eq!(status, 200, "the token reads data");
    let (status, _) = common::get(
        format!("{}/oauth/v1/access-tokens/sbx-at-unknown", sbx.base_url()),
        "",
    )
    .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_denied_consent_and_bad_authorize_requests_are_refused_as_the_rfc_says() {
    let sbx = hubspot().await;
    let verifier = "another-verifier-0123456789-0123456789-0123456789";

    let back = decide(
        &sbx,
        &authorize_params("sandbox-client", CALLBACK, verifier),
        "deny",
    )
    .await;
    assert_eq!(param(&back, "error").as_deref(), Some("access_denied"));
    assert_eq!(param(&back, "state").as_deref(), Some("st-123"));
    assert_eq!(param(&back, "code"), None);

    // Errors that cannot be sent back safely are shown, never redirected.
    for params in [
        authorize_params("another-client", CALLBACK, verifier),
        authorize_params("sandbox-client", "https://attacker.example/cb", verifier),
    ] {
        let resp = no_redirects()
            .get(format!("{}/oauth/authorize", sbx.base_url()))
            .query(&params)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    }

    let mut unknown_scope = authorize_params("sandbox-client", CALLBACK, verifier);
    unknown_scope[3].1 = "oauth crm.objects.everything.write".into();
    let resp = no_redirects()
        .get(format!("{}/oauth/authorize", sbx.base_url()))
        .query(&unknown_scope)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FOUND);
    let back = Url::parse(resp.headers()["location"].to_str().unwrap()).unwrap();
    assert_eq!(param(&back, "error").as_deref(), Some("invalid_scope"));
    let stats = common::stats(&sbx).await;
    assert_eq!((stats.consents_denied, stats.consents_approved), (1, 0));
}
