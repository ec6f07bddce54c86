//! A resource's fields as they are now: the profile's standard and custom
//! fields, plus those the control API added, minus those it removed; the values
//! the sandbox generates for custom fields (from the seed, the field and the
//! record id, by kind), and writing them into the provider's records.

use std::collections::BTreeSet;

use chrono::Duration;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Map, Value};

use crate::data::base_time;
use crate::profile::{FieldDef, FieldValues, ResourceSchema, ValueKind};

/// Why a field cannot be added.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    #[error("the resource already has a field `{0}`")]
    Exists(String),
    #[error("field `{name}`: no value kind for type `{kind}`: give `generate` or add the type to the profile's field_values.kinds")]
    NoKind { name: String, kind: String },
}

/// The fields a resource has now.
#[derive(Debug, Clone)]
pub struct Schema {
    pub standard: Vec<FieldDef>,
    pub custom: Vec<FieldDef>,
    /// Standard fields removed: taken out of every record.
    pub removed: BTreeSet<String>,
    pub under: Option<String>,
}

impl Schema {
    pub fn new(profile: &ResourceSchema) -> Schema {
        Schema {
            standard: profile.fields.clone(),
            custom: profile.custom_fields.clone(),
            removed: BTreeSet::new(),
            under: profile.under.clone(),
        }
    }

    fn has(&self, name: &str) -> bool {
        self.standard
            .iter()
            .chain(&self.custom)
            .any(|f| f.name == name)
    }

    /// Add a custom field (its values appear in every record).
    pub fn add(&mut self, def: FieldDef, values: &FieldValues) -> Result<(), FieldError> {
        if self.has(&def.name) {
            return Err(FieldError::Exists(def.name));
        }
        kind_of(&def, values)?;
        self.removed.remove(&def.name);
        self.custom.push(def);
        Ok(())
    }

    /// Remove a standard or custom field; false when there is none of that name.
    pub fn remove(&mut self, name: &str) -> bool {
        let before = self.standard.len() + self.custom.len();
        self.custom.retain(|f| f.name != name);
        if let Some(i) = self.standard.iter().position(|f| f.name == name) {
            self.standard.remove(i);
            self.removed.insert(name.to_string());
        }
        before != self.standard.len() + self.custom.len()
    }

    /// Every field with whether it is custom, as the describe answers see it.
    pub fn describe(&self) -> Vec<Value> {
        let standard = self.standard.iter().map(|f| (f, false));
        let custom = self.custom.iter().map(|f| (f, true));
        standard
            .chain(custom)
            .map(|(f, is_custom)| field_entry(f, is_custom))
            .collect()
    }

    /// Write the custom values of record `id` into `record`, and take removed fields out.
    pub fn apply(&self, record: &mut Value, gen: &Generator, id: u64) {
        let target = match &self.under {
            Some(key) => record.get_mut(key.as_str()),
            None => Some(record),
        };
        let Some(Value::Object(obj)) = target else {
            return;
        };
        for name in &self.removed {
            obj.remove(name);
        }
        for def in &self.custom {
            obj.insert(def.name.clone(), gen.value(def, id));
        }
    }
}

/// A field as the describe answers' expressions read it: the attributes, then
/// `name`, `label`, `type`, `custom` and `options` (`[{value, label}]`).
fn field_entry(f: &FieldDef, custom: bool) -> Value {
    let mut entry: Map<String, Value> = f
        .attributes
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let options: Vec<Value> = f
        .options
        .iter()
        .map(|o| json!({"value": o.value(), "label": o.label()}))
        .collect();
    entry.insert("name".into(), json!(f.name));
    entry.insert("label".into(), json!(f.label()));
    entry.insert("type".into(), json!(f.kind));
    entry.insert("custom".into(), json!(custom));
    entry.insert("options".into(), Value::Array(options));
    Value::Object(entry)
}

/// The kind of value a field gets: its own `generate`, or its type's.
pub fn kind_of(def: &FieldDef, values: &FieldValues) -> Result<ValueKind, FieldError> {
    def.generate
        .or_else(|| values.kinds.get(&def.kind).copied())
        .ok_or_else(|| FieldError::NoKind {
            name: def.name.clone(),
            kind: def.kind.clone(),
        })
}

/// Generates custom values for one resource's records.
pub struct Generator<'a> {
    pub seed: u64,
    pub resource: &'a str,
    pub values: &'a FieldValues,
}

const WORDS: &[&str] = &[
    "Apollo", "Borealis", "Cobalt", "Delta", "Ember", "Fjord", "Granite", "Harbor",
];

