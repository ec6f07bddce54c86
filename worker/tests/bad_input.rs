//! Bad input gets a clear error, a non-zero exit and no panic.

use std::path::Path;
use std::process::Output;

use serde_json::json;
use tributary_e2e::spec_run::SpecRun;
use tributary_e2e::{repo_root, shipped_sandbox, SandboxControl};
use tributary_sandbox::SandboxHandle;

const WORKER: &str = env!("CARGO_BIN_EXE_tributary-worker");

fn worker(args: &[&str]) -> Output {
    std::process::Command::new(WORKER)
        .current_dir(repo_root())
        .args(args)
        .output()
        .expect("run tributary-worker")
}

fn spec_run(run: &SpecRun) -> Output {
    run.command(WORKER).output().expect("run tributary-worker")
}

fn stderr(out: &Output) -> String {
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!text.contains("panicked"), "no panic: {text}");
    text
}

fn write_spec(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let dir =
        std::env::temp_dir().join(format!("tributary-bad-input-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn a_malformed_spec_names_file_line_and_path() {
    let dir = temp_dir("malformed");
    let good = std::fs::read_to_string(repo_root().join("provider-specs/hubspot.yaml")).unwrap();
    let bad_type = write_spec(
        &dir,
        "bad-type.yaml",
        &good.replace("page_size: 100", "page_size: lots"),
    );
    let out = worker(&["spec", "check", &bad_type]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    let line = good.lines().position(|l| l == "page_size: 100").unwrap() + 1;
    assert!(
        err.contains(&format!("bad-type.yaml:{line}: at `page_size`")),
        "{err}"
    );

    let bad_yaml = write_spec(&dir, "bad-yaml.yaml", "name: [unclosed\nbase_url: x\n");
    let out = worker(&["spec", "check", &bad_yaml]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("not valid YAML"));

    let unknown_field = write_spec(
        &dir,
        "unknown.yaml",
        &good.replace(
            "  contacts:\n    model:",
            "  contacts:\n    modle: x\n    model:",
        ),
    );
    let out = worker(&["spec", "check", &unknown_field]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("unknown field `modle`") && err.contains("resources.contacts"),
        "{err}"
    );
}

#[test]
fn an_invalid_jsonata_expression_names_its_path() {
    let dir = temp_dir("jsonata");
    let good = std::fs::read_to_string(repo_root().join("provider-specs/hubspot.yaml")).unwrap();
    let broken = good.replace("\"title\": $p.jobtitle,", "\"title\": $p.jobtitle[,");
    let path = write_spec(&dir, "broken.yaml", &broken);
    let out = worker(&["spec", "check", &path]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    // The first resource's mapping (the custom objects' comes before `resources:`).
    let resources = broken.lines().position(|l| l == "resources:").unwrap();
    let line = broken
        .lines()
        .skip(resources)
        .position(|l| l.trim_start().starts_with("mapping: |"))
        .unwrap()
        + resources
        + 1;
    assert!(
        err.contains(&format!(
            "broken.yaml:{line}: at `resources.contacts.mapping`: invalid JSONata expression"
        )),
        "{err}"
    );
}

async fn hubspot_sandbox() -> (SandboxHandle, SandboxControl) {
    shipped_sandbox("hubspot.yaml", |_| {}).await
}

async fn run_contacts(sbx: &SandboxHandle, token: &str, extra: &[&str]) -> Output {
    let run = SpecRun::contacts()
        .config(&json!({"base_url": sbx.base_url()}))
        .credentials(&json!({"access_token": token}))
        .args(&["--allow-private-hosts", "--page-size", "20"])
        .args(extra);
    tokio::task::spawn_blocking(move || spec_run(&run))
        .await
        .unwrap()
}

#[tokio::test]
async fn a_page_that_is_not_json_stops_the_run_with_its_page_number() {
    let (sbx, control) = hubspot_sandbox().await;
    control
        .faults(json!([{"kind": "malformed_json", "page": 2}]))
        .await
        .unwrap();
    let out = run_contacts(&sbx, "sandbox-hubspot-token", &[]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("resource `contacts`, page 2: the body is not JSON"),
        "{err}"
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().count(),
        20,
        "page 1 was printed"
    );
}

#[tokio::test]
async fn a_repeating_cursor_stops_the_run() {
    let (sbx, control) = hubspot_sandbox().await;
    control
        .faults(json!([{"kind": "repeat_cursor", "page": 2}]))
        .await
        .unwrap();
    let out = run_contacts(&sbx, "sandbox-hubspot-token", &[]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("sent the same cursor twice"));
}

#[tokio::test]
async fn a_401_says_to_renew_the_credentials_without_echoing_them() {
    let (sbx, _control) = hubspot_sandbox().await;
    let out = run_contacts(&sbx, "expired-token-123", &[]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("answered 401") && err.contains("renew them"),
        "{err}"
    );
    assert!(!err.contains("expired-token-123"));
}

/// Jira answers a wrong API token with a sentence, not JSON: the error shows it.
#[tokio::test]
async fn a_401_whose_body_is_plain_text_shows_the_text() {
    let (sbx, _control) = shipped_sandbox("jira.yaml", |_| {}).await;
    let run = SpecRun::new("provider-specs/jira.yaml", "tickets")
        .config(&json!({"site": "sandbox", "base_url": sbx.base_url()}))
        .credentials(&json!({"username": "bot@example.com", "password": "wrong-api-token-456"}))
        .args(&["--allow-private-hosts"]);
    let out = tokio::task::spawn_blocking(move || spec_run(&run))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("answered 401") && err.contains("Authentication failed"),
        "{err}"
    );
    assert!(!err.contains("wrong-api-token-456"));
}

#[tokio::test]
async fn a_429_storm_longer_than_the_ceiling_fails_instead_of_waiting_forever() {
    let (sbx, control) = hubspot_sandbox().await;
    control
        .faults(json!([{"kind": "throttle", "times": 0}]))
        .await
        .unwrap();
    let out = run_contacts(&sbx, "sandbox-hubspot-token", &["--max-wait", "2"]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("wait ceiling of 2s"), "{err}");
    assert!(err.contains("throttled (429"), "waits are reported: {err}");
}

#[tokio::test]
async fn hosts_outside_the_allowed_list_or_private_are_refused_before_any_request() {
    let (sbx, control) = hubspot_sandbox().await;
    let creds = json!({"access_token": "sandbox-hubspot-token"});
    let outside = spec_run(
        &SpecRun::contacts()
            .config(&json!({"base_url": "https://api.hubapi.com.evil.example"}))
            .credentials(&creds),
    );
    assert_eq!(outside.status.code(), Some(2));
    assert!(stderr(&outside).contains("is not in the spec's allowed_hosts"));
    let private = spec_run(
        &SpecRun::contacts()
            .config(&json!({"base_url": sbx.base_url()}))
            .credentials(&creds),
    );
    assert_eq!(private.status.code(), Some(2));
    assert!(stderr(&private).contains("loopback or private address"));
    assert_eq!(
        control.stats().await.unwrap().requests,
        0,
        "nothing was sent"
    );
}

#[test]
fn bad_flags_are_explained() {
    let out = spec_run(&SpecRun::contacts().args(&["--config", "{nope"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--config is not valid JSON"));
    let out = spec_run(&SpecRun::new("provider-specs/hubspot.yaml", "tickets"));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("has no resource `tickets`; it has: contacts, companies, deals"));
    let out = spec_run(&SpecRun::new("provider-specs/nope.yaml", "x"));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("provider-specs/nope.yaml: cannot read the spec"));
}

/// An OAuth 1.0a credential without one of its four fields is refused before any
/// request, naming the field, the spec, the resource and the page.
#[test]
fn an_oauth1_credential_missing_a_field_is_named() {
    let dir = temp_dir("oauth1");
    let spec = write_spec(
        &dir,
        "signed.yaml",
        r#"spec_version: 1
name: signed
base_url: "https://{{ config.account }}.example.com"
allowed_hosts: ["*.example.com", "127.0.0.1"]
config:
  account: {required: true}
auth:
  type: oauth1
  signature_method: HMAC-SHA256
  realm: "{{ config.account | upper }}"
resources:
  items:
    model: crm.contact
    request: {path: /items}
    pagination: {type: none}
    records: {path: items, primary_key: id}
    mapping: "{'id': $string(id)}"
"#,
    );
    let out = spec_run(
        &SpecRun::new(&spec, "items")
            .config(&json!({"account": "acme", "base_url": "http://127.0.0.1:9"}))
            .credentials(&json!({"consumer_key": "ck", "consumer_secret": "cs", "token_id": "t"}))
            .args(&["--allow-private-hosts"]),
    );
    assert_ne!(out.status.code(), Some(0));
    let err = stderr(&out);
    assert!(
        err.contains("token_secret"),
        "names the missing field: {err}"
    );
    assert!(
        err.contains("signed.yaml") && err.contains("items") && err.contains("page 1"),
        "names spec, resource and page: {err}"
    );
    assert!(
        !err.contains("\"cs\"") && !err.contains(" cs "),
        "no secret echoed: {err}"
    );
}
