-- Each connection's discovered schema per subject (a spec's discovery name, or
-- `custom:<object>`), the last good one kept when a discovery fails.
CREATE TABLE connection_schemas (
    connection TEXT NOT NULL,
    subject TEXT NOT NULL,
    -- JSON: {"fields": [{name, label, type, custom, required, options}]}
    schema TEXT NOT NULL,
    -- The last good discovery (NULL until one succeeded).
    discovered_at TEXT,
    -- The last attempt, good or not.
    checked_at TEXT NOT NULL,
    -- Why the last attempt failed (NULL when it succeeded).
    error TEXT,
    -- Someone asked for a discovery before the cadence is due.
    requested INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (connection, subject)
);
