-- Tributary state. Portable SQL: the same migration runs on PostgreSQL and SQLite.
-- Times are RFC 3339 text (UTC); JSON is text; ids are text chosen by the application.

CREATE TABLE tenants (
    id TEXT PRIMARY KEY,
    created_at TEXT NOT NULL
);

CREATE TABLE connections (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL REFERENCES tenants (id),
    provider TEXT NOT NULL,
    config TEXT NOT NULL,
    -- AES-256-GCM ciphertext (base64 of nonce || ciphertext) and the id of the key that sealed it.
    credentials TEXT NOT NULL,
    key_id TEXT NOT NULL,
    resources TEXT NOT NULL,
    schedule TEXT,
    state TEXT NOT NULL,
    state_message TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE INDEX connections_tenant ON connections (tenant);

-- One row per (connection, resource): the run in progress (where its next slice starts) and
-- the high-water mark incremental runs start from.
CREATE TABLE checkpoints (
    connection TEXT NOT NULL,
    resource TEXT NOT NULL,
    run_id TEXT,
    mode TEXT,
    slice BIGINT NOT NULL,
    page_state TEXT,
    run_max_updated TEXT,
    since TEXT,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (connection, resource)
);

-- What was last published for each record: a content hash, per-field hashes (to name the
-- changed fields) and the last run that saw it (the deletion sweep).
CREATE TABLE fingerprints (
    connection TEXT NOT NULL,
    resource TEXT NOT NULL,
    record_id TEXT NOT NULL,
    hash TEXT NOT NULL,
    field_hashes TEXT NOT NULL,
    seen_run TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (connection, resource, record_id)
);

CREATE TABLE sync_runs (
    id TEXT PRIMARY KEY,
    connection TEXT NOT NULL,
    resource TEXT NOT NULL,
    mode TEXT NOT NULL,
    reason TEXT NOT NULL,
    status TEXT NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    slices BIGINT NOT NULL,
    pages BIGINT NOT NULL,
    records BIGINT NOT NULL,
    created BIGINT NOT NULL,
    updated BIGINT NOT NULL,
    deleted BIGINT NOT NULL,
    dead_lettered BIGINT NOT NULL,
    error TEXT
);

CREATE INDEX sync_runs_connection ON sync_runs (connection, started_at);
