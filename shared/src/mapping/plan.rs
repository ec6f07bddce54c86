//! A mapping compiled once into the least work per record.
//!
//! A mapping that is an object constructor (optionally after statements binding
//! aliases and functions) is evaluated field by field, in the constructor's order:
//! - a field that is a plain path is copied straight from the JSON record (no
//!   conversion, integers exact);
//! - a field within the part of JSONata [`super::direct`] answers is computed on
//!   the JSON record too;
//! - the other fields go to the evaluator together, on only the part of the
//!   record they can read.
//!
//! Anything else, or a record with an array where a plain path or a direct field
//! expects none, is evaluated whole as written. Either way the result is the
//! evaluator's, except that integers read from the record keep digits its f64
//! would lose.

use jsonata_core::ast::AstNode;
use serde_json::{Map, Value};

use super::analyze::{self, Field};
use super::direct::{self, Direct};
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
    /// Every field in the constructor's order.
    slots: Vec<(String, Slot)>,
    evaluated: Option<Evaluated>,
}

#[derive(Debug, Clone)]
enum Slot {
    Path(Vec<String>),
    Direct(Direct),
    /// Taken from the evaluator's answer.
    Evaluated,
}

/// The fields left to the evaluator (and the block's statements) as one expression.
#[derive(Debug, Clone)]
struct Evaluated {
    expr: Jsonata,
    /// What of the record it reads; `None`: the whole record.
    needed: Option<Needed>,
    /// With aliases replaced by their paths: the aliases' paths, which must not
    /// meet an array in a record for the replacement to be exact.
    alias_paths: Vec<Vec<String>>,
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
        let Ok(mut out) = fields.direct(raw) else {
            return self.map_by_evaluator(raw);
        };
        let Some(ev) = &fields.evaluated else {
            return Ok(Some(Value::Object(out)));
        };
        if ev.alias_paths.iter().any(|p| holds_array(raw, p)) {
            return self.map_by_evaluator(raw);
        }
        let input = match &ev.needed {
            Some(needed) => needed.convert(raw),
            None => to_jvalue(raw),
        };
        let answer = ev.expr.eval(&input)?;
        // Put the evaluator's fields in their places among the others.
        let mut merged = Map::with_capacity(fields.slots.len());
        for (key, slot) in &fields.slots {
            let value = match slot {
                Slot::Evaluated => answer
                    .get(key)
                    .filter(|v| !v.is_undefined())
                    .map(from_jvalue),
                _ => out.remove(key),
            };
            if let Some(value) = value {
                merged.insert(key.clone(), value);
            }
        }
        Ok(Some(Value::Object(merged)))
    }

    /// Map one record the way the plan replaces: the whole mapping on the whole
    /// converted record.
    pub fn map_by_evaluator(&self, raw: &Value) -> Result<Option<Value>, String> {
        Ok(to_json(&self.whole.eval(&to_jvalue(raw))?))
    }

    /// The fields copied by a plain path.
    pub fn path_fields(&self) -> Vec<&str> {
        self.keys(|s| matches!(s, Slot::Path(_)))
    }

    /// The fields computed on the JSON record.
    pub fn direct_fields(&self) -> Vec<&str> {
        self.keys(|s| matches!(s, Slot::Direct(_)))
    }

    /// The fields left to the evaluator.
    pub fn evaluated_fields(&self) -> Vec<&str> {
        self.keys(|s| matches!(s, Slot::Evaluated))
    }

    fn keys(&self, which: impl Fn(&Slot) -> bool) -> Vec<&str> {
        self.fields
            .iter()
            .flat_map(|f| &f.slots)
            .filter(|(_, s)| which(s))
            .map(|(k, _)| k.as_str())
            .collect()
    }

    /// Whether the evaluator sees only part of each record (or nothing at all).
    pub fn converts_part(&self) -> bool {
        self.fields
            .as_ref()
            .is_some_and(|f| f.evaluated.as_ref().is_none_or(|e| e.needed.is_some()))
    }

    /// Whether the mapping is split at all.
    pub fn is_split(&self) -> bool {
        self.fields.is_some()
    }
}

