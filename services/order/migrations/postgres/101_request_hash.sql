-- SHA-256 (hex) of the canonical body an order was placed with, so a
-- reused Idempotency-Key / request_id with another body is refused
-- instead of silently answered with the first order. NULL for orders
-- placed before this column existed: those keys keep the old behaviour.
ALTER TABLE orders ADD COLUMN request_hash TEXT;
