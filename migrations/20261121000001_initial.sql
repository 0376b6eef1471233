-- Switchyard's initial schema. PostgreSQL is the source of truth for every
-- object here; Redis only ever holds copies (cache) and transport (queue,
-- live event streams).

create extension if not exists pg_trgm;

create type message_role as enum ('user', 'assistant', 'tool', 'system');
create type run_status as enum ('queued', 'in_progress', 'completed', 'failed', 'cancelled');
create type step_kind as enum ('llm', 'tool', 'agent', 'plan');
create type step_status as enum ('running', 'completed', 'failed');
create type multitask_strategy as enum ('enqueue', 'reject', 'interrupt');

create table users (
    id          uuid primary key,
    name        text not null unique,
    roles       text[] not null default '{}',
    created_at  timestamptz not null default now()
);

create table agents (
    id            text primary key check (id ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
    name          text not null,
    description   text not null default '',
    provider      text not null,
    model         text not null,
    instructions  text not null default '',
    tools         text[] not null default '{}',
    workflow      jsonb not null default '{"kind": "single"}',
    created_at    timestamptz not null default now(),
    updated_at    timestamptz not null default now()
);

create table threads (
    id             uuid primary key,
    owner_id       uuid not null references users (id),
    agent_id       text not null references agents (id),
    title          text,
    metadata       jsonb not null default '{}',
    -- Number of messages ever appended; a message's `seq` is its position.
    message_count  bigint not null default 0,
    -- Queued and in-progress runs: the thread is busy while this is above 0.
    active_runs    integer not null default 0 check (active_runs >= 0),
    -- Bumped by every change a reader can see; orders cache writes.
    version        bigint not null default 1,
    deleted_at     timestamptz,
    created_at     timestamptz not null default now(),
    updated_at     timestamptz not null default now()
);
-- Listing a user's threads, newest first (ids are UUIDv7, so time-ordered).
create index threads_owner_id_idx on threads (owner_id, id desc) where deleted_at is null;
create index threads_owner_agent_idx on threads (owner_id, agent_id, id desc) where deleted_at is null;
create index threads_title_trgm_idx on threads using gin (title gin_trgm_ops);

create table runs (
    id                 uuid primary key,
    thread_id          uuid not null references threads (id) on delete cascade,
    owner_id           uuid not null references users (id),
    agent_id           text not null references agents (id),
    model              text not null,
    priority           smallint not null default 5 check (priority between 1 and 10),
    multitask          multitask_strategy not null default 'enqueue',
    status             run_status not null default 'queued',
    attempt            integer not null default 0,
    input_message_id   uuid not null,
    output_message_id  uuid,
    input_tokens       bigint not null default 0,
    output_tokens      bigint not null default 0,
    cost_usd           double precision,
    error_code         text,
    error_message      text,
    -- When the run's job was last pushed to the Redis queue. Null: not in the
    -- queue (Redis was unreachable, or the run waits for its turn on the
    -- thread); the workers' sweeper pushes such runs, and re-pushes queued
    -- runs whose push is long past (a push lost with its API process).
    enqueued_at        timestamptz,
    created_at         timestamptz not null default now(),
    started_at         timestamptz,
    finished_at        timestamptz
);
create index runs_thread_idx on runs (thread_id, id desc);
-- "Is this thread busy?" and per-thread ordering of active runs.
create index runs_active_thread_idx on runs (thread_id, id) where status in ('queued', 'in_progress');
-- The sweeper's scan for queued runs that are not (or no longer) in the queue.
create index runs_queued_idx on runs (enqueued_at nulls first) where status = 'queued';

create table messages (
    id          uuid primary key,
    thread_id   uuid not null references threads (id) on delete cascade,
    seq         bigint not null,
    run_id      uuid references runs (id) on delete set null deferrable initially deferred,
    role        message_role not null,
    content     text not null,
    created_at  timestamptz not null default now(),
    unique (thread_id, seq)
);
create index messages_content_trgm_idx on messages using gin (content gin_trgm_ops);

alter table runs add constraint runs_input_message_fk
    foreign key (input_message_id) references messages (id) deferrable initially deferred;

create table steps (
    id           uuid primary key,
    run_id       uuid not null references runs (id) on delete cascade,
    kind         step_kind not null,
    name         text not null,
    input        jsonb not null default 'null',
    output       jsonb,
    status       step_status not null default 'running',
    input_tokens   bigint,
    output_tokens  bigint,
    started_at   timestamptz not null default now(),
    finished_at  timestamptz,
    latency_ms   bigint
);
create index steps_run_idx on steps (run_id, started_at, id);

create table run_events (
    run_id      uuid not null references runs (id) on delete cascade,
    seq         bigint not null,
    kind        text not null,
    data        jsonb not null,
    created_at  timestamptz not null default now(),
    primary key (run_id, seq)
);

create table idempotency_keys (
    owner_id      uuid not null references users (id),
    key           text not null,
    request_hash  text not null,
    thread_id     uuid not null,
    run_id        uuid references runs (id) on delete cascade,
    created_at    timestamptz not null default now(),
    primary key (owner_id, key)
);
create index idempotency_keys_created_idx on idempotency_keys (created_at);
