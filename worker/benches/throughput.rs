//! Throughput of the HubSpot contact mapping and of `spec run` end to end, each beside a
//! baseline measured in the same run on the same pages: fetching them (for end to end)
//! and parsing them with serde_json, doing nothing else. The pages come from the replay
//! server (tests/src/replay.rs), which recorded them once from the sandbox and answers
//! from memory: the sandbox renders pages on the fly and would be the bottleneck.
//!
//! Then the same for an XML resource: SOAP pages decoded and mapped, beside parsing them
//! alone (`xml/mod.rs`).
//!
//! `cargo bench -p tributary-worker --bench throughput` (TRIBUTARY_BENCH_RECORDS to resize).

mod common;
mod xml;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{bench_records, rate, static_credentials, unbudgeted_specs, PAGE};
use serde_json::Value;
use tributary::mapping::normalize::{normalize, primary_key};
use tributary::spec::load_spec;
use tributary_e2e::replay::Replay;
use tributary_sandbox::{self as sandbox, Profile};

#[tokio::main]
async fn main() {
    let records = bench_records(100_000);
    let root = tributary_e2e::repo_root();
    let mut profile = Profile::load(&root.join("provider-specs/sandbox/hubspot.yaml")).unwrap();
    profile.rate_limit = None;
    profile.resources.get_mut("contacts").unwrap().count = records;
    let sbx = sandbox::start(profile, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    // The spec as shipped, without its request budget: the baseline has none either.
    let spec_path = unbudgeted_specs().join("hubspot.yaml");
    let replay = Replay::start(&sbx.base_url());
    let n = replay
        .warm(&spec_path, "contacts", static_credentials())
        .await;
    let recorded = replay.misses();
    let http = reqwest::Client::new();
    let mut pages = Vec::new();
    for key in replay.page_keys() {
        let url = format!("{}{key}", replay.base_url());
        pages.push(http.get(url).send().await.unwrap().bytes().await.unwrap());
    }
    let bytes: usize = pages.iter().map(|p| p.len()).sum();
    println!(
        "{n} HubSpot contacts in {} pages of {PAGE} ({:.0} KiB each on average), recorded from the sandbox by the engine, served by the replay server",
        pages.len(),
        bytes as f64 / pages.len() as f64 / 1024.0
    );
    mapping(&spec_path, &pages, n);
    end_to_end(&replay, &http, &spec_path, n).await;
    assert_eq!(
        replay.misses(),
        recorded,
        "every timed request was answered from memory"
    );
    xml::xml_pages(records / 5).await;
}

/// The mapping alone, beside parsing the same pages (best of three each).
fn mapping(spec_path: &std::path::Path, pages: &[axum::body::Bytes], n: usize) {
    let spec = load_spec(spec_path).unwrap();
    let resource = spec.resource("contacts").unwrap();
    let pk = &resource.full.records.primary_key;
    let rounds = 3;
    let mut parse_best = Duration::MAX;
    let mut map_best = Duration::MAX;
    for _ in 0..rounds {
        let t = Instant::now();
        let mut count = 0;
        for p in pages {
            let v: Value = serde_json::from_slice(p).unwrap();
            count += v["results"].as_array().unwrap().len();
        }
        assert_eq!(count, n);
        parse_best = parse_best.min(t.elapsed());

        let t = Instant::now();
        let mut count = 0;
        for p in pages {
            let mut v: Value = serde_json::from_slice(p).unwrap();
            let Value::Array(items) = v["results"].take() else {
                panic!("results")
            };
            for raw in items {
                let id = primary_key(&raw, pk).unwrap();
                let rec = normalize(resource, id, raw).unwrap();
                count += rec.data.len().min(1);
            }
        }
        assert_eq!(count, n);
        map_best = map_best.min(t.elapsed());
    }
    println!("mapping (best of {rounds}):");
    println!(
        "  baseline  parse pages with serde_json only:     {:>12.0} records/s",
        rate(n, parse_best)
    );
    println!(
        "  parse + map + schema check (HubSpot contacts): {:>12.0} records/s  ({:.2}x the baseline's time)",
        rate(n, map_best),
        map_best.as_secs_f64() / parse_best.as_secs_f64()
    );
    println!(
        "  mapping alone (difference):                    {:>12.0} records/s",
        rate(n, map_best.saturating_sub(parse_best))
    );
    split(resource, pages, n);
}

/// Where the mapping's time goes: JSONata evaluation vs the schema check.
fn split(
    resource: &tributary::spec::compile::CompiledResource,
    pages: &[axum::body::Bytes],
    n: usize,
) {
    let raws: Vec<Value> = pages
        .iter()
        .flat_map(|p| {
            let Value::Array(items) = serde_json::from_slice::<Value>(p).unwrap()["results"].take()
            else {
                panic!("results")
            };
            items
        })
        .collect();
    let t = Instant::now();
    let mapped: Vec<Value> = raws
        .iter()
        .map(|r| resource.mapping.eval_json(r).unwrap().unwrap())
        .collect();
    let eval_took = t.elapsed();
    let t = Instant::now();
    for m in &mapped {
        let _ = resource.model.check(m);
    }
    let check_took = t.elapsed();
    println!(
        "  whole-expression evaluator (the fallback):     {:>12.0} records/s",
        rate(n, eval_took)
    );
    println!(
        "  of which schema check:                         {:>12.0} records/s",
        rate(n, check_took)
    );
}

/// `spec run` end to end (fetch, parse, map, check, print), beside fetching and parsing the
/// same pages (best of three).
async fn end_to_end(
    replay: &Replay,
    http: &reqwest::Client,
    spec_path: &std::path::Path,
    n: usize,
) {
    let mut fetch_took = Duration::MAX;
    let mut server_share = 0.0;
    for _ in 0..3 {
        let served = common::thread_cpu(replay.thread_id());
        let t = Instant::now();
        let (_, count) = replay.fetch_and_parse(http).await;
        assert_eq!(count, n);
        if t.elapsed() < fetch_took {
            fetch_took = t.elapsed();
            server_share =
                (common::thread_cpu(replay.thread_id()) - served) / fetch_took.as_secs_f64();
        }
    }
    let config = serde_json::json!({"base_url": replay.base_url()}).to_string();
    let credentials = static_credentials().to_string();
    let t = Instant::now();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_tributary-worker"))
        .current_dir(tributary_e2e::repo_root())
        .args(["spec", "run"])
        .arg(spec_path)
        .args(["--resource", "contacts", "--quiet", "--allow-private-hosts"])
        .args(["--config", &config, "--credentials", &credentials])
        .args(["--page-size", &PAGE.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .output()
        .await
        .unwrap();
    let run_took = t.elapsed();
    assert!(out.status.success());
    let printed = out.stdout.iter().filter(|b| **b == b'\n').count();
    assert_eq!(printed, n);
    println!("end to end (replay server on loopback):");
    println!(
        "  baseline  fetch + parse the same pages (best of 3): {:>10.0} records/s  (target >= 200000)",
        rate(n, fetch_took)
    );
    println!(
        "            of which the replay server's thread was busy {:.0}% of the time",
        server_share * 100.0
    );
    println!(
        "  spec run (fetch, parse, map, check, print):         {:>10.0} records/s  ({:.2}x the baseline's time; target <= 3x and >= 105000 records/s)",
        rate(n, run_took),
        run_took.as_secs_f64() / fetch_took.as_secs_f64()
    );
}
