//! The budget follows the provider's own counters: with no budget declared in the
//! spec, a "0 remaining" answer holds requests until the announced reset, so a
//! provider with a small window is never pushed over it.

use serde_json::json;
use tributary::engine::{ignore_events, Connection, RunOptions};
use tributary::spec::load_spec;
use tributary_e2e::engine::read_resource;
use tributary_sandbox::{self as sandbox, Profile};

fn repo(path: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path)
}

#[tokio::test]
async fn remaining_and_reset_headers_hold_requests_until_the_window_resets() {
    // Pipedrive's spec without its declared budget: only the headers can keep us under.
    let text = std::fs::read_to_string(repo("provider-specs/pipedrive.yaml")).unwrap();
    let mut doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    let rate = doc["rate_limit"].as_mapping_mut().unwrap();
    for key in ["requests", "per_seconds", "max_concurrency"] {
        rate.remove(key);
    }
    let dir = std::env::temp_dir().join(format!("tributary-headers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("pipedrive.yaml");
    std::fs::write(&path, serde_yaml_ng::to_string(&doc).unwrap()).unwrap();
    let spec = load_spec(&path).unwrap();

    // A provider window of 4 requests per second; 40 persons in pages of 3 = 14 requests.
    let mut profile = Profile::load(&repo("provider-specs/sandbox/pipedrive.yaml")).unwrap();
    let rule = profile.rate_limit.as_mut().unwrap();
    rule.requests = 4;
    rule.per_seconds = 1.0;
    profile.resources.get_mut("persons").unwrap().count = 40;
    let sbx = sandbox::start(profile, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();

    let connection = Connection {
        config: json!({"base_url": sbx.base_url(), "company_domain": "sandbox"})
            .as_object()
            .unwrap()
            .clone(),
        credentials: serde_json::from_value(json!({"api_key": "sandbox-pipedrive-token"})).unwrap(),
    };
    let options = RunOptions {
        allow_private_hosts: true,
        page_size: Some(3),
        ..RunOptions::default()
    };
    let (records, _, error) =
        read_resource(&spec, &connection, "persons", options, ignore_events()).await;
    assert!(error.is_none(), "{error:?}");
    let records = records.len();
    assert_eq!(records, 40);
    let stats = sandbox_stats(&sbx.base_url()).await;
    assert!(stats["data_requests"].as_u64().unwrap() >= 14, "{stats}");
    assert_eq!(stats["over_budget"], 0, "{stats}");
    assert_eq!(stats["throttled"], 0, "{stats}");
}

async fn sandbox_stats(base: &str) -> serde_json::Value {
    reqwest::get(format!("{base}/_sandbox/stats"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}
