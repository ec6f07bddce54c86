//! What the host's topics receive: change events (one topic per unified model),
//! status events and dead letters. JSON; CloudEvents attribute names where they fit.

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::domain::RunCounts;

/// Version of the event envelope (`schemas/events/change-event.v1.json`).
pub const ENVELOPE_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Created,
    Updated,
    Deleted,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Created => "created",
            Op::Updated => "updated",
            Op::Deleted => "deleted",
        }
    }
}

/// One created / updated / deleted record.
#[derive(Debug, Clone, Serialize)]
pub struct ChangeEvent {
    /// Deterministic: tenant, connection, model, record id and content hash. A replayed
    /// slice produces the same ids, so consumers can deduplicate.
    pub id: String,
    pub specversion: &'static str,
    /// `tributary://<tenant>/<connection>`
    pub source: String,
    /// `<model>.<op>`, e.g. `crm.contact.updated`.
    #[serde(rename = "type")]
    pub event_type: String,
    pub subject: String,
    pub time: String,
    pub op: Op,
    pub tenant: String,
    pub connection: String,
    pub provider: String,
    pub model: String,
    pub model_version: u32,
    pub record_id: String,
    /// The unified record (with `custom_fields`); null on delete.
    pub data: Option<Value>,
    /// Names of the unified fields that changed (updates only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changed_fields: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_data: Option<Value>,
    pub occurred_at: String,
    pub sync_run: String,
    pub schema_version: u32,
}

/// The deterministic event id.
pub fn event_id(
    tenant: &str,
    connection: &str,
    model: &str,
    record_id: &str,
    content_hash: &str,
) -> String {
    let mut h = Sha256::new();
    for part in [tenant, connection, model, record_id, content_hash] {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    let d = h.finalize();
    // Shaped like a UUID so consumers' id columns take it as is.
    let x = hex::encode(&d[..16]);
    format!(
        "{}-{}-{}-{}-{}",
        &x[0..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..32]
    )
}

/// Run lifecycle, for connection health in the host's UI.
#[derive(Debug, Clone, Serialize)]
pub struct StatusEvent {
    pub id: String,
    /// `run.started`, `run.completed`, `run.failed`, `connection.rate_limited`, `connection.needs_reauth`.
    #[serde(rename = "type")]
    pub event_type: String,
    pub tenant: String,
    pub connection: String,
    pub provider: String,
    pub resource: String,
    pub sync_run: String,
    pub mode: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counts: Option<RunCounts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// On `connection.rate_limited`: when the connection's jobs resume (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resume_at: Option<String>,
    pub occurred_at: String,
    pub schema_version: u32,
}

/// A record that could not be normalized: never dropped silently.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    pub tenant: String,
    pub connection: String,
    pub provider: String,
    pub resource: String,
    pub spec: String,
    pub sync_run: String,
    pub page: u32,
    pub record_id: Option<String>,
    pub error: String,
    pub raw: Value,
    pub occurred_at: String,
    pub schema_version: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_are_deterministic_and_distinct() {
        let a = event_id("acme", "c1", "crm.contact", "42", "h1");
        assert_eq!(a, event_id("acme", "c1", "crm.contact", "42", "h1"));
        assert_ne!(a, event_id("acme", "c1", "crm.contact", "42", "h2"));
        assert_ne!(a, event_id("acme", "c2", "crm.contact", "42", "h1"));
        // Separators keep ("a", "bc") and ("ab", "c") apart.
        assert_ne!(
            event_id("a", "bc", "m", "r", "h"),
            event_id("ab", "c", "m", "r", "h")
        );
        assert_eq!(a.len(), 36);
    }
}
