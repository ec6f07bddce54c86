//! Unified models: versioned JSON Schemas shipped in `shared/schemas/unified/`,
//! compiled once per process.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use serde_json::Value;

/// One unified model and its compiled schema.
pub struct UnifiedModel {
    pub name: &'static str,
    pub version: u32,
    pub schema: Value,
    validator: jsonschema::Validator,
}

impl std::fmt::Debug for UnifiedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "UnifiedModel({} v{})", self.name, self.version)
    }
}

impl UnifiedModel {
    /// The model's top-level fields (the schema's `properties`), in name order.
    pub fn field_names(&self) -> impl Iterator<Item = &str> {
        self.schema["properties"]
            .as_object()
            .into_iter()
            .flat_map(|p| p.keys().map(String::as_str))
    }

    /// Whether the model has this top-level field.
    pub fn has_field(&self, name: &str) -> bool {
        self.schema["properties"].get(name).is_some()
    }

    /// Check a record; the error lists each violation with its JSON pointer.
    pub fn check(&self, record: &Value) -> Result<(), String> {
        // The common case is valid: answer it without collecting errors.
        if self.validator.is_valid(record) {
            return Ok(());
        }
        let problems: Vec<String> = self
            .validator
            .iter_errors(record)
            .map(|e| {
                let at = e.instance_path().to_string();
                if at.is_empty() {
                    e.to_string()
                } else {
                    format!("{at}: {e}")
                }
            })
            .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}

const SCHEMAS: &[(&str, u32, &str)] = &[
    (
        "crm.contact",
        1,
        include_str!("../../schemas/unified/crm.contact.v1.json"),
    ),
    (
        "crm.company",
        1,
        include_str!("../../schemas/unified/crm.company.v1.json"),
    ),
    (
        "crm.deal",
        1,
        include_str!("../../schemas/unified/crm.deal.v1.json"),
    ),
    (
        "hris.employee",
        1,
        include_str!("../../schemas/unified/hris.employee.v1.json"),
    ),
    (
        "ticketing.ticket",
        1,
        include_str!("../../schemas/unified/ticketing.ticket.v1.json"),
    ),
    (
        "accounting.customer",
        1,
        include_str!("../../schemas/unified/accounting.customer.v1.json"),
    ),
    (
        "accounting.invoice",
        1,
        include_str!("../../schemas/unified/accounting.invoice.v1.json"),
    ),
    (
        "directory.user",
        1,
        include_str!("../../schemas/unified/directory.user.v1.json"),
    ),
    (
        "directory.group",
        1,
        include_str!("../../schemas/unified/directory.group.v1.json"),
    ),
    (
        "custom.object",
        1,
        include_str!("../../schemas/unified/custom.object.v1.json"),
    ),
];

static MODELS: LazyLock<BTreeMap<&'static str, UnifiedModel>> = LazyLock::new(|| {
    SCHEMAS
        .iter()
        .map(|(name, version, text)| {
            let schema: Value = serde_json::from_str(text).expect("shipped schema is JSON");
            let validator = jsonschema::validator_for(&schema).expect("shipped schema compiles");
            (
                *name,
                UnifiedModel {
                    name,
                    version: *version,
                    schema,
                    validator,
                },
            )
        })
        .collect()
});

/// The model of that name, if it exists.
pub fn model(name: &str) -> Option<&'static UnifiedModel> {
    MODELS.get(name)
}

/// Whether records of this model go to a topic of their own per object
/// (`custom.<object>`) rather than to the model's topic.
pub fn has_object_topics(name: &str) -> bool {
    name == crate::spec::compile::CUSTOM_OBJECT_MODEL
}

/// Names of every unified model.
pub fn model_names() -> impl Iterator<Item = &'static str> {
    MODELS.keys().copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_schema_compiles_and_requires_an_id() {
        // Every shipped schema file is registered.
        let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/schemas/unified"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".v1.json")
            })
            .count();
        assert_eq!(model_names().count(), files);
        assert_eq!(files, 10);
        for name in model_names() {
            let m = model(name).unwrap();
            assert!(m.check(&json!({"id": "1"})).is_ok(), "{name}");
            assert!(m.check(&json!({})).is_err(), "{name}");
        }
    }

    #[test]
    fn violations_name_the_field() {
        let err = model("crm.contact")
            .unwrap()
            .check(&json!({"id": "1", "emails": [{"type": "work"}], "nickname": "x"}))
            .unwrap_err();
        assert!(err.contains("/emails/0"), "{err}");
        assert!(err.contains("nickname"), "{err}");
    }
}
