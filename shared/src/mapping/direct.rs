//! A small part of JSONata evaluated straight on JSON records: the shapes mappings
//! build fields with (`$p.email ? [{"email": $p.email}] : []`, `$join([...], " ")`,
//! `$append(...)`, `a = "x" ? "y" : "z"`), over field values that are strings,
//! numbers, booleans or null.
//!
//! Where a record holds anything else (an array or object where a scalar is read,
//! a non-string to join), evaluation stops with [`Bail`] and the caller hands the
//! record to the evaluator, so results are always the evaluator's: only the cases
//! whose JSONata meaning is simple are answered here.

use jsonata_core::ast::{AstNode, BinaryOp};
use serde_json::{Map, Number, Value};

use super::paths::{copy_as_evaluated, read, Read};

/// The record is outside what is answered here: evaluate it the full way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bail;

type Out = Result<Option<Value>, Bail>;

/// A compiled expression of the supported part.
#[derive(Debug, Clone)]
pub enum Direct {
    Path(Vec<String>),
    Literal(Value),
    Condition(Box<Direct>, Box<Direct>, Option<Box<Direct>>),
    And(Box<Direct>, Box<Direct>),
    Or(Box<Direct>, Box<Direct>),
    /// `=` (false: `!=`).
    Equal(Box<Direct>, Box<Direct>, bool),
    /// `x in [literals]`.
    In(Box<Direct>, Vec<Value>),
    Object(Vec<(String, Direct)>),
    /// Items, each with whether it is itself an array constructor (kept nested;
    /// other arrays are spliced in, as JSONata's array constructor does).
    Array(Vec<(Direct, bool)>),
    Join(Box<Direct>, Option<Box<Direct>>),
    Append(Box<Direct>, Box<Direct>),
    Exists(Box<Direct>),
}

/// What compiling needs to know of the mapping around the expression.
pub struct Scope<'a> {
    /// The plain path a node reads from the root (aliases resolved), if it is one.
    pub path: &'a dyn Fn(&AstNode) -> Option<Vec<String>>,
    /// Whether a name is bound as a variable anywhere (a builtin's name then may
    /// not mean the builtin).
    pub bound: &'a dyn Fn(&str) -> bool,
}

/// `None` when `node` uses anything outside the supported part.
pub fn compile(node: &AstNode, scope: &Scope<'_>) -> Option<Direct> {
    if let Some(path) = (scope.path)(node) {
        return Some(Direct::Path(path));
    }
    let sub = |n: &AstNode| compile(n, scope).map(Box::new);
    Some(match node {
        AstNode::String(s) => Direct::Literal(Value::String(s.clone())),
        AstNode::Number(n) => Direct::Literal(number(*n)?),
        AstNode::Boolean(b) => Direct::Literal(Value::Bool(*b)),
        AstNode::Null => Direct::Literal(Value::Null),
        AstNode::Conditional {
            condition,
            then_branch,
            else_branch,
        } => Direct::Condition(
            sub(condition)?,
            sub(then_branch)?,
            match else_branch {
                Some(e) => Some(sub(e)?),
                None => None,
            },
        ),
        AstNode::Binary { op, lhs, rhs } => match op {
            BinaryOp::And => Direct::And(sub(lhs)?, sub(rhs)?),
            BinaryOp::Or => Direct::Or(sub(lhs)?, sub(rhs)?),
            BinaryOp::Equal => Direct::Equal(sub(lhs)?, sub(rhs)?, true),
            BinaryOp::NotEqual => Direct::Equal(sub(lhs)?, sub(rhs)?, false),
            BinaryOp::In => Direct::In(sub(lhs)?, literals(rhs)?),
            _ => return None,
        },
        AstNode::Object(pairs) => {
            let mut fields: Vec<(String, Direct)> = Vec::with_capacity(pairs.len());
            for (k, v) in pairs {
                let AstNode::String(k) = k else { return None };
                // A repeated key is an error the evaluator reports.
                if fields.iter().any(|(seen, _)| seen == k) {
                    return None;
                }
                fields.push((k.clone(), compile(v, scope)?));
            }
            Direct::Object(fields)
        }
        AstNode::Array(items) => Direct::Array(
            items
                .iter()
                .map(|i| Some((compile(i, scope)?, matches!(i, AstNode::Array(_)))))
                .collect::<Option<_>>()?,
        ),
        AstNode::Function { name, args, .. } if !(scope.bound)(name) => {
            match (name.as_str(), args.as_slice()) {
                ("join", [a]) => Direct::Join(sub(a)?, None),
                ("join", [a, sep]) => Direct::Join(sub(a)?, Some(sub(sep)?)),
                ("append", [a, b]) => Direct::Append(sub(a)?, sub(b)?),
                ("exists", [a]) => Direct::Exists(sub(a)?),
                _ => return None,
            }
        }
        _ => return None,
    })
}

