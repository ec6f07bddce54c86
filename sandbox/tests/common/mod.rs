//! Helpers the schema suites share: start a shipped profile (edited first, if
//! asked) and talk HTTP to it.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_json::Value;
use tributary_sandbox::{start, Profile, SandboxHandle};

pub const HUBSPOT_TOKEN: &str = "sandbox-hubspot-token";
pub const SALESFORCE_TOKEN: &str = "sandbox-salesforce-token";

pub fn profile(name: &str) -> Profile {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../provider-specs/sandbox")
        .join(name);
    Profile::load(&path).unwrap()
}

/// A shipped profile without its budget, edited by `edit`, started on loopback.
pub async fn serve_with(name: &str, edit: impl FnOnce(&mut Profile)) -> SandboxHandle {
    let mut p = profile(name);
    p.rate_limit = None;
    edit(&mut p);
    start(p, "127.0.0.1:0".parse().unwrap()).await.unwrap()
}

pub async fn serve(name: &str) -> SandboxHandle {
    serve_with(name, |_| {}).await
}

pub async fn get(url: String, token: &str) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .get(url)
        .bearer_auth(token)
        .header("Sforce-Query-Options", "batchSize=200")
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

pub async fn post(url: String, token: &str, body: &Value) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(url)
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

/// A SOQL query URL on the sandbox.
pub fn soql(sbx: &SandboxHandle, q: &str) -> String {
    let mut url =
        reqwest::Url::parse(&format!("{}/services/data/v62.0/query", sbx.base_url())).unwrap();
    url.query_pairs_mut().append_pair("q", q);
    url.to_string()
}

/// The control API's answer (status, JSON body or null).
pub async fn control(
    sbx: &SandboxHandle,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req =
        reqwest::Client::new().request(method, format!("{}/_sandbox/{path}", sbx.base_url()));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Every record of a resource, whole, as the control API lists them.
pub async fn records(sbx: &SandboxHandle, resource: &str) -> Vec<Value> {
    let (status, body) = control(
        sbx,
        reqwest::Method::GET,
        &format!("resources/{resource}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["records"].as_array().unwrap().clone()
}

pub async fn stats(sbx: &SandboxHandle) -> tributary_sandbox::Stats {
    let (_, body) = control(sbx, reqwest::Method::GET, "stats", None).await;
    serde_json::from_value(body).unwrap()
}

pub fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .cloned()
        .collect()
}

/// The `name` of every entry of an array.
pub fn names(items: &Value) -> BTreeSet<String> {
    items
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {items}"))
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_string())
        .collect()
}

/// The entry of an array named `name`.
pub fn named<'a>(items: &'a Value, name: &str) -> &'a Value {
    items
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {items}"))
}
