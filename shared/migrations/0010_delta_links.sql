-- A resource that tracks changes with delta links (`incremental.delta_link`): the link the
-- last completed round ended with, where the next incremental run starts. Written only by
-- a run's last page, in the transaction that completes the run.
ALTER TABLE checkpoints ADD COLUMN delta_link TEXT;
