//! Pushed records, on the in-process rig and the Pipedrive sandbox: Pipedrive's v1 webhooks
//! carry the record itself (`current`, the API v1 shape), so a change is published from the
//! delivery with no read. A connection created through the API gets its webhook (HTTP Basic
//! credentials of Tributary's making, never shown); a pushed change is one `updated` event
//! and the sandbox serves no data request for it; a delivery held back and arriving after a
//! newer one is stale and publishes nothing; a pushed deletion is one `deleted`; wrong
//! credentials are refused with 401; a bulk update becomes an incremental run; deleting the
//! connection deletes the webhook.

mod common;

use std::time::Duration;

use serde_json::{json, Value};
use tributary::bus::{Job, JobReason};
use tributary::connect::apps::Apps;
use tributary::domain::RunMode;
use tributary_e2e::broker::TopicReader;
use tributary_e2e::inprocess::InProcess;
use tributary_e2e::pipeline::wait_run_end;
use tributary_e2e::shipped_sandbox;

const ADMIN: &str = "admin-token-for-pipedrive-webhook-tests";
const TOKEN: &str = "sandbox-pipedrive-token";
const WAIT: Duration = Duration::from_secs(30);
const PERSONS: usize = 20;

async fn call(method: reqwest::Method, url: String, body: Option<Value>) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .request(method, url)
        .bearer_auth(ADMIN);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn webhooks_at(sandbox: &str) -> Vec<Value> {
    let url = format!("{sandbox}/api/v1/webhooks?api_token={TOKEN}");
    let answer: Value = reqwest::get(url).await.unwrap().json().await.unwrap();
    answer["data"].as_array().cloned().unwrap_or_default()
}

fn first_status(answer: &Value) -> Value {
    answer["deliveries"][0]["attempts"][0]["status"].clone()
}

fn person(id: &Value, op: &str) -> Value {
    json!({"resource": "persons", "id": id, "op": op})
}

/// The events received so far, as (op, record id, updated_at).
fn seen(events: &TopicReader) -> Vec<(String, String, Value)> {
    (events.received.iter())
        .filter_map(|m| m.value.as_ref())
        .map(|v| {
            (
                v["op"].as_str().unwrap().to_string(),
                v["record_id"].as_str().unwrap().to_string(),
                v["data"]["updated_at"].clone(),
            )
        })
        .collect()
}

