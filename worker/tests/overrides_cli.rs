//! Overrides from the command line: `spec check --overrides DIR` and `run` refuse an
//! environment overlay that does not apply, naming the file, the path in it and the
//! problem; `spec run --overrides FILE` maps with the overrides on top of the spec.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use tributary_e2e::repo_root;

const WORKER: &str = env!("CARGO_BIN_EXE_tributary-worker");

fn worker(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(WORKER)
        .current_dir(repo_root())
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run tributary-worker")
}

fn stderr(out: &Output) -> String {
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!text.contains("panicked"), "no panic: {text}");
    text
}

/// A directory of overlay files, `(file name, text)`.
fn overlay_dir(tag: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tributary-overlay-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
    dir
}

const GOOD: &str = "resources:\n  contacts:\n    fields:\n      title: \"'Env ' & $string(id)\"\n";
const UNKNOWN_FIELD: &str =
    "resources:\n  contacts:\n    fields:\n      titel: properties.jobtitle\n";

fn check(dir: &Path) -> Output {
    worker(
        &[
            "spec",
            "check",
            "provider-specs/hubspot.yaml",
            "--overrides",
            dir.to_str().unwrap(),
        ],
        &[],
    )
}

#[test]
fn spec_check_checks_the_overlays_of_the_specs_it_checks() {
    let dir = overlay_dir("good", &[("hubspot.yaml", GOOD)]);
    let out = check(&dir);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("ok (overrides of hubspot)"), "{err}");

    let dir = overlay_dir("unknown-field", &[("hubspot.yaml", UNKNOWN_FIELD)]);
    let out = check(&dir);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    let file = dir.join("hubspot.yaml");
    assert!(
        err.contains(&format!(
            "{}:4: at `resources.contacts.fields.titel`: the unified model crm.contact has no field `titel`",
            file.display()
        )),
        "{err}"
    );

    let dir = overlay_dir("stray", &[("hubspt.yaml", GOOD)]);
    let out = check(&dir);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("hubspt.yaml: names no provider"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn run_refuses_to_start_on_an_overlay_that_does_not_apply() {
    let dir = overlay_dir(
        "run",
        &[(
            "hubspot.yaml",
            "resources:\n  contacts:\n    mapping: \"{ 'title': \"\n",
        )],
    );
    let db = std::env::temp_dir().join(format!("tributary-overlay-run-{}.db", std::process::id()));
    let key = tributary::secrets::crypto::Cipher::generate_key();
    let out = worker(
        &["run"],
        &[
            ("TRIBUTARY_OVERRIDES_DIR", dir.to_str().unwrap()),
            ("TRIBUTARY_ENCRYPTION_KEY", &key),
            (
                "TRIBUTARY_DATABASE_URL",
                &format!("sqlite://{}", db.display()),
            ),
            // Never reached: the overlay is checked before anything connects.
            ("TRIBUTARY_KAFKA_BROKERS", "127.0.0.1:1"),
        ],
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "{}:3: at `resources.contacts.mapping`: invalid JSONata",
            dir.join("hubspot.yaml").display()
        )),
        "{err}"
    );
    assert!(err.contains("TRIBUTARY_OVERRIDES_DIR"), "{err}");
}

#[test]
fn spec_run_maps_with_the_overrides_files_in_order() {
    let dir = overlay_dir(
        "spec-run",
        &[
            ("env.yaml", GOOD),
            (
                "conn.json",
                r#"{"resources": {"contacts": {"fields": {"custom_fields.initials": "$substring(properties.firstname, 0, 1)"}}}}"#,
            ),
        ],
    );
    let out = worker(
        &[
            "spec",
            "run",
            "provider-specs/hubspot.yaml",
            "--resource",
            "contacts",
            "--sandbox",
            "provider-specs/sandbox/hubspot.yaml",
            "--credentials",
            r#"{"refresh_token": "sandbox-hubspot-refresh", "client_id": "sandbox-client", "client_secret": "sandbox-client-secret"}"#,
            "--overrides",
            dir.join("env.yaml").to_str().unwrap(),
            "--overrides",
            dir.join("conn.json").to_str().unwrap(),
            "--quiet",
        ],
        &[],
    );
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    let records: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(!records.is_empty(), "{err}");
    for r in &records {
        let id = r["id"].as_str().unwrap();
        assert_eq!(r["data"]["title"], format!("Env {id}"), "{r}");
        let first = r["remote_data"]["properties"]["firstname"].as_str();
        let initial = first.and_then(|f| f.chars().next()).map(String::from);
        assert_eq!(
            r["custom_fields"]["initials"].as_str().map(String::from),
            initial,
            "{r}"
        );
    }
}
