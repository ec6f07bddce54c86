//! The webhook receiver under load: HubSpot-style signed deliveries (v3 signature) sent
//! over loopback HTTP by an open-loop generator (requests start on a fixed schedule,
//! whatever became of the earlier ones) to the real receiver (`/webhooks/hubspot`:
//! verification, then an append to `<prefix>.webhooks` acknowledged by the broker,
//! librdkafka's mock cluster in this process). Beside it, in the same run, the same
//! generator against a trivial axum handler that answers 200 at once: the ratios of the
//! two give the receiver's own cost. After the run the messages on `<prefix>.webhooks`
//! are counted: they must equal the 2xx answers, and every request must have been
//! answered, 2xx, in time (else the bench prints why and exits 1).
//!
//! Run (from the workspace root):
//!
//! ```text
//! cargo bench -p tributary-scheduler --bench webhook_receiver
//! WEBHOOK_BENCH_RATE=1000 WEBHOOK_BENCH_SECONDS=3 cargo bench -p tributary-scheduler --bench webhook_receiver
//! ```
//!
//! WEBHOOK_BENCH_RATE: requests per second, 1,000 by default; WEBHOOK_BENCH_SECONDS: how
//! long each phase sends, 30 by default. (`CARGO_PROFILE_BENCH_DEBUG=0` makes the build
//! quicker.)
//!
//! Latency is measured from each request's scheduled start (so a generator or receiver
//! that falls behind shows in it). CPU time and peak RSS are the whole process's: the
//! generator and, for the receiver, the in-process mock broker are part of both phases.
//! The baseline runs first; the receiver's peak RSS starts from what the process held
//! after it (VmHWM is reset to the current RSS before each phase).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use tributary::connect::apps::Apps;
use tributary::sync::Syncer;
use tributary_e2e::broker::end_offsets;
use tributary_e2e::inprocess::InProcess;
use tributary_sandbox::webhooks::{sign, DigestAlgorithm, Encoding, SignatureRecipe, SignedPart};
use tributary_scheduler::api::webhooks::WebhookState;
use tributary_scheduler::api::{router, ApiState, ConnectState};

const CLIENT_SECRET: &str = "sandbox-client-secret";
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .filter(|v| *v > 0)
        .unwrap_or(default)
}

/// Start a new peak: the kernel resets VmHWM to the current RSS.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// CPU seconds this process has used, user + system (`/proc/self/stat` utime and stime,
/// in clock ticks of 1/100 s).
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name (which may hold spaces) start at the state.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// HubSpot's v3 signature: base64(HMAC-SHA256(client secret,
/// method + url + body + timestamp)).
fn hubspot_v3_signature(secret: &str, method: &str, url: &str, body: &str, ts: &str) -> String {
    let recipe = SignatureRecipe {
        header: "X-HubSpot-Signature-v3".into(),
        algorithm: DigestAlgorithm::HmacSha256,
        parts: vec![
            SignedPart::Method,
            SignedPart::Url,
            SignedPart::Body,
            SignedPart::Timestamp,
        ],
        encoding: Encoding::Base64,
        prefix: None,
    };
    let message = format!("{method}{url}{body}{ts}");
    sign(&recipe, secret.as_bytes(), message.as_bytes())
}

fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// One signed delivery of one `contact.propertyChange` event.
fn signed_request(
    client: &reqwest::Client,
    url: &str,
    n: u64,
    tamper: bool,
) -> reqwest::RequestBuilder {
    let ms = now_millis();
    let body = format!(
        r#"[{{"eventId":{n},"subscriptionId":1,"portalId":4711,"appId":1,"occurredAt":{ms},"subscriptionType":"contact.propertyChange","attemptNumber":0,"objectId":{n},"changeSource":"CRM"}}]"#
    );
    let ts = ms.to_string();
    let key = if tamper {
        "not-the-secret"
    } else {
        CLIENT_SECRET
    };
    let signature = hubspot_v3_signature(key, "POST", url, &body, &ts);
    client
        .post(url)
        .header("content-type", "application/json")
        .header("X-HubSpot-Request-Timestamp", ts)
        .header("X-HubSpot-Signature-v3", signature)
        .body(body)
}

