//! Per-tenant schemas in one process (librdkafka's mock cluster, SQLite, sandboxes, the
//! real consumer loop): each HubSpot portal's own custom properties, discovered, requested
//! and typed; a property added between runs discovered on demand and on the cadence,
//! announced as `connection.schema_changed`, and synced; a Salesforce org's custom fields
//! selected from its describe, a standard field it lacks left out, and its custom object
//! synced into `<prefix>.custom.project__c` with creates, updates and deletes.

use std::collections::{BTreeSet, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};
use tributary::bus::{Job, JobReason};
use tributary::domain::RunMode;
use tributary::sync::Syncer;
use tributary_e2e::broker::TopicReader;
use tributary_e2e::inprocess::InProcess;
use tributary_e2e::pipeline::{contacts_sandbox, oauth_contacts_connection, of_run, wait_run_end};
use tributary_e2e::rig::PipelineRig;
use tributary_e2e::{check_event_schema, new_connection, repo_root, SandboxControl};
use tributary_sandbox::{self as sandbox, Profile};

const WAIT: Duration = Duration::from_secs(60);

/// The shipped specs, with HubSpot's contact discovery due again one second after the last.
fn specs_with_fast_cadence() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tributary-schema-specs-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(repo_root().join("provider-specs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
        }
    }
    let file = dir.join("hubspot.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    let mut doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    doc["discovery"]["contact_fields"]["every_seconds"] = 1.into();
    std::fs::write(&file, serde_yaml_ng::to_string(&doc).unwrap()).unwrap();
    dir
}

fn job(tenant: &str, connection: &str, resource: &str, mode: RunMode) -> Job {
    Job::new_run(tenant, connection, resource, mode, JobReason::Schedule)
}

/// The change events of one run, each checked against the committed schema.
fn run_events(events: &mut TopicReader, run: &str, count: usize) -> Vec<Value> {
    events.read_until(WAIT, &format!("{count} events of run {run}"), |all| {
        of_run(all, run).len() >= count
    });
    let mine: Vec<Value> = of_run(&events.received, run).into_iter().cloned().collect();
    for v in &mine {
        check_event_schema("change-event", v).unwrap_or_else(|e| panic!("{e}: {v}"));
    }
    mine
}

