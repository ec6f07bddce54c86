//! The shipped profiles describe each object's fields as the providers' describe
//! endpoints do (HubSpot's properties and schemas APIs, Salesforce's Describe
//! Global and sObject Describe), exactly the fields the records have; custom
//! fields carry values typed as each provider returns them, still opt-in; custom
//! objects list and page like the others.

mod common;

use std::collections::BTreeSet;

use common::*;
use serde_json::{json, Value};

fn hubspot_url(sbx: &tributary_sandbox::SandboxHandle, path: &str) -> String {
    format!("{}{path}", sbx.base_url())
}

/// The property names the records of `resource` have (inside `properties`).
async fn property_names(
    sbx: &tributary_sandbox::SandboxHandle,
    resource: &str,
) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for r in records(sbx, resource).await {
        out.extend(keys(&r["properties"]));
    }
    out
}

#[tokio::test]
async fn hubspot_properties_describe_exactly_what_the_records_hold() {
    let sbx = serve("hubspot.yaml").await;
    for (resource, object_type) in [
        ("contacts", "contacts"),
        ("companies", "companies"),
        ("deals", "0-3"),
        ("projects", "2-1234567"),
        ("projects", "p12345678_project"),
    ] {
        let url = hubspot_url(&sbx, &format!("/crm/v3/properties/{object_type}"));
        let (status, body) = get(url, HUBSPOT_TOKEN).await;
        assert_eq!(status, 200, "{object_type}: {body}");
        assert_eq!(keys(&body), BTreeSet::from(["results".to_string()]));
        let results = &body["results"];
        assert_eq!(
            names(results),
            property_names(&sbx, resource).await,
            "{object_type}"
        );
        for p in results.as_array().unwrap() {
            for key in [
                "name",
                "label",
                "type",
                "fieldType",
                "groupName",
                "options",
                "modificationMetadata",
            ] {
                assert!(p.get(key).is_some(), "{object_type}: {key} missing in {p}");
            }
        }
    }

    let (_, body) = get(
        hubspot_url(&sbx, "/crm/v3/properties/contacts"),
        HUBSPOT_TOKEN,
    )
    .await;
    let results = &body["results"];
    // HubSpot's own properties say so; the portal's custom ones carry no hubspotDefined.
    assert_eq!(named(results, "email")["hubspotDefined"], true);
    let tier = named(results, "customer_tier");
    assert!(tier.get("hubspotDefined").is_none(), "{tier}");
    assert_eq!(tier["type"], "enumeration");
    assert_eq!(tier["fieldType"], "select");
    let values: Vec<&Value> = tier["options"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| &o["value"])
        .collect();
    assert_eq!(values, [&json!("gold"), &json!("silver"), &json!("bronze")]);
    assert_eq!(tier["options"][0]["label"], "Gold");
    assert_eq!(named(results, "createdate")["type"], "datetime");

    // An object type the portal does not have: HubSpot's error body.
    let (status, body) = get(
        hubspot_url(&sbx, "/crm/v3/properties/widgets"),
        HUBSPOT_TOKEN,
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["status"], "error");
    assert!(
        body["message"].as_str().unwrap().contains("widgets"),
        "{body}"
    );
}

#[tokio::test]
async fn describe_requests_need_the_credential_and_are_counted_apart_from_data() {
    let sbx = serve("hubspot.yaml").await;
    let (status, body) = get(hubspot_url(&sbx, "/crm/v3/properties/contacts"), "wrong").await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["category"], "INVALID_AUTHENTICATION");
    let (status, _) = get(hubspot_url(&sbx, "/crm/v3/schemas"), HUBSPOT_TOKEN).await;
    assert_eq!(status, 200);
    let st = stats(&sbx).await;
    assert_eq!(
        (st.requests, st.schema_requests, st.data_requests),
        (2, 2, 0)
    );
    assert_eq!(st.unauthorized, 1);

    // The budget applies to them like to any request.
    let mut p = profile("salesforce.yaml");
    p.rate_limit.as_mut().unwrap().requests = 2;
    let sf = tributary_sandbox::start(p, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let describe = format!(
        "{}/services/data/v62.0/sobjects/Contact/describe",
        sf.base_url()
    );
    for _ in 0..2 {
        assert_eq!(get(describe.clone(), SALESFORCE_TOKEN).await.0, 200);
    }
    let (status, body) = get(describe, SALESFORCE_TOKEN).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body[0]["errorCode"], "REQUEST_LIMIT_EXCEEDED");
}

