//! The sync pipeline on RabbitMQ: worker processes from the real binary, PostgreSQL, and
//! this machine's RabbitMQ (a virtual host of each test's own, removed afterwards). The
//! readers bind queues to the `<prefix>.events` exchange as a host would.
//!
//! - events on RabbitMQ (`TRIBUTARY_EVENTS_BUS=rabbitmq`), jobs on tansu: the lifecycle;
//! - jobs on RabbitMQ too (`TRIBUTARY_JOBS_BUS=rabbitmq`, no Kafka anywhere): a worker
//!   killed mid-run (its job redelivered, resumed from the checkpoint, every record once
//!   with its id), a rate-limited run parked in the delay queues, and poison jobs (not a
//!   job; a job that panics every time) dead-lettered to `<prefix>.jobs.dead` with their
//!   reasons while other jobs keep flowing.
//!
//! Process-level tier: needs tansu, PostgreSQL and RabbitMQ (see the README).
#![cfg(feature = "process-tests")]

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tributary::bus::amqp::JobQueues;
use tributary::bus::{Job, JobReason};
use tributary::domain::{RunMode, RunStatus};
use tributary_e2e::broker::Received;
use tributary_e2e::fresh_postgres;
use tributary_e2e::pipeline::{of_run, values, wait_run_end, Rig};
use tributary_e2e::rig::PipelineRig;
use tributary_e2e::stories::Story;

const WORKER: &str = env!("CARGO_BIN_EXE_tributary-worker");
const LONG: Duration = Duration::from_secs(90);

