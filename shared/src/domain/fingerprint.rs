//! What was last published for a record: compared with a new read to tell created,
//! updated and unchanged apart, and swept by a completed full run.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

/// A record's last published state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoredFingerprint {
    pub record_id: String,
    /// Order-independent hash of the whole unified record.
    pub hash: String,
    /// Hash per top-level field (names the changed fields of an update).
    pub field_hashes: BTreeMap<String, String>,
    /// The provider's updated-at of that version (`records.updated_at`), when it has one:
    /// an older read or push of the record is stale and publishes nothing.
    pub source_updated_at: Option<DateTime<Utc>>,
}
