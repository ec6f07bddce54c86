-- Webhooks. A connection's channel: for per-connection delivery the hash of the URL's
-- hook token and the subscription registered with the provider (its id, its signing
-- secret sealed like credentials, when it expires); for every delivery kind the
-- channel's health (last verified delivery, deliveries, failures).
CREATE TABLE webhook_channels (
    connection TEXT PRIMARY KEY,
    provider TEXT NOT NULL,
    token_hash TEXT UNIQUE,
    subscription_id TEXT,
    secret TEXT,
    secret_key_id TEXT,
    expires_at TEXT,
    last_delivery_at TEXT,
    deliveries BIGINT NOT NULL DEFAULT 0,
    failures BIGINT NOT NULL DEFAULT 0,
    last_failure TEXT,
    last_failure_at TEXT,
    created_at TEXT NOT NULL
);

-- Event ids already handled, per provider, until `expires_at` (past the provider's retry
-- horizon): the provider's retries and duplicates are dropped by them.
CREATE TABLE webhook_events_seen (
    provider TEXT NOT NULL,
    event_id TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    PRIMARY KEY (provider, event_id)
);

-- App-level deliveries are routed by the account id each item names.
CREATE INDEX connections_external_id ON connections (provider, external_id);
