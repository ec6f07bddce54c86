//! How slices behave, and the circuit breaker's numbers. Each struct's `Default` is the
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
    pub topics: Topics,
    /// Pages per slice before it checkpoints and enqueues its continuation.
    pub slice_max_pages: u32,
    /// Time per slice, likewise.
    pub slice_max_duration: Duration,
    /// Include the raw provider record in change events.
    pub emit_remote_data: bool,
    /// Follow each delete event with a tombstone (compacted topics).
    pub tombstones: bool,
    pub engine: RunOptions,
    pub budgets: BudgetSettings,
    pub ledger: LedgerChoice,
    pub breaker: BreakerSettings,
}

impl Default for SyncSettings {
    fn default() -> Self {
        SyncSettings {
            specs_dir: PathBuf::from("provider-specs"),
            topics: Topics::new("tributary"),
            slice_max_pages: 50,
            slice_max_duration: Duration::from_secs(30),
            emit_remote_data: true,
            tombstones: false,
            engine: RunOptions::default(),
            budgets: BudgetSettings::default(),
            ledger: LedgerChoice::Auto,
            breaker: BreakerSettings::default(),
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

/// When a connection's circuit opens and how long it stays open. (How many throttles in a
/// row of one request open it is the engine's `RunOptions::breaker_after`.)
#[derive(Debug, Clone)]
pub struct BreakerSettings {
    /// How long the circuit holds the connection's jobs the first time it opens; doubles
    /// each time it opens again in a row.
    pub open: Duration,
    /// The longest the circuit holds them.
    pub max_open: Duration,
    /// Runs failing in a row on something that may pass (5xx, timeouts) that open it.
    pub failed_runs: i64,
    /// Once the circuit's time is up, one job probes the provider; the connection's other
    /// jobs wait this long for its verdict.
    pub probe_hold: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        BreakerSettings {
            open: Duration::from_secs(60),
            max_open: Duration::from_secs(600),
            failed_runs: 3,
            probe_hold: Duration::from_secs(30),
        }
    }
}
