-- Cost and cached-input usage on runs and steps, nested steps for
-- multi-agent workflows, the tool exchange behind an answer, and agents
-- that can be written over the API.

alter table runs add column cached_input_tokens bigint not null default 0;

alter table steps
    add column cached_input_tokens bigint,
    add column cost_usd double precision,
    -- The agent or plan step this step ran under; null at the top level.
    add column parent_id uuid references steps (id) on delete cascade;

-- The tool calls and results that led to an assistant answer, in order, so
-- that later runs show the model its earlier tool use:
-- [{"id", "name", "arguments", "result", "is_error"}, ...] per model turn.
alter table messages add column tool_calls jsonb;

alter table agents
    -- Per-tool settings, e.g. {"http_request": {"allow_hosts": [...]}}.
    add column tool_settings jsonb not null default '{}',
    -- Tokens of thread history the model is shown, trimmed from the oldest end.
    add column context_tokens integer not null default 16000 check (context_tokens > 0),
    -- Declared in the configuration file (re-created at every start-up) or over the API.
    add column source text not null default 'config' check (source in ('config', 'api')),
    add column deleted_at timestamptz;
