//! The spec format's JSON Schema, generated from the serde types so the two never drift.

use super::model::ProviderSpec;

/// The schema as pretty JSON, as committed in `provider-specs/spec.schema.json`.
pub fn spec_schema_json() -> String {
    let mut schema =
        serde_json::to_value(schemars::schema_for!(ProviderSpec)).expect("schema is JSON");
    if let Some(obj) = schema.as_object_mut() {
        obj.insert(
            "$id".into(),
            "https://tributary.dev/schemas/provider-spec/v1.json".into(),
        );
        obj.insert("title".into(), "Tributary provider spec v1".into());
    }
    let mut text = serde_json::to_string_pretty(&schema).expect("schema serializes");
    text.push('\n');
    text
}
