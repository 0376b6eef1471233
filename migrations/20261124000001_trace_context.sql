-- The W3C trace context (traceparent, tracestate) of the request that
-- created a run, so that every attempt of the run, however it was queued,
-- joins that request's trace.
alter table runs add column trace_context jsonb;
