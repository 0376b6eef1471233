-- Priorities: workers take the queued run of lowest rank first, where the
-- rank is the creation time plus (priority - 1) x SWITCHYARD_PRIORITY_AGING_SECS
-- (set by the API when it stores the run). Urgent runs go first, equal
-- priorities in order, and a less urgent run is overtaken only by runs
-- created within its handicap, so none waits forever.
alter table runs add column queue_rank timestamptz;
update runs set queue_rank = created_at + (priority - 1) * interval '60 seconds';
alter table runs alter column queue_rank set not null;

-- The claim (the best-ranked ready run) and queue positions (the ready runs
-- ranked ahead of one) walk queued runs in rank order.
create index runs_queue_rank_idx on runs (queue_rank, id) where status = 'queued';
