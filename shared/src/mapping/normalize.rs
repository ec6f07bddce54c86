//! One provider record to one unified record: the spec's mapping, the provider
//! id, the fields the mapping did not use (`custom_fields`), the raw record
//! (`remote_data`), and a check against the unified model's schema.

use serde::Serialize;
use serde_json::{Map, Value};

use super::jsonata::{to_json, to_jvalue};
use crate::spec::compile::CompiledResource;

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

/// The provider id of a raw record, as a string.
pub fn primary_key(
    raw: &Value,
    plan_pk: &super::jsonata::Jsonata,
) -> Result<String, NormalizeError> {
    let value = plan_pk
        .eval_json(raw)
        .map_err(|message| NormalizeError::Evaluation {
            what: "records.primary_key",
            message,
        })?;
    match value {
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        Some(Value::Number(n)) => Ok(n.to_string()),
        _ => Err(NormalizeError::NoPrimaryKey),
    }
}

/// Map one record. `id` is the record's primary key, already read.
pub fn normalize(
    resource: &CompiledResource,
    id: String,
    raw: Value,
) -> Result<UnifiedRecord, NormalizeError> {
    let input = to_jvalue(&raw);
    let mapped = resource
        .mapping
        .eval(&input)
        .map_err(|message| NormalizeError::Evaluation {
            what: "mapping",
            message,
        })?;
    let mut data = match to_json(&mapped) {
        Some(Value::Object(map)) => map,
        Some(other) => return Err(NormalizeError::NotAnObject(kind(&other))),
        None => return Err(NormalizeError::NotAnObject("nothing")),
    };
    // Unified fields left empty are absent, so consumers see one shape for "unknown".
    data.retain(|_, v| !v.is_null());
    data.insert("id".into(), Value::String(id.clone()));
    let custom_fields = custom_fields(resource, &raw)?;
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
    Ok(UnifiedRecord {
        model: resource.model.name,
        id,
        data,
        custom_fields,
        remote_data: raw,
    })
}

fn custom_fields(
    resource: &CompiledResource,
    raw: &Value,
) -> Result<Map<String, Value>, NormalizeError> {
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
        .filter(|(name, value)| {
            !value.is_null()
                && !resource.mapped_fields.contains(name)
                && !resource.custom_exclude.contains(name)
                && resource
                    .custom_include
                    .as_ref()
                    .is_none_or(|re| re.is_match(name))
        })
        .collect())
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
