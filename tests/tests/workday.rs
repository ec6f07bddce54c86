//! Workday against its sandbox profile. The pinned snapshot: a worker is entered between
//! page 1 and page 2 of a read and placed first in the list (as entries made during a
//! long read land), and the run still reads every worker exactly once, because pages
//! 2..n name the `As_Of_Entry_DateTime` page 1 was served at. The same read with the
//! capture taken out of the spec repeats a worker and misses none of the shift: the
//! test would fail without the feature. And refused credentials: the SOAP service's
//! authentication fault and the RaaS report's 401 both mean re-authorize.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{json, Value};
use tributary::engine::{ignore_events, Connection, ErrorKind, RunOptions};
use tributary::spec::{load_spec, CompiledSpec};
use tributary_e2e::engine::read_resource;
use tributary_e2e::{repo_root, shipped_sandbox, SandboxControl};
use tributary_sandbox::SandboxHandle;

const WORKERS: u64 = 45;
const PAGE_SIZE: u32 = 20;

async fn workday() -> (SandboxHandle, SandboxControl, Connection) {
    workday_with_password("sandbox-workday-password").await
}

async fn workday_with_password(password: &str) -> (SandboxHandle, SandboxControl, Connection) {
    let (sbx, control) = shipped_sandbox("workday.yaml", |p| {
        p.resources.get_mut("workers").unwrap().count = WORKERS;
    })
    .await;
    // A worker entered just before page 2 is served, first in the list.
    control
        .faults(json!([{"kind": "create", "resource": "workers", "page": 2, "first": true, "times": 1}]))
        .await
        .unwrap();
    let connection = Connection {
        config:
            json!({"base_url": sbx.base_url(), "host": "sandbox.workday.com", "tenant": "acme_impl",
            "report_owner": "isu_tributary", "report_name": "Tributary_Workers"})
            .as_object()
            .unwrap()
            .clone(),
        credentials: serde_json::from_value(
            json!({"username": "isu_tributary", "password": password}),
        )
        .unwrap(),
    };
    (sbx, control, connection)
}

/// How many times each Employee_ID was read.
fn options() -> RunOptions {
    RunOptions {
        allow_private_hosts: true,
        page_size: Some(PAGE_SIZE),
        ..RunOptions::default()
    }
}

async fn read_workers(
    spec: &Arc<CompiledSpec>,
    connection: &Connection,
) -> BTreeMap<String, usize> {
    let (records, pages, error) =
        read_resource(spec, connection, "workers", options(), ignore_events()).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(pages, 3);
    let mut seen = BTreeMap::new();
    for r in &records {
        *seen.entry(employee_id(r)).or_insert(0) += 1;
    }
    seen
}

fn employee_id(worker: &Value) -> String {
    worker["Worker_Reference"]["ID"]
        .as_array()
        .and_then(|ids| ids.iter().find(|id| id["@type"] == "Employee_ID"))
        .and_then(|id| id["#text"].as_str())
        .expect("every worker has an Employee_ID")
        .to_string()
}

fn employee_ids(from: u64, to: u64) -> Vec<String> {
    (from..=to).map(|id| (21000 + id).to_string()).collect()
}

#[tokio::test]
async fn a_worker_entered_during_the_read_does_not_shift_the_pages() {
    let (_sbx, control, connection) = workday().await;
    let spec = load_spec(&repo_root().join("provider-specs/workday.yaml")).unwrap();

    let seen = read_workers(&spec, &connection).await;

    assert_eq!(
        seen.keys().cloned().collect::<Vec<_>>(),
        employee_ids(1, WORKERS),
        "the snapshot of page 1: every worker entered before it, and not the new one"
    );
    assert!(seen.values().all(|&n| n == 1), "each read once: {seen:?}");
    let listed = control.records("workers").await.unwrap();
    assert_eq!(
        listed.len() as u64,
        WORKERS + 1,
        "the sandbox did enter a worker"
    );
}

#[tokio::test]
async fn without_the_captured_snapshot_the_same_read_repeats_a_worker() {
    let (_sbx, _control, connection) = workday().await;
    let yaml = std::fs::read_to_string(repo_root().join("provider-specs/workday.yaml")).unwrap();
    let capture = "      capture: {as_of: Envelope.Body.Get_Workers_Response.Response_Filter.As_Of_Entry_DateTime}\n";
    assert!(
        yaml.contains(capture),
        "the spec pins its snapshot this way"
    );
    let file = std::env::temp_dir().join(format!("workday-uncaptured-{}.yaml", std::process::id()));
    std::fs::write(&file, yaml.replace(capture, "")).unwrap();
    let spec = load_spec(&file).unwrap();

    let seen = read_workers(&spec, &connection).await;

    let repeated: Vec<&String> = seen
        .iter()
        .filter(|(_, &n)| n > 1)
        .map(|(id, _)| id)
        .collect();
    assert_eq!(
        repeated,
        [&(21000 + PAGE_SIZE as u64).to_string()],
        "page 1's last worker comes again at the top of page 2"
    );
}

#[tokio::test]
async fn a_wrong_password_is_refused_credentials_on_both_services() {
    let (_sbx, _control, connection) = workday_with_password("not-the-password").await;
    let spec = load_spec(&repo_root().join("provider-specs/workday.yaml")).unwrap();
    for resource in ["workers", "workers_report"] {
        let (records, _, error) =
            read_resource(&spec, &connection, resource, options(), ignore_events()).await;
        let err = error.unwrap_or_else(|| panic!("{resource}: a wrong password is refused"));
        assert!(records.is_empty());
        assert!(err.kind.needs_reauth(), "{resource}: {err}");
        let expected = match resource {
            "workers" => 500,
            _ => 401,
        };
        assert!(
            matches!(*err.kind, ErrorKind::Unauthorized { status, .. } if status == expected),
            "{resource}: {err}"
        );
        let message = err.to_string();
        assert!(
            message.contains(resource) && message.contains("workday"),
            "{message}"
        );
        assert!(!message.contains("not-the-password"), "{message}");
    }
}
