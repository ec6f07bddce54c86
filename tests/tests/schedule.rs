//! Scheduling ticks on both databases: replicas never double-enqueue, leases keep
//! one job in flight, an expired lease is enqueued again, paused connections wait.
//!
//! Process-level tier: needs tansu and PostgreSQL (see the README), so it runs only with the
//! `process-tests` feature.
#![cfg(feature = "process-tests")]

use std::collections::HashSet;
use std::time::Duration;

use chrono::Utc;
use serde_json::json;
use tributary::bus::kafka::ensure_pipeline_topics;
use tributary::bus::{Publisher, Topics};
use tributary::schedule::tick::{ScheduleSettings, Scheduler};
use tributary::store::{NewConnection, Store};
use tributary_e2e::broker::{Broker, TopicReader};
use tributary_e2e::{fresh_databases, test_cipher};

#[tokio::test(flavor = "multi_thread")]
async fn replicas_leases_and_pauses() {
    let broker = Broker::start();
    for (backend, url) in fresh_databases().await {
        let store = Store::connect(&url, test_cipher())
            .await
            .unwrap()
            .with_lease(Duration::from_secs(60));
        store.create_tenant("acme").await.unwrap();
        let mut ids = Vec::new();
        for i in 0..40 {
            ids.push(
                store
                    .create_connection(&NewConnection {
                        id: Some(format!("c{i}")),
                        tenant: "acme".into(),
                        provider: "hubspot".into(),
                        config: json!({}).as_object().unwrap().clone(),
                        credentials: Default::default(),
                        resources: vec!["contacts".into()],
                        schedule: Some("0 0 1 1 *".into()),
                        full_schedule: None,
                        timezone: "Europe/Paris".into(),
                        external_id: None,
                    })
                    .await
                    .unwrap(),
            );
        }
        store
            .set_connection_state("c0", tributary::domain::ConnectionState::Paused, None)
            .await
            .unwrap();
        let topics = Topics::new(&format!("sched{backend}{}", std::process::id()));
        ensure_pipeline_topics(&broker.addr, &topics, 3)
            .await
            .unwrap();
        let replica = || {
            Scheduler::new(
                store.clone(),
                Publisher::new(&broker.addr).unwrap(),
                topics.clone(),
                ScheduleSettings {
                    batch: 7,
                    ..ScheduleSettings::default()
                },
            )
        };
        let (a, b) = (replica(), replica());
        let now = Utc::now();
        let (ra, rb) = tokio::join!(a.tick(now), b.tick(now));
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        assert_eq!(
            ra.enqueued + rb.enqueued,
            39,
            "{backend}: every due schedule once, the paused one not at all ({ra:?} {rb:?})"
        );
        let mut jobs = TopicReader::new(&broker.addr, &topics.jobs());
        jobs.read_until(Duration::from_secs(30), "39 jobs", |all| all.len() >= 39);
        let seen: HashSet<String> = jobs
            .received
            .iter()
            .map(|r| {
                r.value.as_ref().unwrap()["connection"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(seen.len(), 39, "{backend}: no connection twice");
        assert!(
            jobs.received
                .iter()
                .all(|r| r.value.as_ref().unwrap()["mode"] == "full"),
            "{backend}: a first run is full"
        );
        assert!(!seen.contains("c0"));
        // Leased and not due again yet.
        assert_eq!(
            a.tick(now + chrono::Duration::seconds(1))
                .await
                .unwrap()
                .enqueued,
            0,
            "{backend}"
        );
        // A run that ends gives its lease back; the others' leases expire and are enqueued again.
        let done = jobs.received[0].value.clone().unwrap();
        let (run, conn) = (
            done["run_id"].as_str().unwrap(),
            done["connection"].as_str().unwrap(),
        );
        store
            .start_run(&tributary::store::NewRun {
                id: run,
                connection: conn,
                resource: "contacts",
                mode: tributary::domain::RunMode::Full,
                reason: "schedule",
            })
            .await
            .unwrap();
        store
            .commit_slice(&tributary::store::SliceCommit {
                connection: conn,
                resource: "contacts",
                run_id: run,
                slice: 1,
                seen: &[],
                touched: &[],
                deleted: &[],
                next: None,
                run_max_updated: None,
                finished_since: Some(None),
                finished_delta_link: None,
                counts: Default::default(),
            })
            .await
            .unwrap();
        let later = now + chrono::Duration::seconds(61);
        let again = a.tick(later).await.unwrap();
        assert_eq!(again.enqueued, 38, "{backend}: expired leases re-enqueued, the finished run's schedule waits for its time: {again:?}");
    }
}
