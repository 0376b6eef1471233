-- An agent can be taken out of service without being deleted: it stays
-- listed and readable, and takes no new runs.
alter table agents
    add column status text not null default 'active'
        check (status in ('active', 'inactive'));

-- A public thread can be read (never written) by any signed-in user who
-- has its id; it is listed only to its owner.
create type thread_visibility as enum ('private', 'public');
alter table threads
    add column visibility thread_visibility not null default 'private';

-- A service key belongs to an app that serves many people: its requests
-- may name the end user they act for, who is then a user of their own.
alter table api_keys
    add column service boolean not null default false;
