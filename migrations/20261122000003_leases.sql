-- Leases: the worker running a run renews `lease_expires_at` every few
-- seconds; a run whose lease expired lost its worker and is taken back
-- (re-queued for another attempt, or failed with `worker_lost`).
alter table runs
    add column worker_id text,
    add column lease_expires_at timestamptz;
create index runs_lease_idx on runs (lease_expires_at) where status = 'in_progress';

-- The attempt a step belongs to: a retried attempt reuses the results of
-- tool steps an earlier attempt completed, so side effects happen once.
alter table steps add column attempt integer not null default 1;
