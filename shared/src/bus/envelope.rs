//! What the host's topics receive: change events (one topic per unified model),
//! status events and dead letters. JSON; CloudEvents attribute names where they fit.
//! Each event knows how to become the Kafka message that carries it (topic, key,
//! headers), so the sync stages never assemble envelopes by hand.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::job::Job;
use super::kafka::{OutMessage, Topics};
use crate::domain::{RunCounts, RunMode};

/// The run an event belongs to: the fields every envelope repeats.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRef {
    pub tenant: String,
    pub connection: String,
    pub provider: String,
    pub resource: String,
    pub sync_run: String,
    pub mode: RunMode,
}

impl RunRef {
    pub fn of(job: &Job, provider: &str) -> RunRef {
        RunRef {
            tenant: job.tenant.clone(),
            connection: job.connection.clone(),
            provider: provider.to_string(),
            resource: job.resource.clone(),
            sync_run: job.run_id.clone(),
            mode: job.mode,
        }
    }
}

/// Event times as every envelope writes them.
pub fn event_time(t: DateTime<Utc>) -> String {
    crate::domain::time::stamp(t)
}

/// The unified model a change event carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelRef {
    pub name: &'static str,
    pub version: u32,
}

fn json(value: &impl Serialize) -> Vec<u8> {
    // Envelopes are plain structs of strings, numbers and JSON values: they always serialize.
    serde_json::to_vec(value).expect("envelopes serialize")
}

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

/// What a change event says: the record, its new content (none on delete) and what changed.
#[derive(Debug, Clone, Default)]
pub struct Change {
    pub record_id: String,
    /// Hashes the content: with the record it makes the event id.
    pub content_hash: String,
    pub data: Option<Value>,
    pub changed_fields: Option<Vec<String>>,
    pub remote_data: Option<Value>,
}

impl ChangeEvent {
    pub fn new(run: &RunRef, model: ModelRef, op: Op, change: Change, now: DateTime<Utc>) -> Self {
        let time = event_time(now);
        ChangeEvent {
            id: event_id(
                &run.tenant,
                &run.connection,
                model.name,
                &change.record_id,
                &change.content_hash,
            ),
            specversion: "1.0",
            source: format!("tributary://{}/{}", run.tenant, run.connection),
            event_type: format!("{}.{}", model.name, op.as_str()),
            subject: change.record_id.clone(),
            time: time.clone(),
            op,
            tenant: run.tenant.clone(),
            connection: run.connection.clone(),
            provider: run.provider.clone(),
            model: model.name.to_string(),
            model_version: model.version,
            record_id: change.record_id,
            data: change.data,
            changed_fields: change.changed_fields,
            remote_data: change.remote_data,
            occurred_at: time,
            sync_run: run.sync_run.clone(),
            schema_version: ENVELOPE_VERSION,
        }
    }

    /// Keyed by tenant and record (one record's events stay in order), with the
    /// CloudEvents binary-mode headers.
    pub fn to_message(&self, topic: &str) -> OutMessage {
        OutMessage {
            topic: topic.to_string(),
            key: format!("{}:{}", self.tenant, self.record_id),
            payload: Some(json(self)),
            headers: vec![
                ("tenant", self.tenant.clone()),
                ("connection", self.connection.clone()),
                ("type", self.event_type.clone()),
                ("ce_id", self.id.clone()),
                ("ce_specversion", "1.0".into()),
                ("ce_source", self.source.clone()),
                ("ce_type", self.event_type.clone()),
            ],
        }
    }

    /// The tombstone that follows a delete on compacted topics: same key, no payload.
    pub fn tombstone(&self, topic: &str) -> OutMessage {
        OutMessage {
            topic: topic.to_string(),
            key: format!("{}:{}", self.tenant, self.record_id),
            payload: None,
            headers: vec![
                ("tenant", self.tenant.clone()),
                ("type", self.event_type.clone()),
            ],
        }
    }
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
    /// `run.started`, `run.completed`, `run.failed`, `connection.rate_limited`,
    /// `connection.needs_reauth`, `connection.schema_changed`, `connection.discovery_failed`,
    /// `connection.overrides_changed`.
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
    /// On `connection.schema_changed` and `connection.discovery_failed`: which schema.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema: Option<SchemaNews>,
    pub occurred_at: String,
    pub schema_version: u32,
}

