-- The W3C `traceparent` of the span the order was placed in, so the
-- deadline timer's cancellation joins the order's trace instead of
-- starting one of its own. NULL when nothing traced the placement (or
-- for orders placed before this column existed).
ALTER TABLE orders ADD COLUMN trace_context TEXT;
