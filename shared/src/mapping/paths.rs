//! Plain field paths (`a.b.c`) read straight from a JSON record, and the part of a
//! record an expression can see, converted for the evaluator without the rest.

use std::collections::BTreeMap;

use jsonata_core::value::JValue;
use serde_json::{Number, Value};

use super::jsonata::to_jvalue;

/// What a plain path finds in a record.
#[derive(Debug, PartialEq)]
pub enum Read<'v> {
    /// Missing (JSONata's undefined): the field is left out.
    Absent,
    Found(&'v Value),
    /// An array on the way: JSONata maps the rest of the path over it, so the
    /// evaluator must answer.
    ThroughArray,
}

/// Follow `path` through objects, as JSONata does for field names.
pub fn read<'v>(record: &'v Value, path: &[String]) -> Read<'v> {
    let mut at = record;
    for step in path {
        match at {
            Value::Object(map) => match map.get(step) {
                Some(next) => at = next,
                None => return Read::Absent,
            },
            Value::Array(_) => return Read::ThroughArray,
            // A field of a string, number, boolean or null is undefined.
            _ => return Read::Absent,
        }
    }
    // An array at the end is the value itself, as the evaluator returns it.
    Read::Found(at)
}

/// A copy of `value` as the evaluator would hand it back: a fractional-looking
/// whole number (`1.0`) becomes an integer like every whole number the evaluator
/// prints, but integers keep every digit (the evaluator's f64 loses them above 2^53).
pub fn copy_as_evaluated(value: &Value) -> Value {
    match value {
        Value::Number(n) => Value::Number(evaluated_number(n)),
        Value::Array(items) => Value::Array(items.iter().map(copy_as_evaluated).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), copy_as_evaluated(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn evaluated_number(n: &Number) -> Number {
    if !n.is_f64() {
        return n.clone();
    }
    let f = n.as_f64().unwrap_or(0.0);
    // The same rule as `jsonata::to_json` applies to the evaluator's numbers.
    if f.fract() == 0.0 && f.abs() < 9.0e15 {
        Number::from(f as i64)
    } else {
        n.clone()
    }
}

/// The parts of a record an expression reads: whole subtrees at some paths,
/// nothing elsewhere.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Needed {
    /// Only these fields, each with what is needed under it.
    #[default]
    Nothing,
    Fields(BTreeMap<String, Needed>),
    Whole,
}

impl Needed {
    /// Mark everything under `path` as needed (the empty path: the whole record).
    pub fn add(&mut self, path: &[String]) {
        let Some((first, rest)) = path.split_first() else {
            *self = Needed::Whole;
            return;
        };
        match self {
            Needed::Whole => {}
            Needed::Nothing => {
                let mut child = Needed::Nothing;
                child.add(rest);
                *self = Needed::Fields(BTreeMap::from([(first.clone(), child)]));
            }
            Needed::Fields(fields) => fields.entry(first.clone()).or_default().add(rest),
        }
    }

    /// `value` converted for the evaluator, as far as needed. A field is only
    /// ever read by name where it is not whole, so leaving the others out changes
    /// nothing the expression can see. Arrays and scalars are taken whole: paths
    /// map over arrays, and a scalar has no fields to leave out.
    pub fn convert(&self, value: &Value) -> JValue {
        match (self, value) {
            (Needed::Fields(fields), Value::Object(map)) => JValue::object(
                fields
                    .iter()
                    .filter_map(|(k, need)| map.get(k).map(|v| (k.clone(), need.convert(v))))
                    .collect(),
            ),
            (Needed::Nothing, Value::Object(_)) => JValue::object(Default::default()),
            _ => to_jvalue(value),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn path(s: &str) -> Vec<String> {
        s.split('.').map(str::to_string).collect()
    }

    #[test]
    fn reads_through_objects_and_stops_at_arrays() {
        let rec = json!({"a": {"b": [1], "n": null, "s": "x"}, "l": [{"b": 1}]});
        assert_eq!(read(&rec, &path("a.b")), Read::Found(&json!([1])));
        assert_eq!(read(&rec, &path("a.n")), Read::Found(&Value::Null));
        assert_eq!(read(&rec, &path("a.missing")), Read::Absent);
        assert_eq!(read(&rec, &path("a.s.deeper")), Read::Absent);
        assert_eq!(read(&rec, &path("a.n.deeper")), Read::Absent);
        assert_eq!(read(&rec, &path("l.b")), Read::ThroughArray);
    }

    #[test]
    fn copies_keep_integers_exact_and_make_whole_floats_integers() {
        let big: Value = serde_json::from_str("9007199254740993").unwrap();
        assert_eq!(copy_as_evaluated(&big).to_string(), "9007199254740993");
        let v: Value = serde_json::from_str(r#"{"a": [1.0, 1.5, -0.0, 1e300]}"#).unwrap();
        assert_eq!(
            copy_as_evaluated(&v).to_string(),
            r#"{"a":[1,1.5,0,1e+300]}"#
        );
    }

    #[test]
    fn converts_only_what_is_needed() {
        let rec = json!({"p": {"a": 1, "b": {"c": 2, "d": 3}, "e": 4}, "q": [1, {"x": 1}], "r": 5});
        let mut need = Needed::default();
        need.add(&path("p.a"));
        need.add(&path("p.b"));
        need.add(&path("p.b.c"));
        need.add(&path("q.x"));
        need.add(&path("missing.x"));
        let got = need.convert(&rec);
        let want = json!({"p": {"a": 1, "b": {"c": 2, "d": 3}}, "q": [1, {"x": 1}]});
        assert_eq!(got, to_jvalue(&want));
        need.add(&[]);
        assert_eq!(need.convert(&rec), to_jvalue(&rec));
        assert_eq!(Needed::Nothing.convert(&rec), to_jvalue(&json!({})));
    }
}
