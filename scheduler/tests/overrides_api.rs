//! Connection overrides through the control API, served in-process on the in-process rig
//! (librdkafka's mock cluster, SQLite, the HubSpot-shaped sandbox): set, show and remove
//! with versions; refused overrides leave the stored ones in force; other tenants see
//! nothing; a preview maps the live first page and publishes nothing; discovery on demand
//! finds what the account added.

use std::sync::Arc;

use reqwest::StatusCode;
use serde_json::{json, Value};
use tributary::sync::Syncer;
use tributary_e2e::broker::{end_offsets, TopicReader};
use tributary_e2e::check_event_schema;
use tributary_e2e::inprocess::InProcess;
use tributary_e2e::pipeline::values;
use tributary_scheduler::api::{router, ApiState};

const ADMIN: &str = "admin-token-for-override-tests-0123";
/// Contacts the sandbox serves: one page at the spec's page size (100).
const CONTACTS: u64 = 30;

struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    /// The API's router on a loopback port, on the rig's store and broker.
    async fn serve(rig: &InProcess) -> Api {
        let lane = &rig.lane;
        let settings = rig.settings();
        let state = Arc::new(ApiState {
            store: lane.store.clone(),
            publisher: lane.publisher.clone(),
            topics: lane.topics.clone(),
            specs_dir: settings.specs_dir.clone(),
            admin_token: ADMIN.to_string(),
            syncer: Arc::new(Syncer::new(
                lane.store.clone(),
                lane.publisher.clone(),
                settings,
            )),
            connect: Default::default(),
            webhooks: tributary_scheduler::api::webhooks::WebhookState {
                publisher: lane.publisher.clone(),
                ack_timeout: std::time::Duration::from_secs(2),
            },
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router(state)).await });
        Api {
            http: reqwest::Client::new(),
            base,
        }
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

fn message(v: &Value) -> &str {
    v["error"]["message"].as_str().unwrap_or_default()
}

fn title_override(expr: &str) -> Value {
    json!({"resources": {"contacts": {"fields": {"title": expr}}}})
}