#[tokio::test]
async fn hubspot_custom_objects_are_listed_with_their_schema_and_page_like_the_others() {
    let sbx = serve("hubspot.yaml").await;
    for path in ["/crm/v3/schemas", "/crm-object-schemas/v3/schemas"] {
        let (status, body) = get(hubspot_url(&sbx, path), HUBSPOT_TOKEN).await;
        assert_eq!(status, 200, "{body}");
        // Only the portal's own objects are schemas.
        assert_eq!(
            names(&body["results"]),
            BTreeSet::from(["project".to_string()])
        );
        let project = &body["results"][0];
        assert_eq!(project["objectTypeId"], "2-1234567");
        assert_eq!(project["fullyQualifiedName"], "p12345678_project");
        assert_eq!(project["labels"]["plural"], "Projects");
        assert_eq!(project["primaryDisplayProperty"], "project_name");
        assert_eq!(project["archived"], false);
        assert_eq!(
            names(&project["properties"]),
            property_names(&sbx, "projects").await
        );
    }

    // Records at the objectTypeId, in pages, only the named properties.
    let mut ids = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut url = hubspot_url(
            &sbx,
            "/crm/v3/objects/2-1234567?limit=15&properties=project_name,budget",
        );
        if let Some(a) = &after {
            url.push_str(&format!("&after={a}"));
        }
        let (status, page) = get(url, HUBSPOT_TOKEN).await;
        assert_eq!(status, 200, "{page}");
        for r in page["results"].as_array().unwrap() {
            assert_eq!(
                keys(&r["properties"]),
                [
                    "budget",
                    "hs_createdate",
                    "hs_lastmodifieddate",
                    "hs_object_id",
                    "project_name"
                ]
                .map(String::from)
                .into()
            );
            ids.push(r["id"].as_str().unwrap().to_string());
        }
        after = page["paging"]["next"]["after"].as_str().map(String::from);
        if after.is_none() {
            break;
        }
    }
    let want: Vec<String> = records(&sbx, "projects")
        .await
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, want, "every record once, in order");
    assert_eq!(ids.len(), 40);

    // The fully qualified name serves the same records; search too.
    let (_, by_name) = get(
        hubspot_url(&sbx, "/crm/v3/objects/p12345678_project?limit=3"),
        HUBSPOT_TOKEN,
    )
    .await;
    assert_eq!(by_name["results"][0]["id"], want[0].as_str());
    let search = json!({"properties": ["project_status"], "limit": 5,
        "filterGroups": [{"filters": [{"propertyName": "hs_lastmodifieddate", "operator": "GTE", "value": "0"}]}]});
    let (status, page) = post(
        hubspot_url(&sbx, "/crm/v3/objects/2-1234567/search"),
        HUBSPOT_TOKEN,
        &search,
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["total"], 40);
    assert!(page["results"][0]["properties"]["project_status"].is_string());
    assert!(page["results"][0]["properties"].get("budget").is_none());
}

