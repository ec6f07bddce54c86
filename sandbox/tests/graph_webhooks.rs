//! Graph change notifications on the sandbox, over real HTTP on loopback: subscriptions
//! created through /v1.0/subscriptions only after the notification URL echoes the
//! validation token, renewed with PATCH, deleted; notifications batched per subscription
//! with its own clientState and only the change types it asked for; lifecycle
//! notifications; users read by id with `$filter=id in (...)`.
//!
//! The sandbox validates URLs while it answers the create, so these tests run on a
//! multi-threaded runtime: the receiver answers on another worker.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use reqwest::Method as M;
use serde_json::{json, Value};

use common::{control, serve};

const TOKEN: &str = "sandbox-msgraph-token";
const TENANT: &str = "6f2b1c4e-9a3d-4e8b-b1f0-5c7d2e9a8b31";

/// One request the receiver got.
#[derive(Clone, Debug)]
struct Got {
    method: String,
    path: String,
    /// The decoded query parameters.
    query: Vec<(String, String)>,
    headers: HeaderMap,
    body: String,
}

impl Got {
    fn param(&self, name: &str) -> Option<String> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }
    fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    }
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }
}

#[derive(Default)]
struct Inbox {
    got: Mutex<Vec<Got>>,
    /// Answer validation requests with something other than the token.
    refuse_validation: AtomicBool,
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
    fn clear(&self) {
        self.inbox.got.lock().unwrap().clear();
    }
    /// The notifications (not the validation requests) that arrived at `path`.
    fn notifications(&self, path: &str) -> Vec<Got> {
        self.got()
            .into_iter()
            .filter(|g| g.path == path && g.param("validationToken").is_none())
            .collect()
    }
}

/// A receiver as Graph wants one: a validation request is answered with its decoded
/// token as text/plain, a notification with 202.
async fn record(
    State(inbox): State<Arc<Inbox>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let query: Vec<(String, String)> =
        url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
    let got = Got {
        method: method.to_string(),
        path: uri.path().to_string(),
        query,
        headers,
        body: String::from_utf8(body.to_vec()).unwrap(),
    };
    let token = got.param("validationToken");
    inbox.got.lock().unwrap().push(got);
    match token {
        Some(t) if !inbox.refuse_validation.load(Ordering::SeqCst) => {
            (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], t).into_response()
        }
        Some(_) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain")],
            "not the token",
        )
            .into_response(),
        None => StatusCode::ACCEPTED.into_response(),
    }
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

