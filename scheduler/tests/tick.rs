//! Set-based scheduler ticks (a batch claimed per statement): concurrent replicas on
//! PostgreSQL enqueue each due schedule once, expired leases are taken again and live ones
//! are not, batch boundaries lose nothing, and a claim given back is due again as it was.
//!
//! Process-level tier: needs tansu and PostgreSQL (see the README), so it runs only with the
//! `process-tests` feature.
#![cfg(feature = "process-tests")]

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::Value;
use tributary::bus::kafka::ensure_pipeline_topics;
use tributary::bus::{Publisher, Topics};
use tributary::domain::ConnectionState;
use tributary::schedule::tick::{ScheduleSettings, Scheduler, TickReport};
use tributary::store::{Due, DueSchedule, NewConnection, Store};
use tributary_e2e::broker::{Broker, TopicReader};
use tributary_e2e::{fresh_postgres, fresh_sqlite, test_cipher};

async fn store(url: &str, lease_secs: u64) -> Store {
    Store::connect(url, test_cipher())
        .await
        .unwrap()
        .with_lease(Duration::from_secs(lease_secs))
}

/// Connections `c{i}` for `ids`, one resource each, due now.
async fn connections(store: &Store, ids: std::ops::Range<usize>, schedule: &str) {
    for i in ids {
        store
            .create_connection(&NewConnection {
                id: Some(format!("c{i}")),
                tenant: "acme".into(),
                provider: "example".into(),
                config: Default::default(),
                credentials: Default::default(),
                resources: vec!["contacts".into()],
                schedule: Some(schedule.into()),
                full_schedule: None,
                timezone: ["UTC", "Europe/Paris", "Asia/Tokyo"][i % 3].into(),
                external_id: None,
            })
            .await
            .unwrap();
    }
}

/// A broker, and a jobs topic of the test's own per database.
struct Rig {
    broker: Broker,
}

impl Rig {
    async fn topics(&self, name: &str) -> Topics {
        let topics = Topics::new(&format!(
            "{name}{}x{}",
            std::process::id(),
            Utc::now().timestamp_micros()
        ));
        ensure_pipeline_topics(&self.broker.addr, &topics, 3)
            .await
            .unwrap();
        topics
    }

    fn scheduler(&self, store: &Store, topics: &Topics, batch: i64) -> Scheduler {
        Scheduler::new(
            store.clone(),
            Publisher::new(&self.broker.addr).unwrap(),
            topics.clone(),
            ScheduleSettings {
                batch,
                ..ScheduleSettings::default()
            },
        )
    }

    /// The first `n` jobs published to `topics` (every tick has returned: all are there).
    fn jobs(&self, topics: &Topics, n: usize) -> Vec<Value> {
        let mut reader = TopicReader::new(&self.broker.addr, &topics.jobs());
        reader.read_until(Duration::from_secs(30), "the jobs", |all| all.len() >= n);
        reader.received[..n]
            .iter()
            .map(|r| r.value.clone().unwrap())
            .collect()
    }
}

fn connections_of(jobs: &[Value]) -> HashSet<String> {
    jobs.iter()
        .map(|j| j["connection"].as_str().unwrap().to_string())
        .collect()
}

