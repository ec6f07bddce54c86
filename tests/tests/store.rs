//! The state store behaves the same on SQLite and PostgreSQL.

use serde_json::json;
use tributary::domain::{
    ConnectionState, PageState, RunCounts, RunMode, RunStatus, StoredFingerprint,
};
use tributary::store::{NewConnection, NewRun, SliceCommit, Store, StoreError};
use tributary_e2e::{fresh_databases, new_connection, test_cipher};

#[tokio::test]
async fn the_store_round_trips_on_both_databases() {
    for (backend, url) in fresh_databases().await {
        let store = Store::connect(&url, test_cipher())
            .await
            .unwrap_or_else(|e| panic!("{backend}: {e}"));
        store.create_tenant("acme").await.unwrap();
        assert!(
            matches!(
                store.create_tenant("acme").await,
                Err(StoreError::Conflict { .. })
            ),
            "{backend}"
        );
        let creds = json!({"access_token": "at-secret-1", "refresh_token": "rt-secret-1"});
        let id = store
            .create_connection(&new_connection(
                "acme",
                "demo",
                json!({"subdomain": "acme"}),
                creds,
            ))
            .await
            .unwrap();
        let c = store.connection(&id).await.unwrap();
        assert_eq!(
            c.credentials.get("refresh_token"),
            Some("rt-secret-1"),
            "{backend}"
        );
        assert_eq!(c.state, ConnectionState::Healthy);

        store
            .start_run(&NewRun {
                id: "run1",
                connection: &id,
                resource: "contacts",
                mode: RunMode::Full,
                reason: "schedule",
            })
            .await
            .unwrap();
        let fp = |rid: &str, h: &str| StoredFingerprint {
            record_id: rid.into(),
            hash: h.into(),
            field_hashes: [("id".to_string(), h.to_string())].into_iter().collect(),
            source_updated_at: None,
        };
        let seen = vec![fp("1", "a"), fp("2", "b"), fp("3", "c")];
        // A value captured from the first page travels with the page state.
        let next = PageState::Cursor {
            cursor: "c2".into(),
            captured: [("as_of".to_string(), "2026-12-02T05:00:00Z".to_string())].into(),
        };
        store
            .commit_slice(&SliceCommit {
                connection: &id,
                resource: "contacts",
                run_id: "run1",
                slice: 1,
                seen: &seen,
                touched: &[],
                deleted: &[],
                next: Some(&next),
                run_max_updated: None,
                finished_since: None,
                finished_delta_link: None,
                counts: RunCounts {
                    slices: 1,
                    pages: 1,
                    records: 3,
                    created: 3,
                    ..RunCounts::default()
                },
            })
            .await
            .unwrap();
        let cp = store.checkpoint(&id, "contacts").await.unwrap();
        assert_eq!(
            (cp.run_id.as_deref(), cp.slice, cp.page_state),
            (Some("run1"), 1, Some(next)),
            "{backend}"
        );
        // Slice 0 handed over to slice 1: pending until the bus has the continuation.
        assert!(cp.handover_pending, "{backend}");
        store.handed_over(&id, "contacts", "run1", 1).await.unwrap();
        let cp = store.checkpoint(&id, "contacts").await.unwrap();
        assert!(!cp.handover_pending, "{backend}");
        let got = store
            .fingerprints(&id, "contacts", &["2".into(), "3".into(), "9".into()])
            .await
            .unwrap();
        assert_eq!(got.len(), 2, "{backend}");

        // A second run sees 1 and 3 (3 dead-lettered): only 2 is unseen.
        store
            .start_run(&NewRun {
                id: "run2",
                connection: &id,
                resource: "contacts",
                mode: RunMode::Full,
                reason: "schedule",
            })
            .await
            .unwrap();
        store
            .commit_slice(&SliceCommit {
                connection: &id,
                resource: "contacts",
                run_id: "run2",
                slice: 0,
                seen: &[fp("1", "a2")],
                touched: &["3".into()],
                deleted: &[],
                next: None,
                run_max_updated: None,
                finished_since: None,
                finished_delta_link: None,
                counts: RunCounts {
                    pages: 1,
                    records: 2,
                    updated: 1,
                    dead_lettered: 1,
                    ..RunCounts::default()
                },
            })
            .await
            .unwrap();
        let unseen: Vec<String> = store
            .unseen(&id, "contacts", "run2")
            .await
            .unwrap()
            .into_iter()
            .map(|f| f.record_id)
            .collect();
        assert_eq!(unseen, vec!["2".to_string()], "{backend}");
        let since = chrono::Utc::now();
        store
            .commit_slice(&SliceCommit {
                connection: &id,
                resource: "contacts",
                run_id: "run2",
                slice: 1,
                seen: &[],
                touched: &[],
                deleted: &["2".into()],
                next: None,
                run_max_updated: Some(since),
                finished_since: Some(Some(since)),
                finished_delta_link: None,
                counts: RunCounts {
                    slices: 1,
                    deleted: 1,
                    ..RunCounts::default()
                },
            })
            .await
            .unwrap();
        let run = store.run("run2").await.unwrap();
        assert_eq!(run.status, RunStatus::Completed, "{backend}");
        assert_eq!(
            (
                run.counts.updated,
                run.counts.deleted,
                run.counts.dead_lettered,
                run.counts.slices
            ),
            (1, 1, 1, 1),
            "{backend}"
        );
        let cp = store.checkpoint(&id, "contacts").await.unwrap();
        assert!(cp.run_id.is_none() && cp.since.is_some(), "{backend}");
        assert_eq!(store.runs(&id, 10).await.unwrap().len(), 2);

        // Failing a run clears its checkpoint and records the reason.
        store
            .start_run(&NewRun {
                id: "run3",
                connection: &id,
                resource: "contacts",
                mode: RunMode::Full,
                reason: "resync",
            })
            .await
            .unwrap();
        store
            .fail_run(&id, "contacts", "run3", "provider down")
            .await
            .unwrap();
        let run = store.run("run3").await.unwrap();
        assert_eq!(
            (run.status, run.error.as_deref()),
            (RunStatus::Failed, Some("provider down"))
        );
        assert!(store
            .checkpoint(&id, "contacts")
            .await
            .unwrap()
            .run_id
            .is_none());
    }
}

