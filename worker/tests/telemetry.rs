//! Telemetry from the real binary: spans and metrics exported over OTLP/HTTP to a receiver
//! on loopback, the Prometheus text on `/metrics`, and the job's `traceparent` followed
//! into the worker's trace and the events it publishes.

use std::time::Duration;

use tributary_e2e::otlp::{Collector, Received, SpanSeen};
use tributary_e2e::spec_run::SpecRun;
use tributary_e2e::{repo_root, SandboxControl};

const WORKER: &str = env!("CARGO_BIN_EXE_tributary-worker");

fn provider_requests<'a>(got: &'a Received, provider: &str) -> Vec<&'a SpanSeen> {
    got.spans_named("provider.request")
        .into_iter()
        .filter(|s| s.attr("tributary.provider") == Some(provider))
        .collect()
}

/// The HTTP attributes of the request spans, and one histogram point per attempt.
fn assert_requests(got: &Received) {
    let requests = provider_requests(got, "hubspot");
    assert!(!requests.is_empty(), "spans: {:?}", got.span_names());
    for s in &requests {
        assert_eq!(s.service, "tributary-worker");
        assert_eq!(s.kind, 3, "client spans: {s:?}");
        assert_eq!(s.attr("http.request.method"), Some("GET"), "{s:?}");
        let path = s.attr("url.path").unwrap_or_default();
        assert!(path.starts_with("/crm/") && !path.contains('?'), "{s:?}");
        assert_eq!(s.attr("http.response.status_code"), Some("200"), "{s:?}");
        assert_eq!(s.attr("attempt"), Some("1"), "{s:?}");
    }
    let histogram = got
        .metric("tributary_provider_request_duration")
        .unwrap_or_else(|| panic!("metrics: {:?}", got.metric_names()));
    assert_eq!(
        (histogram.kind, histogram.unit.as_str()),
        ("histogram", "s")
    );
    let attempts: f64 = histogram
        .points
        .iter()
        .filter(|p| p.attributes.get("provider").map(String::as_str) == Some("hubspot"))
        .inspect(|p| {
            assert_eq!(p.attributes["http.request.method"], "GET");
            assert_eq!(p.attributes["http.response.status_code"], "200");
        })
        .map(|p| p.value)
        .sum();
    assert_eq!(attempts as usize, requests.len(), "one point per attempt");
}

