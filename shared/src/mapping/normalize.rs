//! One provider record to one unified record: the spec's mapping, the provider
//! id, the fields the mapping did not use (`custom_fields`), the raw record
//! (`remote_data`), and a check against the unified model's schema.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::domain::schema::{typed, FieldType};
use crate::domain::Schema;
use crate::spec::compile::{CompiledResource, FieldTarget};

/// What one connection's records are normalized with besides the spec: its discovered
/// fields (their types type the custom fields; a discovered standard field is never a
/// custom one) and, for a custom object, the object's name. Built once per slice.
#[derive(Debug, Clone, Default)]
pub struct Tenancy {
    fields: HashMap<String, (FieldType, bool)>,
    object: Option<String>,
}

impl Tenancy {
    pub fn new(schema: &Schema, object: Option<&str>) -> Tenancy {
        Tenancy {
            fields: schema
                .fields
                .iter()
                .map(|f| (f.name.clone(), (f.kind, f.custom)))
                .collect(),
            object: object.map(str::to_string),
        }
    }

    /// Whether a provider field may be a custom field: unknown to the schema, or custom in it.
    fn may_be_custom(&self, name: &str) -> bool {
        self.fields.get(name).is_none_or(|(_, custom)| *custom)
    }

    /// The value typed from the field's discovered type (unchanged for unknown fields).
    fn typed(&self, name: &str, value: Value) -> Value {
        match self.fields.get(name) {
            Some((kind, _)) => typed(*kind, value),
            None => value,
        }
    }

    /// A custom object's `fields`, typed; the object's name set.
    fn finish_object(&self, data: &mut Map<String, Value>) {
        let Some(object) = &self.object else { return };
        data.insert("object".into(), Value::String(object.clone()));
        if let Some(Value::Object(fields)) = data.get_mut("fields") {
            for (name, value) in fields.iter_mut() {
                *value = self.typed(name, std::mem::take(value));
            }
        }
    }
}

/// A normalized record, as `spec run` prints it and the pipeline publishes it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UnifiedRecord {
    pub model: &'static str,
    pub id: String,
    pub data: Map<String, Value>,
    pub custom_fields: Map<String, Value>,
    pub remote_data: Value,
}