/// The kinds of status events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusKind {
    RunStarted,
    RunCompleted,
    RunFailed,
    RateLimited,
    NeedsReauth,
    SchemaChanged,
    DiscoveryFailed,
    OverridesChanged,
    /// A connection made through a connect session.
    ConnectionCreated,
    /// A connection's credentials replaced through a connect session.
    ConnectionReauthorized,
}

/// What a status event says about a connection's discovered schema.
#[derive(Debug, Clone, Serialize)]
pub struct SchemaNews {
    /// The discovery's name, or `custom:<object>`.
    pub subject: String,
    #[serde(flatten)]
    pub change: crate::domain::SchemaChange,
}

impl StatusKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StatusKind::RunStarted => "run.started",
            StatusKind::RunCompleted => "run.completed",
            StatusKind::RunFailed => "run.failed",
            StatusKind::RateLimited => "connection.rate_limited",
            StatusKind::NeedsReauth => "connection.needs_reauth",
            StatusKind::SchemaChanged => "connection.schema_changed",
            StatusKind::DiscoveryFailed => "connection.discovery_failed",
            StatusKind::OverridesChanged => "connection.overrides_changed",
            StatusKind::ConnectionCreated => "connection.created",
            StatusKind::ConnectionReauthorized => "connection.reauthorized",
        }
    }
}

impl StatusEvent {
    pub fn new(run: &RunRef, kind: StatusKind, now: DateTime<Utc>) -> Self {
        StatusEvent {
            id: uuid::Uuid::now_v7().to_string(),
            event_type: kind.as_str().to_string(),
            tenant: run.tenant.clone(),
            connection: run.connection.clone(),
            provider: run.provider.clone(),
            resource: run.resource.clone(),
            sync_run: run.sync_run.clone(),
            mode: run.mode.as_str().to_string(),
            counts: None,
            reason: None,
            resume_at: None,
            schema: None,
            occurred_at: event_time(now),
            schema_version: ENVELOPE_VERSION,
        }
    }

    /// A connection's overrides changed (set, or removed when `overrides` is None): it
    /// concerns every resource (`*`) and no run; the next full run of each re-maps every
    /// record (`mode: full`).
    pub fn overrides_changed(
        tenant: &str,
        connection: &str,
        provider: &str,
        version: i64,
        removed: bool,
        now: DateTime<Utc>,
    ) -> Self {
        let what = if removed { "removed" } else { "set" };
        StatusEvent::connection_news(
            StatusKind::OverridesChanged,
            tenant,
            connection,
            provider,
            format!("overrides {what}: version {version}"),
            now,
        )
    }

    /// News about a connection itself (created, re-authorized): every resource (`*`), no
    /// run; `reason` says how it came about.
    pub fn connection_news(
        kind: StatusKind,
        tenant: &str,
        connection: &str,
        provider: &str,
        reason: impl Into<String>,
        now: DateTime<Utc>,
    ) -> Self {
        let run = RunRef {
            tenant: tenant.to_string(),
            connection: connection.to_string(),
            provider: provider.to_string(),
            resource: "*".into(),
            sync_run: String::new(),
            mode: RunMode::Full,
        };
        StatusEvent::new(&run, kind, now).with_reason(reason)
    }

    pub fn with_counts(mut self, counts: RunCounts) -> Self {
        self.counts = Some(counts);
        self
    }

    pub fn with_reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    pub fn with_schema(mut self, news: SchemaNews) -> Self {
        self.schema = Some(news);
        self
    }

    pub fn with_resume_at(mut self, at: DateTime<Utc>) -> Self {
        self.resume_at = Some(event_time(at));
        self
    }

