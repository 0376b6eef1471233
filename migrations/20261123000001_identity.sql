-- Users come from several authenticators. A user is identified by the
-- authenticator and its subject: an API-key user's name, an OIDC token's
-- `sub`, an Easy Auth principal id, or `local` in development mode. Display
-- names may repeat across authenticators.
alter table users
    add column auth_method text not null default 'dev',
    add column subject text;
update users set subject = name;
alter table users
    alter column subject set not null,
    alter column auth_method drop default,
    drop constraint users_name_key,
    add constraint users_identity_key unique (auth_method, subject);

-- API keys: only a SHA-256 of each key is kept. Keys are 256 random bits, so
-- a fast hash is enough: there is nothing to guess.
create table api_keys (
    id            uuid primary key,
    user_id       uuid not null references users (id),
    -- The key's first characters, to tell keys apart in `switchyard keys list`.
    prefix        text not null,
    hash          bytea not null unique,
    admin         boolean not null default false,
    created_at    timestamptz not null default now(),
    last_used_at  timestamptz,
    revoked_at    timestamptz
);

-- Per-user limits: a user's active runs, and the tokens of their runs today.
create index runs_owner_active_idx on runs (owner_id) where status in ('queued', 'in_progress');
create index runs_owner_created_idx on runs (owner_id, created_at);
