//! Webhooks end to end on the in-process rig (librdkafka's mock cluster, SQLite, the
//! HubSpot-shaped sandbox sending signed deliveries, the real receiver, intake and
//! workers): a change announced by a webhook arrives as one `updated` event, a
//! delivery sent three times as one, a batch naming two portals reaches each portal's
//! connection only, an unknown portal is parked on `webhooks.unrouted`, a tampered or
//! stale delivery gets 401 and changes nothing, a deletion confirmed by a not-found
//! fetch gives one `deleted`.

mod common;

use std::time::Duration;

use serde_json::{json, Value};
use tributary::connect::apps::Apps;
use tributary::domain::RunMode;
use tributary_e2e::broker::{Received, TopicReader};
use tributary_e2e::inprocess::InProcess;
use tributary_e2e::pipeline::{contacts_sandbox, oauth_contacts_connection};
use tributary_e2e::rig::PipelineRig;
use tributary_e2e::SandboxControl;

const WAIT: Duration = Duration::from_secs(30);

/// The receiver on a loopback port and the webhook intake beside the rig's worker.
struct Receiving {
    /// `http://<addr>/webhooks`: a provider's URL is this and `/<provider>`.
    base: String,
    /// The HubSpot URL.
    url: String,
    _serving: common::Receiving,
}

/// The OAuth apps with the keys webhooks are verified with.
const APPS: &str = "apps:
  hubspot: {client_id: sandbox-client, client_secret: sandbox-client-secret}
  quickbooks:
    client_id: sandbox-client
    client_secret: sandbox-client-secret
    webhook_keys: {verifier_token: [{value: an-old-verifier}, {value: sandbox-verifier-token}]}
";

async fn receiving(rig: &InProcess) -> Receiving {
    let apps = Apps::parse(APPS, &|_| None).unwrap();
    let serving = common::receiving(rig, "admin-token-for-webhook-tests-0123", apps, false).await;
    let base = format!("{}/webhooks", serving.base);
    Receiving {
        url: format!("{base}/hubspot"),
        base,
        _serving: serving,
    }
}

fn statuses(answer: &Value) -> Vec<u64> {
    answer["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|d| {
            d["attempts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a["status"].as_u64().unwrap())
        })
        .collect()
}

fn ids(answer: &Value, key: &str) -> Vec<String> {
    answer[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.to_string())
        .collect()
}

