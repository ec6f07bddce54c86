//! Change detection: a fingerprint per unified record, compared with the stored
//! one: new => created, different => updated (with the changed fields), same => nothing.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::domain::StoredFingerprint;

/// Hash of a JSON value that does not depend on key order.
fn feed(h: &mut Sha256, v: &Value) {
    match v {
        Value::Null => h.update(b"n"),
        Value::Bool(b) => h.update(if *b { b"t" } else { b"f" }),
        Value::Number(n) => {
            h.update(b"#");
            h.update(n.to_string().as_bytes());
        }
        Value::String(s) => {
            h.update(b"s");
            h.update((s.len() as u64).to_le_bytes());
            h.update(s.as_bytes());
        }
        Value::Array(items) => {
            h.update(b"[");
            h.update((items.len() as u64).to_le_bytes());
            items.iter().for_each(|i| feed(h, i));
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            h.update(b"{");
            h.update((keys.len() as u64).to_le_bytes());
            for k in keys {
                h.update((k.len() as u64).to_le_bytes());
                h.update(k.as_bytes());
                feed(h, &map[k]);
            }
        }
    }
}

fn short_hash(v: &Value) -> String {
    let mut h = Sha256::new();
    feed(&mut h, v);
    hex::encode(&h.finalize()[..12])
}

/// The fingerprint of a unified record: its fields and custom fields (not the raw
/// provider record, whose volatile parts would look like changes).
pub fn fingerprint(
    record_id: &str,
    data: &Map<String, Value>,
    custom_fields: &Map<String, Value>,
) -> StoredFingerprint {
    let mut field_hashes = BTreeMap::new();
    for (k, v) in data {
        field_hashes.insert(k.clone(), short_hash(v));
    }
    for (k, v) in custom_fields {
        field_hashes.insert(format!("custom_fields.{k}"), short_hash(v));
    }
    let mut h = Sha256::new();
    for (k, v) in &field_hashes {
        h.update(k.as_bytes());
        h.update(b"=");
        h.update(v.as_bytes());
        h.update(b";");
    }
    StoredFingerprint {
        record_id: record_id.to_string(),
        hash: hex::encode(&h.finalize()[..16]),
        field_hashes,
    }
}

/// What happened to one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Created,
    Updated { changed_fields: Vec<String> },
    Unchanged,
}

pub fn classify(new: &StoredFingerprint, old: Option<&StoredFingerprint>) -> Change {
    let Some(old) = old else {
        return Change::Created;
    };
    if old.hash == new.hash {
        return Change::Unchanged;
    }
    let mut changed: Vec<String> = new
        .field_hashes
        .iter()
        .filter(|(k, v)| old.field_hashes.get(*k) != Some(*v))
        .map(|(k, _)| k.clone())
        .collect();
    changed.extend(
        old.field_hashes
            .keys()
            .filter(|k| !new.field_hashes.contains_key(*k))
            .cloned(),
    );
    changed.sort();
    Change::Updated {
        changed_fields: changed,
    }
}

/// Index stored fingerprints by record id.
pub fn by_id(stored: Vec<StoredFingerprint>) -> HashMap<String, StoredFingerprint> {
    stored
        .into_iter()
        .map(|f| (f.record_id.clone(), f))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn key_order_does_not_matter_and_changes_are_named() {
        let a = fingerprint(
            "1",
            &obj(json!({"id": "1", "first_name": "Ada", "title": "Eng"})),
            &Map::new(),
        );
        let b = fingerprint(
            "1",
            &obj(json!({"title": "Eng", "first_name": "Ada", "id": "1"})),
            &Map::new(),
        );
        assert_eq!(a, b);
        assert_eq!(classify(&b, Some(&a)), Change::Unchanged);
        assert_eq!(classify(&a, None), Change::Created);
        let c = fingerprint(
            "1",
            &obj(json!({"id": "1", "first_name": "Ada", "phones": []})),
            &obj(json!({"tier": "gold"})),
        );
        assert_eq!(
            classify(&c, Some(&a)),
            Change::Updated {
                changed_fields: vec!["custom_fields.tier".into(), "phones".into(), "title".into()]
            }
        );
    }
}
