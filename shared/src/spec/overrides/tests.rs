use std::path::Path;

use serde_json::{json, Value};

use super::*;
use crate::mapping::normalize::normalize;
use crate::spec::load::parse_spec;

const SPEC: &str = r#"spec_version: 1
name: demo
base_url: "https://api.example.com"
allowed_hosts: ["api.example.com"]
auth: {type: bearer}
resources:
  contacts:
    model: crm.contact
    request:
      path: /contacts
      query: {archived: "false"}
    pagination: {type: cursor, cursor_path: next, param: after}
    records: {path: items, primary_key: id}
    mapping: |
      { "first_name": props.first, "last_name": props.last, "title": props.job }
    custom_fields:
      from: props
      exclude: [internal]
"#;

fn base() -> CompiledSpec {
    compile(parse_spec(Path::new("demo.yaml"), SPEC).unwrap()).unwrap()
}

fn layer(value: Value) -> Overrides {
    serde_json::from_value(value).unwrap()
}

fn record() -> Value {
    json!({"id": "7", "props": {"first": "Ada", "last": "Lovelace", "job": "engineer",
        "region": "emea", "tier": "gold", "internal": "x", "score": 3}})
}

/// The unified record (data and custom fields) a compiled spec makes of `record()`.
fn mapped(spec: &CompiledSpec) -> (Value, Value) {
    let rec = normalize(spec.resource("contacts").unwrap(), "7".into(), record()).unwrap();
    (Value::Object(rec.data), Value::Object(rec.custom_fields))
}

#[test]
fn fields_are_merged_into_the_base_mapping() {
    let spec = compile_with(
        &base(),
        &layer(json!({"resources": {"contacts": {"fields": {
            "title": "$uppercase(props.job)",
            "custom_fields.segment": "props.tier & '-' & props.region"
        }}}})),
    )
    .unwrap();
    let (data, custom) = mapped(&spec);
    assert_eq!(data["title"], "ENGINEER");
    // The rest of the base mapping is kept.
    assert_eq!(data["first_name"], "Ada");
    assert_eq!(data["last_name"], "Lovelace");
    assert_eq!(custom["segment"], "gold-emea");
    // Provider fields an override reads are no longer custom fields.
    assert!(
        custom.get("tier").is_none() && custom.get("region").is_none(),
        "{custom}"
    );
    assert_eq!(custom["score"], 3);
}

#[test]
fn a_mapping_replaces_the_base_one_and_later_layers_win() {
    let environment = compile_with(
        &base(),
        &layer(json!({"resources": {"contacts": {
            "mapping": "{ 'name': props.first & ' ' & props.last }",
            "fields": {"title": "'env'"}
        }}})),
    )
    .unwrap();
    let (data, _) = mapped(&environment);
    assert_eq!(data["name"], "Ada Lovelace");
    assert!(data.get("first_name").is_none(), "replaced whole: {data}");
    assert_eq!(data["title"], "env");
    let connection = compile_with(
        &environment,
        &layer(json!({"resources": {"contacts": {"fields": {"title": "'connection'"}}}})),
    )
    .unwrap();
    let (data, _) = mapped(&connection);
    assert_eq!(data["title"], "connection");
    assert_eq!(
        data["name"], "Ada Lovelace",
        "the environment's mapping stays"
    );
}

#[test]
fn a_null_field_removes_it() {
    let spec = compile_with(
        &base(),
        &layer(json!({"resources": {"contacts": {"fields": {"title": "null"}}}})),
    )
    .unwrap();
    let (data, _) = mapped(&spec);
    assert!(data.get("title").is_none(), "{data}");
}

#[test]
fn query_entries_are_merged_into_the_request() {
    let spec = apply(
        &base().spec,
        &layer(json!({"resources": {"contacts": {"query": {
            "archived": "true", "fields": "{{ page_size }}"
        }}}})),
    )
    .unwrap();
    let query = &spec.resources["contacts"].request.query;
    assert_eq!(query["archived"], "true");
    assert_eq!(query["fields"], "{{ page_size }}");
    assert!(compile_with(
        &base(),
        &layer(json!({"resources": {"contacts": {"query": {"fields": "{{ page_size }}"}}}}))
    )
    .is_ok());
}

