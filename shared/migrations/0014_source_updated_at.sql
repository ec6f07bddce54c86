-- The provider's own updated-at of the version each fingerprint describes (RFC 3339, UTC),
-- where the resource declares `records.updated_at`: a record read or pushed with an older
-- one is stale and never replaces what was published (webhooks arrive out of order).
ALTER TABLE fingerprints ADD COLUMN source_updated_at TEXT;
