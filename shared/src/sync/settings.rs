//! How slices behave (the circuit breaker's numbers are `breaker::BreakerSettings`, in
//! `engine.breaker`). Each struct's `Default` is the
//! one source of its defaults; `config::Settings` overlays the environment on them (and
//! documents each variable, see `config::entries`).

use std::path::PathBuf;
use std::time::Duration;

use crate::budget::BudgetSettings;
use crate::bus::Topics;
use crate::domain::LedgerChoice;
use crate::engine::RunOptions;

/// How slices behave.
#[derive(Debug, Clone)]
pub struct SyncSettings {
    /// Where `<provider>.yaml` specs are.
    pub specs_dir: PathBuf,
    /// Where the environment's overlays (`<provider>.yaml` overrides) are, if anywhere.
    pub overrides_dir: Option<PathBuf>,
    pub topics: Topics,
    /// Pages per slice before it checkpoints and enqueues its continuation.
    pub slice_max_pages: u32,
    /// Time per slice, likewise.
    pub slice_max_duration: Duration,
    /// Pages read and processed ahead of the one being published and committed (at
    /// least 1). A crash replays at most these.
    pub pages_in_flight: usize,
    /// Include the raw provider record in change events.
    pub emit_remote_data: bool,
    /// Follow each delete event with a tombstone (compacted topics).
    pub tombstones: bool,
    /// Discover every account's fields at least this often (seconds), even where a spec
    /// declares a longer cadence; None keeps each spec's own (daily by default).
    pub discovery_max_age: Option<u64>,
    pub engine: RunOptions,
    pub budgets: BudgetSettings,
    pub ledger: LedgerChoice,
}

impl Default for SyncSettings {
    fn default() -> Self {
        SyncSettings {
            specs_dir: PathBuf::from("provider-specs"),
            overrides_dir: None,
            topics: Topics::new("tributary"),
            slice_max_pages: 50,
            slice_max_duration: Duration::from_secs(30),
            pages_in_flight: 2,
            emit_remote_data: true,
            tombstones: false,
            discovery_max_age: None,
            engine: RunOptions::default(),
            budgets: BudgetSettings::default(),
            ledger: LedgerChoice::Auto,
        }
    }
}

impl SyncSettings {
    /// Defaults for everything but where specs are and what topics are called.
    pub fn new(specs_dir: PathBuf, topics: Topics) -> Self {
        SyncSettings {
            specs_dir,
            topics,
            ..SyncSettings::default()
        }
    }
}
