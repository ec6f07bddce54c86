//! `tributary-scheduler standalone`: everything in one process on embedded
//! defaults, for a first look: librdkafka's mock cluster as the broker, SQLite,
//! sandbox providers, demo tenants on different provider specs, the scheduler,
//! workers and the API. Progress goes to the terminal; any Kafka client can read
//! the topics at the address it prints.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::{Message, Offset, TopicPartitionList};
use serde_json::{json, Value};
use tributary::bus::{Publisher, Topics};
use tributary::engine::RunOptions;
use tributary::mapping::models::model_names;
use tributary::sandbox::{self, Profile, SandboxHandle};
use tributary::schedule::tick::{ScheduleSettings, Scheduler};
use tributary::secrets::crypto::Cipher;
use tributary::store::{NewConnection, Store};
use tributary::sync::worker::{consume, StopSignal, WorkerOptions};
use tributary::sync::{SyncSettings, Syncer};

use crate::api;

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

pub async fn run(args: Args) -> anyhow::Result<()> {
    let started = Instant::now();
    // Broker.
    let cluster = MockCluster::new(1).context("cannot start librdkafka's mock cluster")?;
    let brokers = cluster.bootstrap_servers();
    let topics = Topics::new("tributary");
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
    // State.
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("--data-dir {}", args.data_dir.display()))?;
    let db = args.data_dir.join("tributary.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    let cipher = Cipher::from_base64(&Cipher::generate_key(), &[])?;
    let store = Store::connect(&format!("sqlite://{}", db.display()), cipher).await?;
    let publisher = Publisher::new(&brokers)?;
    // Providers, tenants, connections.
    let mut sandboxes: Vec<SandboxHandle> = Vec::new();
    let mut summary = Vec::new();
    let demos = demos(&args.specs_dir)?;
    for demo in &demos {
        let profile_path = args
            .specs_dir
            .join(format!("sandbox/{}.yaml", demo.provider));
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
    // Workers.
    let stop = StopSignal::default();
    let syncer = Arc::new(Syncer::new(
        store.clone(),
        publisher.clone(),
        SyncSettings {
            specs_dir: args.specs_dir.clone(),
            topics: topics.clone(),
            slice_max_pages: 5,
            slice_max_duration: Duration::from_secs(10),
            emit_remote_data: true,
            tombstones: false,
            engine: RunOptions {
                allow_private_hosts: true,
                max_wait: Duration::from_secs(30),
                park_after: Duration::from_secs(10),
                ..RunOptions::default()
            },
            ..SyncSettings::new(args.specs_dir.clone(), topics.clone())
        },
    ));
    let mut workers = Vec::new();
    for _ in 0..args.workers.max(1) {
        let (syncer, stop, topics, brokers) = (
            syncer.clone(),
            stop.clone(),
            topics.clone(),
            brokers.clone(),
        );
        workers.push(tokio::spawn(async move {
            consume(
                syncer,
                WorkerOptions {
                    brokers,
                    topics,
                    session_timeout: Duration::from_secs(6),
                    concurrency: 4,
                    tenant_concurrency: None,
                    // Several loops share this process (and the embedded broker): dynamic members.
                    instance_id: None,
                },
                stop,
            )
            .await
        }));
    }
    // API.
    let admin_token = format!(
        "demo-admin-{}",
        &Cipher::generate_key()[..12].replace(['/', '+', '='], "x")
    );
    let state = Arc::new(api::ApiState {
        store: store.clone(),
        publisher: publisher.clone(),
        topics: topics.clone(),
        specs_dir: args.specs_dir.clone(),
        admin_token: admin_token.clone(),
    });
    let listener = tokio::net::TcpListener::bind(&args.api_addr)
        .await
        .with_context(|| format!("--api-addr {}", args.api_addr))?;
    let api_addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, api::router(state)).await });
    println!("Tributary standalone");
    println!("  Kafka (librdkafka mock cluster): {brokers}");
    println!(
        "    read events with any Kafka client, e.g. topic {}",
        topics.model("crm.contact")
    );
    println!("  control API: http://{api_addr}  (admin token: {admin_token})");
    if let Some(first) = demos.first() {
        println!(
            "    curl -H 'Authorization: Bearer {admin_token}' http://{api_addr}/v1/connections/{}-{}",
            first.tenant, first.provider
        );
    }
    println!("  state: {} (recreated at each start)", db.display());
    println!("  demo tenants (sandbox providers, synced every 20 s, full sync every 2 min):");
    for line in &summary {
        println!("{line}");
    }
    // Scheduler, sandbox activity, progress.
    let scheduler = Scheduler::new(
        store.clone(),
        publisher.clone(),
        topics.clone(),
        ScheduleSettings {
            max_jitter: Duration::from_secs(2),
            ..ScheduleSettings::default()
        },
    );
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
            for (sbx, demo) in sandboxes.iter().zip(&demos) {
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
    // Clients first, the broker last, so none of them reports it gone.
    drop(watcher);
    drop(scheduler);
    drop(syncer);
    drop(publisher);
    drop(store);
    drop(cluster);
    Ok(())
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
        while let Some(Ok(m)) = self.consumer.poll(Duration::from_millis(50)) {
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
