//! A tenant's fields change under a running sandbox (the control API adds and
//! removes fields), and two sandboxes of one profile can have different custom
//! fields (the profile edited before start): describe answers, records and the
//! refusal of unknown fields follow.

mod common;

use common::*;
use reqwest::Method;
use serde_json::{json, Value};
use tributary_sandbox::profile::FieldDef;

fn contacts_url(sbx: &tributary_sandbox::SandboxHandle, properties: &str) -> String {
    format!(
        "{}/crm/v3/objects/contacts?limit=20&properties={properties}",
        sbx.base_url()
    )
}

async fn described(sbx: &tributary_sandbox::SandboxHandle, path: &str, token: &str) -> Value {
    let (status, body) = get(format!("{}{path}", sbx.base_url()), token).await;
    assert_eq!(status, 200, "{path}: {body}");
    body
}

#[tokio::test]
async fn a_property_added_at_runtime_is_described_and_returned_when_named_without_touching_records()
{
    let sbx = serve("hubspot.yaml").await;
    let before = records(&sbx, "contacts").await;
    let field = json!({"name": "renewal_date", "label": "Renewal date", "type": "date"});
    let (status, body) =
        control(&sbx, Method::POST, "resources/contacts/fields", Some(field)).await;
    assert_eq!(status, 201, "{body}");

    let d = described(&sbx, "/crm/v3/properties/contacts", HUBSPOT_TOKEN).await;
    let renewal = named(&d["results"], "renewal_date");
    assert_eq!(
        (renewal["type"].clone(), renewal["fieldType"].clone()),
        (json!("date"), json!("date"))
    );
    assert!(renewal.get("hubspotDefined").is_none());

    let (_, page) = get(contacts_url(&sbx, "renewal_date"), HUBSPOT_TOKEN).await;
    for r in page["results"].as_array().unwrap() {
        let v = r["properties"]["renewal_date"]
            .as_str()
            .unwrap_or_else(|| panic!("{r}"));
        assert!(
            chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d").is_ok(),
            "{v}"
        );
    }
    // Not named, not returned.
    let (_, page) = get(contacts_url(&sbx, "email"), HUBSPOT_TOKEN).await;
    assert!(page["results"][0]["properties"]
        .get("renewal_date")
        .is_none());
    // Adding a property changes no record's last-modified time.
    let after = records(&sbx, "contacts").await;
    assert_eq!(after.len(), before.len());
    for (a, b) in after.iter().zip(&before) {
        assert_eq!(a["updatedAt"], b["updatedAt"]);
        assert_eq!(
            a["properties"]["lastmodifieddate"],
            b["properties"]["lastmodifieddate"]
        );
    }

    // The same name twice, an unknown type, an unknown resource: refused.
    let again = json!({"name": "renewal_date", "type": "date"});
    assert_eq!(
        control(&sbx, Method::POST, "resources/contacts/fields", Some(again))
            .await
            .0,
        409
    );
    let odd = json!({"name": "odd", "type": "hologram"});
    let (status, body) = control(&sbx, Method::POST, "resources/contacts/fields", Some(odd)).await;
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().unwrap().contains("hologram"),
        "{body}"
    );
    let any = json!({"name": "x", "type": "string"});
    assert_eq!(
        control(&sbx, Method::POST, "resources/widgets/fields", Some(any))
            .await
            .0,
        404
    );
}

#[tokio::test]
async fn a_removed_property_is_gone_from_describe_and_records() {
    let sbx = serve("hubspot.yaml").await;
    for field in ["jobtitle", "favorite_color"] {
        let path = format!("resources/contacts/fields/{field}");
        assert_eq!(
            control(&sbx, Method::DELETE, &path, None).await.0,
            204,
            "{field}"
        );
        assert_eq!(
            control(&sbx, Method::DELETE, &path, None).await.0,
            404,
            "{field} twice"
        );
    }
    let d = described(&sbx, "/crm/v3/properties/contacts", HUBSPOT_TOKEN).await;
    let props = names(&d["results"]);
    assert!(
        !props.contains("jobtitle") && !props.contains("favorite_color"),
        "{props:?}"
    );
    assert!(props.contains("customer_tier"));
    // Named anyway: the portal no longer has them, so they are left out.
    let (_, page) = get(
        contacts_url(&sbx, "jobtitle,favorite_color,email"),
        HUBSPOT_TOKEN,
    )
    .await;
    for r in page["results"].as_array().unwrap() {
        let p = &r["properties"];
        assert!(
            p.get("jobtitle").is_none() && p.get("favorite_color").is_none(),
            "{p}"
        );
        assert!(p["email"].is_string());
    }
    let (_, fields) = control(&sbx, Method::GET, "resources/contacts/fields", None).await;
    assert!(!names(&fields["standard"]).contains("jobtitle"));
    assert_eq!(
        names(&fields["custom"]),
        ["customer_tier".to_string()].into()
    );
}