fn events_of<'a>(received: &'a [Received], op: &str, record: &str) -> Vec<&'a Received> {
    received
        .iter()
        .filter(|m| {
            let v = m.value.as_ref();
            v.and_then(|v| v["op"].as_str()) == Some(op)
                && v.and_then(|v| {
                    v["record_id"]
                        .as_str()
                        .map(str::to_string)
                        .or_else(|| v["data"]["id"].as_str().map(str::to_string))
                })
                .as_deref()
                    == Some(record)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn webhooks_announce_changes_once_route_by_portal_and_refuse_forgeries() {
    let rig = InProcess::start(20).await;
    let lane = &rig.lane;
    lane.store
        .set_external_id(&lane.connection, Some("4711"))
        .await
        .unwrap();
    // A second portal: its own sandbox account and tenant.
    let other_sandbox = contacts_sandbox(20, |_| {}).await;
    let other = oauth_contacts_connection(&lane.store, "globex", &other_sandbox).await;
    lane.store
        .set_external_id(&other, Some("4712"))
        .await
        .unwrap();
    let _worker = rig.worker(|_| {});
    let hooks = receiving(&rig).await;
    let mut statuses_topic = rig.statuses();
    rig.run_to_end(RunMode::Full, &mut statuses_topic, WAIT)
        .await;
    let mut events = rig.events();
    events.read_until(WAIT, "the first run's 20 created", |r| r.len() >= 20);

    // A change, announced three times (a provider's retries): one `updated`.
    let changed = lane.control.mutate("contacts", 1, 0, 0).await.unwrap();
    let id = ids(&changed, "updated").remove(0);
    let sent = lane
        .control
        .send_webhooks(json!({"url": hooks.url, "times": 3,
            "events": [{"resource": "contacts", "id": id, "op": "updated", "account": "4711"}]}))
        .await
        .unwrap();
    assert_eq!(statuses(&sent), vec![200, 200, 200], "{sent}");
    events.read_until(WAIT, "the announced update", |r| {
        !events_of(r, "updated", &id).is_empty()
    });
    events.drain_for(Duration::from_secs(2));
    assert_eq!(
        events_of(&events.received, "updated", &id).len(),
        1,
        "one event for three deliveries"
    );

    // Forgeries: nothing stored, nothing changes.
    for tamper in ["signature", "body", "stale", "wrong_key"] {
        let changed = lane.control.mutate("contacts", 1, 0, 0).await.unwrap();
        let id = ids(&changed, "updated").remove(0);
        let sent = lane
            .control
            .send_webhooks(json!({"url": hooks.url, "tamper": tamper,
                "events": [{"resource": "contacts", "id": id, "op": "updated", "account": "4711"}]}))
            .await
            .unwrap();
        assert_eq!(statuses(&sent), vec![401], "{tamper}: {sent}");
    }

    // One batch, two portals, and a portal nobody connected.
    let mine = ids(
        &lane.control.mutate("contacts", 1, 0, 0).await.unwrap(),
        "updated",
    )
    .remove(0);
    let other_control = SandboxControl::new(other_sandbox.base_url());
    let theirs = ids(
        &other_control.mutate("contacts", 1, 0, 0).await.unwrap(),
        "updated",
    )
    .remove(0);
    let mut unrouted = TopicReader::new(&lane.brokers, &lane.topics.webhooks_unrouted());
    let sent = lane
        .control
        .send_webhooks(json!({"url": hooks.url, "events": [
            {"resource": "contacts", "id": mine, "op": "updated", "account": "4711"},
            {"resource": "contacts", "id": theirs, "op": "updated", "account": "4712"},
            {"resource": "contacts", "id": "1", "op": "updated", "account": "999"}]}))
        .await
        .unwrap();
    assert_eq!(statuses(&sent), vec![200], "{sent}");
    let parked = unrouted.read_until(WAIT, "the unknown portal parked", |r| !r.is_empty());
    let reason = parked[0].value.as_ref().unwrap()["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(reason.contains("999"), "{reason}");
    // Portal 4712's connection never synced: the record is new to it (`created`).
    events.read_until(WAIT, "both portals' changes", |r| {
        !events_of(r, "updated", &mine).is_empty() && !events_of(r, "created", &theirs).is_empty()
    });
    events.drain_for(Duration::from_secs(1));
    let of_tenant = |tenant: &str| -> Vec<String> {
        events
            .received
            .iter()
            .filter_map(|m| m.value.as_ref())
            .filter(|v| v["tenant"] == tenant && v["op"] != "deleted")
            .map(|v| v["record_id"].as_str().unwrap().to_string())
            .collect()
    };
    // Each portal's item reached its own connection, and the other tenant saw nothing of it.
    assert_eq!(of_tenant("globex"), vec![theirs.clone()]);
    assert_eq!(of_tenant("acme").last(), Some(&mine));
    assert_eq!(
        of_tenant("acme").len(),
        20 + 2,
        "acme: its first run and two announced changes"
    );

    // A deletion the fetch confirms (not found): one `deleted`.
    let gone = ids(
        &lane.control.mutate("contacts", 0, 1, 0).await.unwrap(),
        "deleted",
    )
    .remove(0);
    let sent = lane
        .control
        .send_webhooks(json!({"url": hooks.url,
            "events": [{"resource": "contacts", "id": gone, "op": "deleted", "account": "4711"}]}))
        .await
        .unwrap();
    assert_eq!(statuses(&sent), vec![200], "{sent}");
    events.read_until(WAIT, "the confirmed delete", |r| {
        !events_of(r, "deleted", &gone).is_empty()
    });
    events.drain_for(Duration::from_secs(2));
    assert_eq!(events_of(&events.received, "deleted", &gone).len(), 1);
    // The forged deliveries' records were never read: no update for them.
    let updated: Vec<_> = events
        .received
        .iter()
        .filter(|m| m.value.as_ref().unwrap()["op"] == "updated")
        .collect();
    assert_eq!(
        updated.len(),
        2,
        "the two announced updates of acme and nothing else"
    );
    let health = lane
        .store
        .channel_health(&lane.connection)
        .await
        .unwrap()
        .unwrap();
    assert!(
        health.deliveries >= 3 && health.last_delivery_at.is_some(),
        "{health:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn quickbooks_legacy_and_cloudevents_bodies_reach_the_realms_connection() {
    let rig = InProcess::start(5).await;
    let lane = &rig.lane;
    let (qbo, control) = tributary_e2e::shipped_sandbox("quickbooks.yaml", |_| {}).await;
    let mut new = tributary_e2e::new_connection(
        &lane.tenant,
        "quickbooks",
        json!({"base_url": qbo.base_url(), "token_url": format!("{}/oauth2/v1/tokens/bearer", qbo.base_url()), "realm_id": "4620816365"}),
        json!({"refresh_token": "sandbox-quickbooks-refresh", "client_id": "sandbox-client", "client_secret": "sandbox-client-secret"}),
    );
    new.resources = vec!["customers".into(), "invoices".into()];
    let connection = lane.store.create_connection(&new).await.unwrap();
    lane.store
        .set_external_id(&connection, Some("4620816365"))
        .await
        .unwrap();
    let _worker = rig.worker(|_| {});
    let hooks = receiving(&rig).await;
    let url = format!("{}/quickbooks", hooks.base);
    let mut events = TopicReader::new(&lane.brokers, &lane.topics.model("accounting.customer"));
    let changed = control.mutate("customers", 1, 0, 0).await.unwrap();
    let id = ids(&changed, "updated").remove(0);
    let event =
        json!([{"resource": "customers", "id": id, "op": "updated", "account": "4620816365"}]);
    // Legacy body: the record is new to this connection (it never synced).
    let sent = control
        .send_webhooks(json!({"url": url, "format": "legacy", "events": event}))
        .await
        .unwrap();
    assert_eq!(statuses(&sent), vec![200], "{sent}");
    events.read_until(WAIT, "the customer read by id", |r| {
        !events_of(r, "created", &id).is_empty()
    });
    // CloudEvents body, after another change of the same customer: `updated`.
    control.mutate("customers", 1, 0, 0).await.unwrap();
    let sent = control
        .send_webhooks(json!({"url": url, "format": "cloudevents", "events": event}))
        .await
        .unwrap();
    assert_eq!(statuses(&sent), vec![200], "{sent}");
    events.read_until(WAIT, "the update", |r| {
        !events_of(r, "updated", &id).is_empty()
    });
    // A body signed with a key nobody configured is refused.
    let sent = control
        .send_webhooks(json!({"url": url, "tamper": "wrong_key", "events": event}))
        .await
        .unwrap();
    assert_eq!(statuses(&sent), vec![401], "{sent}");
}

#[tokio::test(flavor = "multi_thread")]
async fn with_the_broker_down_deliveries_get_503_and_the_providers_retries_complete_them() {
    let rig = InProcess::start(10).await;
    let lane = &rig.lane;
    lane.store
        .set_external_id(&lane.connection, Some("4711"))
        .await
        .unwrap();
    let _worker = rig.worker(|_| {});
    let hooks = receiving(&rig).await;
    let mut statuses_topic = rig.statuses();
    rig.run_to_end(RunMode::Full, &mut statuses_topic, WAIT)
        .await;
    let mut events = rig.events();
    events.read_until(WAIT, "the first run", |r| r.len() >= 10);
    let id = ids(
        &lane.control.mutate("contacts", 1, 0, 0).await.unwrap(),
        "updated",
    )
    .remove(0);
    rig.cluster().broker_down(1).unwrap();
    let control = lane.control.clone();
    let url = hooks.url.clone();
    let sending = tokio::spawn(async move {
        control
            .send_webhooks(json!({"url": url, "retry": {"attempts": 60, "delay_ms": 500},
                "events": [{"resource": "contacts", "id": id, "op": "updated", "account": "4711"}]}))
            .await
            .unwrap()
    });
    // The broker comes back once the receiver has refused at least one attempt.
    loop {
        let stats = lane.control.stats().await.unwrap();
        if stats.webhook_attempts >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    rig.cluster().broker_up(1).unwrap();
    let sent = sending.await.unwrap();
    let got = statuses(&sent);
    assert_eq!(got.first(), Some(&503), "{sent}");
    assert_eq!(got.last(), Some(&200), "{sent}");
    assert!(got[..got.len() - 1].iter().all(|s| *s == 503), "{sent}");
    events.read_until(WAIT, "the update after the outage", |r| {
        r.iter()
            .filter(|m| m.value.as_ref().unwrap()["op"] == "updated")
            .count()
            >= 1
    });
    events.drain_for(Duration::from_secs(2));
    let updated = events
        .received
        .iter()
        .filter(|m| m.value.as_ref().unwrap()["op"] == "updated")
        .count();
    assert_eq!(updated, 1, "one update, however many attempts were stored");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_run_racing_webhook_fetches_sweeps_nothing_and_emits_each_change_once() {
    let rig = InProcess::start(30).await;
    let lane = &rig.lane;
    lane.store
        .set_external_id(&lane.connection, Some("4711"))
        .await
        .unwrap();
    let _worker = rig.worker(|s| s.engine.page_size = Some(10));
    let hooks = receiving(&rig).await;
    let mut statuses_topic = rig.statuses();
    rig.run_to_end(RunMode::Full, &mut statuses_topic, WAIT)
        .await;
    let mut events = rig.events();
    events.read_until(WAIT, "the first run", |r| r.len() >= 30);
    // The second full run stalls on its second page while webhooks announce changes on
    // pages it read already and pages it has not read yet.
    lane.control
        .faults(json!([{"kind": "slow", "delay_ms": 3000, "resource": "contacts", "page": 2, "times": 1}]))
        .await
        .unwrap();
    let requests =
        |s: &tributary_sandbox::Stats| s.by_resource.get("contacts").copied().unwrap_or(0);
    let before = requests(&lane.control.stats().await.unwrap());
    let run = rig.job(RunMode::Full);
    rig.enqueue(&run).await;
    while requests(&lane.control.stats().await.unwrap()) < before + 2 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let changed = ids(
        &lane.control.mutate("contacts", 2, 0, 0).await.unwrap(),
        "updated",
    );
    let events_json: Vec<Value> = changed
        .iter()
        .map(|id| json!({"resource": "contacts", "id": id, "op": "updated", "account": "4711"}))
        .collect();
    let sent = lane
        .control
        .send_webhooks(json!({"url": hooks.url, "events": events_json}))
        .await
        .unwrap();
    assert_eq!(statuses(&sent), vec![200], "{sent}");
    let end = tributary_e2e::pipeline::wait_run_end(&mut statuses_topic, &run.run_id, WAIT);
    assert_eq!(end["type"], "run.completed", "{end}");
    events.read_until(WAIT, "both changes", |r| {
        changed
            .iter()
            .all(|id| !events_of(r, "updated", id).is_empty())
    });
    events.drain_for(Duration::from_secs(2));
    for id in &changed {
        assert_eq!(
            events_of(&events.received, "updated", id).len(),
            1,
            "{id}: one update"
        );
    }
    let deleted = events
        .received
        .iter()
        .filter(|m| m.value.as_ref().unwrap()["op"] == "deleted")
        .count();
    assert_eq!(deleted, 0, "the full run swept nothing");
}
