-- choreo-inventory, PostgreSQL. Service migrations start at 100; 1-99 belong to
-- choreo-outbox and share `_sqlx_migrations`.

-- Stock per SKU. The CHECKs are the last line of defence for "stock never
-- goes below zero"; the handlers' conditional UPDATEs never hit them.
CREATE TABLE stock (
    sku       TEXT    PRIMARY KEY,
    available BIGINT  NOT NULL CHECK (available >= 0),
    reserved  BIGINT  NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    committed BIGINT  NOT NULL DEFAULT 0 CHECK (committed >= 0)
);

-- Per-order reservation state; `lines` is the order's lines as JSON
-- ([{sku, quantity, unit_price_minor}]), so a release or commit moves
-- exactly what was reserved.
CREATE TABLE reservations (
    order_id   TEXT   PRIMARY KEY,
    status     TEXT   NOT NULL,
    lines      TEXT   NOT NULL DEFAULT '[]',
    updated_at BIGINT NOT NULL
);
