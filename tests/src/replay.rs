//! A pre-rendered page server for benchmarks: the sandbox renders every page on the fly
//! and would be the bottleneck of any bench reading from it, so benches read from this
//! server instead, which answers from memory.
//!
//! Two ways to fill it:
//! - **recording** ([`Replay::start`]): a GET it has not seen is forwarded once to the
//!   upstream (the sandbox), and the answer (status, content type, body) is kept under the
//!   request's exact path and query; every later request for it is answered from memory.
//!   A warm pass ([`Replay::warm`], the engine itself reading a resource) records the
//!   pages the engine asks for. Other methods are forwarded every time, never kept.
//! - **synthetic** ([`Replay::synthetic`]): any number of HubSpot-shaped pages generated
//!   from one recorded page, its records' ids and the cursor substituted into pre-split
//!   bytes per request, so a million records cost one page of memory.
//!
//! The server runs on a thread of its own (one current-thread runtime), so a bench can
//! tell its CPU time from the rest of its process ([`Replay::thread_id`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use futures::StreamExt;
use serde_json::Value;
use tributary::engine::{ignore_events, Connection, ConnectionRuntime, ResourceRun, RunOptions};
use tributary::http::auth::DiscardTokens;
use tributary::spec::load_spec;

/// One kept answer.
#[derive(Clone)]
struct Recorded {
    status: StatusCode,
    content_type: Option<HeaderValue>,
    body: Bytes,
}

impl Recorded {
    fn response(&self) -> Response {
        let mut response = (self.status, self.body.clone()).into_response();
        if let Some(ct) = &self.content_type {
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, ct.clone());
        }
        response
    }
}

/// Where answers come from.
enum Source {
    Recording {
        upstream: String,
        http: reqwest::Client,
        pages: RwLock<HashMap<String, Recorded>>,
        /// Request keys in the order they were first recorded (the pages of a run, in order).
        order: Mutex<Vec<String>>,
    },
    Synthetic(Synthetic),
}

struct Shared {
    source: Source,
    hits: AtomicU64,
    misses: AtomicU64,
    /// Synthetic pages served: the first record's offset and when.
    served: Mutex<Vec<(u64, Instant)>>,
}

/// A running page server; stops when dropped.
pub struct Replay {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    tid: u32,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Replay {
    /// A recording server in front of `upstream` (e.g. a sandbox's base URL).
    pub fn start(upstream: &str) -> Replay {
        Self::serve(Source::Recording {
            upstream: upstream.trim_end_matches('/').to_string(),
            http: reqwest::Client::new(),
            pages: RwLock::new(HashMap::new()),
            order: Mutex::new(Vec::new()),
        })
    }

    /// A server generating `records` records (rounded up to whole pages) in pages shaped
    /// like the first two pages `recorded` holds: see [`Synthetic`].
    pub fn synthetic(recorded: &Replay, records: u64) -> Replay {
        Self::serve(Source::Synthetic(Synthetic::learn(recorded, records)))
    }

