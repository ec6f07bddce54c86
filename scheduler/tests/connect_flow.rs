//! The hosted connect flow by plain HTTP, on the in-process rig (librdkafka's mock
//! cluster, SQLite, the HubSpot sandbox with its authorization server): the host's
//! backend mints a session, its user opens the page, presses Connect, approves at the
//! provider's consent page and lands on the return URL with `connection_id`; the
//! connection exists with the portal id captured, `connection.created` is published, and
//! its first scheduled sync publishes the contacts. Failures store nothing and say why.

use std::sync::Arc;
use std::time::Duration;

use reqwest::{redirect, StatusCode, Url};
use serde_json::{json, Value};
use tributary::connect::apps::Apps;
use tributary::connect::ConnectSettings;
use tributary::schedule::tick::{ScheduleSettings, Scheduler};
use tributary::sync::Syncer;
use tributary_e2e::broker::TopicReader;
use tributary_e2e::check_event_schema;
use tributary_e2e::inprocess::InProcess;
use tributary_e2e::pipeline::values;
use tributary_scheduler::api::{router, ApiState, ConnectState};

const ADMIN: &str = "admin-token-for-connect-tests-0123";
const RETURN: &str = "https://app.example.com/integrations";
const CONTACTS: u64 = 12;

/// The rig, with the scheduler's API on a loopback port whose callback the sandbox's
/// OAuth app registers.
struct Flow {
    rig: InProcess,
    base: String,
    http: reqwest::Client,
    /// A page of the host product on loopback that a browser can land on (an allowed
    /// return origin too).
    #[cfg_attr(not(feature = "process-tests"), allow(dead_code))]
    host_page: String,
}

/// The host product's integrations page: says what the connect flow sent back.
async fn host_product() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new().route(
        "/integrations",
        axum::routing::get(
            |axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>| async move {
                let id = q.get("connection_id").cloned().unwrap_or_default();
                let status = q.get("status").cloned().unwrap_or_default();
                axum::response::Html(format!(
                    "<!doctype html><title>Integrations</title><p id=\"status\">{status}</p><p id=\"connection\">{id}</p>"
                ))
            },
        ),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("{base}/integrations")
}

impl Flow {
    async fn start() -> Flow {
        Flow::start_with(|_| {}).await
    }

    /// With the sandbox profile changed by `adjust` too.
    async fn start_with(adjust: impl FnOnce(&mut tributary_sandbox::Profile)) -> Flow {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let callback = format!("{base}/v1/connect/callback");
        let host_page = host_product().await;
        let host_origin = Url::parse(&host_page)
            .unwrap()
            .origin()
            .ascii_serialization();
        let rig = InProcess::start_with(CONTACTS, |p| {
            let a = p.oauth.as_mut().unwrap().authorize.as_mut().unwrap();
            a.redirect_uris = vec![callback.clone()];
            adjust(p);
        })
        .await;
        let lane = &rig.lane;
        let settings = rig.settings();
        let apps = Apps::parse(
            "apps:\n  hubspot: {client_id: sandbox-client, client_secret_env: SECRET}\n  salesforce: {client_id: sandbox-client, client_secret_env: SECRET}\n  quickbooks: {client_id: sandbox-client, client_secret_env: SECRET}\n  msgraph: {client_id: sandbox-client, client_secret_env: SECRET}\n",
            &|_| Some("sandbox-client-secret".into()),
        )
        .unwrap();
        let state = Arc::new(ApiState {
            store: lane.store.clone(),
            publisher: lane.publisher.clone(),
            topics: lane.topics.clone(),
            specs_dir: settings.specs_dir.clone(),
            admin_token: ADMIN.to_string(),
            syncer: Arc::new(Syncer::new(
                lane.store.clone(),
                lane.publisher.clone(),
                settings,
            )),
            connect: ConnectState {
                settings: ConnectSettings {
                    public_url: Some(base.clone()),
                    return_origins: vec!["https://app.example.com".into(), host_origin],
                    ..ConnectSettings::default()
                },
                apps,
            },
            webhooks: tributary_scheduler::api::webhooks::WebhookState {
                publisher: lane.publisher.clone(),
                ack_timeout: std::time::Duration::from_secs(2),
            },
        });
        tokio::spawn(async move { axum::serve(listener, router(state)).await });
        let http = reqwest::Client::builder()
            .redirect(redirect::Policy::none())
            .build()
            .unwrap();
        Flow {
            rig,
            base,
            http,
            host_page,
        }
    }

