//! A small OTLP/HTTP receiver on loopback (protobuf bodies on `POST /v1/traces` and
//! `POST /v1/metrics`, as a collector takes them), keeping what arrives for assertions.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use prost::Message;
use tokio::sync::Notify;

/// One span as received.
#[derive(Debug, Clone)]
pub struct SpanSeen {
    pub service: String,
    pub name: String,
    /// Hex, as in a `traceparent`.
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    /// OTLP `SpanKind` (1 internal, 2 server, 3 client, 4 producer, 5 consumer).
    pub kind: i32,
    pub attributes: BTreeMap<String, String>,
    /// Trace ids of the spans this one links to.
    pub links: Vec<String>,
}

impl SpanSeen {
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

/// One data point of a metric: its attributes and value (a sum's or gauge's value, a
/// histogram's count).
#[derive(Debug, Clone)]
pub struct PointSeen {
    pub attributes: BTreeMap<String, String>,
    pub value: f64,
}

#[derive(Debug, Clone)]
pub struct MetricSeen {
    pub service: String,
    pub name: String,
    pub unit: String,
    /// `sum`, `gauge` or `histogram`.
    pub kind: &'static str,
    pub points: Vec<PointSeen>,
}

#[derive(Debug, Default, Clone)]
pub struct Received {
    pub spans: Vec<SpanSeen>,
    pub metrics: Vec<MetricSeen>,
}

impl Received {
    pub fn spans_named(&self, name: &str) -> Vec<&SpanSeen> {
        self.spans.iter().filter(|s| s.name == name).collect()
    }

    /// The latest export of a metric (cumulative: it holds everything so far).
    pub fn metric(&self, name: &str) -> Option<&MetricSeen> {
        self.metrics.iter().rev().find(|m| m.name == name)
    }

    pub fn span_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.spans.iter().map(|s| s.name.as_str()).collect();
        names.sort();
        names.dedup();
        names
    }

    pub fn metric_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.metrics.iter().map(|m| m.name.as_str()).collect();
        names.sort();
        names.dedup();
        names
    }
}

#[derive(Default)]
struct Shared {
    received: Mutex<Received>,
    arrived: Notify,
}

/// The receiver; dropping it stops the server.
pub struct Collector {
    /// What to put in `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub endpoint: String,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn text(v: &Option<AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn attributes(kv: &[KeyValue]) -> BTreeMap<String, String> {
    kv.iter().map(|a| (a.key.clone(), text(&a.value))).collect()
}

fn service(resource: &Option<opentelemetry_proto::tonic::resource::v1::Resource>) -> String {
    resource
        .as_ref()
        .and_then(|r| attributes(&r.attributes).remove("service.name"))
        .unwrap_or_default()
}

async fn traces(State(shared): State<Arc<Shared>>, body: Bytes) -> (StatusCode, Vec<u8>) {
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return (StatusCode::BAD_REQUEST, Vec::new());
    };
    let mut spans = Vec::new();
    for rs in &request.resource_spans {
        let service = service(&rs.resource);
        for span in rs.scope_spans.iter().flat_map(|s| &s.spans) {
            spans.push(SpanSeen {
                service: service.clone(),
                name: span.name.clone(),
                trace_id: hex::encode(&span.trace_id),
                span_id: hex::encode(&span.span_id),
                parent_span_id: hex::encode(&span.parent_span_id),
                kind: span.kind,
                attributes: attributes(&span.attributes),
                links: span
                    .links
                    .iter()
                    .map(|l| hex::encode(&l.trace_id))
                    .collect(),
            });
        }
    }
    shared.received.lock().unwrap().spans.extend(spans);
    shared.arrived.notify_waiters();
    (
        StatusCode::OK,
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
}

fn points(data: &Option<Data>) -> (&'static str, Vec<PointSeen>) {
    let number = |p: &opentelemetry_proto::tonic::metrics::v1::NumberDataPoint| {
        use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value;
        PointSeen {
            attributes: attributes(&p.attributes),
            value: match p.value {
                Some(Value::AsDouble(d)) => d,
                Some(Value::AsInt(i)) => i as f64,
                None => f64::NAN,
            },
        }
    };
    match data {
        Some(Data::Sum(s)) => ("sum", s.data_points.iter().map(number).collect()),
        Some(Data::Gauge(g)) => ("gauge", g.data_points.iter().map(number).collect()),
        Some(Data::Histogram(h)) => (
            "histogram",
            h.data_points
                .iter()
                .map(|p| PointSeen {
                    attributes: attributes(&p.attributes),
                    value: p.count as f64,
                })
                .collect(),
        ),
        _ => ("other", Vec::new()),
    }
}

async fn metrics(State(shared): State<Arc<Shared>>, body: Bytes) -> (StatusCode, Vec<u8>) {
    let Ok(request) = ExportMetricsServiceRequest::decode(body) else {
        return (StatusCode::BAD_REQUEST, Vec::new());
    };
    let mut seen = Vec::new();
    for rm in &request.resource_metrics {
        let service = service(&rm.resource);
        for m in rm.scope_metrics.iter().flat_map(|s| &s.metrics) {
            let (kind, points) = points(&m.data);
            seen.push(MetricSeen {
                service: service.clone(),
                name: m.name.clone(),
                unit: m.unit.clone(),
                kind,
                points,
            });
        }
    }
    shared.received.lock().unwrap().metrics.extend(seen);
    shared.arrived.notify_waiters();
    (
        StatusCode::OK,
        ExportMetricsServiceResponse::default().encode_to_vec(),
    )
}

impl Collector {
    pub async fn start() -> Collector {
        let shared = Arc::new(Shared::default());
        let app = Router::new()
            .route("/v1/traces", post(traces))
            .route("/v1/metrics", post(metrics))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Collector {
            endpoint,
            shared,
            server,
        }
    }

    /// What arrived so far.
    pub fn received(&self) -> Received {
        self.shared.received.lock().unwrap().clone()
    }

    /// Wait (each export wakes it) until `done` holds; panics after `timeout` with what came.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        what: &str,
        done: impl Fn(&Received) -> bool,
    ) -> Received {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let arrived = self.shared.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            let now = self.received();
            if done(&now) {
                return now;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                panic!(
                    "the collector never received {what}; spans: {:?}; metrics: {:?}",
                    now.span_names(),
                    now.metric_names()
                );
            }
        }
    }
}
