//! Records per second through the whole pipeline (pages -> normalize -> diff -> broker
//! acknowledged -> checkpoint), one slice through `Syncer::run_job`, beside two baselines
//! measured in the same run: fetching and parsing the same pages only, and producing the
//! same messages (the run's change events read back, published again to the same topic in
//! batches of a page, each acknowledged) to the same broker with nothing else. The pages
//! come from the replay server (recorded once from the sandbox by the engine). Needs tansu
//! and, for the PostgreSQL line, the local PostgreSQL (see the README). A last line runs
//! the PostgreSQL pipeline with its events on the local RabbitMQ, beside producing to the
//! exchange alone.
//!
//! `cargo bench -p tributary-worker --bench pipeline` (TRIBUTARY_BENCH_RECORDS to resize).

mod common;

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use common::{bench_records, rate, static_credentials, unbudgeted_specs};
use tributary::bus::kafka::ensure_topics;
use tributary::bus::{Job, JobReason, Publisher, Topics};
use tributary::domain::RunMode;
use tributary::engine::RunOptions;
use tributary::mapping::models::model_names;
use tributary::store::Store;
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
        (topics.status(), 1),
        (topics.dead_letters(), 1),
    ];
    wanted.extend(model_names().map(|m| (topics.model(m), 3)));
    ensure_topics(&broker.addr, &wanted).await.unwrap();
    topics
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
            slice_max_pages: 1_000_000,
            slice_max_duration: Duration::from_secs(3600),
            engine: RunOptions {
                allow_private_hosts: true,
                ..RunOptions::default()
            },
            ..SyncSettings::new(specs, topics)
        },
    );
    let job = Job::new_run(
        "acme",
        &connection,
        "contacts",
        RunMode::Full,
        JobReason::Schedule,
    );
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
    rabbitmq(&broker, &replay, &specs, published).await;
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
