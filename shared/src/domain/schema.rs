//! A connection's discovered schema: the fields one tenant's account has on one object
//! (its custom fields among them), what changed between two discoveries, and how a custom
//! field's value is typed from its definition.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Number, Value};

use super::time;

/// The kinds of fields, whatever the provider calls them. A spec's discovery maps the
/// provider's type names onto these; anything else is `other` (its values pass unchanged).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    #[default]
    String,
    Number,
    Integer,
    Boolean,
    Date,
    Datetime,
    /// One of the field's options: the provider's value.
    Picklist,
    /// Several of the field's options, as the provider writes them.
    Multipicklist,
    /// The id of another record.
    Reference,
    #[serde(other)]
    Other,
}

impl FieldType {
    pub fn as_str(self) -> &'static str {
        match self {
            FieldType::String => "string",
            FieldType::Number => "number",
            FieldType::Integer => "integer",
            FieldType::Boolean => "boolean",
            FieldType::Date => "date",
            FieldType::Datetime => "datetime",
            FieldType::Picklist => "picklist",
            FieldType::Multipicklist => "multipicklist",
            FieldType::Reference => "reference",
            FieldType::Other => "other",
        }
    }
}

/// One field of one object in one tenant's account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldDef {
    /// The provider's field name (what records and requests use).
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(rename = "type", default)]
    pub kind: FieldType,
    /// Created by the tenant (not one of the provider's standard fields).
    #[serde(default)]
    pub custom: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub required: bool,
    /// The values a picklist allows (the provider's values).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

/// The fields of one object, as the last good discovery found them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Schema {
    pub fields: Vec<FieldDef>,
}

/// A field whose type changed between two discoveries.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Retyped {
    pub name: String,
    pub from: FieldType,
    pub to: FieldType,
}

/// What changed between two discoveries of one object.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SchemaChange {
    pub added: Vec<FieldDef>,
    pub removed: Vec<String>,
    pub retyped: Vec<Retyped>,
}

impl SchemaChange {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.retyped.is_empty()
    }

    /// One line for logs and status events: `added Region__c (picklist); removed Fax`.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if !self.added.is_empty() {
            let names: Vec<String> = self
                .added
                .iter()
                .map(|f| format!("{} ({})", f.name, f.kind.as_str()))
                .collect();
            parts.push(format!("added {}", names.join(", ")));
        }
        if !self.removed.is_empty() {
            parts.push(format!("removed {}", self.removed.join(", ")));
        }
        if !self.retyped.is_empty() {
            let names: Vec<String> = self
                .retyped
                .iter()
                .map(|r| format!("{} ({} -> {})", r.name, r.from.as_str(), r.to.as_str()))
                .collect();
            parts.push(format!("retyped {}", names.join(", ")));
        }
        parts.join("; ")
    }
}

impl Schema {
    pub fn field(&self, name: &str) -> Option<&FieldDef> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// Every field name, in discovery order.
    pub fn all(&self) -> Vec<String> {
        self.fields.iter().map(|f| f.name.clone()).collect()
    }

    /// The tenant's own fields.
    pub fn custom(&self) -> Vec<String> {
        self.fields
            .iter()
            .filter(|f| f.custom)
            .map(|f| f.name.clone())
            .collect()
    }

    /// The provider's standard fields this account has.
    pub fn standard(&self) -> Vec<String> {
        self.fields
            .iter()
            .filter(|f| !f.custom)
            .map(|f| f.name.clone())
            .collect()
    }

    /// What `newer` adds, removes and retypes relative to this schema.
    pub fn diff(&self, newer: &Schema) -> SchemaChange {
        let old: BTreeMap<&str, &FieldDef> =
            self.fields.iter().map(|f| (f.name.as_str(), f)).collect();
        let new: BTreeMap<&str, &FieldDef> =
            newer.fields.iter().map(|f| (f.name.as_str(), f)).collect();
        let mut change = SchemaChange::default();
        for (name, field) in &new {
            match old.get(name) {
                None => change.added.push((*field).clone()),
                Some(before) if before.kind != field.kind => change.retyped.push(Retyped {
                    name: name.to_string(),
                    from: before.kind,
                    to: field.kind,
                }),
                Some(_) => {}
            }
        }
        change.removed = old
            .keys()
            .filter(|name| !new.contains_key(*name))
            .map(|name| name.to_string())
            .collect();
        change
    }
}

