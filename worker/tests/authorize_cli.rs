//! `spec run --authorize` against an in-process HubSpot sandbox: the command prints the
//! authorize URL, the test plays the browser (consent approved, back to the command's
//! loopback callback), and the run goes on with the new tokens: the portal id is said,
//! the records print, the credentials are saved for the next run.

use std::process::Stdio;

use reqwest::{redirect, StatusCode, Url};
use tokio::io::{AsyncBufReadExt, BufReader};
use tributary_e2e::broker::free_port;
use tributary_e2e::repo_root;

/// What a browser does with the authorize URL: consent, then follow the way back.
async fn approve(authorize: &Url) -> String {
    let http = reqwest::Client::builder()
        .redirect(redirect::Policy::none())
        .build()
        .unwrap();
    let page = http.get(authorize.clone()).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let mut form: Vec<(String, String)> = authorize.query_pairs().into_owned().collect();
    form.push(("decision".into(), "approve".into()));
    let mut action = authorize.clone();
    action.set_query(None);
    let back = http.post(action).form(&form).send().await.unwrap();
    let callback = back.headers()["location"].to_str().unwrap().to_string();
    http.get(callback)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn spec_run_authorizes_then_reads_with_the_new_tokens() {
    let port = free_port();
    let saved =
        std::env::temp_dir().join(format!("tributary-authorize-{}.json", std::process::id()));
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tributary-worker"))
        .current_dir(repo_root())
        .args([
            "spec",
            "run",
            "provider-specs/hubspot.yaml",
            "--resource",
            "contacts",
        ])
        .args([
            "--sandbox",
            "provider-specs/sandbox/hubspot.yaml",
            "--authorize",
        ])
        .args([
            "--redirect-uri",
            &format!("http://127.0.0.1:{port}/callback"),
        ])
        .args([
            "--credentials",
            r#"{"client_id": "sandbox-client", "client_secret": "sandbox-client-secret"}"#,
        ])
        .arg("--save-credentials")
        .arg(&saved)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    // Records are read as they come, so a full pipe never holds the command up.
    let mut stdout = child.stdout.take().unwrap();
    let printed = tokio::spawn(async move {
        let mut text = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut stdout, &mut text)
            .await
            .unwrap();
        text
    });
    let mut seen = Vec::new();
    let authorize = loop {
        let line = stderr
            .next_line()
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("the command ended before printing a URL: {seen:?}"));
        if let Some(url) = line.strip_prefix("open this URL in a browser to authorize: ") {
            break Url::parse(url).unwrap();
        }
        seen.push(line);
    };
    assert!(
        authorize
            .query_pairs()
            .any(|(k, v)| k == "scope" && v.contains("crm.objects.contacts.read")),
        "{authorize}"
    );
    let page = approve(&authorize).await;
    assert!(page.contains("Authorized"), "{page}");

    let mut rest = Vec::new();
    while let Some(line) = stderr.next_line().await.unwrap() {
        rest.push(line);
    }
    let status = child.wait().await.unwrap();
    assert!(status.success(), "{rest:?}");
    assert!(
        rest.iter()
            .any(|l| l.contains("authorized: external_id 4711")),
        "{rest:?}"
    );
    let records = printed.await.unwrap().lines().count();
    assert!(records > 0);
    let credentials: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&saved).unwrap()).unwrap();
    assert!(credentials["refresh_token"]
        .as_str()
        .unwrap()
        .starts_with("sbx-rt-"));
    assert!(
        !rest
            .join("\n")
            .contains(credentials["refresh_token"].as_str().unwrap()),
        "no token on stderr"
    );
    let _ = std::fs::remove_file(&saved);
}
