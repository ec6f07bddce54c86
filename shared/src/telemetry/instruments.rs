//! Every instrument Tributary records, typed, in one place. Callers say what happened
//! (`records_read(&labels, 50)`); names, units, buckets and attributes live here only.
//!
//! Instrument names carry the `tributary_` prefix as they are (OTLP shows
//! `tributary_records_read`); the Prometheus text adds `_total` to counters and the unit
//! (`_seconds`) to durations.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry::metrics::{Counter, Gauge, Histogram, Meter, ObservableGauge, UpDownCounter};
use opentelemetry::KeyValue;

/// Who a measurement is about. `tenant` is dropped when `TRIBUTARY_METRICS_TENANT_LABEL`
/// is false (or when it is empty, as in `spec run`).
#[derive(Debug, Clone, Copy)]
pub struct Labels<'a> {
    pub provider: &'a str,
    pub tenant: &'a str,
}

/// `Labels` that own their text, for types that keep them (a connection's runtime).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnedLabels {
    pub provider: String,
    pub tenant: String,
}

impl OwnedLabels {
    pub fn new(provider: &str, tenant: &str) -> Self {
        OwnedLabels {
            provider: provider.to_string(),
            tenant: tenant.to_string(),
        }
    }

    pub fn labels(&self) -> Labels<'_> {
        Labels {
            provider: &self.provider,
            tenant: &self.tenant,
        }
    }
}

/// Consumer lag by (topic, partition), read when metrics are collected.
type Lags = Arc<Mutex<HashMap<(String, i32), i64>>>;

/// The instruments. Get them with [`super::metrics()`].
pub struct Metrics {
    tenant_label: AtomicBool,
    records_read: Counter<u64>,
    events_published: Counter<u64>,
    dead_letters: Counter<u64>,
    slice_duration: Histogram<f64>,
    parked_runs: Counter<u64>,
    circuits_opened: Counter<u64>,
    jobs_in_flight: UpDownCounter<i64>,
    ready: Gauge<i64>,
    queue_depth: Gauge<i64>,
    provider_request_duration: Histogram<f64>,
    throttles: Counter<u64>,
    budget_wait: Histogram<f64>,
    token_refreshes: Counter<u64>,
    webhooks_received: Counter<u64>,
    webhook_answer: Histogram<f64>,
    webhook_items: Counter<u64>,
    webhook_jobs: Counter<u64>,
    lags: Lags,
    _consumer_lag: ObservableGauge<i64>,
}

/// Bucket bounds (seconds) for waits and requests: a few ms up to the longest wait allowed.
const REQUEST_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
const WAIT_BUCKETS: [f64; 11] = [
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0,
];
const SLICE_BUCKETS: [f64; 11] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0];

impl Metrics {
    pub(super) fn new(meter: &Meter) -> Metrics {
        let counter = |name: &'static str, help: &'static str| {
            meter.u64_counter(name).with_description(help).build()
        };
        let seconds = |name: &'static str, help: &'static str, buckets: &[f64]| {
            meter
                .f64_histogram(name)
                .with_description(help)
                .with_unit("s")
                .with_boundaries(buckets.to_vec())
                .build()
        };
        let lags: Lags = Arc::default();
        let observed = lags.clone();
        Metrics {
            tenant_label: AtomicBool::new(true),
            records_read: counter("tributary_records_read", "Provider records read"),
            events_published: counter(
                "tributary_events_published",
                "Change events published and acknowledged, by op",
            ),
            dead_letters: counter(
                "tributary_dead_letters",
                "Records sent to the dead-letter topic",
            ),
            slice_duration: seconds(
                "tributary_slice_duration",
                "Duration of one job slice",
                &SLICE_BUCKETS,
            ),
            parked_runs: counter(
                "tributary_parked_runs",
                "Runs parked to wait for budget or a throttle",
            ),
            circuits_opened: counter(
                "tributary_circuits_opened",
                "Connection circuits opened after repeated throttles",
            ),
            jobs_in_flight: meter
                .i64_up_down_counter("tributary_jobs_in_flight")
                .with_description("Jobs this process is running now")
                .build(),
            ready: meter
                .i64_gauge("tributary_ready")
                .with_description("1 when the component (store, broker) is reachable, else 0")
                .build(),
            queue_depth: meter
                .i64_gauge("tributary_queue_depth")
                .with_description(
                    "Jobs on RabbitMQ: messages ready in each queue, as the broker counts them (the same figure from every worker)",
                )
                .build(),
            provider_request_duration: seconds(
                "tributary_provider_request_duration",
                "Provider HTTP requests (one per attempt), by method and status (0: no response)",
                &REQUEST_BUCKETS,
            ),
            throttles: counter("tributary_throttles", "Provider throttle answers"),
            budget_wait: seconds(
                "tributary_budget_wait",
                "Time requests waited for their rate budget",
                &WAIT_BUCKETS,
            ),
            token_refreshes: counter(
                "tributary_token_refreshes",
                "OAuth token refreshes, by outcome (ok, failed)",
            ),
            webhooks_received: counter(
                "tributary_webhooks_received",
                "Webhook requests received, by provider and outcome (stored, handshake, refused reasons, unavailable)",
            ),
            webhook_answer: seconds(
                "tributary_webhook_answer",
                "Time from a webhook request's arrival to its answer",
                &REQUEST_BUCKETS,
            ),
            webhook_items: counter(
                "tributary_webhook_items",
                "Webhook items processed, by outcome (routed, duplicate, unrouted)",
            ),
            webhook_jobs: counter(
                "tributary_webhook_jobs",
                "Jobs enqueued for webhook items, by kind (fetch, incremental)",
            ),
            lags,
            _consumer_lag: meter
                .i64_observable_gauge("tributary_consumer_lag")
                .with_description(
                    "Jobs not yet committed by this worker's group, per partition it holds",
                )
                .with_callback(move |gauge| {
                    let lags = observed.lock().expect("lags");
                    for ((topic, partition), lag) in lags.iter() {
                        gauge.observe(
                            *lag,
                            &[
                                KeyValue::new("topic", topic.clone()),
                                KeyValue::new("partition", i64::from(*partition)),
                            ],
                        );
                    }
                })
                .build(),
        }
    }