/// A literal as the evaluator prints it (whole numbers as integers).
fn number(n: f64) -> Option<Value> {
    if n.fract() == 0.0 && n.abs() < 9.0e15 {
        Some(Value::from(n as i64))
    } else {
        Number::from_f64(n).map(Value::Number)
    }
}

/// `["a", "b", 1]`: strings, numbers, booleans, null.
fn literals(node: &AstNode) -> Option<Vec<Value>> {
    let AstNode::Array(items) = node else {
        return None;
    };
    items
        .iter()
        .map(|i| match i {
            AstNode::String(s) => Some(Value::String(s.clone())),
            AstNode::Number(n) => number(*n),
            AstNode::Boolean(b) => Some(Value::Bool(*b)),
            AstNode::Null => Some(Value::Null),
            _ => None,
        })
        .collect()
}

impl Direct {
    /// The value on `record` (`None`: undefined).
    pub fn eval(&self, record: &Value) -> Out {
        match self {
            Direct::Path(path) => match read(record, path) {
                Read::Absent => Ok(None),
                Read::Found(Value::Array(_) | Value::Object(_)) => Err(Bail),
                Read::Found(v) => Ok(Some(copy_as_evaluated(v))),
                Read::ThroughArray => Err(Bail),
            },
            Direct::Literal(v) => Ok(Some(v.clone())),
            Direct::Condition(c, then, otherwise) => {
                if truthy(&c.eval(record)?)? {
                    then.eval(record)
                } else {
                    otherwise.as_ref().map_or(Ok(None), |e| e.eval(record))
                }
            }
            Direct::And(a, b) => Ok(Some(Value::Bool(
                truthy(&a.eval(record)?)? && truthy(&b.eval(record)?)?,
            ))),
            Direct::Or(a, b) => Ok(Some(Value::Bool(
                truthy(&a.eval(record)?)? || truthy(&b.eval(record)?)?,
            ))),
            Direct::Equal(a, b, equal) => {
                // Either side undefined: both `=` and `!=` are false.
                let (Some(x), Some(y)) = (a.eval(record)?, b.eval(record)?) else {
                    return Ok(Some(Value::Bool(false)));
                };
                Ok(Some(Value::Bool(same(&x, &y)? == *equal)))
            }
            Direct::In(a, set) => {
                let Some(x) = a.eval(record)? else {
                    return Ok(Some(Value::Bool(false)));
                };
                let mut found = false;
                for v in set {
                    found |= same(&x, v)?;
                }
                Ok(Some(Value::Bool(found)))
            }
            Direct::Object(fields) => {
                let mut out = Map::with_capacity(fields.len());
                for (k, e) in fields {
                    if let Some(v) = e.eval(record)? {
                        out.insert(k.clone(), v);
                    }
                }
                Ok(Some(Value::Object(out)))
            }
            Direct::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (e, nested) in items {
                    match e.eval(record)? {
                        None => {}
                        Some(Value::Array(inner)) if !nested => out.extend(inner),
                        Some(v) => out.push(v),
                    }
                }
                Ok(Some(Value::Array(out)))
            }
            Direct::Join(list, sep) => join(list.eval(record)?, sep_of(sep, record)?),
            Direct::Append(a, b) => match (a.eval(record)?, b.eval(record)?) {
                (None, other) | (other, None) => Ok(other),
                (Some(Value::Array(mut x)), Some(Value::Array(y))) => {
                    x.extend(y);
                    Ok(Some(Value::Array(x)))
                }
                // A scalar becomes a sequence, which JSONata may later unwrap.
                _ => Err(Bail),
            },
            Direct::Exists(a) => Ok(Some(Value::Bool(a.eval(record)?.is_some()))),
        }
    }
}

fn sep_of(sep: &Option<Box<Direct>>, record: &Value) -> Result<String, Bail> {
    match sep {
        None => Ok(String::new()),
        Some(e) => match e.eval(record)? {
            Some(Value::String(s)) => Ok(s),
            _ => Err(Bail),
        },
    }
}

/// `$join` of an array of strings; anything else is the evaluator's (to coerce or reject).
fn join(list: Option<Value>, sep: String) -> Out {
    match list {
        None => Ok(None),
        Some(Value::Array(items)) => {
            let mut parts = Vec::with_capacity(items.len());
            for item in &items {
                match item {
                    Value::String(s) => parts.push(s.as_str()),
                    _ => return Err(Bail),
                }
            }
            Ok(Some(Value::String(parts.join(&sep))))
        }
        Some(_) => Err(Bail),
    }
}

/// JSONata's boolean value of a scalar or undefined.
fn truthy(v: &Option<Value>) -> Result<bool, Bail> {
    Ok(match v {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Number(n)) => n.as_f64().is_some_and(|f| f != 0.0),
        // Arrays and objects have rules of their own: the evaluator's.
        Some(_) => return Err(Bail),
    })
}