impl Fields {
    /// The plain and direct fields, in order; `Err` sends the record to the evaluator.
    fn direct(&self, raw: &Value) -> Result<Map<String, Value>, direct::Bail> {
        let mut out = Map::with_capacity(self.slots.len());
        for (key, slot) in &self.slots {
            let value = match slot {
                Slot::Path(path) => match read(raw, path) {
                    Read::Found(v) => Some(copy_as_evaluated(v)),
                    Read::Absent => None,
                    Read::ThroughArray => return Err(direct::Bail),
                },
                Slot::Direct(d) => d.eval(raw)?,
                Slot::Evaluated => None,
            };
            if let Some(value) = value {
                out.insert(key.clone(), value);
            }
        }
        Ok(out)
    }
}

fn fields(mapping: &Jsonata, mut split: analyze::Split) -> Fields {
    let scope = direct::Scope {
        path: &|n| split.path_of(n),
        bound: &|name| split.is_bound(name),
    };
    let slots: Vec<(String, Slot)> = split
        .fields
        .iter()
        .map(|(key, field)| {
            let slot = match field {
                Field::Path(path) => Slot::Path(path.clone()),
                Field::Computed(node) => match direct::compile(node, &scope) {
                    Some(d) => Slot::Direct(d),
                    None => Slot::Evaluated,
                },
            };
            (key.clone(), slot)
        })
        .collect();
    // What the evaluator is left with.
    split.fields.retain(|(key, _)| {
        slots
            .iter()
            .any(|(k, s)| k == key && matches!(s, Slot::Evaluated))
    });
    // The statements must run when a field needs them, or when they could fail.
    let evaluated = (!split.fields.is_empty() || !split.statements_are_bindings)
        .then(|| evaluated(mapping, &split));
    Fields { slots, evaluated }
}

fn evaluated(mapping: &Jsonata, split: &analyze::Split) -> Evaluated {
    let needed = split.needed();
    let (statements, pairs, alias_paths) = match split.substituted() {
        Some(s) => (s.statements, s.computed, s.alias_paths),
        None => {
            let pairs = split.fields.iter().filter_map(|(key, f)| match f {
                Field::Computed(node) => Some((key.clone(), node.clone())),
                Field::Path(_) => None,
            });
            (split.statements.clone(), pairs.collect(), Vec::new())
        }
    };
    let object = AstNode::Object(
        pairs
            .into_iter()
            .map(|(k, v)| (AstNode::String(k), v))
            .collect(),
    );
    let ast = if statements.is_empty() {
        object
    } else {
        let mut items = statements;
        items.push(object);
        AstNode::Block(items)
    };
    let label = format!("{} (evaluated fields)", mapping.source());
    Evaluated {
        expr: Jsonata::from_ast(&label, ast),
        needed,
        alias_paths,
    }
}

/// Whether the path meets an array on the way or at its end.
fn holds_array(raw: &Value, path: &[String]) -> bool {
    matches!(
        read(raw, path),
        Read::ThroughArray | Read::Found(Value::Array(_))
    )
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
            p.path_fields(),
            ["first", "city", "address", "tags", "created"]
        );
        assert_eq!(p.direct_fields(), ["name", "emails"]);
        assert_eq!(p.evaluated_fields(), ["shout"]);
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
        assert!(p.path_fields().is_empty());
        let out = same(&p, &json!({"a": {"c": "A"}, "b": {"c": "B"}})).unwrap();
        assert_eq!(out, Some(json!({"x": "B", "y": "B!"})));
        let p = plan(r#"( $p := a; { "x": $p.c, "f": (function($p) { $p })(1) } )"#);
        assert!(p.path_fields().is_empty());
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
        assert!(p.fields.as_ref().unwrap().evaluated.is_none());
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
