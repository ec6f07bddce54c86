//! JSONata expressions, compiled once per spec and evaluated many times.
//!
//! The parsed tree is plain data and is shared across threads. The evaluator's
//! lowered bytecode holds reference-counted values and cannot cross threads, so
//! each thread lowers an expression once, on first use, and keeps it.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use jsonata_core::ast::AstNode;
use jsonata_core::value::JValue;
use jsonata_core::Expression;
use serde_json::Value;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    static LOWERED: RefCell<HashMap<u64, Rc<Expression>>> = RefCell::new(HashMap::new());
}

/// A compiled JSONata expression.
#[derive(Clone)]
pub struct Jsonata {
    id: u64,
    source: Arc<str>,
    ast: Arc<AstNode>,
    /// `a.b.c` (or `$` for the input itself): read straight from JSON, skipping the evaluator.
    simple_path: Option<Arc<[String]>>,
}

impl fmt::Debug for Jsonata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Jsonata({:?})", self.source)
    }
}

impl Jsonata {
    /// Parse an expression; the error is the parser's message (with its JSONata error code).
    pub fn compile(source: &str) -> Result<Self, String> {
        let ast = jsonata_core::parser::parse(source).map_err(|e| e.to_string())?;
        Ok(Jsonata {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            source: source.into(),
            ast: Arc::new(ast),
            simple_path: simple_path(source.trim()),
        })
    }

    /// An expression built from a tree rather than parsed (the mapping plan's
    /// residual); `label` stands in for its source in messages.
    pub fn from_ast(label: &str, ast: AstNode) -> Self {
        Jsonata {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            source: label.into(),
            ast: Arc::new(ast),
            simple_path: None,
        }
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// The parsed tree.
    pub fn ast(&self) -> &AstNode {
        &self.ast
    }

    /// Evaluate on an already converted input.
    pub fn eval(&self, input: &JValue) -> Result<JValue, String> {
        let expr = LOWERED.with(|cache| {
            cache
                .borrow_mut()
                .entry(self.id)
                .or_insert_with(|| Rc::new(Expression::from_ast((*self.ast).clone())))
                .clone()
        });
        expr.evaluate(input).map_err(|e| e.to_string())
    }

    /// Evaluate on JSON; `None` when the result is undefined.
    pub fn eval_json(&self, input: &Value) -> Result<Option<Value>, String> {
        if let Some(found) = self.lookup_ref(input) {
            return Ok(found.cloned());
        }
        let out = self.eval(&to_jvalue(input))?;
        Ok(to_json(&out))
    }

    /// For a simple path over objects only: `Some(found)`, borrowed from `input`;
    /// `None` means "use the evaluator".
    pub fn lookup_ref<'v>(&self, input: &'v Value) -> Option<Option<&'v Value>> {
        let path = self.simple_path.as_ref()?;
        let mut at = input;
        for step in path.iter() {
            match at {
                Value::Object(map) => match map.get(step) {
                    Some(next) => at = next,
                    None => return Some(None),
                },
                Value::Array(_) => return None,
                _ => return Some(None),
            }
        }
        // JSONata reads null fields as null but missing ones as undefined; arrays
        // at the end are returned as they are.
        Some(Some(at))
    }

    /// Take the value at a simple path out of `input` (no copy); `None` when the
    /// expression is not a simple path.
    pub fn take_json(&self, input: &mut Value) -> Option<Option<Value>> {
        let path = self.simple_path.as_ref()?;
        let mut at = input;
        for step in path.iter() {
            match at {
                Value::Object(map) => match map.get_mut(step) {
                    Some(next) => at = next,
                    None => return Some(None),
                },
                Value::Array(_) => return None,
                _ => return Some(None),
            }
        }
        Some(Some(at.take()))
    }

    /// Every field name the expression mentions anywhere (used to tell which
    /// provider fields a mapping consumed).
    pub fn field_names(&self) -> BTreeSet<String> {
        let mut names = BTreeSet::new();
        if let Ok(tree) = serde_json::to_value(&*self.ast) {
            collect_names(&tree, &mut names);
        }
        names
    }
}

