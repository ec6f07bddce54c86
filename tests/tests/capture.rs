//! Values captured from a run's first page are sent again by its later pages (the snapshot
//! a provider pinned page 1 to), and page-number paging stops at the total pages the
//! answer announces. A provider on loopback that refuses a later page without the
//! snapshot, and that would serve pages past the announced total.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::Query;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use tributary::engine::{ignore_events, Connection, RunOptions};
use tributary::spec::load_spec;
use tributary_e2e::engine::read_resource;

const SPEC: &str = r#"spec_version: 1
name: snapshots
base_url: "https://api.example.com"
allowed_hosts: ["api.example.com"]
auth: {type: none}
resources:
  items:
    model: crm.contact
    request:
      path: /items
      query:
        page: "{{ page }}"
        as_of: "{% if captured.as_of %}{{ captured.as_of }}{% endif %}"
    pagination:
      type: page_number
      total_pages: total_pages
      stop_on_empty_page: false
      capture: {as_of: as_of}
    records: {path: items, primary_key: id}
    mapping: '{"first_name": name}'
"#;

/// Pages of 2 records; page 1 says the snapshot and that there are 3 pages; a later page
/// without that snapshot is refused; pages past 3 would still have records.
async fn provider(asked: Arc<Mutex<Vec<String>>>) -> String {
    let app = Router::new().route(
        "/items",
        get(move |Query(q): Query<HashMap<String, String>>| {
            let asked = asked.clone();
            async move {
                let page: u64 = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
                asked
                    .lock()
                    .unwrap()
                    .push(format!("{page}:{}", q.get("as_of").map_or("-", |s| s)));
                if page > 1 && q.get("as_of").map(String::as_str) != Some("2026-12-02T05:00:00Z") {
                    return (
                        StatusCode::BAD_REQUEST,
                        Json(json!({"error": "as_of missing"})),
                    )
                        .into_response();
                }
                let items: Vec<Value> = (0..2)
                    .map(|i| json!({"id": format!("{page}-{i}"), "name": format!("n{page}{i}")}))
                    .collect();
                let mut body = json!({"items": items, "total_pages": "3"});
                if page == 1 {
                    body["as_of"] = json!("2026-12-02T05:00:00Z");
                }
                Json(body).into_response()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

#[tokio::test]
async fn later_pages_send_what_the_first_captured_and_paging_stops_at_total_pages() {
    let dir = std::env::temp_dir().join(format!("tributary-capture-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("snapshots.yaml");
    std::fs::write(&file, SPEC).unwrap();
    let spec = load_spec(&file).unwrap();
    let asked = Arc::new(Mutex::new(Vec::new()));
    let base = provider(asked.clone()).await;
    let connection = Connection {
        config: json!({"base_url": base}).as_object().unwrap().clone(),
        ..Connection::default()
    };
    let options = RunOptions {
        allow_private_hosts: true,
        ..RunOptions::default()
    };
    let (records, pages, error) =
        read_resource(&spec, &connection, "items", options, ignore_events()).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(pages, 3);
    let ids: Vec<&str> = records.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["1-0", "1-1", "2-0", "2-1", "3-0", "3-1"]);
    assert_eq!(
        *asked.lock().unwrap(),
        ["1:-", "2:2026-12-02T05:00:00Z", "3:2026-12-02T05:00:00Z"]
    );
}
