-- choreo-outbox: rows the relay set aside because Kafka can never take them
-- (too large, invalid record, unknown topic). Such a row is marked
-- published_at like any row that has left the outbox, so the relay's read
-- and its index stay as they are; `dead_reason` says why it went to the
-- dead-letter path and `dead_letter` where its copy is (`dlq.<service>/
-- <partition>/<offset>`), NULL when no copy could be produced and this row
-- is the only record of the event (retention keeps those).
ALTER TABLE outbox ADD COLUMN dead_reason TEXT;
ALTER TABLE outbox ADD COLUMN dead_letter TEXT;
