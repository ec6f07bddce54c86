//! Integers beyond 2^53 come out of `spec run` with every digit: in the primary
//! key, in a field the mapping copies by a plain path, and in `remote_data`.

use serde_json::Value;
use tributary_e2e::repo_root;

const WORKER: &str = env!("CARGO_BIN_EXE_tributary-worker");

/// 2^53 + 1: the first integer an f64 cannot hold.
const BIG: &str = "9007199254740993";

const SPEC: &str = r#"spec_version: 1
name: exact
base_url: "https://api.example.com"
allowed_hosts: ["api.example.com"]
auth: {type: bearer}
resources:
  deals:
    model: crm.deal
    request: {path: /deals}
    pagination: {type: cursor, cursor_path: next, param: after}
    records: {path: items, primary_key: id}
    mapping: |
      ( $p := props; { "name": $p.name, "amount": $p.amount, "stage": $uppercase($p.stage) } )
"#;

/// A provider answering one page, its body written out (not built from numbers).
async fn serve_one_page() -> String {
    let body = format!(
        r#"{{"items": [{{"id": {BIG}, "props": {{"name": "Big", "amount": {BIG}, "stage": "won"}}}}]}}"#
    );
    let app = axum::Router::new().route(
        "/deals",
        axum::routing::get(move || {
            let body = body.clone();
            async move { ([("content-type", "application/json")], body) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

#[tokio::test]
async fn big_integers_keep_every_digit_through_spec_run() {
    let base_url = serve_one_page().await;
    let dir = std::env::temp_dir().join(format!("tributary-exact-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let spec = dir.join("exact.yaml");
    std::fs::write(&spec, SPEC).unwrap();
    let out = tokio::process::Command::new(WORKER)
        .current_dir(repo_root())
        .args(["spec", "run"])
        .arg(&spec)
        .args(["--resource", "deals", "--allow-private-hosts"])
        .args([
            "--config",
            &serde_json::json!({"base_url": base_url}).to_string(),
        ])
        .args(["--credentials", r#"{"access_token": "t"}"#])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    let record: Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(record["id"], BIG);
    assert_eq!(record["data"]["amount"].to_string(), BIG, "{}", lines[0]);
    assert_eq!(record["data"]["stage"], "WON");
    assert_eq!(record["remote_data"]["id"].to_string(), BIG);
    assert_eq!(record["remote_data"]["props"]["amount"].to_string(), BIG);
    // The printed line itself carries the digits (not a float rounded back).
    assert!(
        lines[0].contains(&format!(r#""amount":{BIG}"#)),
        "{}",
        lines[0]
    );
}
