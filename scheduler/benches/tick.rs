//! One scheduling tick over 100,000 connections on cron schedules (all due at once,
//! the worst case), on SQLite and PostgreSQL: the tick's time beside the same run's
//! baseline (reading the due schedules only), and the process's peak memory.
//!
//! `cargo bench -p tributary-scheduler --bench tick` (TRIBUTARY_BENCH_CONNECTIONS to resize;
//! needs tansu and the local PostgreSQL).

use std::time::Instant;

use chrono::Utc;
use tributary::bus::kafka::ensure_pipeline_topics;
use tributary::bus::{Publisher, Topics};
use tributary::schedule::tick::{ScheduleSettings, Scheduler};
use tributary::store::Store;
use tributary_e2e::broker::Broker;
use tributary_e2e::{fresh_postgres, fresh_sqlite, test_cipher};

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

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("TRIBUTARY_BENCH_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let broker = Broker::start();
    println!(
        "{n} connections on `*/15 * * * *` in 4 time zones, all due in one tick; tansu at {}",
        broker.addr
    );
    for (backend, url) in [
        ("sqlite", fresh_sqlite()),
        ("postgres", fresh_postgres().await),
    ] {
        let store = Store::connect(&url, test_cipher()).await.unwrap();
        load(&store, n).await;
        let topics = Topics::new(&format!("tick{backend}{}", std::process::id()));
        ensure_pipeline_topics(&broker.addr, &topics, 6)
            .await
            .unwrap();
        let scheduler = Scheduler::new(
            store.clone(),
            Publisher::new(&broker.addr).unwrap(),
            topics,
            ScheduleSettings::default(),
        );
        let now = Utc::now() + chrono::Duration::seconds(1);
        let rss_before = peak_rss_mib();
        let t = Instant::now();
        let due = store.due_schedules(now, n as i64).await.unwrap();
        let read = t.elapsed();
        assert_eq!(due.len(), n);
        drop(due);
        let t = Instant::now();
        let report = scheduler.tick(now).await.unwrap();
        let tick = t.elapsed();
        assert_eq!(report.enqueued, n, "{report:?}");
        println!("{backend}:");
        println!(
            "  baseline  read the {n} due schedules:      {:>8.2} s",
            read.as_secs_f64()
        );
        println!(
            "  tick      plan, claim, enqueue {n} jobs:   {:>8.2} s  ({:.1}x the baseline; {:.0} schedules/s)",
            tick.as_secs_f64(),
            tick.as_secs_f64() / read.as_secs_f64(),
            n as f64 / tick.as_secs_f64()
        );
        println!(
            "  peak memory (VmHWM): {:.0} MiB before the tick, {:.0} MiB after",
            rss_before,
            peak_rss_mib()
        );
    }
}