/// Two runs of one resource at once (a resync during a scheduled run): what the
/// later run saw is never swept as deleted by the earlier one.
#[tokio::test]
async fn a_concurrent_run_never_makes_records_vanish() {
    for (backend, url) in fresh_databases().await {
        let store = Store::connect(&url, test_cipher()).await.unwrap();
        store.create_tenant("acme").await.unwrap();
        let id = store
            .create_connection(&new_connection("acme", "demo", json!({}), json!({})))
            .await
            .unwrap();
        let fp = |rid: &str| StoredFingerprint {
            record_id: rid.into(),
            hash: "h".into(),
            field_hashes: Default::default(),
            source_updated_at: None,
        };
        let commit = |run: &'static str, seen: Vec<StoredFingerprint>| {
            let store = store.clone();
            let id = id.clone();
            async move {
                store
                    .commit_slice(&SliceCommit {
                        connection: &id,
                        resource: "contacts",
                        run_id: run,
                        slice: 0,
                        seen: &seen,
                        touched: &[],
                        deleted: &[],
                        next: None,
                        run_max_updated: None,
                        finished_since: None,
                        finished_delta_link: None,
                        counts: RunCounts::default(),
                    })
                    .await
                    .unwrap()
            }
        };
        store
            .start_run(&NewRun {
                id: "old",
                connection: &id,
                resource: "contacts",
                mode: RunMode::Full,
                reason: "schedule",
            })
            .await
            .unwrap();
        commit("old", vec![fp("1"), fp("2"), fp("3")]).await;
        // `early` starts before `a` but reads record 3 only after `a` started.
        store
            .start_run(&NewRun {
                id: "early",
                connection: &id,
                resource: "contacts",
                mode: RunMode::Full,
                reason: "schedule",
            })
            .await
            .unwrap();
        store
            .start_run(&NewRun {
                id: "a",
                connection: &id,
                resource: "contacts",
                mode: RunMode::Full,
                reason: "schedule",
            })
            .await
            .unwrap();
        // No pause between these: on one machine they land in the same millisecond, which
        // is what two workers' clocks can do too. The order comes from the database.
        store
            .start_run(&NewRun {
                id: "b",
                connection: &id,
                resource: "contacts",
                mode: RunMode::Full,
                reason: "resync",
            })
            .await
            .unwrap();
        commit("b", vec![fp("2")]).await;
        commit("early", vec![fp("3")]).await;
        // And the workers that ran `b` and `early` had clocks an hour behind `a`'s: the
        // times they wrote say nothing about the order.
        sqlx::query("UPDATE fingerprints SET updated_at = $1 WHERE seen_run <> 'old'")
            .bind(tributary::domain::time::stamp(
                chrono::Utc::now() - chrono::Duration::hours(1),
            ))
            .execute(store.pool())
            .await
            .unwrap();
        let unseen: Vec<String> = store
            .unseen(&id, "contacts", "a")
            .await
            .unwrap()
            .into_iter()
            .map(|f| f.record_id)
            .collect();
        assert_eq!(
            unseen,
            vec!["1".to_string()],
            "{backend}: records 2 and 3, seen by other runs after `a` started, are not swept"
        );
        // Seen before `b` started (by `old`, then by `early` only after): `b` may sweep 1
        // alone, and nothing it saw itself.
        let unseen_b: Vec<String> = store
            .unseen(&id, "contacts", "b")
            .await
            .unwrap()
            .into_iter()
            .map(|f| f.record_id)
            .collect();
        assert_eq!(unseen_b, vec!["1".to_string()], "{backend}");
    }
}