#[tokio::test(flavor = "multi_thread")]
async fn overrides_are_versioned_validated_and_private_to_their_tenant() {
    let rig = InProcess::start(CONTACTS).await;
    let api = Api::serve(&rig).await;
    let lane = &rig.lane;
    let acme = lane.store.create_token(&lane.tenant).await.unwrap();
    lane.store.create_tenant("beta").await.unwrap();
    let beta = lane.store.create_token("beta").await.unwrap();
    let path = format!("/v1/connections/{}/overrides", lane.connection);
    let mut statuses = TopicReader::new(&lane.brokers, &lane.topics.status());

    let (s, v) = api.call("GET", &path, &acme, None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (v["version"].clone(), v["overrides"].clone()),
        (json!(0), Value::Null)
    );

    // Set by the connection's tenant: version 1, announced on the status topic.
    let good = title_override("'Conn ' & $string(id)");
    let (s, v) = api.call("PUT", &path, &acme, Some(good.clone())).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["version"], 1);
    assert_eq!(v["overrides"], good);
    statuses.read_until(
        std::time::Duration::from_secs(30),
        "overrides_changed",
        |all| {
            values(all)
                .iter()
                .any(|e| e["type"] == "connection.overrides_changed")
        },
    );
    let changed = values(&statuses.received)
        .into_iter()
        .find(|e| e["type"] == "connection.overrides_changed")
        .unwrap()
        .clone();
    check_event_schema("status-event", &changed).unwrap_or_else(|e| panic!("{e}: {changed}"));
    assert_eq!(changed["connection"], lane.connection.as_str());
    assert!(
        changed["reason"].as_str().unwrap().contains("version 1"),
        "{changed}"
    );

    // Refused, each naming resource, field and problem; version 1 stays in force.
    for (bad, wanted) in [
        (
            title_override("properties.jobtitle["),
            vec!["`contacts`", "`title`", "invalid JSONata"],
        ),
        (
            json!({"resources": {"contacts": {"fields": {"titel": "properties.jobtitle"}}}}),
            vec!["`contacts`", "`titel`", "crm.contact has no field `titel`"],
        ),
        (
            json!({"resources": {"people": {"fields": {"title": "'x'"}}}}),
            vec!["`people`", "no resource `people`"],
        ),
        // Compiles, but the first page's records do not validate: `title` is a string.
        (
            title_override("42"),
            vec![
                "`contacts`",
                "do not map into a valid crm.contact",
                "/title",
            ],
        ),
        (
            json!({"resources": {"contacts": {"feilds": {}}}}),
            vec!["unknown field `feilds`"],
        ),
    ] {
        let (s, v) = api.call("PUT", &path, &acme, Some(bad.clone())).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad} -> {v}");
        for w in wanted {
            assert!(
                message(&v).contains(w),
                "{bad}: `{w}` not in {}",
                message(&v)
            );
        }
    }
    let (_, v) = api.call("GET", &path, ADMIN, None).await;
    assert_eq!(
        (v["version"].clone(), v["overrides"].clone()),
        (json!(1), good.clone())
    );

    // Another tenant's token: the connection does not exist for it.
    let preview_path = format!("/v1/connections/{}/preview", lane.connection);
    for (method, p, body) in [
        ("GET", &path, None),
        ("PUT", &path, Some(good.clone())),
        ("DELETE", &path, None),
        ("POST", &preview_path, Some(json!({"resource": "contacts"}))),
    ] {
        let (s, v) = api.call(method, p, &beta, body).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{method} {p}: {v}");
    }

    // Removed: version 2, no overrides.
    let (s, v) = api.call("DELETE", &path, &acme, None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (v["version"].clone(), v["overrides"].clone()),
        (json!(2), Value::Null)
    );
    let (_, v) = api.call("GET", &path, &acme, None).await;
    assert_eq!(v["version"], 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_preview_maps_the_live_first_page_and_publishes_nothing() {
    let rig = InProcess::start(CONTACTS).await;
    let api = Api::serve(&rig).await;
    let lane = &rig.lane;
    let path = format!("/v1/connections/{}/overrides", lane.connection);
    let preview = format!("/v1/connections/{}/preview", lane.connection);
    let stored = title_override("'Conn ' & $string(id)");
    let (s, v) = api.call("PUT", &path, ADMIN, Some(stored)).await;
    assert_eq!(s, StatusCode::OK, "{v}");

    let topics = [
        lane.topics.model("crm.contact"),
        lane.topics.status(),
        lane.topics.dead_letters(),
    ];
    let before: Vec<Vec<i64>> = topics
        .iter()
        .map(|t| end_offsets(&lane.brokers, t))
        .collect();

    // Proposed overrides replace the stored ones for the preview.
    let proposed = json!({"resources": {"contacts": {"fields": {
        "title": "'Preview ' & $string(id)",
        "custom_fields.initials": "$substring(properties.firstname, 0, 1) & $substring(properties.lastname, 0, 1)"
    }}}});
    let (s, v) = api
        .call(
            "POST",
            &preview,
            ADMIN,
            Some(json!({"resource": "contacts", "overrides": proposed, "limit": 5})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["page_records"], CONTACTS);
    assert_eq!(v["model"], "crm.contact");
    assert_eq!(v["overrides_version"], Value::Null);
    assert_eq!(v["violations"], json!([]));
    let records = v["records"].as_array().unwrap();
    assert_eq!(records.len(), 5);
    let served = lane.control.records("contacts").await.unwrap();
    for r in records {
        let id = r["id"].as_str().unwrap();
        assert_eq!(r["data"]["title"], format!("Preview {id}"), "{r}");
        // The base mapping's other fields are kept.
        let (_, raw) = served.iter().find(|(n, _)| n.to_string() == id).unwrap();
        let props = &raw["properties"];
        assert_eq!(r["data"]["first_name"], props["firstname"], "{r} {raw}");
        let initials: String = [&props["firstname"], &props["lastname"]]
            .iter()
            .filter_map(|s| s.as_str()?.chars().next())
            .collect();
        assert_eq!(r["custom_fields"]["initials"], initials, "{r}");
    }

    // Without proposed overrides: the stored ones.
    let (s, v) = api
        .call(
            "POST",
            &preview,
            ADMIN,
            Some(json!({"resource": "contacts", "limit": 2})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["overrides_version"], 1);
    let first = &v["records"][0];
    assert_eq!(
        first["data"]["title"],
        format!("Conn {}", first["id"].as_str().unwrap())
    );

    // A preview shows violations instead of refusing.
    let (s, v) = api
        .call(
            "POST",
            &preview,
            ADMIN,
            Some(json!({"resource": "contacts", "overrides": title_override("42")})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        v["violations"].as_array().unwrap().len() as u64,
        CONTACTS,
        "{v}"
    );
    assert!(
        v["violations"][0]["message"]
            .as_str()
            .unwrap()
            .contains("/title"),
        "{v}"
    );

    let (s, v) = api
        .call(
            "POST",
            &preview,
            ADMIN,
            Some(json!({"resource": "tickets"})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(message(&v).contains("no resource `tickets`"), "{v}");

    // Nothing was published, and the stored overrides are as they were.
    let after: Vec<Vec<i64>> = topics
        .iter()
        .map(|t| end_offsets(&lane.brokers, t))
        .collect();
    assert_eq!(before, after, "a preview publishes nothing");
    // The connection never synced: the preview discovered its fields live, storing none.
    assert!(lane
        .store
        .schemas(&lane.connection)
        .await
        .unwrap()
        .is_empty());
    let (_, v) = api.call("GET", &path, ADMIN, None).await;
    assert_eq!(v["version"], 1);
}

/// `run` and `standalone` check the environment's overlays before anything starts.
#[test]
fn the_scheduler_refuses_to_start_on_an_overlay_that_does_not_apply() {
    let dir = std::env::temp_dir().join(format!("tributary-sched-overlay-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("hubspot.yaml");
    std::fs::write(
        &file,
        "resources:\n  contacts:\n    fields:\n      titel: properties.jobtitle\n",
    )
    .unwrap();
    let wanted = format!(
        "{}:4: at `resources.contacts.fields.titel`: the unified model crm.contact has no field `titel`",
        file.display()
    );
    let scheduler = || std::process::Command::new(env!("CARGO_BIN_EXE_tributary-scheduler"));
    let run = scheduler()
        .current_dir(tributary_e2e::repo_root())
        .arg("run")
        .env("TRIBUTARY_OVERRIDES_DIR", &dir)
        .env("TRIBUTARY_ADMIN_TOKEN", ADMIN)
        .env(
            "TRIBUTARY_ENCRYPTION_KEY",
            tributary::secrets::crypto::Cipher::generate_key(),
        )
        .env("TRIBUTARY_KAFKA_BROKERS", "127.0.0.1:1")
        .output()
        .unwrap();
    let standalone = scheduler()
        .current_dir(tributary_e2e::repo_root())
        .args(["standalone", "--api-addr", "127.0.0.1:0", "--data-dir"])
        .arg(dir.join("standalone"))
        .arg("--overrides-dir")
        .arg(&dir)
        .output()
        .unwrap();
    for (name, out) in [("run", run), ("standalone", standalone)] {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name} started: {err}");
        assert!(err.contains(&wanted), "{name}: {err}");
    }
}

/// On-demand discovery through the API: a property added at the portal is found at once,
/// announced, and shown with the connection; another tenant's token sees nothing.
#[tokio::test(flavor = "multi_thread")]
async fn discovery_on_demand_finds_a_new_property_and_the_connection_shows_it() {
    let rig = InProcess::start(CONTACTS).await;
    let api = Api::serve(&rig).await;
    let lane = &rig.lane;
    let acme = lane.store.create_token(&lane.tenant).await.unwrap();
    lane.store.create_tenant("beta").await.unwrap();
    let beta = lane.store.create_token("beta").await.unwrap();
    let discover = format!("/v1/connections/{}/discover", lane.connection);
    let (s, v) = api.call("POST", &discover, &acme, None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let first = &v["discovered"][0];
    assert_eq!(first["subject"], "contact_fields", "{v}");
    assert_eq!(first["ok"], true, "{v}");
    assert!(
        first["change"]["added"].as_array().unwrap().is_empty(),
        "a first discovery: {v}"
    );

    lane.control
        .add_field(
            "contacts",
            json!({"name": "churn_risk", "label": "Churn risk", "type": "number"}),
        )
        .await
        .unwrap();
    let (s, v) = api.call("POST", &discover, &acme, None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let added = &v["discovered"][0]["change"]["added"];
    assert_eq!(added[0]["name"], "churn_risk", "{v}");
    assert_eq!(added[0]["type"], "number", "{v}");
    assert_eq!(added[0]["custom"], true, "{v}");

    let (s, v) = api
        .call(
            "GET",
            &format!("/v1/connections/{}", lane.connection),
            &acme,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let shown = &v["schemas"][0];
    assert_eq!(shown["status"], "current", "{v}");
    assert!(
        shown["custom_fields"]
            .as_array()
            .unwrap()
            .contains(&json!("churn_risk")),
        "{v}"
    );
    let (s, v) = api
        .call(
            "GET",
            &format!("/v1/connections/{}/schema", lane.connection),
            &acme,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let fields = v["schemas"][0]["fields"].as_array().unwrap();
    assert!(
        fields
            .iter()
            .any(|f| f["name"] == "churn_risk" && f["type"] == "number"),
        "{v}"
    );

    // The portal's custom objects, named as a connection's resources name them.
    let objects = format!("/v1/connections/{}/objects", lane.connection);
    let (s, v) = api.call("GET", &objects, &acme, None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        v["objects"][0]["resource"], "custom:p12345678_project",
        "{v}"
    );

    let (s, _) = api.call("POST", &discover, &beta, None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = api.call("GET", &objects, &beta, None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = api
        .call(
            "GET",
            &format!("/v1/connections/{}/schema", lane.connection),
            &beta,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}
