//! Records per second through the whole pipeline (sandbox -> normalize -> diff ->
//! broker acknowledged -> checkpoint), beside the same run's baseline of fetching
//! and parsing the same pages only. Needs tansu (see the README) and, for the
//! PostgreSQL line, the local PostgreSQL.
//!
//! `cargo bench -p tributary-worker --bench pipeline` (TRIBUTARY_BENCH_RECORDS to resize).

use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use serde_json::Value;
use tributary::bus::kafka::ensure_topics;
use tributary::bus::{Job, JobReason, Publisher, Topics};
use tributary::domain::RunMode;
use tributary::engine::RunOptions;
use tributary::mapping::models::model_names;
use tributary::store::Store;
use tributary::sync::{SliceOutcome, SyncSettings, Syncer};
use tributary_e2e::broker::Broker;
use tributary_e2e::{fresh_postgres, fresh_sqlite, new_connection, repo_root, test_cipher};

async fn fetch_and_parse(base: &str, n: usize) -> Duration {
    let t = Instant::now();
    let (_, count) = tributary_e2e::fetch_and_parse_contacts(&reqwest::Client::new(), base).await;
    assert_eq!(count, n);
    t.elapsed()
}

async fn pipeline(backend: &str, url: String, broker: &Broker, base: &str, n: usize) -> Duration {
    let store = Store::connect(&url, test_cipher()).await.unwrap();
    store.create_tenant("acme").await.unwrap();
    let connection = store
        .create_connection(&new_connection(
            "acme",
            "hubspot",
            serde_json::json!({"base_url": base}),
            serde_json::json!({"access_token": "sandbox-hubspot-token"}),
        ))
        .await
        .unwrap();
    let topics = Topics::new(&format!("bench{backend}{}", std::process::id()));
    let mut wanted = vec![
        (topics.jobs(), 3),
        (topics.status(), 1),
        (topics.dead_letters(), 1),
    ];
    wanted.extend(model_names().map(|m| (topics.model(m), 3)));
    ensure_topics(&broker.addr, &wanted).await.unwrap();
    // The spec without its request budget (100 per 10 s would measure HubSpot's limit).
    let specs = std::env::temp_dir().join(format!("tributary-bench-specs-{}", std::process::id()));
    std::fs::create_dir_all(&specs).unwrap();
    let mut doc: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(repo_root().join("provider-specs/hubspot.yaml")).unwrap(),
    )
    .unwrap();
    doc.as_object_mut().unwrap().remove("rate_limit");
    std::fs::write(
        specs.join("hubspot.yaml"),
        serde_yaml_ng::to_string(&doc).unwrap(),
    )
    .unwrap();
    let syncer = Syncer::new(
        store,
        Publisher::new(&broker.addr).unwrap(),
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
    let n: u64 = std::env::var("TRIBUTARY_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let broker = Broker::start();
    let mut profile =
        tributary_sandbox::Profile::load(&repo_root().join("provider-specs/sandbox/hubspot.yaml"))
            .unwrap();
    profile.rate_limit = None;
    profile.resources.get_mut("contacts").unwrap().count = n;
    let sbx = tributary_sandbox::start(profile, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let base = sbx.base_url();
    let n = n as usize;
    // Warm the sandbox's rendered-record cache.
    fetch_and_parse(&base, n).await;
    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    println!(
        "{n} HubSpot contacts, pages of 100, tansu broker at {}",
        broker.addr
    );
    for (backend, url) in [
        ("sqlite", fresh_sqlite()),
        ("postgres", fresh_postgres().await),
    ] {
        let baseline = fetch_and_parse(&base, n).await;
        let full = pipeline(backend, url, &broker, &base, n).await;
        println!("{backend}:");
        println!(
            "  baseline  fetch + parse the same pages:                  {:>9.0} records/s",
            rate(baseline)
        );
        println!(
            "  pipeline  fetch, normalize, diff, publish (acked), commit: {:>9.0} records/s  ({:.2}x the baseline's time)",
            rate(full),
            full.as_secs_f64() / baseline.as_secs_f64()
        );
    }
}
