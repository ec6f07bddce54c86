//! Records per second through the whole pipeline (pages -> normalize -> diff -> broker
//! acknowledged -> checkpoint), one slice through `Syncer::run_job`, beside two baselines
//! measured in the same run: fetching and parsing the same pages only, and producing the
//! same messages (the run's change events read back, published again to the same topic in
//! batches of a page, each acknowledged) to the same broker with nothing else. The pages
//! come from the replay server (recorded once from the sandbox by the engine). Needs tansu
//! and, for the PostgreSQL line, the local PostgreSQL (see the README). A last line runs
//! the PostgreSQL pipeline with its events on the local RabbitMQ, beside producing to the
//! exchange alone; the last two run the PostgreSQL pipeline through the worker's consume
//! loop in slices (each continuation a job on the bus), all on Kafka, then all on RabbitMQ
//! (jobs on its quorum queues, no Kafka), each beside producing its events to its bus.
//!
//! `cargo bench -p tributary-worker --bench pipeline` (TRIBUTARY_BENCH_RECORDS to resize).

mod common;

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{bench_records, rate, static_credentials, unbudgeted_specs};
use tributary::bus::kafka::ensure_topics;
use tributary::bus::{Job, JobReason, Publisher, Topics};
use tributary::domain::{RunMode, RunStatus};
use tributary::engine::RunOptions;
use tributary::mapping::models::model_names;
use tributary::store::Store;
use tributary::sync::worker::{consume, StopSignal, WorkerOptions};
use tributary::sync::{SliceOutcome, SyncSettings, Syncer};
use tributary_e2e::broker::Broker;
use tributary_e2e::replay::Replay;
use tributary_e2e::{fresh_postgres, fresh_sqlite, new_connection, test_cipher};

/// Best of three passes of the fetch + parse baseline.
async fn fetch_and_parse(replay: &Replay, n: usize) -> Duration {
    let http = reqwest::Client::new();
    let mut best = Duration::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        let (_, count) = replay.fetch_and_parse(&http).await;
        assert_eq!(count, n);
        best = best.min(t.elapsed());
    }
    best
}

/// The topics of one backend's run, created up front.
async fn topics(broker: &Broker, backend: &str) -> Topics {
    let topics = Topics::new(&format!("bench{backend}{}", std::process::id()));
    let mut wanted = vec![
        (topics.jobs(), 3),
        (topics.urgent_jobs(), 3),
        (topics.status(), 1),
        (topics.dead_letters(), 1),
    ];
    wanted.extend(model_names().map(|m| (topics.model(m), 3)));
    ensure_topics(&broker.addr, &wanted).await.unwrap();
    topics
}

/// A syncer on a fresh store with tenant `acme`'s connection to the replay server, slices
/// of `slice_pages` pages; the connection's id.
async fn syncer_on(
    url: String,
    publisher: Publisher,
    topics: Topics,
    specs: PathBuf,
    base: &str,
    slice_pages: u32,
) -> (Syncer, String) {
    let store = Store::connect(&url, test_cipher()).await.unwrap();
    store.create_tenant("acme").await.unwrap();
    let connection = store
        .create_connection(&new_connection(
            "acme",
            "hubspot",
            serde_json::json!({"base_url": base}),
            static_credentials(),
        ))
        .await
        .unwrap();
    let syncer = Syncer::new(
        store,
        publisher,
        SyncSettings {
            slice_max_pages: slice_pages,
            slice_max_duration: Duration::from_secs(3600),
            engine: RunOptions {
                allow_private_hosts: true,
                ..RunOptions::default()
            },
            ..SyncSettings::new(specs, topics)
        },
    );
    (syncer, connection)
}

fn full_run(connection: &str) -> Job {
    Job::new_run(
        "acme",
        connection,
        "contacts",
        RunMode::Full,
        JobReason::Schedule,
    )
}

/// One full run of a fresh connection, as one slice, publishing through `publisher`; its time.
async fn pipeline(
    url: String,
    publisher: Publisher,
    topics: Topics,
    specs: PathBuf,
    base: &str,
    n: usize,
) -> Duration {
    let (syncer, connection) = syncer_on(url, publisher, topics, specs, base, 1_000_000).await;
    let job = full_run(&connection);
    let stop = AtomicBool::new(false);
    let t = Instant::now();
    let outcome = syncer.run_job(&job, &stop).await.unwrap();
    let took = t.elapsed();
    match outcome {
        SliceOutcome::Completed(c) => assert_eq!(c.created as usize, n),
        other => panic!("{other:?}"),
    }
    took
}

/// Pages per slice in the worker-loop lines: the run's slices travel as jobs on the bus.
const LOOP_SLICE_PAGES: u32 = 20;

