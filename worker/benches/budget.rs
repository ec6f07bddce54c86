//! What a shared rate budget costs per request: three processes request a sandbox
//! page as fast as they can, first with no budget, then each request first taking its
//! place in one app-wide budget kept in PostgreSQL (large enough never to make anyone
//! wait, so only the bookkeeping is measured). Both runs happen here, one after the
//! other, so the ratio is what to read on a shared, noisy machine.
//!
//! `cargo bench -p tributary-worker --bench budget` (TRIBUTARY_BENCH_REQUESTS per
//! process, default 1,500; needs the local PostgreSQL).

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tributary::budget::{Budget, BudgetOwner, BudgetSettings, Ledger, MemoryLedger};
use tributary::spec::model::{BudgetScope, RateLimit};
use tributary::store::{Store, StoreLedger};
use tributary_e2e::{fresh_postgres, repo_root, test_cipher};
use tributary_sandbox::{self as sandbox, Profile};

const PROCESSES: usize = 3;
/// Requests in flight per process (a worker runs several jobs at once).
const TASKS: usize = 4;

fn requests_per_process() -> usize {
    std::env::var("TRIBUTARY_BENCH_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_500)
}

/// One process's share: `n` requests from TASKS tasks; prints the seconds taken.
async fn child(mode: &str, database: &str, url: &str, n: usize) {
    let budget = match mode {
        "none" => None,
        _ => {
            let store = Store::connect(database, test_cipher()).await.unwrap();
            let ledger: Arc<dyn Ledger> = Arc::new(StoreLedger::new(store));
            let rate = RateLimit {
                requests: Some(1_000_000),
                per_seconds: Some(1.0),
                max_concurrency: (mode == "shared+slots").then_some(1_000),
                scope: BudgetScope::App,
                ..RateLimit::default()
            };
            let owner = BudgetOwner {
                provider: "bench".into(),
                connection: format!("c{}", std::process::id()),
                app: None,
            };
            Some(Arc::new(Budget::new(
                &rate,
                &owner,
                ledger,
                BudgetSettings::default(),
            )))
        }
    };
    let http = reqwest::Client::new();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let (http, budget, url) = (http.clone(), budget.clone(), url.to_string());
        let share = n / TASKS + usize::from(t < n % TASKS);
        tasks.push(tokio::spawn(async move {
            for _ in 0..share {
                let _permit = match &budget {
                    Some(b) => Some(b.acquire(Duration::from_secs(60), |_, _| {}).await.unwrap()),
                    None => None,
                };
                let body = http
                    .get(&url)
                    .bearer_auth("sandbox-hubspot-token")
                    .send()
                    .await
                    .unwrap()
                    .bytes()
                    .await
                    .unwrap();
                assert!(!body.is_empty());
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    println!("{}", start.elapsed().as_secs_f64());
}

/// Runs PROCESSES children at once; returns the slowest one's seconds.
fn fleet(mode: &str, database: &str, url: &str, n: usize) -> f64 {
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..PROCESSES)
        .map(|_| {
            Command::new(&exe)
                .args(["--child", mode, database, url, &n.to_string()])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().unwrap();
            assert!(out.status.success(), "a {mode} child failed");
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse::<f64>()
                .unwrap()
        })
        .fold(0.0, f64::max)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rt = tokio::runtime::Runtime::new().unwrap();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        let n = args[i + 4].parse().unwrap();
        rt.block_on(child(&args[i + 1], &args[i + 2], &args[i + 3], n));
        return;
    }
    let n = requests_per_process();
    rt.block_on(async {
        let database = fresh_postgres().await;
        // Migrations once, before the children race to apply them.
        Store::connect(&database, test_cipher()).await.unwrap();
        let mut profile =
            Profile::load(&repo_root().join("provider-specs/sandbox/hubspot.yaml")).unwrap();
        profile.rate_limit = None;
        let sbx = sandbox::start(profile, "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let url = format!("{}/crm/v3/objects/contacts?limit=1", sbx.base_url());
        let total = (n * PROCESSES) as f64;
        println!(
            "{PROCESSES} processes x {TASKS} tasks, {n} requests each, to a sandbox page on loopback"
        );
        let runs = [
            ("none", "no budget (baseline)"),
            ("shared", "one app budget in PostgreSQL"),
            ("shared+slots", "the same plus a shared in-flight limit"),
        ];
        let mut baseline = 0.0;
        for (mode, label) in runs {
            let secs = tokio::task::block_in_place(|| fleet(mode, &database, &url, n));
            let per_request_us = secs * 1e6 / (n as f64 / TASKS as f64);
            if mode == "none" {
                baseline = secs;
            }
            println!(
                "  {label:<42} {:>8.0} requests/s  {:>7.0} us per request per task  {:.2}x the baseline's time",
                total / secs,
                per_request_us,
                secs / baseline
            );
        }
        // One task alone: what a single acquire costs when nobody else contends.
        let alone = |ledger: Arc<dyn Ledger>| {
            Budget::new(
                &RateLimit {
                    requests: Some(1_000_000),
                    per_seconds: Some(1.0),
                    scope: BudgetScope::App,
                    ..RateLimit::default()
                },
                &BudgetOwner {
                    provider: "bench-alone".into(),
                    connection: "c".into(),
                    app: None,
                },
                ledger,
                BudgetSettings::default(),
            )
        };
        let store = Store::connect(&database, test_cipher()).await.unwrap();
        println!("one task, acquires only ({n} each):");
        for (label, ledger) in [
            ("in memory (one process)", Arc::new(MemoryLedger::default()) as Arc<dyn Ledger>),
            ("PostgreSQL (the fleet)", Arc::new(StoreLedger::new(store.clone()))),
        ] {
            let budget = alone(ledger);
            let t = Instant::now();
            for _ in 0..n {
                budget.acquire(Duration::from_secs(60), |_, _| {}).await.unwrap();
            }
            println!(
                "  {label:<42} {:>8.1} us per acquire",
                t.elapsed().as_secs_f64() * 1e6 / n as f64
            );
        }
        drop(sbx);
    });
}