fn custom_names(event: &Value) -> BTreeSet<String> {
    event["data"]["custom_fields"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect()
}

fn schema_changes<'a>(statuses: &'a TopicReader, connection: &str) -> Vec<&'a Value> {
    statuses
        .received
        .iter()
        .filter_map(|r| r.value.as_ref())
        .filter(|v| v["type"] == "connection.schema_changed" && v["connection"] == connection)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn each_portal_gets_its_own_custom_properties_typed_and_new_ones_after_discovery() {
    let n = 12;
    let rig = InProcess::start(n).await;
    // A second portal whose contacts have other custom properties.
    let other = contacts_sandbox(n, |_| {}).await;
    let other_control = SandboxControl::new(other.base_url());
    other_control
        .remove_field("contacts", "customer_tier")
        .await
        .unwrap();
    other_control
        .remove_field("contacts", "favorite_color")
        .await
        .unwrap();
    other_control
        .add_field(
            "contacts",
            json!({"name": "lead_score", "label": "Lead score", "type": "number"}),
        )
        .await
        .unwrap();
    let globex = oauth_contacts_connection(&rig.lane.store, "globex", &other).await;
    let acme = rig.lane.connection.clone();
    let specs = specs_with_fast_cadence();
    let _worker = rig.worker(|s| s.specs_dir = specs.clone());
    let mut events = rig.events();
    let mut statuses = rig.statuses();

    let a = job("acme", &acme, "contacts", RunMode::Full);
    let g = job("globex", &globex, "contacts", RunMode::Full);
    rig.enqueue(&a).await;
    rig.enqueue(&g).await;
    assert_eq!(
        wait_run_end(&mut statuses, &a.run_id, WAIT)["type"],
        "run.completed"
    );
    assert_eq!(
        wait_run_end(&mut statuses, &g.run_id, WAIT)["type"],
        "run.completed"
    );
    let acme_events = run_events(&mut events, &a.run_id, n as usize);
    let globex_events = run_events(&mut events, &g.run_id, n as usize);
    let want_acme: BTreeSet<String> = ["customer_tier", "favorite_color"].map(String::from).into();
    for e in &acme_events {
        assert_eq!(custom_names(e), want_acme, "{e}");
        let tier = e["data"]["custom_fields"]["customer_tier"]
            .as_str()
            .unwrap();
        assert!(["gold", "silver", "bronze"].contains(&tier), "{e}");
    }
    for e in &globex_events {
        assert_eq!(
            custom_names(e),
            BTreeSet::from(["lead_score".to_string()]),
            "{e}"
        );
        // HubSpot sends every value as a string; the discovered type makes it a number.
        assert!(e["data"]["custom_fields"]["lead_score"].is_number(), "{e}");
    }
    assert!(
        schema_changes(&statuses, &acme).is_empty(),
        "a first discovery is no change"
    );

    // On demand: a property added at acme's portal is found at once and announced.
    rig.lane
        .control
        .add_field(
            "contacts",
            json!({"name": "renewal_date", "label": "Renewal", "type": "date"}),
        )
        .await
        .unwrap();
    let syncer = Syncer::new(rig.lane.store.clone(), rig.lane.publisher.clone(), {
        let mut s = rig.settings();
        s.specs_dir = specs.clone();
        s
    });
    let conn = rig.lane.store.connection(&acme).await.unwrap();
    let reports = syncer.discover_connection(&conn).await.unwrap().unwrap();
    assert_eq!(reports.len(), 1);
    assert!(reports[0].ok, "{reports:?}");
    assert_eq!(reports[0].change.added.len(), 1, "{reports:?}");
    assert_eq!(reports[0].change.added[0].name, "renewal_date");
    let acme_id = acme.clone();
    statuses.read_until(WAIT, "connection.schema_changed for acme", move |all| {
        all.iter().filter_map(|r| r.value.as_ref()).any(|v| {
            v["type"] == "connection.schema_changed" && v["connection"] == acme_id.as_str()
        })
    });
    let changed = schema_changes(&statuses, &acme);
    assert_eq!(changed[0]["schema"]["subject"], "contact_fields");
    assert_eq!(changed[0]["schema"]["added"][0]["name"], "renewal_date");
    assert_eq!(changed[0]["schema"]["added"][0]["type"], "date");
    check_event_schema("status-event", changed[0]).unwrap();

    // The next full run requests it, and every record's value arrives as a date.
    let a2 = job("acme", &acme, "contacts", RunMode::Full);
    rig.enqueue(&a2).await;
    assert_eq!(
        wait_run_end(&mut statuses, &a2.run_id, WAIT)["type"],
        "run.completed"
    );
    for e in run_events(&mut events, &a2.run_id, n as usize) {
        assert_eq!(e["op"], "updated", "{e}");
        let date = e["data"]["custom_fields"]["renewal_date"].as_str().unwrap();
        assert!(
            chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").is_ok(),
            "{e}"
        );
    }

    // On the cadence: a property added at globex's portal is discovered by its next run.
    other_control
        .add_field(
            "contacts",
            json!({"name": "vip", "label": "VIP", "type": "bool"}),
        )
        .await
        .unwrap();
    // The cadence is one second: this waits for time itself to pass, not for an event.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let g2 = job("globex", &globex, "contacts", RunMode::Full);
    rig.enqueue(&g2).await;
    assert_eq!(
        wait_run_end(&mut statuses, &g2.run_id, WAIT)["type"],
        "run.completed"
    );
    let changed = schema_changes(&statuses, &globex);
    assert_eq!(changed.len(), 1, "{changed:?}");
    assert_eq!(changed[0]["schema"]["added"][0]["name"], "vip");
    for e in run_events(&mut events, &g2.run_id, n as usize) {
        assert!(e["data"]["custom_fields"]["vip"].is_boolean(), "{e}");
        assert!(
            e["data"]["custom_fields"].get("renewal_date").is_none(),
            "{e}"
        );
    }
    // A discovery that fails (here: a spec asking for an object the portal does not have)
    // keeps the last good schema, and the connection's stored schema says why.
    let broken = specs_with_fast_cadence();
    let file = broken.join("hubspot.yaml");
    let text = std::fs::read_to_string(&file).unwrap().replace(
        "/crm/v3/properties/contacts",
        "/crm/v3/properties/no_such_object",
    );
    std::fs::write(&file, text).unwrap();
    let failing = Syncer::new(rig.lane.store.clone(), rig.lane.publisher.clone(), {
        let mut s = rig.settings();
        s.specs_dir = broken;
        s
    });
    let reports = failing.discover_connection(&conn).await.unwrap().unwrap();
    assert!(!reports[0].ok, "{reports:?}");
    assert!(
        reports[0].error.as_deref().unwrap().contains("404"),
        "{reports:?}"
    );
    let kept = reports[0]
        .schema
        .as_ref()
        .expect("the last good schema stays");
    assert!(kept.field("renewal_date").is_some(), "{kept:?}");
    let stored = rig
        .lane
        .store
        .schema(&acme, "contact_fields")
        .await
        .unwrap()
        .unwrap();
    assert!(stored.error.is_some());
    assert!(stored.schema.field("renewal_date").is_some());
    let acme_id = acme.clone();
    statuses.read_until(WAIT, "connection.discovery_failed for acme", move |all| {
        all.iter().filter_map(|r| r.value.as_ref()).any(|v| {
            v["type"] == "connection.discovery_failed" && v["connection"] == acme_id.as_str()
        })
    });
}