    fn serve(source: Source) -> Replay {
        let shared = Arc::new(Shared {
            source,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            served: Mutex::new(Vec::new()),
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let app = Router::new().fallback(answer).with_state(shared.clone());
        let thread = std::thread::Builder::new()
            .name("replay-server".into())
            .spawn(move || {
                tid_tx.send(current_tid()).unwrap();
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                    // Dropping the runtime afterwards ends the open connections' tasks.
                    tokio::select! {
                        _ = axum::serve(listener, app) => {}
                        _ = stopped => {}
                    }
                });
            })
            .unwrap();
        Replay {
            addr,
            shared,
            tid: tid_rx.recv().unwrap(),
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The server thread's id (its CPU time is in `/proc/self/task/<id>/stat`).
    pub fn thread_id(&self) -> u32 {
        self.tid
    }

    /// Requests answered from memory (or generated).
    pub fn hits(&self) -> u64 {
        self.shared.hits.load(Ordering::Relaxed)
    }

    /// Requests forwarded to the upstream.
    pub fn misses(&self) -> u64 {
        self.shared.misses.load(Ordering::Relaxed)
    }

    /// Synthetic pages served so far: each one's first record offset and when it was asked for.
    pub fn served(&self) -> Vec<(u64, Instant)> {
        self.shared.served.lock().unwrap().clone()
    }

    /// The path and query of every page this server answers, in reading order.
    pub fn page_keys(&self) -> Vec<String> {
        match &self.shared.source {
            Source::Recording { order, .. } => order.lock().unwrap().clone(),
            Source::Synthetic(s) => s.keys(),
        }
    }

    /// Record the pages of a full read of `resource` by the engine itself (the spec at
    /// `spec`, this server as the connection's `base_url`, `credentials`), without keeping
    /// the records. Returns the number of records read.
    pub async fn warm(&self, spec: &Path, resource: &str, credentials: Value) -> usize {
        let spec = load_spec(spec).unwrap();
        let mut config = serde_json::Map::new();
        config.insert("base_url".into(), Value::String(self.base_url()));
        let connection = Connection {
            config,
            credentials: serde_json::from_value(credentials).unwrap(),
        };
        let options = RunOptions {
            allow_private_hosts: true,
            ..RunOptions::default()
        };
        let budget = crate::engine::local_budget(&spec);
        let runtime = ConnectionRuntime::new(
            &spec,
            &connection,
            &options,
            Arc::new(DiscardTokens),
            budget,
        )
        .unwrap();
        let run = ResourceRun::new(
            spec.clone(),
            resource,
            &connection,
            &runtime,
            options,
            ignore_events(),
        )
        .unwrap()
        // The recorded pages are the whole answer: no custom fields to name.
        .with_schema(&tributary::domain::Schema::default());
        let pages = run.pages();
        futures::pin_mut!(pages);
        let mut records = 0;
        while let Some(page) = pages.next().await {
            records += page.expect("the warm pass reads every page").records.len();
        }
        records
    }

    /// The benchmarks' baseline on this server: fetch every page of [`Replay::page_keys`]
    /// in order, one at a time, and parse each with serde_json, doing nothing else.
    /// Returns the number of pages and of records (the `results` arrays' lengths).
    pub async fn fetch_and_parse(&self, http: &reqwest::Client) -> (usize, usize) {
        let base = self.base_url();
        let keys = self.page_keys();
        let mut records = 0;
        for key in &keys {
            let body = http
                .get(format!("{base}{key}"))
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            let page: Value = serde_json::from_slice(&body).unwrap();
            records += page["results"].as_array().map_or(0, Vec::len);
        }
        (keys.len(), records)
    }
}

impl Drop for Replay {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// This thread's id, from `/proc/thread-self` (a link to `<pid>/task/<tid>`).
fn current_tid() -> u32 {
    std::fs::read_link("/proc/thread-self")
        .ok()
        .and_then(|p| p.file_name()?.to_str()?.parse().ok())
        .unwrap_or(0)
}

fn key_of(uri: &Uri) -> String {
    uri.path_and_query()
        .map_or_else(|| uri.path().to_string(), |pq| pq.as_str().to_string())
}

async fn answer(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let key = key_of(&uri);
    match &shared.source {
        Source::Synthetic(s) => match s.render(uri.path(), uri.query().unwrap_or("")) {
            Some((offset, page)) => {
                shared.hits.fetch_add(1, Ordering::Relaxed);
                shared.served.lock().unwrap().push((offset, Instant::now()));
                page.response()
            }
            None => (StatusCode::NOT_FOUND, format!("no synthetic page at {key}")).into_response(),
        },
        Source::Recording {
            upstream,
            http,
            pages,
            order,
        } => {
            if method == Method::GET {
                if let Some(found) = pages.read().unwrap().get(&key) {
                    shared.hits.fetch_add(1, Ordering::Relaxed);
                    return found.response();
                }
            }
            shared.misses.fetch_add(1, Ordering::Relaxed);
            let fetched = forward(http, upstream, &method, &key, headers, body).await;
            let recorded = match fetched {
                Ok(r) => r,
                Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
            };
            if method == Method::GET {
                let mut pages = pages.write().unwrap();
                if pages.insert(key.clone(), recorded.clone()).is_none() {
                    order.lock().unwrap().push(key);
                }
            }
            recorded.response()
        }
    }
}

/// The upstream's answer to the same request (its headers but `host`).
async fn forward(
    http: &reqwest::Client,
    upstream: &str,
    method: &Method,
    key: &str,
    mut headers: HeaderMap,
    body: Bytes,
) -> reqwest::Result<Recorded> {
    headers.remove(header::HOST);
    let response = http
        .request(method.clone(), format!("{upstream}{key}"))
        .headers(headers)
        .body(body)
        .send()
        .await?;
    let status = response.status();
    let content_type = response.headers().get(header::CONTENT_TYPE).cloned();
    let body = response.bytes().await?;
    Ok(Recorded {
        status,
        content_type,
        body,
    })
}

/// Pages generated from one recorded HubSpot-shaped page: records under `results`, each
/// with its id in `id` (and `hs_object_id`), the next page's cursor in the body. Every
/// generated page holds the recorded page's records with ids `offset + 1 ..` and, but for
/// the last, a cursor that is simply the next page's offset.
struct Synthetic {
    path: String,
    /// The first page's query pairs (sorted); later pages add the cursor parameter.
    query: Vec<(String, String)>,
    cursor_param: String,
    page_size: u64,
    total: u64,
    status: StatusCode,
    content_type: Option<HeaderValue>,
    middle: Vec<Piece>,
    last: Vec<Piece>,
}

/// A pre-rendered stretch of a page, or a hole to fill per request.
enum Piece {
    Text(Vec<u8>),
    /// The id of the page's record at this index.
    Id(u64),
    Cursor,
}

const CURSOR_MARK: &str = "@@cursor@@";

fn id_mark(i: usize) -> String {
    format!("@@id:{i}@@")
}

fn sorted_pairs(query: &str) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = url_pairs(query);
    pairs.sort();
    pairs
}

fn url_pairs(query: &str) -> Vec<(String, String)> {
    reqwest::Url::parse(&format!("http://x/?{query}"))
        .unwrap()
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

impl Synthetic {
    /// Learn the pages' shape from a recording of at least two pages: the first page's
    /// request and body, and the parameter the second request adds (the cursor).
    fn learn(recorded: &Replay, records: u64) -> Synthetic {
        let Source::Recording { pages, order, .. } = &recorded.shared.source else {
            panic!("a synthetic server learns from a recording one")
        };
        let order = order.lock().unwrap();
        assert!(order.len() >= 2, "record at least two pages first");
        let (first, second) = (&order[0], &order[1]);
        let (path, first_query) = first.split_once('?').unwrap_or((first.as_str(), ""));
        let query = sorted_pairs(first_query);
        let (cursor_param, cursor) = url_pairs(second.split_once('?').map_or("", |(_, q)| q))
            .into_iter()
            .find(|(k, _)| !query.iter().any(|(q, _)| q == k))
            .expect("the second page's request adds a cursor parameter");
        let page = pages.read().unwrap()[first].clone();
        let mut body: Value = serde_json::from_slice(&page.body).unwrap();
        let results = body["results"]
            .as_array_mut()
            .expect("records under `results`");
        let page_size = results.len() as u64;
        for (i, record) in results.iter_mut().enumerate() {
            let id = record["id"].clone();
            mark_ids(record, &id, &id_mark(i));
        }
        let middle = serde_json::to_string(&body)
            .unwrap()
            .replace(&cursor, CURSOR_MARK);
        body.as_object_mut().unwrap().remove("paging");
        let last = serde_json::to_string(&body).unwrap();
        Synthetic {
            path: path.to_string(),
            query,
            cursor_param,
            page_size,
            total: records.div_ceil(page_size) * page_size,
            status: page.status,
            content_type: page.content_type,
            middle: pieces(&middle),
            last: pieces(&last),
        }
    }

    /// Every page's path and query, in reading order.
    fn keys(&self) -> Vec<String> {
        (0..self.total / self.page_size)
            .map(|p| {
                let mut url = reqwest::Url::parse("http://x").unwrap();
                url.set_path(&self.path);
                {
                    let mut q = url.query_pairs_mut();
                    q.extend_pairs(&self.query);
                    if p > 0 {
                        q.append_pair(&self.cursor_param, &(p * self.page_size).to_string());
                    }
                }
                format!("{}?{}", url.path(), url.query().unwrap_or(""))
            })
            .collect()
    }

    /// The page a request asks for (its first record's offset and its answer), or None
    /// when the path, the query or the cursor is not one of these pages'.
    fn render(&self, path: &str, query: &str) -> Option<(u64, Recorded)> {
        if path != self.path {
            return None;
        }
        let mut pairs = sorted_pairs(query);
        let cursor = pairs.iter().position(|(k, _)| *k == self.cursor_param);
        let offset: u64 = match cursor {
            Some(i) => pairs.remove(i).1.parse().ok()?,
            None => 0,
        };
        if pairs != self.query || !offset.is_multiple_of(self.page_size) || offset >= self.total {
            return None;
        }
        let next = offset + self.page_size;
        let pieces = if next >= self.total {
            &self.last
        } else {
            &self.middle
        };
        let mut body = Vec::with_capacity(pieces.iter().map(Piece::len).sum::<usize>() + 1024);
        for piece in pieces {
            match piece {
                Piece::Text(t) => body.extend_from_slice(t),
                Piece::Id(i) => body.extend_from_slice((offset + i + 1).to_string().as_bytes()),
                Piece::Cursor => body.extend_from_slice(next.to_string().as_bytes()),
            }
        }
        Some((
            offset,
            Recorded {
                status: self.status,
                content_type: self.content_type.clone(),
                body: Bytes::from(body),
            },
        ))
    }
}

impl Piece {
    fn len(&self) -> usize {
        match self {
            Piece::Text(t) => t.len(),
            _ => 0,
        }
    }
}

/// Replace the record's id wherever a field named `id` or `hs_object_id` holds it.
fn mark_ids(value: &mut Value, id: &Value, mark: &str) {
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if (k == "id" || k == "hs_object_id") && v == id {
                    *v = Value::String(mark.to_string());
                } else {
                    mark_ids(v, id, mark);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| mark_ids(v, id, mark)),
        _ => {}
    }
}

/// Split rendered text at its marks.
fn pieces(text: &str) -> Vec<Piece> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("@@") {
        let Some(len) = rest[start + 2..].find("@@") else {
            break;
        };
        let mark = &rest[start..start + 2 + len + 2];
        let hole = if mark == CURSOR_MARK {
            Some(Piece::Cursor)
        } else {
            mark.strip_prefix("@@id:")
                .and_then(|m| m.strip_suffix("@@"))
                .and_then(|i| i.parse().ok())
                .map(Piece::Id)
        };
        match hole {
            Some(hole) => {
                out.push(Piece::Text(rest.as_bytes()[..start].to_vec()));
                out.push(hole);
                rest = &rest[start + mark.len()..];
            }
            None => {
                // Two `@` in the data itself: keep them as text and look further on.
                out.push(Piece::Text(rest.as_bytes()[..start + 2].to_vec()));
                rest = &rest[start + 2..];
            }
        }
    }
    out.push(Piece::Text(rest.as_bytes().to_vec()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_split_into_holes_and_text() {
        let p = pieces(r#"{"id":"@@id:3@@","a":"x@@y","next":"@@cursor@@"}"#);
        let shape: Vec<String> = p
            .iter()
            .map(|p| match p {
                Piece::Text(t) => String::from_utf8(t.clone()).unwrap(),
                Piece::Id(i) => format!("<id {i}>"),
                Piece::Cursor => "<cursor>".into(),
            })
            .collect();
        assert_eq!(
            shape.concat(),
            r#"{"id":"<id 3>","a":"x@@y","next":"<cursor>"}"#
        );
    }

    /// A sandbox of two pages recorded by the engine, then 1,050 records generated from it
    /// (rounded up to eleven pages): every id once, in order, and the run ends on the last.
    #[tokio::test]
    async fn generated_pages_read_like_the_recorded_ones() {
        let sbx = crate::pipeline::contacts_sandbox(200, |_| {}).await;
        let recorder = Replay::start(&sbx.base_url());
        let text = std::fs::read_to_string(crate::repo_root().join("provider-specs/hubspot.yaml"))
            .unwrap();
        let mut doc: Value = serde_yaml_ng::from_str(&text).unwrap();
        doc.as_object_mut().unwrap().remove("rate_limit");
        let spec = std::env::temp_dir().join(format!("replay-test-{}.yaml", std::process::id()));
        std::fs::write(&spec, serde_yaml_ng::to_string(&doc).unwrap()).unwrap();
        let credentials = serde_json::json!({"access_token": "sandbox-hubspot-token"});
        assert_eq!(
            recorder.warm(&spec, "contacts", credentials.clone()).await,
            200
        );
        assert_eq!(recorder.page_keys().len(), 2);
        let (misses, hits) = (recorder.misses(), recorder.hits());
        assert_eq!(
            recorder.warm(&spec, "contacts", credentials.clone()).await,
            200
        );
        assert_eq!(
            recorder.misses(),
            misses,
            "the second read came from memory"
        );
        assert_eq!(recorder.hits(), hits + 2);

        let generated = Replay::synthetic(&recorder, 1_050);
        let http = reqwest::Client::new();
        assert_eq!(generated.fetch_and_parse(&http).await, (11, 1_100));
        assert_eq!(generated.warm(&spec, "contacts", credentials).await, 1_100);
        let last = generated.page_keys().pop().unwrap();
        let page: Value = http
            .get(format!("{}{last}", generated.base_url()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let ids: Vec<&str> = page["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids.first(), Some(&"1001"));
        assert_eq!(ids.last(), Some(&"1100"));
        assert_eq!(page["results"][0]["properties"]["hs_object_id"], "1001");
        assert!(
            page.get("paging").is_none(),
            "the last page has no next cursor"
        );
    }
}
