//! Zendesk webhooks through the real processes: the scheduler binary registers each
//! connection's webhook through the (sandboxed) Zendesk Webhooks API when the connection
//! is created and removes it when the connection is deleted; the sandbox signs each
//! delivery with the webhook's own secret (timestamp + body); a worker binary (intake
//! and fetch jobs), tansu and PostgreSQL do the rest. Two accounts, each its own
//! connection: every announced change arrives once, at its own connection only; the
//! test prints the webhook-to-event latency (p50, p99) over 200 webhooks.
//!
//! Process-level tier: needs tansu and PostgreSQL (`.ci/run` starts them).
#![cfg(feature = "process-tests")]

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tributary::bus::{Job, JobReason};
use tributary::domain::RunMode;
use tributary_e2e::broker::TopicReader;
use tributary_e2e::outage::worker_binary;
use tributary_e2e::pipeline::{await_record_ops, wait_run_end, Rig, SCHEDULER_ADMIN_TOKEN};
use tributary_e2e::{fresh_postgres, shipped_sandbox, SandboxControl};

const ADMIN: &str = SCHEDULER_ADMIN_TOKEN;
const WAVES: usize = 20;
const PER_WAVE: usize = 10;

async fn api(method: reqwest::Method, url: String, body: Option<Value>) -> (u16, Value) {
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

/// The webhooks the sandbox account has registered.
async fn subscriptions(control: &SandboxControl) -> Vec<Value> {
    let v: Value = reqwest::get(format!(
        "{}/_sandbox/webhooks/subscriptions",
        control.base_url
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    v.as_array()
        .or_else(|| v["subscriptions"].as_array())
        .cloned()
        .unwrap_or_default()
}

/// A connection of tenant `acme` to a Zendesk account, created through the API.
async fn connect(base: &str, sandbox_url: &str) -> (String, Value) {
    let (status, created) = api(
        reqwest::Method::POST,
        format!("{base}/v1/connections"),
        Some(json!({
            "tenant": "acme",
            "provider": "zendesk",
            "config": {"subdomain": "acme", "base_url": sandbox_url},
            "credentials": {"access_token": "sandbox-zendesk-legacy-token"},
            "resources": ["tickets"],
        })),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    (created["id"].as_str().unwrap().to_string(), created)
}

fn updated_ids(changed: &Value, key: &str) -> Vec<String> {
    changed[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.to_string())
        .collect()
}

fn status_of(answer: &Value, delivery: usize) -> Value {
    answer["deliveries"][delivery]["attempts"][0]["status"].clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn zendesk_webhooks_registered_verified_routed_and_fetched_through_the_processes() {
    let rig = Rig::start("postgres", fresh_postgres().await, &worker_binary(), 1).await;
    let tickets = |p: &mut tributary_sandbox::Profile| {
        p.resources.get_mut("tickets").unwrap().count = 40;
        p.rate_limit = None;
    };
    let (sbx_a, ctl_a) = shipped_sandbox("zendesk.yaml", tickets).await;
    let (sbx_b, ctl_b) = shipped_sandbox("zendesk.yaml", tickets).await;
    let _worker = rig.worker(&[("TRIBUTARY_WEBHOOK_WINDOW_MS", "100".to_string())]);
    // Its TRIBUTARY_PUBLIC_URL is where each account's webhook is registered.
    let scheduler = rig
        .scheduler(env!("CARGO_BIN_EXE_tributary-scheduler"), &[])
        .await;
    let base = scheduler.base.clone();

    // Registration: one webhook per account, at the connection's own URL, no URL or
    // secret in the API's answer.
    let (conn_a, created) = connect(&base, &sbx_a.base_url()).await;
    let (conn_b, _) = connect(&base, &sbx_b.base_url()).await;
    assert_eq!(created["webhooks"]["registered"], true, "{created}");
    assert!(created["webhooks"].get("url").is_none(), "{created}");
    for ctl in [&ctl_a, &ctl_b] {
        let subs = subscriptions(ctl).await;
        assert_eq!(subs.len(), 1, "{subs:?}");
        let endpoint = subs[0]["endpoint"].as_str().unwrap();
        assert!(
            endpoint.starts_with(&format!("{base}/webhooks/zendesk/")),
            "{endpoint}"
        );
    }

    // The first full runs: every ticket created once.
    let topics = &rig.lane.topics;
    let mut statuses = TopicReader::new(&rig.lane.brokers, &topics.status());
    let mut events = TopicReader::new(&rig.lane.brokers, &topics.model("ticketing.ticket"));
    for conn in [&conn_a, &conn_b] {
        let job = Job::new_run("acme", conn, "tickets", RunMode::Full, JobReason::Schedule);
        rig.lane.publisher.enqueue(topics, &job).await.unwrap();
        let end = wait_run_end(&mut statuses, &job.run_id, Duration::from_secs(120));
        assert_eq!(end["type"], "run.completed", "{end}");
    }
    events.read_until(Duration::from_secs(60), "the first runs", |r| r.len() >= 80);
    events.drain_for(Duration::from_secs(1));
    assert_eq!(events.received.len(), 80);

    // 200 changes, each announced by its own signed delivery: one `updated` each.
    let mut latencies = Vec::new();
    for _ in 0..WAVES {
        let ids = updated_ids(
            &ctl_a.mutate("tickets", PER_WAVE, 0, 0).await.unwrap(),
            "updated",
        );
        let sent = Instant::now();
        let mut sends = Vec::new();
        for id in &ids {
            let (ctl, id) = (ctl_a.clone(), id.clone());
            sends.push(tokio::spawn(async move {
                ctl.send_webhooks(
                    json!({"events": [{"resource": "tickets", "id": id, "op": "updated"}]}),
                )
                .await
                .unwrap()
            }));
        }
        for s in sends {
            let answer = s.await.unwrap();
            assert_eq!(status_of(&answer, 0), 200, "{answer}");
        }
        let arrived = await_record_ops(&mut events, &conn_a, "updated", &ids);
        latencies.extend(arrived.values().map(|at| at.duration_since(sent)));
    }

    // The same delivery three times: one event.
    let ids = updated_ids(&ctl_a.mutate("tickets", 1, 0, 0).await.unwrap(), "updated");
    let answer = ctl_a
        .send_webhooks(
            json!({"events": [{"resource": "tickets", "id": ids[0], "op": "updated"}], "times": 3}),
        )
        .await
        .unwrap();
    for d in 0..3 {
        assert_eq!(status_of(&answer, d), 200, "{answer}");
    }
    await_record_ops(&mut events, &conn_a, "updated", &ids);

    // The other account's change reaches its own connection only.
    let ids = updated_ids(&ctl_b.mutate("tickets", 2, 0, 0).await.unwrap(), "updated");
    let evs: Vec<Value> = ids
        .iter()
        .map(|id| json!({"resource": "tickets", "id": id, "op": "updated"}))
        .collect();
    ctl_b.send_webhooks(json!({"events": evs})).await.unwrap();
    await_record_ops(&mut events, &conn_b, "updated", &ids);

    // Forgeries: refused with 401, nothing published. An unknown URL: 404.
    let ids = updated_ids(&ctl_a.mutate("tickets", 1, 0, 0).await.unwrap(), "updated");
    for tamper in ["signature", "body", "stale", "wrong_key"] {
        let answer = ctl_a
            .send_webhooks(json!({"events": [{"resource": "tickets", "id": ids[0], "op": "updated"}], "tamper": tamper}))
            .await
            .unwrap();
        assert_eq!(status_of(&answer, 0), 401, "{tamper}: {answer}");
    }
    let answer = ctl_a
        .send_webhooks(
            json!({"url": format!("{base}/webhooks/zendesk/not-a-hook-token"),
            "events": [{"resource": "tickets", "id": ids[0], "op": "updated"}]}),
        )
        .await
        .unwrap();
    assert_eq!(status_of(&answer, 0), 404, "{answer}");

    // A deletion announced and confirmed by a not-found fetch: one `deleted`.
    let gone = updated_ids(&ctl_a.mutate("tickets", 0, 1, 0).await.unwrap(), "deleted");
    ctl_a
        .send_webhooks(json!({"events": [{"resource": "tickets", "id": gone[0], "op": "deleted"}]}))
        .await
        .unwrap();
    await_record_ops(&mut events, &conn_a, "deleted", &gone);
    events.drain_for(Duration::from_secs(2));
    let after_first = 80 + WAVES * PER_WAVE + 1 + 2 + 1;
    assert_eq!(
        events.received.len(),
        after_first,
        "forged deliveries published nothing"
    );

    // Deleting a connection removes its webhook at the provider.
    let (status, body) = api(
        reqwest::Method::DELETE,
        format!("{base}/v1/connections/{conn_b}"),
        None,
    )
    .await;
    assert_eq!(status, 204, "{body}");
    assert!(subscriptions(&ctl_b).await.is_empty());
    assert_eq!(subscriptions(&ctl_a).await.len(), 1);
    let (status, _) = api(
        reqwest::Method::GET,
        format!("{base}/v1/connections/{conn_b}"),
        None,
    )
    .await;
    assert_eq!(status, 404);

    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    let unique: HashSet<_> = events
        .received
        .iter()
        .map(|m| m.value.as_ref().unwrap()["id"].to_string())
        .collect();
    assert_eq!(unique.len(), events.received.len(), "every event id once");
    eprintln!(
        "zendesk webhook -> event over {} webhooks: p50 {:?}, p99 {:?}, max {:?}",
        latencies.len(),
        at(0.50),
        at(0.99),
        latencies.last().unwrap()
    );
}