/// One refresh at the sandbox's token endpoint, as a span and as a counted outcome.
fn assert_refreshes(got: &Received) {
    let refreshes = got.spans_named("token.refresh");
    assert!(!refreshes.is_empty(), "spans: {:?}", got.span_names());
    for r in &refreshes {
        assert_eq!(r.attr("url.path"), Some("/oauth/v1/token"), "{r:?}");
        assert_eq!(r.attr("tributary.provider"), Some("hubspot"));
        assert_eq!(r.attr("error.type"), None, "{r:?}");
    }
    let counted = got
        .metric("tributary_token_refreshes")
        .unwrap_or_else(|| panic!("metrics: {:?}", got.metric_names()));
    let ok: f64 = counted
        .points
        .iter()
        .filter(|p| p.attributes.get("outcome").map(String::as_str) == Some("ok"))
        .map(|p| p.value)
        .sum();
    assert_eq!(ok as usize, refreshes.len(), "{counted:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn spec_run_exports_request_and_refresh_spans_and_metrics() {
    let collector = Collector::start().await;
    let run = SpecRun::contacts()
        .args(&[
            "--sandbox",
            "provider-specs/sandbox/hubspot.yaml",
            "--page-size",
            "50",
            "--quiet",
        ])
        .credentials(&serde_json::json!({
            "refresh_token": "sandbox-hubspot-refresh",
            "client_id": "sandbox-client",
            "client_secret": "sandbox-client-secret"
        }));
    let out = tokio::process::Command::from(run.command(WORKER))
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &collector.endpoint)
        .env_remove("OTEL_SERVICE_NAME")
        .env_remove("OTEL_RESOURCE_ATTRIBUTES")
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The exit flushed everything; the receiver answered each export before the exit.
    let got = collector
        .wait_for(Duration::from_secs(5), "the run's spans and metrics", |r| {
            !r.spans_named("provider.request").is_empty()
                && r.metric("tributary_provider_request_duration").is_some()
        })
        .await;
    assert_requests(&got);
    assert_refreshes(&got);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_throttle_is_counted_and_its_retry_is_the_next_attempt() {
    let collector = Collector::start().await;
    let profile =
        tributary_sandbox::Profile::load(&repo_root().join("provider-specs/sandbox/hubspot.yaml"))
            .unwrap();
    let sbx = tributary_sandbox::start(profile, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    SandboxControl::new(sbx.base_url())
        .faults(serde_json::json!([{"kind": "throttle", "times": 1, "wait_seconds": 0.2}]))
        .await
        .unwrap();
    let run = SpecRun::contacts()
        .config(&serde_json::json!({"base_url": sbx.base_url()}))
        .credentials(&serde_json::json!({"access_token": "sandbox-hubspot-token"}))
        .args(&[
            "--allow-private-hosts",
            "--max-pages",
            "1",
            "--page-size",
            "10",
            "--quiet",
        ]);
    let out = tokio::process::Command::from(run.command(WORKER))
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &collector.endpoint)
        .output()
        .await
        .unwrap();
    // One page of more: exit 1 at --max-pages, after the throttle was waited out.
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = collector
        .wait_for(Duration::from_secs(5), "the throttled run", |r| {
            r.metric("tributary_throttles").is_some()
        })
        .await;
    // The portal's properties are discovered first (one request, not throttled).
    let mut attempts: Vec<(String, String)> = provider_requests(&got, "hubspot")
        .iter()
        .filter(|s| s.attr("tributary.resource") == Some("contacts"))
        .map(|s| {
            (
                s.attr("attempt").unwrap_or_default().to_string(),
                s.attr("http.response.status_code")
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    attempts.sort();
    assert_eq!(
        attempts,
        vec![
            ("1".to_string(), "429".to_string()),
            ("2".to_string(), "200".to_string())
        ]
    );
    let throttles = got.metric("tributary_throttles").unwrap();
    assert_eq!(throttles.points.len(), 1, "{throttles:?}");
    assert_eq!(throttles.points[0].value, 1.0);
    assert_eq!(throttles.points[0].attributes["provider"], "hubspot");
    assert!(
        !throttles.points[0].attributes.contains_key("tenant"),
        "no tenant in spec run"
    );
    let statuses: Vec<&str> = got
        .metric("tributary_provider_request_duration")
        .unwrap()
        .points
        .iter()
        .map(|p| p.attributes["http.response.status_code"].as_str())
        .collect();
    assert!(
        statuses.contains(&"429") && statuses.contains(&"200"),
        "{statuses:?}"
    );
}

/// The tests that need a broker (tansu) and worker processes: the process-level tier.
#[cfg(feature = "process-tests")]
mod process {
    use rdkafka::Message;
    use std::collections::HashSet;
    use std::sync::Arc;
    use tributary::bus::kafka::{commit, ensure_topics, jobs_consumer, ConsumerSettings};
    use tributary::bus::lag::partition_lags;
    use tributary::bus::{Job, JobReason, Publisher, Topics};
    use tributary::domain::RunMode;
    use tributary_e2e::broker::{free_port, Broker};
    use tributary_e2e::fresh_sqlite;
    use tributary_e2e::pipeline::{wait_run_end, Rig};
    use tributary_e2e::rig::PipelineRig;

    use super::*;

    /// A trace id no other test uses.
    fn fresh_trace_id() -> String {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        format!("{:016x}{:016x}", std::process::id(), nanos as u64)
    }

    const LONG: Duration = Duration::from_secs(90);
    /// The lead turns this on once `sync/` opens the slice span (a child of the job's
    /// `traceparent`, through `telemetry::set_parent_from_traceparent`) with its stages, and
    /// records the stage metrics (records read, events published, slice duration, jobs in
    /// flight) with the run's tenant.
    const SLICE_SPANS_IN_SYNC: bool = true;

    /// The `kafka.send` spans of one topic: producer spans with the messaging attributes.
    fn sends_to<'a>(got: &'a Received, topic: &str) -> Vec<&'a SpanSeen> {
        let sends: Vec<&SpanSeen> = got
            .spans_named(&format!("send {topic}"))
            .into_iter()
            .collect();
        for s in &sends {
            assert_eq!(s.kind, 4, "producer spans: {s:?}");
            assert_eq!(s.attr("messaging.system"), Some("kafka"), "{s:?}");
            assert_eq!(s.attr("messaging.operation.type"), Some("send"), "{s:?}");
            assert_eq!(s.attr("messaging.destination.name"), Some(topic), "{s:?}");
        }
        sends
    }

    fn family_lines<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
        text.lines()
            .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
            .collect()
    }

    /// What the lead's slice span adds: the worker's slice is a child of the job's
    /// `traceparent`, its stages are its children, and the events published join the trace.
    fn assert_slice_joins_the_job_trace(
        got: &Received,
        trace_id: &str,
        job_span: &str,
        event_traces: &HashSet<String>,
    ) {
        let slices: Vec<&SpanSeen> = got
            .spans_named("slice")
            .into_iter()
            .filter(|s| s.trace_id == trace_id)
            .collect();
        assert!(
            !slices.is_empty(),
            "no slice span in the job's trace: {:?}",
            got.span_names()
        );
        assert!(
            slices.iter().any(|s| s.parent_span_id == job_span),
            "the first slice is a child of the job's span"
        );
        let first = slices
            .iter()
            .find(|s| s.parent_span_id == job_span)
            .unwrap();
        for stage in ["admit", "read", "process", "publish", "commit", "finish"] {
            assert!(
                got.spans_named(stage)
                    .iter()
                    .any(|s| s.trace_id == trace_id && s.parent_span_id == first.span_id),
                "stage {stage} is a child of the slice"
            );
        }
        assert!(
            provider_requests(got, "hubspot")
                .iter()
                .all(|s| s.trace_id == trace_id),
            "the provider requests are in the job's trace"
        );
        assert_eq!(
            event_traces.iter().collect::<Vec<_>>(),
            vec![trace_id],
            "every event carries the job's trace"
        );
    }

    fn assert_stage_metrics(metrics_text: &str) {
        for family in [
            "tributary_records_read_total",
            "tributary_events_published_total",
            "tributary_slice_duration_seconds_count",
            "tributary_jobs_in_flight",
        ] {
            let lines = family_lines(metrics_text, family);
            assert!(!lines.is_empty(), "{family} in:\n{metrics_text}");
            assert!(
                lines
                    .iter()
                    .all(|l| l.contains("provider=\"hubspot\"")
                        || family == "tributary_jobs_in_flight"),
                "{lines:?}"
            );
        }
        assert!(family_lines(metrics_text, "tributary_records_read_total")
            .iter()
            .any(|l| l.contains("tenant=\"acme\"") && l.ends_with(" 60")));
        assert!(
            family_lines(metrics_text, "tributary_events_published_total")
                .iter()
                .any(|l| l.contains("op=\"created\"") && l.ends_with(" 60"))
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_sync_exports_spans_and_metrics_and_serves_prometheus_text() {
        let collector = Collector::start().await;
        let rig = Rig::start("sqlite", fresh_sqlite(), WORKER, 60).await;
        let health = format!("127.0.0.1:{}", free_port());
        let mut worker = rig.worker(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint.clone()),
            ("OTEL_METRIC_EXPORT_INTERVAL", "500".into()),
            ("OTEL_BSP_SCHEDULE_DELAY", "200".into()),
            ("TRIBUTARY_HEALTH_ADDR", health.clone()),
            ("TRIBUTARY_SLICE_MAX_PAGES", "1".into()),
        ]);
        let mut events = rig.events();
        let mut statuses = rig.statuses();
        let trace_id = fresh_trace_id();
        let job_span = "00f067aa0ba902b7";
        let mut job = rig.job(RunMode::Full);
        job.traceparent = Some(format!("00-{trace_id}-{job_span}-01"));
        rig.enqueue(&job).await;
        let end = wait_run_end(&mut statuses, &job.run_id, LONG);
        assert_eq!(end["type"], "run.completed", "{end}\n{}", worker.log_text());
        events.read_until(LONG, "60 created events", |all| all.len() >= 60);

        let response = reqwest::get(format!("http://{health}/metrics"))
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_string();
        assert_eq!(content_type, "text/plain; version=0.0.4");
        let text = response.text().await.unwrap();
        for family in [
            "# TYPE tributary_provider_request_duration_seconds histogram",
            "# TYPE tributary_token_refreshes_total counter",
            "# TYPE target_info gauge",
        ] {
            assert!(text.contains(family), "{family} in:\n{text}");
        }
        let inf = family_lines(&text, "tributary_provider_request_duration_seconds_bucket");
        assert!(
            inf.iter()
                .any(|l| l.contains("provider=\"hubspot\"") && l.contains("le=\"+Inf\"")),
            "{text}"
        );
        assert!(
            family_lines(&text, "target_info")
                .iter()
                .any(|l| l.contains("service_name=\"tributary-worker\"")),
            "{text}"
        );
        if SLICE_SPANS_IN_SYNC {
            assert_stage_metrics(&text);
        }

        assert_eq!(worker.terminate(), Some(0), "{}", worker.log_text());
        let topic = rig.lane.topics.model("crm.contact");
        let got = collector
            .wait_for(Duration::from_secs(10), "the sync's spans", |r| {
                !r.spans_named(&format!("send {topic}")).is_empty()
                    && r.metric("tributary_token_refreshes").is_some()
            })
            .await;
        assert_requests(&got);
        assert_refreshes(&got);
        let sends = sends_to(&got, &topic);
        let sent_events: usize = sends
            .iter()
            .map(|s| {
                s.attr("messaging.batch.message_count")
                    .map_or(1, |n| n.parse().unwrap())
            })
            .sum();
        assert!(
            sent_events >= 60,
            "{sent_events} events in {} sends",
            sends.len()
        );
        // Every event names the send span it went out in.
        let send_spans: HashSet<(String, String)> = sends
            .iter()
            .map(|s| (s.trace_id.clone(), s.span_id.clone()))
            .collect();
        let mut event_traces = HashSet::new();
        for e in &events.received {
            let tp = e
                .header("traceparent")
                .unwrap_or_else(|| panic!("no traceparent: {e:?}"));
            let parts: Vec<&str> = tp.split('-').collect();
            assert_eq!(parts.len(), 4, "{tp}");
            assert!(
                send_spans.contains(&(parts[1].to_string(), parts[2].to_string())),
                "{tp} names no exported send span"
            );
            event_traces.insert(parts[1].to_string());
        }
        if SLICE_SPANS_IN_SYNC {
            assert_slice_joins_the_job_trace(&got, &trace_id, job_span, &event_traces);
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn consumer_lag_counts_the_jobs_not_yet_committed() {
        let broker = Broker::start();
        let topics = Topics::new(&format!("lag{}", free_port()));
        ensure_topics(&broker.addr, &[(topics.jobs(), 1)])
            .await
            .unwrap();
        let publisher = Publisher::new(&broker.addr).unwrap();
        for _ in 0..3 {
            let job = Job::new_run("acme", "c1", "contacts", RunMode::Full, JobReason::Schedule);
            publisher.enqueue(&topics, &job).await.unwrap();
        }
        let settings = ConsumerSettings {
            brokers: broker.addr.clone(),
            group: topics.consumer_group(),
            session_timeout: Duration::from_secs(6),
            instance_id: None,
        };
        let consumer = Arc::new(jobs_consumer(&settings, &topics.jobs()).unwrap());
        // The first message arrives once the group has given this consumer the partition.
        let first = consumer.recv().await.unwrap();
        let (partition, offset) = (first.partition(), first.offset());
        drop(first);
        let measure = |c: Arc<_>| tokio::task::spawn_blocking(move || partition_lags(&c).unwrap());
        let lags = measure(consumer.clone()).await.unwrap();
        assert_eq!(
            lags,
            vec![(topics.jobs(), partition, 3)],
            "nothing committed yet"
        );
        commit(&consumer, &topics.jobs(), partition, offset + 1).unwrap();
        let lags = measure(consumer.clone()).await.unwrap();
        assert_eq!(lags, vec![(topics.jobs(), partition, 2)]);
        // The gauge shows what the reporter measured.
        tributary::telemetry::metrics().consumer_lags(lags);
        let text = tributary::telemetry::prometheus::render();
        let line = family_lines(&text, "tributary_consumer_lag")
            .into_iter()
            .find(|l| l.contains(&format!("topic=\"{}\"", topics.jobs())))
            .unwrap_or_else(|| panic!("{text}"));
        assert!(line.ends_with(" 2"), "{line}");
    }
}
