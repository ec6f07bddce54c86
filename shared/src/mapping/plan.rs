//! A mapping compiled once into the least work per record.
//!
//! A mapping that is an object constructor (optionally after statements binding
//! aliases and functions) is evaluated field by field: a field that is a plain path
//! is copied straight from the JSON record (no conversion, integers exact); the
//! other fields go to the evaluator together, on only the part of the record they
//! can read. Anything else, or a record where a plain path meets an array, is
//! evaluated whole as written. Either way the result is the evaluator's, except
//! that integers copied by a plain path keep digits its f64 would lose.

use jsonata_core::ast::AstNode;
use jsonata_core::value::JValue;
use serde_json::{Map, Value};

use super::analyze::{self, Field};
use super::jsonata::{from_jvalue, to_json, to_jvalue, Jsonata};
use super::paths::{copy_as_evaluated, read, Needed, Read};

/// A compiled mapping.
#[derive(Debug, Clone)]
pub struct MappingPlan {
    /// The mapping as written: the fallback, and the reference the plan must equal.
    whole: Jsonata,
    fields: Option<Fields>,
}

#[derive(Debug, Clone)]
struct Fields {
    /// Every field in the constructor's order; `None` for a computed one.
    slots: Vec<(String, Option<Vec<String>>)>,
    computed: Option<Computed>,
}

/// The computed fields (and the block's statements) as one expression.
#[derive(Debug, Clone)]
struct Computed {
    expr: Jsonata,
    /// What of the record it reads; `None`: the whole record.
    needed: Option<Needed>,
}

impl MappingPlan {
    pub fn new(mapping: &Jsonata) -> MappingPlan {
        MappingPlan {
            whole: mapping.clone(),
            fields: analyze::split(mapping.ast()).map(|split| fields(mapping, split)),
        }
    }

    /// Map one record: the evaluator's result as JSON, `None` when undefined.
    pub fn map(&self, raw: &Value) -> Result<Option<Value>, String> {
        let Some(fields) = &self.fields else {
            return self.map_by_evaluator(raw);
        };
        // The constructor over anything but one object groups or maps: the evaluator's job.
        if !raw.is_object() {
            return self.map_by_evaluator(raw);
        }
        let mut reads = Vec::with_capacity(fields.slots.len());
        for (_, path) in &fields.slots {
            match path.as_deref().map(|p| read(raw, p)) {
                Some(Read::ThroughArray) => return self.map_by_evaluator(raw),
                found => reads.push(found),
            }
        }
        let computed = match &fields.computed {
            Some(c) => {
                let input = match &c.needed {
                    Some(needed) => needed.convert(raw),
                    None => to_jvalue(raw),
                };
                c.expr.eval(&input)?
            }
            None => JValue::Undefined,
        };
        let mut out = Map::with_capacity(fields.slots.len());
        for ((key, _), found) in fields.slots.iter().zip(reads) {
            let value = match found {
                Some(Read::Found(v)) => Some(copy_as_evaluated(v)),
                Some(_) => None,
                None => computed
                    .get(key)
                    .filter(|v| !v.is_undefined())
                    .map(from_jvalue),
            };
            if let Some(value) = value {
                out.insert(key.clone(), value);
            }
        }
        Ok(Some(Value::Object(out)))
    }

    /// Map one record the way the plan replaces: the whole mapping on the whole
    /// converted record.
    pub fn map_by_evaluator(&self, raw: &Value) -> Result<Option<Value>, String> {
        Ok(to_json(&self.whole.eval(&to_jvalue(raw))?))
    }

    /// The fields copied by a plain path (none when the mapping is evaluated whole).
    pub fn direct_fields(&self) -> Vec<&str> {
        self.fields
            .iter()
            .flat_map(|f| &f.slots)
            .filter(|(_, p)| p.is_some())
            .map(|(k, _)| k.as_str())
            .collect()
    }

    /// Whether the computed fields see only part of each record.
    pub fn converts_part(&self) -> bool {
        self.fields
            .as_ref()
            .and_then(|f| f.computed.as_ref())
            .is_some_and(|c| c.needed.is_some())
    }

    /// Whether the mapping is split at all.
    pub fn is_split(&self) -> bool {
        self.fields.is_some()
    }
}

