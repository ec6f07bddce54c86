//! Every provider spec against a sandbox that answers as that provider's
//! documentation says: `spec run` prints every record exactly once, in order,
//! and exits 0; an incremental run prints exactly the records changed.

use std::path::Path;
use std::process::Stdio;

use serde_json::{Map, Value};
use tributary_e2e::{repo_root, ProviderCase, SandboxControl};
use tributary_sandbox::{self as sandbox, Profile};

struct RunOutput {
    code: i32,
    records: Vec<Value>,
    stderr: String,
}

/// Runs `spec run` with the case's credentials file, which the run updates when
/// the token endpoint renews (or rotates) them.
async fn spec_run(
    case: &ProviderCase,
    credentials: &Path,
    resource: &str,
    config: &Map<String, Value>,
    extra: &[String],
) -> RunOutput {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_tributary-worker"));
    cmd.current_dir(repo_root())
        .arg("spec")
        .arg("run")
        .arg(format!("provider-specs/{}", case.spec))
        .args(["--resource", resource])
        .args(["--config", &Value::Object(config.clone()).to_string()])
        .args(["--credentials", &format!("@{}", credentials.display())])
        .arg("--save-credentials")
        .arg(credentials)
        .arg("--allow-private-hosts")
        .args(["--max-wait", "30"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(size) = case.page_size {
        cmd.args(["--page-size", &size.to_string()]);
    }
    let out = cmd.output().await.expect("run tributary-worker");
    let stdout = String::from_utf8(out.stdout).expect("utf-8 stdout");
    RunOutput {
        code: out.status.code().unwrap_or(-1),
        records: stdout
            .lines()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {l}"))
            })
            .collect(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Two delta rounds: the first (`--incremental`, no link) reads every record and saves
/// its delta link; after the sandbox updates 3 records and deletes 2, the round from
/// that link prints exactly the 3 updated records, then a `deleted` line for each of
/// the 2 others.
async fn delta_rounds(
    name: &str,
    case: &ProviderCase,
    control: &SandboxControl,
    credentials: &Path,
    resource: &str,
    config: &Map<String, Value>,
) {
    let link_file = std::env::temp_dir().join(format!(
        "tributary-{name}-{resource}-{}.delta",
        std::process::id()
    ));
    let before = control.records(resource).await.unwrap();
    control.expire_tokens().await.unwrap();
    let save = [
        "--incremental".to_string(),
        "--save-delta-link".into(),
        link_file.display().to_string(),
    ];
    let first = spec_run(case, credentials, resource, config, &save).await;
    assert_eq!(
        first.code, 0,
        "{name}/{resource} first delta round failed:\n{}",
        first.stderr
    );
    let got: Vec<&Value> = first.records.iter().map(|r| &r["remote_data"]).collect();
    let want: Vec<&Value> = before.iter().map(|(_, r)| r).collect();
    assert!(
        got == want,
        "{name}/{resource}: the first delta round reads every record in order"
    );
    let link = std::fs::read_to_string(&link_file).unwrap_or_else(|e| {
        panic!(
            "{name}/{resource}: no delta link saved ({e}):\n{}",
            first.stderr
        )
    });
    // The provider id the first round printed for each sandbox record.
    let provider_id = |sandbox_id: u64| -> Value {
        let (_, rec) = before.iter().find(|(id, _)| *id == sandbox_id).unwrap();
        first
            .records
            .iter()
            .find(|r| &r["remote_data"] == rec)
            .unwrap()["id"]
            .clone()
    };

    let m = control.mutate(resource, 3, 2, 0).await.unwrap();
    let ids = |key: &str| -> Vec<u64> {
        m[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect()
    };
    let (updated, deleted) = (ids("updated"), ids("deleted"));
    assert_eq!((updated.len(), deleted.len()), (3, 2));
    let mut want: Vec<Value> = control
        .records(resource)
        .await
        .unwrap()
        .into_iter()
        .filter(|(id, _)| updated.contains(id))
        .map(|(_, r)| r)
        .collect();
    let deleted_ids: Vec<Value> = deleted.iter().map(|&id| provider_id(id)).collect();
    control.expire_tokens().await.unwrap();
    let second = spec_run(
        case,
        credentials,
        resource,
        config,
        &["--delta-link".into(), link],
    )
    .await;
    assert_eq!(
        second.code, 0,
        "{name}/{resource} delta round failed:\n{}",
        second.stderr
    );
    let (gone, changed): (Vec<&Value>, Vec<&Value>) =
        second.records.iter().partition(|r| r["event"] == "deleted");
    let got: Vec<Value> = changed.iter().map(|r| r["remote_data"].clone()).collect();
    want.sort_by_key(|r| r.to_string());
    let mut got_sorted = got.clone();
    got_sorted.sort_by_key(|r| r.to_string());
    assert_eq!(
        got_sorted, want,
        "{name}/{resource}: the delta round reads exactly the updated records"
    );
    let gone_ids: Vec<Value> = gone.iter().map(|r| r["id"].clone()).collect();
    assert_eq!(
        gone_ids, deleted_ids,
        "{name}/{resource}: a deleted line per removed record"
    );
    let _ = std::fs::remove_file(&link_file);
}

#[tokio::test]
async fn every_provider_spec_reads_its_sandbox_completely_in_order() {
    // TRIBUTARY_PROVIDER_CASE=<name> runs one case (while writing a spec).
    let only = std::env::var("TRIBUTARY_PROVIDER_CASE").ok();
    let cases = ProviderCase::all();
    assert!(!cases.is_empty(), "no provider cases in tests/providers");
    for (name, case) in cases {
        if only.as_ref().is_some_and(|o| o != &name) {
            continue;
        }
        let profile =
            Profile::load(&repo_root().join("provider-specs").join(&case.profile)).unwrap();
        let sbx = sandbox::start(profile, "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let control = SandboxControl::new(sbx.base_url());
        let credentials =
            std::env::temp_dir().join(format!("tributary-{name}-{}.json", std::process::id()));
        std::fs::write(
            &credentials,
            Value::Object(case.credentials.clone()).to_string(),
        )
        .unwrap();
        let mut config = case.config.clone();
        config.insert("base_url".into(), Value::String(sbx.base_url()));
        for (k, path) in &case.sandbox_urls {
            let url = format!("{}{}", sbx.base_url(), path.as_str().unwrap());
            config.insert(k.clone(), Value::String(url));
        }
        for resource in &case.resources {
            let expected = control.records(resource).await.unwrap();
            assert!(
                expected.len() > 10,
                "{name}/{resource}: sandbox serves too few records to page"
            );
            // Every run meets an expired access token: OAuth cases refresh each time,
            // and a rotated refresh token must have been saved by the run before.
            control.expire_tokens().await.unwrap();
            let run = spec_run(&case, &credentials, resource, &config, &[]).await;
            assert_eq!(run.code, 0, "{name}/{resource} failed:\n{}", run.stderr);
            let pages = run
                .stderr
                .lines()
                .filter(|l| l.starts_with("page "))
                .count();
            if case.single_page.contains(resource) {
                assert_eq!(pages, 1, "{name}/{resource}: one answer:\n{}", run.stderr);
            } else {
                assert!(
                    pages >= 2,
                    "{name}/{resource}: expected several pages:\n{}",
                    run.stderr
                );
            }
            let got: Vec<&Value> = run.records.iter().map(|r| &r["remote_data"]).collect();
            let want: Vec<&Value> = expected.iter().map(|(_, r)| r).collect();
            assert_eq!(got.len(), want.len(), "{name}/{resource}: record count");
            assert!(
                got == want,
                "{name}/{resource}: records differ from the sandbox's, or are out of order"
            );
            let mut ids: Vec<&str> = run
                .records
                .iter()
                .map(|r| r["id"].as_str().unwrap())
                .collect();
            ids.sort();
            ids.dedup();
            assert_eq!(
                ids.len(),
                run.records.len(),
                "{name}/{resource}: duplicate ids"
            );
            for r in &run.records {
                assert_eq!(
                    r["data"]["id"], r["id"],
                    "{name}/{resource}: data.id is the provider id"
                );
                assert!(r["model"].as_str().unwrap().contains('.'));
            }
        }
        for resource in &case.incremental {
            let since = (chrono::Utc::now() - chrono::Duration::seconds(2))
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            let changed = control.mutate(resource, 3, 0, 0).await.unwrap();
            let changed: Vec<u64> = changed["updated"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap())
                .collect();
            let expected: Vec<Value> = control
                .records(resource)
                .await
                .unwrap()
                .into_iter()
                .filter(|(id, _)| changed.contains(id))
                .map(|(_, r)| r)
                .collect();
            control.expire_tokens().await.unwrap();
            let run = spec_run(
                &case,
                &credentials,
                resource,
                &config,
                &["--since".into(), since],
            )
            .await;
            assert_eq!(
                run.code, 0,
                "{name}/{resource} incremental failed:\n{}",
                run.stderr
            );
            let got: Vec<Value> = run
                .records
                .iter()
                .map(|r| r["remote_data"].clone())
                .collect();
            assert_eq!(
                got, expected,
                "{name}/{resource}: incremental run reads exactly the changed records"
            );
        }
        for resource in &case.delta {
            delta_rounds(&name, &case, &control, &credentials, resource, &config).await;
        }
        let stats = control.stats().await.unwrap();
        if case.sandbox_urls.contains_key("token_url") {
            let runs =
                (case.resources.len() + case.incremental.len() + 2 * case.delta.len()) as u64;
            assert_eq!(
                stats.refreshes, runs,
                "{name}: one refresh per run, each with the saved refresh token"
            );
            assert_eq!(stats.invalid_grants, 0, "{name}");
        }
        let _ = std::fs::remove_file(&credentials);
    }
}
