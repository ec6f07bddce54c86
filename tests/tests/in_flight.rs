//! A provider that governs concurrency answers "too many requests in flight" (a spec's
//! `rate_limit.in_flight_statuses`): the request is retried after a short backoff, as a
//! transient failure, and never read as a spent rate window (no hold, no throttle wait).

use std::sync::{Arc, Mutex};

use serde_json::json;
use tributary::engine::{Connection, EngineEvent, Observer, RunOptions};
use tributary::spec::load_spec;
use tributary_e2e::engine::read_resource;
use tributary_e2e::{repo_root, SandboxControl};
use tributary_sandbox::{self as sandbox, Profile};

/// The HubSpot spec with `in_flight` statuses (or not), in a directory of its own.
fn spec_with(in_flight: &[u16]) -> std::path::PathBuf {
    let text = std::fs::read_to_string(repo_root().join("provider-specs/hubspot.yaml")).unwrap();
    let mut doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    doc["rate_limit"]["in_flight_statuses"] = serde_yaml_ng::to_value(in_flight).unwrap();
    let dir = std::env::temp_dir().join(format!("tributary-in-flight-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("hubspot.yaml");
    std::fs::write(&path, serde_yaml_ng::to_string(&doc).unwrap()).unwrap();
    path
}

/// Read every contact with two 429 answers on the way; the engine's waits and retries.
async fn read_through_two_429s(in_flight: &[u16]) -> (usize, Vec<String>, Vec<String>) {
    let mut profile =
        Profile::load(&repo_root().join("provider-specs/sandbox/hubspot.yaml")).unwrap();
    profile.rate_limit = None;
    profile.resources.get_mut("contacts").unwrap().count = 30;
    let sbx = sandbox::start(profile, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    SandboxControl::new(sbx.base_url())
        .faults(json!([{"kind": "status", "status": 429, "resource": "contacts", "times": 2}]))
        .await
        .unwrap();
    let spec = load_spec(&spec_with(in_flight)).unwrap();
    let connection = Connection {
        config: json!({"base_url": sbx.base_url()})
            .as_object()
            .unwrap()
            .clone(),
        credentials: serde_json::from_value(json!({"access_token": "sandbox-hubspot-token"}))
            .unwrap(),
    };
    let options = RunOptions {
        allow_private_hosts: true,
        retry_base: std::time::Duration::from_millis(10),
        ..RunOptions::default()
    };
    let waits = Arc::new(Mutex::new(Vec::new()));
    let retries = Arc::new(Mutex::new(Vec::new()));
    let (w, r) = (waits.clone(), retries.clone());
    let observer: Observer = Arc::new(move |e: &EngineEvent| match e {
        EngineEvent::Waiting { reason, .. } => w.lock().unwrap().push(reason.clone()),
        EngineEvent::Retrying { reason, .. } => r.lock().unwrap().push(reason.clone()),
        _ => {}
    });
    let (records, _, error) =
        read_resource(&spec, &connection, "contacts", options, observer).await;
    assert!(error.is_none(), "{error:?}");
    let waits = waits.lock().unwrap().clone();
    let retries = retries.lock().unwrap().clone();
    (records.len(), waits, retries)
}

#[tokio::test]
async fn too_many_in_flight_is_retried_not_read_as_a_spent_window() {
    let (read, waits, retries) = read_through_two_429s(&[429]).await;
    assert_eq!(read, 30);
    assert_eq!(retries.len(), 2, "{retries:?}");
    assert!(
        retries
            .iter()
            .all(|r| r.contains("too many requests in flight")),
        "{retries:?}"
    );
    assert!(waits.iter().all(|w| !w.contains("throttled")), "{waits:?}");

    // The same answers where the spec does not say so: throttles, waited out as windows.
    let (read, waits, retries) = read_through_two_429s(&[]).await;
    assert_eq!(read, 30);
    assert!(retries.is_empty(), "{retries:?}");
    assert_eq!(
        waits.iter().filter(|w| w.contains("throttled")).count(),
        2,
        "{waits:?}"
    );
}
