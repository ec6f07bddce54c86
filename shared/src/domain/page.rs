//! Where a run is in a resource's pages.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Values a run captured from its first page (a spec's `pagination.capture`), which later
/// requests of the same run send again: e.g. the snapshot time a provider pins page 1 to.
pub type Captured = BTreeMap<String, String>;

/// Where a run is in the pages: what the next request asks for, and what the run captured
/// from its first page. Stored as a checkpoint so a run can resume where it stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PageState {
    First,
    Cursor {
        cursor: String,
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        captured: Captured,
    },
    Url {
        url: String,
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        captured: Captured,
    },
    Offset {
        offset: u64,
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        captured: Captured,
    },
    Page {
        page: u64,
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        captured: Captured,
    },
}

impl PageState {
    /// What the run captured from its first page (nothing before it is read).
    pub fn captured(&self) -> Option<&Captured> {
        match self {
            PageState::First => None,
            PageState::Cursor { captured, .. }
            | PageState::Url { captured, .. }
            | PageState::Offset { captured, .. }
            | PageState::Page { captured, .. } => Some(captured),
        }
    }
}