/// A custom field's value typed from its definition: numbers as numbers, booleans as
/// booleans, dates as RFC 3339 full dates, date-times as RFC 3339 instants (UTC), picklist
/// values as the provider's value. A value that does not read as its type is kept as the
/// provider sent it: nothing is lost to a surprising value.
pub fn typed(kind: FieldType, value: Value) -> Value {
    let converted = match (&value, kind) {
        (Value::String(s), FieldType::Number | FieldType::Integer) => number(s.trim()),
        (Value::String(s), FieldType::Boolean) => match s.trim().to_ascii_lowercase().as_str() {
            "true" => Some(Value::Bool(true)),
            "false" => Some(Value::Bool(false)),
            _ => None,
        },
        (Value::String(_) | Value::Number(_), FieldType::Date) => date(&value),
        (Value::String(_) | Value::Number(_), FieldType::Datetime) => {
            time::parse_provider(&value).map(|t| Value::String(time::stamp(t)))
        }
        _ => None,
    };
    converted.unwrap_or(value)
}

fn number(text: &str) -> Option<Value> {
    if let Ok(i) = text.parse::<i64>() {
        return Some(Value::Number(i.into()));
    }
    if let Ok(u) = text.parse::<u64>() {
        return Some(Value::Number(u.into()));
    }
    text.parse::<f64>()
        .ok()
        .and_then(Number::from_f64)
        .map(Value::Number)
}

/// A date as `YYYY-MM-DD`: from that form itself, or from an instant (epoch milliseconds
/// at midnight UTC, as some providers store dates).
fn date(value: &Value) -> Option<Value> {
    if let Value::String(s) = value {
        if let Ok(d) = chrono::NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d") {
            return Some(Value::String(d.format("%Y-%m-%d").to_string()));
        }
    }
    let t = time::parse_provider(value)?;
    Some(Value::String(t.format("%Y-%m-%d").to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn field(name: &str, kind: FieldType, custom: bool) -> FieldDef {
        FieldDef {
            name: name.into(),
            label: None,
            kind,
            custom,
            required: false,
            options: Vec::new(),
        }
    }

    #[test]
    fn values_are_typed_from_their_definition_and_odd_ones_kept() {
        assert_eq!(typed(FieldType::Number, json!("42")), json!(42));
        assert_eq!(typed(FieldType::Number, json!("4.5")), json!(4.5));
        assert_eq!(typed(FieldType::Number, json!(7)), json!(7));
        assert_eq!(typed(FieldType::Number, json!("n/a")), json!("n/a"));
        assert_eq!(typed(FieldType::Boolean, json!("true")), json!(true));
        assert_eq!(typed(FieldType::Boolean, json!("FALSE")), json!(false));
        assert_eq!(
            typed(FieldType::Date, json!("2024-05-01")),
            json!("2024-05-01")
        );
        assert_eq!(
            typed(FieldType::Date, json!("1714521600000")),
            json!("2024-05-01")
        );
        assert_eq!(
            typed(FieldType::Datetime, json!("1714521600000")),
            json!("2024-05-01T00:00:00.000Z")
        );
        assert_eq!(
            typed(FieldType::Datetime, json!("2024-05-01T02:00:00+02:00")),
            json!("2024-05-01T00:00:00.000Z")
        );
        assert_eq!(typed(FieldType::Picklist, json!("gold")), json!("gold"));
        assert_eq!(typed(FieldType::String, json!("42")), json!("42"));
    }

    #[test]
    fn a_diff_names_what_was_added_removed_and_retyped() {
        let old = Schema {
            fields: vec![
                field("Name", FieldType::String, false),
                field("Fax", FieldType::String, false),
                field("Tier__c", FieldType::String, true),
            ],
        };
        let new = Schema {
            fields: vec![
                field("Name", FieldType::String, false),
                field("Tier__c", FieldType::Number, true),
                field("Region__c", FieldType::Picklist, true),
            ],
        };
        let change = old.diff(&new);
        assert_eq!(
            change.added,
            vec![field("Region__c", FieldType::Picklist, true)]
        );
        assert_eq!(change.removed, vec!["Fax".to_string()]);
        assert_eq!(change.retyped[0].name, "Tier__c");
        assert_eq!(
            change.summary(),
            "added Region__c (picklist); removed Fax; retyped Tier__c (string -> number)"
        );
        assert!(new.diff(&new).is_empty());
        assert_eq!(new.custom(), ["Tier__c", "Region__c"]);
        assert_eq!(new.standard(), ["Name"]);
    }

    #[test]
    fn unknown_types_read_as_other() {
        let f: FieldDef = serde_json::from_value(json!({"name": "x", "type": "geo"})).unwrap();
        assert_eq!(f.kind, FieldType::Other);
        assert!(!f.custom);
    }
}
