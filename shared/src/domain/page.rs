//! Where a run is in a resource's pages.

use serde::{Deserialize, Serialize};

/// Where a run is in the pages: what the next request asks for. Stored as a
/// checkpoint so a run can resume where it stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PageState {
    First,
    Cursor { cursor: String },
    Url { url: String },
    Offset { offset: u64 },
    Page { page: u64 },
}
