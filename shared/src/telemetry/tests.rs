//! Unit tests of the telemetry module: the Prometheus text, trace context, settings.

use std::collections::HashMap;
use std::time::Duration;

use tracing_subscriber::layer::SubscriberExt;

use super::*;

fn line_with<'a>(text: &'a str, start: &str, parts: &[&str]) -> Option<&'a str> {
    text.lines()
        .find(|l| l.starts_with(start) && parts.iter().all(|p| l.contains(p)))
}

#[test]
fn metrics_render_as_prometheus_text() {
    let m = metrics();
    let acme = Labels {
        provider: "prom-test",
        tenant: "acme",
    };
    m.records_read(&acme, 3);
    m.records_read(&acme, 4);
    m.provider_request(&acme, "GET", 200, Duration::from_millis(30));
    m.set_ready("store", true);
    m.consumer_lag("prom-test.jobs", 2, 17);
    let text = prometheus::render();
    assert!(text.contains("# HELP tributary_records_read_total Provider records read\n"));
    assert!(text.contains("# TYPE tributary_records_read_total counter\n"));
    let line = line_with(
        &text,
        "tributary_records_read_total{",
        &["provider=\"prom-test\""],
    )
    .unwrap_or_else(|| panic!("no records_read series in:\n{text}"));
    assert!(
        line.contains("tenant=\"acme\"") && line.ends_with(" 7"),
        "{line}"
    );
    assert!(text.contains("# TYPE tributary_provider_request_duration_seconds histogram\n"));
    let bucket = |le: &str| {
        line_with(
            &text,
            "tributary_provider_request_duration_seconds_bucket{",
            &["provider=\"prom-test\"", &format!("le=\"{le}\"")],
        )
        .unwrap_or_else(|| panic!("no bucket le={le} in:\n{text}"))
        .to_string()
    };
    assert!(bucket("0.025").ends_with(" 0"), "30 ms is above 25 ms");
    assert!(bucket("0.05").ends_with(" 1"));
    assert!(bucket("+Inf").ends_with(" 1"));
    let count = line_with(
        &text,
        "tributary_provider_request_duration_seconds_count{",
        &[
            "provider=\"prom-test\"",
            "http_request_method=\"GET\"",
            "http_response_status_code=\"200\"",
        ],
    );
    assert!(count.is_some_and(|l| l.ends_with(" 1")), "{text}");
    assert!(line_with(
        &text,
        "tributary_provider_request_duration_seconds_sum{",
        &["prom-test"]
    )
    .is_some());
    assert!(text.contains("# TYPE tributary_ready gauge\n"));
    assert!(
        line_with(&text, "tributary_ready{", &["component=\"store\""])
            .is_some_and(|l| l.ends_with(" 1"))
    );
    let lag = line_with(
        &text,
        "tributary_consumer_lag{",
        &["topic=\"prom-test.jobs\"", "partition=\"2\""],
    );
    assert!(lag.is_some_and(|l| l.ends_with(" 17")), "{text}");

    // Without the tenant label, the series of every tenant add up in one.
    m.set_tenant_label(false);
    let other = Labels {
        provider: "prom-test-untenanted",
        tenant: "acme",
    };
    m.records_read(&other, 2);
    m.records_read(
        &Labels {
            tenant: "globex",
            ..other
        },
        5,
    );
    m.set_tenant_label(true);
    let text = prometheus::render();
    let line = line_with(
        &text,
        "tributary_records_read_total{",
        &["provider=\"prom-test-untenanted\""],
    )
    .unwrap_or_else(|| panic!("{text}"));
    assert!(!line.contains("tenant="), "{line}");
    assert!(line.ends_with(" 7"), "{line}");
}

#[test]
fn traceparent_links_a_span_to_a_remote_parent() {
    assert_eq!(traceparent_of_current_span(), None, "no tracer, no trace");
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    tracing::subscriber::with_default(subscriber, || {
        let enqueue = tracing::info_span!("enqueue");
        let sent = enqueue
            .in_scope(traceparent_of_current_span)
            .expect("a traceparent inside a span");
        assert!(sent.starts_with("00-") && sent.ends_with("-01"), "{sent}");
        let slice = tracing::info_span!(parent: None, "slice");
        set_parent_from_traceparent(&slice, &sent);
        let inside = traceparent_of(&slice).unwrap();
        assert_eq!(trace_id_of(&inside), trace_id_of(&sent), "same trace");
        assert_ne!(inside, sent, "its own span id");
        let stray = tracing::info_span!(parent: None, "stray");
        set_parent_from_traceparent(&stray, "not a traceparent");
        assert_ne!(
            trace_id_of(&traceparent_of(&stray).unwrap()),
            trace_id_of(&sent)
        );
    });
}

fn settings(vars: &[(&str, &str)]) -> Result<TelemetrySettings, TelemetryError> {
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    TelemetrySettings::from_lookup("tributary-worker", |k| vars.get(k).cloned())
}

#[test]
fn exporters_follow_the_standard_variables() {
    let none = settings(&[]).unwrap();
    assert!(!none.export_traces && !none.export_metrics && none.tenant_label);
    let both = settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")]).unwrap();
    assert!(both.export_traces && both.export_metrics);
    let traces = settings(&[(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "http://c:4318/v1/traces",
    )])
    .unwrap();
    assert!(traces.export_traces && !traces.export_metrics);
    let no_metrics = settings(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
        ("OTEL_METRICS_EXPORTER", "none"),
    ])
    .unwrap();
    assert!(no_metrics.export_traces && !no_metrics.export_metrics);
    let disabled = settings(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
        ("OTEL_SDK_DISABLED", "true"),
    ])
    .unwrap();
    assert!(!disabled.export_traces && !disabled.export_metrics);
    let grpc = settings(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]).unwrap_err();
    assert!(grpc.to_string().contains("http/protobuf"), "{grpc}");
    assert_eq!(none.traces_encoding, OtlpEncoding::Protobuf, "the default");
    let json = settings(&[
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "http/protobuf"),
    ])
    .unwrap();
    assert_eq!(
        (json.traces_encoding, json.metrics_encoding),
        (OtlpEncoding::Json, OtlpEncoding::Protobuf)
    );
    let off = settings(&[("TRIBUTARY_METRICS_TENANT_LABEL", "false")]).unwrap();
    assert!(!off.tenant_label);
    assert!(settings(&[("TRIBUTARY_METRICS_TENANT_LABEL", "maybe")]).is_err());
}
