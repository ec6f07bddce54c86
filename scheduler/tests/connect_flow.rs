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
}

impl Flow {
    async fn start() -> Flow {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let callback = format!("{base}/v1/connect/callback");
        let rig = InProcess::start_with(CONTACTS, |p| {
            let a = p.oauth.as_mut().unwrap().authorize.as_mut().unwrap();
            a.redirect_uris = vec![callback.clone()];
        })
        .await;
        let lane = &rig.lane;
        let settings = rig.settings();
        let apps = Apps::parse(
            "apps:\n  hubspot: {client_id: sandbox-client, client_secret_env: HS_SECRET}\n",
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
                    return_origins: vec!["https://app.example.com".into()],
                    ..ConnectSettings::default()
                },
                apps,
            },
        });
        tokio::spawn(async move { axum::serve(listener, router(state)).await });
        let http = reqwest::Client::builder()
            .redirect(redirect::Policy::none())
            .build()
            .unwrap();
        Flow { rig, base, http }
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
            let resp = if resp.status() == StatusCode::OK && next.path() == "/oauth/authorize" {
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

    // The first full sync is due at once: one tick enqueues it, a worker runs it.
    let _worker = flow.rig.worker(|_| {});
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
        |all| {
            values(all)
                .iter()
                .filter(|e| e["connection"] == id.as_str())
                .count()
                >= CONTACTS as usize
        },
    );

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
