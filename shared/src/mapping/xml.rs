//! XML answers as the JSON tree the records path, pagination and JSONata read, the
//! inverse (a JSON tree written as XML, for the sandbox), and SOAP faults.
//!
//! The convention, deterministic for a given document:
//! - the document is an object with one key, the root element's name;
//! - an element's key is its local name (namespace prefixes dropped). Siblings with the
//!   same local name, whatever their namespaces, are one repeated element: an array in
//!   document order;
//! - attributes are `@name` (local name; `xmlns` declarations are left out; of two
//!   attributes with one local name the later replaces the earlier);
//! - an element with neither attributes nor children is its text (an empty element is
//!   `""`); otherwise it is an object, its text (trimmed, empty left out) under `#text`;
//! - text, CDATA and entity references are one text; numbers stay strings (XML has no
//!   types: mappings convert);
//! - `arrays` names elements (by local name) that are always arrays, so a page of one
//!   record is still a list.

use std::collections::HashSet;

use quick_xml::events::{BytesStart, BytesText, Event};
use quick_xml::Reader;
use serde_json::{Map, Value};

/// Why a body is not XML this decoder reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (at byte {position})")]
pub struct XmlError {
    pub message: String,
    pub position: u64,
}

/// An element being read: its attributes, its children so far, its text.
struct Node {
    name: String,
    fields: Map<String, Value>,
    /// Children whose key holds an array made here (repeated or forced).
    arrays: HashSet<String>,
    has_children: bool,
    text: String,
}

impl Node {
    fn open(e: &BytesStart) -> Result<Node, String> {
        let mut fields = Map::new();
        for attr in e.attributes() {
            let attr = attr.map_err(|e| e.to_string())?;
            let key = attr.key;
            if key.as_ref() == b"xmlns" || key.prefix().is_some_and(|p| p.as_ref() == b"xmlns") {
                continue;
            }
            let name = String::from_utf8_lossy(key.local_name().as_ref()).into_owned();
            let value = attr.unescape_value().map_err(|e| e.to_string())?;
            fields.insert(format!("@{name}"), Value::String(value.into_owned()));
        }
        Ok(Node {
            name: String::from_utf8_lossy(e.local_name().as_ref()).into_owned(),
            fields,
            arrays: HashSet::new(),
            has_children: false,
            text: String::new(),
        })
    }

    fn add_child(&mut self, name: String, value: Value, forced: &HashSet<String>) {
        self.has_children = true;
        match self.fields.get_mut(&name) {
            Some(Value::Array(items)) if self.arrays.contains(&name) => items.push(value),
            Some(existing) => {
                let first = existing.take();
                *existing = Value::Array(vec![first, value]);
                self.arrays.insert(name);
            }
            None if forced.contains(&name) => {
                self.fields.insert(name.clone(), Value::Array(vec![value]));
                self.arrays.insert(name);
            }
            None => {
                self.fields.insert(name, value);
            }
        }
    }

    fn close(self) -> (String, Value) {
        if self.fields.is_empty() {
            return (self.name, Value::String(self.text));
        }
        let mut fields = self.fields;
        // Between child elements, text is mostly indentation.
        let text = if self.has_children {
            self.text.trim()
        } else {
            self.text.as_str()
        };
        if !text.is_empty() {
            fields.insert("#text".into(), Value::String(text.to_string()));
        }
        (self.name, Value::Object(fields))
    }
}

