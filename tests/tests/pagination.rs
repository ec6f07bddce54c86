//! The engine against the sandbox in every pagination style: every record
//! exactly once, in order; repeated cursors and page limits stop with errors.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use tributary::engine::{
    ignore_events, Connection, EngineError, EngineEvent, ErrorKind, RunOptions,
};
use tributary::spec::{load_spec, CompiledSpec};
use tributary_e2e::engine::read_resource;
use tributary_sandbox::{self as sandbox, Profile, SandboxHandle};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name)
}

async fn setup() -> (Arc<CompiledSpec>, SandboxHandle, Connection) {
    let spec = load_spec(&fixture("styles.spec.yaml")).unwrap();
    let sbx = sandbox::start(
        Profile::load(&fixture("styles.sandbox.yaml")).unwrap(),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let connection = Connection {
        config: json!({"base_url": sbx.base_url()})
            .as_object()
            .unwrap()
            .clone(),
        credentials: serde_json::from_value(json!({"api_key": "styles-key"})).unwrap(),
    };
    (spec, sbx, connection)
}

fn options() -> RunOptions {
    RunOptions {
        allow_private_hosts: true,
        retry_base: std::time::Duration::from_millis(10),
        ..RunOptions::default()
    }
}

async fn read_all(
    spec: &Arc<CompiledSpec>,
    connection: &Connection,
    resource: &str,
    options: RunOptions,
) -> (Vec<Value>, usize, Option<EngineError>) {
    read_resource(spec, connection, resource, options, ignore_events()).await
}

async fn sandbox_ids(sbx: &SandboxHandle, resource: &str) -> Vec<Value> {
    let listing: Value = reqwest::get(format!("{}/_sandbox/resources/{resource}", sbx.base_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    listing["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].clone())
        .collect()
}

#[tokio::test]
async fn every_pagination_style_reads_every_record_once_in_order() {
    let (spec, sbx, connection) = setup().await;
    for resource in [
        "cursor_items",
        "link_items",
        "next_url_items",
        "relative_url_items",
        "offset_items",
        "page_items",
        "start_items",
    ] {
        let (records, pages, err) = read_all(&spec, &connection, resource, options()).await;
        assert!(err.is_none(), "{resource}: {err:?}");
        let ids: Vec<Value> = records.iter().map(|r| r["id"].clone()).collect();
        assert_eq!(ids, sandbox_ids(&sbx, resource).await, "{resource}");
        assert!(pages >= 5, "{resource}: {pages} pages");
    }
}

#[tokio::test]
async fn a_repeating_cursor_stops_with_an_error_naming_the_page() {
    let (spec, sbx, connection) = setup().await;
    reqwest::Client::new()
        .post(format!("{}/_sandbox/faults", sbx.base_url()))
        .json(&json!([{"kind": "repeat_cursor", "page": 3}]))
        .send()
        .await
        .unwrap();
    let (records, _, err) = read_all(&spec, &connection, "next_url_items", options()).await;
    let err = err.expect("the loop is detected");
    assert!(
        matches!(*err.kind, ErrorKind::RepeatedCursor { .. }),
        "{err}"
    );
    assert_eq!(err.page, 3);
    assert_eq!(
        records.len(),
        10,
        "pages before the one that repeats are delivered"
    );
    assert!(
        err.to_string()
            .contains("styles.spec.yaml resource `next_url_items`, page 3"),
        "{err}"
    );
}

#[tokio::test]
async fn max_pages_stops_with_an_error_when_more_remain() {
    let (spec, _sbx, connection) = setup().await;
    let opts = RunOptions {
        max_pages: Some(2),
        ..options()
    };
    let (records, pages, err) = read_all(&spec, &connection, "cursor_items", opts).await;
    assert_eq!((records.len(), pages), (10, 2));
    assert!(matches!(*err.unwrap().kind, ErrorKind::MaxPages { max: 2 }));
}

#[tokio::test]
async fn transient_failures_are_retried_and_reported() {
    let (spec, sbx, connection) = setup().await;
    reqwest::Client::new()
        .post(format!("{}/_sandbox/faults", sbx.base_url()))
        .json(&json!([{"kind": "status", "status": 502, "page": 2, "times": 2}]))
        .send()
        .await
        .unwrap();
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = events.clone();
    let (_, _, err) = read_resource(
        &spec,
        &connection,
        "offset_items",
        options(),
        Arc::new(move |e: &EngineEvent| seen.lock().unwrap().push(e.clone())),
    )
    .await;
    assert!(err.is_none(), "{err:?}");
    let retries = events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| matches!(e, EngineEvent::Retrying { page: 2, .. }))
        .count();
    assert_eq!(retries, 2);
}

#[tokio::test]
async fn a_wrong_key_is_a_401_error_not_a_retry() {
    let (spec, _sbx, mut connection) = setup().await;
    connection.credentials = serde_json::from_value(json!({"api_key": "wrong"})).unwrap();
    let (_, _, err) = read_all(&spec, &connection, "cursor_items", options()).await;
    let err = err.unwrap();
    assert!(
        matches!(*err.kind, ErrorKind::Unauthorized { status: 401, .. }),
        "{err}"
    );
    assert!(
        !err.to_string().contains("wrong"),
        "the key is not echoed: {err}"
    );
}
