-- Old pods serve traffic while this runs: rather than queue every query on
-- these tables behind a long transaction, give up (the migration is
-- retried) when a lock does not come at once.
set local lock_timeout = '5s';

-- An agent can be taken out of service without being deleted: it stays
-- listed and readable, and takes no new runs.
create type agent_status as enum ('active', 'inactive');
alter table agents
    add column status agent_status not null default 'active';

-- The other models a run may ask for; none: only the agent's own.
alter table agents
    add column allowed_models text[] not null default '{}';

-- A public thread can be read (never written) by any signed-in user who
-- has its id; it is listed only to its owner.
create type thread_visibility as enum ('private', 'public');
alter table threads
    add column visibility thread_visibility not null default 'private';

-- A service key belongs to an app that serves many people: its requests
-- may name the end user they act for, who is then a user of their own.
alter table api_keys
    add column service boolean not null default false;