/// How many jobs each connection got.
fn per_connection(jobs: &[Value]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for j in jobs {
        *counts
            .entry(j["connection"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    counts
}

fn runs_of(jobs: &[Value]) -> HashSet<String> {
    jobs.iter()
        .map(|j| j["run_id"].as_str().unwrap().to_string())
        .collect()
}

fn ids(range: impl Iterator<Item = usize>) -> HashSet<String> {
    range.map(|i| format!("c{i}")).collect()
}

/// Every lease holder, as stored.
async fn leases(store: &Store) -> HashSet<String> {
    let rows: Vec<(Option<String>,)> = sqlx::query_as("SELECT lease_run_id FROM schedules")
        .fetch_all(store.pool())
        .await
        .unwrap();
    rows.into_iter().filter_map(|(r,)| r).collect()
}

/// Four replicas tick at once over 400 due schedules, 25 per batch, on a fresh PostgreSQL
/// database: 400 jobs in all, one per schedule, each the holder of its schedule's lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_replicas_on_postgres_enqueue_each_schedule_once() {
    let rig = Rig {
        broker: Broker::start(),
    };
    let topics = rig.topics("tickreplicas").await;
    let store = store(&fresh_postgres().await, 600).await;
    store.create_tenant("acme").await.unwrap();
    connections(&store, 0..400, "0 0 1 1 *").await;
    let now = Utc::now();
    let start = Arc::new(tokio::sync::Barrier::new(4));
    let replicas: Vec<_> = (0..4)
        .map(|_| {
            let (scheduler, start) = (rig.scheduler(&store, &topics, 25), start.clone());
            tokio::spawn(async move {
                start.wait().await;
                scheduler.tick(now).await.unwrap()
            })
        })
        .collect();
    let mut reports = Vec::new();
    for r in replicas {
        reports.push(r.await.unwrap());
    }
    // `enqueued` counts acknowledged messages: 400 in all means no schedule was published twice.
    let enqueued: usize = reports.iter().map(|r| r.enqueued).sum();
    assert_eq!(enqueued, 400, "every schedule once in all: {reports:?}");
    assert!(
        reports
            .iter()
            .all(|r| r.invalid == 0 && r.due == r.enqueued + r.lost),
        "each schedule a replica read it enqueued or lost to another: {reports:?}"
    );
    let jobs = rig.jobs(&topics, 400);
    assert_eq!(connections_of(&jobs), ids(0..400), "no schedule twice");
    assert_eq!(
        leases(&store).await,
        runs_of(&jobs),
        "each schedule leased to the job published for it"
    );
    let again = rig.scheduler(&store, &topics, 25).tick(now).await.unwrap();
    assert_eq!(again, TickReport::default(), "every lease is live");
}

/// On both databases: schedules whose lease ran out are enqueued again (once), schedules
/// whose job still holds a live lease are not, even when their due time has passed.
#[tokio::test(flavor = "multi_thread")]
async fn expired_leases_are_taken_again_live_ones_are_not() {
    let rig = Rig {
        broker: Broker::start(),
    };
    for (backend, url) in [
        ("sqlite", fresh_sqlite()),
        ("postgres", fresh_postgres().await),
    ] {
        let topics = rig.topics(&format!("ticklease{backend}")).await;
        // Two handles on one database: jobs enqueued through `long` hold their leases longer.
        let (short, long) = (store(&url, 60).await, store(&url, 3600).await);
        short.create_tenant("acme").await.unwrap();
        // Every minute: by the last tick every schedule's due time has passed.
        connections(&short, 0..12, "* * * * *").await;
        let first = rig
            .scheduler(&short, &topics, 5)
            .tick(Utc::now())
            .await
            .unwrap();
        assert_eq!(first.enqueued, 12, "{backend}: {first:?}");
        connections(&long, 12..20, "* * * * *").await;
        let t1 = Utc::now();
        let second = rig.scheduler(&long, &topics, 5).tick(t1).await.unwrap();
        assert_eq!(second.enqueued, 8, "{backend}: {second:?}");
        let halfway = t1 + chrono::Duration::seconds(30);
        assert_eq!(
            rig.scheduler(&short, &topics, 5)
                .tick(halfway)
                .await
                .unwrap(),
            TickReport::default(),
            "{backend}: every lease live"
        );
        let later = t1 + chrono::Duration::seconds(120);
        let expired = short
            .due_schedules(later, Due::LeaseExpired, None, 100)
            .await
            .unwrap();
        let free = short
            .due_schedules(later, Due::Time, None, 100)
            .await
            .unwrap();
        assert_eq!(
            (expired.len(), free.len()),
            (12, 0),
            "{backend}: the short leases ran out; the long ones hold though their time came"
        );
        let third = rig.scheduler(&short, &topics, 5).tick(later).await.unwrap();
        assert_eq!(
            (third.due, third.enqueued, third.lost),
            (12, 12, 0),
            "{backend}: {third:?}"
        );
        let jobs = rig.jobs(&topics, 32);
        let twice_then_once = (0..20).map(|i| (format!("c{i}"), if i < 12 { 2 } else { 1 }));
        assert_eq!(
            per_connection(&jobs),
            twice_then_once.collect(),
            "{backend}"
        );
        assert_eq!(runs_of(&jobs).len(), 32, "{backend}: a new run each time");
        assert_eq!(
            rig.scheduler(&short, &topics, 5).tick(later).await.unwrap(),
            TickReport::default(),
            "{backend}: taken again once"
        );
    }
}

/// On both databases, batches of 5 over 23 schedules (one paused, two invalid), then over
/// their 20 expired leases (a whole number of batches): every schedule once, the invalid
/// ones counted once per tick.
#[tokio::test(flavor = "multi_thread")]
async fn batch_boundaries_lose_nothing() {
    let rig = Rig {
        broker: Broker::start(),
    };
    for (backend, url) in [
        ("sqlite", fresh_sqlite()),
        ("postgres", fresh_postgres().await),
    ] {
        let topics = rig.topics(&format!("tickbatch{backend}")).await;
        let store = store(&url, 60).await;
        store.create_tenant("acme").await.unwrap();
        connections(&store, 0..7, "0 0 1 1 *").await;
        connections(&store, 7..8, "every day").await;
        connections(&store, 8..15, "0 0 1 1 *").await;
        connections(&store, 15..16, "0 0 31 2 *").await;
        connections(&store, 16..23, "0 0 1 1 *").await;
        store
            .set_connection_state("c3", ConnectionState::Paused, None)
            .await
            .unwrap();
        let scheduler = rig.scheduler(&store, &topics, 5);
        let now = Utc::now();
        let first = scheduler.tick(now).await.unwrap();
        let expected = TickReport {
            due: 22,
            enqueued: 20,
            lost: 0,
            invalid: 2,
        };
        assert_eq!(first, expected, "{backend}");
        let valid = ids((0..23).filter(|i| ![3, 7, 15].contains(i)));
        let jobs = rig.jobs(&topics, 20);
        assert_eq!(connections_of(&jobs), valid, "{backend}");
        let later = now + chrono::Duration::seconds(61);
        let second = scheduler.tick(later).await.unwrap();
        assert_eq!(second, expected, "{backend}: the expired leases");
        let jobs = rig.jobs(&topics, 40);
        let twice = valid.iter().map(|c| (c.clone(), 2)).collect();
        assert_eq!(per_connection(&jobs), twice, "{backend}");
        assert_eq!(runs_of(&jobs).len(), 40, "{backend}");
    }
}

/// Claims of `rows` for `runs`, all next due far away.
fn claims<'a>(
    rows: &'a [DueSchedule],
    runs: &'a [&'a str],
) -> impl Iterator<Item = (&'a DueSchedule, &'a str, &'a str, &'a str)> {
    let next = "2999-01-01T00:00:00.000Z";
    rows.iter()
        .zip(runs)
        .map(move |(d, run)| (d, *run, next, next))
}