enum Outcome {
    Status(u16),
    Error(String),
}

struct Phase {
    name: &'static str,
    sent: u64,
    statuses: BTreeMap<u16, u64>,
    errors: BTreeMap<String, u64>,
    /// Answered 2xx.
    ok: u64,
    /// Microseconds from the scheduled start to the answer, of all answered requests.
    latencies: Vec<u64>,
    /// From the first scheduled start to the last answer.
    elapsed: Duration,
    /// How late the generator started a request, at worst.
    max_lag: Duration,
    cpu: f64,
    peak_rss: f64,
}

impl Phase {
    fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[i] as f64 / 1000.0
    }

    fn max_ms(&self) -> f64 {
        self.latencies
            .last()
            .map_or(f64::NAN, |v| *v as f64 / 1000.0)
    }

    fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }
}

/// The open-loop generator: request `i` starts at `start + i / rate`, in its own task.
async fn load(name: &'static str, url: &str, rate: u64, seconds: u64, first_id: u64) -> Phase {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .pool_idle_timeout(Duration::from_secs(90))
        .timeout(REQUEST_TIMEOUT)
        .build()
        .unwrap();
    let total = rate * seconds;
    let period_ns = 1_000_000_000f64 / rate as f64;
    reset_peak_rss();
    let cpu_before = cpu_secs();
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    let mut tasks = Vec::with_capacity(total as usize);
    let mut max_lag = Duration::ZERO;
    for i in 0..total {
        let due = start + Duration::from_nanos((i as f64 * period_ns) as u64);
        tokio::time::sleep_until(due).await;
        max_lag = max_lag.max(tokio::time::Instant::now().saturating_duration_since(due));
        let request = signed_request(&client, url, first_id + i, false);
        let due = due.into_std();
        tasks.push(tokio::spawn(async move {
            let outcome = match request.send().await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    // Read the answer to its end so the connection goes back to the pool.
                    let _ = response.bytes().await;
                    Outcome::Status(status)
                }
                Err(e) => Outcome::Error(error_kind(&e)),
            };
            let done = Instant::now();
            (outcome, done.saturating_duration_since(due), done)
        }));
    }
    let mut phase = Phase {
        name,
        sent: total,
        statuses: BTreeMap::new(),
        errors: BTreeMap::new(),
        ok: 0,
        latencies: Vec::with_capacity(total as usize),
        elapsed: Duration::ZERO,
        max_lag,
        cpu: 0.0,
        peak_rss: 0.0,
    };
    let start = start.into_std();
    let mut last = start;
    for task in tasks {
        let (outcome, latency, done) = task.await.expect("a request task panicked");
        last = last.max(done);
        match outcome {
            Outcome::Status(status) => {
                if (200..300).contains(&status) {
                    phase.ok += 1;
                }
                *phase.statuses.entry(status).or_default() += 1;
                phase.latencies.push(latency.as_micros() as u64);
            }
            Outcome::Error(kind) => *phase.errors.entry(kind).or_default() += 1,
        }
    }
    phase.elapsed = last.saturating_duration_since(start);
    phase.cpu = cpu_secs() - cpu_before;
    phase.peak_rss = peak_rss_mib();
    phase.latencies.sort_unstable();
    phase
}

fn error_kind(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timeout".into()
    } else if e.is_connect() {
        "connect".into()
    } else if e.is_request() {
        "request".into()
    } else if e.is_body() {
        "body".into()
    } else {
        "other".into()
    }
}

