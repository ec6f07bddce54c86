//! The committed OpenAPI document: valid JSON, and every route the API serves is in it.
//! (No service needed: this runs in the fast tier, apart from `api.rs`.)

use serde_json::Value;
use tributary_e2e::repo_root;

#[test]
fn the_committed_openapi_document_is_valid_json_and_lists_every_route() {
    let doc: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("scheduler/openapi.json")).unwrap(),
    )
    .unwrap();
    let paths = doc["paths"].as_object().unwrap();
    let source = std::fs::read_to_string(repo_root().join("scheduler/src/api/mod.rs")).unwrap();
    for line in source
        .lines()
        .filter(|l| l.trim_start().starts_with(".route(\""))
    {
        let path = line.split('"').nth(1).unwrap();
        assert!(paths.contains_key(path), "openapi.json lacks {path}");
    }
}
