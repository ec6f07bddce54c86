-- When a silent channel (no verified delivery for longer than its spec's `silence_seconds`)
-- last had its connection's resources read by incremental runs.
ALTER TABLE webhook_channels ADD COLUMN silence_run_at TEXT;