#[test]
fn custom_fields_include_keeps_only_those_and_exclude_adds() {
    let spec = compile_with(
        &base(),
        &layer(json!({"resources": {"contacts": {"custom_fields": {
            "include": ["region", "internal", "tier"], "exclude": ["tier"]
        }}}})),
    )
    .unwrap();
    let (_, custom) = mapped(&spec);
    // `internal` stays excluded by the spec, `tier` by the override.
    assert_eq!(custom, json!({"region": "emea"}));
    let exclude = &spec.spec.resources["contacts"].custom_fields.exclude;
    assert_eq!(exclude, &vec!["internal".to_string(), "tier".to_string()]);
}

fn problems(value: Value) -> Vec<OverrideProblem> {
    compile_with(&base(), &layer(value)).unwrap_err()
}

#[test]
fn bad_jsonata_names_the_resource_and_the_field() {
    let found = problems(json!({"resources": {"contacts": {"fields": {"title": "props.job["}}}}));
    assert_eq!(found.len(), 1, "{found:?}");
    let p = &found[0];
    assert_eq!(p.resource.as_deref(), Some("contacts"));
    assert_eq!(p.field.as_deref(), Some("title"));
    assert_eq!(p.path, "resources.contacts.fields.title");
    assert!(p.message.contains("invalid JSONata"), "{p}");
    let shown = p.to_string();
    assert!(
        shown.starts_with("resource `contacts`, `title`: invalid JSONata"),
        "{shown}"
    );

    let found = problems(json!({"resources": {"contacts": {"mapping": "{ 'name': "}}}));
    assert_eq!(found[0].field.as_deref(), Some("mapping"), "{found:?}");
}

#[test]
fn unknown_fields_resources_and_reserved_fields_are_refused() {
    let found = problems(json!({"resources": {"contacts": {"fields": {
        "titel": "props.job", "id": "props.id", "custom_fields.": "1"
    }}}}));
    let by_field = |f: &str| {
        found
            .iter()
            .find(|p| p.field.as_deref() == Some(f))
            .unwrap_or_else(|| panic!("no problem for {f}: {found:?}"))
            .message
            .clone()
    };
    assert!(by_field("titel").contains("crm.contact has no field `titel`"));
    assert!(
        by_field("titel").contains("title"),
        "lists the model's fields"
    );
    assert!(by_field("id").contains("set by the pipeline"));
    assert!(by_field("custom_fields.").contains("name the custom field"));

    let found = problems(json!({"resources": {"people": {"fields": {"title": "x"}}}}));
    assert_eq!(found[0].resource.as_deref(), Some("people"));
    assert!(
        found[0]
            .message
            .contains("no resource `people`; it has: contacts"),
        "{found:?}"
    );
}

#[test]
fn a_query_template_reading_something_unavailable_is_placed_in_the_layer() {
    let found = problems(json!({"resources": {"contacts": {"query": {"x": "{{ nope }}"}}}}));
    assert_eq!(found[0].path, "resources.contacts.query.x", "{found:?}");
    assert_eq!(found[0].field.as_deref(), Some("query.x"));
}

#[test]
fn unknown_keys_in_an_overrides_file_name_the_file_the_path_and_the_line() {
    let dir = std::env::temp_dir().join(format!("overrides-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("demo.yaml");
    std::fs::write(&file, "resources:\n  contacts:\n    feilds: {title: x}\n").unwrap();
    let err = compile_with_file(&base(), &file).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!("{}:3: at `resources.contacts", file.display())),
        "{err}"
    );
    assert!(err.contains("unknown field `feilds`"), "{err}");

    std::fs::write(
        &file,
        "resources:\n  contacts:\n    fields:\n      title: \"props.job[\"\n",
    )
    .unwrap();
    let err = compile_with_file(&base(), &file).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!(
            "{}:4: at `resources.contacts.fields.title`: invalid JSONata",
            file.display()
        )),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
