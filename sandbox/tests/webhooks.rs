//! Webhooks the sandbox sends, over real HTTP on loopback: a small receiver records every
//! request, and the test recomputes each provider's signature on its own (hmac, sha2) from
//! what arrived. Also: tampered deliveries fail that check, repeats keep their event ids,
//! retries follow non-2xx answers, Zendesk webhooks registered through its API get the
//! deliveries signed with their own secret, and the fetch-by-ids routes answer exactly the
//! records asked for.

mod common;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::Router;
use base64::Engine;
use hmac::{Hmac, Mac};
use reqwest::Method as M;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use common::{control, get, post, serve, HUBSPOT_TOKEN};

const QBO_TOKEN: &str = "sandbox-quickbooks-token";
const ZD_TOKEN: &str = "sandbox-zendesk-legacy-token";

/// One request the receiver got.
#[derive(Clone, Debug)]
struct Got {
    method: String,
    url: String,
    headers: HeaderMap,
    body: String,
}

impl Got {
    fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no header {name} in {:?}", self.headers))
            .to_str()
            .unwrap()
            .to_string()
    }
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }
}

#[derive(Default)]
struct Inbox {
    got: Mutex<Vec<Got>>,
    /// Statuses to answer, in order; 200 once they run out.
    plan: Mutex<VecDeque<u16>>,
}

struct Receiver {
    addr: SocketAddr,
    inbox: Arc<Inbox>,
    _task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
    fn got(&self) -> Vec<Got> {
        self.inbox.got.lock().unwrap().clone()
    }
    fn answer_with(&self, statuses: &[u16]) {
        *self.inbox.plan.lock().unwrap() = statuses.iter().copied().collect();
    }
}

async fn record(
    State(inbox): State<Arc<Inbox>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .to_string();
    inbox.got.lock().unwrap().push(Got {
        method: method.to_string(),
        url: format!("http://{host}{uri}"),
        headers,
        body: String::from_utf8(body.to_vec()).unwrap(),
    });
    let status = inbox.plan.lock().unwrap().pop_front().unwrap_or(200);
    (StatusCode::from_u16(status).unwrap(), "ok".into())
}

