-- A connection's overrides (the top layer over its provider's spec and the environment's
-- overlay): the JSON as set through the API (NULL once removed) and a version that every
-- change, set or removal, increments. Slices compile a connection's spec once per version.
CREATE TABLE connection_overrides (
    connection TEXT PRIMARY KEY REFERENCES connections (id),
    overrides TEXT,
    version BIGINT NOT NULL,
    updated_at TEXT NOT NULL
);
