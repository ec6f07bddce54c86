//! `tributary-scheduler standalone`: everything in one process on embedded
//! defaults, for a first look: librdkafka's mock cluster as the broker, SQLite,
//! sandbox providers, demo tenants on different provider specs, the scheduler,
//! workers and the API. Progress goes to the terminal; any Kafka client can read
//! the topics at the address it prints.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::{Message, Offset, TopicPartitionList};
use serde_json::{json, Value};
use tributary::bootstrap::{Services, TopicSetup};
use tributary::bus::Topics;
use tributary::config::Settings;
use tributary::mapping::models::model_names;
use tributary::secrets::crypto::Cipher;
use tributary::store::{NewConnection, Store};
use tributary::sync::worker::{consume, StopSignal};
use tributary_sandbox::{self as sandbox, Profile, SandboxHandle};

use tributary_scheduler::api;

#[derive(clap::Args)]
pub struct Args {
    /// Where the demo keeps its SQLite database and encryption key (recreated each start).
    #[arg(long, default_value = "tributary-standalone")]
    data_dir: PathBuf,
    /// Where the control API listens.
    #[arg(long, default_value = "127.0.0.1:8080")]
    api_addr: String,
    /// Worker loops to run.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Stop after this many seconds (default: until Ctrl-C).
    #[arg(long)]
    duration_seconds: Option<u64>,
    /// The provider specs directory.
    #[arg(long, env = "TRIBUTARY_SPECS_DIR", default_value = "provider-specs")]
    specs_dir: PathBuf,
    /// This environment's overrides of the specs (`<provider>.yaml` files), checked at start.
    #[arg(long, env = "TRIBUTARY_OVERRIDES_DIR")]
    overrides_dir: Option<PathBuf>,
}

/// A demo tenant: its provider, the resources it syncs and credentials its sandbox accepts
/// (listed in `provider-specs/sandbox/demo.yaml`).
#[derive(Debug, Clone, serde::Deserialize)]
struct Demo {
    tenant: String,
    provider: String,
    resources: Vec<String>,
    #[serde(default)]
    config: serde_json::Map<String, Value>,
    credentials: Value,
}

#[derive(serde::Deserialize)]
struct Demos {
    tenants: Vec<Demo>,
}

fn demos(specs_dir: &std::path::Path) -> anyhow::Result<Vec<Demo>> {
    let path = specs_dir.join("sandbox/demo.yaml");
    let text = std::fs::read_to_string(&path).with_context(|| format!("{}", path.display()))?;
    let demos: Demos =
        serde_yaml_ng::from_str(&text).with_context(|| format!("{}", path.display()))?;
    Ok(demos.tenants)
}

/// The embedded deployment: the defaults, with small slices, short waits and quick cadences
/// so a first look shows every kind of event within minutes.
fn demo_settings(args: &Args, brokers: &str, db: &std::path::Path) -> Settings {
    let mut settings = Settings {
        kafka_brokers: brokers.to_string(),
        database_url: format!("sqlite://{}", db.display()),
        encryption_key: Some(Cipher::generate_key()),
        ..Settings::default()
    };
    settings.sync.specs_dir = args.specs_dir.clone();
    settings.sync.overrides_dir = args.overrides_dir.clone();
    settings.sync.slice_max_pages = 5;
    settings.sync.slice_max_duration = Duration::from_secs(10);
    settings.sync.engine.allow_private_hosts = true;
    settings.sync.engine.max_wait = Duration::from_secs(30);
    settings.sync.engine.breaker.settings.park_after = Duration::from_secs(10);
    settings.worker.session_timeout = Duration::from_secs(6);
    settings.worker.concurrency = 4;
    settings.schedule.max_jitter = Duration::from_secs(2);
    settings
}