/// Key rotation re-seals every credential under the new key, online.
#[tokio::test]
async fn key_rotation_reseals_everything() {
    use tributary::secrets::crypto::Cipher;
    for (backend, url) in fresh_databases().await {
        let old = Cipher::generate_key();
        let new = Cipher::generate_key();
        let before = Store::connect(&url, Cipher::from_base64(&old, &[]).unwrap())
            .await
            .unwrap();
        before.create_tenant("acme").await.unwrap();
        let mut ids = Vec::new();
        for i in 0..3 {
            ids.push(
                before
                    .create_connection(&NewConnection {
                        id: Some(format!("c{i}")),
                        ..new_connection(
                            "acme",
                            "demo",
                            json!({}),
                            json!({"refresh_token": format!("rt-{i}")}),
                        )
                    })
                    .await
                    .unwrap(),
            );
        }
        let during = Store::connect(
            &url,
            Cipher::from_base64(&new, std::slice::from_ref(&old)).unwrap(),
        )
        .await
        .unwrap();
        assert_eq!(during.reseal_all().await.unwrap(), 3, "{backend}");
        assert_eq!(
            during.reseal_all().await.unwrap(),
            0,
            "{backend}: nothing left under the old key"
        );
        let after = Store::connect(&url, Cipher::from_base64(&new, &[]).unwrap())
            .await
            .unwrap();
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(
                after
                    .connection(id)
                    .await
                    .unwrap()
                    .credentials
                    .get("refresh_token"),
                Some(format!("rt-{i}").as_str()),
                "{backend}"
            );
        }
        assert!(
            matches!(
                before.connection(&ids[0]).await,
                Err(StoreError::Crypto { .. })
            ),
            "{backend}: the old key alone no longer reads"
        );
    }
}

