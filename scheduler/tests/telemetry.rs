//! The scheduler's telemetry, from the real binary: a resync's `enqueue` span starts the
//! run's trace and the job message carries it (`traceparent` in the JSON and as a header);
//! `/metrics` on the API address serves Prometheus text without a token.
#![cfg(feature = "process-tests")]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tributary_e2e::broker::{free_port, Broker, TopicReader};
use tributary_e2e::otlp::Collector;
use tributary_e2e::{fresh_sqlite, repo_root};

const ADMIN: &str = "admin-token-for-telemetry-tests-42";

#[tokio::test(flavor = "multi_thread")]
async fn a_resync_starts_the_runs_trace_and_metrics_are_served() {
    let collector = Collector::start().await;
    let broker = Broker::start();
    let port = free_port();
    let prefix = format!("tel{port}");
    let log = std::env::temp_dir().join(format!("tributary-scheduler-telemetry-{port}.log"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_tributary-scheduler"))
        .arg("run")
        .current_dir(repo_root())
        .env("TRIBUTARY_API_ADDR", format!("127.0.0.1:{port}"))
        .env("TRIBUTARY_ADMIN_TOKEN", ADMIN)
        .env("TRIBUTARY_KAFKA_BROKERS", &broker.addr)
        .env("TRIBUTARY_DATABASE_URL", fresh_sqlite())
        .env(
            "TRIBUTARY_ENCRYPTION_KEY",
            tributary::secrets::crypto::Cipher::generate_key(),
        )
        .env("TRIBUTARY_TOPIC_PREFIX", &prefix)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &collector.endpoint)
        .env("OTEL_BSP_SCHEDULE_DELAY", "200")
        .env_remove("OTEL_SERVICE_NAME")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !matches!(http.get(format!("{base}/healthz")).send().await, Ok(r) if r.status().is_success())
    {
        assert!(
            Instant::now() < deadline,
            "the scheduler did not come up:\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let admin = |method: reqwest::Method, path: &str, body: Value| {
        http.request(method, format!("{base}{path}"))
            .bearer_auth(ADMIN)
            .json(&body)
            .send()
    };
    let r = admin(reqwest::Method::POST, "/v1/tenants", json!({"id": "acme"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = admin(
        reqwest::Method::POST,
        "/v1/connections",
        json!({"tenant": "acme", "provider": "hubspot", "config": {},
               "credentials": {"access_token": "static-token"}, "resources": ["contacts"]}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = admin(
        reqwest::Method::POST,
        &format!("/v1/connections/{id}/resync"),
        json!({"resources": ["contacts"]}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 202);
    let run_id = r.json::<Value>().await.unwrap()["jobs"][0]["run_id"]
        .as_str()
        .unwrap()
        .to_string();

    // The job message carries the trace context, in its JSON and as a header.
    let mut urgent = TopicReader::new(&broker.addr, &format!("{prefix}.jobs.urgent"));
    let job = urgent
        .read_until(Duration::from_secs(30), "the resync job", |all| {
            all.iter()
                .any(|m| m.value.as_ref().is_some_and(|v| v["run_id"] == run_id))
        })
        .iter()
        .find(|m| m.value.as_ref().is_some_and(|v| v["run_id"] == run_id))
        .unwrap()
        .clone();
    let traceparent = job.value.as_ref().unwrap()["traceparent"]
        .as_str()
        .unwrap_or_else(|| panic!("no traceparent in {job:?}"))
        .to_string();
    assert_eq!(job.header("traceparent"), Some(traceparent.as_str()));
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(
        (parts.len(), parts[0], parts[3]),
        (4, "00", "01"),
        "{traceparent}"
    );

    // /metrics: no token, Prometheus text, this process's resource.
    let r = http.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/plain; version=0.0.4");
    let text = r.text().await.unwrap();
    assert!(text.contains("# TYPE target_info gauge"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("target_info{")
                && l.contains("service_name=\"tributary-scheduler\"")),
        "{text}"
    );

    // SIGTERM: the scheduler stops and flushes its spans.
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}\n{}", logs());
    let got = collector
        .wait_for(Duration::from_secs(10), "the resync's spans", |r| {
            !r.spans_named("enqueue").is_empty() && !r.spans_named("api.resync").is_empty()
        })
        .await;
    let resync = got.spans_named("api.resync");
    let resync = resync
        .iter()
        .find(|s| s.attr("tributary.connection") == Some(id.as_str()))
        .unwrap_or_else(|| panic!("{resync:?}"));
    assert_eq!(resync.service, "tributary-scheduler");
    let enqueue = got
        .spans_named("enqueue")
        .into_iter()
        .find(|s| s.attr("tributary.run_id") == Some(run_id.as_str()))
        .unwrap_or_else(|| panic!("no enqueue span of {run_id}: {:?}", got.span_names()));
    assert_eq!(
        (enqueue.trace_id.as_str(), enqueue.span_id.as_str()),
        (parts[1], parts[2]),
        "the job carries its enqueue span"
    );
    assert_eq!(enqueue.parent_span_id, "", "each run is a trace of its own");
    assert_eq!(
        enqueue.links,
        vec![resync.trace_id.clone()],
        "linked to the request"
    );
    assert_eq!(enqueue.attr("tributary.tenant"), Some("acme"));
    assert_eq!(enqueue.attr("tributary.reason"), Some("resync"));
    let send = got
        .spans_named(&format!("send {prefix}.jobs.urgent"))
        .into_iter()
        .find(|s| s.trace_id == resync.trace_id)
        .unwrap_or_else(|| {
            panic!(
                "no send span in the request's trace: {:?}",
                got.span_names()
            )
        });
    assert_eq!(send.parent_span_id, resync.span_id);
    assert_eq!(send.attr("messaging.system"), Some("kafka"));
}