/// One full run through the worker's consume loop (`options` say which jobs bus), in slices
/// of `LOOP_SLICE_PAGES` pages, each continuation a job on the bus: the run's own time, from
/// its first slice's start to its end as the store records them (the consumer's start and
/// group join left out).
async fn worker_loop(
    url: String,
    publisher: Publisher,
    options: WorkerOptions,
    specs: PathBuf,
    base: &str,
    n: usize,
) -> Duration {
    let topics = options.topics.clone();
    let (syncer, connection) = syncer_on(
        url,
        publisher,
        topics.clone(),
        specs,
        base,
        LOOP_SLICE_PAGES,
    )
    .await;
    let syncer = Arc::new(syncer);
    let stop = StopSignal::default();
    let worker = tokio::spawn(consume(syncer.clone(), options, stop.clone()));
    let job = full_run(&connection);
    syncer.publisher().enqueue(&topics, &job).await.unwrap();
    let run = loop {
        // A benchmark's own wait: the run's times come from the store, not from this poll.
        match syncer.store().run(&job.run_id).await {
            Ok(run) if run.finished_at.is_some() => break run,
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    stop.stop();
    worker.await.unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Completed, "{run:?}");
    assert_eq!(run.counts.created as usize, n, "{run:?}");
    let at = |t: &str| chrono::DateTime::parse_from_rfc3339(t).unwrap();
    let finished = at(run.finished_at.as_deref().unwrap());
    (finished - at(&run.started_at)).to_std().unwrap()
}

#[tokio::main]
async fn main() {
    let n = bench_records(20_000);
    let broker = Broker::start();
    let sbx = tributary_e2e::pipeline::contacts_sandbox(n, |_| {}).await;
    let specs = unbudgeted_specs();
    let replay = Replay::start(&sbx.base_url());
    let n = replay
        .warm(
            &specs.join("hubspot.yaml"),
            "contacts",
            static_credentials(),
        )
        .await;
    let recorded = replay.misses();
    println!(
        "{n} HubSpot contacts, pages of 100 from the replay server, tansu broker at {}",
        broker.addr
    );
    let mut published = Vec::new();
    for (backend, url) in [
        ("sqlite", fresh_sqlite()),
        ("postgres", fresh_postgres().await),
    ] {
        if backend == "postgres" {
            println!("{}", common::postgres_note(&url).await);
        }
        let fetched = fetch_and_parse(&replay, n).await;
        let topics = topics(&broker, backend).await;
        let events = topics.model("crm.contact");
        common::reset_peak_rss("self");
        let rss_before = common::rss_mib("self").unwrap_or(0.0);
        let (cpu, served) = (common::self_cpu(), common::thread_cpu(replay.thread_id()));
        let publisher = Publisher::new(&broker.addr).unwrap();
        let full = pipeline(url, publisher, topics, specs.clone(), &replay.base_url(), n).await;
        let cpu = common::self_cpu() - cpu;
        let served = common::thread_cpu(replay.thread_id()) - served;
        let peak = common::peak_rss_mib("self").unwrap_or(0.0);
        let messages = common::read_back(&broker.addr, &events, n, |_| true);
        let produced = common::produce(&Publisher::new(&broker.addr).unwrap(), &messages, 1).await;
        let lower = rate(n, fetched).min(rate(n, produced));
        let per = 100_000.0 / n as f64;
        println!("{backend}:");
        println!(
            "  baseline  fetch + parse the same pages (best of 3):          {:>9.0} records/s",
            rate(n, fetched)
        );
        println!(
            "  baseline  produce the same {n} messages, batches of 100, acked: {:>9.0} records/s",
            rate(n, produced)
        );
        println!(
            "  pipeline  fetch, normalize, diff, publish (acked), commit:    {:>9.0} records/s  ({:.2}x the lower baseline; target >= 0.4x)",
            rate(n, full),
            rate(n, full) / lower
        );
        println!(
            "  CPU of this process per 100,000 records: {:.2} s (of which the replay server's thread {:.2} s); peak RSS during the run {peak:.0} MiB ({rss_before:.0} MiB resident at its start)",
            cpu * per,
            served * per
        );
        published = messages;
    }
    rabbitmq(&broker, &replay, &specs, published.clone()).await;
    worker_loops(&broker, &replay, &specs, published).await;
    assert_eq!(
        replay.misses(),
        recorded,
        "every timed request was answered from memory"
    );
}

/// The PostgreSQL line again with the events on RabbitMQ (this machine's, a virtual host
/// of the bench's own, a durable quorum queue bound to every key and not consumed), beside
/// producing the same messages to the same exchange, batches of a page, each confirmed.
async fn rabbitmq(
    broker: &Broker,
    replay: &Replay,
    specs: &std::path::Path,
    published: Vec<tributary::bus::OutMessage>,
) {
    let n = published.len();
    let vhost = tributary_e2e::amqp::TestVhost::new();
    let topics = topics(broker, "rabbitmq").await;
    let exchange = tributary::bus::amqp::events_exchange(&topics);
    tributary_e2e::amqp::bind_queue(&vhost.url(), &exchange, &["#"]).await;
    let on_rabbitmq = || async {
        let settings = tributary::bus::amqp::AmqpSettings {
            url: vhost.url(),
            mandatory: true,
        };
        let events = tributary::bus::amqp::AmqpEvents::connect(settings, &topics)
            .await
            .unwrap();
        Publisher::new(&broker.addr)
            .unwrap()
            .with_amqp_events(events, &topics)
    };
    let url = fresh_postgres().await;
    let fetched = fetch_and_parse(replay, n).await;
    let cpu = common::self_cpu();
    let full = pipeline(
        url,
        on_rabbitmq().await,
        topics.clone(),
        specs.to_path_buf(),
        &replay.base_url(),
        n,
    )
    .await;
    let cpu = common::self_cpu() - cpu;
    // The PostgreSQL Kafka run's events, to this run's events topic.
    let messages: Vec<tributary::bus::OutMessage> = (published.into_iter())
        .map(|mut m| {
            m.topic = topics.model("crm.contact");
            m
        })
        .collect();
    let produced = common::produce(&on_rabbitmq().await, &messages, 1).await;
    let lower = rate(n, fetched).min(rate(n, produced));
    println!("postgres, events on RabbitMQ ({exchange}, publisher confirms, mandatory):");
    println!(
        "  baseline  fetch + parse the same pages (best of 3):          {:>9.0} records/s",
        rate(n, fetched)
    );
    println!(
        "  baseline  produce {n} messages to the exchange, batches of 100, confirmed: {:>9.0} records/s",
        rate(n, produced)
    );
    println!(
        "  pipeline  fetch, normalize, diff, publish (confirmed), commit: {:>9.0} records/s  ({:.2}x the lower baseline)",
        rate(n, full),
        rate(n, full) / lower
    );
    println!(
        "  CPU of this process per 100,000 records: {:.2} s",
        cpu * 100_000.0 / n as f64
    );
}

/// The PostgreSQL pipeline through the worker's consume loop, its slices' jobs on the bus:
/// everything on Kafka (tansu), then everything on RabbitMQ (no Kafka), each beside
/// producing the same events to its own bus.
async fn worker_loops(
    broker: &Broker,
    replay: &Replay,
    specs: &std::path::Path,
    published: Vec<tributary::bus::OutMessage>,
) {
    let n = published.len();
    let retarget = |topics: &Topics| -> Vec<tributary::bus::OutMessage> {
        (published.iter().cloned())
            .map(|mut m| {
                m.topic = topics.model("crm.contact");
                m
            })
            .collect()
    };
    let slices = n.div_ceil(100 * LOOP_SLICE_PAGES as usize);
    println!(
        "postgres, through the worker loop ({slices} slices of {LOOP_SLICE_PAGES} pages, each continuation a job on the bus):"
    );

    let topics = topics(broker, "loopkafka").await;
    let options = WorkerOptions {
        brokers: broker.addr.clone(),
        topics: topics.clone(),
        session_timeout: Duration::from_secs(6),
        ..WorkerOptions::default()
    };
    let kafka = || Publisher::new(&broker.addr).unwrap();
    let url = fresh_postgres().await;
    let full = worker_loop(
        url,
        kafka(),
        options,
        specs.to_path_buf(),
        &replay.base_url(),
        n,
    )
    .await;
    let produced = common::produce(&kafka(), &retarget(&topics), 1).await;
    println!(
        "  kafka     jobs and events on tansu:    {:>9.0} records/s beside producing the events, acked, {:>9.0}/s ({:.2}x)",
        rate(n, full),
        rate(n, produced),
        rate(n, full) / rate(n, produced)
    );

    let vhost = tributary_e2e::amqp::TestVhost::new();
    let topics = Topics::new(&format!("benchloopamqp{}", std::process::id()));
    let exchange = tributary::bus::amqp::events_exchange(&topics);
    tributary_e2e::amqp::bind_queue(&vhost.url(), &exchange, &["#"]).await;
    let jobs = tributary::bus::amqp::AmqpJobSettings {
        url: vhost.url(),
        delivery_limit: 5,
        claim_ttl: Duration::from_secs(30),
    };
    let on_rabbitmq = || async {
        let settings = tributary::bus::amqp::AmqpSettings {
            url: vhost.url(),
            mandatory: true,
        };
        let events = tributary::bus::amqp::AmqpEvents::connect(settings, &topics);
        let queues = tributary::bus::amqp::AmqpJobs::connect(&jobs.url, &topics, 5);
        Publisher::without_kafka()
            .with_amqp_events(events.await.unwrap(), &topics)
            .with_amqp_jobs(queues.await.unwrap())
    };
    let options = WorkerOptions {
        topics: topics.clone(),
        amqp_jobs: Some(jobs.clone()),
        ..WorkerOptions::default()
    };
    let url = fresh_postgres().await;
    let publisher = on_rabbitmq().await;
    let full = worker_loop(
        url,
        publisher,
        options,
        specs.to_path_buf(),
        &replay.base_url(),
        n,
    )
    .await;
    let produced = common::produce(&on_rabbitmq().await, &retarget(&topics), 1).await;
    println!(
        "  rabbitmq  jobs and events on RabbitMQ: {:>9.0} records/s beside producing the events, confirmed, {:>9.0}/s ({:.2}x)",
        rate(n, full),
        rate(n, produced),
        rate(n, full) / rate(n, produced)
    );
}