    pub(super) fn set_tenant_label(&self, on: bool) {
        self.tenant_label.store(on, Ordering::Relaxed);
    }

    fn attrs(&self, l: &Labels<'_>, extra: usize) -> Vec<KeyValue> {
        let mut v = Vec::with_capacity(2 + extra);
        v.push(KeyValue::new("provider", l.provider.to_string()));
        if !l.tenant.is_empty() && self.tenant_label.load(Ordering::Relaxed) {
            v.push(KeyValue::new("tenant", l.tenant.to_string()));
        }
        v
    }

    pub fn records_read(&self, l: &Labels<'_>, n: u64) {
        self.records_read.add(n, &self.attrs(l, 0));
    }

    /// One webhook request answered: `outcome` is stored, handshake, unavailable or the
    /// refusal's reason.
    pub fn webhook_received(&self, provider: &str, outcome: &str, took: Duration) {
        let a = [
            KeyValue::new("provider", provider.to_string()),
            KeyValue::new("outcome", outcome.to_string()),
        ];
        self.webhooks_received.add(1, &a);
        self.webhook_answer.record(took.as_secs_f64(), &a[..1]);
    }

    pub fn webhook_items(&self, outcome: &str, n: u64) {
        if n > 0 {
            self.webhook_items
                .add(n, &[KeyValue::new("outcome", outcome.to_string())]);
        }
    }

    pub fn webhook_jobs(&self, kind: &str, n: u64) {
        if n > 0 {
            self.webhook_jobs
                .add(n, &[KeyValue::new("kind", kind.to_string())]);
        }
    }

    /// `op`: created, updated, deleted (or another event kind).
    pub fn events_published(&self, l: &Labels<'_>, op: &str, n: u64) {
        let mut a = self.attrs(l, 1);
        a.push(KeyValue::new("op", op.to_string()));
        self.events_published.add(n, &a);
    }

    pub fn dead_letters(&self, l: &Labels<'_>, n: u64) {
        self.dead_letters.add(n, &self.attrs(l, 0));
    }

    pub fn slice_duration(&self, l: &Labels<'_>, d: Duration) {
        self.slice_duration
            .record(d.as_secs_f64(), &self.attrs(l, 0));
    }

    pub fn parked_run(&self, l: &Labels<'_>) {
        self.parked_runs.add(1, &self.attrs(l, 0));
    }

    pub fn circuit_opened(&self, l: &Labels<'_>) {
        self.circuits_opened.add(1, &self.attrs(l, 0));
    }

    pub fn jobs_in_flight(&self, delta: i64) {
        self.jobs_in_flight.add(delta, &[]);
    }

    /// `component`: `store` or `broker`.
    pub fn set_ready(&self, component: &str, ready: bool) {
        self.ready.record(
            i64::from(ready),
            &[KeyValue::new("component", component.to_string())],
        );
    }

    /// One HTTP attempt; `status` 0 when no response came (connection error, timeout).
    pub fn provider_request(&self, l: &Labels<'_>, method: &str, status: u16, d: Duration) {
        let mut a = self.attrs(l, 2);
        a.push(KeyValue::new("http.request.method", method.to_string()));
        a.push(KeyValue::new(
            "http.response.status_code",
            i64::from(status),
        ));
        self.provider_request_duration.record(d.as_secs_f64(), &a);
    }

    pub fn throttled(&self, l: &Labels<'_>) {
        self.throttles.add(1, &self.attrs(l, 0));
    }

    pub fn budget_wait(&self, l: &Labels<'_>, d: Duration) {
        self.budget_wait.record(d.as_secs_f64(), &self.attrs(l, 0));
    }

    pub fn token_refresh(&self, l: &Labels<'_>, ok: bool) {
        let mut a = self.attrs(l, 1);
        a.push(KeyValue::new("outcome", if ok { "ok" } else { "failed" }));
        self.token_refreshes.add(1, &a);
    }

    /// Messages ready in a RabbitMQ queue (not those delivered and unacknowledged).
    pub fn queue_depth(&self, queue: &str, ready: u32) {
        self.queue_depth.record(
            i64::from(ready),
            &[KeyValue::new("queue", queue.to_string())],
        );
    }

    /// The lag of one partition this process consumes.
    pub fn consumer_lag(&self, topic: &str, partition: i32, lag: i64) {
        self.lags
            .lock()
            .expect("lags")
            .insert((topic.to_string(), partition), lag);
    }

    /// Replace every partition's lag at once, so partitions this process no longer holds
    /// stop being reported (another worker reports them now).
    pub fn consumer_lags(&self, lags: impl IntoIterator<Item = (String, i32, i64)>) {
        let fresh: HashMap<(String, i32), i64> =
            lags.into_iter().map(|(t, p, l)| ((t, p), l)).collect();
        *self.lags.lock().expect("lags") = fresh;
    }
}
