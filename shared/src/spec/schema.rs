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

#[cfg(test)]
mod tests {
    #[test]
    fn the_committed_schema_is_current() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../provider-specs/spec.schema.json"
        );
        let committed =
            std::fs::read_to_string(path).expect("provider-specs/spec.schema.json exists");
        assert!(
            committed == super::spec_schema_json(),
            "provider-specs/spec.schema.json is stale: regenerate it with `tributary-worker spec schema > provider-specs/spec.schema.json`"
        );
    }

    #[test]
    fn every_shipped_spec_validates_against_the_schema() {
        let schema: serde_json::Value = serde_json::from_str(&super::spec_schema_json()).unwrap();
        let validator = jsonschema::validator_for(&schema).unwrap();
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../provider-specs");
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "yaml") {
                let text = std::fs::read_to_string(&path).unwrap();
                let doc: serde_json::Value = serde_yaml_ng::from_str(&text).unwrap();
                let errors: Vec<String> = validator
                    .iter_errors(&doc)
                    .map(|e| format!("{}: {e}", e.instance_path()))
                    .collect();
                assert!(errors.is_empty(), "{}: {errors:?}", path.display());
            }
        }
    }
}