/// The sandbox's record as the API answers it: its `update_time` as the mapping writes it.
async fn updated_at_of(ctl: &tributary_e2e::SandboxControl, id: &Value) -> Value {
    let records = ctl.records("persons").await.unwrap();
    let (_, record) = (records.iter())
        .find(|(i, _)| json!(i) == *id)
        .expect("the record");
    json!(record["update_time"].as_str().unwrap().replace(' ', "T") + "Z")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pushed_records_are_applied_without_a_read_and_never_older_over_newer() {
    let rig = InProcess::start(1).await;
    let lane = &rig.lane;
    let (sbx, ctl) = shipped_sandbox("pipedrive.yaml", |p| {
        p.resources.get_mut("persons").unwrap().count = PERSONS as u64;
        p.rate_limit = None;
    })
    .await;
    let hooks = common::receiving(&rig, ADMIN, Apps::default(), true).await;
    let base = hooks.base.clone();
    let _worker = rig.worker(|_| {});

    // The connection: its webhook created with credentials the answer never shows.
    let (status, created) = call(
        reqwest::Method::POST,
        format!("{base}/v1/connections"),
        Some(json!({"tenant": "acme", "provider": "pipedrive",
            "config": {"company_domain": "sandbox", "base_url": sbx.base_url()},
            "credentials": {"api_key": TOKEN}, "resources": ["persons"]})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["webhooks"]["registered"], true, "{created}");
    let conn = created["id"].as_str().unwrap().to_string();
    let hooks = webhooks_at(&sbx.base_url()).await;
    assert_eq!(hooks.len(), 1, "{hooks:?}");
    let hook = &hooks[0];
    assert!(hook["subscription_url"]
        .as_str()
        .unwrap()
        .starts_with(&format!("{base}/webhooks/pipedrive/")));
    assert_eq!(
        (
            &hook["event_action"],
            &hook["event_object"],
            &hook["version"]
        ),
        (&json!("*"), &json!("*"), &json!("1.0"))
    );
    assert_eq!(hook["http_auth_user"], "tributary");
    let password = hook["http_auth_password"].as_str().unwrap();
    assert_eq!(password.len(), 48);
    assert!(!created.to_string().contains(password));

    // The first run.
    let topics = &lane.topics;
    let mut statuses = TopicReader::new(&lane.brokers, &topics.status());
    let mut events = TopicReader::new(&lane.brokers, &topics.model("crm.contact"));
    let full = Job::new_run("acme", &conn, "persons", RunMode::Full, JobReason::Schedule);
    lane.publisher.enqueue(topics, &full).await.unwrap();
    assert_eq!(
        wait_run_end(&mut statuses, &full.run_id, WAIT)["type"],
        "run.completed"
    );
    events.read_until(WAIT, "the first run", |r| r.len() >= PERSONS);

    // Two changes pushed: one `updated` each, as the provider has it, and no read.
    let reads = ctl.stats().await.unwrap().data_requests;
    let changed = ctl.mutate("persons", 2, 0, 0).await.unwrap();
    let ids: Vec<Value> = changed["updated"].as_array().unwrap().clone();
    let evs: Vec<Value> = ids.iter().map(|id| person(id, "updated")).collect();
    let answer = ctl.send_webhooks(json!({"events": evs})).await.unwrap();
    assert_eq!(first_status(&answer), 200, "{answer}");
    assert_eq!(
        answer["deliveries"].as_array().unwrap().len(),
        2,
        "{answer}"
    );
    events.read_until(WAIT, "two updates", |r| r.len() >= PERSONS + 2);
    for id in &ids {
        let pushed = seen(&events)
            .into_iter()
            .find(|(op, rid, _)| op == "updated" && json!(rid) == json!(id.to_string()))
            .unwrap_or_else(|| panic!("an update of {id}"));
        assert_eq!(pushed.2, updated_at_of(&ctl, id).await);
    }
    assert_eq!(ctl.stats().await.unwrap().data_requests, reads, "no read");

    // Out of order: a change held back by the provider arrives after a newer one. The
    // newer is published; the late older one is stale and publishes nothing.
    let one = ctl.mutate("persons", 1, 0, 0).await.unwrap()["updated"][0].clone();
    let held = ctl
        .send_webhooks(json!({"events": [person(&one, "updated")], "hold": true}))
        .await
        .unwrap();
    let older = updated_at_of(&ctl, &one).await;
    ctl.mutate("persons", 1, 0, 0).await.unwrap();
    let newer = updated_at_of(&ctl, &one).await;
    assert_ne!(older, newer);
    let answer = ctl
        .send_webhooks(json!({"events": [person(&one, "updated")]}))
        .await
        .unwrap();
    assert_eq!(first_status(&answer), 200, "{answer}");
    events.read_until(WAIT, "the newer change", |r| r.len() >= PERSONS + 3);
    let released = reqwest::Client::new()
        .post(format!("{}/_sandbox/webhooks/release", sbx.base_url()))
        .json(&json!({"held": held["held"]}))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(first_status(&released), 200, "{released}");

    // Pushed deletions (the two records changed first): one `deleted` each.
    let gone = ctl.mutate("persons", 0, 2, 0).await.unwrap()["deleted"].clone();
    assert_eq!(
        gone,
        json!(ids),
        "the sandbox deletes where it changed first"
    );
    let evs: Vec<Value> = ids.iter().map(|id| person(id, "deleted")).collect();
    let answer = ctl.send_webhooks(json!({"events": evs})).await.unwrap();
    assert_eq!(first_status(&answer), 200, "{answer}");
    events.read_until(WAIT, "the deletions", |r| r.len() >= PERSONS + 5);

    // Wrong credentials: 401.
    let changed = ctl.mutate("persons", 2, 0, 0).await.unwrap()["updated"].clone();
    let bulk = changed[0].clone();
    assert_ne!(bulk, one);
    let answer = ctl
        .send_webhooks(json!({"events": [person(&bulk, "updated")], "tamper": "wrong_key"}))
        .await
        .unwrap();
    assert_eq!(first_status(&answer), 401, "{answer}");

    // A bulk update: one incremental run reads what changed instead (both records).
    let answer = ctl
        .send_webhooks(json!({"events": [{"resource": "persons", "id": bulk,
            "op": "updated", "data": {"bulk": true}}]}))
        .await
        .unwrap();
    assert_eq!(first_status(&answer), 200, "{answer}");
    statuses.read_until(WAIT, "an incremental run", |all| {
        all.iter().any(|r| {
            r.value
                .as_ref()
                .is_some_and(|v| v["type"] == "run.completed" && v["mode"] == "incremental")
        })
    });
    events.read_until(WAIT, "the bulk changes", |r| r.len() >= PERSONS + 7);
    events.drain_for(Duration::from_secs(2));

    let all = seen(&events);
    let ops_of = |id: &Value| -> Vec<(String, Value)> {
        (all.iter())
            .filter(|(_, rid, _)| json!(rid) == json!(id.to_string()))
            .map(|(op, _, at)| (op.clone(), at.clone()))
            .collect()
    };
    let of_one = ops_of(&one);
    assert_eq!(of_one.len(), 2, "created, then the newer only: {of_one:?}");
    assert_eq!(
        of_one[1],
        ("updated".to_string(), newer),
        "the late older version changed nothing"
    );
    for id in &ids {
        let ops: Vec<String> = ops_of(id).into_iter().map(|(op, _)| op).collect();
        assert_eq!(ops, ["created", "updated", "deleted"], "{id}");
    }
    for id in changed.as_array().unwrap() {
        assert_eq!(
            ops_of(id).len(),
            2,
            "created, then read by the incremental run: {id}"
        );
    }
    assert_eq!(all.len(), PERSONS + 7, "{all:?}");

    // Deleting the connection deletes the webhook.
    let (status, body) = call(
        reqwest::Method::DELETE,
        format!("{base}/v1/connections/{conn}"),
        None,
    )
    .await;
    assert_eq!(status, 204, "{body}");
    assert!(webhooks_at(&sbx.base_url()).await.is_empty());
}
