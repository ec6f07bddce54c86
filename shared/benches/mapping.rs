//! The cost of mapping a page of records, beside parsing it, measured in one run:
//! a recorded page of 100 HubSpot contacts (as the sandbox answers the spec's
//! request) parsed N times.
//!
//! - baseline: serde_json parse + taking the records out of the page;
//! - parse + normalize with the whole mapping evaluated (the path before the plan);
//! - parse + normalize with the mapping plan (`normalize` as it is);
//! - and, per record, what normalize and the process stage spend besides mapping.
//!
//! `cargo bench -p tributary-shared --bench mapping` (TRIBUTARY_BENCH_PAGES, default 200).

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use tributary::changes;
use tributary::mapping::normalize::{custom_fields, normalize, primary_key, UnifiedRecord};
use tributary::spec::{load_spec, CompiledResource};

const PAGE: &str = include_str!("fixtures/hubspot-contacts-page.json");

/// Wall and CPU time of the best of `rounds` runs of `f` (CPU time from the thread's
/// schedstat, Linux only; zero elsewhere).
fn best<T>(rounds: usize, mut f: impl FnMut() -> T) -> (Duration, Duration, T) {
    let mut out = None;
    let (mut wall, mut cpu) = (Duration::MAX, Duration::MAX);
    for _ in 0..rounds {
        let (w0, c0) = (Instant::now(), thread_cpu());
        let r = f();
        wall = wall.min(w0.elapsed());
        cpu = cpu.min(thread_cpu().saturating_sub(c0));
        out = Some(r);
    }
    (wall, cpu, out.expect("at least one round"))
}

fn thread_cpu() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .map(Duration::from_nanos)
        .unwrap_or_default()
}

fn records(body: &str) -> Vec<Value> {
    let mut page: Value = serde_json::from_str(body).expect("the fixture is JSON");
    match page["results"].take() {
        Value::Array(items) => items,
        _ => panic!("the fixture has results"),
    }
}

/// normalize as it was before the plan: the whole mapping on the whole converted
/// record, custom fields from a copy of their source object.
fn normalize_whole(resource: &CompiledResource, id: String, raw: Value) -> UnifiedRecord {
    let mapped = resource.mapping_plan.map_by_evaluator(&raw).unwrap();
    let Some(Value::Object(mut data)) = mapped else {
        panic!("an object")
    };
    data.retain(|_, v| !v.is_null());
    data.insert("id".into(), Value::String(id.clone()));
    let custom_fields: Map<String, Value> = match resource.custom_from.eval_json(&raw).unwrap() {
        Some(Value::Object(fields)) => fields
            .into_iter()
            .filter(|(k, v)| {
                !v.is_null()
                    && !resource.mapped_fields.contains(k)
                    && !resource.custom_exclude.contains(k)
            })
            .collect(),
        _ => Map::new(),
    };
    let data = Value::Object(data);
    resource.model.check(&data).unwrap();
    let Value::Object(data) = data else {
        unreachable!()
    };
    UnifiedRecord {
        model: resource.model.name,
        id,
        data,
        custom_fields,
        remote_data: raw,
    }
}

fn line(name: &str, n: usize, (wall, cpu): (Duration, Duration), base: (Duration, Duration)) {
    let rate = n as f64 / wall.as_secs_f64();
    println!(
        "  {name:<44} {rate:>10.0} records/s  wall {:>7.1} ms ({:>5.2}x)  cpu {:>7.1} ms ({:>5.2}x)",
        wall.as_secs_f64() * 1e3,
        wall.as_secs_f64() / base.0.as_secs_f64(),
        cpu.as_secs_f64() * 1e3,
        cpu.as_secs_f64() / base.1.as_secs_f64().max(1e-9),
    );
}