/// A sandbox per demo tenant, and the tenant's connection to it; returns the sandboxes
/// (kept running) and a line per connection for the banner.
async fn start_demos(
    store: &Store,
    specs_dir: &std::path::Path,
    demos: &[Demo],
) -> anyhow::Result<(Vec<SandboxHandle>, Vec<String>)> {
    let mut sandboxes: Vec<SandboxHandle> = Vec::new();
    let mut summary = Vec::new();
    for demo in demos {
        let profile_path = specs_dir.join(format!("sandbox/{}.yaml", demo.provider));
        let mut profile = Profile::load(&profile_path).map_err(|e| anyhow!("{e}"))?;
        profile.rate_limit = None;
        let sbx = sandbox::start(
            profile.clone(),
            "127.0.0.1:0".parse().expect("valid address"),
        )
        .await?;
        let mut config = demo.config.clone();
        config.insert("base_url".into(), Value::String(sbx.base_url()));
        if let Some(o) = &profile.oauth {
            config.insert(
                "token_url".into(),
                Value::String(format!("{}{}", sbx.base_url(), o.path)),
            );
        }
        store.create_tenant(&demo.tenant).await?;
        let id = store
            .create_connection(&NewConnection {
                id: Some(format!("{}-{}", demo.tenant, demo.provider)),
                tenant: demo.tenant.clone(),
                provider: demo.provider.clone(),
                config,
                credentials: serde_json::from_value(demo.credentials.clone())?,
                resources: demo.resources.clone(),
                schedule: Some("@every 20s".into()),
                full_schedule: Some("@every 2m".into()),
                timezone: "UTC".into(),
                external_id: None,
            })
            .await?;
        summary.push(format!(
            "  {:<8} {:<9} {} ({})",
            demo.tenant,
            demo.provider,
            id,
            demo.resources.join(", ")
        ));
        sandboxes.push(sbx);
    }
    Ok((sandboxes, summary))
}

/// librdkafka's mock cluster with the pipeline's topics (it cannot create them on request).
fn mock_broker() -> anyhow::Result<(MockCluster<'static, DefaultProducerContext>, Topics)> {
    let cluster = MockCluster::new(1).context("cannot start librdkafka's mock cluster")?;
    // The names the demo settings give them (the defaults).
    let topics = Settings::default().topics();
    let mut names = vec![
        topics.jobs(),
        topics.urgent_jobs(),
        topics.status(),
        topics.dead_letters(),
    ];
    names.extend(model_names().map(|m| topics.model(m)));
    for t in &names {
        cluster
            .create_topic(t, 3, 1)
            .with_context(|| format!("creating topic {t}"))?;
    }
    Ok((cluster, topics))
}

/// A new SQLite database under `--data-dir` (the demo starts from nothing each time).
fn fresh_database(args: &Args) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("--data-dir {}", args.data_dir.display()))?;
    let db = args.data_dir.join("tributary.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    Ok(db)
}

/// The control API on `--api-addr`, with a fresh admin token.
async fn serve_api(args: &Args, services: &Services) -> anyhow::Result<(SocketAddr, String)> {
    let admin_token = format!(
        "demo-admin-{}",
        &Cipher::generate_key()[..12].replace(['/', '+', '='], "x")
    );
    let state = Arc::new(api::ApiState {
        store: services.store.clone(),
        publisher: services.publisher.clone(),
        topics: services.topics.clone(),
        specs_dir: args.specs_dir.clone(),
        admin_token: admin_token.clone(),
        syncer: Arc::new(services.syncer()),
        connect: api::ConnectState::default(),
        webhooks: api::webhooks::WebhookState {
            publisher: services.publisher.clone(),
            ack_timeout: services.settings.webhooks.ack_timeout,
        },
    });
    let listener = tokio::net::TcpListener::bind(&args.api_addr)
        .await
        .with_context(|| format!("--api-addr {}", args.api_addr))?;
    let api_addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, api::router(state)).await });
    Ok((api_addr, admin_token))
}