#[tokio::test]
async fn hubspot_custom_values_are_strings_and_opt_in() {
    let sbx = serve("hubspot.yaml").await;
    let describe = get(
        hubspot_url(&sbx, "/crm/v3/properties/2-1234567"),
        HUBSPOT_TOKEN,
    )
    .await
    .1;
    let statuses: BTreeSet<String> = named(&describe["results"], "project_status")["options"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["value"].as_str().unwrap().to_string())
        .collect();
    let url = hubspot_url(&sbx, "/crm/v3/objects/2-1234567?limit=40&properties=budget,start_date,project_status,project_name");
    let (_, page) = get(url, HUBSPOT_TOKEN).await;
    for r in page["results"].as_array().unwrap() {
        let p = &r["properties"];
        for (k, v) in p.as_object().unwrap() {
            assert!(v.is_string(), "every property value is a string: {k} = {v}");
        }
        let budget: f64 = p["budget"].as_str().unwrap().parse().unwrap();
        assert!((1000.0..=250000.0).contains(&budget), "{p}");
        assert!(
            chrono::NaiveDate::parse_from_str(p["start_date"].as_str().unwrap(), "%Y-%m-%d")
                .is_ok()
        );
        assert!(
            statuses.contains(p["project_status"].as_str().unwrap()),
            "{p}"
        );
    }

    // Custom properties of a standard object: only when named.
    let (_, page) = get(
        hubspot_url(&sbx, "/crm/v3/objects/contacts?limit=5"),
        HUBSPOT_TOKEN,
    )
    .await;
    assert!(page["results"][0]["properties"]
        .get("customer_tier")
        .is_none());
    let (_, page) = get(
        hubspot_url(
            &sbx,
            "/crm/v3/objects/contacts?limit=50&properties=customer_tier",
        ),
        HUBSPOT_TOKEN,
    )
    .await;
    let tiers: BTreeSet<&str> = page["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["properties"]["customer_tier"].as_str().unwrap())
        .collect();
    assert!(
        tiers.is_subset(&BTreeSet::from(["gold", "silver", "bronze"])),
        "{tiers:?}"
    );
    assert!(tiers.len() > 1, "values vary by record: {tiers:?}");
}

#[tokio::test]
async fn salesforce_describe_global_and_describe_list_the_objects_and_their_fields() {
    let sbx = serve("salesforce.yaml").await;
    let (status, global) = get(
        format!("{}/services/data/v62.0/sobjects", sbx.base_url()),
        SALESFORCE_TOKEN,
    )
    .await;
    assert_eq!(status, 200, "{global}");
    assert_eq!(global["encoding"], "UTF-8");
    assert!(global["maxBatchSize"].is_number());
    let sobjects = &global["sobjects"];
    assert_eq!(
        names(sobjects),
        ["Account", "Contact", "Opportunity", "Project__c"]
            .map(String::from)
            .into()
    );
    let custom: Vec<&Value> = sobjects
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["custom"] == true)
        .collect();
    assert_eq!(custom.len(), 1);
    assert_eq!(custom[0]["name"], "Project__c");
    assert_eq!(named(sobjects, "Contact")["queryable"], true);

    for (object, resource) in [
        ("Contact", "contacts"),
        ("Account", "accounts"),
        ("Opportunity", "opportunities"),
        ("Project__c", "projects"),
    ] {
        let url = named(sobjects, object)["urls"]["describe"]
            .as_str()
            .unwrap()
            .to_string();
        let (status, d) = get(format!("{}{url}", sbx.base_url()), SALESFORCE_TOKEN).await;
        assert_eq!(status, 200, "{object}: {d}");
        assert_eq!(d["name"], object);
        assert_eq!(d["custom"], object.ends_with("__c"));
        // Exactly the fields the records have (attributes is not a field).
        let mut record_fields = BTreeSet::new();
        for r in records(&sbx, resource).await {
            record_fields.extend(keys(&r));
        }
        record_fields.remove("attributes");
        assert_eq!(names(&d["fields"]), record_fields, "{object}");
        for f in d["fields"].as_array().unwrap() {
            let name = f["name"].as_str().unwrap();
            assert_eq!(f["custom"], name.ends_with("__c"), "{object}.{name}");
            for key in [
                "label",
                "type",
                "nillable",
                "picklistValues",
                "soapType",
                "length",
            ] {
                assert!(f.get(key).is_some(), "{object}.{name}: {key} missing");
            }
        }
    }

    // Names compare without case; picklists carry their values.
    let (status, d) = get(
        format!(
            "{}/services/data/v62.0/sobjects/contact/describe",
            sbx.base_url()
        ),
        SALESFORCE_TOKEN,
    )
    .await;
    assert_eq!(status, 200);
    let region = named(&d["fields"], "Region__c");
    assert_eq!(region["type"], "picklist");
    let values: Vec<&Value> = region["picklistValues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| &v["value"])
        .collect();
    assert_eq!(values, [&json!("EMEA"), &json!("AMER"), &json!("APAC")]);
    assert_eq!(named(&d["fields"], "Tier__c")["type"], "double");
    assert_eq!(named(&d["fields"], "Id")["nillable"], false);
    assert_eq!(
        named(&d["fields"], "AccountId")["referenceTo"],
        json!(["Account"])
    );

    let (status, body) = get(
        format!(
            "{}/services/data/v62.0/sobjects/Widget__c/describe",
            sbx.base_url()
        ),
        SALESFORCE_TOKEN,
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(
        body,
        json!([{"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}])
    );
}

#[tokio::test]
async fn salesforce_custom_values_are_json_typed_and_only_selected_ones_return() {
    let sbx = serve("salesforce.yaml").await;
    let (status, page) = get(
        soql(&sbx, "SELECT Id, Region__c, Tier__c FROM Contact"),
        SALESFORCE_TOKEN,
    )
    .await;
    assert_eq!(status, 200, "{page}");
    for r in page["records"].as_array().unwrap() {
        assert_eq!(
            keys(r),
            ["attributes", "Id", "Region__c", "Tier__c"]
                .map(String::from)
                .into()
        );
        assert!(
            ["EMEA", "AMER", "APAC"].contains(&r["Region__c"].as_str().unwrap()),
            "{r}"
        );
        let tier = r["Tier__c"]
            .as_f64()
            .unwrap_or_else(|| panic!("a number: {r}"));
        assert!((1.0..=5.0).contains(&tier));
    }
    // Not selected, not returned.
    let (_, page) = get(
        soql(&sbx, "SELECT Id, Email FROM Contact"),
        SALESFORCE_TOKEN,
    )
    .await;
    assert!(page["records"][0].get("Region__c").is_none());

    // The custom object through the query endpoint, with its locator's paging.
    let (status, page) = get(
        soql(
            &sbx,
            "SELECT Id, Name, Status__c, Budget__c, CreatedDate FROM Project__c",
        ),
        SALESFORCE_TOKEN,
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(
        (page["totalSize"].clone(), page["done"].clone()),
        (json!(30), json!(true))
    );
    for r in page["records"].as_array().unwrap() {
        assert_eq!(r["attributes"]["type"], "Project__c");
        assert!(r["Id"].as_str().unwrap().starts_with("a01"));
        assert!(["Planned", "Active", "On Hold", "Completed"]
            .contains(&r["Status__c"].as_str().unwrap()));
        assert!(
            r["Budget__c"]
                .as_f64()
                .is_some_and(|b| (1000.0..=250000.0).contains(&b)),
            "{r}"
        );
        assert!(r.get("LastModifiedDate").is_none());
    }
    let (status, _) = control(
        &sbx,
        reqwest::Method::POST,
        "resources/projects/mutate",
        Some(json!({"create": 200})),
    )
    .await;
    assert_eq!(status, 200);
    let (_, first) = get(
        soql(&sbx, "SELECT Id, Budget__c FROM Project__c"),
        SALESFORCE_TOKEN,
    )
    .await;
    assert_eq!(
        (first["totalSize"].clone(), first["done"].clone()),
        (json!(230), json!(false))
    );
    let next = first["nextRecordsUrl"].as_str().unwrap();
    let (status, second) = get(format!("{}{next}", sbx.base_url()), SALESFORCE_TOKEN).await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["records"].as_array().unwrap().len(), 30);
    assert_eq!(
        keys(&second["records"][0]),
        ["attributes", "Id", "Budget__c"].map(String::from).into()
    );

    // A field the custom object does not have.
    let (status, body) = get(
        soql(&sbx, "SELECT Id, Region__c FROM Project__c"),
        SALESFORCE_TOKEN,
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body[0]["errorCode"], "INVALID_FIELD");
    assert!(
        body[0]["message"].as_str().unwrap().contains("Project__c"),
        "{body}"
    );

    // An object the org does not have.
    let (status, body) = get(soql(&sbx, "SELECT Id FROM Widget__c"), SALESFORCE_TOKEN).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body[0]["errorCode"], "INVALID_TYPE");
    assert!(
        body[0]["message"].as_str().unwrap().contains("Widget__c"),
        "{body}"
    );
}

#[tokio::test]
async fn generated_values_depend_on_the_seed_and_record_only() {
    let a = serve("salesforce.yaml").await;
    let b = serve("salesforce.yaml").await;
    let q = "SELECT Id, Region__c, Tier__c, Favorite_Color__c FROM Contact";
    let (_, pa) = get(soql(&a, q), SALESFORCE_TOKEN).await;
    let (_, pb) = get(soql(&b, q), SALESFORCE_TOKEN).await;
    assert_eq!(pa["records"], pb["records"]);
    let c = serve_with("salesforce.yaml", |p| p.seed = 7).await;
    let (_, pc) = get(soql(&c, q), SALESFORCE_TOKEN).await;
    assert_ne!(pa["records"], pc["records"]);
}
