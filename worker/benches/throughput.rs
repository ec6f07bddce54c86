//! Throughput of the HubSpot contact mapping and of `spec run` end to end, each
//! beside a baseline measured in the same run on the same pages: fetching (for
//! end to end) and parsing them with serde_json, and doing nothing else.
//!
//! `cargo bench -p tributary-worker --bench throughput` (TRIBUTARY_BENCH_RECORDS to resize).

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use tributary::mapping::normalize::{normalize, primary_key};
use tributary::spec::load_spec;
use tributary_sandbox::{self as sandbox, Profile};

const PAGE_SIZE: usize = 100;

fn rate(records: usize, took: Duration) -> f64 {
    records as f64 / took.as_secs_f64()
}

#[tokio::main]
async fn main() {
    let records: u64 = std::env::var("TRIBUTARY_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut profile = Profile::load(&root.join("provider-specs/sandbox/hubspot.yaml")).unwrap();
    profile.rate_limit = None;
    profile.resources.get_mut("contacts").unwrap().count = records;
    let sbx = sandbox::start(profile, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let base = sbx.base_url();
    let http = reqwest::Client::new();
    // Warm the sandbox's rendered-record cache so neither side pays for it.
    let (pages, n) = tributary_e2e::fetch_and_parse_contacts(&http, &base).await;
    println!(
        "{n} HubSpot contacts in {} pages of {PAGE_SIZE}",
        pages.len()
    );

    // The spec as shipped, without its request budget: the baseline has none either,
    // and the budget (100 requests per 10 s) would measure HubSpot's limit, not us.
    let text = std::fs::read_to_string(root.join("provider-specs/hubspot.yaml")).unwrap();
    let mut doc: serde_json::Value = serde_yaml_ng::from_str(&text).unwrap();
    for key in ["requests", "per_seconds", "max_concurrency"] {
        doc["rate_limit"].as_object_mut().unwrap().remove(key);
    }
    let spec_path = std::env::temp_dir().join(format!(
        "tributary-bench-hubspot-{}.yaml",
        std::process::id()
    ));
    std::fs::write(&spec_path, serde_yaml_ng::to_string(&doc).unwrap()).unwrap();

    // 1. The mapping alone, beside parsing the same pages.
    let spec = load_spec(&spec_path).unwrap();
    let resource = spec.resource("contacts").unwrap();
    let pk = &resource.full.records.primary_key;
    let rounds = 3;
    let mut parse_best = Duration::MAX;
    let mut map_best = Duration::MAX;
    for _ in 0..rounds {
        let t = Instant::now();
        let mut count = 0;
        for p in &pages {
            let v: Value = serde_json::from_slice(p).unwrap();
            count += v["results"].as_array().unwrap().len();
        }
        assert_eq!(count, n);
        parse_best = parse_best.min(t.elapsed());

        let t = Instant::now();
        let mut count = 0;
        for p in &pages {
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
    let parse_rate = rate(n, parse_best);
    let full_rate = rate(n, map_best);
    let map_only = map_best.saturating_sub(parse_best);
    println!("mapping (best of {rounds}):");
    println!("  baseline  parse pages with serde_json only:     {parse_rate:>12.0} records/s");
    println!("  parse + map + schema check (HubSpot contacts): {full_rate:>12.0} records/s  ({:.2}x the baseline's time)", map_best.as_secs_f64() / parse_best.as_secs_f64());
    println!(
        "  mapping alone (difference):                    {:>12.0} records/s",
        rate(n, map_only)
    );

    // Where the mapping's time goes: JSONata evaluation vs the schema check.
    let raws: Vec<Value> = pages
        .iter()
        .flat_map(|p| {
            serde_json::from_slice::<Value>(p).unwrap()["results"]
                .as_array()
                .unwrap()
                .clone()
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
        "  of which JSONata evaluation:                   {:>12.0} records/s",
        rate(n, eval_took)
    );
    println!(
        "  of which schema check:                         {:>12.0} records/s",
        rate(n, check_took)
    );

    // 2. `spec run` end to end, beside fetching and parsing the same pages.
    let t = Instant::now();
    let (_, count) = tributary_e2e::fetch_and_parse_contacts(&http, &base).await;
    assert_eq!(count, n);
    let fetch_took = t.elapsed();

    let config = serde_json::json!({"base_url": base}).to_string();
    let t = Instant::now();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_tributary-worker"))
        .current_dir(&root)
        .args(["spec", "run"])
        .arg(&spec_path)
        .args(["--resource", "contacts", "--quiet", "--allow-private-hosts"])
        .args([
            "--config",
            &config,
            "--credentials",
            r#"{"access_token":"sandbox-hubspot-token"}"#,
        ])
        .args(["--page-size", &PAGE_SIZE.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .output()
        .await
        .unwrap();
    let run_took = t.elapsed();
    assert!(out.status.success());
    let printed = out.stdout.iter().filter(|b| **b == b'\n').count();
    assert_eq!(printed, n);
    println!("end to end (sandbox on loopback, one pass each):");
    println!(
        "  baseline  fetch + parse the same pages:         {:>12.0} records/s",
        rate(n, fetch_took)
    );
    println!("  spec run (fetch, parse, map, check, print):     {:>12.0} records/s  ({:.2}x the baseline's time)", rate(n, run_took), run_took.as_secs_f64() / fetch_took.as_secs_f64());
}
