//! Detail reads: a list that carries ids only, each entry read in full by its own
//! request, in list order, with bounded concurrency, and never more in flight than the
//! rate budget's `max_concurrency`. A provider on loopback that counts what is in flight.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use tributary::engine::{ignore_events, Connection, RunOptions};
use tributary::spec::{load_spec, CompiledSpec};
use tributary_e2e::engine::read_resource;

const SPEC: &str = r#"spec_version: 1
name: listed
base_url: "https://api.example.com"
allowed_hosts: ["api.example.com"]
auth: {type: none}
rate_limit: {max_concurrency: MAX}
resources:
  customers:
    model: accounting.customer
    request: {path: /record/customer}
    pagination: {type: offset, param: offset, limit_param: limit, has_more: hasMore}
    records: {path: items, primary_key: id}
    detail:
      request: {path: "/record/customer/{{ record.id }}", query: {expand: "false"}}
      concurrency: 4
    mapping: '{"name": companyName, "email": email}'
"#;

#[derive(Default)]
struct Counters {
    now: AtomicUsize,
    most: AtomicUsize,
    details: AtomicUsize,
}

const TOTAL: usize = 23;

async fn list(Query(q): Query<HashMap<String, String>>) -> impl IntoResponse {
    let offset: usize = q["offset"].parse().unwrap();
    let limit: usize = q["limit"].parse().unwrap();
    let items: Vec<Value> = (offset..(offset + limit).min(TOTAL))
        .map(|i| json!({"id": (100 + i).to_string(), "links": [{"rel": "self", "href": format!("/record/customer/{}", 100 + i)}]}))
        .collect();
    Json(
        json!({"items": items, "hasMore": offset + limit < TOTAL, "offset": offset, "totalResults": TOTAL}),
    )
}

async fn detail(
    State(c): State<Arc<Counters>>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> impl IntoResponse {
    if q.get("expand").map(String::as_str) != Some("false") {
        return (StatusCode::BAD_REQUEST, Json(json!({"error": "expand"}))).into_response();
    }
    let now = c.now.fetch_add(1, Ordering::SeqCst) + 1;
    c.most.fetch_max(now, Ordering::SeqCst);
    c.details.fetch_add(1, Ordering::SeqCst);
    // The provider's own latency, so that requests overlap as they do in production.
    tokio::time::sleep(Duration::from_millis(15 + (id.len() as u64 % 3) * 5)).await;
    c.now.fetch_sub(1, Ordering::SeqCst);
    Json(json!({"id": id, "companyName": format!("Company {id}"), "email": format!("ap{id}@example.com")})).into_response()
}

async fn serve(c: Arc<Counters>) -> String {
    let app = Router::new()
        .route("/record/customer", get(list))
        .route("/record/customer/{id}", get(detail))
        .with_state(c);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

fn spec(max_concurrency: u32) -> Arc<CompiledSpec> {
    let dir = std::env::temp_dir().join(format!("tributary-detail-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("listed.yaml");
    std::fs::write(&file, SPEC.replace("MAX", &max_concurrency.to_string())).unwrap();
    load_spec(&file).unwrap()
}

async fn read(max_concurrency: u32) -> (Vec<Value>, Arc<Counters>) {
    let counters = Arc::new(Counters::default());
    let base = serve(counters.clone()).await;
    let connection = Connection {
        config: json!({"base_url": base}).as_object().unwrap().clone(),
        ..Connection::default()
    };
    let options = RunOptions {
        allow_private_hosts: true,
        page_size: Some(10),
        ..RunOptions::default()
    };
    let spec = spec(max_concurrency);
    let (records, pages, error) =
        read_resource(&spec, &connection, "customers", options, ignore_events()).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(pages, 3);
    (records, counters)
}

#[tokio::test]
async fn each_listed_id_is_read_in_full_in_list_order_with_bounded_concurrency() {
    let (records, counters) = read(10).await;
    let ids: Vec<String> = (0..TOTAL).map(|i| (100 + i).to_string()).collect();
    let got: Vec<&str> = records.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(got, ids, "every id once, in list order");
    assert!(records
        .iter()
        .all(|r| r["companyName"] == format!("Company {}", r["id"].as_str().unwrap())));
    assert_eq!(counters.details.load(Ordering::SeqCst), TOTAL);
    let most = counters.most.load(Ordering::SeqCst);
    assert!(
        most <= 4,
        "at most detail.concurrency in flight, saw {most}"
    );
    assert!(most >= 2, "details overlap, saw {most}");
}

#[tokio::test]
async fn the_budgets_max_concurrency_bounds_detail_requests_too() {
    let (records, counters) = read(2).await;
    assert_eq!(records.len(), TOTAL);
    let most = counters.most.load(Ordering::SeqCst);
    assert!(most <= 2, "the budget's max_concurrency holds, saw {most}");
}