async fn receiver() -> Receiver {
    let inbox = Arc::new(Inbox::default());
    let app = Router::new().fallback(record).with_state(inbox.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Receiver {
        addr,
        inbox,
        _task: task,
    }
}

fn hmac_b64(key: &str, message: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(message.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

fn sha256_hex(message: &str) -> String {
    Sha256::digest(message.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

async fn send(sbx: &tributary_sandbox::SandboxHandle, body: Value) -> Value {
    let (status, answer) = control(sbx, M::POST, "webhooks/send", Some(body)).await;
    assert_eq!(status, 200, "{answer}");
    answer
}

const HUBSPOT_SECRET: &str = "sandbox-client-secret";

/// HubSpot v3 and v1 signatures, as a receiver checks them.
fn hubspot_v3_holds(g: &Got, secret: &str) -> bool {
    let ts = g.header("x-hubspot-request-timestamp");
    let expected = hmac_b64(secret, &format!("{}{}{}{ts}", g.method, g.url, g.body));
    expected == g.header("x-hubspot-signature-v3")
}

#[tokio::test]
async fn hubspot_deliveries_are_batched_and_signed_like_hubspot() {
    let sbx = serve("hubspot.yaml").await;
    let rx = receiver().await;
    let url = rx.url("/webhooks/hubspot");
    let answer = send(
        &sbx,
        json!({"url": url, "events": [
            {"resource": "contacts", "id": "1", "op": "updated"},
            {"resource": "contacts", "id": 2, "op": "created"},
            {"resource": "deals", "id": "3", "op": "deleted", "account": "999"}
        ]}),
    )
    .await;
    let deliveries = answer["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 1, "{answer}");
    assert_eq!(deliveries[0]["attempts"].as_array().unwrap().len(), 1);
    assert_eq!(deliveries[0]["attempts"][0]["status"], 200);
    let got = rx.got();
    assert_eq!(got.len(), 1);
    let g = &got[0];
    assert_eq!(g.method, "POST");
    assert!(hubspot_v3_holds(g, HUBSPOT_SECRET), "{g:?}");
    assert_eq!(
        g.header("x-hubspot-signature"),
        sha256_hex(&format!("{HUBSPOT_SECRET}{}", g.body))
    );
    assert_eq!(g.header("x-hubspot-signature-version"), "v1");
    let ts: i64 = g.header("x-hubspot-request-timestamp").parse().unwrap();
    assert!((now_ms() - ts).abs() < 5_000);
    assert!(g.header("content-type").starts_with("application/json"));

    let events = g.json();
    let events = events.as_array().unwrap();
    assert_eq!(events.len(), 3);
    let types: Vec<&str> = events
        .iter()
        .map(|e| e["subscriptionType"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "contact.propertyChange",
            "contact.creation",
            "deal.deletion"
        ]
    );
    assert_eq!(events[0]["portalId"], 4711);
    assert_eq!(events[2]["portalId"], 999);
    assert_eq!(events[0]["objectId"], 1);
    assert_eq!(events[0]["attemptNumber"], 0);
    assert_eq!(events[0]["propertyName"], "email");
    let (_, contacts) = control(&sbx, M::GET, "resources/contacts", None).await;
    assert_eq!(
        events[0]["propertyValue"],
        contacts["records"][0]["properties"]["email"]
    );
    assert_eq!(events[1]["changeFlag"], "CREATED");
    for e in events {
        assert!(e["eventId"].is_u64(), "{e}");
        assert!(e["occurredAt"].is_i64(), "{e}");
        for k in ["subscriptionId", "appId", "changeSource", "sourceId"] {
            assert!(e.get(k).is_some(), "{k} missing in {e}");
        }
    }
    let ids: Vec<Value> = events
        .iter()
        .map(|e| json!(e["eventId"].to_string()))
        .collect();
    assert_eq!(deliveries[0]["event_ids"], json!(ids));

    let (_, stats) = control(&sbx, M::GET, "stats", None).await;
    assert_eq!(stats["webhooks_sent"], 1);
    assert_eq!(stats["webhook_attempts"], 1);
}

#[tokio::test]
async fn tampered_deliveries_fail_the_receivers_check() {
    let sbx = serve("hubspot.yaml").await;
    let rx = receiver().await;
    let url = rx.url("/hooks");
    let event = json!([{"resource": "companies", "id": "4", "op": "updated"}]);
    for tamper in ["signature", "body", "wrong_key", "stale", "none"] {
        let mut req = json!({"url": url, "events": event});
        if tamper != "none" {
            req["tamper"] = json!(tamper);
        }
        send(&sbx, req).await;
        let g = rx.got().pop().unwrap();
        let ts: i64 = g.header("x-hubspot-request-timestamp").parse().unwrap();
        let age = now_ms() - ts;
        match tamper {
            "stale" => {
                assert!(
                    hubspot_v3_holds(&g, HUBSPOT_SECRET),
                    "stale is signed right"
                );
                assert!((595_000..610_000).contains(&age), "age {age}");
            }
            "none" => {
                assert!(hubspot_v3_holds(&g, HUBSPOT_SECRET));
                assert!(age < 5_000);
            }
            _ => {
                assert!(
                    !hubspot_v3_holds(&g, HUBSPOT_SECRET),
                    "{tamper} still verifies"
                );
                assert!(age < 5_000);
                assert!(serde_json::from_str::<Value>(&g.body).is_ok(), "{tamper}");
            }
        }
        if tamper == "wrong_key" {
            assert!(hubspot_v3_holds(&g, "sandbox-client-secret-not-the-key"));
        }
    }
    // An overriding key signs instead of the profile's.
    send(
        &sbx,
        json!({"url": url, "events": event, "secret": "another"}),
    )
    .await;
    assert!(hubspot_v3_holds(&rx.got().pop().unwrap(), "another"));
}

#[tokio::test]
async fn repeats_keep_event_ids_and_count_attempts() {
    let sbx = serve("hubspot.yaml").await;
    let rx = receiver().await;
    let answer = send(
        &sbx,
        json!({"url": rx.url("/h"), "times": 3, "events": [
            {"resource": "contacts", "id": "7", "op": "created"},
            {"resource": "contacts", "id": "8", "op": "deleted"}
        ]}),
    )
    .await;
    let deliveries = answer["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 3);
    assert!(deliveries
        .iter()
        .all(|d| d["event_ids"] == deliveries[0]["event_ids"]));
    let got = rx.got();
    assert_eq!(got.len(), 3);
    for (i, g) in got.iter().enumerate() {
        assert!(hubspot_v3_holds(g, HUBSPOT_SECRET));
        let events = g.json();
        assert_eq!(events[0]["attemptNumber"], i);
        assert_eq!(events[0]["eventId"], got[0].json()[0]["eventId"]);
        assert_eq!(events[1]["eventId"], got[0].json()[1]["eventId"]);
    }
    assert_ne!(
        got[0].body, got[1].body,
        "re-rendered with its attempt number"
    );

    // More than 100 events are split over several bodies.
    let many: Vec<Value> = (1..=150)
        .map(|i| json!({"resource": "contacts", "id": i, "op": "created"}))
        .collect();
    let answer = send(&sbx, json!({"url": rx.url("/h"), "events": many})).await;
    let sizes: Vec<usize> = answer["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["event_ids"].as_array().unwrap().len())
        .collect();
    assert_eq!(sizes, [100, 50]);
}

#[tokio::test]
async fn failed_deliveries_are_retried_until_answered() {
    let sbx = serve("hubspot.yaml").await;
    let rx = receiver().await;
    rx.answer_with(&[503, 500, 200]);
    let event = json!([{"resource": "deals", "id": "2", "op": "updated"}]);
    let answer = send(
        &sbx,
        json!({"url": rx.url("/h"), "events": event, "retry": {"attempts": 5, "delay_ms": 20}}),
    )
    .await;
    let attempts = answer["deliveries"][0]["attempts"].as_array().unwrap();
    let statuses: Vec<u64> = attempts
        .iter()
        .map(|a| a["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [503, 500, 200]);
    let got = rx.got();
    assert_eq!(got.len(), 3);
    let numbers: Vec<Value> = got
        .iter()
        .map(|g| g.json()[0]["attemptNumber"].clone())
        .collect();
    assert_eq!(numbers, [json!(0), json!(1), json!(2)]);
    assert!(got.iter().all(|g| hubspot_v3_holds(g, HUBSPOT_SECRET)));
    assert_eq!(
        got.iter()
            .map(|g| g.json()[0]["eventId"].clone())
            .collect::<Vec<_>>(),
        vec![got[0].json()[0]["eventId"].clone(); 3]
    );

    // HubSpot does not retry a 404.
    rx.answer_with(&[404, 200]);
    let answer = send(
        &sbx,
        json!({"url": rx.url("/h"), "events": event, "retry": {"attempts": 5, "delay_ms": 1}}),
    )
    .await;
    assert_eq!(
        answer["deliveries"][0]["attempts"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // A closed port: status 0 on every attempt.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let answer = send(
        &sbx,
        json!({"url": format!("http://{closed}/h"), "events": event, "retry": {"attempts": 2, "delay_ms": 1}}),
    )
    .await;
    let attempts = answer["deliveries"][0]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 3);
    assert!(attempts
        .iter()
        .all(|a| a["status"] == 0 && a["error"].is_string()));
    let (_, stats) = control(&sbx, M::GET, "stats", None).await;
    assert_eq!(stats["webhooks_sent"], 3);
    assert_eq!(stats["webhook_attempts"], 7);
}

const QBO_VERIFIER: &str = "sandbox-verifier-token";

#[tokio::test]
async fn quickbooks_signs_the_body_with_the_verifier_token_in_both_formats() {
    let sbx = serve("quickbooks.yaml").await;
    let rx = receiver().await;
    let events = json!([
        {"resource": "customers", "id": "1", "op": "updated"},
        {"resource": "invoices", "id": "5", "op": "created"},
        {"resource": "customers", "id": "9", "op": "deleted", "account": "123"}
    ]);
    send(&sbx, json!({"url": rx.url("/qbo"), "events": events})).await;
    let g = rx.got().pop().unwrap();
    assert_eq!(
        g.header("intuit-signature"),
        hmac_b64(QBO_VERIFIER, &g.body)
    );
    let body = g.json();
    let notes = body["eventNotifications"].as_array().unwrap();
    assert_eq!(notes.len(), 2, "{body}");
    assert_eq!(notes[0]["realmId"], "4620816365");
    let entities = notes[0]["dataChangeEvent"]["entities"].as_array().unwrap();
    assert_eq!(entities.len(), 2);
    assert_eq!(entities[0]["name"], "Customer");
    assert_eq!(entities[0]["id"], "1");
    assert_eq!(entities[0]["operation"], "Update");
    assert_eq!(entities[1]["name"], "Invoice");
    assert_eq!(entities[1]["operation"], "Create");
    assert!(entities[0]["lastUpdated"].is_string());
    assert_eq!(notes[1]["realmId"], "123");
    assert_eq!(
        notes[1]["dataChangeEvent"]["entities"][0]["operation"],
        "Delete"
    );

    let answer = send(
        &sbx,
        json!({"url": rx.url("/qbo"), "events": events, "format": "cloudevents"}),
    )
    .await;
    let g = rx.got().pop().unwrap();
    assert_eq!(
        g.header("intuit-signature"),
        hmac_b64(QBO_VERIFIER, &g.body)
    );
    let body = g.json();
    let envelopes = body.as_array().unwrap();
    assert_eq!(envelopes.len(), 3);
    assert_eq!(envelopes[0]["type"], "qbo.customer.updated.v1");
    assert_eq!(envelopes[1]["type"], "qbo.invoice.created.v1");
    assert_eq!(envelopes[2]["type"], "qbo.customer.deleted.v1");
    assert_eq!(envelopes[0]["specversion"], "1.0");
    assert_eq!(envelopes[0]["intuitentityid"], "1");
    assert_eq!(envelopes[0]["intuitaccountid"], "4620816365");
    assert!(envelopes[0]["source"]
        .as_str()
        .unwrap()
        .starts_with("intuit."));
    let ids: Vec<Value> = envelopes.iter().map(|e| e["id"].clone()).collect();
    assert_eq!(answer["deliveries"][0]["event_ids"], json!(ids));

    // Tampered bodies and keys do not verify.
    for tamper in ["body", "wrong_key", "signature"] {
        send(
            &sbx,
            json!({"url": rx.url("/qbo"), "events": events, "tamper": tamper}),
        )
        .await;
        let g = rx.got().pop().unwrap();
        assert_ne!(
            g.header("intuit-signature"),
            hmac_b64(QBO_VERIFIER, &g.body),
            "{tamper}"
        );
    }
    let (status, _) = control(
        &sbx,
        M::POST,
        "webhooks/send",
        Some(json!({"url": rx.url("/qbo"), "events": events, "format": "nope"})),
    )
    .await;
    assert_eq!(status, 400);
}

fn zendesk_holds(g: &Got, secret: &str) -> bool {
    let ts = g.header("x-zendesk-webhook-signature-timestamp");
    hmac_b64(secret, &format!("{ts}{}", g.body)) == g.header("x-zendesk-webhook-signature")
}

#[tokio::test]
async fn zendesk_sends_one_event_per_request_signed_over_timestamp_and_body() {
    let sbx = serve("zendesk.yaml").await;
    let rx = receiver().await;
    let answer = send(
        &sbx,
        json!({"url": rx.url("/zd"), "events": [
            {"resource": "tickets", "id": 3, "op": "updated"},
            {"resource": "tickets", "id": 4, "op": "created"}
        ]}),
    )
    .await;
    assert_eq!(answer["deliveries"].as_array().unwrap().len(), 2);
    let got = rx.got();
    assert_eq!(got.len(), 2);
    for g in &got {
        assert!(zendesk_holds(g, "sandbox-zendesk-signing-secret"), "{g:?}");
        let ts = g.header("x-zendesk-webhook-signature-timestamp");
        let parsed = chrono::DateTime::parse_from_rfc3339(&ts).unwrap();
        assert!(ts.ends_with('Z') && ts.len() == 20, "{ts}");
        assert!((now_ms() - parsed.timestamp_millis()).abs() < 5_000);
        assert!(!g.header("x-zendesk-webhook-id").is_empty());
    }
    let first = got[0].json();
    assert_eq!(first["type"], "zen:event-type:ticket.status_changed");
    assert_eq!(first["subject"], "zen:ticket:3");
    assert_eq!(first["account_id"], 9001234);
    assert_eq!(first["detail"]["id"], "3");
    assert!(first["zendesk_event_version"].is_string());
    assert!(first["event"]["current"].is_string());
    assert_eq!(got[1].json()["type"], "zen:event-type:ticket.created");
    assert_eq!(answer["deliveries"][0]["event_ids"], json!([first["id"]]));

    send(&sbx, json!({"url": rx.url("/zd"), "events": [{"resource": "tickets", "id": 3, "op": "deleted"}], "tamper": "stale"})).await;
    let g = rx.got().pop().unwrap();
    assert!(zendesk_holds(&g, "sandbox-zendesk-signing-secret"));
    assert_eq!(g.json()["type"], "zen:event-type:ticket.soft_deleted");
    let ts =
        chrono::DateTime::parse_from_rfc3339(&g.header("x-zendesk-webhook-signature-timestamp"))
            .unwrap();
    assert!(now_ms() - ts.timestamp_millis() > 590_000);
}

async fn zd(
    sbx: &tributary_sandbox::SandboxHandle,
    method: M,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new().request(method, format!("{}{path}", sbx.base_url()));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[tokio::test]
async fn zendesk_webhooks_registered_through_the_api_get_deliveries_signed_with_their_secret() {
    let sbx = serve("zendesk.yaml").await;
    let rx = receiver().await;
    let webhook = json!({"webhook": {
        "name": "Tributary", "status": "active", "endpoint": rx.url("/zd/hook"),
        "http_method": "POST", "request_format": "json",
        "subscriptions": ["zen:event-type:ticket.created", "zen:event-type:ticket.status_changed"]
    }});
    // Without credentials, or without a required field, refused as the API refuses.
    let (status, _) = zd(&sbx, M::POST, "/webhooks", None, Some(webhook.clone())).await;
    assert_eq!(status, 401);
    let mut missing = webhook.clone();
    missing["webhook"]
        .as_object_mut()
        .unwrap()
        .remove("endpoint");
    let (status, body) = zd(&sbx, M::POST, "/webhooks", Some(ZD_TOKEN), Some(missing)).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["errors"][0]["source"]["pointer"], "/webhook/endpoint",
        "{body}"
    );
    let mut get_method = webhook.clone();
    get_method["webhook"]["http_method"] = json!("GET");
    let (status, _) = zd(&sbx, M::POST, "/webhooks", Some(ZD_TOKEN), Some(get_method)).await;
    assert_eq!(status, 400);
    let (status, _) = zd(
        &sbx,
        M::POST,
        "/webhooks",
        Some(ZD_TOKEN),
        Some(json!({"name": "x"})),
    )
    .await;
    assert_eq!(status, 400);

    let (status, created) = zd(
        &sbx,
        M::POST,
        "/webhooks",
        Some(ZD_TOKEN),
        Some(webhook.clone()),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["webhook"]["id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 26);
    for k in [
        "name",
        "status",
        "endpoint",
        "http_method",
        "request_format",
        "subscriptions",
        "created_at",
    ] {
        assert!(
            created["webhook"].get(k).is_some(),
            "{k} missing in {created}"
        );
    }
    assert!(created["webhook"]
        .get("signing_secret")
        .is_none_or(|s| s["secret"].is_null()));
    let (status, secret) = zd(
        &sbx,
        M::GET,
        &format!("/webhooks/{id}/signing_secret"),
        Some(ZD_TOKEN),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(secret["signing_secret"]["algorithm"], "SHA256");
    let secret = secret["signing_secret"]["secret"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(secret.len() >= 32);
    let (_, list) = zd(&sbx, M::GET, "/webhooks", Some(ZD_TOKEN), None).await;
    assert_eq!(list["webhooks"][0]["id"], id.as_str());
    let (_, shown) = zd(
        &sbx,
        M::GET,
        &format!("/webhooks/{id}"),
        Some(ZD_TOKEN),
        None,
    )
    .await;
    assert_eq!(shown["webhook"]["endpoint"], rx.url("/zd/hook"));
    let (_, subs) = control(&sbx, M::GET, "webhooks/subscriptions", None).await;
    assert_eq!(
        subs,
        json!({"subscriptions": [{"id": id, "endpoint": rx.url("/zd/hook"), "status": "active"}]})
    );

    // A send without a URL goes to the registered webhook, signed with its secret.
    let answer = send(
        &sbx,
        json!({"events": [{"resource": "tickets", "id": 5, "op": "created"}]}),
    )
    .await;
    assert_eq!(answer["deliveries"][0]["subscription_id"], id.as_str());
    let got = rx.got();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].url, rx.url("/zd/hook"));
    assert!(zendesk_holds(&got[0], &secret));
    assert!(!zendesk_holds(&got[0], "sandbox-zendesk-signing-secret"));
    assert_eq!(got[0].header("x-zendesk-webhook-id"), id);
    // It subscribed to ticket.created and ticket.status_changed only: no soft_deleted event.
    let answer = send(
        &sbx,
        json!({"events": [{"resource": "tickets", "id": 5, "op": "deleted"}]}),
    )
    .await;
    assert_eq!(answer["deliveries"], json!([]));
    assert_eq!(rx.got().len(), 1);

    let (status, _) = zd(
        &sbx,
        M::DELETE,
        &format!("/webhooks/{id}"),
        Some(ZD_TOKEN),
        None,
    )
    .await;
    assert_eq!(status, 204);
    let (status, body) = zd(
        &sbx,
        M::GET,
        &format!("/webhooks/{id}/signing_secret"),
        Some(ZD_TOKEN),
        None,
    )
    .await;
    assert_eq!(status, 404, "{body}");
    let (status, _) = control(
        &sbx,
        M::POST,
        "webhooks/send",
        Some(json!({"events": [{"resource": "tickets", "id": 5, "op": "created"}]})),
    )
    .await;
    assert_eq!(status, 400, "nothing registered any more");
}

#[tokio::test]
async fn hubspot_batch_read_answers_exactly_the_ids_asked_for() {
    let sbx = serve("hubspot.yaml").await;
    let url = format!("{}/crm/v3/objects/contacts/batch/read", sbx.base_url());
    let (status, page) = post(
        url.clone(),
        HUBSPOT_TOKEN,
        &json!({"inputs": [{"id": "5"}, {"id": "2"}], "properties": ["email"]}),
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["status"], "COMPLETE");
    assert!(page["startedAt"].is_string() && page["completedAt"].is_string());
    let ids: Vec<&str> = page["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["5", "2"]);
    let props: Vec<String> = page["results"][0]["properties"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    let mut props = props;
    props.sort();
    assert_eq!(
        props,
        ["createdate", "email", "hs_object_id", "lastmodifieddate"]
    );
    assert!(page.get("errors").is_none() && page.get("paging").is_none());

    let (status, page) = post(
        url.clone(),
        HUBSPOT_TOKEN,
        &json!({"inputs": [{"id": "3"}, {"id": "99999"}, {"id": "abc"}]}),
    )
    .await;
    assert_eq!(status, 207, "{page}");
    assert_eq!(page["results"].as_array().unwrap().len(), 1);
    assert_eq!(page["numErrors"], 1);
    assert_eq!(page["errors"][0]["category"], "OBJECT_NOT_FOUND");
    assert_eq!(page["errors"][0]["status"], "error");
    assert_eq!(page["errors"][0]["context"]["ids"], json!(["99999", "abc"]));

    let too_many: Vec<Value> = (1..=101).map(|i| json!({"id": i.to_string()})).collect();
    let (status, body) = post(url.clone(), HUBSPOT_TOKEN, &json!({"inputs": too_many})).await;
    assert_eq!(status, 400);
    assert_eq!(body["category"], "VALIDATION_ERROR");
    let (status, body) = post(
        url.clone(),
        HUBSPOT_TOKEN,
        &json!({"inputs": [{"id": "1"}], "limit": 5}),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        body["message"].as_str().unwrap().contains("\"limit\""),
        "{body}"
    );
    let (status, _) = post(
        url.clone(),
        HUBSPOT_TOKEN,
        &json!({"properties": ["email"]}),
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = post(url.clone(), "wrong", &json!({"inputs": [{"id": "1"}]})).await;
    assert_eq!(status, 401);
    // Deals and companies too; the listings are unchanged.
    let (status, page) = post(
        format!("{}/crm/v3/objects/deals/batch/read", sbx.base_url()),
        HUBSPOT_TOKEN,
        &json!({"inputs": [{"id": 1}]}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(page["results"][0]["id"], "1");
    let (_, list) = get(
        format!("{}/crm/v3/objects/companies?limit=3", sbx.base_url()),
        HUBSPOT_TOKEN,
    )
    .await;
    assert_eq!(list["results"].as_array().unwrap().len(), 3);
    assert!(list["paging"]["next"]["after"].is_string());
}

#[tokio::test]
async fn quickbooks_query_reads_where_id_in() {
    let sbx = serve("quickbooks.yaml").await;
    let q = |query: &str| {
        let mut url =
            reqwest::Url::parse(&format!("{}/v3/company/4620816365/query", sbx.base_url()))
                .unwrap();
        url.query_pairs_mut().append_pair("query", query);
        url.to_string()
    };
    let (status, body) = get(
        q("select * from Customer where Id in ('1', '3','77777')"),
        QBO_TOKEN,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let ids: Vec<&str> = body["QueryResponse"]["Customer"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["Id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["1", "3"]);
    let (_, body) = get(q("select * from Invoice where Id = '4'"), QBO_TOKEN).await;
    assert_eq!(
        body["QueryResponse"]["Invoice"].as_array().unwrap().len(),
        1
    );
    let (_, body) = get(q("SELECT * FROM Customer WHERE Id IN ('88888')"), QBO_TOKEN).await;
    assert_eq!(body["QueryResponse"], json!({}), "{body}");
    let (_, body) = get(q("select * from Customer"), QBO_TOKEN).await;
    assert_eq!(
        body["QueryResponse"]["Customer"].as_array().unwrap().len(),
        63
    );
}

#[tokio::test]
async fn zendesk_show_many_answers_the_tickets_asked_for() {
    let sbx = serve("zendesk.yaml").await;
    let (status, body) = get(
        format!("{}/tickets/show_many.json?ids=2,1,9999", sbx.base_url()),
        ZD_TOKEN,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let ids: Vec<u64> = body["tickets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [2, 1]);
    let many: Vec<String> = (1..=101).map(|i| i.to_string()).collect();
    let (status, _) = get(
        format!(
            "{}/tickets/show_many.json?ids={}",
            sbx.base_url(),
            many.join(",")
        ),
        ZD_TOKEN,
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = get(
        format!("{}/tickets/show_many.json", sbx.base_url()),
        ZD_TOKEN,
    )
    .await;
    assert_eq!(status, 400);
    let (status, body) = get(
        format!("{}/tickets.json?page[size]=5", sbx.base_url()),
        ZD_TOKEN,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["tickets"].as_array().unwrap().len(), 5);
}