/// First sync all created, incremental updates, the full run's deletes, a replay adds
/// nothing: each event routed by `<model>.<op>`, persistent, its message id its event id.
#[tokio::test(flavor = "multi_thread")]
async fn lifecycle_with_events_on_rabbitmq() {
    let n = 240;
    let rig = Rig::start("postgres", fresh_postgres().await, WORKER, n)
        .await
        .with_rabbitmq_events();
    let _worker = rig.worker(&[("TRIBUTARY_SLICE_MAX_PAGES", "1".into())]);
    let mut story = Story::new(&rig, "rabbitmq", LONG);

    let first = story.first_full_sync(n).await;
    assert_eq!(
        of_run(&story.events.received, &first.run_id).len(),
        n as usize
    );
    let (_, total) = story.updates_then_deletes(n).await;
    story.replay_adds_nothing(&first, n, total).await;

    for m in &story.events.received {
        let v = m.value.as_ref().unwrap();
        assert_eq!(m.header("routing_key"), v["type"].as_str(), "{v}");
        assert_eq!(m.header("message_id"), v["id"].as_str(), "{v}");
        assert_eq!(m.header("delivery_mode"), Some("2"), "persistent");
        assert_eq!(m.header("tenant"), v["tenant"].as_str());
        assert_eq!(m.header("connection"), v["connection"].as_str());
        assert_eq!(m.header("ce_id"), v["id"].as_str());
        tributary_e2e::check_event_schema("change-event", v).unwrap();
    }
    let ids: HashSet<&str> = values(&story.events.received)
        .iter()
        .map(|v| v["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), total, "every event once");
    let ends: Vec<&str> = story
        .statuses
        .received
        .iter()
        .filter_map(|m| m.header("routing_key"))
        .collect();
    assert!(ends.contains(&"status.run.completed"), "{ends:?}");
}

/// Record id -> the event ids it arrived under.
fn event_ids(received: &[Received]) -> HashMap<String, HashSet<String>> {
    let mut ids: HashMap<String, HashSet<String>> = HashMap::new();
    for v in values(received) {
        ids.entry(v["record_id"].as_str().unwrap().into())
            .or_default()
            .insert(v["id"].as_str().unwrap().into());
    }
    ids
}

/// SIGKILL of a worker mid-run with its jobs on RabbitMQ: the unacknowledged job goes back
/// to its queue, another worker takes it once the dead one's claim on the resource has
/// expired, resumes from the checkpoint, and every record arrives, a duplicate only under
/// its original's id.
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_worker_s_job_is_redelivered_and_resumed() {
    let n = 600;
    let rig = Rig::without_kafka("postgres", fresh_postgres().await, WORKER, n).await;
    rig.lane
        .control
        .faults(json!([{"kind": "slow", "delay_ms": 150, "times": 0}]))
        .await
        .unwrap();
    let slices = [("TRIBUTARY_SLICE_MAX_PAGES", "2".to_string())];
    let mut first = rig.worker(&slices);
    let mut events = rig.events();
    let mut statuses = rig.statuses();
    let job = rig.job(RunMode::Full);
    rig.enqueue(&job).await;
    events.read_until(LONG, "the first pages' events", |all| all.len() >= 150);
    first.kill();
    let before = events.received.len();
    assert!(before < n as usize, "the kill came before the end");
    let killed_at = Instant::now();
    let _second = rig.worker(&slices);
    let end = wait_run_end(&mut statuses, &job.run_id, Duration::from_secs(150));
    assert_eq!(end["type"], "run.completed", "{end}");
    events.read_until(LONG, "every record", |all| {
        event_ids(all).len() >= n as usize
    });
    let ids = event_ids(&events.received);
    assert_eq!(ids.len(), n as usize, "every record is downstream");
    assert!(
        ids.values().all(|ids| ids.len() == 1),
        "a duplicate has its original's id"
    );
    assert!(values(&events.received)
        .iter()
        .all(|v| v["op"] == "created"));
    // Resumed from the checkpoint, not from the start: at most the killed slice twice.
    let pages = n.div_ceil(100);
    let requests = rig.lane.control.stats().await.unwrap().by_resource["contacts"];
    assert!(
        requests <= pages + 2,
        "{requests} page requests for {pages} pages"
    );
    println!(
        "rabbitmq jobs: killed after {before} events; run completed {:.1} s after the kill; {} events for {n} records; {requests} page requests for {pages} pages",
        killed_at.elapsed().as_secs_f64(),
        events.received.len()
    );
}

/// A rate-limited run parks its job with a not-before time: on RabbitMQ it waits in a
/// delay queue (no worker slot, no unacknowledged delivery) and comes back to finish.
#[tokio::test(flavor = "multi_thread")]
async fn a_parked_run_waits_in_a_delay_queue_and_completes() {
    let n = 120;
    let rig = Rig::without_kafka("postgres", fresh_postgres().await, WORKER, n).await;
    rig.lane
        .control
        .faults(json!([{"kind": "throttle", "times": 2, "wait_seconds": 2}]))
        .await
        .unwrap();
    let _worker = rig.worker(&[
        ("TRIBUTARY_PARK_AFTER_SECONDS", "0.5".into()),
        ("TRIBUTARY_BREAKER_OPEN_SECONDS", "0.5".into()),
    ]);
    let mut statuses = rig.statuses();
    let _events = rig.events();
    let job = rig.job(RunMode::Full);
    rig.enqueue(&job).await;
    let end = wait_run_end(&mut statuses, &job.run_id, LONG);
    assert_eq!(end["type"], "run.completed", "{end}");
    assert_eq!(end["counts"]["created"], n, "{end}");
    let parked = of_run(&statuses.received, &job.run_id)
        .into_iter()
        .filter(|v| v["type"] == "connection.rate_limited")
        .count();
    assert_eq!(parked, 2, "one park per throttle");
}

/// Poison jobs: a message that is not a job is dead-lettered at once; a job that panics
/// every time is delivered up to the delivery limit (5 here), then its run fails and it is
/// dead-lettered with the panic as its reason. Another tenant connection's job completes
/// meanwhile, on the same worker.
#[tokio::test(flavor = "multi_thread")]
async fn poison_jobs_end_on_the_dead_queue() {
    let n = 30;
    let rig = Rig::without_kafka_with("postgres", fresh_postgres().await, WORKER, n, |p| {
        // Past what a chrono duration holds: the expiry computation panics.
        p.oauth.as_mut().unwrap().access_token_ttl_seconds = 10_000_000_000_000_000;
    })
    .await;
    let other = rig.add_static_connection("conn_static").await;
    let url = rig.amqp.as_ref().unwrap().url();
    let queues = JobQueues::new(&rig.lane.topics);
    let dead = tributary_e2e::amqp::read_queue(&url, &queues.dead);
    let worker = rig.worker(&[]);
    let mut statuses = rig.statuses();
    let _events = rig.events();

    tributary_e2e::amqp::publish_raw(&url, &queues.jobs, b"{not a job").await;
    let panicking = rig.job(RunMode::Full);
    rig.enqueue(&panicking).await;
    let fine = Job::new_run(
        &rig.lane.tenant,
        &other,
        "contacts",
        RunMode::Full,
        JobReason::Schedule,
    );
    rig.enqueue(&fine).await;

    let end = wait_run_end(&mut statuses, &fine.run_id, LONG);
    assert_eq!(end["type"], "run.completed", "other jobs flow: {end}");
    assert_eq!(end["counts"]["created"], n, "{end}");
    let failed = wait_run_end(&mut statuses, &panicking.run_id, LONG);
    assert_eq!(failed["type"], "run.failed", "{failed}");
    assert!(
        failed["reason"].as_str().unwrap().contains("panicked"),
        "{failed}"
    );
    let run = rig.lane.store.run(&panicking.run_id).await.unwrap();
    assert_eq!(run.status, RunStatus::Failed, "{run:?}");

    let mut buried: Vec<Received> = Vec::new();
    while buried.len() < 2 {
        let got = dead
            .recv_timeout(LONG)
            .unwrap_or_else(|_| panic!("two dead letters: {buried:?}\n{}", worker.log_text()));
        buried.push(got);
    }
    let reason = |r: &Received| {
        r.header("x-tributary-reason")
            .unwrap_or_default()
            .to_string()
    };
    let not_a_job = buried
        .iter()
        .find(|r| r.value == Some(Value::String("{not a job".into())))
        .expect("the unparseable message is dead-lettered as it was");
    assert!(
        reason(not_a_job).contains("not a valid job"),
        "{not_a_job:?}"
    );
    let panicked = buried
        .iter()
        .find(|r| r.header("message_id") == Some(panicking.job_id.as_str()))
        .expect("the panicking job is dead-lettered");
    assert!(reason(panicked).contains("panicked"), "{panicked:?}");
    let log = worker.log_text();
    let attempts: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("ERROR") && l.contains("the worker panicked running this job"))
        .collect();
    assert_eq!(
        attempts.len(),
        5,
        "delivered up to the limit: {attempts:#?}"
    );
    assert!(
        dead.recv_timeout(Duration::from_secs(2)).is_err(),
        "nothing else is dead"
    );
}

/// A resync (the urgent queue) is taken ahead of a backlog of scheduled jobs waiting on
/// `<prefix>.jobs`, by a worker that runs one job at a time (prefetch 1 per queue).
#[tokio::test(flavor = "multi_thread")]
async fn a_resync_runs_ahead_of_a_backlog_on_rabbitmq() {
    use tributary::bus::job::job_message;
    let rig = Rig::without_kafka("postgres", fresh_postgres().await, WORKER, 120).await;
    rig.lane
        .control
        .faults(json!([{"kind": "slow", "delay_ms": 100, "times": 0}]))
        .await
        .unwrap();
    let mut statuses = rig.statuses();
    let _events = rig.events();
    let mut backlog = Vec::new();
    for i in 0..20 {
        let id = rig.add_static_connection(&format!("backlog-{i}")).await;
        backlog.push(Job::new_run(
            "acme",
            &id,
            "contacts",
            RunMode::Full,
            JobReason::Schedule,
        ));
    }
    let topics = &rig.lane.topics;
    let messages: Vec<_> = (backlog.iter())
        .map(|j| job_message(&topics.jobs(), j))
        .collect();
    rig.lane.publisher.publish_all(&messages).await.unwrap();
    let urgent = rig.add_static_connection("urgent").await;
    let resync = Job::new_run(
        "acme",
        &urgent,
        "contacts",
        RunMode::Full,
        JobReason::Resync,
    );
    let message = job_message(&topics.urgent_jobs(), &resync);
    rig.lane.publisher.publish_all(&[message]).await.unwrap();
    // The backlog is waiting before any worker exists; one job at a time.
    let _worker = rig.worker(&[("TRIBUTARY_WORKER_CONCURRENCY", "1".into())]);
    let end = wait_run_end(&mut statuses, &resync.run_id, LONG);
    assert_eq!(end["type"], "run.completed", "{end}");
    let backlog_done_before = values(&statuses.received)
        .into_iter()
        .take_while(|v| v["sync_run"] != resync.run_id.as_str() || v["type"] != "run.completed")
        .filter(|v| v["type"] == "run.completed")
        .count();
    assert!(
        backlog_done_before <= 2,
        "the resync waited for {backlog_done_before} of 20 scheduled jobs"
    );
}

/// `tributary_queue_depth{queue}` on `/metrics` says what the broker counts: three messages
/// put on `<prefix>.jobs.dead` (which no worker consumes) show as 3, the empty jobs queue as 0.
#[tokio::test(flavor = "multi_thread")]
async fn queue_depths_are_the_broker_s_counts() {
    let rig = Rig::without_kafka("postgres", fresh_postgres().await, WORKER, 10).await;
    let url = rig.amqp.as_ref().unwrap().url();
    let queues = JobQueues::new(&rig.lane.topics);
    let health = format!("127.0.0.1:{}", tributary_e2e::broker::free_port());
    let worker = rig.worker(&[("TRIBUTARY_HEALTH_ADDR", health.clone())]);
    let http = reqwest::Client::new();
    let scrape = || async {
        let response = http.get(format!("http://{health}/metrics")).send().await;
        match response {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    };
    let depth = |text: &str, queue: &str| -> Option<String> {
        text.lines()
            .find(|l| {
                l.starts_with("tributary_queue_depth{") && l.contains(&format!("queue=\"{queue}\""))
            })
            .and_then(|l| l.rsplit(' ').next())
            .map(str::to_string)
    };
    // The worker declares the queues, then reports them.
    let deadline = Instant::now() + LONG;
    while depth(&scrape().await, &queues.dead).is_none() {
        assert!(
            Instant::now() < deadline,
            "no depths reported\n{}",
            worker.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for i in 0..3 {
        tributary_e2e::amqp::publish_raw(&url, &queues.dead, format!("dead {i}").as_bytes()).await;
    }
    let text = loop {
        let text = scrape().await;
        if depth(&text, &queues.dead).as_deref() == Some("3") {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "depth of {}: {text}",
            queues.dead
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(depth(&text, &queues.jobs).as_deref(), Some("0"), "{text}");
    assert_eq!(
        depth(&text, &queues.delay(&queues.urgent, 16)).as_deref(),
        Some("0"),
        "every queue, the delay queues too: {text}"
    );
}
