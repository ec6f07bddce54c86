//! NetSuite against its sandbox profile, which verifies OAuth 1.0a signatures for real.
//! A request with a wrong signature, a reused nonce, a wrong realm or a stale timestamp
//! is refused with NetSuite's 401 INVALID_LOGIN (each counted, with its reason); and
//! `spec run` signs every request afresh, retries included: after injected 5xx answers
//! the run completes with no signature refused.

use std::process::Stdio;

use reqwest::StatusCode;
use reqwest::Url;
use serde_json::{json, Value};
use tributary::http::oauth1::{authorization, Freshness, Oauth1Keys};
use tributary::spec::model::Oauth1SignatureMethod;
use tributary_e2e::{repo_root, shipped_sandbox, SandboxControl};
use tributary_sandbox::SandboxHandle;

const KEYS: Oauth1Keys<'static> = Oauth1Keys {
    consumer_key: "sandbox-netsuite-consumer-key",
    consumer_secret: "sandbox-netsuite-consumer-secret",
    token: "sandbox-netsuite-token-id",
    token_secret: "sandbox-netsuite-token-secret",
};
const REALM: &str = "1234567_SB1";

async fn netsuite() -> (SandboxHandle, SandboxControl) {
    shipped_sandbox("netsuite.yaml", |_| {}).await
}

fn suiteql_url(sbx: &SandboxHandle) -> Url {
    Url::parse(&format!(
        "{}/services/rest/query/v1/suiteql?limit=5&offset=0",
        sbx.base_url()
    ))
    .unwrap()
}

/// POST a SuiteQL page with this Authorization header.
async fn post(url: &Url, authorization: &str) -> (StatusCode, Value) {
    let resp = reqwest::Client::new()
        .post(url.clone())
        .header("Authorization", authorization)
        .header("Prefer", "transient")
        .json(&json!({"q": "SELECT id, email FROM customer ORDER BY id"}))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap())
}

fn signed(url: &Url, keys: &Oauth1Keys, realm: &str, fresh: &Freshness) -> String {
    authorization(
        "POST",
        url,
        keys,
        Oauth1SignatureMethod::HmacSha256,
        Some(realm),
        fresh,
    )
}

fn is_invalid_login(body: &Value) -> bool {
    body["status"] == 401 && body["o:errorDetails"][0]["o:errorCode"] == "INVALID_LOGIN"
}

#[tokio::test]
async fn the_sandbox_refuses_every_signature_that_does_not_hold() {
    let (sbx, control) = netsuite().await;
    let url = suiteql_url(&sbx);

    let fresh = Freshness::now();
    let good = signed(&url, &KEYS, REALM, &fresh);
    let (status, body) = post(&url, &good).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let first = &body["items"][0];
    assert_eq!(first["id"], "1");
    assert!(
        first.get("companyname").is_none(),
        "only the selected columns: {first}"
    );

    let wrong_secret = Oauth1Keys {
        token_secret: "not-the-token-secret",
        ..KEYS
    };
    let stale = Freshness {
        timestamp: fresh.timestamp - 3600,
        ..Freshness::now()
    };
    let refused = [
        ("a reused nonce", good.clone(), "nonce"),
        (
            "a wrong signature",
            signed(&url, &wrong_secret, REALM, &Freshness::now()),
            "signature",
        ),
        (
            "a wrong realm",
            signed(&url, &KEYS, "1234567_sb1", &Freshness::now()),
            "realm",
        ),
        (
            "a stale timestamp",
            signed(&url, &KEYS, REALM, &stale),
            "timestamp",
        ),
    ];
    for (n, (what, header, reason)) in refused.iter().enumerate() {
        let (status, body) = post(&url, header).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}: {body}");
        assert!(is_invalid_login(&body), "{what}: {body}");
        let stats = control.stats().await.unwrap();
        assert_eq!(stats.signature_failures, n as u64 + 1, "{what}");
        let said = stats.last_signature_failure.unwrap_or_default();
        assert!(said.contains(reason), "{what}: {said}");
    }
}

#[tokio::test]
async fn spec_run_signs_every_attempt_afresh() {
    let (sbx, control) = netsuite().await;
    // Two failures of page 2: the run retries it twice, each attempt signed again.
    control
        .faults(json!([{"kind": "status", "status": 503, "resource": "customers", "page": 2, "times": 2}]))
        .await
        .unwrap();
    let credentials = json!({
        "consumer_key": KEYS.consumer_key, "consumer_secret": KEYS.consumer_secret,
        "token_id": KEYS.token, "token_secret": KEYS.token_secret
    });
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_tributary-worker"))
        .current_dir(repo_root())
        .args([
            "spec",
            "run",
            "provider-specs/netsuite.yaml",
            "--resource",
            "customers",
        ])
        .args([
            "--config",
            &json!({"account_id": REALM, "base_url": sbx.base_url()}).to_string(),
        ])
        .args(["--credentials", &credentials.to_string()])
        .args(["--page-size", "50", "--allow-private-hosts"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let ids: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let expected: Vec<String> = (1..=130).map(|i| i.to_string()).collect();
    assert_eq!(ids, expected, "every customer once, in order");

    let stats = control.stats().await.unwrap();
    assert_eq!(
        stats.signature_failures, 0,
        "{:?}",
        stats.last_signature_failure
    );
    assert_eq!(stats.unauthorized, 0);
    // 3 pages, plus the 2 failed attempts of page 2: every one a fresh nonce.
    assert_eq!(stats.by_resource["customers"], 5);
    assert!(!stderr.contains(KEYS.token_secret) && !stderr.contains(KEYS.consumer_secret));
}