    fn sandbox(&self) -> String {
        self.rig.lane.sandbox.base_url()
    }

    async fn create_session(&self, body: Value) -> (StatusCode, Value) {
        let resp = self
            .http
            .post(format!("{}/v1/connect/sessions", self.base))
            .bearer_auth(ADMIN)
            .json(&body)
            .send()
            .await
            .unwrap();
        (resp.status(), resp.json().await.unwrap_or(Value::Null))
    }

    fn hubspot_session(&self) -> Value {
        let sbx = self.sandbox();
        json!({
            "tenant": self.rig.lane.tenant,
            "provider": "hubspot",
            "resources": ["contacts"],
            "return_url": RETURN,
            "config": {
                "base_url": sbx,
                "token_url": format!("{sbx}/oauth/v1/token"),
                "authorize_url": format!("{sbx}/oauth/authorize"),
            },
        })
    }

    async fn session_state(&self, id: &str) -> Value {
        self.http
            .get(format!("{}/v1/connect/sessions/{id}", self.base))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Follow the browser's redirects from `url` until one leaves for the return URL (or
    /// a page answers); at the provider's consent page, press `decision`.
    async fn browse(&self, url: &str, decision: &str) -> Url {
        let mut next = Url::parse(url).unwrap();
        for _ in 0..10 {
            if next.as_str().starts_with(RETURN) {
                return next;
            }
            let resp = self.http.get(next.clone()).send().await.unwrap();
            let resp = if resp.status() == StatusCode::OK {
                // The provider's consent page: press the button.
                let html = resp.text().await.unwrap();
                assert!(html.contains("name=\"decision\""), "{next}: {html}");
                let mut form: Vec<(String, String)> = next.query_pairs().into_owned().collect();
                form.push(("decision".into(), decision.into()));
                let mut action = next.clone();
                action.set_query(None);
                self.http.post(action).form(&form).send().await.unwrap()
            } else {
                resp
            };
            let Some(location) = resp.headers().get("location") else {
                panic!(
                    "{next}: {} with no redirect: {}",
                    resp.status(),
                    resp.text().await.unwrap()
                );
            };
            next = next.join(location.to_str().unwrap()).unwrap();
        }
        panic!("too many redirects");
    }

    /// Connect, approve, and stop where the provider sends the browser back: the callback
    /// URL, not yet opened.
    /// A provider's shipped sandbox whose OAuth app registers this flow's callback.
    async fn provider_sandbox(&self, profile: &str) -> tributary_sandbox::SandboxHandle {
        let callback = format!("{}/v1/connect/callback", self.base);
        tributary_e2e::shipped_sandbox(profile, |p| {
            p.oauth
                .as_mut()
                .unwrap()
                .authorize
                .as_mut()
                .unwrap()
                .redirect_uris = vec![callback];
        })
        .await
        .0
    }

    async fn to_callback(&self, session_url: &str) -> Url {
        let start = self
            .http
            .get(format!("{session_url}/start?provider=hubspot"))
            .send()
            .await
            .unwrap();
        let authorize = Url::parse(start.headers()["location"].to_str().unwrap()).unwrap();
        let mut form: Vec<(String, String)> = authorize.query_pairs().into_owned().collect();
        form.push(("decision".into(), "approve".into()));
        let mut action = authorize.clone();
        action.set_query(None);
        let back = self.http.post(action).form(&form).send().await.unwrap();
        Url::parse(back.headers()["location"].to_str().unwrap()).unwrap()
    }

    /// A session for `provider` (its resources all when none are named), created.
    async fn session_for(&self, provider: &str, resources: Option<Value>, config: Value) -> Value {
        let mut body =
            json!({"tenant": "acme", "provider": provider, "return_url": RETURN, "config": config});
        if let Some(r) = resources {
            body["resources"] = r;
        }
        let (status, session) = self.create_session(body).await;
        assert_eq!(status, StatusCode::CREATED, "{session}");
        session
    }

    /// The connection a flow that came back connected made.
    async fn connected(&self, back: &Url) -> tributary::store::ConnectionRecord {
        let id = param(back, "connection_id").unwrap_or_else(|| panic!("{back}"));
        self.rig.lane.store.connection(&id).await.unwrap()
    }

    /// The first full sync of a new connection, due at once: one tick enqueues it, a
    /// worker runs it, and every contact is published for that connection.
    async fn first_sync(&self, contacts: &mut TopicReader, id: &str) {
        let lane = &self.rig.lane;
        let _worker = self.rig.worker(|_| {});
        Scheduler::new(
            lane.store.clone(),
            lane.publisher.clone(),
            lane.topics.clone(),
            ScheduleSettings::default(),
        )
        .tick(chrono::Utc::now())
        .await
        .unwrap();
        contacts.read_until(
            Duration::from_secs(60),
            "the new connection's contacts",
            |all| values(all).iter().filter(|e| e["connection"] == id).count() >= CONTACTS as usize,
        );
    }

    async fn connections(&self) -> usize {
        self.rig
            .lane
            .store
            .connection_ids(None)
            .await
            .unwrap()
            .len()
    }

    /// The connect page, then its Connect button (`/connect/{token}/start`).
    async fn press_connect(&self, session_url: &str, provider: &str) -> Url {
        let page = self.http.get(session_url).send().await.unwrap();
        assert_eq!(page.status(), StatusCode::OK);
        let html = page.text().await.unwrap();
        assert!(
            html.contains(&format!("id=\"connect-{provider}\"")),
            "{html}"
        );
        let start = format!("{session_url}/start?provider={provider}");
        self.browse(&start, "approve").await
    }
}

fn param(url: &Url, name: &str) -> Option<String> {
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_connects_hubspot_and_its_first_sync_publishes_the_contacts() {
    let flow = Flow::start().await;
    let lane = &flow.rig.lane;
    let mut statuses = TopicReader::new(&lane.brokers, &lane.topics.status());
    let mut contacts = TopicReader::new(&lane.brokers, &lane.topics.model("crm.contact"));
    let (status, session) = flow.create_session(flow.hubspot_session()).await;
    assert_eq!(status, StatusCode::CREATED, "{session}");
    let url = session["url"].as_str().unwrap();
    assert!(
        url.starts_with(&format!("{}/connect/cst_", flow.base)),
        "{url}"
    );

    let back = flow.press_connect(url, "hubspot").await;
    assert_eq!(
        param(&back, "status").as_deref(),
        Some("connected"),
        "{back}"
    );
    let id = param(&back, "connection_id").expect("connection_id");
    let conn = lane.store.connection(&id).await.unwrap();
    assert_eq!(
        (conn.tenant.as_str(), conn.provider.as_str()),
        ("acme", "hubspot")
    );
    assert_eq!(conn.external_id.as_deref(), Some("4711"));
    assert!(conn.credentials.get("refresh_token").is_some());
    let shown = flow.session_state(session["id"].as_str().unwrap()).await;
    assert_eq!(
        (shown["state"].clone(), shown["connection_id"].clone()),
        (json!("connected"), json!(id))
    );

    statuses.read_until(Duration::from_secs(30), "connection.created", |all| {
        values(all)
            .iter()
            .any(|e| e["type"] == "connection.created" && e["connection"] == id.as_str())
    });
    let created = values(&statuses.received)
        .into_iter()
        .find(|e| e["type"] == "connection.created")
        .unwrap()
        .clone();
    check_event_schema("status-event", &created).unwrap_or_else(|e| panic!("{e}: {created}"));

    flow.first_sync(&mut contacts, &id).await;

    // The link works once.
    let again = flow.http.get(url).send().await.unwrap();
    assert_eq!(again.status(), StatusCode::GONE);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_denied_consent_stores_nothing_and_says_why() {
    let flow = Flow::start().await;
    let lane = &flow.rig.lane;
    let before = lane.store.connection_ids(None).await.unwrap().len();
    let (_, session) = flow.create_session(flow.hubspot_session()).await;
    let url = session["url"].as_str().unwrap();
    let start = format!("{url}/start?provider=hubspot");
    let back = flow.browse(&start, "deny").await;
    assert_eq!(param(&back, "status").as_deref(), Some("error"));
    assert_eq!(param(&back, "reason").as_deref(), Some("access_denied"));
    assert!(
        param(&back, "message").unwrap().contains("not granted"),
        "{back}"
    );
    let shown = flow.session_state(session["id"].as_str().unwrap()).await;
    assert_eq!(
        (shown["state"].clone(), shown["reason"].clone()),
        (json!("failed"), json!("access_denied"))
    );
    assert_eq!(
        lane.store.connection_ids(None).await.unwrap().len(),
        before,
        "no connection written"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_return_url_of_another_origin_is_refused_when_the_session_is_made() {
    let flow = Flow::start().await;
    let mut body = flow.hubspot_session();
    body["return_url"] = json!("https://evil.example.net/steal");
    let (status, answer) = flow.create_session(body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let message = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("https://evil.example.net")
            && message.contains("TRIBUTARY_CONNECT_RETURN_ORIGINS"),
        "{answer}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reused_state_a_late_callback_and_a_bad_code_store_nothing() {
    let flow = Flow::start().await;
    let before = flow.connections().await;

    // A callback opened twice: the second finds its state spent.
    let (_, session) = flow.create_session(flow.hubspot_session()).await;
    let callback = flow.to_callback(session["url"].as_str().unwrap()).await;
    let first = flow.browse(callback.as_str(), "approve").await;
    assert_eq!(param(&first, "status").as_deref(), Some("connected"));
    let again = flow.http.get(callback.clone()).send().await.unwrap();
    assert_eq!(again.status(), StatusCode::BAD_REQUEST);
    assert!(again.text().await.unwrap().contains("cannot be used"));
    assert_eq!(
        flow.connections().await,
        before + 1,
        "one connection for one consent"
    );

    // The session expires between the consent and the callback.
    let (_, session) = flow.create_session(flow.hubspot_session()).await;
    let callback = flow.to_callback(session["url"].as_str().unwrap()).await;
    sqlx::query(
        "UPDATE connect_sessions SET expires_at = '2000-01-01T00:00:00.000Z' WHERE id = $1",
    )
    .bind(session["id"].as_str().unwrap())
    .execute(flow.rig.lane.store.pool())
    .await
    .unwrap();
    let back = flow.browse(callback.as_str(), "approve").await;
    assert_eq!(
        (
            param(&back, "status").as_deref(),
            param(&back, "reason").as_deref()
        ),
        (Some("error"), Some("expired"))
    );

    // A code the provider does not know.
    let (_, session) = flow.create_session(flow.hubspot_session()).await;
    let mut callback = flow.to_callback(session["url"].as_str().unwrap()).await;
    let pairs: Vec<(String, String)> = callback
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == "code" {
                "sbx-code-forged".into()
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    callback.query_pairs_mut().clear().extend_pairs(pairs);
    let back = flow.browse(callback.as_str(), "approve").await;
    assert_eq!(
        param(&back, "reason").as_deref(),
        Some("code_exchange_failed")
    );
    let shown = flow.session_state(session["id"].as_str().unwrap()).await;
    assert_eq!(
        (shown["state"].clone(), shown["reason"].clone()),
        (json!("failed"), json!("code_exchange_failed"))
    );
    assert_eq!(
        flow.connections().await,
        before + 1,
        "no connection from a failed flow"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_identity_that_cannot_be_captured_stores_nothing() {
    // The provider's access-token info endpoint is gone.
    let flow = Flow::start_with(|p| p.oauth.as_mut().unwrap().identity.clear()).await;
    let before = flow.connections().await;
    let (_, session) = flow.create_session(flow.hubspot_session()).await;
    let back = flow
        .press_connect(session["url"].as_str().unwrap(), "hubspot")
        .await;
    assert_eq!(
        param(&back, "reason").as_deref(),
        Some("identity_capture_failed"),
        "{back}"
    );
    assert_eq!(flow.connections().await, before);
    let dump = tributary_e2e::dump_database(&flow.rig.lane.store).await;
    assert!(
        !dump.contains("sbx-rt-"),
        "no credential from the exchange was written"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_that_needs_reauth_is_healthy_again_and_syncs() {
    let flow = Flow::start().await;
    let lane = &flow.rig.lane;
    lane.store
        .set_connection_state(
            &lane.connection,
            tributary::domain::ConnectionState::NeedsReauth,
            Some("invalid_grant"),
        )
        .await
        .unwrap();
    let old = lane.store.connection(&lane.connection).await.unwrap();
    let mut statuses = TopicReader::new(&lane.brokers, &lane.topics.status());
    let mut body = flow.hubspot_session();
    body["connection"] = json!(lane.connection);
    let (status, session) = flow.create_session(body).await;
    assert_eq!(status, StatusCode::CREATED, "{session}");
    let html = flow
        .http
        .get(session["url"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("Sign in again"), "{html}");

    let back = flow
        .press_connect(session["url"].as_str().unwrap(), "hubspot")
        .await;
    assert_eq!(
        param(&back, "connection_id").as_deref(),
        Some(lane.connection.as_str())
    );
    let now = lane.store.connection(&lane.connection).await.unwrap();
    assert_eq!(now.state, tributary::domain::ConnectionState::Healthy);
    assert_ne!(
        now.credentials.get("refresh_token"),
        old.credentials.get("refresh_token")
    );
    statuses.read_until(Duration::from_secs(30), "connection.reauthorized", |all| {
        values(all)
            .iter()
            .any(|e| e["type"] == "connection.reauthorized")
    });

    // The next sync runs with the new credentials.
    let _worker = flow.rig.worker(|_| {});
    let resync = flow
        .http
        .post(format!(
            "{}/v1/connections/{}/resync",
            flow.base, lane.connection
        ))
        .bearer_auth(ADMIN)
        .json(&json!({"full": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(resync.status(), StatusCode::ACCEPTED);
    statuses.read_until(Duration::from_secs(60), "run.completed", |all| {
        values(all)
            .iter()
            .any(|e| e["type"] == "run.completed" && e["connection"] == lane.connection.as_str())
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_cannot_reach_another_tenants_connection() {
    let flow = Flow::start().await;
    let lane = &flow.rig.lane;
    lane.store.create_tenant("beta").await.unwrap();
    let mut body = flow.hubspot_session();
    body["tenant"] = json!("beta");
    body["connection"] = json!(lane.connection);
    let (status, answer) = flow.create_session(body).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
}

#[tokio::test(flavor = "multi_thread")]
async fn salesforce_gives_its_instance_url_and_org_and_takes_a_pkce_verifier() {
    let flow = Flow::start().await;
    let sbx = flow.provider_sandbox("salesforce.yaml").await;
    let base = sbx.base_url();
    let config = json!({"base_url": base, "token_url": format!("{base}/services/oauth2/token"),
                        "authorize_url": format!("{base}/services/oauth2/authorize")});
    let session = flow
        .session_for("salesforce", Some(json!(["contacts"])), config)
        .await;
    let back = flow
        .press_connect(session["url"].as_str().unwrap(), "salesforce")
        .await;
    let conn = flow.connected(&back).await;
    assert_eq!(conn.external_id.as_deref(), Some("00D5j000000000AAA"));
    assert_eq!(
        conn.config["instance_url"],
        "https://sandbox.my.salesforce.com"
    );
    let stats = tributary_e2e::SandboxControl::new(base)
        .stats()
        .await
        .unwrap();
    assert_eq!(
        (stats.code_exchanges, stats.pkce_failures),
        (1, 0),
        "the verifier matched its challenge"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn quickbooks_gives_the_company_id_on_the_callback() {
    let flow = Flow::start().await;
    let sbx = flow.provider_sandbox("quickbooks.yaml").await;
    let base = sbx.base_url();
    let config = json!({"base_url": base, "token_url": format!("{base}/oauth2/v1/tokens/bearer"),
                        "authorize_url": format!("{base}/connect/oauth2")});
    let session = flow.session_for("quickbooks", None, config).await;
    let back = flow
        .press_connect(session["url"].as_str().unwrap(), "quickbooks")
        .await;
    let conn = flow.connected(&back).await;
    assert_eq!(conn.external_id.as_deref(), Some("4620816365"));
    assert_eq!(conn.config["realm_id"], "4620816365");
    assert_eq!(
        conn.resources,
        vec!["customers".to_string(), "invoices".to_string()]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_api_key_provider_is_connected_through_the_form() {
    let flow = Flow::start().await;
    let (sbx, _) = tributary_e2e::shipped_sandbox("pipedrive.yaml", |_| {}).await;
    let (status, session) = flow
        .create_session(json!({
            "tenant": "acme", "provider": "pipedrive", "resources": ["persons"], "return_url": RETURN,
            "config": {"company_domain": "sandbox", "base_url": sbx.base_url()},
        }))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{session}");
    let url = session["url"].as_str().unwrap();
    let html = flow
        .http
        .get(url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains(r#"name="api_key" type="password""#), "{html}");
    assert!(html.contains("<label for="), "labelled inputs: {html}");

    let empty = flow
        .http
        .post(format!("{url}/credentials"))
        .form(&[("provider", "pipedrive"), ("api_key", " ")])
        .send()
        .await
        .unwrap();
    assert_eq!(empty.status(), StatusCode::BAD_REQUEST);
    assert!(empty.text().await.unwrap().contains("API token"));

    let sent = flow
        .http
        .post(format!("{url}/credentials"))
        .form(&[
            ("provider", "pipedrive"),
            ("api_key", "sandbox-pipedrive-token"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), StatusCode::SEE_OTHER);
    let back = Url::parse(sent.headers()["location"].to_str().unwrap()).unwrap();
    let id = param(&back, "connection_id").unwrap_or_else(|| panic!("{back}"));
    let conn = flow.rig.lane.store.connection(&id).await.unwrap();
    assert_eq!(
        conn.credentials.get("api_key"),
        Some("sandbox-pipedrive-token")
    );
    let again = flow
        .http
        .post(format!("{url}/credentials"))
        .form(&[("provider", "pipedrive"), ("api_key", "another")])
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::GONE, "the link works once");
}

/// Chromedriver on a free port, started and ready (it says so on stdout).
#[cfg(feature = "process-tests")]
async fn chromedriver() -> (tokio::process::Child, String) {
    use tokio::io::AsyncBufReadExt;
    let port = tributary_e2e::broker::free_port();
    let mut child = tokio::process::Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("chromedriver (Debian package chromium-driver) is installed");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    while let Some(line) = lines.next_line().await.unwrap() {
        if line.contains("started successfully") {
            break;
        }
    }
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, format!("http://127.0.0.1:{port}"))
}

/// The whole flow in headless Chromium: the connect page, its button, the provider's
/// consent page, and the host product's page with the new connection's id. The connect
/// page's screenshot is kept in the test's target directory.
#[cfg(feature = "process-tests")]
#[tokio::test(flavor = "multi_thread")]
async fn a_user_connects_hubspot_in_a_real_browser() {
    use fantoccini::{ClientBuilder, Locator};
    let flow = Flow::start().await;
    let lane = &flow.rig.lane;
    let mut body = flow.hubspot_session();
    body["return_url"] = json!(flow.host_page);
    let (status, session) = flow.create_session(body).await;
    assert_eq!(status, StatusCode::CREATED, "{session}");

    let (_driver, webdriver) = chromedriver().await;
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({"binary": "/usr/bin/chromium",
               "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=900,900"]}),
    );
    // Chromedriver is on loopback: plain HTTP, no TLS.
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let browser = ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&webdriver)
        .await
        .expect("a Chromium session");

    browser
        .goto(session["url"].as_str().unwrap())
        .await
        .unwrap();
    let heading = browser
        .find(Locator::Css("h1"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(heading, "Connect HubSpot");
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("connect-page.png");
    std::fs::write(&shot, browser.screenshot().await.unwrap()).unwrap();
    eprintln!("connect page screenshot: {}", shot.display());

    browser
        .find(Locator::Id("connect-hubspot"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let approve = browser
        .wait()
        .for_element(Locator::Id("approve"))
        .await
        .unwrap();
    let consent = browser.source().await.unwrap();
    assert!(
        consent.contains("Portal 4711"),
        "the provider's consent page: {consent}"
    );
    approve.click().await.unwrap();

    let landed = browser
        .wait()
        .for_element(Locator::Id("connection"))
        .await
        .unwrap();
    let id = landed.text().await.unwrap();
    let url = browser.current_url().await.unwrap();
    assert!(url.as_str().starts_with(&flow.host_page), "{url}");
    assert_eq!(param(&url, "status").as_deref(), Some("connected"));
    browser.close().await.unwrap();

    let conn = lane.store.connection(&id).await.unwrap();
    assert_eq!(conn.external_id.as_deref(), Some("4711"));
    let mut contacts = TopicReader::new(&lane.brokers, &lane.topics.model("crm.contact"));
    flow.first_sync(&mut contacts, &id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn microsoft_graph_gives_the_directory_it_signed_in_to() {
    let flow = Flow::start().await;
    let sbx = flow.provider_sandbox("msgraph.yaml").await;
    let base = sbx.base_url();
    let config = json!({"tenant_id": "sandbox-tenant", "base_url": base,
                       "token_url": format!("{base}/sandbox-tenant/oauth2/v2.0/token"),
                       "authorize_url": format!("{base}/sandbox-tenant/oauth2/v2.0/authorize")});
    let session = flow
        .session_for("msgraph", Some(json!(["users", "groups"])), config)
        .await;
    let start = flow
        .http
        .get(format!(
            "{}/start?provider=msgraph",
            session["url"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap();
    let authorize = Url::parse(start.headers()["location"].to_str().unwrap()).unwrap();
    let scope = param(&authorize, "scope").unwrap();
    assert!(
        scope.contains("Group.Read.All") && scope.starts_with("offline_access"),
        "{scope}"
    );
    assert_eq!(
        param(&authorize, "code_challenge_method").as_deref(),
        Some("S256")
    );
    let back = flow.browse(authorize.as_str(), "approve").await;
    let conn = flow.connected(&back).await;
    assert_eq!(
        conn.external_id.as_deref(),
        Some("6f2b1c4e-9a3d-4e8b-b1f0-5c7d2e9a8b31")
    );
    assert_eq!(
        conn.config["tenant_id"],
        "6f2b1c4e-9a3d-4e8b-b1f0-5c7d2e9a8b31"
    );
}
