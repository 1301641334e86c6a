-- The order service's own state. Times are epoch milliseconds (BIGINT),
-- JSON columns are TEXT: the same portable types on SQLite and PostgreSQL.
CREATE TABLE IF NOT EXISTS orders (
    order_id         TEXT PRIMARY KEY,
    -- HTTP Idempotency-Key or PlaceOrder.request_id; NULLs do not collide.
    idempotency_key  TEXT UNIQUE,
    status           TEXT NOT NULL,
    reason           TEXT,
    customer_id      TEXT NOT NULL,
    customer_email   TEXT NOT NULL,
    items            TEXT NOT NULL,
    total_minor      BIGINT NOT NULL,
    currency         TEXT NOT NULL,
    shipping_address TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    deadline_at      BIGINT NOT NULL
);

-- The deadline timer's scan: only open orders are ever due.
CREATE INDEX IF NOT EXISTS orders_open_by_deadline
    ON orders (deadline_at) WHERE status IN ('PENDING', 'CANCELLING');
-- GET /orders pages by (created_at, order_id), optionally per status.
CREATE INDEX IF NOT EXISTS orders_by_creation ON orders (created_at, order_id);
CREATE INDEX IF NOT EXISTS orders_by_status_creation ON orders (status, created_at, order_id);

-- Every event consumed or emitted for an order, in the order it was handled.
CREATE TABLE IF NOT EXISTS order_timeline (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    order_id    TEXT NOT NULL,
    event_type  TEXT NOT NULL,
    topic       TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    occurred_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS order_timeline_by_order ON order_timeline (order_id, seq);
