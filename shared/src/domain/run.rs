//! Sync runs: their mode, their status and their counters.

use serde::{Deserialize, Serialize};

use super::named_enum;

/// Full syncs sweep deletions; incremental ones ask for changes since the last run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunMode {
    Full,
    Incremental,
    /// Records read by id because a webhook named them: no checkpoint, no sweep.
    Fetch,
}

named_enum!(RunMode, "run mode", {
    Full => "full",
    Incremental => "incremental",
    Fetch => "fetch",
});

/// Where a sync run stands (the `status` of a `sync_runs` row).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunStatus {
    Running,
    Completed,
    /// Ended without completing (no deletes); the row says why.
    Failed,
}

named_enum!(RunStatus, "run status", {
    Running => "running",
    Completed => "completed",
    Failed => "failed",
});

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

impl RunCounts {
    /// Add another's counts to these.
    pub fn add(&mut self, other: &RunCounts) {
        self.slices += other.slices;
        self.pages += other.pages;
        self.records += other.records;
        self.created += other.created;
        self.updated += other.updated;
        self.deleted += other.deleted;
        self.dead_lettered += other.dead_lettered;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_text_and_serde() {
        for mode in RunMode::ALL {
            assert_eq!(mode.as_str().parse::<RunMode>(), Ok(*mode));
            assert_eq!(serde_json::to_value(mode).unwrap(), mode.as_str());
        }
        for status in RunStatus::ALL {
            assert_eq!(status.to_string().parse::<RunStatus>(), Ok(*status));
            let back: RunStatus =
                serde_json::from_value(serde_json::json!(status.as_str())).unwrap();
            assert_eq!(back, *status);
        }
        let err = "partial".parse::<RunStatus>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "`partial` is not a run status; expected one of: running, completed, failed"
        );
    }
}
