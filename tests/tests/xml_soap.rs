//! The engine against a SOAP-style sandbox over loopback: XML request bodies with
//! escaped values, XML answers decoded and paged, malformed pages and SOAP faults as
//! errors naming spec, resource and page, an authentication fault as refused credentials.

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{json, Value};
use tributary::engine::{ignore_events, Connection, EngineError, ErrorKind, RunOptions};
use tributary::spec::{load_spec, CompiledSpec};
use tributary_e2e::engine::read_resource;
use tributary_sandbox::{self as sandbox, Profile, SandboxHandle};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name)
}

async fn setup(key: &str) -> (Arc<CompiledSpec>, SandboxHandle, Connection) {
    let spec = load_spec(&fixture("soap.spec.yaml")).unwrap();
    let sbx = sandbox::start(
        Profile::load(&fixture("soap.sandbox.yaml")).unwrap(),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let connection = Connection {
        // Markup characters in a setting: the envelope must escape them to stay XML.
        config: json!({"base_url": sbx.base_url(), "region": "R&D <eu>"})
            .as_object()
            .unwrap()
            .clone(),
        credentials: serde_json::from_value(json!({"api_key": key})).unwrap(),
    };
    (spec, sbx, connection)
}

fn options() -> RunOptions {
    RunOptions {
        allow_private_hosts: true,
        retry_base: std::time::Duration::from_millis(10),
        ..RunOptions::default()
    }
}

async fn read(
    spec: &Arc<CompiledSpec>,
    connection: &Connection,
) -> (Vec<Value>, usize, Option<EngineError>) {
    read_resource(spec, connection, "items", options(), ignore_events()).await
}

/// The sandbox's own records, as JSON (ids as the XML carries them: text).
async fn sandbox_records(sbx: &SandboxHandle) -> Vec<Value> {
    let listing: Value = reqwest::get(format!("{}/_sandbox/resources/items", sbx.base_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    listing["records"].as_array().unwrap().clone()
}

async fn fault(sbx: &SandboxHandle, fault: Value) {
    let resp = reqwest::Client::new()
        .post(format!("{}/_sandbox/faults", sbx.base_url()))
        .json(&json!([fault]))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.text().await.unwrap());
}

#[tokio::test]
async fn every_record_of_an_xml_soap_resource_is_read_once_in_order() {
    let (spec, sbx, connection) = setup("soap-key").await;
    let (records, pages, err) = read(&spec, &connection).await;
    assert!(err.is_none(), "{err:?}");
    let expected = sandbox_records(&sbx).await;
    assert_eq!(expected.len(), 12);
    let ids: Vec<String> = records
        .iter()
        .map(|r| r["@id"].as_str().expect("ids are text").to_string())
        .collect();
    let want: Vec<String> = expected
        .iter()
        .map(|r| r["@id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, want);
    // 5 + 5 + 2 records; names with markup characters come back unescaped.
    assert_eq!(pages, 3);
    assert_eq!(records[0]["Name"], expected[0]["Name"]);
    assert!(records[0]["Name"].as_str().unwrap().contains(" & Co <"));
}

#[tokio::test]
async fn a_page_of_one_record_is_still_a_list() {
    let (spec, _sbx, connection) = setup("soap-key").await;
    let opts = RunOptions {
        page_size: Some(11),
        ..options()
    };
    let (records, pages, err) =
        read_resource(&spec, &connection, "items", opts, ignore_events()).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!((records.len(), pages), (12, 2));
    assert!(records[11].is_object(), "{}", records[11]);
}

#[tokio::test]
async fn a_malformed_xml_page_stops_with_an_error_naming_spec_resource_and_page() {
    let (spec, sbx, connection) = setup("soap-key").await;
    fault(&sbx, json!({"kind": "malformed_xml", "page": 2})).await;
    let (records, _, err) = read(&spec, &connection).await;
    let err = err.expect("the page is refused");
    assert!(matches!(*err.kind, ErrorKind::NotXml { .. }), "{err}");
    assert_eq!(err.page, 2);
    assert_eq!(records.len(), 5, "the first page is delivered");
    let text = err.to_string();
    assert!(
        text.contains("soap.spec.yaml resource `items`, page 2")
            && text.contains("not well-formed XML"),
        "{text}"
    );
}

#[tokio::test]
async fn a_soap_fault_stops_with_its_fault_string() {
    let (spec, sbx, connection) = setup("soap-key").await;
    let body = json!({"soap:Envelope": {
        "@xmlns:soap": "http://schemas.xmlsoap.org/soap/envelope/",
        "soap:Body": {"soap:Fault": {
            "faultcode": "soap:Server.Processing",
            "faultstring": "Page 2 is being rebuilt; try later"
        }}
    }});
    fault(&sbx, json!({"kind": "xml", "page": 2, "body": body})).await;
    let (records, _, err) = read(&spec, &connection).await;
    let err = err.expect("the fault stops the run");
    match &*err.kind {
        ErrorKind::SoapFault {
            status,
            code,
            message,
            ..
        } => {
            assert_eq!(*status, 500);
            assert_eq!(code.as_deref(), Some("soap:Server.Processing"));
            assert_eq!(message, "Page 2 is being rebuilt; try later");
        }
        other => panic!("not a SOAP fault: {other}"),
    }
    assert!(!err.kind.needs_reauth());
    assert_eq!((err.page, records.len()), (2, 5));
    assert!(
        err.to_string()
            .contains("soap.spec.yaml resource `items`, page 2"),
        "{err}"
    );
}

#[tokio::test]
async fn an_authentication_fault_means_refused_credentials() {
    let (spec, _sbx, connection) = setup("a-revoked-key").await;
    let (records, _, err) = read(&spec, &connection).await;
    let err = err.expect("the credentials are refused");
    assert!(
        matches!(*err.kind, ErrorKind::Unauthorized { status: 500, .. }),
        "{err}"
    );
    assert!(err.kind.needs_reauth());
    assert!(records.is_empty());
    assert!(
        err.to_string()
            .contains("Invalid credentials: the API key was refused"),
        "{err}"
    );
}