/// Why one record could not be normalized (the record is reported, never dropped silently).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NormalizeError {
    #[error("the primary key is missing or empty")]
    NoPrimaryKey,
    #[error("evaluating `{what}` failed: {message}")]
    Evaluation { what: &'static str, message: String },
    #[error("the mapping must produce an object, it produced {0}")]
    NotAnObject(&'static str),
    #[error("the mapped record does not match {model} v{version}: {problems}")]
    Schema {
        model: &'static str,
        version: u32,
        problems: String,
    },
}

/// A record that could not be normalized, handed back with its error (normalize
/// takes the record by value, so the caller keeps no copy for this case).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{error}")]
pub struct Rejected {
    pub error: NormalizeError,
    pub raw: Value,
}

/// The provider id of a raw record, as a string. A plain path is read in place.
pub fn primary_key(
    raw: &Value,
    plan_pk: &super::jsonata::Jsonata,
) -> Result<String, NormalizeError> {
    let key = |value: Option<&Value>| match value {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        _ => Err(NormalizeError::NoPrimaryKey),
    };
    if let Some(found) = plan_pk.lookup_ref(raw) {
        return key(found);
    }
    let value = plan_pk
        .eval_json(raw)
        .map_err(|message| NormalizeError::Evaluation {
            what: "records.primary_key",
            message,
        })?;
    key(value.as_ref())
}

/// Map one record. `id` is the record's primary key, already read; `raw` becomes
/// the record's `remote_data`, or comes back inside the error.
pub fn normalize(
    resource: &CompiledResource,
    id: String,
    raw: Value,
) -> Result<UnifiedRecord, Rejected> {
    normalize_for(resource, &Tenancy::default(), id, raw)
}

/// [`normalize`] for one connection's discovered schema.
pub fn normalize_for(
    resource: &CompiledResource,
    tenancy: &Tenancy,
    id: String,
    raw: Value,
) -> Result<UnifiedRecord, Rejected> {
    match mapped(resource, tenancy, &id, &raw) {
        Ok((data, custom_fields)) => Ok(UnifiedRecord {
            model: resource.model.name,
            id,
            data,
            custom_fields,
            remote_data: raw,
        }),
        Err(error) => Err(Rejected { error, raw }),
    }
}

/// A record's unified fields and custom fields.
type Mapped = (Map<String, Value>, Map<String, Value>);

/// The unified fields and the custom fields of one record, checked against the model.
fn mapped(
    resource: &CompiledResource,
    tenancy: &Tenancy,
    id: &str,
    raw: &Value,
) -> Result<Mapped, NormalizeError> {
    let mapped = resource
        .mapping_plan
        .map(raw)
        .map_err(|message| NormalizeError::Evaluation {
            what: "mapping",
            message,
        })?;
    let mut data = match mapped {
        Some(Value::Object(map)) => map,
        Some(other) => return Err(NormalizeError::NotAnObject(kind(&other))),
        None => return Err(NormalizeError::NotAnObject("nothing")),
    };
    // Unified fields left empty are absent, so consumers see one shape for "unknown".
    data.retain(|_, v| !v.is_null());
    data.insert("id".into(), Value::String(id.to_string()));
    tenancy.finish_object(&mut data);
    let mut custom_fields = custom_fields(resource, tenancy, raw)?;
    if !resource.fields.is_empty() {
        merge_fields(resource, raw, &mut data, &mut custom_fields)?;
    }
    let data = Value::Object(data);
    resource
        .model
        .check(&data)
        .map_err(|problems| NormalizeError::Schema {
            model: resource.model.name,
            version: resource.model.version,
            problems,
        })?;
    let Value::Object(data) = data else {
        unreachable!("built as an object above")
    };
    Ok((data, custom_fields))
}

/// The provider fields the mapping did not use, as `custom_fields`.
pub fn custom_fields(
    resource: &CompiledResource,
    tenancy: &Tenancy,
    raw: &Value,
) -> Result<Map<String, Value>, NormalizeError> {
    if tenancy.object.is_some() {
        // A custom object's fields are all in its `fields`.
        return Ok(Map::new());
    }
    let keep = |name: &String, value: &Value| {
        !value.is_null()
            && tenancy.may_be_custom(name)
            && !resource.mapped_fields.contains(name)
            && !resource.custom_exclude.contains(name)
            && resource
                .custom_include_names
                .as_ref()
                .is_none_or(|names| names.contains(name))
            && resource
                .custom_include
                .as_ref()
                .is_none_or(|re| re.is_match(name))
    };
    // A plain path is read in place: only the fields kept are copied.
    if let Some(found) = resource.custom_from.lookup_ref(raw) {
        return Ok(match found {
            Some(Value::Object(fields)) => fields
                .iter()
                .filter(|(k, v)| keep(k, v))
                .map(|(k, v)| (k.clone(), tenancy.typed(k, v.clone())))
                .collect(),
            _ => Map::new(),
        });
    }
    let source =
        resource
            .custom_from
            .eval_json(raw)
            .map_err(|message| NormalizeError::Evaluation {
                what: "custom_fields.from",
                message,
            })?;
    let Some(Value::Object(fields)) = source else {
        return Ok(Map::new());
    };
    Ok(fields
        .into_iter()
        .filter(|(k, v)| keep(k, v))
        .map(|(k, v)| {
            let v = tenancy.typed(&k, v);
            (k, v)
        })
        .collect())
}

/// The resource's `fields` merged into the mapping's result: each replaces (or adds) one
/// unified or custom field; a null result removes it, as the mapping's nulls are.
fn merge_fields(
    resource: &CompiledResource,
    raw: &Value,
    data: &mut Map<String, Value>,
    custom: &mut Map<String, Value>,
) -> Result<(), NormalizeError> {
    for field in &resource.fields {
        let (target, name) = match &field.target {
            FieldTarget::Unified(name) => (&mut *data, name),
            FieldTarget::Custom(name) => (&mut *custom, name),
        };
        let value = field
            .expr
            .eval_json(raw)
            .map_err(|message| NormalizeError::Evaluation {
                what: "fields",
                message: format!("`{name}`: {message}"),
            })?
            .filter(|v| !v.is_null());
        match value {
            Some(v) => target.insert(name.clone(), v),
            None => target.remove(name),
        };
    }
    Ok(())
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use serde_json::json;

    use super::*;
    use crate::spec::compile::{compile, CompiledSpec};
    use crate::spec::load::parse_spec;

    const SPEC: &str = r#"spec_version: 1
name: demo
base_url: "https://api.example.com"
allowed_hosts: ["api.example.com"]
auth: {type: bearer}
resources:
  deals:
    model: crm.deal
    request: {path: /deals}
    pagination: {type: cursor, cursor_path: next, param: after}
    records: {path: items, primary_key: id}
    mapping: |
      ( $p := props; { "name": $p.name, "amount": $p.amount, "stage": $string($p.stage) } )
    custom_fields: {from: props}
"#;

    fn spec() -> CompiledSpec {
        compile(parse_spec(Path::new("demo.yaml"), SPEC).unwrap()).unwrap()
    }

    #[test]
    fn integers_arrive_with_every_digit_in_data_and_remote_data() {
        let spec = spec();
        let resource = spec.resource("deals").unwrap();
        let raw: Value = serde_json::from_str(
            r#"{"id": 9007199254740993, "props": {"name": "Big", "amount": 9007199254740993, "stage": "won", "extra": 12345678901234567}}"#,
        )
        .unwrap();
        let id = primary_key(&raw, &resource.full.records.primary_key).unwrap();
        assert_eq!(id, "9007199254740993");
        let rec = normalize(resource, id, raw).unwrap();
        let line = serde_json::to_string(&rec).unwrap();
        assert!(line.contains(r#""amount":9007199254740993"#), "{line}");
        assert!(line.contains(r#""id":9007199254740993"#), "{line}");
        assert!(line.contains(r#""extra":12345678901234567"#), "{line}");
        assert_eq!(rec.data["stage"], "won");
        assert_eq!(
            rec.remote_data["props"]["amount"].to_string(),
            "9007199254740993"
        );
    }

    #[test]
    fn a_rejected_record_comes_back_whole_with_its_error() {
        let spec = spec();
        let resource = spec.resource("deals").unwrap();
        let raw = json!({"id": "7", "props": {"name": 42, "amount": 1}});
        let rejected = normalize(resource, "7".into(), raw.clone()).unwrap_err();
        assert_eq!(rejected.raw, raw);
        assert!(
            matches!(&rejected.error, NormalizeError::Schema { problems, .. } if problems.contains("/name")),
            "{rejected}"
        );
    }
}
