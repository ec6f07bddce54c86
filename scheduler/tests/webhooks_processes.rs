//! Webhooks through the real processes: the scheduler binary receiving, a worker binary
//! (intake and jobs), tansu and PostgreSQL, the HubSpot-shaped sandbox signing. 200
//! changes, each announced by its own signed delivery, arrive as one `updated` each; the
//! test prints the webhook-to-event latency (p50, p99) it measured.
//!
//! Process-level tier: needs tansu and PostgreSQL (`.ci/run` starts them).
#![cfg(feature = "process-tests")]

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use tributary::domain::RunMode;
use tributary_e2e::broker::free_port;
use tributary_e2e::outage::worker_binary;
use tributary_e2e::pipeline::Rig;
use tributary_e2e::rig::PipelineRig;
use tributary_e2e::{fresh_postgres, repo_root};

const WAVES: usize = 20;
const PER_WAVE: usize = 10;

struct Scheduler(Child);

impl Drop for Scheduler {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The scheduler binary on the rig's broker, database and topics, with the HubSpot app.
async fn scheduler(rig: &Rig) -> (Scheduler, String) {
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("tributary-webhooks-{port}"));
    std::fs::create_dir_all(&dir).unwrap();
    let apps = dir.join("apps.yaml");
    std::fs::write(
        &apps,
        "apps:\n  hubspot: {client_id: sandbox-client, client_secret: sandbox-client-secret}\n",
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_tributary-scheduler"))
        .arg("run")
        .current_dir(repo_root())
        .env("TRIBUTARY_API_ADDR", format!("127.0.0.1:{port}"))
        .env(
            "TRIBUTARY_ADMIN_TOKEN",
            "admin-token-for-webhook-process-tests",
        )
        .env("TRIBUTARY_KAFKA_BROKERS", &rig.broker.addr)
        .env("TRIBUTARY_DATABASE_URL", &rig.database_url)
        .env("TRIBUTARY_ENCRYPTION_KEY", &rig.key)
        .env("TRIBUTARY_SPECS_DIR", repo_root().join("provider-specs"))
        .env("TRIBUTARY_TOPIC_PREFIX", &rig.lane.topics.prefix)
        .env("TRIBUTARY_APPS_FILE", &apps)
        .env("TRIBUTARY_SCHEDULER_TICK_SECONDS", "3600")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("scheduler.log")).unwrap())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !matches!(http.get(format!("{base}/healthz")).send().await, Ok(r) if r.status().is_success())
    {
        assert!(Instant::now() < deadline, "the scheduler did not come up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (Scheduler(child), format!("{base}/webhooks/hubspot"))
}

#[tokio::test(flavor = "multi_thread")]
async fn two_hundred_announced_changes_arrive_once_each_through_the_processes() {
    let rig = Rig::start("postgres", fresh_postgres().await, &worker_binary(), 300).await;
    let lane = &rig.lane;
    lane.store
        .set_external_id(&lane.connection, Some("4711"))
        .await
        .unwrap();
    let _worker = rig.worker(&[("TRIBUTARY_WEBHOOK_WINDOW_MS", "100".to_string())]);
    let (_scheduler, url) = scheduler(&rig).await;
    let mut statuses = rig.statuses();
    rig.run_to_end(RunMode::Full, &mut statuses, Duration::from_secs(120))
        .await;
    let mut events = rig.events();
    events.read_until(Duration::from_secs(60), "the first run", |r| r.len() >= 300);
    let mut sent_at: HashMap<String, Instant> = HashMap::new();
    let mut latencies = Vec::new();
    for _ in 0..WAVES {
        let changed = lane
            .control
            .mutate("contacts", PER_WAVE, 0, 0)
            .await
            .unwrap();
        let ids: Vec<String> = changed["updated"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.to_string())
            .collect();
        let mut sends = Vec::new();
        for id in &ids {
            let (control, url, id) = (lane.control.clone(), url.clone(), id.clone());
            sent_at.insert(id.clone(), Instant::now());
            sends.push(tokio::spawn(async move {
                control
                    .send_webhooks(json!({"url": url, "events": [
                        {"resource": "contacts", "id": id, "op": "updated", "account": "4711"}]}))
                    .await
                    .unwrap()
            }));
        }
        for s in sends {
            let answer = s.await.unwrap();
            assert_eq!(
                answer["deliveries"][0]["attempts"][0]["status"], 200,
                "{answer}"
            );
        }
        let want: Vec<String> = ids.clone();
        let before = events.received.len();
        let mut seen = std::collections::HashSet::new();
        while seen.len() < want.len() {
            let at = events.received.len();
            events.read_until(Duration::from_secs(30), "the wave's updates", |r| {
                r.len() > at
            });
            for m in &events.received[at..] {
                let v = m.value.as_ref().unwrap();
                let id = v["record_id"].as_str().unwrap().to_string();
                if v["op"] == "updated" && want.contains(&id) && seen.insert(id.clone()) {
                    latencies.push(sent_at[&id].elapsed());
                }
            }
        }
        assert_eq!(
            events.received.len() - before,
            want.len(),
            "one event per change"
        );
    }
    events.drain_for(Duration::from_secs(2));
    let updated = events
        .received
        .iter()
        .filter(|m| m.value.as_ref().unwrap()["op"] == "updated")
        .count();
    assert_eq!(
        updated,
        WAVES * PER_WAVE,
        "one `updated` per announced change"
    );
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    eprintln!(
        "webhook -> event over {} webhooks: p50 {:?}, p99 {:?}, max {:?}",
        latencies.len(),
        at(0.50),
        at(0.99),
        latencies.last().unwrap()
    );
}
