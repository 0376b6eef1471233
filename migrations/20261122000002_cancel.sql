-- Cancellation: a cancel of an in-progress run is a request the run's
-- worker carries out (it stops the run within a second, wherever it is).
alter table runs
    add column cancel_requested_at timestamptz,
    -- Why: `cancelled` (POST /v1/runs/{id}/cancel) or `interrupted` (a newer
    -- run on the thread with `multitask: interrupt`).
    add column cancel_reason text;