fn fields(mapping: &Jsonata, split: analyze::Split) -> Fields {
    let needed = split.needed();
    let mut computed_pairs = Vec::new();
    let slots = split
        .fields
        .iter()
        .map(|(key, field)| match field {
            Field::Path(path) => (key.clone(), Some(path.clone())),
            Field::Computed(node) => {
                computed_pairs.push((AstNode::String(key.clone()), node.clone()));
                (key.clone(), None)
            }
        })
        .collect();
    // The statements must run when a field needs them, or when they could fail.
    let run = !computed_pairs.is_empty() || !split.statements_are_bindings;
    let computed = run.then(|| {
        let object = AstNode::Object(computed_pairs);
        let ast = if split.statements.is_empty() {
            object
        } else {
            let mut items = split.statements.clone();
            items.push(object);
            AstNode::Block(items)
        };
        let label = format!("{} (computed fields)", mapping.source());
        Computed {
            expr: Jsonata::from_ast(&label, ast),
            needed,
        }
    });
    Fields { slots, computed }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn plan(src: &str) -> MappingPlan {
        MappingPlan::new(&Jsonata::compile(src).unwrap())
    }

    /// The plan's answer equals the evaluator's, fields in the same order.
    fn same(plan: &MappingPlan, record: &Value) -> Result<Option<Value>, String> {
        let fast = plan.map(record);
        let slow = plan.map_by_evaluator(record);
        assert_eq!(fast, slow, "{record}");
        let text = |r: &Result<Option<Value>, String>| format!("{:?}", r.as_ref().ok());
        assert_eq!(text(&fast), text(&slow), "field order for {record}");
        fast
    }

    const ALIASED: &str = r#"(
        $p := properties;
        $q := $p.address;
        $f := function($v) { $v ? $uppercase($v) : null };
        {
          "first": $p.first,
          "name": $join([$p.first, $p.last], " "),
          "shout": $f($p.last),
          "city": $q.city,
          "address": $q,
          "tags": tags,
          "emails": $p.email ? [{"email": $p.email}] : [],
          "created": createdAt
        }
    )"#;

    #[test]
    fn plain_fields_are_read_directly_and_the_rest_sees_part_of_the_record() {
        let p = plan(ALIASED);
        assert_eq!(
            p.direct_fields(),
            ["first", "city", "address", "tags", "created"]
        );
        assert!(p.converts_part());
        let full = json!({
            "properties": {"first": "Ada", "last": "Byron", "email": "a@x", "other": [1, 2],
                           "address": {"city": "London", "zip": 1.0, "lines": [["a"], "b"]}},
            "tags": ["x"], "createdAt": "2026-01-01", "ignored": {"deep": [1, 2, 3]}
        });
        let out = same(&p, &full).unwrap().unwrap();
        assert_eq!(
            out.as_object().unwrap().keys().collect::<Vec<_>>(),
            ["first", "name", "shout", "city", "address", "tags", "emails", "created"]
        );
        assert_eq!(
            out["address"]["zip"],
            json!(1),
            "whole floats print as the evaluator prints them"
        );
    }

    #[test]
    fn missing_null_and_odd_shapes_match_the_evaluator() {
        let p = plan(ALIASED);
        for record in [
            json!({}),
            json!({"properties": null, "tags": null}),
            json!({"properties": {"first": null, "address": null}}),
            json!({"properties": {"first": "Ada", "address": "not an object"}}),
            json!({"properties": "a string", "tags": []}),
            json!({"properties": {"address": {"city": [1]}}, "tags": [[1], 2]}),
            // Arrays on a plain path: the whole record goes to the evaluator.
            json!({"properties": [{"first": "A"}, {"first": "B"}]}),
            json!({"properties": {"address": [{"city": "X"}, {"city": "Y"}]}}),
            json!({"properties": [{"first": "Only"}]}),
        ] {
            // Some of these fail (`$join` of a non-string): the same way both ways.
            let _ = same(&p, &record);
        }
        // Not an object: the constructor maps over the array.
        same(&p, &json!([{"createdAt": 1}, {"createdAt": 2}])).unwrap();
        same(&p, &json!("text")).unwrap();
    }

    #[test]
    fn nested_contexts_predicates_and_functions_match() {
        let p = plan(
            r#"(
              $ts := function($t) { $t ? $replace($t, " ", "T") & "Z" : null };
              $street := $filter([a.street, a.number], function($v) { $v });
              {
                "emails": [email[value].{"email": value, "type": label = "home" ? "personal" : label}],
                "first_line": Line[DetailType = "x"][0].Amount,
                "street": $count($street) ? $join($street, " ") : null,
                "when": $ts(add_time),
                "org": org.value ? $string(org.value) : null,
                "direct": org.value
              }
            )"#,
        );
        assert!(p.converts_part());
        for record in [
            json!({"email": [{"value": "a@x", "label": "home"}, {"value": null}], "Line": [{"DetailType": "x", "Amount": 5}],
                   "a": {"street": "Main", "number": "1"}, "add_time": "2026-01-01 10:00:00", "org": {"value": 7}}),
            json!({"email": [], "org": {"value": [1, 2]}}),
            json!({"org": [{"value": 1}]}),
        ] {
            same(&p, &record).unwrap();
        }
    }

    #[test]
    fn what_reads_the_whole_record_converts_it_whole() {
        for src in [
            r#"{ "all": $keys($), "x": x }"#,
            r#"{ "s": $string(), "x": x }"#,
            r#"{ "p": $$.x, "x": x }"#,
            r#"{ "w": *.y, "x": x }"#,
            r#"{ "d": **.y, "x": x }"#,
            r#"( $s := $string; { "s": $s(), "x": x } )"#,
            r#"( $f := function($g) { $g() }; { "s": $f($string), "x": x } )"#,
        ] {
            let p = plan(src);
            assert!(p.is_split() && !p.converts_part(), "{src}");
            same(&p, &json!({"x": {"y": 1}, "z": {"y": 2}})).unwrap();
        }
    }

    #[test]
    fn other_shapes_are_evaluated_whole() {
        for src in [
            r#"$merge([{"a": a}, {"b": b}])"#,
            r#"{ a: b }"#,
            r#"{ "a": a, "a": b }"#,
            r#"( $x := 1; [ { "a": a } ] )"#,
        ] {
            let p = plan(src);
            assert!(!p.is_split(), "{src}");
            let _ = same(&p, &json!({"a": "k", "b": 2}));
        }
    }

    #[test]
    fn rebound_variables_are_not_aliases() {
        let p = plan(r#"( $p := a; $p := b; { "x": $p.c, "y": $p.c & "!" } )"#);
        assert!(p.direct_fields().is_empty());
        let out = same(&p, &json!({"a": {"c": "A"}, "b": {"c": "B"}})).unwrap();
        assert_eq!(out, Some(json!({"x": "B", "y": "B!"})));
        let p = plan(r#"( $p := a; { "x": $p.c, "f": (function($p) { $p })(1) } )"#);
        assert!(p.direct_fields().is_empty());
        same(&p, &json!({"a": {"c": "A"}})).unwrap();
    }

    #[test]
    fn errors_are_the_evaluators() {
        let p = plan(r#"{ "a": a, "n": $number(b) }"#);
        let err = same(&p, &json!({"a": 1, "b": "not a number"})).unwrap_err();
        assert!(err.contains("number"), "{err}");
        // A statement that fails runs even when no field is computed.
        let p = plan(r#"( $x := $error("boom"); { "a": a } )"#);
        assert!(same(&p, &json!({"a": 1})).unwrap_err().contains("boom"));
        // Bindings alone cannot fail and are skipped when every field is plain.
        let p = plan(r#"( $p := a; $f := function() { 1 }; { "b": $p.b } )"#);
        assert!(p.fields.as_ref().unwrap().computed.is_none());
        assert_eq!(
            same(&p, &json!({"a": {"b": 2}})).unwrap(),
            Some(json!({"b": 2}))
        );
    }

    #[test]
    fn integers_copied_by_a_plain_path_keep_every_digit() {
        let p = plan(r#"( $p := properties; { "id": id, "n": $p.n, "sum": $p.n + 0 } )"#);
        let record: Value = serde_json::from_str(
            r#"{"id": 9007199254740993, "properties": {"n": 18446744073709551615}}"#,
        )
        .unwrap();
        let out = p.map(&record).unwrap().unwrap();
        assert_eq!(out["id"].to_string(), "9007199254740993");
        assert_eq!(out["n"].to_string(), "18446744073709551615");
        // The evaluator's f64 is what loses them.
        let slow = p.map_by_evaluator(&record).unwrap().unwrap();
        assert_ne!(slow["id"].to_string(), "9007199254740993");
        assert_eq!(out["sum"], slow["sum"]);
    }
}