/// The rate-budget ledger and the circuit breaker columns behave the same on both databases;
/// two `Store`s on one database (two replicas) share one budget.
#[tokio::test]
async fn budgets_and_the_circuit_breaker_on_both_databases() {
    use tributary::budget::{Ledger, Reservation};
    use tributary::store::StoreLedger;
    for (backend, url) in fresh_databases().await {
        let a = StoreLedger::new(Store::connect(&url, test_cipher()).await.unwrap());
        let b = StoreLedger::new(Store::connect(&url, test_cipher()).await.unwrap());
        let (now, interval, far) = (1_000_000i64, 100_000i64, 10_000_000i64);
        // Replicas take turns: each reservation is one interval after the previous one.
        let mut slots = Vec::new();
        for ledger in [&a, &b, &a, &b] {
            match ledger
                .reserve("app:x", now, interval, now + far)
                .await
                .unwrap()
            {
                Reservation::At(at) => slots.push(at),
                other => panic!("{backend}: {other:?}"),
            }
        }
        assert_eq!(
            slots,
            vec![now, now + interval, now + 2 * interval, now + 3 * interval],
            "{backend}"
        );
        // Later than the caller accepts: nothing is taken.
        assert_eq!(
            b.reserve("app:x", now, interval, now + interval)
                .await
                .unwrap(),
            Reservation::NotBefore(now + 4 * interval),
            "{backend}"
        );
        // A hold moves the next slot; a hold-only key (interval 0) is read, not advanced.
        a.hold_until("conn:y", now + 5 * interval).await.unwrap();
        for _ in 0..2 {
            assert_eq!(
                b.reserve("conn:y", now, 0, now + far).await.unwrap(),
                Reservation::At(now + 5 * interval),
                "{backend}"
            );
        }
        // A daily budget of 2, counted across replicas.
        let counted: Vec<bool> = vec![
            a.count_in_day("d", "2026-11-28", 2).await.unwrap(),
            b.count_in_day("d", "2026-11-28", 2).await.unwrap(),
            a.count_in_day("d", "2026-11-28", 2).await.unwrap(),
            b.count_in_day("d", "2026-11-29", 2).await.unwrap(),
        ];
        assert_eq!(counted, vec![true, true, false, true], "{backend}");
        // One in-flight slot: the second holder waits until it is freed or its lease ends.
        let s = a.take_slot("f", 1, "h1", now, now + far).await.unwrap();
        assert_eq!(s, Some(0), "{backend}");
        assert_eq!(
            b.take_slot("f", 1, "h2", now, now + far).await.unwrap(),
            None
        );
        assert_eq!(
            b.take_slot("f", 1, "h2", now + far + 1, now + 2 * far)
                .await
                .unwrap(),
            Some(0),
            "{backend}: an expired lease frees the slot"
        );
        b.free_slot("f", 0, "h2").await.unwrap();
        assert_eq!(
            a.take_slot("f", 1, "h1", now, now + far).await.unwrap(),
            Some(0)
        );

        // The circuit breaker: a streak, a block, one probe claimed, cleared by a page.
        let store = Store::connect(&url, test_cipher()).await.unwrap();
        store.create_tenant("acme").await.unwrap();
        let id = store
            .create_connection(&new_connection("acme", "demo", json!({}), json!({})))
            .await
            .unwrap();
        assert_eq!(store.record_failure(&id).await.unwrap(), 1);
        assert_eq!(store.record_failure(&id).await.unwrap(), 2);
        let until = chrono::Utc::now() + chrono::Duration::seconds(90);
        store
            .block_connection(
                &id,
                until,
                Some((ConnectionState::RateLimited, "throttled")),
            )
            .await
            .unwrap();
        let c = store.connection(&id).await.unwrap();
        assert_eq!(
            (c.state, c.failure_streak),
            (ConnectionState::RateLimited, 2)
        );
        let blocked = c.blocked_until.unwrap();
        assert_eq!(blocked.timestamp_millis(), until.timestamp_millis());
        let later = until + chrono::Duration::seconds(30);
        assert!(
            store.claim_probe(&id, blocked, later).await.unwrap(),
            "{backend}"
        );
        assert!(
            !store.claim_probe(&id, blocked, later).await.unwrap(),
            "{backend}: one probe"
        );
        store.clear_breaker(&id).await.unwrap();
        let c = store.connection(&id).await.unwrap();
        assert_eq!(
            (c.state, c.failure_streak, c.blocked_until),
            (ConnectionState::Healthy, 0, None),
            "{backend}"
        );
    }
}

