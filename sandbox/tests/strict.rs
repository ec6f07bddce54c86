//! The sandbox answers as strictly as the APIs its shipped profiles imitate:
//! opt-in properties return only what a request names; a SELECT naming a field
//! the object does not have is refused with the provider's error body, and a
//! query returns only the fields it selects, on every page of its locator.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_json::{json, Value};
use tributary_sandbox::{start, Profile, SandboxHandle};

fn profile(name: &str) -> Profile {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../provider-specs/sandbox")
        .join(name);
    Profile::load(&path).unwrap()
}

async fn serve(name: &str) -> SandboxHandle {
    let mut p = profile(name);
    p.rate_limit = None;
    start(p, "127.0.0.1:0".parse().unwrap()).await.unwrap()
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .cloned()
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

async fn get(url: String, token: &str) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .get(url)
        .bearer_auth(token)
        .header("Sforce-Query-Options", "batchSize=200")
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

const PROPERTY_TOKEN: &str = "sandbox-hubspot-token";
const SOQL_TOKEN: &str = "sandbox-salesforce-token";

#[tokio::test]
async fn a_listing_returns_only_the_properties_a_request_names() {
    let sbx = serve("hubspot.yaml").await;
    let list = |query: &str| format!("{}/crm/v3/objects/contacts?{query}", sbx.base_url());
    let always = ["hs_object_id", "createdate", "lastmodifieddate"];

    let (status, page) = get(list("limit=5&properties=firstname,city"), PROPERTY_TOKEN).await;
    assert_eq!(status, 200, "{page}");
    let results = page["results"].as_array().unwrap();
    assert_eq!(results.len(), 5);
    for r in results {
        let want: BTreeSet<String> = set(&["firstname", "city"])
            .union(&set(&always))
            .cloned()
            .collect();
        assert_eq!(
            keys(&r["properties"]),
            want,
            "only the named properties: {r}"
        );
        assert!(r["properties"]["firstname"].is_string());
        // The rest of the record is not a property: it stays.
        assert!(r["id"].is_string() && r["createdAt"].is_string(), "{r}");
    }

    // Unnamed properties, custom ones included, are not returned.
    let (_, page) = get(list("limit=3&properties=email"), PROPERTY_TOKEN).await;
    for r in page["results"].as_array().unwrap() {
        for absent in ["firstname", "phone", "jobtitle", "favorite_color"] {
            assert!(
                r["properties"].get(absent).is_none(),
                "{absent} was not named: {r}"
            );
        }
    }

    // None named: the documented defaults.
    let (_, page) = get(list("limit=3"), PROPERTY_TOKEN).await;
    let want: BTreeSet<String> = set(&["firstname", "lastname", "email"])
        .union(&set(&always))
        .cloned()
        .collect();
    assert_eq!(keys(&page["results"][0]["properties"]), want);

    // A property the object does not define is ignored; a defined one without a value is null.
    let (_, page) = get(
        list("limit=1&properties=no_such_property,mobilephone"),
        PROPERTY_TOKEN,
    )
    .await;
    let props = &page["results"][0]["properties"];
    assert!(props.get("no_such_property").is_none(), "{props}");
    assert_eq!(props["mobilephone"], Value::Null);
    assert!(props.as_object().unwrap().contains_key("mobilephone"));

    // A custom property is returned once named.
    let (_, page) = get(list("limit=1&properties=favorite_color"), PROPERTY_TOKEN).await;
    assert!(
        page["results"][0]["properties"]["favorite_color"].is_string(),
        "{page}"
    );
}

#[tokio::test]
async fn a_search_returns_only_the_properties_its_body_names() {
    let sbx = serve("hubspot.yaml").await;
    let resp = reqwest::Client::new()
        .post(format!("{}/crm/v3/objects/companies/search", sbx.base_url()))
        .bearer_auth(PROPERTY_TOKEN)
        .json(&json!({"properties": ["name", "tier"], "limit": 2,
            "filterGroups": [{"filters": [{"propertyName": "hs_lastmodifieddate", "operator": "GTE", "value": "0"}]}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let page: Value = resp.json().await.unwrap();
    let results = page["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    for r in results {
        assert_eq!(
            keys(&r["properties"]),
            set(&[
                "name",
                "tier",
                "hs_object_id",
                "createdate",
                "hs_lastmodifieddate"
            ]),
            "{r}"
        );
    }
}

fn soql(sbx: &SandboxHandle, q: &str) -> String {
    let mut url = url_of(sbx, "/services/data/v62.0/query");
    url.query_pairs_mut().append_pair("q", q);
    url.to_string()
}

fn url_of(sbx: &SandboxHandle, path: &str) -> reqwest::Url {
    reqwest::Url::parse(&format!("{}{path}", sbx.base_url())).unwrap()
}

#[tokio::test]
async fn a_selected_field_the_object_does_not_have_is_refused_as_invalid_field() {
    let sbx = serve("salesforce.yaml").await;
    let (status, body) = get(
        soql(
            &sbx,
            "SELECT Id, Name, Segment__c FROM Contact ORDER BY SystemModstamp ASC",
        ),
        SOQL_TOKEN,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    // The REST API's error body: an array of {message, errorCode}.
    let errors = body
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {body}"));
    assert_eq!(errors.len(), 1, "{body}");
    assert_eq!(keys(&errors[0]), set(&["message", "errorCode"]));
    assert_eq!(errors[0]["errorCode"], "INVALID_FIELD");
    let message = errors[0]["message"].as_str().unwrap();
    assert!(
        message.contains("Segment__c") && message.contains("Contact"),
        "{message}"
    );

    // A field of another object is not a field of this one.
    let (status, body) = get(soql(&sbx, "SELECT Id, StageName FROM Contact"), SOQL_TOKEN).await;
    assert_eq!(
        (status, body[0]["errorCode"].clone()),
        (400, json!("INVALID_FIELD"))
    );

    // Filtering or sorting on a field the object does not have is refused the same way.
    for q in [
        "SELECT Id FROM Contact WHERE Segment__c = 'EMEA'",
        "SELECT Id FROM Contact ORDER BY Segment__c ASC",
    ] {
        let (status, body) = get(soql(&sbx, q), SOQL_TOKEN).await;
        assert_eq!(status, 400, "{q}: {body}");
        assert_eq!(body[0]["errorCode"], "INVALID_FIELD", "{q}");
        assert!(body[0]["message"].as_str().unwrap().contains("Segment__c"));
    }

    // The credential is checked first, as the API does.
    let (status, body) = get(soql(&sbx, "SELECT Segment__c FROM Contact"), "wrong").await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body[0]["errorCode"], "INVALID_SESSION_ID");

    // No query at all is malformed too.
    let (status, body) = get(
        url_of(&sbx, "/services/data/v62.0/query").to_string(),
        SOQL_TOKEN,
    )
    .await;
    assert_eq!(
        (status, body[0]["errorCode"].clone()),
        (400, json!("MALFORMED_QUERY")),
        "{body}"
    );

    // What the sandbox cannot read is a malformed query, not a guess.
    let (status, body) = get(soql(&sbx, "SELECT FIELDS(ALL) FROM Contact"), SOQL_TOKEN).await;
    assert_eq!(status, 400);
    assert_eq!(body[0]["errorCode"], "MALFORMED_QUERY", "{body}");
}

#[tokio::test]
async fn a_query_returns_the_selected_fields_only_on_every_page_of_its_locator() {
    let sbx = serve("salesforce.yaml").await;
    // Names compare without case; records carry the API's spelling.
    let (status, page) = get(
        soql(&sbx, "select id, EMAIL, Favorite_Color__c from contact"),
        SOQL_TOKEN,
    )
    .await;
    assert_eq!(status, 200, "{page}");
    let want = set(&["attributes", "Id", "Email", "Favorite_Color__c"]);
    let records = page["records"].as_array().unwrap();
    assert_eq!(records.len(), 200);
    for r in records {
        assert_eq!(keys(r), want, "{r}");
        assert_eq!(r["attributes"]["type"], "Contact");
        assert!(r["Email"].as_str().unwrap().contains('@'));
    }
    assert_eq!(page["done"], false);
    let next = page["nextRecordsUrl"].as_str().unwrap();
    let (status, second) = get(url_of(&sbx, next).to_string(), SOQL_TOKEN).await;
    assert_eq!(status, 200, "{second}");
    let second_records = second["records"].as_array().unwrap();
    assert!(!second_records.is_empty());
    for r in second_records {
        assert_eq!(keys(r), want, "the locator keeps the selection: {r}");
    }
    assert_ne!(second_records[0]["Id"], records[0]["Id"]);

    // FROM picks the object.
    let (status, page) = get(soql(&sbx, "SELECT Id, Name FROM Account"), SOQL_TOKEN).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["records"][0]["attributes"]["type"], "Account");
    assert_eq!(
        keys(&page["records"][0]),
        set(&["attributes", "Id", "Name"])
    );
}

/// BambooHR documents its paged employee list as OAuth-only: the API key every other
/// endpoint takes is refused there, while a custom report with it returns exactly the
/// fields it names.
#[tokio::test]
async fn an_api_key_is_refused_where_only_oauth_is_accepted() {
    let sbx = serve("bamboohr.yaml").await;
    let http = reqwest::Client::new();
    let list = http
        .get(format!("{}/employees?page%5Blimit%5D=10", sbx.base_url()))
        .basic_auth("sandbox-bamboohr-key", Some("x"))
        .header("Accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(list.status().as_u16(), 401);
    let reason = list.headers()["x-bamboohr-error-message"].to_str().unwrap();
    assert!(reason.contains("OAuth"), "{reason}");
    let report = http
        .post(format!("{}/reports/custom?format=JSON", sbx.base_url()))
        .basic_auth("sandbox-bamboohr-key", Some("x"))
        .header("Accept", "application/json")
        .json(&json!({"title": "t", "fields": ["firstName", "supervisorEId", "noSuchField"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(report.status().as_u16(), 200);
    let body: Value = report.json().await.unwrap();
    let first = &body["employees"][0];
    assert_eq!(keys(first), set(&["id", "firstName", "supervisorEId"]));
    let stats: Value = http
        .get(format!("{}/_sandbox/stats", sbx.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["refused"], 1);
}
