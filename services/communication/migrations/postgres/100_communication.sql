-- choreo-communication, PostgreSQL. Versions >= 100 (1-99 belong to choreo-outbox).

-- What the mails need to know about an order, from OrderPlaced. Private to
-- this service (no service reads another's database); rebuilt from the
-- `orders` topic by `choreo-communication rebuild-replica`.
CREATE TABLE orders_replica (
    order_id       TEXT   PRIMARY KEY,
    customer_id    TEXT   NOT NULL,
    customer_email TEXT   NOT NULL,
    lines          TEXT   NOT NULL, -- JSON array of {sku, quantity, unit_price_minor}
    total_minor    BIGINT NOT NULL,
    currency       TEXT   NOT NULL,
    address        TEXT   NOT NULL, -- JSON {name, line1, city, postal_code, country}
    placed_at      BIGINT NOT NULL
);

-- One row per mail sent: the key makes "exactly one mail per order and
-- template" a constraint, not a convention.
CREATE TABLE notifications (
    order_id   TEXT   NOT NULL,
    template   TEXT   NOT NULL,
    recipient  TEXT   NOT NULL,
    message_id TEXT   NOT NULL,
    sent_at    BIGINT NOT NULL,
    PRIMARY KEY (order_id, template)
);

CREATE INDEX notifications_sent_at ON notifications (sent_at);
