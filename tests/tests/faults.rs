//! Faults are survived, not exited or frozen, against the real processes: worker
//! processes from the real binary, a tansu broker and a PostgreSQL cluster of the test's
//! own (so stopping or freezing them disturbs nobody else).
//!
//! - a job that panics fails its run with a status event naming the panic, its offset is
//!   settled, and a later job on the same partition runs;
//! - PostgreSQL stopped for 30 s, and for 3 minutes, mid-run; the broker frozen (SIGSTOP)
//!   for 30 s mid-run: the workers keep running, report not-ready meanwhile, resume by
//!   themselves, every record arrives, duplicates only under their original's event id,
//!   no run fails;
//! - with events on RabbitMQ, RabbitMQ restarted (`rabbitmqctl stop_app`, `start_app`)
//!   mid-run: likewise, at a host's durable queue; and again with the jobs on RabbitMQ too
//!   (no Kafka at all).
//!
//! They take minutes and stop services, so they are ignored by default; `.ci/run` runs
//! them alone at the end (`cargo test -p tributary-e2e --test faults -- --ignored
//! --test-threads=1`, after `cargo build -p tributary-worker -p tributary-scheduler`). Each prints a `fault:` line
//! with what it measured.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tributary::bus::{Job, JobReason};
use tributary::domain::{RunMode, RunStatus};
use tributary_e2e::broker::{free_port, Broker, Received};
use tributary_e2e::check_event_schema;
use tributary_e2e::outage::{
    binary, committed_and_end, signal, small_page_specs, worker_binary, PrivatePostgres,
    ReadinessWatch,
};
use tributary_e2e::pipeline::{wait_group_settled, wait_run_end, Rig, WorkerProcess};
use tributary_e2e::rig::PipelineRig;

const LONG: Duration = Duration::from_secs(240);

