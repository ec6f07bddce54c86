-- Schedules (one row per connection and resource, with the lease that keeps one job in
-- flight) and tenant-scoped API tokens (stored as SHA-256 hashes, never in clear).

ALTER TABLE connections ADD COLUMN full_schedule TEXT;
ALTER TABLE connections ADD COLUMN timezone TEXT NOT NULL DEFAULT 'UTC';

CREATE TABLE schedules (
    connection TEXT NOT NULL,
    resource TEXT NOT NULL,
    tenant TEXT NOT NULL,
    next_run_at TEXT NOT NULL,
    next_full_at TEXT NOT NULL,
    lease_run_id TEXT,
    lease_expires_at TEXT,
    PRIMARY KEY (connection, resource)
);

CREATE INDEX schedules_due ON schedules (next_run_at);
CREATE INDEX schedules_lease ON schedules (lease_run_id);

CREATE TABLE api_tokens (
    token_hash TEXT PRIMARY KEY,
    tenant TEXT NOT NULL REFERENCES tenants (id),
    created_at TEXT NOT NULL
);
