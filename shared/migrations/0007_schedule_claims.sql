-- A tick reads due schedules a batch at a time, each batch a range of one index that starts
-- where the last one ended: lease-free schedules by due time, and leased ones by when their
-- lease runs out. Partial indexes, so leases held by running jobs are never walked over.
-- They replace `schedules_due` (next_run_at over every row), which only the tick read.
CREATE INDEX schedules_free_due ON schedules (next_run_at, connection, resource) WHERE lease_run_id IS NULL;
CREATE INDEX schedules_lease_expiry ON schedules (lease_expires_at, connection, resource) WHERE lease_run_id IS NOT NULL;
DROP INDEX schedules_due;
