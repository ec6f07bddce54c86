//! Microsoft Graph change notifications on the in-process rig and the Graph sandbox: a
//! connection created through the API gets its subscription (the sandbox validates the URL
//! with Graph's validationToken handshake first; the clientState is a secret Tributary
//! made), notifications carrying that clientState become one `updated` per user, a wrong
//! clientState is refused with 401, a `missed` lifecycle notice becomes an incremental
//! run, the upkeep renews an expiring subscription with PATCH, and deleting the connection
//! deletes the subscription.

mod common;

use std::time::Duration;

use chrono::Utc;
use serde_json::{json, Value};
use tributary::bus::{Job, JobReason};
use tributary::connect::apps::Apps;
use tributary::domain::RunMode;
use tributary_e2e::broker::TopicReader;
use tributary_e2e::inprocess::InProcess;
use tributary_e2e::pipeline::wait_run_end;
use tributary_e2e::shipped_sandbox;

const ADMIN: &str = "admin-token-for-graph-webhook-tests";
const GRAPH_TOKEN: &str = "sandbox-msgraph-token";
const WAIT: Duration = Duration::from_secs(30);

async fn call(
    method: reqwest::Method,
    url: String,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .request(method, url)
        .bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn first_status(answer: &Value) -> Value {
    answer["deliveries"][0]["attempts"][0]["status"].clone()
}

/// Read run ends until one not in `seen` completes; returns its status event.
fn next_run_end(statuses: &mut TopicReader, seen: &mut Vec<String>) -> Value {
    let is_new_end = |v: &Value, seen: &[String]| {
        v["type"] == "run.completed" && !seen.iter().any(|s| v["sync_run"] == s.as_str())
    };
    statuses.read_until(WAIT, "a new run's end", |all| {
        all.iter()
            .any(|r| r.value.as_ref().is_some_and(|v| is_new_end(v, seen)))
    });
    let end = statuses
        .received
        .iter()
        .filter_map(|r| r.value.clone())
        .find(|v| is_new_end(v, seen))
        .unwrap();
    seen.push(end["sync_run"].as_str().unwrap().to_string());
    end
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn graph_subscriptions_are_validated_verified_renewed_and_removed() {
    let rig = InProcess::start(1).await;
    let lane = &rig.lane;
    let (sbx, ctl) = shipped_sandbox("msgraph.yaml", |p| {
        p.resources.get_mut("users").unwrap().count = 30;
        p.rate_limit = None;
    })
    .await;
    let hooks = common::receiving(&rig, ADMIN, Apps::default(), true).await;
    let (base, syncer) = (hooks.base.clone(), hooks.syncer.clone());
    let _worker = rig.worker(|_| {});

    // The connection: its subscription made through the handshake, its secret never shown.
    let (status, created) = call(
        reqwest::Method::POST,
        format!("{base}/v1/connections"),
        ADMIN,
        Some(json!({"tenant": "acme", "provider": "msgraph",
            "config": {"tenant_id": "contoso.onmicrosoft.com", "base_url": sbx.base_url()},
            "credentials": {"access_token": GRAPH_TOKEN}, "resources": ["users"]})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["webhooks"]["registered"], true, "{created}");
    let conn = created["id"].as_str().unwrap().to_string();
    let subscription = created["webhooks"]["subscription_id"]
        .as_str()
        .unwrap()
        .to_string();
    let subs_url = format!("{}/v1.0/subscriptions", sbx.base_url());
    let (_, subs) = call(reqwest::Method::GET, subs_url.clone(), GRAPH_TOKEN, None).await;
    let subs = subs["value"].as_array().unwrap().clone();
    assert_eq!(subs.len(), 1, "{subs:?}");
    assert!(subs[0]["notificationUrl"]
        .as_str()
        .unwrap()
        .starts_with(&format!("{base}/webhooks/msgraph/")));
    assert_eq!(subs[0]["clientState"].as_str().unwrap().len(), 48);
    assert!(!created
        .to_string()
        .contains(subs[0]["clientState"].as_str().unwrap()));

    // The first run, then two changed users announced: one `updated` each.
    let topics = &lane.topics;
    let mut statuses = TopicReader::new(&lane.brokers, &topics.status());
    let mut events = TopicReader::new(&lane.brokers, &topics.model("directory.user"));
    let full = Job::new_run("acme", &conn, "users", RunMode::Full, JobReason::Schedule);
    lane.publisher.enqueue(topics, &full).await.unwrap();
    assert_eq!(
        wait_run_end(&mut statuses, &full.run_id, WAIT)["type"],
        "run.completed"
    );
    let mut seen_runs = vec![full.run_id.clone()];
    events.read_until(WAIT, "the first run", |r| r.len() >= 30);
    let changed = ctl.mutate("users", 2, 0, 0).await.unwrap();
    let evs: Vec<Value> = changed["updated"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| json!({"resource": "users", "id": id, "op": "updated"}))
        .collect();
    let answer = ctl.send_webhooks(json!({"events": evs})).await.unwrap();
    assert_eq!(first_status(&answer), 202, "{answer}");
    events.read_until(WAIT, "two updates", |r| r.len() >= 32);

    // A wrong clientState: refused, nothing published.
    let changed = ctl.mutate("users", 1, 0, 0).await.unwrap();
    let id = changed["updated"][0].clone();
    let answer = ctl
        .send_webhooks(json!({"events": [{"resource": "users", "id": id, "op": "updated"}], "tamper": "signature"}))
        .await
        .unwrap();
    assert_eq!(first_status(&answer), 401, "{answer}");

    // Graph says notifications were missed: an incremental run reads what changed (the
    // user the refused notification announced among it).
    let answer = ctl
        .send_webhooks(json!({"format": "lifecycle",
            "events": [{"resource": "users", "id": id, "op": "updated", "data": {"event": "missed"}}]}))
        .await
        .unwrap();
    assert_eq!(first_status(&answer), 202, "{answer}");
    let end = next_run_end(&mut statuses, &mut seen_runs);
    assert_eq!(end["type"], "run.completed", "{end}");
    events.read_until(WAIT, "the missed change", |r| r.len() >= 33);
    events.drain_for(Duration::from_secs(2));
    let ops: Vec<&str> = events
        .received
        .iter()
        .map(|m| m.value.as_ref().unwrap()["op"].as_str().unwrap())
        .collect();
    assert_eq!(ops.iter().filter(|o| **o == "created").count(), 30);
    assert_eq!(
        ops.iter().filter(|o| **o == "updated").count(),
        3,
        "{ops:?}"
    );

    // Renewal: an expiry within the spec's day of lead is extended with PATCH.
    lane.store
        .renew_channel(&conn, Some(Utc::now() + chrono::Duration::hours(1)))
        .await
        .unwrap();
    let renewed = syncer
        .upkeep_webhooks(&base, Duration::from_secs(86_400))
        .await
        .unwrap();
    assert_eq!(renewed, 1);
    let (_, sub) = call(
        reqwest::Method::GET,
        format!("{subs_url}/{subscription}"),
        GRAPH_TOKEN,
        None,
    )
    .await;
    let expiry =
        chrono::DateTime::parse_from_rfc3339(sub["expirationDateTime"].as_str().unwrap()).unwrap();
    assert!(expiry > Utc::now() + chrono::Duration::days(27), "{sub}");
    let health = lane.store.channel_health(&conn).await.unwrap().unwrap();
    assert!(health.expires_at.unwrap() > (Utc::now() + chrono::Duration::days(27)).to_rfc3339());

    // Deleting the connection deletes the subscription.
    let (status, body) = call(
        reqwest::Method::DELETE,
        format!("{base}/v1/connections/{conn}"),
        ADMIN,
        None,
    )
    .await;
    assert_eq!(status, 204, "{body}");
    let (status, _) = call(
        reqwest::Method::GET,
        format!("{subs_url}/{subscription}"),
        GRAPH_TOKEN,
        None,
    )
    .await;
    assert_eq!(status, 404);
}
