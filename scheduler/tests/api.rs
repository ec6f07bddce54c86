//! The control API, from the real binary: tenant isolation, credentials never in
//! a response or a log line, bad input answered with a 4xx and a message.
//!
//! Process-level tier: needs tansu (see the README), so it runs only with the
//! `process-tests` feature.
#![cfg(feature = "process-tests")]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use tributary_e2e::broker::{free_port, Broker};
use tributary_e2e::{fresh_sqlite, repo_root};

const ADMIN: &str = "admin-token-for-tests-0123456789";
const SECRET: &str = "sk-SECRET-acme-7f3a9c";
const REFRESH: &str = "rt-SECRET-acme-44b1";

struct Scheduler {
    child: Child,
    base: String,
    log: std::path::PathBuf,
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start(broker: &Broker, database_url: &str, key: &str) -> Scheduler {
    let port = free_port();
    let log = std::env::temp_dir().join(format!("tributary-scheduler-{port}.log"));
    let child = Command::new(env!("CARGO_BIN_EXE_tributary-scheduler"))
        .arg("run")
        .current_dir(repo_root())
        .env("TRIBUTARY_API_ADDR", format!("127.0.0.1:{port}"))
        .env("TRIBUTARY_ADMIN_TOKEN", ADMIN)
        .env("TRIBUTARY_KAFKA_BROKERS", &broker.addr)
        .env("TRIBUTARY_DATABASE_URL", database_url)
        .env("TRIBUTARY_ENCRYPTION_KEY", key)
        .env("TRIBUTARY_TOPIC_PREFIX", format!("api{port}"))
        .env(
            "RUST_LOG",
            "debug,rdkafka=warn,sqlx=warn,hyper=info,h2=info",
        )
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = reqwest::get(format!("{base}/healthz")).await {
            if r.status().is_success() {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the scheduler did not come up:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Scheduler { child, base, log }
}

struct Api<'a> {
    http: reqwest::Client,
    base: &'a str,
    bodies: std::sync::Mutex<Vec<String>>,
}

impl Api<'_> {
    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        self.bodies.lock().unwrap().push(text.clone());
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

fn message(v: &Value) -> String {
    v["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn isolation_secrecy_and_bad_input() {
    let broker = Broker::start();
    let database_url = fresh_sqlite();
    let key = tributary::secrets::crypto::Cipher::generate_key();
    let sched = start(&broker, &database_url, &key).await;
    let api = Api {
        http: reqwest::Client::new(),
        base: &sched.base,
        bodies: Default::default(),
    };

    for t in ["acme", "beta"] {
        let (s, v) = api
            .call(
                "POST",
                "/v1/tenants",
                Some(ADMIN),
                Some(&json!({"id": t}).to_string()),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    let (_, v) = api
        .call("POST", "/v1/tenants/acme/tokens", Some(ADMIN), None)
        .await;
    let acme = v["token"].as_str().unwrap().to_string();
    let (_, v) = api
        .call("POST", "/v1/tenants/beta/tokens", Some(ADMIN), None)
        .await;
    let beta = v["token"].as_str().unwrap().to_string();

    let new_conn = json!({
        "tenant": "acme", "provider": "hubspot", "config": {},
        "credentials": {"access_token": SECRET, "refresh_token": REFRESH, "client_id": "cid", "client_secret": "cs-SECRET-9"},
        "resources": ["contacts"], "schedule": "*/15 * * * *"
    })
    .to_string();
    let (s, v) = api
        .call("POST", "/v1/connections", Some(&beta), Some(&new_conn))
        .await;
    assert_eq!(
        s,
        StatusCode::FORBIDDEN,
        "beta cannot create acme's connection: {v}"
    );
    let (s, v) = api
        .call("POST", "/v1/connections", Some(&acme), Some(&new_conn))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id = v["id"].as_str().unwrap().to_string();

    // Tenant isolation: beta sees and triggers nothing of acme's.
    for (method, path, body) in [
        ("GET", format!("/v1/connections/{id}"), None),
        ("POST", format!("/v1/connections/{id}/resync"), Some("{}")),
        ("POST", format!("/v1/connections/{id}/pause"), None),
        ("POST", format!("/v1/connections/{id}/resume"), None),
        ("GET", format!("/v1/connections/{id}/runs"), None),
        (
            "PUT",
            format!("/v1/connections/{id}/credentials"),
            Some(r#"{"access_token": "x"}"#),
        ),
    ] {
        let (s, v) = api.call(method, &path, Some(&beta), body).await;
        assert_eq!(
            s,
            StatusCode::NOT_FOUND,
            "{method} {path} with beta's token: {v}"
        );
    }
    let (_, v) = api.call("GET", "/v1/connections", Some(&beta), None).await;
    assert_eq!(v["connections"].as_array().unwrap().len(), 0);

    // Acme sees its own, without credentials.
    let (s, v) = api
        .call("GET", &format!("/v1/connections/{id}"), Some(&acme), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["state"], "healthy");
    assert!(v["last_runs"].get("contacts").is_some(), "{v}");
    assert_eq!(v["credentials"]["fields"].as_array().unwrap().len(), 4);
    assert_eq!(v["resume_at"], Value::Null, "{v}");

    // A worker parked it (rate limited): the state and when it resumes are visible.
    let store = tributary::store::Store::connect(
        &database_url,
        tributary::secrets::crypto::Cipher::from_base64(&key, &[]).unwrap(),
    )
    .await
    .unwrap();
    let resume = chrono::Utc::now() + chrono::Duration::seconds(90);
    store
        .block_connection(
            &id,
            resume,
            Some((
                tributary::domain::ConnectionState::RateLimited,
                "throttled 5 time(s) in a row",
            )),
        )
        .await
        .unwrap();
    let (_, v) = api
        .call("GET", &format!("/v1/connections/{id}"), Some(&acme), None)
        .await;
    assert_eq!(v["state"], "rate_limited", "{v}");
    assert!(
        v["state_message"].as_str().unwrap().contains("throttled"),
        "{v}"
    );
    let shown: chrono::DateTime<chrono::Utc> = v["resume_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(shown.timestamp_millis(), resume.timestamp_millis(), "{v}");
    store.clear_breaker(&id).await.unwrap();
    let (s, v) = api
        .call(
            "POST",
            &format!("/v1/connections/{id}/resync"),
            Some(&acme),
            Some(r#"{"resources": ["contacts"], "full": true}"#),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    assert_eq!(v["jobs"][0]["mode"], "full");
    let (s, _) = api
        .call(
            "POST",
            &format!("/v1/connections/{id}/pause"),
            Some(&acme),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = api
        .call(
            "POST",
            &format!("/v1/connections/{id}/resync"),
            Some(&acme),
            None,
        )
        .await;
    assert_eq!(
        s,
        StatusCode::CONFLICT,
        "a paused connection is not resynced: {v}"
    );
    let (_, v) = api
        .call("GET", &format!("/v1/connections/{id}"), Some(&acme), None)
        .await;
    assert_eq!(v["state"], "paused");
    let (s, _) = api
        .call(
            "POST",
            &format!("/v1/connections/{id}/resume"),
            Some(&acme),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = api
        .call(
            "PUT",
            &format!("/v1/connections/{id}/credentials"),
            Some(&acme),
            Some(&json!({"access_token": SECRET}).to_string()),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, v) = api
        .call(
            "GET",
            &format!("/v1/connections/{id}/runs"),
            Some(&acme),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");

    // Bad input: a 4xx that says what is wrong, never a 500.
    let conn = |patch: Value| {
        let mut base = json!({"tenant": "acme", "provider": "hubspot"});
        base.as_object_mut()
            .unwrap()
            .extend(patch.as_object().unwrap().clone());
        base.to_string()
    };
    let cases: Vec<(&str, String, Option<String>, StatusCode, &str)> = vec![
        (
            "POST",
            "/v1/connections".into(),
            Some(conn(json!({"provider": "myspace"}))),
            StatusCode::BAD_REQUEST,
            "unknown provider `myspace`",
        ),
        (
            "POST",
            "/v1/connections".into(),
            Some("{\"tenant\": \"acme\",".into()),
            StatusCode::BAD_REQUEST,
            "not the JSON",
        ),
        (
            "POST",
            "/v1/connections".into(),
            Some(conn(json!({"schedule": "every tuesday"}))),
            StatusCode::BAD_REQUEST,
            "schedule",
        ),
        (
            "POST",
            "/v1/connections".into(),
            Some(conn(json!({"schedule": "99 * * * *"}))),
            StatusCode::BAD_REQUEST,
            "not a valid cron expression",
        ),
        (
            "POST",
            "/v1/connections".into(),
            Some(conn(json!({"timezone": "Mars/Olympus"}))),
            StatusCode::BAD_REQUEST,
            "IANA time zone",
        ),
        (
            "POST",
            "/v1/connections".into(),
            Some(conn(json!({"resources": ["tickets"]}))),
            StatusCode::BAD_REQUEST,
            "has no resource `tickets`",
        ),
        (
            "POST",
            "/v1/connections".into(),
            Some(conn(json!({"credentials": {"api_key": 5}}))),
            StatusCode::BAD_REQUEST,
            "credentials.api_key must be a string",
        ),
        (
            "POST",
            "/v1/connections".into(),
            Some(conn(json!({"colour": "red"}))),
            StatusCode::BAD_REQUEST,
            "unknown field `colour`",
        ),
        (
            "POST",
            "/v1/connections".into(),
            Some(conn(json!({"tenant": "nobody"}))),
            StatusCode::NOT_FOUND,
            "tenant `nobody` does not exist",
        ),
        (
            "POST",
            "/v1/connections".into(),
            Some(json!({"tenant": "acme", "provider": "zendesk"}).to_string()),
            StatusCode::BAD_REQUEST,
            "config.subdomain is required",
        ),
        (
            "POST",
            "/v1/tenants".into(),
            Some(json!({"id": "no spaces please"}).to_string()),
            StatusCode::BAD_REQUEST,
            "is not valid",
        ),
        (
            "POST",
            "/v1/tenants".into(),
            Some(json!({"id": "acme"}).to_string()),
            StatusCode::CONFLICT,
            "already exists",
        ),
        (
            "POST",
            format!("/v1/connections/{id}/resync"),
            Some("{\"full\": \"yes\"}".into()),
            StatusCode::BAD_REQUEST,
            "invalid type",
        ),
        (
            "POST",
            format!("/v1/connections/{id}/resync"),
            Some("{\"resources\": [\"deals\"]}".into()),
            StatusCode::BAD_REQUEST,
            "does not sync `deals`",
        ),
        (
            "GET",
            format!("/v1/connections/{id}/runs?limit=0"),
            None,
            StatusCode::BAD_REQUEST,
            "limit",
        ),
        (
            "GET",
            "/v1/connections/nope".into(),
            None,
            StatusCode::NOT_FOUND,
            "does not exist",
        ),
        (
            "GET",
            "/v2/whatever".into(),
            None,
            StatusCode::NOT_FOUND,
            "no such endpoint",
        ),
    ];
    for (method, path, body, want, says) in cases {
        let (s, v) = api.call(method, &path, Some(ADMIN), body.as_deref()).await;
        assert_eq!(s, want, "{method} {path} {body:?}: {v}");
        assert!(
            message(&v).contains(says),
            "{method} {path}: `{}` should say `{says}`",
            message(&v)
        );
    }
    let (s, v) = api
        .call("GET", &format!("/v1/connections/{id}"), None, None)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    let (s, _) = api
        .call("GET", &format!("/v1/connections/{id}"), Some("guess"), None)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, v) = api
        .call(
            "POST",
            "/v1/tenants",
            Some(&acme),
            Some(r#"{"id": "evil"}"#),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    let (s, v) = api.call("GET", "/openapi.json", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["openapi"], "3.1.0");

    // No secret in any response or log line.
    let bodies = api.bodies.lock().unwrap().join("\n");
    let log = std::fs::read_to_string(&sched.log).unwrap();
    assert!(
        log.contains("connection created"),
        "the log has content:\n{log}"
    );
    for secret in [SECRET, REFRESH, "cs-SECRET-9"] {
        assert!(!bodies.contains(secret), "a response carried {secret}");
        assert!(!log.contains(secret), "a log line carried {secret}");
    }
}
