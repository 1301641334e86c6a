-- choreo-outbox, SQLite. Versions 1-99 are reserved for this crate; services
-- number their own migrations from 100 up and share `_sqlx_migrations`.

-- AUTOINCREMENT (not just INTEGER PRIMARY KEY): a seq is never reused, even
-- after purge deletes the highest rows, so seq order stays publish order.
CREATE TABLE outbox (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    topic        TEXT    NOT NULL,
    key          TEXT    NOT NULL,
    payload      BLOB    NOT NULL,
    headers      TEXT    NOT NULL DEFAULT '[]',
    created_at   BIGINT  NOT NULL,
    published_at BIGINT
);

-- The relay's read: unpublished rows in seq order.
CREATE INDEX outbox_unpublished ON outbox (seq) WHERE published_at IS NULL;
-- Retention: published rows by age.
CREATE INDEX outbox_published_at ON outbox (published_at) WHERE published_at IS NOT NULL;

CREATE TABLE inbox (
    consumer TEXT   NOT NULL,
    event_id TEXT   NOT NULL,
    seen_at  BIGINT NOT NULL,
    PRIMARY KEY (consumer, event_id)
);

CREATE INDEX inbox_seen_at ON inbox (seen_at);
