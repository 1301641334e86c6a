-- choreo-courier, PostgreSQL. Service migrations start at 100; 1-99 belong to
-- choreo-outbox and share `_sqlx_migrations`.

-- Per-order shipment state. Shipment columns are NULL until a shipment is
-- manifested (FAILED keeps what was known about the order; VOID, the
-- tombstone of a cancel that came first, knows nothing).
CREATE TABLE shipments (
    order_id        TEXT   PRIMARY KEY,
    status          TEXT   NOT NULL,
    shipment_id     TEXT,
    carrier         TEXT,
    tracking_number TEXT,
    country         TEXT,
    customer_id     TEXT,
    amount_minor    BIGINT,
    currency        TEXT,
    updated_at      BIGINT NOT NULL
);
