-- One token refresh per connection at a time across every worker process: the holder of a
-- connection's row refreshes; the others wait, then re-read the credentials it stored.
CREATE TABLE token_locks (
    connection TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at TEXT NOT NULL
);
