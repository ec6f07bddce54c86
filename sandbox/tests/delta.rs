//! Delta queries (profile option `delta`), on the shipped Graph-like profile: a
//! first round pages through every record and ends with a delta link; the link
//! returns only what changed after it (updated, created, then the deleted records
//! as the profile writes them) and a new link; tokens the sandbox did not hand out
//! are refused with the profile's answer.

mod common;

use std::collections::BTreeSet;

use common::{control, serve};
use serde_json::{json, Value};

const TOKEN: &str = "sandbox-msgraph-token";

async fn get(url: &str) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .get(url)
        .bearer_auth(TOKEN)
        .header("Prefer", "odata.maxpagesize=50")
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

/// Follow `@odata.nextLink` to the round's end: its records and its delta link.
async fn round(first: &str) -> (Vec<Value>, String, usize) {
    let (mut url, mut records, mut pages) = (first.to_string(), Vec::new(), 0);
    loop {
        let (status, page) = get(&url).await;
        assert_eq!(status, 200, "{url}: {page}");
        pages += 1;
        records.extend(page["value"].as_array().unwrap().iter().cloned());
        match (
            page["@odata.nextLink"].as_str(),
            page["@odata.deltaLink"].as_str(),
        ) {
            (Some(next), None) => url = next.to_string(),
            (None, Some(delta)) => return (records, delta.to_string(), pages),
            _ => panic!("a page needs exactly one of nextLink and deltaLink: {page}"),
        }
    }
}

fn ids(records: &[Value]) -> BTreeSet<String> {
    records
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn delta_links_return_only_the_changes_after_them_deletions_included() {
    let sbx = serve("msgraph.yaml").await;
    let first = format!("{}/v1.0/users/delta?$select=id,displayName", sbx.base_url());
    let (all, link, pages) = round(&first).await;
    assert_eq!(all.len(), 120);
    assert_eq!(pages, 3, "50 per page as Prefer asked");
    assert!(
        all.iter().all(|r| r.as_object().unwrap().len() == 2),
        "only $select-ed: {}",
        all[0]
    );

    let (status, m) = control(
        &sbx,
        reqwest::Method::POST,
        "resources/users/mutate",
        Some(json!({"update": 3, "delete": 2, "create": 1})),
    )
    .await;
    assert_eq!(status, 200, "{m}");
    let guid = |n: &Value| format!("6f1c0000-0000-4000-8000-{:012}", n.as_u64().unwrap());
    let touched: BTreeSet<String> = m["updated"]
        .as_array()
        .unwrap()
        .iter()
        .chain(m["created"].as_array().unwrap())
        .map(guid)
        .collect();
    let deleted: Vec<String> = m["deleted"].as_array().unwrap().iter().map(guid).collect();

    let (changes, next_link, _) = round(&link).await;
    let (live, removed): (Vec<Value>, Vec<Value>) = changes
        .into_iter()
        .partition(|r| r.get("@removed").is_none());
    assert_eq!(ids(&live), touched);
    assert!(live.iter().all(|r| r["displayName"].is_string()));
    assert_eq!(
        removed,
        deleted
            .iter()
            .map(|id| json!({"id": id, "@removed": {"reason": "changed"}}))
            .collect::<Vec<_>>()
    );

    // Nothing changed since the new link.
    let (none, _, _) = round(&next_link).await;
    assert_eq!(none, Vec::<Value>::new());

    // A token the sandbox did not hand out.
    for bad in ["nonsense", "groups.0.1700000000000", "users.25.all"] {
        let url = format!("{}/v1.0/users/delta?$deltatoken={bad}", sbx.base_url());
        let (status, body) = get(&url).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["error"]["code"], "Request_BadRequest", "{bad}: {body}");
    }
}

#[tokio::test]
async fn the_user_list_refuses_pages_over_999_and_returns_only_what_is_selected() {
    let sbx = serve("msgraph.yaml").await;
    let list = |q: &str| format!("{}/v1.0/users?{q}", sbx.base_url());
    let (status, body) = get(&list("$top=1000")).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "Request_UnsupportedQuery", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("'1000'"),
        "{body}"
    );
    let (status, page) = get(&list("$top=999&$select=id,mail")).await;
    assert_eq!(status, 200, "{page}");
    let records = page["value"].as_array().unwrap();
    assert_eq!(records.len(), 120);
    assert!(page.get("@odata.nextLink").is_none());
    let keys: BTreeSet<&str> = records[1]
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    assert_eq!(keys, BTreeSet::from(["id", "mail"]));
    let (status, body) = get(&list("$select=id,mial")).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "BadRequest");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("'mial'"),
        "{body}"
    );
}