/// A Graph request on the sandbox: (status, JSON body or null).
async fn graph(
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

fn in_minutes(minutes: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::minutes(minutes))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn millis(t: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(t.as_str().unwrap())
        .unwrap()
        .timestamp_millis()
}

/// The id Graph gives the sandbox's user number `n`.
fn user_id(n: u64) -> String {
    format!("6f1c0000-0000-4000-8000-{n:012}")
}

fn subscription(url: &str, change_type: &str, client_state: &str) -> Value {
    json!({
        "changeType": change_type,
        "notificationUrl": url,
        "resource": "users",
        "expirationDateTime": in_minutes(3 * 24 * 60),
        "clientState": client_state,
    })
}

async fn create(sbx: &tributary_sandbox::SandboxHandle, body: Value) -> Value {
    let (status, created) =
        graph(sbx, M::POST, "/v1.0/subscriptions", Some(TOKEN), Some(body)).await;
    assert_eq!(status, 201, "{created}");
    created
}

async fn send(sbx: &tributary_sandbox::SandboxHandle, body: Value) -> Value {
    let (status, answer) = control(sbx, M::POST, "webhooks/send", Some(body)).await;
    assert_eq!(status, 200, "{answer}");
    answer
}

fn error_code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_are_refused_as_graph_refuses_them() {
    let sbx = serve("msgraph.yaml").await;
    let rx = receiver().await;
    let good = subscription(&rx.url("/graph/notify"), "updated,deleted", "s3cret");
    let post = |body: Value, token: Option<&'static str>| {
        let sbx = &sbx;
        async move { graph(sbx, M::POST, "/v1.0/subscriptions", token, Some(body)).await }
    };

    let (status, body) = post(good.clone(), None).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(error_code(&body), "InvalidAuthenticationToken");

    let mut missing = good.clone();
    missing
        .as_object_mut()
        .unwrap()
        .remove("expirationDateTime");
    let (status, body) = post(missing, Some(TOKEN)).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expirationDateTime"),
        "{body}"
    );

    for bad in [json!("next tuesday"), json!(12), json!(in_minutes(-5))] {
        let mut b = good.clone();
        b["expirationDateTime"] = bad.clone();
        let (status, body) = post(b, Some(TOKEN)).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body["error"]["message"].is_string(), "{body}");
    }
    // Users last at most 41760 minutes.
    let mut too_far = good.clone();
    too_far["expirationDateTime"] = json!(in_minutes(41760 + 10));
    let (status, body) = post(too_far, Some(TOKEN)).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("41760"),
        "{body}"
    );

    let mut unknown = good.clone();
    unknown["includeEverything"] = json!(true);
    let (status, body) = post(unknown, Some(TOKEN)).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(error_code(&body), "BadRequest", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("includeEverything"),
        "{body}"
    );

    let mut bad_type = good.clone();
    bad_type["changeType"] = json!("updated,renamed");
    let (status, _) = post(bad_type, Some(TOKEN)).await;
    assert_eq!(status, 400);
    let mut long_state = good.clone();
    long_state["clientState"] = json!("x".repeat(129));
    let (status, _) = post(long_state, Some(TOKEN)).await;
    assert_eq!(status, 400);
    let mut not_https = good.clone();
    not_https["notificationUrl"] = json!("http://example.com/hook");
    let (status, _) = post(not_https, Some(TOKEN)).await;
    assert_eq!(status, 400);
    // None of these reached the receiver: refusals come before the handshake.
    assert!(rx.got().is_empty(), "{:?}", rx.got());

    // A receiver that does not echo the token fails the handshake.
    rx.inbox.refuse_validation.store(true, Ordering::SeqCst);
    let (status, body) = post(good.clone(), Some(TOKEN)).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        ["ValidationError", "InvalidRequest"].contains(&error_code(&body)),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("Subscription validation request failed."),
        "{body}"
    );
    assert_eq!(rx.got().len(), 1);
    assert!(rx.got()[0].param("validationToken").is_some());
    // An unreachable lifecycle URL fails it too.
    rx.inbox.refuse_validation.store(false, Ordering::SeqCst);
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut lifecycle = good.clone();
    lifecycle["lifecycleNotificationUrl"] = json!(format!("http://{dead}/lifecycle"));
    let (status, body) = post(lifecycle, Some(TOKEN)).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(error_code(&body), "ValidationError", "{body}");

    let (status, list) = graph(&sbx, M::GET, "/v1.0/subscriptions", Some(TOKEN), None).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["value"], json!([]), "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_is_created_after_the_handshake_renewed_and_deleted() {
    let sbx = serve("msgraph.yaml").await;
    let rx = receiver().await;
    let url = rx.url("/graph/notify?tenant=acme");
    let lifecycle_url = rx.url("/graph/lifecycle");
    let mut body = subscription(&url, "updated,deleted", "s3cret");
    body["lifecycleNotificationUrl"] = json!(lifecycle_url);
    let created = create(&sbx, body.clone()).await;

    // Both URLs got the handshake: a POST, text/plain, empty body, the token in the query
    // (next to the URL's own parameters).
    let got = rx.got();
    assert_eq!(got.len(), 2, "{got:?}");
    for (g, path) in got.iter().zip(["/graph/notify", "/graph/lifecycle"]) {
        assert_eq!(g.method, "POST");
        assert_eq!(g.path, path);
        assert!(g.header("content-type").starts_with("text/plain"), "{g:?}");
        assert!(g.body.is_empty());
        let token = g.param("validationToken").unwrap();
        assert!(token.len() > 30, "{token}");
    }
    assert_eq!(got[0].param("tenant").as_deref(), Some("acme"));
    assert_ne!(
        got[0].param("validationToken"),
        got[1].param("validationToken")
    );

    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 36, "{created}");
    assert_eq!(id.matches('-').count(), 4, "{created}");
    assert_eq!(created["resource"], "users");
    assert_eq!(created["changeType"], "updated,deleted");
    assert_eq!(created["clientState"], "s3cret");
    assert_eq!(created["notificationUrl"], url);
    assert_eq!(created["lifecycleNotificationUrl"], lifecycle_url);
    assert_eq!(created["latestSupportedTlsVersion"], "v1_2");
    assert_eq!(created["includeResourceData"], false);
    assert_eq!(created["notificationUrlAppId"], Value::Null);
    assert!(created["applicationId"].is_string());
    assert!(created["creatorId"].is_string());
    assert_eq!(
        millis(&created["expirationDateTime"]),
        millis(&body["expirationDateTime"])
    );

    let (status, shown) = graph(
        &sbx,
        M::GET,
        &format!("/v1.0/subscriptions/{id}"),
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["id"], id.as_str());
    let (status, _) = graph(
        &sbx,
        M::GET,
        &format!("/v1.0/subscriptions/{id}"),
        None,
        None,
    )
    .await;
    assert_eq!(status, 401);

    // Renewal.
    let later = in_minutes(5 * 24 * 60);
    let (status, renewed) = graph(
        &sbx,
        M::PATCH,
        &format!("/v1.0/subscriptions/{id}"),
        Some(TOKEN),
        Some(json!({"expirationDateTime": later})),
    )
    .await;
    assert_eq!(status, 200, "{renewed}");
    assert_eq!(
        millis(&renewed["expirationDateTime"]),
        millis(&json!(later))
    );
    assert_eq!(renewed["clientState"], "s3cret");
    assert_eq!(renewed["changeType"], "updated,deleted");
    let (_, shown) = graph(
        &sbx,
        M::GET,
        &format!("/v1.0/subscriptions/{id}"),
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(shown["expirationDateTime"], renewed["expirationDateTime"]);
    // A renewal less than 45 minutes ahead is moved to 45 minutes.
    let (status, soon) = graph(
        &sbx,
        M::PATCH,
        &format!("/v1.0/subscriptions/{id}"),
        Some(TOKEN),
        Some(json!({"expirationDateTime": in_minutes(5)})),
    )
    .await;
    assert_eq!(status, 200, "{soon}");
    let ahead = millis(&soon["expirationDateTime"]) - chrono::Utc::now().timestamp_millis();
    assert!((44 * 60_000..=46 * 60_000).contains(&ahead), "{soon}");
    for refused in [
        json!({"expirationDateTime": in_minutes(41760 + 10)}),
        json!({"expirationDateTime": in_minutes(-1)}),
        json!({"expirationDateTime": "soon"}),
        json!({"changeType": "created"}),
        json!({"expirationDateTime": later, "color": "blue"}),
    ] {
        let (status, body) = graph(
            &sbx,
            M::PATCH,
            &format!("/v1.0/subscriptions/{id}"),
            Some(TOKEN),
            Some(refused.clone()),
        )
        .await;
        assert_eq!(status, 400, "{refused}: {body}");
    }
    let (status, body) = graph(
        &sbx,
        M::PATCH,
        "/v1.0/subscriptions/00000000-0000-4000-8000-000000000000",
        Some(TOKEN),
        Some(json!({"expirationDateTime": later})),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(error_code(&body), "ResourceNotFound");

    let (status, list) = graph(&sbx, M::GET, "/v1.0/subscriptions", Some(TOKEN), None).await;
    assert_eq!(status, 200);
    assert_eq!(list["value"].as_array().unwrap().len(), 1, "{list}");

    let (status, _) = graph(
        &sbx,
        M::DELETE,
        &format!("/v1.0/subscriptions/{id}"),
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(status, 204);
    let (status, body) = graph(
        &sbx,
        M::GET,
        &format!("/v1.0/subscriptions/{id}"),
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(error_code(&body), "ResourceNotFound", "{body}");
    let (status, _) = graph(
        &sbx,
        M::DELETE,
        &format!("/v1.0/subscriptions/{id}"),
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_are_batched_per_subscription_with_its_client_state() {
    let sbx = serve("msgraph.yaml").await;
    let rx = receiver().await;
    let a = create(
        &sbx,
        subscription(&rx.url("/a"), "updated,deleted", "state-of-a"),
    )
    .await;
    let b = create(&sbx, subscription(&rx.url("/b"), "created", "state-of-b")).await;
    rx.clear();

    let answer = send(
        &sbx,
        json!({"events": [
            {"resource": "users", "id": 1, "op": "updated"},
            {"resource": "users", "id": "2", "op": "created"},
            {"resource": "users", "id": 3, "op": "deleted"}
        ]}),
    )
    .await;
    let deliveries = answer["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 2, "{answer}");
    for d in deliveries {
        assert_eq!(d["attempts"][0]["status"], 202, "{answer}");
    }

    let to_a = rx.notifications("/a");
    assert_eq!(to_a.len(), 1, "{to_a:?}");
    let g = &to_a[0];
    assert_eq!(g.method, "POST");
    assert!(g.header("content-type").starts_with("application/json"));
    assert!(
        !g.headers.keys().any(|k| k.as_str().contains("signature")),
        "{:?}",
        g.headers
    );
    let body = g.json();
    let value = body["value"].as_array().unwrap();
    assert_eq!(value.len(), 2, "{body}");
    let types: Vec<&str> = value
        .iter()
        .map(|n| n["changeType"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["updated", "deleted"]);
    let n = &value[0];
    assert_eq!(n["subscriptionId"], a["id"]);
    assert_eq!(n["subscriptionExpirationDateTime"], a["expirationDateTime"]);
    assert_eq!(n["clientState"], "state-of-a");
    assert_eq!(n["tenantId"], TENANT);
    assert_eq!(n["resource"], format!("Users/{}", user_id(1)));
    assert_eq!(
        n["resourceData"],
        json!({"@odata.type": "#Microsoft.Graph.User", "@odata.id": format!("Users/{}", user_id(1)),
               "id": user_id(1), "organizationId": TENANT})
    );
    assert_eq!(value[1]["resourceData"]["id"], user_id(3));
    // The ids are the users' own, as /v1.0/users answers them.
    let (_, users) = graph(
        &sbx,
        M::GET,
        "/v1.0/users?$select=id&$top=3",
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(users["value"][0]["id"], value[0]["resourceData"]["id"]);

    let to_b = rx.notifications("/b");
    assert_eq!(to_b.len(), 1, "{to_b:?}");
    let body = to_b[0].json();
    assert_eq!(body["value"].as_array().unwrap().len(), 1, "{body}");
    assert_eq!(body["value"][0]["changeType"], "created");
    assert_eq!(body["value"][0]["clientState"], "state-of-b");
    assert_eq!(body["value"][0]["subscriptionId"], b["id"]);
    assert_eq!(body["value"][0]["resourceData"]["id"], user_id(2));

    // Only changes nobody asked for: nothing is sent to b.
    rx.clear();
    let answer = send(
        &sbx,
        json!({"events": [{"resource": "users", "id": 4, "op": "updated"}]}),
    )
    .await;
    assert_eq!(
        answer["deliveries"].as_array().unwrap().len(),
        1,
        "{answer}"
    );
    assert_eq!(rx.notifications("/b").len(), 0);
    assert_eq!(rx.notifications("/a").len(), 1);

    // Tampered: a clientState the receiver does not know.
    rx.clear();
    send(
        &sbx,
        json!({"events": [{"resource": "users", "id": 5, "op": "updated"}], "tamper": "signature"}),
    )
    .await;
    let got = rx.notifications("/a");
    assert_eq!(got.len(), 1);
    let state = got[0].json()["value"][0]["clientState"].clone();
    assert!(state.is_string(), "{state}");
    assert_ne!(state, "state-of-a");

    // A deleted subscription gets nothing.
    let (status, _) = graph(
        &sbx,
        M::DELETE,
        &format!("/v1.0/subscriptions/{}", a["id"].as_str().unwrap()),
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(status, 204);
    rx.clear();
    send(
        &sbx,
        json!({"events": [{"resource": "users", "id": 6, "op": "created"}]}),
    )
    .await;
    assert_eq!(rx.notifications("/a").len(), 0);
    assert_eq!(rx.notifications("/b").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_notifications_go_to_the_lifecycle_url() {
    let sbx = serve("msgraph.yaml").await;
    let rx = receiver().await;
    let mut with_lifecycle = subscription(&rx.url("/notify"), "updated", "state-1");
    with_lifecycle["lifecycleNotificationUrl"] = json!(rx.url("/lifecycle"));
    let one = create(&sbx, with_lifecycle).await;
    // Graph writes seven fractional digits; they are read as well.
    let mut plain = subscription(&rx.url("/plain"), "updated", "state-2");
    plain["expirationDateTime"] = json!(in_minutes(600).replace('Z', "1234Z"));
    let two = create(&sbx, plain).await;
    rx.clear();

    send(
        &sbx,
        json!({"format": "lifecycle", "events": [
            {"resource": "users", "id": 1, "op": "updated", "data": {"event": "reauthorizationRequired"}}
        ]}),
    )
    .await;
    assert_eq!(rx.notifications("/notify").len(), 0);
    let got = rx.notifications("/lifecycle");
    assert_eq!(got.len(), 1, "{:?}", rx.got());
    let body = got[0].json();
    assert_eq!(
        body,
        json!({"value": [{
            "subscriptionId": one["id"],
            "subscriptionExpirationDateTime": one["expirationDateTime"],
            "lifecycleEvent": "reauthorizationRequired",
            "resource": "users",
            "clientState": "state-1",
            "tenantId": TENANT,
            "organizationId": TENANT
        }]})
    );
    // Without a lifecycle URL it goes to the notification URL; "missed" by default.
    let got = rx.notifications("/plain");
    assert_eq!(got.len(), 1);
    let n = &got[0].json()["value"][0];
    assert_eq!(n["lifecycleEvent"], "reauthorizationRequired");
    assert_eq!(n["subscriptionId"], two["id"]);
    assert_eq!(n["clientState"], "state-2");

    rx.clear();
    send(
        &sbx,
        json!({"format": "lifecycle", "events": [{"resource": "users", "id": 1, "op": "updated"}]}),
    )
    .await;
    assert_eq!(
        rx.notifications("/lifecycle")[0].json()["value"][0]["lifecycleEvent"],
        "missed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_are_read_by_id_with_filter_in() {
    let sbx = serve("msgraph.yaml").await;
    let list = |ids: Vec<String>, select: &str| {
        let quoted: Vec<String> = ids.iter().map(|i| format!("'{i}'")).collect();
        let mut url = reqwest::Url::parse(&format!("{}/v1.0/users", sbx.base_url())).unwrap();
        url.query_pairs_mut()
            .append_pair("$filter", &format!("id in ({})", quoted.join(",")));
        if !select.is_empty() {
            url.query_pairs_mut().append_pair("$select", select);
        }
        url.to_string()
    };
    let get = |url: String| async move {
        let resp = reqwest::Client::new()
            .get(url)
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
    };

    let asked = vec![
        user_id(7),
        user_id(3),
        "00000000-0000-4000-8000-000000000000".to_string(),
        user_id(9999),
        user_id(7),
    ];
    let (status, body) = get(list(asked, "id,displayName")).await;
    assert_eq!(status, 200, "{body}");
    let value = body["value"].as_array().unwrap();
    let ids: Vec<&str> = value.iter().map(|u| u["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [user_id(7), user_id(3)], "{body}");
    let keys: Vec<&String> = value[0].as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 2, "{body}");
    assert!(value[0]["displayName"].is_string());
    assert!(body.get("@odata.nextLink").is_none(), "{body}");

    // Without $select, Graph's default properties.
    let (status, body) = get(list(vec![user_id(1)], "")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["value"].as_array().unwrap().len(), 1);
    assert!(body["value"][0]["userPrincipalName"].is_string(), "{body}");

    // Fifteen ids are fine, sixteen are too many.
    let (status, body) = get(list((1..=15).map(user_id).collect(), "id")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["value"].as_array().unwrap().len(), 15);
    let (status, body) = get(list((1..=16).map(user_id).collect(), "id")).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(error_code(&body), "Request_UnsupportedQuery", "{body}");

    // Paging without the filter is as before.
    let (status, body) = get(format!("{}/v1.0/users?$top=5&$select=id", sbx.base_url())).await;
    assert_eq!(status, 200);
    assert_eq!(body["value"].as_array().unwrap().len(), 5);
    assert!(body["@odata.nextLink"].is_string(), "{body}");
}
