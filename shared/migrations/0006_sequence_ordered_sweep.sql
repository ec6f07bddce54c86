-- The deletion sweep orders "seen after this run started" by a sequence of the
-- (connection, resource), handed out by the database, instead of comparing timestamps
-- written by different workers' clocks (a tie or a skew could sweep a live record).
-- `checkpoints.seq` is the resource's counter; a run takes a value when it starts
-- (`sync_runs.start_seq`), each slice commit takes a new one and stamps the records it
-- saw (`fingerprints.seen_seq`). A run started before this migration has no start_seq
-- and sweeps nothing (the next full run does).
ALTER TABLE checkpoints ADD COLUMN seq BIGINT NOT NULL DEFAULT 0;
ALTER TABLE sync_runs ADD COLUMN start_seq BIGINT;
ALTER TABLE fingerprints ADD COLUMN seen_seq BIGINT NOT NULL DEFAULT 0;
