//! Rate budgets across a fleet: three worker processes share one provider app's budget
//! (kept in PostgreSQL), and a tenant whose provider throttles everything neither burns
//! that budget nor slows the other tenants.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use tributary::bus::{Job, JobReason};
use tributary::sandbox::{self, Profile, SandboxHandle};
use tributary::store::{NewConnection, RunMode};
use tributary_e2e::broker::TopicReader;
use tributary_e2e::pipeline::{Rig, WorkerProcess};
use tributary_e2e::{check_event_schema, fresh_postgres, repo_root, SandboxControl};

const WORKER: &str = env!("CARGO_BIN_EXE_tributary-worker");
const LONG: Duration = Duration::from_secs(120);
/// The provider app's budget in the sandbox: requests per second, counted over a sliding window.
const R: u32 = 20;
const PAGE: u64 = 10;

/// The HubSpot spec with an app-wide budget of R per second and small pages (more requests).
fn app_budget_specs() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "tributary-budget-specs-{}-{}",
        std::process::id(),
        Utc::now().timestamp_micros()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let text = std::fs::read_to_string(repo_root().join("provider-specs/hubspot.yaml")).unwrap();
    let mut doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    let map = doc.as_mapping_mut().unwrap();
    let mut rate: serde_yaml_ng::Mapping = map["rate_limit"].as_mapping().unwrap().clone();
    rate.insert("requests".into(), R.into());
    rate.insert("per_seconds".into(), 1.into());
    rate.insert("scope".into(), "app".into());
    rate.remove("max_concurrency");
    map.insert("rate_limit".into(), serde_yaml_ng::Value::Mapping(rate));
    map.insert("page_size".into(), PAGE.into());
    std::fs::write(
        dir.join("hubspot.yaml"),
        serde_yaml_ng::to_string(&doc).unwrap(),
    )
    .unwrap();
    dir
}

/// A sandbox enforcing R requests per second over a sliding window (the strictest reading).
fn budgeted(profile: &mut Profile) {
    let mut rule = Profile::load(&repo_root().join("provider-specs/sandbox/hubspot.yaml"))
        .unwrap()
        .rate_limit
        .unwrap();
    rule.requests = R;
    rule.per_seconds = 1.0;
    rule.sliding = true;
    profile.rate_limit = Some(rule);
}

struct Fleet {
    rig: Rig,
    specs: std::path::PathBuf,
}

impl Fleet {
    async fn start(records: u64) -> Fleet {
        let rig = Rig::start_with(
            "postgres",
            fresh_postgres().await,
            WORKER,
            records,
            budgeted,
        )
        .await;
        Fleet {
            rig,
            specs: app_budget_specs(),
        }
    }

    fn workers(&self, n: usize) -> Vec<WorkerProcess> {
        (0..n)
            .map(|_| {
                self.rig.worker(&[
                    ("TRIBUTARY_SPECS_DIR", self.specs.display().to_string()),
                    ("TRIBUTARY_BREAKER_AFTER", "3".into()),
                    ("TRIBUTARY_BREAKER_OPEN_SECONDS", "120".into()),
                ])
            })
            .collect()
    }

    /// A tenant with one static-token connection to `base_url`.
    async fn tenant(&self, name: &str, base_url: &str) -> String {
        let store = &self.rig.store;
        store.create_tenant(name).await.unwrap();
        store
            .create_connection(&NewConnection {
                id: Some(format!("{name}-hubspot")),
                tenant: name.to_string(),
                provider: "hubspot".into(),
                config: json!({ "base_url": base_url }).as_object().unwrap().clone(),
                credentials: serde_json::from_value(
                    json!({"access_token": "sandbox-hubspot-token"}),
                )
                .unwrap(),
                resources: vec!["contacts".into()],
                schedule: None,
                full_schedule: None,
                timezone: "UTC".into(),
            })
            .await
            .unwrap()
    }

    async fn start_runs(&self, connections: &[(String, String)]) -> Vec<Job> {
        let mut jobs = Vec::new();
        for (tenant, connection) in connections {
            let job = Job::new_run(
                tenant,
                connection,
                "contacts",
                RunMode::Full,
                JobReason::Schedule,
            );
            self.rig.enqueue(&job).await;
            jobs.push(job);
        }
        jobs
    }
}

