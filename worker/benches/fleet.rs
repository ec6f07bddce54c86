//! One worker process (the real binary) syncing 20 connections at once, 5,000 HubSpot
//! contacts each (TRIBUTARY_BENCH_RECORDS per connection to resize), all served by the
//! replay server (every connection reads the same recorded pages: they are different
//! connections to the engine, with their own fingerprints and checkpoints), PostgreSQL
//! as the store, tansu as the broker. Prints the aggregate records/s, the CPU seconds per
//! 100,000 records of the worker, of PostgreSQL's backends serving the bench's database
//! and of the broker, and the worker's peak RSS, beside two baselines measured in the
//! same run: fetching and parsing the same pages (20 at once), and producing the same
//! messages (the runs' change events read back) to the same broker (20 streams at once,
//! batches of a page, each acknowledged) with nothing else.
//!
//! `cargo bench -p tributary-worker --bench fleet`

mod common;

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{bench_records, process_cpu, rate, static_credentials, unbudgeted_specs};
use tributary::bus::kafka::ensure_pipeline_topics;
use tributary::bus::{Job, JobReason};
use tributary::domain::RunMode;
use tributary::store::Store;
use tributary_e2e::fleet::completed_at;
use tributary_e2e::pipeline::{wait_run_end, Rig};
use tributary_e2e::replay::Replay;
use tributary_e2e::rig::PipelineRig;
use tributary_e2e::{fresh_postgres, repo_root};

const CONNECTIONS: usize = 20;
const WORKER: &str = env!("CARGO_BIN_EXE_tributary-worker");

/// The worker process, with the settings the process tests give it, the spec without its
/// request budget, a slot for every connection and slices as long as a run.
fn start_worker(rig: &Rig, specs: &std::path::Path) -> Child {
    let log =
        std::env::temp_dir().join(format!("tributary-bench-fleet-{}.log", std::process::id()));
    Command::new(WORKER)
        .arg("run")
        .current_dir(repo_root())
        .env("TRIBUTARY_KAFKA_BROKERS", &rig.broker.addr)
        .env("TRIBUTARY_DATABASE_URL", &rig.database_url)
        .env("TRIBUTARY_ENCRYPTION_KEY", &rig.key)
        .env("TRIBUTARY_SPECS_DIR", specs)
        .env("TRIBUTARY_TOPIC_PREFIX", &rig.lane.topics.prefix)
        .env("TRIBUTARY_ALLOW_PRIVATE_HOSTS", "true")
        .env("TRIBUTARY_KAFKA_SESSION_TIMEOUT_MS", "6000")
        .env("TRIBUTARY_JOBS_PARTITIONS", "3")
        .env("TRIBUTARY_WORKER_CONCURRENCY", CONNECTIONS.to_string())
        .env(
            "TRIBUTARY_WORKER_TENANT_CONCURRENCY",
            CONNECTIONS.to_string(),
        )
        .env("TRIBUTARY_SLICE_MAX_PAGES", "1000000")
        .env("TRIBUTARY_SLICE_MAX_SECONDS", "3600")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start the worker")
}

/// CPU seconds so far of each PostgreSQL backend connected to the store's database.
async fn postgres_cpu(store: &Store) -> HashMap<u32, f64> {
    let pids: Vec<i32> =
        sqlx::query_scalar("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
            .fetch_all(store.pool())
            .await
            .unwrap();
    pids.into_iter()
        .filter_map(|p| Some((p as u32, process_cpu(p as u32)?)))
        .collect()
}

/// The runs' CPU per process, from snapshots before and after.
struct Cpu {
    worker: f64,
    broker: Option<f64>,
    postgres: HashMap<u32, f64>,
}

impl Cpu {
    async fn now(worker: u32, broker: Option<u32>, store: &Store) -> Cpu {
        Cpu {
            worker: process_cpu(worker).unwrap(),
            broker: broker.and_then(process_cpu),
            postgres: postgres_cpu(store).await,
        }
    }

    /// (worker, broker, postgres) seconds since `before`; a backend that started since
    /// counts whole, one that exited meanwhile is missed.
    fn since(&self, before: &Cpu) -> (f64, Option<f64>, f64) {
        let postgres = self
            .postgres
            .iter()
            .map(|(pid, s)| s - before.postgres.get(pid).copied().unwrap_or(0.0))
            .sum();
        let broker = self.broker.zip(before.broker).map(|(a, b)| a - b);
        (self.worker - before.worker, broker, postgres)
    }
}

/// The fetch + parse baseline: every connection's pages, 20 readers at once.
async fn fetch_and_parse(replay: &Arc<Replay>, records: usize) -> Duration {
    let t = Instant::now();
    let readers: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            let replay = replay.clone();
            tokio::spawn(async move { replay.fetch_and_parse(&reqwest::Client::new()).await.1 })
        })
        .collect();
    let mut read = 0;
    for r in readers {
        read += r.await.unwrap();
    }
    assert_eq!(read, records);
    t.elapsed()
}