fn simple_path(source: &str) -> Option<Arc<[String]>> {
    if source == "$" {
        return Some(Arc::from(Vec::new()));
    }
    let ident = |s: &str| {
        let mut chars = s.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    let steps: Vec<String> = source.split('.').map(str::to_string).collect();
    // Words JSONata reads as operators or literals are not field names.
    let reserved = ["and", "or", "in", "true", "false", "null"];
    steps
        .iter()
        .all(|s| ident(s) && !reserved.contains(&s.as_str()))
        .then(|| Arc::from(steps))
}

/// JSONata result to JSON; undefined becomes `None`.
pub fn to_json(value: &JValue) -> Option<Value> {
    if value.is_undefined() {
        return None;
    }
    Some(from_jvalue(value))
}

/// The evaluator's values to JSON, keeping whole numbers integers (as JSONata prints them).
pub(crate) fn from_jvalue(value: &JValue) -> Value {
    match value {
        JValue::Null | JValue::Undefined => Value::Null,
        JValue::Bool(b) => Value::Bool(*b),
        JValue::Number(n) => {
            if n.fract() == 0.0 && n.abs() < 9.0e15 {
                Value::from(*n as i64)
            } else {
                serde_json::Number::from_f64(*n)
                    .map(Value::Number)
                    .unwrap_or(Value::Null)
            }
        }
        JValue::String(s) => Value::String(s.to_string()),
        JValue::Array(items) => Value::Array(items.iter().map(from_jvalue).collect()),
        JValue::Object(map) => Value::Object(
            map.iter()
                .filter(|(_, v)| !v.is_undefined())
                .map(|(k, v)| (k.clone(), from_jvalue(v)))
                .collect(),
        ),
        // Functions and regexes have no JSON form; JSONata prints them as "".
        _ => Value::String(String::new()),
    }
}

/// JSON to the evaluator's values, reading the input in place (no copy of the tree first).
pub fn to_jvalue(value: &Value) -> JValue {
    match value {
        Value::Null => JValue::Null,
        Value::Bool(b) => JValue::Bool(*b),
        Value::Number(n) => JValue::Number(n.as_f64().unwrap_or(0.0)),
        Value::String(s) => JValue::string(s.as_str()),
        Value::Array(items) => {
            let flat = items.iter().all(|v| !v.is_array());
            JValue::Array(jsonata_core::value::JArray::new_flat(
                items.iter().map(to_jvalue).collect(),
                flat,
            ))
        }
        Value::Object(map) => {
            JValue::object(map.iter().map(|(k, v)| (k.clone(), to_jvalue(v))).collect())
        }
    }
}

fn collect_names(tree: &Value, out: &mut BTreeSet<String>) {
    match tree {
        Value::Object(map) => {
            for (k, v) in map {
                if k == "Name" {
                    if let Value::String(name) = v {
                        out.insert(name.clone());
                    }
                }
                collect_names(v, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_names(v, out)),
        _ => {}
    }
}

/// JSONata truthiness for the predicates specs write (`has_more`, throttle bodies).
pub fn truthy(value: &Option<Value>) -> bool {
    match value {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64().is_some_and(|f| f != 0.0),
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => a.iter().any(|v| truthy(&Some(v.clone()))),
        Some(Value::Object(_)) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn evaluates_and_reports_field_names() {
        let expr =
            Jsonata::compile("{ 'first': properties.firstname, 'mail': properties.`e-mail` }")
                .unwrap();
        let out = expr
            .eval_json(&json!({"properties": {"firstname": "Ada", "e-mail": "a@x"}}))
            .unwrap();
        assert_eq!(out, Some(json!({"first": "Ada", "mail": "a@x"})));
        let names = expr.field_names();
        assert!(
            names.contains("firstname") && names.contains("e-mail") && names.contains("properties")
        );
    }

    #[test]
    fn invalid_expression_is_an_error_with_code() {
        let err = Jsonata::compile("a.b[").unwrap_err();
        assert!(err.contains('S'), "{err}");
    }

    #[test]
    fn simple_paths_match_the_evaluator() {
        let input =
            json!({"paging": {"next": {"after": "42"}}, "n": null, "list": [{"a": 1}, {"a": 2}]});
        for src in [
            "paging.next.after",
            "paging.next.missing",
            "n",
            "list",
            "$",
            "list.a",
            "missing.deeper",
        ] {
            let fast = Jsonata::compile(src).unwrap();
            let slow = fast.eval(&JValue::from(input.clone())).unwrap();
            assert_eq!(to_jvalue(&input), JValue::from(input.clone()));
            assert_eq!(fast.eval_json(&input).unwrap(), to_json(&slow), "{src}");
        }
        let mut taken = input.clone();
        let list = Jsonata::compile("list")
            .unwrap()
            .take_json(&mut taken)
            .unwrap();
        assert_eq!(list, Some(json!([{"a": 1}, {"a": 2}])));
        assert_eq!(taken["list"], Value::Null);
    }

    #[test]
    fn undefined_is_none() {
        let expr = Jsonata::compile("missing").unwrap();
        assert_eq!(expr.eval_json(&json!({})).unwrap(), None);
    }

    #[test]
    fn usable_from_many_threads() {
        let expr = Jsonata::compile("a + 1").unwrap();
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let expr = expr.clone();
                std::thread::spawn(move || expr.eval_json(&json!({"a": i})).unwrap())
            })
            .collect();
        let sum: i64 = handles
            .into_iter()
            .map(|h| h.join().unwrap().unwrap().as_i64().unwrap())
            .sum();
        assert_eq!(sum, 10);
    }
}
