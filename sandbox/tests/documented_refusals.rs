//! The shipped Jira, Xero and Personio profiles refuse what those APIs are documented
//! to refuse, with their status and body: Jira an unbounded JQL, a maxResults outside
//! 1..5000 and a wrong API token (a plain-text 401); Xero a missing or foreign
//! `xero-tenant-id` (403) and an expired token (401 TokenExpired); Personio a missing
//! Authorization header (401), a wrong token (403), and pages above 100 (capped).

mod common;

use common::serve;
use reqwest::{RequestBuilder, StatusCode};
use serde_json::Value;

const XERO_TENANT: &str = "a3a2c3b8-1f9e-4c5d-9a61-0c1d2e3f4a5b";

async fn answer(req: RequestBuilder) -> (StatusCode, String) {
    let resp = req.send().await.unwrap();
    (resp.status(), resp.text().await.unwrap())
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[tokio::test]
async fn jira_refuses_unbounded_jql_out_of_range_pages_and_a_wrong_api_token() {
    let sbx = serve("jira.yaml").await;
    let url = format!("{}/rest/api/3/search/jql", sbx.base_url());
    let http = reqwest::Client::new();
    let search = |jql: &str, max: &str, password: &str| {
        http.get(&url)
            .query(&[("jql", jql), ("maxResults", max)])
            .basic_auth("bot@example.com", Some(password))
    };
    let bounded = r#"updated >= "1970-01-01 00:00" ORDER BY key ASC"#;

    let (status, body) = answer(search(bounded, "10", "sandbox-jira-api-token")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(json(&body)["issues"].as_array().unwrap().len(), 10);

    let (status, body) = answer(search("ORDER BY key ASC", "10", "sandbox-jira-api-token")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(json(&body)["errorMessages"][0]
        .as_str()
        .unwrap()
        .contains("Unbounded"));

    for max in ["0", "5001"] {
        let (status, body) = answer(search(bounded, max, "sandbox-jira-api-token")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "maxResults={max}: {body}");
    }

    let (status, body) = answer(search(bounded, "10", "a-wrong-api-token")).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the password is checked, not only the email"
    );
    assert!(
        serde_json::from_str::<Value>(&body).is_err(),
        "plain text: {body}"
    );
}

#[tokio::test]
async fn xero_refuses_a_foreign_tenant_with_403_and_an_unknown_token_with_token_expired() {
    let sbx = serve("xero.yaml").await;
    let url = format!("{}/Contacts", sbx.base_url());
    let http = reqwest::Client::new();
    for tenant in [None, Some("00000000-0000-0000-0000-000000000000")] {
        let mut req = http
            .get(&url)
            .query(&[("order", "ContactID ASC")])
            .bearer_auth("not-a-token");
        if let Some(t) = tenant {
            req = req.header("xero-tenant-id", t);
        }
        let (status, body) = answer(req).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "tenant {tenant:?}: {body}");
        assert_eq!(json(&body)["Detail"], "AuthenticationUnsuccessful");
    }

    let req = http
        .get(&url)
        .query(&[("order", "ContactID ASC")])
        .header("xero-tenant-id", XERO_TENANT)
        .bearer_auth("not-a-token");
    let (status, body) = answer(req).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let body = json(&body);
    assert!(
        body["Detail"]
            .as_str()
            .unwrap()
            .starts_with("TokenExpired: token expired at "),
        "{body}"
    );
    assert_eq!(body["Extensions"], serde_json::json!({}));
}

#[tokio::test]
async fn personio_answers_401_without_a_token_403_with_a_wrong_one_and_caps_pages_at_100() {
    let sbx = common::serve_with("personio.yaml", |p| {
        p.resources.get_mut("employees").unwrap().count = 150;
    })
    .await;
    let base = sbx.base_url();
    let http = reqwest::Client::new();
    let token = http
        .post(format!("{base}/v1/auth"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "sandbox-client"),
            ("client_secret", "sandbox-client-secret"),
        ])
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()["data"]["token"]
        .as_str()
        .unwrap()
        .to_string();
    let url = format!("{base}/v1/company/employees");

    let (status, body) = answer(http.get(&url)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(
        json(&body)["error"]["message"],
        "Authorization is not provided"
    );

    let (status, body) = answer(http.get(&url).bearer_auth("papi-wrong")).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(
        json(&body)["error"]["message"],
        "Provided authorization is not valid"
    );

    let (status, body) = answer(http.get(&url).bearer_auth(&token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        json(&body)["data"].as_array().unwrap().len(),
        50,
        "50 by default"
    );
    let (_, body) = answer(
        http.get(&url)
            .query(&[("limit", "200")])
            .bearer_auth(&token),
    )
    .await;
    assert_eq!(
        json(&body)["data"].as_array().unwrap().len(),
        100,
        "at most 100"
    );
}

/// A refusal rule that cannot be evaluated is the profile's bug: answered as a 500
/// naming the rule, never read as "does not refuse".
#[tokio::test]
async fn a_refusal_rule_that_fails_to_evaluate_is_answered_loudly() {
    let sbx = common::serve_with("jira.yaml", |p| {
        let route = &mut p.resources.get_mut("tickets").unwrap().routes[0];
        route.refuse[0].when = "$startsWith(query.jql, 'updated')".into();
    })
    .await;
    let req = reqwest::Client::new()
        .get(format!("{}/rest/api/3/search/jql", sbx.base_url()))
        .query(&[("jql", r#"updated >= "1970-01-01 00:00""#)])
        .basic_auth("bot@example.com", Some("sandbox-jira-api-token"));
    let (status, body) = answer(req).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert!(
        json(&body)["error"]
            .as_str()
            .unwrap()
            .contains("resources.tickets.routes.refuse[0].when"),
        "{body}"
    );
}
