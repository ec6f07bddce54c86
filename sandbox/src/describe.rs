//! Describe requests (`schema_routes`): one object and its fields as they are
//! now (custom fields added or removed at runtime included), or every
//! described object. They are requests like any other (the budget applies, the
//! credential is checked), counted as `schema_requests`, not data requests;
//! injected faults, which name data pages, do not apply to them.

use axum::response::Response;
use serde_json::{json, Map, Value};

use crate::lock;
use crate::respond::json_response;
use crate::state::Sandbox;
use crate::throttle::rate_headers;

/// A describe route this request is for: its index and path parameters.
pub fn route(s: &Sandbox, method: &str, path: &str) -> Option<(usize, Map<String, Value>)> {
    let matched = s.compiled.schema_routes.get(method)?.at(path).ok()?;
    let params = matched
        .params
        .iter()
        .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
        .collect();
    Some((*matched.value, params))
}

/// The answer of describe route `index` (after budget and credential).
pub fn answer(s: &Sandbox, index: usize, request: Value, base_url: String) -> Response {
    let route = &s.profile.schema_routes[index];
    let compiled = &s.compiled.schema_answers[index];
    let name = route
        .object
        .as_ref()
        .and_then(|p| request["params"][p].as_str())
        .unwrap_or_default()
        .to_string();
    let not_found = |request: Value| {
        compiled
            .not_found
            .render(&json!({"name": name, "request": request}))
    };
    let mut ctx = match &route.object {
        Some(_) => match find(s, &name, route.ignore_case) {
            Some(resource) => object_entry(s, resource),
            None => return not_found(request),
        },
        None => {
            let objects: Vec<Value> = described(s)
                .map(|resource| Value::Object(object_entry(s, resource)))
                .collect();
            Map::from_iter([("objects".to_string(), Value::Array(objects))])
        }
    };
    ctx.insert("base_url".into(), json!(base_url));
    ctx.insert("request".into(), request);
    let ctx = Value::Object(ctx);
    match compiled.body.eval_json(&ctx) {
        Ok(Some(body)) => json_response(200, &body, rate_headers(s)),
        _ => not_found(ctx["request"].clone()),
    }
}

/// The resources that describe an object (a schema with attributes or fields), in profile order.
fn described(s: &Sandbox) -> impl Iterator<Item = &str> {
    s.profile
        .resources
        .iter()
        .filter(|(_, r)| {
            let sc = &r.schema;
            !(sc.object.is_empty() && sc.fields.is_empty() && sc.custom_fields.is_empty())
        })
        .map(|(name, _)| name.as_str())
}

/// The resource whose object `name` names (its `schema.names`, or its own name).
fn find<'a>(s: &'a Sandbox, name: &str, ignore_case: bool) -> Option<&'a str> {
    let same = |a: &str| {
        if ignore_case {
            a.eq_ignore_ascii_case(name)
        } else {
            a == name
        }
    };
    described(s).find(|resource| {
        let names = &s.profile.resources[*resource].schema.names;
        if names.is_empty() {
            same(resource)
        } else {
            names.iter().any(|n| same(n))
        }
    })
}

/// `{resource, object, fields}`: the object's attributes and its fields as they are now.
fn object_entry(s: &Sandbox, resource: &str) -> Map<String, Value> {
    let object: Map<String, Value> = s.profile.resources[resource]
        .schema
        .object
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let fields = lock(&s.data)
        .get(resource)
        .map(|d| d.schema.describe())
        .unwrap_or_default();
    Map::from_iter([
        ("resource".to_string(), json!(resource)),
        ("object".to_string(), Value::Object(object)),
        ("fields".to_string(), Value::Array(fields)),
    ])
}