    pub fn to_message(&self, topics: &Topics) -> OutMessage {
        OutMessage {
            topic: topics.status(),
            key: format!("{}:{}", self.tenant, self.connection),
            payload: Some(json(self)),
            headers: vec![
                ("tenant", self.tenant.clone()),
                ("connection", self.connection.clone()),
                ("type", self.event_type.clone()),
            ],
        }
    }
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

impl DeadLetter {
    /// `page` is where the record came from; `spec` the spec file that failed to map it.
    pub fn new(
        run: &RunRef,
        spec: &str,
        page: u32,
        failure: RecordFailure,
        now: DateTime<Utc>,
    ) -> Self {
        DeadLetter {
            tenant: run.tenant.clone(),
            connection: run.connection.clone(),
            provider: run.provider.clone(),
            resource: run.resource.clone(),
            spec: spec.to_string(),
            sync_run: run.sync_run.clone(),
            page,
            record_id: failure.record_id,
            error: failure.error,
            raw: failure.raw,
            occurred_at: event_time(now),
            schema_version: ENVELOPE_VERSION,
        }
    }

    pub fn to_message(&self, topics: &Topics) -> OutMessage {
        OutMessage {
            topic: topics.dead_letters(),
            key: format!("{}:{}", self.tenant, self.connection),
            payload: Some(json(self)),
            headers: vec![
                ("tenant", self.tenant.clone()),
                ("connection", self.connection.clone()),
                ("type", "record.dead_lettered".into()),
            ],
        }
    }
}

/// One record that failed its mapping.
#[derive(Debug, Clone)]
pub struct RecordFailure {
    pub record_id: Option<String>,
    pub error: String,
    pub raw: Value,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run() -> RunRef {
        RunRef {
            tenant: "acme".into(),
            connection: "c1".into(),
            provider: "p".into(),
            resource: "contacts".into(),
            sync_run: "run_1".into(),
            mode: RunMode::Full,
        }
    }

    fn model() -> ModelRef {
        ModelRef {
            name: "crm.contact",
            version: 1,
        }
    }

    #[test]
    fn a_change_event_message_is_keyed_by_record_with_cloudevents_headers() {
        let change = Change {
            record_id: "42".into(),
            content_hash: "h".into(),
            data: Some(serde_json::json!({"id": "42"})),
            ..Change::default()
        };
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let event = ChangeEvent::new(&run(), model(), Op::Created, change, now);
        assert_eq!(event.id, event_id("acme", "c1", "crm.contact", "42", "h"));
        assert_eq!(event.event_type, "crm.contact.created");
        let msg = event.to_message("t.crm.contact");
        assert_eq!(
            (msg.topic.as_str(), msg.key.as_str()),
            ("t.crm.contact", "acme:42")
        );
        let header = |n: &str| {
            msg.headers
                .iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(header("ce_id"), Some(event.id.clone()));
        assert_eq!(header("ce_type").as_deref(), Some("crm.contact.created"));
        assert_eq!(header("connection").as_deref(), Some("c1"));
        let body: Value = serde_json::from_slice(msg.payload.as_ref().unwrap()).unwrap();
        assert_eq!(body["occurred_at"], "2027-01-15T08:00:00.000Z");
        assert!(event.tombstone("t").payload.is_none());
    }

    #[test]
    fn status_events_go_to_the_status_topic_keyed_by_connection() {
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let msg = StatusEvent::new(&run(), StatusKind::RateLimited, now)
            .with_reason("throttled")
            .with_resume_at(now)
            .to_message(&Topics::new("t"));
        assert_eq!(
            (msg.topic.as_str(), msg.key.as_str()),
            ("t.status", "acme:c1")
        );
        let body: Value = serde_json::from_slice(msg.payload.as_ref().unwrap()).unwrap();
        assert_eq!(body["type"], "connection.rate_limited");
        assert_eq!(body["resume_at"], "2027-01-15T08:00:00.000Z");
        assert_eq!(body["mode"], "full");
    }

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
