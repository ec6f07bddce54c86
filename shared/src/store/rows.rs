//! What the store reads and writes.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::engine::PageState;
use crate::secrets::Credentials;

/// A connection to create.
#[derive(Debug, Clone)]
pub struct NewConnection {
    /// Chosen by the caller, or generated.
    pub id: Option<String>,
    pub tenant: String,
    pub provider: String,
    pub config: Map<String, Value>,
    pub credentials: Credentials,
    pub resources: Vec<String>,
    pub schedule: Option<String>,
    /// Cadence of full syncs (deletion sweeps).
    pub full_schedule: Option<String>,
    /// IANA time zone the schedules are read in.
    pub timezone: String,
}

/// A stored connection, credentials opened.
#[derive(Debug, Clone)]
pub struct ConnectionRecord {
    pub id: String,
    pub tenant: String,
    pub provider: String,
    pub config: Map<String, Value>,
    pub credentials: Credentials,
    pub resources: Vec<String>,
    pub schedule: Option<String>,
    pub full_schedule: Option<String>,
    pub timezone: String,
    pub state: String,
    pub state_message: Option<String>,
    /// Consecutive failed or throttled slices (the circuit breaker's count).
    pub failure_streak: i64,
    /// Jobs of this connection wait until then (a provider throttle, a spent budget, an
    /// open circuit); shown as the expected resume time.
    pub blocked_until: Option<chrono::DateTime<chrono::Utc>>,
}

/// A (connection, resource) the scheduler found due.
#[derive(Debug, Clone)]
pub struct DueSchedule {
    pub connection: String,
    pub resource: String,
    pub tenant: String,
    pub schedule: Option<String>,
    pub full_schedule: Option<String>,
    pub timezone: String,
    pub next_run_at: String,
    pub next_full_at: String,
    pub lease_run_id: Option<String>,
}

/// Full syncs sweep deletions; incremental ones ask for changes since the last run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunMode {
    Full,
    Incremental,
}

impl RunMode {
    pub fn as_str(self) -> &'static str {
        match self {
            RunMode::Full => "full",
            RunMode::Incremental => "incremental",
        }
    }
}

/// Where a (connection, resource) stands.
#[derive(Debug, Clone, Default)]
pub struct Checkpoint {
    /// The run in progress, if any.
    pub run_id: Option<String>,
    pub mode: Option<String>,
    /// Slices committed (of the run in progress, or of the last run).
    pub slice: i64,
    /// Where the run's next slice starts.
    pub page_state: Option<PageState>,
    /// Latest updated-at seen so far by the run in progress.
    pub run_max_updated: Option<DateTime<Utc>>,
    /// Where the next incremental run starts (the last completed run's high-water mark).
    pub since: Option<DateTime<Utc>>,
}

/// A record's last published state.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredFingerprint {
    pub record_id: String,
    pub hash: String,
    pub field_hashes: BTreeMap<String, String>,
}

/// A sync run's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunCounts {
    pub slices: i64,
    pub pages: i64,
    pub records: i64,
    pub created: i64,
    pub updated: i64,
    pub deleted: i64,
    pub dead_lettered: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    pub id: String,
    pub connection: String,
    pub resource: String,
    pub mode: String,
    pub reason: String,
    pub status: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub counts: RunCounts,
    pub error: Option<String>,
}

pub struct NewRun<'a> {
    pub id: &'a str,
    pub connection: &'a str,
    pub resource: &'a str,
    pub mode: &'a str,
    pub reason: &'a str,
}

/// What one slice commits (see `Store::commit_slice`).
pub struct SliceCommit<'a> {
    pub connection: &'a str,
    pub resource: &'a str,
    pub run_id: &'a str,
    /// Slices committed including this one.
    pub slice: i64,
    pub seen: &'a [StoredFingerprint],
    /// Records seen but not fingerprinted (dead-lettered): kept, marked seen by this run.
    pub touched: &'a [String],
    pub deleted: &'a [String],
    /// Where the next slice starts (None with `finished_since`).
    pub next: Option<&'a PageState>,
    pub run_max_updated: Option<DateTime<Utc>>,
    /// Set when the run completed: the new incremental start (may itself be None).
    pub finished_since: Option<Option<DateTime<Utc>>>,
    pub counts: RunCounts,
}
