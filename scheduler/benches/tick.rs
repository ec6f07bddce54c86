//! One scheduling tick over 100,000 connections on cron schedules (all due at once,
//! the worst case), on SQLite and PostgreSQL: the tick's time beside two baselines of the
//! same run (reading the due schedules batch by batch, nothing else; publishing as many
//! job messages batch by batch, nothing else), and the peak memory during the tick.
//!
//! `cargo bench -p tributary-scheduler --bench tick` (TRIBUTARY_BENCH_CONNECTIONS to resize,
//! TRIBUTARY_BENCH_BACKENDS=sqlite or postgres for one; needs tansu and the local PostgreSQL).

use std::time::Instant;

use chrono::{DateTime, Utc};
use tributary::bus::kafka::ensure_pipeline_topics;
use tributary::bus::{Job, JobReason, OutMessage, Publisher, Topics};
use tributary::domain::RunMode;
use tributary::schedule::tick::{job_message, ScheduleSettings, Scheduler};
use tributary::store::{Due, DueSchedule, Store};
use tributary_e2e::broker::Broker;
use tributary_e2e::{fresh_postgres, fresh_sqlite, test_cipher};

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

/// CPU seconds this process has used (user and system; clock ticks of 1/100 s).
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

/// Bulk-load connections and their schedules (the API would take hours for 100k).
async fn load(store: &Store, n: usize) {
    let pool = store.pool();
    sqlx::query(
        "INSERT INTO tenants (id, created_at) VALUES ('bench', '2026-01-01T00:00:00.000Z')",
    )
    .execute(pool)
    .await
    .unwrap();
    let now = tributary::domain::time::now_stamp();
    let zones = ["UTC", "Europe/Paris", "America/New_York", "Asia/Tokyo"];
    let mut tx = pool.begin().await.unwrap();
    for start in (0..n).step_by(500) {
        let end = (start + 500).min(n);
        let conns: Vec<String> = (start..end)
            .map(|i| format!("('c{i}', 'bench', 'hubspot', '{{}}', 'x', 'k', '[\"contacts\"]', '*/15 * * * *', 'healthy', NULL, '{now}', '{now}', '0 3 * * *', '{}')", zones[i % 4]))
            .collect();
        let sql = format!("INSERT INTO connections (id, tenant, provider, config, credentials, key_id, resources, schedule, state, state_message, created_at, updated_at, full_schedule, timezone) VALUES {}", conns.join(", "));
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut *tx)
            .await
            .unwrap();
        let scheds: Vec<String> = (start..end)
            .map(|i| format!("('c{i}', 'contacts', 'bench', '{now}', '{now}', NULL, NULL)"))
            .collect();
        let sql = format!("INSERT INTO schedules (connection, resource, tenant, next_run_at, next_full_at, lease_run_id, lease_expires_at) VALUES {}", scheds.join(", "));
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
}

/// Baseline: read every due schedule the way a tick does (batch after batch), nothing else.
async fn read_all(store: &Store, now: DateTime<Utc>, batch: i64) -> usize {
    let mut read = 0;
    let mut after: Option<DueSchedule> = None;
    loop {
        let due = store
            .due_schedules(now, Due::Time, after.as_ref(), batch)
            .await
            .unwrap();
        read += due.len();
        if (due.len() as i64) < batch {
            return read;
        }
        after = due.into_iter().last();
    }
}

/// Baseline: publish `n` job messages like the tick's, batch after batch, nothing else.
async fn publish_only(publisher: &Publisher, topic: &str, n: usize, batch: usize) {
    for start in (0..n).step_by(batch) {
        let messages: Vec<OutMessage> = (start..(start + batch).min(n))
            .map(|i| {
                let job = Job::new_run(
                    "bench",
                    &format!("c{i}"),
                    "contacts",
                    RunMode::Full,
                    JobReason::Schedule,
                );
                job_message(topic, &job)
            })
            .collect();
        publisher.publish_all(&messages).await.unwrap();
    }
}

/// Wall-clock and this process's CPU seconds of one step.
struct Timed(Instant, f64);

impl Timed {
    fn start() -> Timed {
        Timed(Instant::now(), cpu_secs())
    }

    /// (wall, CPU) seconds.
    fn stop(self) -> (f64, f64) {
        (self.0.elapsed().as_secs_f64(), cpu_secs() - self.1)
    }
}

fn line(what: &str, (wall, cpu): (f64, f64)) {
    println!("  {what:<44} {wall:>6.2} s  (this process's CPU {cpu:.2} s)");
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("TRIBUTARY_BENCH_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let settings = ScheduleSettings::default();
    let batch = settings.batch;
    let broker = Broker::start();
    println!(
        "{n} connections on `*/15 * * * *` in 4 time zones, all due in one tick (batches of {batch}); tansu at {}",
        broker.addr
    );
    let only = std::env::var("TRIBUTARY_BENCH_BACKENDS").unwrap_or_default();
    for backend in ["sqlite", "postgres"] {
        if !only.is_empty() && !only.split(',').any(|b| b == backend) {
            continue;
        }
        let url = match backend {
            "sqlite" => fresh_sqlite(),
            _ => fresh_postgres().await,
        };
        let store = Store::connect(&url, test_cipher()).await.unwrap();
        load(&store, n).await;
        let topics = Topics::new(&format!("tick{backend}{}", std::process::id()));
        ensure_pipeline_topics(&broker.addr, &topics, 6)
            .await
            .unwrap();
        let publisher = Publisher::new(&broker.addr).unwrap();
        let scheduler = Scheduler::new(
            store.clone(),
            Publisher::new(&broker.addr).unwrap(),
            topics.clone(),
            settings.clone(),
        );
        let now = Utc::now() + chrono::Duration::seconds(1);
        let timed = Timed::start();
        assert_eq!(read_all(&store, now, batch).await, n);
        let read = timed.stop();
        // The same topic as the tick's: its messages are the same size, in the same partitions.
        let timed = Timed::start();
        publish_only(&publisher, &topics.jobs(), n, batch as usize).await;
        let publish = timed.stop();
        let rss_before = peak_rss_mib();
        reset_peak_rss();
        let timed = Timed::start();
        let report = scheduler.tick(now).await.unwrap();
        let tick = timed.stop();
        assert_eq!(report.enqueued, n, "{report:?}");
        println!("{backend}:");
        line(&format!("baseline 1: read the {n} due schedules"), read);
        line(&format!("baseline 2: publish {n} job messages"), publish);
        line(&format!("tick: plan, claim, enqueue {n} jobs"), tick);
        println!(
            "  the tick: {:.1}x baseline 1, {:.1}x baseline 2, {:.1}x both summed; {:.0} schedules/s",
            tick.0 / read.0,
            tick.0 / publish.0,
            tick.0 / (read.0 + publish.0),
            n as f64 / tick.0
        );
        println!(
            "  peak memory (VmHWM): {:.0} MiB before the tick, {:.0} MiB during it",
            rss_before,
            peak_rss_mib()
        );
    }
}