/// The trivial server: 200 at once, no verification, no broker.
async fn baseline_server() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/webhooks/hubspot", listener.local_addr().unwrap());
    let app = Router::new().route("/webhooks/hubspot", post(|| async { StatusCode::OK }));
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// The real receiver on a loopback port, appending to the rig's mock cluster.
async fn receiver_server(rig: &InProcess) -> String {
    let lane = &rig.lane;
    let apps = Apps::parse(
        "apps:\n  hubspot: {client_id: sandbox-client, client_secret: sandbox-client-secret}\n",
        &|_| None,
    )
    .unwrap();
    let syncer = Arc::new(Syncer::new(
        lane.store.clone(),
        lane.publisher.clone(),
        rig.settings(),
    ));
    let state = Arc::new(ApiState {
        store: lane.store.clone(),
        publisher: lane.publisher.clone(),
        topics: lane.topics.clone(),
        specs_dir: rig.settings().specs_dir.clone(),
        admin_token: "admin-token-for-webhook-bench-0123".into(),
        syncer,
        connect: ConnectState {
            settings: Default::default(),
            apps,
        },
        webhooks: WebhookState::new(&lane.brokers, Duration::from_secs(2))
            .expect("the receiver's publisher"),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/webhooks/hubspot", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router(state)).await });
    url
}

fn counts<K: std::fmt::Display>(map: &BTreeMap<K, u64>) -> String {
    if map.is_empty() {
        return "none".into();
    }
    map.iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn print_table(receiver: &Phase, baseline: &Phase, stored: i64) {
    let other = |p: &Phase| {
        let mut m = p.statuses.clone();
        m.retain(|status, _| !(200..300).contains(status));
        counts(&m)
    };
    let rows: Vec<(&str, String, String)> = vec![
        (
            "requests sent",
            receiver.sent.to_string(),
            baseline.sent.to_string(),
        ),
        (
            "answered 2xx",
            receiver.ok.to_string(),
            baseline.ok.to_string(),
        ),
        ("other statuses", other(receiver), other(baseline)),
        (
            "unanswered (client errors)",
            counts(&receiver.errors),
            counts(&baseline.errors),
        ),
        (
            "sustained rate (2xx/s)",
            format!("{:.1}", receiver.rate()),
            format!("{:.1}", baseline.rate()),
        ),
        (
            "run (first start .. last answer)",
            format!("{:.2} s", receiver.elapsed.as_secs_f64()),
            format!("{:.2} s", baseline.elapsed.as_secs_f64()),
        ),
        (
            "latency p50",
            format!("{:.2} ms", receiver.percentile_ms(0.50)),
            format!("{:.2} ms", baseline.percentile_ms(0.50)),
        ),
        (
            "latency p99",
            format!("{:.2} ms", receiver.percentile_ms(0.99)),
            format!("{:.2} ms", baseline.percentile_ms(0.99)),
        ),
        (
            "latency max",
            format!("{:.2} ms", receiver.max_ms()),
            format!("{:.2} ms", baseline.max_ms()),
        ),
        (
            "generator lag max",
            format!("{:.2} ms", receiver.max_lag.as_secs_f64() * 1000.0),
            format!("{:.2} ms", baseline.max_lag.as_secs_f64() * 1000.0),
        ),
        (
            "process CPU (user+sys)",
            format!("{:.2} s", receiver.cpu),
            format!("{:.2} s", baseline.cpu),
        ),
        (
            "CPU per request",
            format!("{:.1} us", receiver.cpu * 1e6 / receiver.sent as f64),
            format!("{:.1} us", baseline.cpu * 1e6 / baseline.sent as f64),
        ),
        (
            "peak RSS (VmHWM)",
            format!("{:.1} MiB", receiver.peak_rss),
            format!("{:.1} MiB", baseline.peak_rss),
        ),
        (
            "messages on <prefix>.webhooks",
            stored.to_string(),
            "-".into(),
        ),
    ];
    let w0 = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    let w1 = rows
        .iter()
        .map(|r| r.1.len())
        .chain([receiver.name.len()])
        .max()
        .unwrap_or(0);
    let w2 = rows
        .iter()
        .map(|r| r.2.len())
        .chain([baseline.name.len()])
        .max()
        .unwrap_or(0);
    let line = format!(
        "+-{}-+-{}-+-{}-+",
        "-".repeat(w0),
        "-".repeat(w1),
        "-".repeat(w2)
    );
    println!("{line}");
    println!(
        "| {:<w0$} | {:>w1$} | {:>w2$} |",
        "", receiver.name, baseline.name
    );
    println!("{line}");
    for (k, a, b) in &rows {
        println!("| {k:<w0$} | {a:>w1$} | {b:>w2$} |");
    }
    println!("{line}");
    println!(
        "ratio receiver/baseline: rate {:.3}x, p50 {:.2}x, p99 {:.2}x, max {:.2}x, CPU {:.2}x, peak RSS {:.2}x",
        receiver.rate() / baseline.rate(),
        receiver.percentile_ms(0.50) / baseline.percentile_ms(0.50),
        receiver.percentile_ms(0.99) / baseline.percentile_ms(0.99),
        receiver.max_ms() / baseline.max_ms(),
        receiver.cpu / baseline.cpu,
        receiver.peak_rss / baseline.peak_rss
    );
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let rate = env_or("WEBHOOK_BENCH_RATE", 1000);
    let seconds = env_or("WEBHOOK_BENCH_SECONDS", 30);
    println!(
        "webhook receiver bench: {rate} signed webhooks/s for {seconds} s, open loop, loopback HTTP"
    );

    let rig = InProcess::start(1).await;
    let receiver_url = receiver_server(&rig).await;
    let baseline_url = baseline_server().await;
    let topic = rig.lane.topics.webhooks();

    // Sanity: a well-signed delivery is stored (200), a wrongly keyed one refused (401).
    let client = reqwest::Client::new();
    for (tamper, want) in [(false, 200u16), (true, 401u16)] {
        let got = signed_request(&client, &receiver_url, 0, tamper)
            .send()
            .await
            .expect("the receiver answers")
            .status()
            .as_u16();
        assert_eq!(got, want, "sanity request (wrong key: {tamper})");
    }
    let brokers = rig.lane.brokers.clone();
    let offsets = |topic: String| {
        let brokers = brokers.clone();
        async move {
            tokio::task::spawn_blocking(move || end_offsets(&brokers, &topic).iter().sum::<i64>())
                .await
                .unwrap()
        }
    };
    let before = offsets(topic.clone()).await;
    assert_eq!(before, 1, "the one sanity delivery is on {topic}");

    let baseline = load("baseline", &baseline_url, rate, seconds, 1_000_000_000).await;
    let receiver = load("receiver", &receiver_url, rate, seconds, 1).await;
    // Every request has been answered (or failed): what the broker holds now is final,
    // save appends that failed late, which would show as a mismatch.
    let stored = offsets(topic.clone()).await - before;

    print_table(&receiver, &baseline, stored);
    let mut failed = false;
    if stored == receiver.ok as i64 {
        println!(
            "NO LOSS: {stored} messages on {topic} = {} answers 2xx",
            receiver.ok
        );
    } else {
        println!(
            "LOSS CHECK FAILED: {} answered 2xx, {stored} messages on {topic}",
            receiver.ok
        );
        failed = true;
    }
    let unanswered: u64 = receiver.errors.values().sum();
    if unanswered > 0 {
        println!(
            "FAILED: {unanswered} of {} requests to the receiver went unanswered ({})",
            receiver.sent,
            counts(&receiver.errors)
        );
        failed = true;
    }
    let refused = receiver.sent - receiver.ok - unanswered;
    if refused > 0 {
        println!(
            "FAILED: {refused} of {} requests to the receiver were answered but not 2xx ({})",
            receiver.sent,
            counts(&receiver.statuses)
        );
        failed = true;
    }
    if failed {
        std::process::exit(1);
    }
    println!(
        "ALL ANSWERED: {} of {} requests answered 2xx, at {:.1}/s",
        receiver.ok,
        receiver.sent,
        receiver.rate()
    );
}
