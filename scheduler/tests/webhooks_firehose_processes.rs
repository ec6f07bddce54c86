//! App-level webhooks (one URL for every account) through the real processes: the
//! scheduler binary receiving and verifying, a worker binary (intake and fetch jobs),
//! tansu and PostgreSQL, two sandbox accounts of HubSpot (portals) and of QuickBooks
//! (realms). For each: 200 announced changes arrive once each (p50 and p99 printed), a
//! delivery sent three times gives one event, one batch naming both accounts reaches each
//! account's connection only, an unknown account is parked on `webhooks.unrouted`,
//! forgeries get 401 and change nothing, a deletion confirmed by a not-found fetch gives
//! one `deleted`.
//!
//! Process-level tier: needs tansu and PostgreSQL (`.ci/run` starts them).
#![cfg(feature = "process-tests")]

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tributary::bus::{Job, JobReason};
use tributary::domain::RunMode;
use tributary::store::NewConnection;
use tributary_e2e::broker::TopicReader;
use tributary_e2e::outage::worker_binary;
use tributary_e2e::pipeline::{await_record_ops, wait_run_end, Rig};
use tributary_e2e::{fresh_postgres, new_connection, shipped_sandbox, SandboxControl};

const WAVES: usize = 20;
const PER_WAVE: usize = 10;
const APPS: &str = "apps:
  hubspot: {client_id: sandbox-client, client_secret: sandbox-client-secret}
  quickbooks:
    client_id: sandbox-client
    client_secret: sandbox-client-secret
    webhook_keys: {verifier_token: [{value: sandbox-verifier-token}]}
";

/// One provider's firehose.
struct Case {
    provider: &'static str,
    resource: &'static str,
    model: &'static str,
    /// The two connected accounts and one nobody connected.
    accounts: [&'static str; 3],
    connection: fn(&str) -> (Value, Value),
    /// The forgeries the provider's scheme can tell (QuickBooks signs no timestamp: an
    /// old delivery is a replay, which deduplication drops).
    forgeries: &'static [&'static str],
}

const HUBSPOT: Case = Case {
    provider: "hubspot",
    resource: "contacts",
    model: "crm.contact",
    accounts: ["4711", "4712", "999999"],
    connection: |url| {
        (
            json!({"base_url": url}),
            json!({"access_token": "sandbox-hubspot-token"}),
        )
    },
    forgeries: &["signature", "body", "stale", "wrong_key"],
};

const QUICKBOOKS: Case = Case {
    provider: "quickbooks",
    resource: "customers",
    model: "accounting.customer",
    accounts: ["4620816365", "4620816366", "9130000000"],
    connection: |url| {
        (
            json!({"base_url": url, "token_url": format!("{url}/oauth2/v1/tokens/bearer"), "realm_id": "4620816365"}),
            json!({"refresh_token": "sandbox-quickbooks-refresh", "client_id": "sandbox-client", "client_secret": "sandbox-client-secret"}),
        )
    },
    forgeries: &["signature", "body", "wrong_key"],
};

fn ids(changed: &Value, key: &str) -> Vec<String> {
    changed[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.to_string())
        .collect()
}