fn completed_at(statuses: &mut TopicReader, runs: &[Job]) -> DateTime<Utc> {
    let ids: HashSet<&str> = runs.iter().map(|j| j.run_id.as_str()).collect();
    let ends = |all: &[tributary_e2e::broker::Received]| -> Vec<Value> {
        all.iter()
            .filter_map(|r| r.value.clone())
            .filter(|v| {
                ids.contains(v["sync_run"].as_str().unwrap_or_default())
                    && (v["type"] == "run.completed" || v["type"] == "run.failed")
            })
            .collect()
    };
    statuses.read_until(LONG, "every run's end", |all| ends(all).len() == ids.len());
    let ends = ends(&statuses.received);
    for e in &ends {
        assert_eq!(e["type"], "run.completed", "{e}");
    }
    ends.iter()
        .map(|e| {
            DateTime::parse_from_rfc3339(e["occurred_at"].as_str().unwrap())
                .unwrap()
                .with_timezone(&Utc)
        })
        .max()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn three_workers_never_exceed_the_app_budget_and_use_most_of_it() {
    let records = 100; // 10 pages of 10 per tenant
    let fleet = Fleet::start(records).await;
    let workers = fleet.workers(3);
    let base = fleet.rig.sandbox.base_url();
    let mut connections = Vec::new();
    for i in 0..20 {
        let tenant = format!("tenant{i:02}");
        let c = fleet.tenant(&tenant, &base).await;
        connections.push((tenant, c));
    }
    let mut statuses = fleet.rig.statuses();
    let runs = fleet.start_runs(&connections).await;
    completed_at(&mut statuses, &runs);

    let stats = fleet.rig.control.stats().await.unwrap();
    let pages = 20 * (records / PAGE + 1); // the last page of each tenant is the empty one
    assert!(
        stats.data_requests >= 20 * (records / PAGE),
        "every tenant read every page: {stats:?}"
    );
    assert_eq!(
        stats.over_budget, 0,
        "requests over the app's budget: {stats:?}"
    );
    let span = (stats.last_data_request_ms - stats.first_data_request_ms) as f64 / 1000.0;
    let used = (stats.data_requests - 1) as f64 / span / f64::from(R);
    eprintln!(
        "{} requests ({pages} expected at most) in {span:.2}s across 3 workers: {:.1}% of the budget of {R}/s, 0 over",
        stats.data_requests,
        used * 100.0
    );
    assert!(
        used >= 0.90,
        "used {:.1}% of the budget over the run",
        used * 100.0
    );
    assert!(used <= 1.0, "more than the budget: {:.1}%", used * 100.0);
    drop(workers);
}

/// A second sandbox answering 429 (Retry-After 2) to everything.
async fn throttling_provider() -> (SandboxHandle, SandboxControl) {
    let mut profile =
        Profile::load(&repo_root().join("provider-specs/sandbox/hubspot.yaml")).unwrap();
    profile.rate_limit = None;
    let sbx = sandbox::start(profile, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let control = SandboxControl::new(sbx.base_url());
    control
        .faults(json!([{"kind": "throttle", "times": 0, "wait_seconds": 2}]))
        .await
        .unwrap();
    (sbx, control)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_throttled_on_everything_does_not_slow_the_others() {
    let records = 140; // 15 requests per tenant
    let fleet = Fleet::start(records).await;
    let workers = fleet.workers(3);
    let base = fleet.rig.sandbox.base_url();
    let (bad_sandbox, bad_control) = throttling_provider().await;
    let mut statuses = fleet.rig.statuses();

    // Without the throttled tenant.
    let mut calm = Vec::new();
    for i in 0..10 {
        let tenant = format!("calm{i:02}");
        let c = fleet.tenant(&tenant, &base).await;
        calm.push((tenant, c));
    }
    let t0 = Utc::now();
    let runs = fleet.start_runs(&calm).await;
    let alone = (completed_at(&mut statuses, &runs) - t0).as_seconds_f64();

    // The same work for ten other tenants, beside one whose provider throttles everything.
    let mut busy = Vec::new();
    for i in 0..10 {
        let tenant = format!("busy{i:02}");
        let c = fleet.tenant(&tenant, &base).await;
        busy.push((tenant, c));
    }
    let bad = fleet.tenant("throttled", &bad_sandbox.base_url()).await;
    let t1 = Utc::now();
    let bad_run = fleet
        .start_runs(&[("throttled".to_string(), bad.clone())])
        .await;
    let runs = fleet.start_runs(&busy).await;
    let beside = (completed_at(&mut statuses, &runs) - t1).as_seconds_f64();
    eprintln!(
        "10 tenants finished in {alone:.2}s alone and in {beside:.2}s beside a throttled tenant ({:+.1}%)",
        (beside / alone - 1.0) * 100.0
    );
    assert!(
        beside <= alone * 1.10,
        "the throttled tenant slowed the others by more than 10%: {alone:.2}s -> {beside:.2}s"
    );
    let stats = fleet.rig.control.stats().await.unwrap();
    assert_eq!(stats.over_budget, 0, "{stats:?}");

    // The throttled connection is parked behind its open circuit, visibly.
    statuses.read_until(LONG, "connection.rate_limited", |all| {
        all.iter().any(|r| {
            r.value.as_ref().is_some_and(|v| {
                v["type"] == "connection.rate_limited" && v["connection"] == bad.as_str()
            })
        })
    });
    let event = statuses
        .received
        .iter()
        .filter_map(|r| r.value.as_ref())
        .find(|v| v["type"] == "connection.rate_limited")
        .unwrap()
        .clone();
    check_event_schema("status-event", &event).unwrap();
    assert_eq!(event["sync_run"], bad_run[0].run_id.as_str());
    let resume: DateTime<Utc> = event["resume_at"].as_str().unwrap().parse().unwrap();
    assert!(
        resume > Utc::now() + chrono::Duration::seconds(60),
        "{event}"
    );
    let conn = fleet.rig.store.connection(&bad).await.unwrap();
    assert_eq!(conn.state, "rate_limited");
    assert_eq!(
        conn.blocked_until.unwrap().timestamp_millis(),
        resume.timestamp_millis()
    );
    // It stopped asking: 3 throttles in a row opened its circuit.
    let asked = bad_control.stats().await.unwrap().data_requests;
    assert_eq!(asked, 3, "requests to the throttling provider");
    drop(workers);
}