/// A Salesforce org: the contacts' SOQL selects the org's custom fields (found by
/// describe) and leaves out a standard field the org lacks; the custom object syncs.
#[tokio::test(flavor = "multi_thread")]
async fn a_salesforce_org_custom_fields_and_custom_object() {
    let rig = InProcess::start(1).await;
    let profile =
        Profile::load(&repo_root().join("provider-specs/sandbox/salesforce.yaml")).unwrap();
    let org = sandbox::start(profile, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let control = SandboxControl::new(org.base_url());
    // This org has no mobile phones: selecting MobilePhone would be INVALID_FIELD.
    control
        .remove_field("contacts", "MobilePhone")
        .await
        .unwrap();
    let store = &rig.lane.store;
    store.create_tenant("initech").await.unwrap();
    let mut new = new_connection(
        "initech",
        "salesforce",
        json!({
            "base_url": org.base_url(),
            "instance_url": "https://initech.my.salesforce.com",
            "token_url": format!("{}/services/oauth2/token", org.base_url()),
        }),
        json!({
            "refresh_token": "sandbox-salesforce-refresh",
            "client_id": "sandbox-client",
            "client_secret": "sandbox-client-secret"
        }),
    );
    new.resources = vec!["contacts".into(), "custom:Project__c".into()];
    let conn = store.create_connection(&new).await.unwrap();
    let object_topic = rig.lane.topics.model("custom.project__c");
    // The mock cluster cannot create topics on request (a real broker does, at the first sync).
    rig.cluster().create_topic(&object_topic, 3, 1).unwrap();
    let _worker = rig.worker(|_| {});
    let mut statuses = rig.statuses();
    let mut contacts = rig.events();
    let mut projects = TopicReader::new(&rig.lane.brokers, &object_topic);

    let c = job("initech", &conn, "contacts", RunMode::Full);
    rig.enqueue(&c).await;
    let end = wait_run_end(&mut statuses, &c.run_id, WAIT);
    assert_eq!(end["type"], "run.completed", "{end}");
    let total = end["counts"]["created"].as_u64().unwrap() as usize;
    assert!(total > 0);
    for e in run_events(&mut contacts, &c.run_id, total) {
        let custom = &e["data"]["custom_fields"];
        assert!(custom["Region__c"].is_string(), "{e}");
        assert!(custom["Tier__c"].is_number(), "{e}");
        assert!(e["data"]["phones"]
            .as_array()
            .is_none_or(|p| p.iter().all(|p| p["type"] != "mobile")));
    }

    let p = job("initech", &conn, "custom:Project__c", RunMode::Full);
    rig.enqueue(&p).await;
    let end = wait_run_end(&mut statuses, &p.run_id, WAIT);
    assert_eq!(end["type"], "run.completed", "{end}");
    let created = run_events(&mut projects, &p.run_id, 30);
    assert_eq!(created.len(), 30);
    let ids: HashSet<&str> = created
        .iter()
        .map(|e| e["record_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 30);
    for e in &created {
        assert_eq!(e["op"], "created");
        assert_eq!(e["model"], "custom.object");
        assert_eq!(e["data"]["object"], "Project__c");
        assert!(e["data"]["fields"]["Budget__c"].is_number(), "{e}");
        assert!(e["data"]["fields"]["Status__c"].is_string(), "{e}");
    }

    control.mutate("projects", 2, 3, 0).await.unwrap();
    let p2 = job("initech", &conn, "custom:Project__c", RunMode::Full);
    rig.enqueue(&p2).await;
    let end = wait_run_end(&mut statuses, &p2.run_id, WAIT);
    assert_eq!(end["type"], "run.completed", "{end}");
    let changes = run_events(&mut projects, &p2.run_id, 5);
    let ops: Vec<&str> = changes.iter().map(|e| e["op"].as_str().unwrap()).collect();
    assert_eq!(
        ops.iter().filter(|o| **o == "updated").count(),
        2,
        "{ops:?}"
    );
    assert_eq!(
        ops.iter().filter(|o| **o == "deleted").count(),
        3,
        "{ops:?}"
    );
}