/// A few updates and one new record in each demo provider's first resource.
async fn change_providers(http: &reqwest::Client, sandboxes: &[SandboxHandle], demos: &[Demo]) {
    for (sbx, demo) in sandboxes.iter().zip(demos) {
        let _ = http
            .post(format!(
                "{}/_sandbox/resources/{}/mutate",
                sbx.base_url(),
                demo.resources[0]
            ))
            .json(&json!({"update": 2, "create": 1}))
            .send()
            .await;
    }
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let started = Instant::now();
    let (cluster, topics) = mock_broker()?;
    let brokers = cluster.bootstrap_servers();
    let db = fresh_database(&args)?;
    let services =
        Services::start(demo_settings(&args, &brokers, &db), TopicSetup::Existing).await?;
    let (store, publisher) = (services.store.clone(), services.publisher.clone());
    // Providers, tenants, connections.
    let demos = demos(&args.specs_dir)?;
    let (sandboxes, summary) = start_demos(&store, &args.specs_dir, &demos).await?;
    // Workers.
    let stop = StopSignal::default();
    let syncer = Arc::new(services.syncer());
    let mut workers = Vec::new();
    for _ in 0..args.workers.max(1) {
        let (syncer, stop, options) = (
            syncer.clone(),
            stop.clone(),
            services.settings.worker_options(),
        );
        workers.push(tokio::spawn(
            async move { consume(syncer, options, stop).await },
        ));
    }
    let intake = tokio::spawn(tributary::webhooks::intake::intake(
        syncer.clone(),
        services.settings.worker_options(),
        services.settings.webhooks.window,
        stop.clone(),
    ));
    let (api_addr, admin_token) = serve_api(&args, &services).await?;
    banner(&Banner {
        brokers: &brokers,
        topics: &topics,
        api_addr,
        admin_token: &admin_token,
        first: demos.first(),
        db: &db,
        summary: &summary,
    });
    // Scheduler, sandbox activity, progress.
    let scheduler = services.scheduler();
    let http = reqwest::Client::new();
    let watcher = Watcher::new(&brokers, &topics)?;
    let mut ticks = tokio::time::interval(Duration::from_secs(2));
    let deadline = args
        .duration_seconds
        .map(|s| started + Duration::from_secs(s));
    let mut round = 0u64;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = tokio::signal::ctrl_c() => break,
        }
        if let Err(e) = scheduler.tick(chrono::Utc::now()).await {
            eprintln!("tick failed: {e}");
        }
        round += 1;
        // Every 10 s the providers change a little, so updates (and, on full syncs, deletes) flow too.
        if round.is_multiple_of(5) {
            change_providers(&http, &sandboxes, &demos).await;
        }
        let counts = watcher.poll();
        println!("[{:>4}s] {}", started.elapsed().as_secs(), render(&counts));
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
    }
    println!("stopping: finishing current slices");
    stop.stop();
    for w in workers {
        let _ = w.await;
    }
    let _ = intake.await;
    // Clients first, the broker last, so none of them reports it gone.
    drop(watcher);
    drop(scheduler);
    drop(syncer);
    drop(publisher);
    drop(store);
    drop(services);
    drop(cluster);
    Ok(())
}

/// What the banner shows: where everything is.
struct Banner<'a> {
    brokers: &'a str,
    topics: &'a Topics,
    api_addr: std::net::SocketAddr,
    admin_token: &'a str,
    first: Option<&'a Demo>,
    db: &'a std::path::Path,
    summary: &'a [String],
}

fn banner(b: &Banner<'_>) {
    let (api_addr, admin_token) = (b.api_addr, b.admin_token);
    println!("Tributary standalone");
    println!("  Kafka (librdkafka mock cluster): {}", b.brokers);
    println!(
        "    read events with any Kafka client, e.g. topic {}",
        b.topics.model("crm.contact")
    );
    println!("  control API: http://{api_addr}  (admin token: {admin_token})");
    if let Some(first) = b.first {
        println!(
            "    curl -H 'Authorization: Bearer {admin_token}' http://{api_addr}/v1/connections/{}-{}",
            first.tenant, first.provider
        );
    }
    println!("  state: {} (recreated at each start)", b.db.display());
    println!("  demo tenants (sandbox providers, synced every 20 s, full sync every 2 min):");
    for line in b.summary {
        println!("{line}");
    }
}

fn render(counts: &BTreeMap<String, u64>) -> String {
    if counts.is_empty() {
        return "waiting for the first events...".into();
    }
    counts
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>()
        .join("  ")
}

/// Counts events by type on every model topic and the status topic.
struct Watcher {
    consumer: BaseConsumer,
    counts: std::cell::RefCell<BTreeMap<String, u64>>,
}

impl Watcher {
    fn new(brokers: &str, topics: &Topics) -> anyhow::Result<Self> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", "tributary-standalone-watcher")
            .set("enable.auto.commit", "false")
            .create()?;
        let mut list = TopicPartitionList::new();
        let mut watched: Vec<String> = model_names().map(|m| topics.model(m)).collect();
        watched.push(topics.status());
        for t in &watched {
            for p in 0..3 {
                list.add_partition_offset(t, p, Offset::Beginning)?;
            }
        }
        consumer.assign(&list)?;
        Ok(Watcher {
            consumer,
            counts: Default::default(),
        })
    }

    fn poll(&self) -> BTreeMap<String, u64> {
        let mut counts = self.counts.borrow_mut();
        // An error (e.g. about a watched topic no connection has written yet) is skipped,
        // not the end of the round: the messages behind it are counted too. Bounded, so a
        // steady stream of messages cannot hold the progress line back.
        for _ in 0..100_000 {
            let m = match self.consumer.poll(Duration::from_millis(50)) {
                None => break,
                Some(Err(_)) => continue,
                Some(Ok(m)) => m,
            };
            if let Some(kind) = m
                .payload()
                .and_then(|p| serde_json::from_slice::<Value>(p).ok())
                .and_then(|v| v["type"].as_str().map(String::from))
            {
                if kind != "run.started" {
                    *counts.entry(kind).or_default() += 1;
                }
            }
        }
        counts.clone()
    }
}
