//! The mapping plan maps every record of every resource of every provider spec
//! exactly as the whole-expression evaluator does: the sandbox's records, and
//! copies of some with fields removed, nulled or turned into arrays.

use serde_json::Value;
use tributary::spec::compile::CompiledResource;
use tributary::spec::load_spec;
use tributary_e2e::{repo_root, SandboxControl};
use tributary_sandbox::{self as sandbox, Profile};

/// Copies of `record` with one field (at any depth up to three) removed, nulled,
/// or (for an object) wrapped in a one-element array.
fn variants(record: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    let mut paths = Vec::new();
    leaf_paths(record, &mut Vec::new(), &mut paths);
    for path in paths {
        let (last, parents) = path.split_last().unwrap();
        let mut removed = record.clone();
        let mut nulled = record.clone();
        let mut wrapped = record.clone();
        if let Some(Value::Object(map)) = at(&mut removed, parents) {
            map.remove(last);
        }
        if let Some(Value::Object(map)) = at(&mut nulled, parents) {
            map.insert(last.clone(), Value::Null);
        }
        if let Some(v @ Value::Object(_)) = at(&mut wrapped, &path) {
            *v = Value::Array(vec![v.take()]);
            out.push(wrapped);
        }
        out.push(removed);
        out.push(nulled);
    }
    out
}

fn leaf_paths(v: &Value, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    let Value::Object(map) = v else { return };
    for (k, child) in map {
        prefix.push(k.clone());
        out.push(prefix.clone());
        if prefix.len() < 3 {
            leaf_paths(child, prefix, out);
        }
        prefix.pop();
    }
}

fn at<'v>(v: &'v mut Value, path: &[String]) -> Option<&'v mut Value> {
    path.iter().try_fold(v, |v, k| v.get_mut(k))
}

/// Compare both ways on one record; true when the mapping succeeded.
fn same_both_ways(spec: &str, name: &str, resource: &CompiledResource, raw: &Value) -> bool {
    let plan = resource.mapping_plan.map(raw);
    let whole = resource.mapping_plan.map_by_evaluator(raw);
    assert_eq!(plan, whole, "{spec} {name}: {raw}");
    // Map equality ignores order: the printed forms compare it too.
    assert_eq!(
        format!("{:?}", plan.as_ref().ok()),
        format!("{:?}", whole.as_ref().ok()),
        "{spec} {name}: field order for {raw}"
    );
    plan.is_ok()
}

#[tokio::test]
async fn every_spec_maps_every_sandbox_record_as_the_evaluator_does() {
    let root = repo_root();
    let mut specs: Vec<_> = std::fs::read_dir(root.join("provider-specs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    specs.sort();
    assert!(specs.len() >= 6, "{specs:?}");
    let mut resources = 0;
    for path in specs {
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        let spec = load_spec(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
        let mut profile = Profile::load(&root.join("provider-specs/sandbox").join(&file))
            .unwrap_or_else(|e| panic!("sandbox profile for {file}: {e}"));
        profile.rate_limit = None;
        let sbx = sandbox::start(profile, "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let control = SandboxControl::new(sbx.base_url());
        for (name, resource) in &spec.resources {
            assert!(resource.mapping_plan.is_split(), "{file} {name}");
            let records = control.records(name).await.unwrap();
            assert!(!records.is_empty(), "{file} {name}");
            let mut mapped = 0;
            for (_, raw) in &records {
                mapped += usize::from(same_both_ways(&file, name, resource, raw));
            }
            assert_eq!(mapped, records.len(), "{file} {name}: every record maps");
            for (_, raw) in records.iter().take(3) {
                for variant in variants(raw) {
                    same_both_ways(&file, name, resource, &variant);
                }
            }
            resources += 1;
        }
    }
    assert!(resources >= 13, "{resources} resources");
}
