//! Webhooks: deliveries the providers push, from the receiver's check to the jobs
//! that read what they announce.
//!
//! 1. `receive` (pure, used by the scheduler's HTTP server): a handshake answered at
//!    once; the method, size and authenticity (`verify`) checked against the raw bytes;
//!    a verified delivery becomes a [`RawDelivery`], which the server appends to
//!    `<prefix>.webhooks` and answers only once the broker acknowledged it.
//! 2. `items` (pure): a stored delivery split into items, each with its routing key,
//!    event id, resource, record id and operation.
//! 3. `intake` (the worker fleet's consumer of `<prefix>.webhooks`): items routed to
//!    connections (unknown ones parked on `<prefix>.webhooks.unrouted`), duplicates
//!    dropped by event id, ids collected per (connection, resource) and enqueued as one
//!    fetch job on the urgent jobs topic (or one incremental run for a storm); the
//!    topic's offsets committed (or the queue's deliveries acknowledged) only after that;
//!    `stored` reads either bus.
//!
//! The fetch job itself runs in `sync::fetch`, through the same normalize, fingerprint
//! and publish path as every sync page.

pub mod intake;
pub mod items;
pub mod receive;
pub mod stored;
pub mod verify;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::bus::OutMessage;

pub const DELIVERY_SCHEMA_VERSION: u32 = 1;

/// The receiver's patience and the intake's window.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// How long an append may wait for the broker before the request gets 503.
    pub ack_timeout: std::time::Duration,
    /// How long ids are collected before one fetch job reads them.
    pub window: std::time::Duration,
    pub upkeep_interval: std::time::Duration,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        WebhookSettings {
            ack_timeout: std::time::Duration::from_millis(2000),
            window: std::time::Duration::from_millis(500),
            upkeep_interval: std::time::Duration::from_secs(60),
        }
    }
}

/// A verified delivery as stored on `<prefix>.webhooks`: everything processing needs,
/// nothing a verification did not cover decides where it goes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RawDelivery {
    pub schema_version: u32,
    /// Ours, unique per received request.
    pub id: String,
    pub provider: String,
    /// Set for per-connection delivery: the connection the URL's token opened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    pub received_at: DateTime<Utc>,
    pub method: String,
    /// The headers the spec keeps (lower-case names).
    pub headers: Vec<(String, String)>,
    /// The raw body, base64.
    pub body: String,
    /// The header of the scheme that verified it.
    pub verified_by: String,
}

impl RawDelivery {
    pub fn body_bytes(&self) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD
            .decode(&self.body)
            .unwrap_or_default()
    }

    /// The message appending it to the webhooks topic, keyed by its connection when it
    /// has one (one connection's deliveries stay in order), else by its id.
    pub fn message(&self, topic: &str) -> OutMessage {
        OutMessage {
            topic: topic.to_string(),
            key: self.connection.clone().unwrap_or_else(|| self.id.clone()),
            payload: Some(serde_json::to_vec(self).expect("deliveries serialize")),
            headers: vec![("provider", self.provider.clone())],
        }
    }
}
