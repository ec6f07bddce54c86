//! Change detection: a fingerprint per unified record, compared with the stored
//! one: new => created, different => updated (with the changed fields), same => nothing.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;

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
            // The number's text, written into the hash without a string in between.
            let _ = write!(Feed(h), "{n}");
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
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            h.update(b"{");
            h.update((entries.len() as u64).to_le_bytes());
            for (k, v) in entries {
                h.update((k.len() as u64).to_le_bytes());
                h.update(k.as_bytes());
                feed(h, v);
            }
        }
    }
}

/// Text written into a hash.
struct Feed<'h>(&'h mut Sha256);

impl std::fmt::Write for Feed<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.update(s.as_bytes());
        Ok(())
    }
}

/// The first `N` bytes of the hash so far, in hex; the hasher starts over.
fn take_hex<const N: usize>(h: &mut Sha256) -> String {
    let digest = h.finalize_reset();
    let mut out = [0u8; 64];
    let out = &mut out[..2 * N];
    hex::encode_to_slice(&digest[..N], out).expect("twice as many hex digits as bytes");
    String::from_utf8(out.to_vec()).expect("hex digits are ASCII")
}

/// The fingerprint of a unified record: its fields and custom fields (not the raw
/// provider record, whose volatile parts would look like changes).
pub fn fingerprint(
    record_id: &str,
    data: &Map<String, Value>,
    custom_fields: &Map<String, Value>,
) -> StoredFingerprint {
    // One hasher for every field, reset after each (the per-record cost is per field).
    let mut h = Sha256::new();
    let mut field_hashes = BTreeMap::new();
    for (k, v) in data {
        feed(&mut h, v);
        field_hashes.insert(k.clone(), take_hex::<12>(&mut h));
    }
    for (k, v) in custom_fields {
        feed(&mut h, v);
        field_hashes.insert(format!("custom_fields.{k}"), take_hex::<12>(&mut h));
    }
    for (k, v) in &field_hashes {
        h.update(k.as_bytes());
        h.update(b"=");
        h.update(v.as_bytes());
        h.update(b";");
    }
    StoredFingerprint {
        record_id: record_id.to_string(),
        hash: take_hex::<16>(&mut h),
        field_hashes,
        source_updated_at: None,
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

    #[test]
    fn fingerprints_are_the_ones_already_stored() {
        // Computed by the first implementation: stored fingerprints must stay valid.
        let fp = fingerprint(
            "7",
            &obj(
                json!({"id": "7", "name": "Ada", "n": 12, "neg": -3, "f": 2.5,
                "big": 18446744073709551615u64, "t": true, "z": null,
                "list": [1, "a", [false]], "nested": {"b": {"y": 1, "x": [{}]}, "a": ""}}),
            ),
            &obj(json!({"tier": "gold", "score": 0.1})),
        );
        assert_eq!(fp.hash, "2b11507cc3ad638b9467a89ec95dc952");
        assert_eq!(fp.field_hashes["big"], "6968bd3d1aa9f716d758a366");
        assert_eq!(fp.field_hashes["f"], "ec00860e12dc9b278a357f6a");
        assert_eq!(fp.field_hashes["nested"], "382c68692a09612ce0b95fb8");
        assert_eq!(
            fp.field_hashes["custom_fields.score"],
            "8b2f181640a1be804264a3b0"
        );
        assert_eq!(fp.field_hashes.len(), 12);
    }

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
