-- A connection's id at its provider (a portal, org, company or tenant id), captured when it
-- is connected through a connect session; webhooks route by it.
ALTER TABLE connections ADD COLUMN external_id TEXT;

-- Connect sessions: the host product's backend mints one for a tenant, its user opens the
-- URL (carrying `token`, stored only hashed), connects an account, and is sent back to
-- `return_url`. `state` is pending, connected or failed (with `reason`); a pending session
-- past `expires_at` reads as expired. While an authorization is under way, `oauth_state_hash`
-- is the hash of the OAuth `state` parameter (cleared when the callback takes it: single use)
-- and `verifier` the PKCE code verifier, sealed like credentials.
CREATE TABLE connect_sessions (
    id TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE,
    tenant TEXT NOT NULL REFERENCES tenants (id),
    providers TEXT NOT NULL,
    resources TEXT,
    return_url TEXT NOT NULL,
    config TEXT NOT NULL,
    reauthorize TEXT,
    state TEXT NOT NULL,
    reason TEXT,
    provider TEXT,
    oauth_state_hash TEXT UNIQUE,
    verifier TEXT,
    verifier_key_id TEXT,
    connection_id TEXT,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    finished_at TEXT
);