/// The API's connection list: one tenant's connections and the latest run of each of their
/// resources, two queries whatever the count, the same on both databases.
#[tokio::test]
async fn connections_and_their_last_runs_by_tenant() {
    for (backend, url) in fresh_databases().await {
        let store = Store::connect(&url, test_cipher()).await.unwrap();
        for tenant in ["acme", "globex"] {
            store.create_tenant(tenant).await.unwrap();
            store
                .create_connection(&NewConnection {
                    id: Some(format!("{tenant}-c")),
                    resources: vec!["contacts".into(), "deals".into()],
                    ..new_connection(tenant, "demo", json!({}), json!({}))
                })
                .await
                .unwrap();
        }
        for (run, conn, resource) in [
            ("r1", "acme-c", "contacts"),
            ("r2", "acme-c", "contacts"),
            ("r3", "acme-c", "deals"),
            ("r4", "globex-c", "contacts"),
        ] {
            store
                .start_run(&NewRun {
                    id: run,
                    connection: conn,
                    resource,
                    mode: RunMode::Incremental,
                    reason: "schedule",
                })
                .await
                .unwrap();
            // A distinct start time each, so "the latest run" is well defined.
            sqlx::query("UPDATE sync_runs SET started_at = $1 WHERE id = $2")
                .bind(format!("2026-01-01T00:00:0{}.000Z", &run[1..]))
                .bind(run)
                .execute(store.pool())
                .await
                .unwrap();
        }
        let acme = store.connections(Some("acme")).await.unwrap();
        assert_eq!(
            acme.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
            ["acme-c"],
            "{backend}"
        );
        assert_eq!(store.connections(None).await.unwrap().len(), 2, "{backend}");
        let runs: Vec<(String, String, RunStatus)> = store
            .last_runs_of_tenant(Some("acme"))
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.id, r.resource, r.status))
            .collect();
        assert_eq!(
            runs,
            [
                ("r2".to_string(), "contacts".to_string(), RunStatus::Running),
                ("r3".to_string(), "deals".to_string(), RunStatus::Running)
            ],
            "{backend}"
        );
        assert_eq!(
            store.last_runs_of_tenant(None).await.unwrap().len(),
            3,
            "{backend}"
        );
        assert_eq!(
            store.last_runs("acme-c").await.unwrap().len(),
            2,
            "{backend}"
        );
    }
}

#[tokio::test]
async fn connection_overrides_are_versioned_on_both_databases() {
    for (backend, url) in fresh_databases().await {
        let store = Store::connect(&url, test_cipher()).await.unwrap();
        store.create_tenant("acme").await.unwrap();
        let id = store
            .create_connection(&new_connection("acme", "demo", json!({}), json!({})))
            .await
            .unwrap();
        let never = store.connection_overrides(&id).await.unwrap();
        assert_eq!((never.version, never.overrides), (0, None), "{backend}");
        let layer = json!({"resources": {"contacts": {"fields": {"title": "'x'"}}}});
        assert_eq!(
            store
                .set_connection_overrides(&id, Some(&layer))
                .await
                .unwrap(),
            1
        );
        let set = store.connection_overrides(&id).await.unwrap();
        assert_eq!(
            (set.version, set.overrides),
            (1, Some(layer.clone())),
            "{backend}"
        );
        assert!(set.updated_at.is_some(), "{backend}");
        // Removing is a change too: the version goes on.
        assert_eq!(store.set_connection_overrides(&id, None).await.unwrap(), 2);
        assert_eq!(
            store
                .set_connection_overrides(&id, Some(&layer))
                .await
                .unwrap(),
            3
        );
        assert_eq!(store.set_connection_overrides(&id, None).await.unwrap(), 4);
        let removed = store.connection_overrides(&id).await.unwrap();
        assert_eq!((removed.version, removed.overrides), (4, None), "{backend}");
        assert!(
            matches!(
                store
                    .set_connection_overrides("conn_missing", Some(&layer))
                    .await,
                Err(StoreError::NotFound { .. })
            ),
            "{backend}"
        );
    }
}

