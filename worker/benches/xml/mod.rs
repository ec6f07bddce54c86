//! The throughput bench's XML part: SOAP pages as the sandbox answers them, decoded and
//! mapped by the engine, beside parsing the same pages alone (quick-xml's reader walking
//! every event, and the engine's decoding into its tree), best of three each.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use quick_xml::events::Event;
use quick_xml::Reader;
use tributary::mapping::normalize::{normalize, primary_key};
use tributary::mapping::xml;
use tributary::spec::load_spec;
use tributary_sandbox::{self as sandbox, Profile};

use super::common::{rate, PAGE};

/// The generic SOAP fixture (tests/fixtures/soap.*): a POSTed envelope names the page.
const SPEC: &str = "tests/fixtures/soap.spec.yaml";
const PROFILE: &str = "tests/fixtures/soap.sandbox.yaml";

pub async fn xml_pages(records: u64) {
    let root = tributary_e2e::repo_root();
    let mut profile = Profile::load(&root.join(PROFILE)).unwrap();
    profile.rate_limit = None;
    profile.resources.get_mut("items").unwrap().count = records;
    let sbx = sandbox::start(profile, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let pages = fetch(&sbx.base_url(), records).await;
    let n = records as usize;
    let bytes: usize = pages.iter().map(Vec::len).sum();
    println!(
        "xml: {n} records in {} SOAP pages of {PAGE} ({:.0} KiB each on average), from the sandbox",
        pages.len(),
        bytes as f64 / pages.len() as f64 / 1024.0
    );
    let spec = load_spec(&root.join(SPEC)).unwrap();
    let resource = spec.resource("items").unwrap();
    let arrays: HashSet<String> = resource.response.arrays.clone();
    let scan = best_of_3(|| assert_eq!(scan_items(&pages), n));
    let decode = best_of_3(|| {
        let count: usize = pages
            .iter()
            .map(|p| items(&mut xml::decode(p, &arrays).unwrap()).len())
            .sum();
        assert_eq!(count, n);
    });
    let pk = &resource.full.records.primary_key;
    let mapped = best_of_3(|| {
        let mut count = 0;
        for p in &pages {
            for raw in items(&mut xml::decode(p, &arrays).unwrap()) {
                let id = primary_key(&raw, pk).unwrap();
                count += normalize(resource, id, raw).unwrap().data.len().min(1);
            }
        }
        assert_eq!(count, n);
    });
    println!("xml (best of 3):");
    println!(
        "  baseline  quick-xml reader over every event:    {:>12.0} records/s",
        rate(n, scan)
    );
    println!(
        "  decode into the engine's tree:                 {:>12.0} records/s  ({:.2}x the baseline's time)",
        rate(n, decode),
        decode.as_secs_f64() / scan.as_secs_f64()
    );
    println!(
        "  decode + map + schema check:                   {:>12.0} records/s  ({:.2}x the baseline's time)",
        rate(n, mapped),
        mapped.as_secs_f64() / scan.as_secs_f64()
    );
}

/// Every page, as the spec's request would ask for it.
async fn fetch(base: &str, records: u64) -> Vec<Vec<u8>> {
    let http = reqwest::Client::new();
    let mut pages = Vec::new();
    for page in 1..=records.div_ceil(PAGE as u64) {
        let envelope = format!(
            r#"<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:w="urn:example:items"><soapenv:Body><w:Get_Items><w:Region>R&amp;D &lt;eu&gt;</w:Region><w:Page>{page}</w:Page><w:Count>{PAGE}</w:Count></w:Get_Items></soapenv:Body></soapenv:Envelope>"#
        );
        let answer = http
            .post(format!("{base}/soap/items"))
            .header("x-api-key", "soap-key")
            .header("SOAPAction", "\"urn:example:items#Get_Items\"")
            .header("Content-Type", "text/xml; charset=utf-8")
            .body(envelope)
            .send()
            .await
            .unwrap();
        assert!(
            answer.status().is_success(),
            "page {page}: {}",
            answer.status()
        );
        pages.push(answer.bytes().await.unwrap().to_vec());
    }
    pages
}

/// The records of a decoded page, moved out of it.
fn items(doc: &mut serde_json::Value) -> Vec<serde_json::Value> {
    match doc["Envelope"]["Body"]["Get_Items_Response"]["Item"].take() {
        serde_json::Value::Array(items) => items,
        other => panic!("no items: {other}"),
    }
}

/// Parsing alone: every event of every page read, the `Item` starts counted.
fn scan_items(pages: &[Vec<u8>]) -> usize {
    let mut count = 0;
    let mut buf = Vec::new();
    for p in pages {
        let mut reader = Reader::from_reader(p.as_slice());
        loop {
            match reader.read_event_into(&mut buf).unwrap() {
                Event::Start(e) if e.local_name().as_ref() == b"Item" => count += 1,
                Event::Eof => break,
                _ => {}
            }
            buf.clear();
        }
    }
    count
}

fn best_of_3(mut f: impl FnMut()) -> Duration {
    (0..3)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .min()
        .unwrap()
}
