-- Rate budgets shared by every worker replica (times: microseconds since the Unix epoch).
-- A spaced budget: the earliest time its next request may go.
CREATE TABLE rate_budgets (
    key TEXT PRIMARY KEY,
    next_at BIGINT NOT NULL
);

-- Requests counted against a per-day budget.
CREATE TABLE rate_budget_days (
    key TEXT NOT NULL,
    day TEXT NOT NULL,
    used BIGINT NOT NULL,
    PRIMARY KEY (key, day)
);

-- In-flight slots of a concurrency budget, leased so a dead replica's slot comes back.
CREATE TABLE rate_budget_slots (
    key TEXT NOT NULL,
    slot BIGINT NOT NULL,
    holder TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (key, slot)
);

-- The connection's circuit breaker: consecutive failed or throttled slices, and until when
-- its jobs wait (RFC 3339). The first job after that is the half-open probe.
ALTER TABLE connections ADD COLUMN failure_streak BIGINT NOT NULL DEFAULT 0;
ALTER TABLE connections ADD COLUMN blocked_until TEXT;