/// Decode an XML document into the tree described in the module docs.
pub fn decode(bytes: &[u8], arrays: &HashSet<String>) -> Result<Value, XmlError> {
    let mut reader = Reader::from_reader(bytes);
    let mut stack: Vec<Node> = Vec::new();
    let mut root: Option<(String, Value)> = None;
    let mut buf = Vec::new();
    let fail = |reader: &Reader<&[u8]>, message: String| XmlError {
        message,
        position: reader.error_position(),
    };
    loop {
        let event = reader
            .read_event_into(&mut buf)
            .map_err(|e| fail(&reader, e.to_string()))?;
        match event {
            Event::Start(e) => stack.push(Node::open(&e).map_err(|m| fail(&reader, m))?),
            Event::Empty(e) => {
                let node = Node::open(&e).map_err(|m| fail(&reader, m))?;
                attach(&mut stack, &mut root, node.close(), arrays);
            }
            Event::End(_) => {
                let node = stack.pop().expect("the reader checks end tags");
                attach(&mut stack, &mut root, node.close(), arrays);
            }
            Event::Text(t) => push_text(&mut stack, &t).map_err(|m| fail(&reader, m))?,
            Event::CData(t) => {
                let text = t.decode().map_err(|e| fail(&reader, e.to_string()))?;
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&text);
                }
            }
            Event::GeneralRef(r) => {
                let text = entity(&r).map_err(|m| fail(&reader, m))?;
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&text);
                }
            }
            Event::Eof => break,
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) | Event::DocType(_) => {}
        }
        buf.clear();
    }
    if let Some(open) = stack.last() {
        return Err(fail(
            &reader,
            format!("the document ends inside `<{}>`", open.name),
        ));
    }
    match root {
        Some((name, value)) => Ok(Value::Object(Map::from_iter([(name, value)]))),
        None => Err(fail(&reader, "no root element".into())),
    }
}

fn attach(
    stack: &mut [Node],
    root: &mut Option<(String, Value)>,
    (name, value): (String, Value),
    arrays: &HashSet<String>,
) {
    match stack.last_mut() {
        Some(parent) => parent.add_child(name, value, arrays),
        None => *root = Some((name, value)),
    }
}

fn push_text(stack: &mut [Node], t: &BytesText) -> Result<(), String> {
    let text = t.xml_content().map_err(|e| e.to_string())?;
    match stack.last_mut() {
        Some(top) => top.text.push_str(&text),
        None if text.trim().is_empty() => {}
        None => return Err("text outside the root element".into()),
    }
    Ok(())
}

/// A character reference or one of XML's predefined entities.
fn entity(r: &quick_xml::events::BytesRef) -> Result<String, String> {
    if let Some(c) = r.resolve_char_ref().map_err(|e| e.to_string())? {
        return Ok(c.to_string());
    }
    let name = r.decode().map_err(|e| e.to_string())?;
    quick_xml::escape::resolve_predefined_entity(&name)
        .map(str::to_string)
        .ok_or_else(|| format!("unknown entity `&{name};`"))
}

/// Text escaped for XML content and attribute values.
pub fn escape(text: &str) -> String {
    quick_xml::escape::escape(text).into_owned()
}

/// A JSON tree written as XML by the inverse of the convention: the one key of `doc` is
/// the root; keys are element names as given (prefixes kept, so a tree can carry its
/// own `@xmlns:...` declarations), `@name` attributes, `#text` text, arrays repeated
/// elements, `null` an empty element, other scalars text.
pub fn encode(doc: &Value) -> Result<String, String> {
    let (name, value) = match doc.as_object() {
        Some(map) if map.len() == 1 => map.iter().next().expect("one key"),
        _ => return Err("an XML document is an object with exactly one key (the root)".into()),
    };
    let mut writer = quick_xml::Writer::new(Vec::new());
    writer
        .write_event(Event::Decl(quick_xml::events::BytesDecl::new(
            "1.0",
            Some("UTF-8"),
            None,
        )))
        .map_err(|e| e.to_string())?;
    write_element(&mut writer, name, value)?;
    String::from_utf8(writer.into_inner()).map_err(|e| e.to_string())
}

fn write_element(
    w: &mut quick_xml::Writer<Vec<u8>>,
    name: &str,
    value: &Value,
) -> Result<(), String> {
    let io = |e: std::io::Error| e.to_string();
    match value {
        Value::Array(items) => {
            for item in items {
                write_element(w, name, item)?;
            }
            Ok(())
        }
        Value::Null => w
            .write_event(Event::Empty(BytesStart::new(name)))
            .map_err(io),
        Value::Object(map) => {
            let mut start = BytesStart::new(name);
            for (k, v) in map {
                if let Some(attr) = k.strip_prefix('@') {
                    start.push_attribute((attr, scalar_text(v).as_str()));
                }
            }
            w.write_event(Event::Start(start)).map_err(io)?;
            for (k, v) in map {
                if k == "#text" {
                    let text = scalar_text(v);
                    w.write_event(Event::Text(BytesText::new(&text)))
                        .map_err(io)?;
                } else if !k.starts_with('@') {
                    write_element(w, k, v)?;
                }
            }
            w.write_event(Event::End(quick_xml::events::BytesEnd::new(name)))
                .map_err(io)
        }
        scalar => {
            let text = scalar_text(scalar);
            w.write_event(Event::Start(BytesStart::new(name)))
                .map_err(io)?;
            w.write_event(Event::Text(BytesText::new(&text)))
                .map_err(io)?;
            w.write_event(Event::End(quick_xml::events::BytesEnd::new(name)))
                .map_err(io)
        }
    }
}

fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// A SOAP fault read from a decoded answer.
#[derive(Debug, Clone, PartialEq)]
pub struct SoapFault {
    /// `faultcode` (SOAP 1.1) or `Code/Value` (SOAP 1.2), when given.
    pub code: Option<String>,
    /// `faultstring` (SOAP 1.1) or `Reason/Text` (SOAP 1.2; the first when several).
    pub message: String,
    /// The decoded `Fault` element, for a spec's predicates.
    pub fault: Value,
}

/// The fault of a decoded `Envelope/Body/Fault`, if the answer is one.
pub fn soap_fault(doc: &Value) -> Option<SoapFault> {
    let fault = doc.get("Envelope")?.get("Body")?.get("Fault")?;
    let message = fault
        .get("faultstring")
        .or_else(|| fault.get("Reason").and_then(|r| r.get("Text")))
        .map(text_of)
        .unwrap_or_default();
    let code = fault
        .get("faultcode")
        .or_else(|| fault.get("Code").and_then(|c| c.get("Value")))
        .map(text_of)
        .filter(|c| !c.is_empty());
    Some(SoapFault {
        code,
        message,
        fault: fault.clone(),
    })
}

/// An element's text whichever shape it decoded to (text, with attributes, repeated).
fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.trim().to_string(),
        Value::Array(items) => items.first().map(text_of).unwrap_or_default(),
        Value::Object(map) => map.get("#text").map(text_of).unwrap_or_default(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read(xml: &str, arrays: &[&str]) -> Value {
        let arrays = arrays.iter().map(|s| s.to_string()).collect();
        decode(xml.as_bytes(), &arrays).unwrap()
    }

    #[test]
    fn namespace_prefixes_are_dropped_and_declarations_left_out() {
        let doc = read(
            r#"<?xml version="1.0"?>
            <soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/" xmlns:w="urn:w">
              <soap:Body><w:Get_Workers_Response><w:Count>2</w:Count></w:Get_Workers_Response></soap:Body>
            </soap:Envelope>"#,
            &[],
        );
        assert_eq!(
            doc,
            json!({"Envelope": {"Body": {"Get_Workers_Response": {"Count": "2"}}}})
        );
    }

    #[test]
    fn attributes_text_and_empty_elements() {
        let doc = read(
            r#"<r><Amount currency="USD">12.50</Amount><Id w:type="WID" xmlns:w="urn:w">a1</Id><Note/><Blank></Blank></r>"#,
            &[],
        );
        assert_eq!(
            doc["r"],
            json!({
                "Amount": {"@currency": "USD", "#text": "12.50"},
                "Id": {"@type": "WID", "#text": "a1"},
                "Note": "",
                "Blank": ""
            })
        );
    }

    #[test]
    fn mixed_content_keeps_trimmed_text_beside_children() {
        let doc = read("<p>\n  hello <b>x</b>\n</p>", &[]);
        assert_eq!(doc["p"], json!({"b": "x", "#text": "hello"}));
    }

    #[test]
    fn repeated_siblings_become_an_array_in_order() {
        let doc = read(
            "<l><Item>1</Item><Other>o</Other><Item>2</Item><Item>3</Item></l>",
            &[],
        );
        assert_eq!(doc["l"]["Item"], json!(["1", "2", "3"]));
        assert_eq!(doc["l"]["Other"], json!("o"));
    }

    #[test]
    fn forced_arrays_hold_a_single_element_as_a_list() {
        let doc = read("<l><Item><id>1</id></Item><Other>o</Other></l>", &["Item"]);
        assert_eq!(doc["l"]["Item"], json!([{"id": "1"}]));
        assert_eq!(doc["l"]["Other"], json!("o"));
        let two = read("<l><Item>1</Item><Item>2</Item></l>", &["Item"]);
        assert_eq!(two["l"]["Item"], json!(["1", "2"]));
    }

    #[test]
    fn cdata_entities_and_character_references_are_text() {
        let doc = read(
            "<r><a>Tom &amp; Jerry &lt;3 &#65;&#x42;</a><b><![CDATA[<not> & markup]]></b></r>",
            &[],
        );
        assert_eq!(doc["r"]["a"], json!("Tom & Jerry <3 AB"));
        assert_eq!(doc["r"]["b"], json!("<not> & markup"));
    }

    #[test]
    fn a_utf8_byte_order_mark_and_a_doctype_are_skipped() {
        let doc = read(
            "\u{feff}<?xml version=\"1.0\"?><!DOCTYPE r><r><a>1</a></r>",
            &[],
        );
        assert_eq!(doc, json!({"r": {"a": "1"}}));
    }

    #[test]
    fn malformed_documents_are_errors() {
        let none = HashSet::new();
        for bad in [
            "<a><b></a>",
            "<a>",
            "",
            "{\"json\": true}",
            "<a>&bogus;</a>",
            // Entities a DTD declares are not expanded (nor fetched).
            "<!DOCTYPE a [<!ENTITY x \"y\">]><a>&x;</a>",
            "<a x=\"1\" x=\"2\"/>",
        ] {
            let err = decode(bad.as_bytes(), &none).unwrap_err();
            assert!(!err.message.is_empty(), "{bad}: {err}");
        }
    }

    #[test]
    fn encode_is_the_inverse_of_decode() {
        let tree = json!({"soap:Envelope": {
            "@xmlns:soap": "http://schemas.xmlsoap.org/soap/envelope/",
            "soap:Body": {"Page": {
                "Item": [{"@kind": "a", "id": "1", "name": "R&D <x>"}, {"id": "2", "name": null}],
                "Total": 2,
                "Amount": {"@currency": "EUR", "#text": "3.5"}
            }}
        }});
        let xml = encode(&tree).unwrap();
        let back = read(&xml, &[]);
        assert_eq!(
            back,
            json!({"Envelope": {"Body": {"Page": {
                "Item": [{"@kind": "a", "id": "1", "name": "R&D <x>"}, {"id": "2", "name": ""}],
                "Total": "2",
                "Amount": {"@currency": "EUR", "#text": "3.5"}
            }}}})
        );
        assert!(encode(&json!({"a": 1, "b": 2})).is_err());
    }

    #[test]
    fn soap_1_1_and_1_2_faults_are_read() {
        let v11 = read(
            r#"<s:Envelope xmlns:s="urn:s"><s:Body><s:Fault><faultcode>s:Client.Auth</faultcode><faultstring>Invalid username or password</faultstring></s:Fault></s:Body></s:Envelope>"#,
            &[],
        );
        let f = soap_fault(&v11).unwrap();
        assert_eq!(f.message, "Invalid username or password");
        assert_eq!(f.code.as_deref(), Some("s:Client.Auth"));
        let v12 = read(
            r#"<env:Envelope xmlns:env="urn:e"><env:Body><env:Fault><env:Code><env:Value>env:Sender</env:Value></env:Code><env:Reason><env:Text xml:lang="en">Bad page</env:Text></env:Reason></env:Fault></env:Body></env:Envelope>"#,
            &[],
        );
        let f = soap_fault(&v12).unwrap();
        assert_eq!(
            (f.message.as_str(), f.code.as_deref()),
            ("Bad page", Some("env:Sender"))
        );
        assert_eq!(
            soap_fault(&read("<Envelope><Body><Ok/></Body></Envelope>", &[])),
            None
        );
    }

    #[test]
    fn escape_covers_markup_and_quotes() {
        assert_eq!(
            escape(r#"a<b>&"c"'d'"#),
            "a&lt;b&gt;&amp;&quot;c&quot;&apos;d&apos;"
        );
    }
}
