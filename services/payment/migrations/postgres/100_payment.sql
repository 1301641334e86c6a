-- choreo-payment, PostgreSQL. Versions >= 100 (1-99 belong to choreo-outbox).

CREATE TABLE accounts (
    customer_id   TEXT    PRIMARY KEY,
    balance_minor BIGINT  NOT NULL CHECK (balance_minor >= 0),
    currency      TEXT    NOT NULL,
    -- 0/1 rather than BOOLEAN: sqlx's Any driver cannot decode SQLite booleans.
    blocked       INTEGER NOT NULL DEFAULT 0 CHECK (blocked IN (0, 1))
);

-- One row per order that reached payment, whatever the outcome; the row is
-- the per-order state that makes every handler idempotent. `amount_minor`
-- is what was charged (CAPTURED/REFUNDED) or attempted (FAILED).
CREATE TABLE payments (
    order_id       TEXT   PRIMARY KEY,
    status         TEXT   NOT NULL,
    payment_id     TEXT,
    customer_id    TEXT,
    amount_minor   BIGINT,
    currency       TEXT,
    refunded_minor BIGINT NOT NULL DEFAULT 0,
    reason         TEXT,
    updated_at     BIGINT NOT NULL
);

CREATE INDEX payments_customer ON payments (customer_id);