/// JSONata's equality of two scalars (numbers by value, other types never equal).
fn same(a: &Value, b: &Value) -> Result<bool, Bail> {
    Ok(match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(_) | Value::Object(_), _) | (_, Value::Array(_) | Value::Object(_)) => {
            return Err(Bail)
        }
        _ => a == b,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::mapping::jsonata::Jsonata;
    use crate::mapping::plan::MappingPlan;

    use super::*;

    const EXPRESSIONS: &[&str] = &[
        r#"a ? "y" : "n""#,
        "a ? b",
        "a and b",
        "a or b",
        "a = b",
        "a != b",
        r#"a = "x""#,
        "a = 1",
        r#"a in ["x", 1, true, null]"#,
        "[a, b]",
        "[[a], b]",
        "[a ? [a] : [], b]",
        r#"{"k": a, "l": b, "m": [a]}"#,
        r#"$join([a, b], " ")"#,
        "$join([a, b])",
        "$join([a], b)",
        "$append(a ? [a] : [], b ? [b] : [])",
        "$append([a], [b])",
        "$append(a, b)",
        "$exists(a)",
        "[]",
        "{}",
        "$append([], [])",
        "1.0",
        "2.5",
        "o.a ? o.a : o.b",
    ];

    fn pool() -> Vec<Option<Value>> {
        let mut values: Vec<Option<Value>> = vec![None];
        for v in [
            json!(null),
            json!(""),
            json!("x"),
            json!("y"),
            json!(0),
            json!(1),
            json!(1.0),
            json!(2.5),
            json!(true),
            json!(false),
            json!([]),
            json!(["x"]),
            json!({}),
            json!({"k": 1}),
        ] {
            values.push(Some(v));
        }
        values
    }

    #[test]
    fn every_supported_shape_answers_as_the_evaluator_does() {
        let values = pool();
        for src in EXPRESSIONS {
            let plan =
                MappingPlan::new(&Jsonata::compile(&format!(r#"{{ "v": {src} }}"#)).unwrap());
            assert_eq!(plan.direct_fields(), ["v"], "{src} is answered directly");
            for a in &values {
                for b in &values {
                    let mut record = Map::new();
                    let mut o = Map::new();
                    if let Some(a) = a {
                        record.insert("a".into(), a.clone());
                        o.insert("a".into(), a.clone());
                    }
                    if let Some(b) = b {
                        record.insert("b".into(), b.clone());
                        o.insert("b".into(), b.clone());
                    }
                    record.insert("o".into(), Value::Object(o));
                    let record = Value::Object(record);
                    let fast = plan.map(&record);
                    let slow = plan.map_by_evaluator(&record);
                    assert_eq!(fast, slow, "{src} on {record}");
                    assert_eq!(
                        format!("{fast:?}"),
                        format!("{slow:?}"),
                        "{src} on {record}"
                    );
                }
            }
        }
    }

    #[test]
    fn shapes_outside_the_part_are_left_to_the_evaluator() {
        for src in [
            r#"a & "x""#,
            "$string(a)",
            "a + 1",
            "a.b[0]",
            "a < b",
            r#"{"k": a, "k": b}"#,
            "$count([a])",
        ] {
            let plan =
                MappingPlan::new(&Jsonata::compile(&format!(r#"{{ "v": {src} }}"#)).unwrap());
            assert_eq!(plan.evaluated_fields(), ["v"], "{src}");
        }
        // A builtin's name bound by the mapping is not the builtin.
        let plan = MappingPlan::new(
            &Jsonata::compile(
                r#"( $join := function($a, $s) { "mine" }; { "v": $join([a], " ") } )"#,
            )
            .unwrap(),
        );
        assert_eq!(plan.evaluated_fields(), ["v"]);
        assert_eq!(
            plan.map(&json!({"a": "x"})).unwrap(),
            Some(json!({"v": "mine"}))
        );
    }

    #[test]
    fn a_record_outside_the_part_goes_to_the_evaluator_whole() {
        let d = compile(
            &jsonata_core::parser::parse("$join([a, b])").unwrap(),
            &Scope {
                path: &|n| match n {
                    AstNode::Path { steps } => match &steps[..] {
                        [s] => match &s.node {
                            AstNode::Name(n) => Some(vec![n.clone()]),
                            _ => None,
                        },
                        _ => None,
                    },
                    _ => None,
                },
                bound: &|_| false,
            },
        )
        .unwrap();
        assert_eq!(d.eval(&json!({"a": "x", "b": "y"})), Ok(Some(json!("xy"))));
        assert_eq!(d.eval(&json!({"a": "x", "b": 1})), Err(Bail));
        assert_eq!(d.eval(&json!({"a": ["x"]})), Err(Bail));
    }
}
