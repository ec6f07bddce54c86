-- A slice that ends before its run commits the checkpoint (slice N -> N+1) and then puts
-- the continuation (slice N+1) on the bus: two systems, no transaction across them. Until
-- the bus has confirmed the continuation, `handover_pending` is 1, so a retry of slice N
-- (the broker was gone, the worker died between the two) re-sends the continuation instead
-- of skipping a slice that is already done and losing the rest of the run.
ALTER TABLE checkpoints ADD COLUMN handover_pending INTEGER NOT NULL DEFAULT 0;
