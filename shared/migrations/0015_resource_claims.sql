-- Jobs on RabbitMQ are taken by any worker of the fleet (competing consumers), not by the
-- one that owns a tenant's partition: a row here is the one worker allowed to run a job of
-- a (connection, resource) now. The holder renews it while the job runs; a holder that died
-- loses it when it expires.
CREATE TABLE resource_claims (
    connection TEXT NOT NULL,
    resource TEXT NOT NULL,
    holder TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    PRIMARY KEY (connection, resource)
);