/// Record ids and event ids of the change events received so far.
fn ids(received: &[Received]) -> Vec<(String, String)> {
    received
        .iter()
        .filter_map(|r| r.value.as_ref())
        .map(|v| {
            (
                v["record_id"].as_str().unwrap_or_default().to_string(),
                v["id"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn distinct_records(received: &[Received]) -> usize {
    ids(received)
        .into_iter()
        .map(|(r, _)| r)
        .collect::<HashSet<_>>()
        .len()
}

/// A panic inside a job (here: a token endpoint answering an absurd `expires_in`, which
/// overflows the expiry computation) fails the run with a `run.failed` status event naming
/// the panic; the run is failed in the store, the job's offset is committed, and the next
/// job on the same partition (the same tenant's other connection) runs to completion.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "stops shared services: run alone by .ci/run after the rest"]
async fn a_panic_in_a_job_fails_its_run_and_the_partition_goes_on() {
    let pg = PrivatePostgres::start();
    let url = pg.fresh_database().await;
    let n = 30;
    let rig = Rig::start_on(
        Broker::start_own(),
        "postgres",
        url,
        &worker_binary(),
        n,
        |p| {
            // Past what a chrono duration holds (about 9.2e15 s), within what the sandbox's clock does.
            p.oauth.as_mut().unwrap().access_token_ttl_seconds = 10_000_000_000_000_000;
        },
    )
    .await;
    let other = rig.add_static_connection("conn_static").await;
    let mut worker = rig.worker(&[]);
    let mut statuses = rig.statuses();
    let panicking = rig.job(RunMode::Full);
    let started = Instant::now();
    rig.enqueue(&panicking).await;
    let end = wait_run_end(&mut statuses, &panicking.run_id, LONG);
    let failed_after = started.elapsed();
    assert_eq!(end["type"], "run.failed", "{end}");
    check_event_schema("status-event", &end).unwrap();
    let reason = end["reason"].as_str().unwrap();
    for part in [
        "panicked",
        &rig.lane.connection,
        "contacts",
        &panicking.run_id,
    ] {
        assert!(reason.contains(part), "the reason names {part}: {reason}");
    }
    let run = rig.lane.store.run(&panicking.run_id).await.unwrap();
    assert_eq!(run.status, RunStatus::Failed, "{run:?}");

    // The same tenant's jobs share a partition: the next one must run.
    let next = Job::new_run(
        &rig.lane.tenant,
        &other,
        "contacts",
        RunMode::Full,
        JobReason::Schedule,
    );
    rig.enqueue(&next).await;
    let end = wait_run_end(&mut statuses, &next.run_id, LONG);
    assert_eq!(end["type"], "run.completed", "{end}");
    assert_eq!(end["counts"]["created"], n, "{end}");
    assert!(
        worker.is_running(),
        "the worker goes on:\n{}",
        worker.log_text()
    );

    // Every job message of the partition is settled: the committed offset reaches its end.
    let group = rig.lane.topics.consumer_group();
    let deadline = Instant::now() + Duration::from_secs(30);
    let offsets = loop {
        let offsets = committed_and_end(&rig.broker.addr, &group, &rig.lane.topics.jobs());
        if offsets.iter().all(|(at, end)| *end == 0 || at == end) {
            break offsets;
        }
        assert!(
            Instant::now() < deadline,
            "the jobs topic's offsets are not all committed: {offsets:?}\n{}",
            worker.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    println!(
        "fault: panic in a job: run.failed after {:.1} s ({reason}); later job on the same partition completed ({n} records); committed/end offsets {offsets:?}",
        failed_after.as_secs_f64()
    );
}

/// What an outage does.
#[derive(Clone, Copy, Debug)]
enum Fault {
    StopPostgres(Duration),
    FreezeBroker(Duration),
}

impl Fault {
    fn dependency(self) -> &'static str {
        match self {
            Fault::StopPostgres(_) => "store",
            Fault::FreezeBroker(_) => "broker",
        }
    }
}

/// A full run of `n` records over small, slow pages on three workers; the fault lands
/// mid-run and lasts its time; then the run must complete with every record downstream,
/// duplicates only under their original's id, no failed run, and every worker not ready
/// meanwhile and ready again after.
async fn outage(name: &str, fault: Fault) {
    let n = 300u64;
    let pg = PrivatePostgres::start();
    let url = pg.fresh_database().await;
    let broker = Broker::start_own();
    let broker_pid = broker.pid().expect("the test's own broker");
    let rig = Rig::start_on(broker, "postgres", url, &worker_binary(), n, |_| {}).await;
    rig.lane
        .control
        .faults(json!([{"kind": "slow", "delay_ms": 150, "times": 0}]))
        .await
        .unwrap();
    let specs = small_page_specs(10);
    let addrs: Vec<String> = (0..3)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let mut workers: Vec<WorkerProcess> = addrs
        .iter()
        .map(|addr| {
            rig.worker(&[
                ("TRIBUTARY_SPECS_DIR", specs.display().to_string()),
                ("TRIBUTARY_SLICE_MAX_PAGES", "3".into()),
                ("TRIBUTARY_HEALTH_ADDR", addr.clone()),
            ])
        })
        .collect();
    wait_group_settled(&workers, &rig.lane.topics.jobs(), 1);
    let watch = ReadinessWatch::start(addrs.clone());
    for addr in &addrs {
        watch.wait_ready(addr, Duration::from_secs(30));
    }
    let mut events = rig.events();
    let mut statuses = rig.statuses();
    let job = rig.job(RunMode::Full);
    rig.enqueue(&job).await;
    events.read_until(LONG, "the first pages' events", |all| all.len() >= 60);

    let lasts = match fault {
        Fault::StopPostgres(d) => {
            pg.stop();
            d
        }
        Fault::FreezeBroker(d) => {
            signal(broker_pid, "STOP");
            d
        }
    };
    // The outage itself: its length is the point, nothing to wait for.
    tokio::time::sleep(lasts).await;
    for (addr, w) in addrs.iter().zip(workers.iter_mut()) {
        assert!(w.is_running(), "{name}: a worker exited:\n{}", w.log_text());
        assert!(
            watch.saw_down(addr, fault.dependency()),
            "{name}: {addr} never said the {} was down: {:?}",
            fault.dependency(),
            watch.probes()
        );
    }
    events.drain_for(Duration::from_millis(500));
    let before = distinct_records(&events.received);
    match fault {
        Fault::StopPostgres(_) => pg.resume(),
        Fault::FreezeBroker(_) => signal(broker_pid, "CONT"),
    }
    let back = Instant::now();
    events.read_until(LONG, "progress after the outage", |all| {
        distinct_records(all) > before || before >= n as usize
    });
    let resumed_after = back.elapsed();

    let end = wait_run_end(&mut statuses, &job.run_id, LONG);
    assert_eq!(end["type"], "run.completed", "{name}: {end}");
    events.read_until(LONG, "every record", |all| {
        distinct_records(all) >= n as usize
    });
    events.drain_for(Duration::from_secs(2));
    let mut per_record: HashMap<String, HashSet<String>> = HashMap::new();
    for (record, id) in ids(&events.received) {
        per_record.entry(record).or_default().insert(id);
    }
    let received = events.received.len();
    let duplicates = received - per_record.len();
    let same_id = per_record.values().all(|ids| ids.len() == 1);
    assert_eq!(
        per_record.len(),
        n as usize,
        "{name}: every record is downstream"
    );
    assert!(same_id, "{name}: every duplicate has its original's id");
    let failed: Vec<&Value> = statuses
        .received
        .iter()
        .filter_map(|r| r.value.as_ref())
        .filter(|v| v["type"] == "run.failed")
        .collect();
    assert!(failed.is_empty(), "{name}: no run failed: {failed:?}");
    let runs = rig
        .lane
        .store
        .runs(&rig.lane.connection, 100)
        .await
        .unwrap();
    assert!(
        runs.iter().all(|r| r.status != RunStatus::Failed),
        "{name}: no run failed in the store: {runs:?}"
    );
    for (addr, w) in addrs.iter().zip(workers.iter_mut()) {
        watch.wait_ready(addr, Duration::from_secs(30));
        assert!(w.is_running(), "{name}: a worker exited:\n{}", w.log_text());
    }
    println!(
        "fault: {name}: records expected {n}, received {} distinct in {received} events, duplicates {duplicates} (all with their original's id: {}), the fleet made progress {:.1} s after the {} came back",
        per_record.len(),
        if same_id { "yes" } else { "no" },
        resumed_after.as_secs_f64(),
        fault.dependency()
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "stops shared services: run alone by .ci/run after the rest"]
async fn postgres_stopped_for_30_seconds_mid_sync() {
    outage(
        "PostgreSQL stopped for 30 s",
        Fault::StopPostgres(Duration::from_secs(30)),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "stops shared services: run alone by .ci/run after the rest"]
async fn postgres_stopped_for_3_minutes_mid_sync() {
    outage(
        "PostgreSQL stopped for 3 minutes",
        Fault::StopPostgres(Duration::from_secs(180)),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "stops shared services: run alone by .ci/run after the rest"]
async fn broker_frozen_for_30_seconds_mid_sync() {
    outage(
        "broker frozen (SIGSTOP) for 30 s",
        Fault::FreezeBroker(Duration::from_secs(30)),
    )
    .await;
}

/// The scheduler through a store outage and a broker freeze: it keeps running, `/healthz`
/// stays 200, `/readyz` answers 503 naming what is down, and 200 again once it is back.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "stops shared services: run alone by .ci/run after the rest"]
async fn the_scheduler_waits_out_store_and_broker_outages() {
    let pg = PrivatePostgres::start();
    let url = pg.fresh_database().await;
    let broker = Broker::start_own();
    let pid = broker.pid().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let log = std::env::temp_dir().join(format!(
        "tributary-scheduler-{}.log",
        uuid::Uuid::new_v4().simple()
    ));
    let mut scheduler = std::process::Command::new(binary("tributary-scheduler"))
        .arg("run")
        .current_dir(tributary_e2e::repo_root())
        .env("TRIBUTARY_DATABASE_URL", &url)
        .env("TRIBUTARY_KAFKA_BROKERS", &broker.addr)
        .env(
            "TRIBUTARY_ENCRYPTION_KEY",
            tributary::secrets::crypto::Cipher::generate_key(),
        )
        .env("TRIBUTARY_ADMIN_TOKEN", "fault-test-admin")
        .env("TRIBUTARY_API_ADDR", &addr)
        .env("TRIBUTARY_SCHEDULER_TICK_SECONDS", "1")
        .env(
            "TRIBUTARY_TOPIC_PREFIX",
            format!("s{}", &uuid::Uuid::new_v4().simple().to_string()[..10]),
        )
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let watch = ReadinessWatch::start(vec![addr.clone()]);
    watch.wait_ready(&addr, Duration::from_secs(60));
    let http = reqwest::Client::new();
    for (dependency, lasts) in [("store", 15), ("broker", 15)] {
        match dependency {
            "store" => pg.stop(),
            _ => signal(pid, "STOP"),
        }
        // The outage itself: its length is the point.
        tokio::time::sleep(Duration::from_secs(lasts)).await;
        assert!(watch.saw_down(&addr, dependency), "{:?}", watch.probes());
        let live = http
            .get(format!("http://{addr}/healthz"))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .unwrap();
        assert_eq!(live.status(), 200, "liveness stays up");
        match dependency {
            "store" => pg.resume(),
            _ => signal(pid, "CONT"),
        }
        let back = Instant::now();
        watch.wait_ready(&addr, Duration::from_secs(60));
        assert!(
            matches!(scheduler.try_wait(), Ok(None)),
            "the scheduler exited:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        println!(
            "fault: scheduler, {dependency} away for {lasts} s: kept running, not ready meanwhile, ready {:.1} s after it came back",
            back.elapsed().as_secs_f64()
        );
    }
    let _ = scheduler.kill();
    let _ = scheduler.wait();
}

/// Events on RabbitMQ, and RabbitMQ restarted mid-sync (`rabbitmqctl stop_app`, 10 s,
/// `start_app`): the workers' pages fail while it is away and are retried, the publisher
/// connects again and re-declares the exchange, and every record arrives at a host's
/// durable queue, duplicates only under their original's event id, no run failed.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "stops shared services: run alone by .ci/run after the rest"]
async fn rabbitmq_restarted_mid_sync() {
    let n = 300u64;
    let rig = Rig::start(
        "postgres",
        tributary_e2e::fresh_postgres().await,
        &worker_binary(),
        n,
    )
    .await
    .with_rabbitmq_events();
    rabbitmq_restarted(rig, n, "RabbitMQ restarted (stop_app, 10 s, start_app)").await;
}

/// The same with the jobs on RabbitMQ too (no Kafka at all): the workers' consumers lose
/// the broker as well, connect again, re-declare the queues and consume again; the jobs
/// they had not acknowledged come back to the queues and are resumed from the checkpoint.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "stops shared services: run alone by .ci/run after the rest"]
async fn rabbitmq_restarted_with_the_jobs_on_it() {
    let n = 300u64;
    let url = tributary_e2e::fresh_postgres().await;
    let rig = Rig::without_kafka("postgres", url, &worker_binary(), n).await;
    let name = "RabbitMQ restarted with events and jobs on it (stop_app, 10 s, start_app)";
    rabbitmq_restarted(rig, n, name).await;
}

async fn rabbitmq_restarted(rig: Rig, n: u64, name: &str) {
    rig.lane
        .control
        .faults(json!([{"kind": "slow", "delay_ms": 150, "times": 0}]))
        .await
        .unwrap();
    let specs = small_page_specs(10);
    let mut workers: Vec<WorkerProcess> = (0..3)
        .map(|_| {
            rig.worker(&[
                ("TRIBUTARY_SPECS_DIR", specs.display().to_string()),
                ("TRIBUTARY_SLICE_MAX_PAGES", "3".into()),
            ])
        })
        .collect();
    if !rig.jobs_on_amqp {
        wait_group_settled(&workers, &rig.lane.topics.jobs(), 1);
    }
    let mut events = rig.events();
    let mut statuses = rig.statuses();
    let job = rig.job(RunMode::Full);
    rig.enqueue(&job).await;
    events.read_until(LONG, "the first pages' events", |all| all.len() >= 60);

    tributary_e2e::amqp::stop_app();
    // The outage itself: its length is the point, nothing to wait for.
    tokio::time::sleep(Duration::from_secs(10)).await;
    for w in workers.iter_mut() {
        assert!(w.is_running(), "{name}: a worker exited:\n{}", w.log_text());
    }
    events.drain_for(Duration::from_millis(500));
    let before = distinct_records(&events.received);
    assert!(
        before < n as usize,
        "{name}: the sync was still running when RabbitMQ stopped"
    );
    assert!(
        workers
            .iter()
            .any(|w| w.log_text().contains("slice could not reach the broker")),
        "{name}: a worker's page failed while RabbitMQ was away"
    );
    let back = Instant::now();
    tributary_e2e::amqp::start_app();
    let broker_up = back.elapsed();
    events.read_until(LONG, "progress after the restart", |all| {
        distinct_records(all) > before || before >= n as usize
    });
    let resumed_after = back.elapsed();

    let end = wait_run_end(&mut statuses, &job.run_id, LONG);
    assert_eq!(end["type"], "run.completed", "{name}: {end}");
    events.read_until(LONG, "every record", |all| {
        distinct_records(all) >= n as usize
    });
    events.drain_for(Duration::from_secs(2));
    let mut per_record: HashMap<String, HashSet<String>> = HashMap::new();
    for (record, id) in ids(&events.received) {
        per_record.entry(record).or_default().insert(id);
    }
    let received = events.received.len();
    assert_eq!(
        per_record.len(),
        n as usize,
        "{name}: every record is downstream"
    );
    let same_id = per_record.values().all(|ids| ids.len() == 1);
    assert!(same_id, "{name}: every duplicate has its original's id");
    let runs = rig
        .lane
        .store
        .runs(&rig.lane.connection, 100)
        .await
        .unwrap();
    assert!(
        runs.iter().all(|r| r.status != RunStatus::Failed),
        "{name}: no run failed: {runs:?}"
    );
    for w in workers.iter_mut() {
        assert!(w.is_running(), "{name}: a worker exited:\n{}", w.log_text());
    }
    println!(
        "fault: {name}: records expected {n}, received {} distinct in {received} events, duplicates {} (all with their original's id: {}), new events {:.1} s after `start_app` began (RabbitMQ itself took {:.1} s to start)",
        per_record.len(),
        received - per_record.len(),
        if same_id { "yes" } else { "no" },
        resumed_after.as_secs_f64(),
        broker_up.as_secs_f64(),
    );
}
