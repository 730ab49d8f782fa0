-- The data the scenario moves: 50,000 rows of text (with non-ASCII), bytea, jsonb and timestamps,
-- an index and a sequence. Deterministic, so two fills compare equal.
CREATE TABLE items (
    id integer PRIMARY KEY,
    name text NOT NULL,
    payload bytea NOT NULL,
    doc jsonb NOT NULL,
    created timestamptz NOT NULL
);
INSERT INTO items
SELECT i,
       'item ' || i || ' ünïcødé ✓',
       sha256(convert_to(i::text, 'UTF8')),
       jsonb_build_object('i', i, 'square', i::bigint * i, 'even', i % 2 = 0),
       timestamptz '2026-01-01 00:00:00+00' + i * interval '1 minute'
FROM generate_series(1, 50000) AS i;
CREATE INDEX items_name ON items (name);
CREATE SEQUENCE items_next START 50001;
CHECKPOINT;
