-- Chats of the Vercel AI SDK surface: the chat id a client generates, and
-- the thread that holds the chat, per owner.
create table ui_chats (
    owner_id uuid not null references users (id) on delete cascade,
    chat_id text not null,
    thread_id uuid not null references threads (id) on delete cascade,
    created_at timestamptz not null default now(),
    primary key (owner_id, chat_id)
);
create index ui_chats_thread on ui_chats (thread_id);