fn main() {
    let pages: usize = std::env::var("TRIBUTARY_BENCH_PAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let spec = load_spec(&root.join("provider-specs/hubspot.yaml")).unwrap();
    let resource = spec.resource("contacts").unwrap();
    let pk = &resource.full.records.primary_key;
    let per_page = records(PAGE).len();
    let n = pages * per_page;
    let rounds = 3;
    println!("{pages} pages of {per_page} HubSpot contacts ({n} records), best of {rounds}; ratios to the baseline");

    let (w, c, count) = best(rounds, || {
        (0..pages).map(|_| records(PAGE).len()).sum::<usize>()
    });
    assert_eq!(count, n);
    let base = (w, c);
    line("baseline: parse + take the records", n, base, base);

    let run = |f: &dyn Fn(String, Value) -> usize| {
        best(rounds, || {
            let mut fields = 0;
            for _ in 0..pages {
                for raw in records(PAGE) {
                    let id = primary_key(&raw, pk).unwrap();
                    fields += f(id, raw);
                }
            }
            fields
        })
    };
    let (w, c, whole) = run(&|id, raw| normalize_whole(resource, id, raw).data.len());
    line("parse + normalize, whole expression", n, (w, c), base);
    let (w, c, planned) = run(&|id, raw| normalize(resource, id, raw).unwrap().data.len());
    line("parse + normalize, mapping plan", n, (w, c), base);
    assert_eq!(whole, planned, "both ways map as many fields");

    // What else a record costs, each on its own over the same records.
    println!("per record, besides parsing (all {n} records):");
    let raws: Vec<Value> = (0..pages).flat_map(|_| records(PAGE)).collect();
    let (w, c, _) = best(rounds, || {
        raws.iter()
            .map(|r| primary_key(r, pk).unwrap().len())
            .sum::<usize>()
    });
    line("primary key", n, (w, c), base);
    let (w, c, mapped) = best(rounds, || {
        raws.iter()
            .map(|r| resource.mapping_plan.map_by_evaluator(r).unwrap().unwrap())
            .collect::<Vec<_>>()
    });
    line("mapping, whole expression", n, (w, c), base);
    let (w, c, _) = best(rounds, || {
        raws.iter()
            .map(|r| resource.mapping_plan.map(r).unwrap().unwrap())
            .collect::<Vec<_>>()
    });
    line("mapping, plan", n, (w, c), base);
    let (w, c, _) = best(rounds, || {
        mapped
            .iter()
            .filter(|m| resource.model.check(m).is_ok())
            .count()
    });
    line("schema check of the mapped record", n, (w, c), base);
    let (w, c, _) = best(rounds, || {
        raws.iter()
            .filter_map(|r| resource.custom_from.eval_json(r).unwrap())
            .map(|v| v.as_object().map_or(0, Map::len))
            .sum::<usize>()
    });
    line("custom fields: source copied (before)", n, (w, c), base);
    let (w, c, _) = best(rounds, || {
        raws.iter()
            .map(|r| {
                custom_fields(resource, &Default::default(), r)
                    .unwrap()
                    .len()
            })
            .sum::<usize>()
    });
    line("custom fields: read in place (now)", n, (w, c), base);
    let recs: Vec<UnifiedRecord> = raws
        .iter()
        .map(|r| normalize(resource, primary_key(r, pk).unwrap(), r.clone()).unwrap())
        .collect();
    let (w, c, _) = best(rounds, || {
        recs.iter()
            .map(|r| {
                changes::fingerprint(&r.id, &r.data, &r.custom_fields)
                    .hash
                    .len()
            })
            .sum::<usize>()
    });
    line("fingerprint (process stage)", n, (w, c), base);
    let (w, c, _) = best(rounds, || {
        raws.iter()
            .map(|r| black_box(r.clone()).as_object().map_or(0, Map::len))
            .sum::<usize>()
    });
    line(
        "deep copy of the raw record (no longer made)",
        n,
        (w, c),
        base,
    );
    let (w, c, _) = best(rounds, || {
        recs.iter()
            .map(|r| serde_json::to_string(r).unwrap().len())
            .sum::<usize>()
    });
    line("printing the record (spec run)", n, (w, c), base);
}