fn job(tenant: &str, connection: &str) -> Job {
    Job::new_run(
        tenant,
        connection,
        "contacts",
        RunMode::Full,
        JobReason::Schedule,
    )
}

#[tokio::main]
async fn main() {
    let per = bench_records(5_000);
    let url = fresh_postgres().await;
    println!("{}", common::postgres_note(&url).await);
    let rig = Rig::start("postgres", url, WORKER, per).await;
    ensure_pipeline_topics(&rig.broker.addr, &rig.lane.topics, 3)
        .await
        .unwrap();
    let specs = unbudgeted_specs();
    let replay = Arc::new(Replay::start(&rig.lane.sandbox.base_url()));
    let per = replay
        .warm(
            &specs.join("hubspot.yaml"),
            "contacts",
            static_credentials(),
        )
        .await;
    let recorded = replay.misses();
    let total = per * CONNECTIONS;
    // Tenant fleet00 is the warm-up run's (the worker joins its group, loads the spec).
    let mut connections = Vec::new();
    for i in 0..=CONNECTIONS {
        let tenant = format!("fleet{i:02}");
        rig.lane.store.create_tenant(&tenant).await.unwrap();
        let c = rig
            .static_connection(&tenant, &format!("{tenant}-hubspot"), &replay.base_url())
            .await;
        connections.push((tenant, c));
    }
    let mut worker = start_worker(&rig, &specs);
    let mut statuses = rig.statuses();
    let warm = job(&connections[0].0, &connections[0].1);
    rig.enqueue(&warm).await;
    let end = wait_run_end(&mut statuses, &warm.run_id, Duration::from_secs(120));
    assert_eq!(end["type"], "run.completed", "{end}");

    let (pid, store) = (worker.id(), &rig.lane.store);
    common::reset_peak_rss(&pid.to_string());
    let rss_before = common::rss_mib(&pid.to_string()).unwrap_or(0.0);
    let before = Cpu::now(pid, rig.broker.pid(), store).await;
    let t = Instant::now();
    let mut runs = Vec::new();
    for (tenant, connection) in &connections[1..] {
        let run = job(tenant, connection);
        rig.enqueue(&run).await;
        runs.push(run);
    }
    completed_at(&mut statuses, &runs);
    let took = t.elapsed();
    let (cpu_worker, cpu_broker, cpu_postgres) =
        Cpu::now(pid, rig.broker.pid(), store).await.since(&before);
    let peak = common::peak_rss_mib(&pid.to_string()).unwrap_or(0.0);
    let _ = worker.kill();
    let _ = worker.wait();

    let fetched = fetch_and_parse(&replay, total).await;
    let events = rig.lane.topics.model("crm.contact");
    let messages = common::read_back(&rig.broker.addr, &events, total, |k| {
        !k.starts_with("fleet00:")
    });
    let publisher = tributary::bus::Publisher::new(&rig.broker.addr).unwrap();
    let produced = common::produce(&publisher, &messages, CONNECTIONS).await;
    assert_eq!(
        replay.misses(),
        recorded,
        "every timed request was answered from memory"
    );

    let lower = rate(total, fetched).min(rate(total, produced));
    let per_100k = 100_000.0 / total as f64;
    println!("{CONNECTIONS} connections x {per} HubSpot contacts (the same recorded pages for each), one worker process, PostgreSQL, tansu");
    println!(
        "  baseline  fetch + parse the same pages, 20 readers at once:           {:>9.0} records/s",
        rate(total, fetched)
    );
    println!("  baseline  produce the same {total} messages, 20 streams, batches of 100: {:>9.0} records/s", rate(total, produced));
    println!(
        "  fleet     20 full runs at once, enqueue to the last run.completed:     {:>9.0} records/s  ({:.2}x the lower baseline; target >= 0.5x)",
        rate(total, took),
        rate(total, took) / lower
    );
    println!(
        "  CPU per 100,000 records: worker {:.2} s, PostgreSQL backends {:.2} s, broker {}",
        cpu_worker * per_100k,
        cpu_postgres * per_100k,
        cpu_broker.map_or("(not started by the bench)".into(), |b| format!(
            "{:.2} s",
            b * per_100k
        ))
    );
    println!("  worker peak RSS during the runs: {peak:.0} MiB ({rss_before:.0} MiB resident at their start)");
}
