//! What the benches share: their size, the HubSpot spec without its request budget, CPU
//! time and peak memory of processes and threads (from /proc), the change events a run
//! published read back, and the produce baseline (the same messages published again).
// Each bench uses a part of this module.
#![allow(dead_code)]

/// The worker binary's allocator, so in-process runs cost what the worker's do.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::{Message, Offset, TopicPartitionList};
use serde_json::Value;
use tributary::bus::{OutMessage, Publisher};
use tributary_e2e::repo_root;

/// Records per page, as the spec asks for them.
pub const PAGE: usize = 100;

/// TRIBUTARY_BENCH_RECORDS, else `default`.
pub fn bench_records(default: u64) -> u64 {
    std::env::var("TRIBUTARY_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub fn rate(records: usize, took: Duration) -> f64 {
    records as f64 / took.as_secs_f64()
}

/// A directory holding the HubSpot spec without its `rate_limit`: a bench measures the
/// engine, not HubSpot's 100 requests per 10 s; nor its discovery (the replay server
/// answers pages only).
pub fn unbudgeted_specs() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "tributary-bench-specs-{}-{}",
        std::process::id(),
        uuid_like()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let text = std::fs::read_to_string(repo_root().join("provider-specs/hubspot.yaml")).unwrap();
    let text = tributary_e2e::without_discovery(&text);
    let mut doc: Value = serde_yaml_ng::from_str(&text).unwrap();
    doc.as_object_mut().unwrap().remove("rate_limit");
    std::fs::write(
        dir.join("hubspot.yaml"),
        serde_yaml_ng::to_string(&doc).unwrap(),
    )
    .unwrap();
    dir
}

fn uuid_like() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

pub fn static_credentials() -> Value {
    serde_json::json!({"access_token": "sandbox-hubspot-token"})
}

/// CPU seconds (user + system) in a `/proc/.../stat` file, None if it cannot be read
/// (the process is gone).
pub fn cpu_seconds(stat: &str) -> Option<f64> {
    let text = std::fs::read_to_string(stat).ok()?;
    // The command name may hold spaces: count fields after its closing parenthesis.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat(5), 12 and 13 after the name.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(ticks as f64 / per_second)
}

pub fn process_cpu(pid: u32) -> Option<f64> {
    cpu_seconds(&format!("/proc/{pid}/stat"))
}

pub fn self_cpu() -> f64 {
    cpu_seconds("/proc/self/stat").unwrap_or(0.0)
}

/// A thread of this process (e.g. the replay server's).
pub fn thread_cpu(tid: u32) -> f64 {
    cpu_seconds(&format!("/proc/self/task/{tid}/stat")).unwrap_or(0.0)
}

/// VmHWM (peak resident memory) of a process, in MiB; `pid` may be `self`.
pub fn peak_rss_mib(pid: &str) -> Option<f64> {
    status_mib(pid, "VmHWM:")
}

/// VmRSS (resident memory now) of a process, in MiB.
pub fn rss_mib(pid: &str) -> Option<f64> {
    status_mib(pid, "VmRSS:")
}

fn status_mib(pid: &str, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Start VmHWM again from the current resident size (`5` to clear_refs, Linux 4.0+), so a
/// phase's peak is its own.
pub fn reset_peak_rss(pid: &str) {
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
}

/// The messages on `topic` whose key satisfies `keep`, read from the beginning until
/// `count` of them came (as published: key, payload, headers).
pub fn read_back(
    brokers: &str,
    topic: &str,
    count: usize,
    keep: impl Fn(&str) -> bool,
) -> Vec<OutMessage> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("bench-read-back-{}", uuid_like()))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let mut list = TopicPartitionList::new();
    for p in 0..md.topics()[0].partitions().len() {
        list.add_partition_offset(topic, p as i32, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&list).unwrap();
    let mut names: Vec<&'static str> = Vec::new();
    let mut out = Vec::with_capacity(count);
    let deadline = Instant::now() + Duration::from_secs(300);
    while out.len() < count {
        assert!(
            Instant::now() < deadline,
            "read back {} of {count} messages",
            out.len()
        );
        let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
        if !keep(&key) {
            continue;
        }
        let headers = m.headers().map_or_else(Vec::new, |h| {
            h.iter()
                .map(|x| {
                    (
                        static_name(&mut names, x.key),
                        String::from_utf8_lossy(x.value.unwrap_or_default()).into_owned(),
                    )
                })
                .collect()
        });
        out.push(OutMessage {
            topic: topic.to_string(),
            key,
            payload: m.payload().map(<[u8]>::to_vec),
            headers,
        });
    }
    out
}

/// Header names are `&'static str` in an `OutMessage`: the few distinct ones are leaked once.
fn static_name(names: &mut Vec<&'static str>, name: &str) -> &'static str {
    if let Some(n) = names.iter().find(|n| **n == name) {
        return n;
    }
    let leaked: &'static str = Box::leak(name.to_string().into_boxed_str());
    names.push(leaked);
    leaked
}

/// The produce baseline: `messages` published again to their topics on the same broker,
/// in `streams` concurrent streams (as many as the runs that published them), each in
/// batches of a page's size, each batch acknowledged before the next, nothing else done.
/// The producer is connected first (one message of the set, untimed).
pub async fn produce(publisher: &Publisher, messages: &[OutMessage], streams: usize) -> Duration {
    publisher.publish_all(&messages[..1]).await.unwrap();
    let per_stream = messages.len().div_ceil(streams);
    let t = Instant::now();
    let sends = messages.chunks(per_stream).map(|part| {
        let publisher = publisher.clone();
        async move {
            for batch in part.chunks(PAGE) {
                publisher.publish_all(batch).await.unwrap();
            }
        }
    });
    futures::future::join_all(sends).await;
    t.elapsed()
}

/// A line on the PostgreSQL server's autovacuum: with it off, no table is ever analyzed,
/// and the planner keeps the plans it made for empty tables (the fingerprints lookup then
/// reads every fingerprint of the connection), so a bench's PostgreSQL figures depend on it.
pub async fn postgres_note(url: &str) -> String {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    let on: String = sqlx::query_scalar("SHOW autovacuum")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    format!("PostgreSQL autovacuum: {on}")
}