fn statuses(answer: &Value) -> Vec<u64> {
    answer["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|d| d["attempts"].as_array().unwrap().iter())
        .map(|a| a["status"].as_u64().unwrap())
        .collect()
}

fn event(case: &Case, id: &str, op: &str, account: &str) -> Value {
    json!({"resource": case.resource, "id": id, "op": op, "account": account})
}

async fn run_case(case: Case) {
    let rig = Rig::start("postgres", fresh_postgres().await, &worker_binary(), 1).await;
    let lane = &rig.lane;
    // Only this test's connections: the scheduler's first tick runs whatever is due.
    assert!(lane
        .store
        .delete_connection(&lane.connection)
        .await
        .unwrap());
    let file = format!("{}.yaml", case.provider);
    let few = |p: &mut tributary_sandbox::Profile| {
        p.resources.get_mut(case.resource).unwrap().count = 30;
        p.rate_limit = None;
    };
    let (sbx_a, ctl_a) = shipped_sandbox(&file, few).await;
    let (sbx_b, ctl_b) = shipped_sandbox(&file, few).await;
    let mut conns = Vec::new();
    for (sbx, account) in [(&sbx_a, case.accounts[0]), (&sbx_b, case.accounts[1])] {
        let (config, credentials) = (case.connection)(&sbx.base_url());
        let new = NewConnection {
            resources: vec![case.resource.into()],
            external_id: Some(account.into()),
            ..new_connection(&lane.tenant, case.provider, config, credentials)
        };
        conns.push(lane.store.create_connection(&new).await.unwrap());
    }
    let (conn_a, conn_b) = (conns[0].clone(), conns[1].clone());
    let apps = std::env::temp_dir().join(format!(
        "tributary-apps-{}-{}.yaml",
        case.provider,
        tributary_e2e::broker::free_port()
    ));
    std::fs::write(&apps, APPS).unwrap();
    let _worker = rig.worker(&[("TRIBUTARY_WEBHOOK_WINDOW_MS", "100".to_string())]);
    let scheduler = rig
        .scheduler(
            env!("CARGO_BIN_EXE_tributary-scheduler"),
            &[("TRIBUTARY_APPS_FILE", apps.display().to_string())],
        )
        .await;
    let url = format!("{}/webhooks/{}", scheduler.base, case.provider);
    let topics = &lane.topics;
    let mut statuses_topic = TopicReader::new(&lane.brokers, &topics.status());
    let mut events = TopicReader::new(&lane.brokers, &topics.model(case.model));
    let mut unrouted = TopicReader::new(&lane.brokers, &topics.webhooks_unrouted());
    for conn in [&conn_a, &conn_b] {
        let job = Job::new_run(
            &lane.tenant,
            conn,
            case.resource,
            RunMode::Full,
            JobReason::Schedule,
        );
        lane.publisher.enqueue(topics, &job).await.unwrap();
        let end = wait_run_end(&mut statuses_topic, &job.run_id, Duration::from_secs(120));
        assert_eq!(end["type"], "run.completed", "{end}");
    }
    events.read_until(Duration::from_secs(60), "the first runs", |r| r.len() >= 60);
    events.drain_for(Duration::from_secs(1));
    assert_eq!(events.received.len(), 60);

    let send = |ctl: &SandboxControl, request: Value| {
        let (ctl, mut request) = (ctl.clone(), request);
        request["url"] = json!(url.clone());
        tokio::spawn(async move { ctl.send_webhooks(request).await.unwrap() })
    };
    // 200 announced changes, one delivery each.
    let mut latencies = Vec::new();
    for _ in 0..WAVES {
        let changed = ids(
            &ctl_a.mutate(case.resource, PER_WAVE, 0, 0).await.unwrap(),
            "updated",
        );
        let sent = Instant::now();
        let sends: Vec<_> = (changed.iter())
            .map(|id| {
                send(
                    &ctl_a,
                    json!({"events": [event(&case, id, "updated", case.accounts[0])]}),
                )
            })
            .collect();
        for sent in sends {
            let answer = sent.await.unwrap();
            assert_eq!(statuses(&answer), vec![200], "{answer}");
        }
        let arrived = await_record_ops(&mut events, &conn_a, "updated", &changed);
        latencies.extend(arrived.values().map(|at| at.duration_since(sent)));
    }

    // The same delivery three times: one event.
    let changed = ids(
        &ctl_a.mutate(case.resource, 1, 0, 0).await.unwrap(),
        "updated",
    );
    let answer = send(
        &ctl_a,
        json!({"times": 3, "events": [event(&case, &changed[0], "updated", case.accounts[0])]}),
    )
    .await
    .unwrap();
    assert_eq!(statuses(&answer), vec![200, 200, 200], "{answer}");
    await_record_ops(&mut events, &conn_a, "updated", &changed);

    // One batch, both accounts, and one nobody connected: each change at its own
    // connection, the stranger parked.
    let mine = ids(
        &ctl_a.mutate(case.resource, 1, 0, 0).await.unwrap(),
        "updated",
    );
    let theirs = ids(
        &ctl_b.mutate(case.resource, 1, 0, 0).await.unwrap(),
        "updated",
    );
    let answer = send(
        &ctl_a,
        json!({"events": [
            event(&case, &mine[0], "updated", case.accounts[0]),
            event(&case, &theirs[0], "updated", case.accounts[1]),
            event(&case, "777", "updated", case.accounts[2]),
        ]}),
    )
    .await
    .unwrap();
    assert_eq!(statuses(&answer), vec![200], "one delivery: {answer}");
    let at = events.received.len();
    events.read_until(Duration::from_secs(30), "both accounts' changes", |r| {
        r.len() >= at + 2
    });
    let mut reached: Vec<(String, String)> = events.received[at..]
        .iter()
        .map(|m| {
            let v = m.value.as_ref().unwrap();
            (
                v["connection"].as_str().unwrap().into(),
                v["record_id"].as_str().unwrap().into(),
            )
        })
        .collect();
    reached.sort();
    let mut want = vec![
        (conn_a.clone(), mine[0].clone()),
        (conn_b.clone(), theirs[0].clone()),
    ];
    want.sort();
    assert_eq!(reached, want);
    unrouted.read_until(Duration::from_secs(30), "the stranger parked", |r| {
        !r.is_empty()
    });
    let parked = unrouted.received[0].value.clone().unwrap();
    assert!(
        parked["reason"]
            .as_str()
            .unwrap()
            .contains(case.accounts[2]),
        "{parked}"
    );

    // Forgeries: 401, nothing published.
    let changed = ids(
        &ctl_a.mutate(case.resource, 1, 0, 0).await.unwrap(),
        "updated",
    );
    for tamper in case.forgeries {
        let answer = send(&ctl_a, json!({"tamper": tamper, "events": [event(&case, &changed[0], "updated", case.accounts[0])]})).await.unwrap();
        assert_eq!(statuses(&answer), vec![401], "{tamper}: {answer}");
    }

    // A deletion, confirmed by a fetch that does not find the record: one `deleted`.
    let gone = ids(
        &ctl_a.mutate(case.resource, 0, 1, 0).await.unwrap(),
        "deleted",
    );
    send(
        &ctl_a,
        json!({"events": [event(&case, &gone[0], "deleted", case.accounts[0])]}),
    )
    .await
    .unwrap();
    await_record_ops(&mut events, &conn_a, "deleted", &gone);
    events.drain_for(Duration::from_secs(2));
    assert_eq!(
        events.received.len(),
        60 + WAVES * PER_WAVE + 1 + 2 + 1,
        "forgeries published nothing"
    );
    let unique: HashSet<String> = events
        .received
        .iter()
        .map(|m| m.value.as_ref().unwrap()["id"].to_string())
        .collect();
    assert_eq!(unique.len(), events.received.len(), "every event id once");

    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    eprintln!(
        "{} webhook -> event over {} webhooks: p50 {:?}, p99 {:?}, max {:?}",
        case.provider,
        latencies.len(),
        at(0.50),
        at(0.99),
        latencies.last().unwrap()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn hubspot_portals_through_the_processes() {
    run_case(HUBSPOT).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn quickbooks_realms_through_the_processes() {
    run_case(QUICKBOOKS).await;
}