#[tokio::test]
async fn soql_follows_fields_added_and_removed_at_runtime() {
    let sbx = serve("salesforce.yaml").await;
    let score =
        json!({"name": "Score__c", "label": "Score", "type": "double", "min": 0, "max": 100});
    let (status, body) =
        control(&sbx, Method::POST, "resources/contacts/fields", Some(score)).await;
    assert_eq!(status, 201, "{body}");
    let (status, page) = get(
        soql(&sbx, "SELECT Id, Score__c FROM Contact"),
        SALESFORCE_TOKEN,
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert!(page["records"][0]["Score__c"].is_number(), "{page}");
    let d = described(
        &sbx,
        "/services/data/v62.0/sobjects/Contact/describe",
        SALESFORCE_TOKEN,
    )
    .await;
    assert_eq!(named(&d["fields"], "Score__c")["custom"], true);

    for field in ["Title", "Region__c"] {
        let path = format!("resources/contacts/fields/{field}");
        assert_eq!(control(&sbx, Method::DELETE, &path, None).await.0, 204);
        let (status, body) = get(
            soql(&sbx, &format!("SELECT Id, {field} FROM Contact")),
            SALESFORCE_TOKEN,
        )
        .await;
        assert_eq!(status, 400, "{field}: {body}");
        assert_eq!(body[0]["errorCode"], "INVALID_FIELD");
        assert!(body[0]["message"].as_str().unwrap().contains(field));
    }
    let d = described(
        &sbx,
        "/services/data/v62.0/sobjects/Contact/describe",
        SALESFORCE_TOKEN,
    )
    .await;
    let fields = names(&d["fields"]);
    assert!(
        !fields.contains("Title") && !fields.contains("Region__c"),
        "{fields:?}"
    );
    let whole = &records(&sbx, "contacts").await[0];
    assert!(
        whole.get("Title").is_none() && whole.get("Region__c").is_none(),
        "{whole}"
    );
}

#[tokio::test]
async fn two_sandboxes_of_one_profile_can_have_different_custom_fields() {
    let plain = serve("salesforce.yaml").await;
    let tailored = serve_with("salesforce.yaml", |p| {
        let schema = &mut p.resources["contacts"].schema;
        schema.custom_fields.retain(|f| f.name != "Region__c");
        schema.custom_fields.push(
            serde_json::from_value::<FieldDef>(json!({
                "name": "Segment__c", "label": "Segment", "type": "picklist",
                "options": ["SMB", "Enterprise"]
            }))
            .unwrap(),
        );
    })
    .await;
    let describe = "/services/data/v62.0/sobjects/Contact/describe";
    let plain_fields = names(&described(&plain, describe, SALESFORCE_TOKEN).await["fields"]);
    let tailored_fields = names(&described(&tailored, describe, SALESFORCE_TOKEN).await["fields"]);
    assert!(plain_fields.contains("Region__c") && !plain_fields.contains("Segment__c"));
    assert!(tailored_fields.contains("Segment__c") && !tailored_fields.contains("Region__c"));

    let (status, page) = get(
        soql(&tailored, "SELECT Id, Segment__c FROM Contact"),
        SALESFORCE_TOKEN,
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert!(["SMB", "Enterprise"].contains(&page["records"][0]["Segment__c"].as_str().unwrap()));
    let (status, body) = get(
        soql(&plain, "SELECT Id, Segment__c FROM Contact"),
        SALESFORCE_TOKEN,
    )
    .await;
    assert_eq!(
        (status, body[0]["errorCode"].clone()),
        (400, json!("INVALID_FIELD"))
    );
    let (status, _) = get(
        soql(&tailored, "SELECT Id, Region__c FROM Contact"),
        SALESFORCE_TOKEN,
    )
    .await;
    assert_eq!(status, 400);
}