/// On both databases: a claim given back (its publish failed) leaves the schedule exactly
/// as the tick read it, so it is due again; a claim taken over from an expired lease too.
#[tokio::test(flavor = "multi_thread")]
async fn released_claims_are_due_again_as_they_were() {
    for url in [fresh_sqlite(), fresh_postgres().await] {
        let store = store(&url, 60).await;
        store.create_tenant("acme").await.unwrap();
        connections(&store, 0..3, "*/15 * * * *").await;
        let now = Utc::now();
        let due = store.due_schedules(now, Due::Time, None, 10).await.unwrap();
        let first = store.claim_schedules(now, claims(&due[..1], &["run_a"]));
        assert_eq!(first.await.unwrap(), [true]);
        // Stale for the first schedule (taken since it was read): lost, the others won.
        let won = store
            .claim_schedules(now, claims(&due, &["run_x", "run_b", "run_c"]))
            .await
            .unwrap();
        assert_eq!(won, [false, true, true]);
        let later = now + chrono::Duration::seconds(61);
        let expired = store
            .due_schedules(later, Due::LeaseExpired, None, 10)
            .await
            .unwrap();
        assert_eq!(expired.len(), 3, "{expired:?}");
        let takeover = ["run_d", "run_e", "run_f"];
        let won = store
            .claim_schedules(later, claims(&expired, &takeover))
            .await
            .unwrap();
        assert_eq!(won, [true; 3]);
        store
            .release_claims(expired.iter().zip(takeover))
            .await
            .unwrap();
        let again = store.due_schedules(later, Due::LeaseExpired, None, 10);
        assert_eq!(
            again.await.unwrap(),
            expired,
            "the expired leases, as they were"
        );
        store
            .release_claims(due.iter().zip(["run_a", "run_b", "run_c"]))
            .await
            .unwrap();
        let free = store.due_schedules(now, Due::Time, None, 10).await.unwrap();
        assert_eq!(free, due, "lease-free and due again, as first read");
    }
}