/// Connect sessions on both databases: the URL token opens its session (stored hashed);
/// an authorization's state is taken by one callback only, with its sealed verifier; a
/// finished session cannot finish again; an expired one reads as expired and cannot start.
#[tokio::test]
async fn connect_sessions_are_single_use_on_both_databases() {
    use tributary::store::{NewConnectSession, SessionState};
    for (backend, url) in fresh_databases().await {
        let store = Store::connect(&url, test_cipher()).await.unwrap();
        store.create_tenant("acme").await.unwrap();
        let new = NewConnectSession {
            tenant: "acme".into(),
            providers: vec!["hubspot".into()],
            resources: Some(vec!["contacts".into()]),
            return_url: "https://app.example.com/integrations".into(),
            config: serde_json::Map::new(),
            reauthorize: None,
            ttl: std::time::Duration::from_secs(1800),
        };
        let (session, token) = store.create_connect_session(&new).await.unwrap();
        assert_eq!(session.state, SessionState::Pending, "{backend}");
        let opened = store
            .connect_session_by_token(&token)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(opened.id, session.id);
        assert!(store
            .connect_session_by_token("cst_nope")
            .await
            .unwrap()
            .is_none());
        let dump = tributary_e2e::dump_database(&store).await;
        assert!(
            !dump.contains(&token),
            "{backend}: the token is stored hashed only"
        );

        assert!(store
            .start_authorization(&session.id, "hubspot", "state-1", Some("verifier-secret-1"))
            .await
            .unwrap());
        let dump = tributary_e2e::dump_database(&store).await;
        assert!(
            !dump.contains("verifier-secret-1") && !dump.contains("state-1"),
            "{backend}"
        );
        let (taken, verifier) = store.take_authorization("state-1").await.unwrap().unwrap();
        assert_eq!(
            (taken.id.as_str(), verifier.as_deref()),
            (session.id.as_str(), Some("verifier-secret-1"))
        );
        assert!(
            store.take_authorization("state-1").await.unwrap().is_none(),
            "{backend}: single use"
        );

        assert!(store
            .finish_connect_session(&session.id, Ok("conn_1"))
            .await
            .unwrap());
        assert!(!store
            .finish_connect_session(&session.id, Err("late"))
            .await
            .unwrap());
        let done = store.connect_session(&session.id).await.unwrap();
        assert_eq!(
            (done.state, done.connection_id.as_deref()),
            (SessionState::Connected, Some("conn_1"))
        );
        assert!(!store
            .start_authorization(&session.id, "hubspot", "state-2", None)
            .await
            .unwrap());

        let (short, _) = store
            .create_connect_session(&NewConnectSession {
                ttl: std::time::Duration::ZERO,
                ..new
            })
            .await
            .unwrap();
        assert_eq!(short.state, SessionState::Expired, "{backend}");
        assert!(!store
            .start_authorization(&short.id, "hubspot", "state-3", None)
            .await
            .unwrap());
    }
}

#[tokio::test]
async fn a_newer_provider_time_is_never_overwritten_by_an_older_one_on_both_databases() {
    use tributary::store::FetchCommit;
    let at = |t: &str| Some(t.parse::<chrono::DateTime<chrono::Utc>>().unwrap());
    for (backend, url) in fresh_databases().await {
        let store = Store::connect(&url, test_cipher()).await.unwrap();
        store.create_tenant("acme").await.unwrap();
        let id = store
            .create_connection(&new_connection("acme", "demo", json!({}), json!({})))
            .await
            .unwrap();
        let write = |hash: &'static str, time: Option<chrono::DateTime<chrono::Utc>>| {
            let store = store.clone();
            let id = id.clone();
            async move {
                let seen = [StoredFingerprint {
                    record_id: "7".into(),
                    hash: hash.into(),
                    source_updated_at: time,
                    ..StoredFingerprint::default()
                }];
                store
                    .commit_fetch(&FetchCommit {
                        connection: &id,
                        resource: "contacts",
                        fetch_id: &format!("fetch_{hash}"),
                        written: &seen,
                        touched: &[],
                        deleted: &[],
                    })
                    .await
                    .unwrap();
                let got = store
                    .fingerprints(&id, "contacts", &["7".into()])
                    .await
                    .unwrap();
                (got[0].hash.clone(), got[0].source_updated_at)
            }
        };
        let newer = at("2026-12-03T10:00:00.250Z");
        assert_eq!(write("v2", newer).await, ("v2".into(), newer), "{backend}");
        // A writer that read before v2 was committed: the older version is not put back.
        let older = at("2026-12-03T09:59:59Z");
        assert_eq!(write("v1", older).await, ("v2".into(), newer), "{backend}");
        // A version without a provider time replaces the content and keeps the time.
        assert_eq!(write("v3", None).await, ("v3".into(), newer), "{backend}");
        let newest = at("2026-12-03T10:00:01Z");
        assert_eq!(
            write("v4", newest).await,
            ("v4".into(), newest),
            "{backend}"
        );
    }
}