impl Generator<'_> {
    /// The value of `def` in record `id`: the same for the same seed, resource,
    /// field and id, whatever else changes.
    pub fn value(&self, def: &FieldDef, id: u64) -> Value {
        let hash = |s: &str| {
            s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
            })
        };
        let mut rng = StdRng::seed_from_u64(
            self.seed
                ^ hash(self.resource).rotate_left(7)
                ^ hash(&def.name).rotate_left(29)
                ^ id.wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        let Ok(kind) = kind_of(def, self.values) else {
            return Value::Null;
        };
        let value = match kind {
            ValueKind::Text => json!(format!("{} {id}", WORDS[rng.random_range(0..WORDS.len())])),
            ValueKind::Number => number(&mut rng, def),
            ValueKind::Boolean => json!(rng.random_bool(0.5)),
            ValueKind::Date => {
                let day = base_time() + Duration::days(rng.random_range(0..730));
                json!(day.format("%Y-%m-%d").to_string())
            }
            ValueKind::Datetime => {
                let at = base_time() + Duration::seconds(rng.random_range(0..63_072_000));
                json!(at.format(&self.values.datetime_format).to_string())
            }
            ValueKind::Option => match def.options.len() {
                0 => Value::Null,
                n => json!(def.options[rng.random_range(0..n)].value()),
            },
        };
        match (self.values.as_strings, value) {
            (true, v @ (Value::Number(_) | Value::Bool(_))) => json!(v.to_string()),
            (_, v) => v,
        }
    }
}

/// A number in the field's range, with its decimals (a whole number without).
fn number(rng: &mut StdRng, def: &FieldDef) -> Value {
    let (min, max) = (def.min.unwrap_or(0.0), def.max.unwrap_or(1000.0));
    let decimals = def.decimals.unwrap_or(0).min(6);
    let scale = 10f64.powi(decimals as i32);
    let (lo, hi) = ((min * scale).ceil() as i64, (max * scale).floor() as i64);
    let n = if hi > lo {
        rng.random_range(lo..=hi)
    } else {
        lo
    };
    if decimals == 0 {
        json!(n)
    } else {
        json!(n as f64 / scale)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::FieldOption;

    fn def(name: &str, kind: &str) -> FieldDef {
        FieldDef {
            name: name.into(),
            label: None,
            kind: kind.into(),
            options: vec![
                FieldOption::Value("a".into()),
                FieldOption::Value("b".into()),
            ],
            generate: None,
            min: Some(1.0),
            max: Some(5.0),
            decimals: None,
            attributes: Default::default(),
        }
    }

    fn values(as_strings: bool) -> FieldValues {
        FieldValues {
            kinds: [
                ("num".to_string(), ValueKind::Number),
                ("pick".to_string(), ValueKind::Option),
                ("day".to_string(), ValueKind::Date),
                ("flag".to_string(), ValueKind::Boolean),
            ]
            .into_iter()
            .collect(),
            as_strings,
            datetime_format: "%Y".into(),
        }
    }

    #[test]
    fn values_are_deterministic_typed_and_in_range() {
        let v = values(false);
        let gen = Generator {
            seed: 1,
            resource: "r",
            values: &v,
        };
        for id in 1..50 {
            let n = gen.value(&def("n", "num"), id);
            assert!((1..=5).contains(&n.as_i64().unwrap()), "{n}");
            assert_eq!(n, gen.value(&def("n", "num"), id));
            let p = gen.value(&def("p", "pick"), id);
            assert!(p == "a" || p == "b", "{p}");
            let d = gen.value(&def("d", "day"), id);
            assert!(chrono::NaiveDate::parse_from_str(d.as_str().unwrap(), "%Y-%m-%d").is_ok());
            assert!(gen.value(&def("f", "flag"), id).is_boolean());
        }
        let s = values(true);
        let strings = Generator {
            seed: 1,
            resource: "r",
            values: &s,
        };
        assert_eq!(
            strings.value(&def("n", "num"), 3),
            json!(gen.value(&def("n", "num"), 3).to_string())
        );
        assert!(strings.value(&def("f", "flag"), 3).is_string());
    }

    #[test]
    fn added_and_removed_fields_change_records() {
        let v = values(false);
        let gen = Generator {
            seed: 1,
            resource: "r",
            values: &v,
        };
        let mut schema = Schema::new(&ResourceSchema {
            fields: vec![def("keep", "num"), def("drop", "num")],
            ..Default::default()
        });
        assert_eq!(
            schema.add(def("keep", "num"), &v),
            Err(FieldError::Exists("keep".into()))
        );
        assert!(matches!(
            schema.add(def("x", "unknown"), &v),
            Err(FieldError::NoKind { .. })
        ));
        schema.add(def("extra", "pick"), &v).unwrap();
        assert!(schema.remove("drop"));
        assert!(!schema.remove("drop"));
        let mut rec = json!({"keep": 1, "drop": 2});
        schema.apply(&mut rec, &gen, 7);
        assert_eq!(rec["keep"], 1);
        assert!(rec.get("drop").is_none());
        assert!(rec["extra"].is_string());
        let names: Vec<Value> = schema
            .describe()
            .iter()
            .map(|f| f["name"].clone())
            .collect();
        assert_eq!(names, [json!("keep"), json!("extra")]);
    }
}
