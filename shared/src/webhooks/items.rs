//! A stored delivery read into items: the body parsed, split by `items`, and each item's
//! routing key, event id, resource, record id and operation evaluated. Pure.

use serde_json::Value;

use crate::mapping::jsonata::{truthy, Jsonata};
use crate::spec::compile_webhooks::CompiledWebhooks;

/// What an item says happened to its record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemOp {
    Created,
    Updated,
    Deleted,
}

impl ItemOp {
    fn read(text: &str) -> ItemOp {
        match text {
            "created" => ItemOp::Created,
            "deleted" => ItemOp::Deleted,
            _ => ItemOp::Updated,
        }
    }
}

/// One item of a delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// App delivery: the account id it names (matched against `external_id`).
    pub route_key: Option<String>,
    /// None where the provider gives no event id (nothing is deduplicated).
    pub event_id: Option<String>,
    /// None: about something this spec does not sync (ignored).
    pub resource: Option<String>,
    pub record_id: String,
    pub op: ItemOp,
    /// Part of a bulk change: refreshed by an incremental run.
    pub coalesce: bool,
    /// The record itself, where the provider pushes it (`event.record`; never for a
    /// deletion).
    pub record: Option<Value>,
}

/// An item that could not be read, with the item and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Unreadable {
    pub item: Value,
    pub reason: String,
}

/// The delivery's items, in order. An error: the body itself cannot be read.
pub fn read_items(
    hooks: &CompiledWebhooks,
    body: &[u8],
) -> Result<Vec<Result<Item, Unreadable>>, String> {
    Ok(split_items(hooks, body)?
        .into_iter()
        .map(|item| read_item(hooks, item))
        .collect())
}

/// The body parsed and split by `items` (a single object is one item).
pub fn split_items(hooks: &CompiledWebhooks, body: &[u8]) -> Result<Vec<Value>, String> {
    let parsed: Value =
        serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    match hooks.items.eval_json(&parsed) {
        Ok(Some(Value::Array(list))) => Ok(list),
        Ok(Some(one)) => Ok(vec![one]),
        Ok(None) => Ok(Vec::new()),
        Err(e) => Err(format!("`webhooks.items` failed: {e}")),
    }
}

fn read_item(hooks: &CompiledWebhooks, item: Value) -> Result<Item, Unreadable> {
    let e = &hooks.event;
    let read = || -> Result<Item, String> {
        let route_key = match &hooks.route {
            Some(r) => Some(text(r, &item, "route.key")?.ok_or("`route.key` gave nothing")?),
            None => None,
        };
        let coalesce =
            (e.coalesce_when.as_ref()).is_some_and(|c| truthy(&c.eval_json(&item).ok().flatten()));
        let record_id = text(&e.record_id, &item, "event.record_id")?;
        let op = ItemOp::read(&text(&e.op, &item, "event.op")?.unwrap_or_default());
        Ok(Item {
            route_key,
            event_id: match &e.id {
                Some(id) => Some(text(id, &item, "event.id")?.ok_or("`event.id` gave nothing")?),
                None => None,
            },
            resource: text(&e.resource, &item, "event.resource")?,
            record_id: match (record_id, coalesce) {
                (Some(id), _) => id,
                // Refreshed by an incremental run: no record to name.
                (None, true) => String::new(),
                (None, false) => return Err("`event.record_id` gave nothing".into()),
            },
            op,
            coalesce,
            record: match (&e.record, op) {
                (Some(r), ItemOp::Created | ItemOp::Updated) => pushed(r, &item)?,
                _ => None,
            },
        })
    };
    read().map_err(|reason| Unreadable {
        item: item.clone(),
        reason,
    })
}

/// The pushed record: an object, or nothing (null and undefined: read it instead).
fn pushed(expr: &Jsonata, item: &Value) -> Result<Option<Value>, String> {
    match expr.eval_json(item) {
        Ok(None | Some(Value::Null)) => Ok(None),
        Ok(Some(record @ Value::Object(_))) => Ok(Some(record)),
        Ok(Some(other)) => Err(format!(
            "`webhooks.event.record` gave `{other}` where a record (an object) belongs"
        )),
        Err(err) => Err(format!("`webhooks.event.record` failed: {err}")),
    }
}

/// An expression's value as text (numbers written plainly); None when undefined or null.
fn text(expr: &Jsonata, item: &Value, what: &str) -> Result<Option<String>, String> {
    match expr.eval_json(item) {
        Ok(None | Some(Value::Null)) => Ok(None),
        Ok(Some(Value::String(s))) => Ok(Some(s)),
        Ok(Some(Value::Number(n))) => Ok(Some(match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => format!("{}", f as i64),
            _ => n.to_string(),
        })),
        Ok(Some(other)) => Ok(Some(other.to_string())),
        Err(err) => Err(format!("`webhooks.{what}` failed: {err}")),
    }
}
