//! Delta links as checkpoints: a first round lists everything and ends with a link; a run
//! started from that link gets only what changed after the round, removals included (the
//! provider marks them, `records.deleted`), and ends with the next link. A provider on
//! loopback that keeps a change clock, as delta-query APIs do.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use tributary::engine::{ignore_events, Connection, Page, RunOptions};
use tributary::spec::{load_spec, CompiledSpec};
use tributary_e2e::engine::read_pages;

const SPEC: &str = r#"spec_version: 1
name: deltas
base_url: "https://api.example.com"
allowed_hosts: ["api.example.com"]
auth: {type: none}
resources:
  people:
    model: crm.contact
    request: {path: /people}
    pagination: {type: none}
    records: {path: value, primary_key: id, deleted: "$exists(`@removed`)"}
    mapping: '{"first_name": name}'
    incremental:
      request: {path: /people/delta, query: {top: "{{ page_size }}"}}
      pagination: {type: next_url, next_url_path: "`@odata.nextLink`"}
      delta_link: "`@odata.deltaLink`"
"#;

/// People with the change clock value of their last change; removed ones keep theirs.
#[derive(Default)]
struct Provider {
    clock: u64,
    people: Vec<(String, u64, bool)>,
}

impl Provider {
    fn change(&mut self, id: &str, removed: bool) {
        self.clock += 1;
        let clock = self.clock;
        match self.people.iter_mut().find(|p| p.0 == id) {
            Some(p) => *p = (id.to_string(), clock, removed),
            None => self.people.push((id.to_string(), clock, removed)),
        }
    }
}

type Shared = Arc<Mutex<Provider>>;

/// `/people/delta?top=N` starts a round; `skip` continues it; `token` is a link's clock:
/// only what changed after it. The last page of a round carries the link.
async fn delta(
    State(p): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
) -> impl IntoResponse {
    let p = p.lock().unwrap();
    let num = |k: &str| q.get(k).map(|v| v.parse::<u64>());
    let (after, skip, top) = match (num("token"), num("skip"), num("top")) {
        (Some(Ok(t)), None, _) => (t, 0, 2),
        (None, Some(Ok(s)), Some(Ok(top))) => {
            (num("after").and_then(Result::ok).unwrap_or(0), s, top)
        }
        (None, None, Some(Ok(top))) => (0, 0, top),
        _ => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": "bad delta request"})),
            )
                .into_response()
        }
    };
    let changed: Vec<&(String, u64, bool)> = p
        .people
        .iter()
        .filter(|x| x.1 > after && (after > 0 || !x.2))
        .collect();
    let page: Vec<Value> = changed
        .iter()
        .skip(skip as usize)
        .take(top as usize)
        .map(|(id, _, removed)| match removed {
            true => json!({"id": id, "@removed": {"reason": "changed"}}),
            false => json!({"id": id, "name": format!("name-{id}")}),
        })
        .collect();
    let mut body = json!({"value": page});
    if (skip + top) < changed.len() as u64 {
        body["@odata.nextLink"] = json!(format!(
            "/people/delta?after={after}&skip={}&top={top}",
            skip + top
        ));
    } else {
        body["@odata.deltaLink"] = json!(format!("/people/delta?token={}", p.clock));
    }
    Json(body).into_response()
}

async fn serve(provider: Shared) -> String {
    let app = Router::new()
        .route("/people/delta", get(delta))
        .with_state(provider);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

fn spec() -> Arc<CompiledSpec> {
    let dir = std::env::temp_dir().join(format!("tributary-delta-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("deltas.yaml");
    std::fs::write(&file, SPEC).unwrap();
    load_spec(&file).unwrap()
}

async fn round(spec: &Arc<CompiledSpec>, base: &str, options: RunOptions) -> Vec<Page> {
    let connection = Connection {
        config: json!({"base_url": base}).as_object().unwrap().clone(),
        ..Connection::default()
    };
    let options = RunOptions {
        allow_private_hosts: true,
        page_size: Some(2),
        ..options
    };
    let (pages, error) = read_pages(spec, &connection, "people", options, ignore_events()).await;
    assert!(error.is_none(), "{error:?}");
    pages
}

fn ids(pages: &[Page]) -> Vec<String> {
    pages
        .iter()
        .flat_map(|p| p.records.iter())
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn a_run_from_the_stored_delta_link_reads_only_what_changed_then_hands_on_the_next_link() {
    let provider: Shared = Arc::default();
    for i in 1..=5 {
        provider.lock().unwrap().change(&format!("p{i}"), false);
    }
    let base = serve(provider.clone()).await;
    let spec = spec();
    let first = round(
        &spec,
        &base,
        RunOptions {
            incremental: true,
            ..RunOptions::default()
        },
    )
    .await;
    assert_eq!(ids(&first), ["p1", "p2", "p3", "p4", "p5"]);
    assert_eq!(first.len(), 3, "pages of 2 through the next links");
    assert!(first[..2].iter().all(|p| p.delta_link.is_none()));
    let link = first[2]
        .delta_link
        .clone()
        .expect("the round's last page carries the link");
    assert_eq!(
        link,
        format!("{base}/people/delta?token=5"),
        "resolved against the base URL"
    );

    provider.lock().unwrap().change("p2", false);
    provider.lock().unwrap().change("p4", true);
    provider.lock().unwrap().change("p6", false);
    let second = round(
        &spec,
        &base,
        RunOptions {
            delta_link: Some(link),
            ..RunOptions::default()
        },
    )
    .await;
    assert_eq!(
        ids(&second),
        ["p2", "p4", "p6"],
        "only what changed after the link"
    );
    let removed: Vec<&Value> = second
        .iter()
        .flat_map(|p| p.records.iter())
        .filter(|r| {
            spec.resource("people")
                .unwrap()
                .plan(true)
                .records
                .marks_removed(r)
        })
        .collect();
    assert_eq!(
        removed,
        [&json!({"id": "p4", "@removed": {"reason": "changed"}})]
    );
    let next = second.last().unwrap().delta_link.clone().unwrap();
    assert_eq!(next, format!("{base}/people/delta?token=8"));

    let quiet = round(
        &spec,
        &base,
        RunOptions {
            delta_link: Some(next.clone()),
            ..RunOptions::default()
        },
    )
    .await;
    assert!(ids(&quiet).is_empty(), "nothing changed since");
    assert_eq!(quiet[0].delta_link.as_deref(), Some(next.as_str()));
}

#[tokio::test]
async fn a_delta_link_outside_the_allowed_hosts_is_refused() {
    let spec = spec();
    let base = serve(Arc::default()).await;
    let connection = Connection {
        config: json!({"base_url": base}).as_object().unwrap().clone(),
        ..Connection::default()
    };
    let options = RunOptions {
        allow_private_hosts: true,
        delta_link: Some("https://elsewhere.example.net/people/delta?token=1".into()),
        ..RunOptions::default()
    };
    let (pages, error) = read_pages(&spec, &connection, "people", options, ignore_events()).await;
    assert!(pages.is_empty());
    let error = error.expect("refused").to_string();
    assert!(
        error.contains("elsewhere.example.net") && error.contains("allowed_hosts"),
        "{error}"
    );
}
