//! Threads and their messages.
//!
//! A thread is its owner's to write. A `public` one can also be read, by
//! any signed-in user who has its id: the thread, its messages, and its
//! finished runs with their steps and events; it is never listed to them,
//! and everything else answers `404`, as for a private one.

use axum::Json as JsonBody;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use switchyard_common::cache::{CachedThread, RECENT_MESSAGES};
use switchyard_common::db::{self, threads::ThreadRow};
use switchyard_common::domain::{Message, MessageId, Thread, ThreadId, UserId, Visibility};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::CurrentUser;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{Json, Path, Query};
use crate::state::AppState;

/// Longest accepted title, in characters.
const MAX_TITLE_CHARS: usize = 256;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(show, update, remove))
        .routes(routes!(messages))
}

/// A thread of `owner`, to change or continue: from the cache if it has
/// it, else PostgreSQL (and then cached).
pub async fn load(app: &AppState, owner: UserId, id: ThreadId) -> ApiResult<ThreadRow> {
    let (row, _) = lookup(app, id).await?;
    allowed(row, id, |row| row.owner_id == owner)
}

/// A thread `reader` may read: theirs, or a public one. Someone else's is
/// read from PostgreSQL: a cache entry that a failed write left behind
/// must not keep a thread made private readable by others.
pub async fn load_readable(app: &AppState, reader: UserId, id: ThreadId) -> ApiResult<ThreadRow> {
    let row =
        match lookup(app, id).await? {
            (row, Source::Cache) if row.owner_id != reader => db::threads::find(&app.pool, id)
                .await?
                .ok_or_else(|| ApiError::not_found("thread", id))?,
            (row, _) => row,
        };
    allowed(row, id, |row| row.readable_by(reader))
}

/// Where [`lookup`] found a thread.
enum Source {
    Cache,
    Postgres,
}

/// The live thread `id`, whoever's: from the cache if it has it, else
/// PostgreSQL (and then cached).
async fn lookup(app: &AppState, id: ThreadId) -> ApiResult<(ThreadRow, Source)> {
    match app.cache.thread(id).await {
        CachedThread::Found(row) => Ok((*row, Source::Cache)),
        CachedThread::Gone => Err(ApiError::not_found("thread", id)),
        CachedThread::Miss => {
            let row = db::threads::find(&app.pool, id)
                .await?
                .ok_or_else(|| ApiError::not_found("thread", id))?;
            app.cache.put_thread(&row).await;
            Ok((row, Source::Postgres))
        }
    }
}

/// `row` if the caller may have it, else `404` as if there were none.
fn allowed(row: ThreadRow, id: ThreadId, may: impl Fn(&ThreadRow) -> bool) -> ApiResult<ThreadRow> {
    match may(&row) {
        true => Ok(row),
        false => Err(ApiError::not_found("thread", id)),
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateThread {
    /// Defaults to the first agent of the configuration.
    pub agent_id: Option<String>,
    pub title: Option<String>,
    #[schema(value_type = Object)]
    pub metadata: Option<Value>,
    /// `private` (the default) or `public`.
    pub visibility: Option<Visibility>,
}

pub fn check_title(title: &Option<String>) -> ApiResult<()> {
    match title {
        Some(t) if t.chars().count() > MAX_TITLE_CHARS => Err(ApiError::Validation(format!(
            "title: at most {MAX_TITLE_CHARS} characters"
        ))),
        _ => Ok(()),
    }
}

/// Bounds of a thread's `metadata`: every list and page of threads carries
/// it, and the cache keeps it, so it is labels, not documents.
const MAX_METADATA_BYTES: usize = 16 * 1024;
const MAX_METADATA_KEYS: usize = 64;
const MAX_METADATA_DEPTH: usize = 4;

fn check_metadata(metadata: &Option<Value>) -> ApiResult<()> {
    let Some(metadata) = metadata else {
        return Ok(());
    };
    if !metadata.is_object() {
        return Err(ApiError::Validation(
            "metadata: must be a JSON object".into(),
        ));
    }
    if switchyard_common::domain::text::has_unstorable_number(metadata) {
        return Err(ApiError::Validation(
            "metadata: numbers must be less than 1e308 in magnitude".into(),
        ));
    }
    let (keys, depth) = shape(metadata);
    let bytes = serde_json::to_vec(metadata).map_or(usize::MAX, |json| json.len());
    if bytes > MAX_METADATA_BYTES || keys > MAX_METADATA_KEYS || depth > MAX_METADATA_DEPTH {
        return Err(ApiError::Validation(format!(
            "metadata: at most {} KiB as JSON, {MAX_METADATA_KEYS} keys in all and \
             {MAX_METADATA_DEPTH} levels of nesting (this one: {bytes} bytes, {keys} keys, \
             {depth} levels)",
            MAX_METADATA_BYTES / 1024
        )));
    }
    Ok(())
}

/// The keys of every object in `value`, and how deeply objects and arrays nest.
fn shape(value: &Value) -> (usize, usize) {
    let inner = |items: &mut dyn Iterator<Item = &Value>| {
        items
            .map(shape)
            .fold((0, 0), |(keys, depth), (k, d)| (keys + k, depth.max(d)))
    };
    match value {
        Value::Object(map) => {
            let (keys, depth) = inner(&mut map.values());
            (keys + map.len(), depth + 1)
        }
        Value::Array(items) => {
            let (keys, depth) = inner(&mut items.iter());
            (keys, depth + 1)
        }
        _ => (0, 0),
    }
}

/// The agent of a new thread whose creator names none: the catalog's first.
pub fn default_agent(app: &AppState) -> ApiResult<String> {
    app.config
        .catalog
        .agents
        .first()
        .map(|agent| agent.id.clone())
        .ok_or_else(|| ApiError::Validation("no agent is configured".into()))
}

/// Whether an agent exists (and is not deleted); the `validation_failed`
/// error if not.
pub async fn check_agent(app: &AppState, agent_id: &str) -> ApiResult<()> {
    match db::agents::get(&app.pool, agent_id).await? {
        Some(_) => Ok(()),
        None => Err(no_agent(agent_id)),
    }
}

/// The answer to a thread or run naming an agent that does not exist.
pub fn no_agent(agent_id: &str) -> ApiError {
    ApiError::Validation(format!("agent_id: no agent {agent_id:?}"))
}

#[utoipa::path(post, path = "/v1/threads", tag = "threads", request_body = CreateThread,
    responses((status = 201, body = Thread), (status = 422, body = ErrorBody)))]
pub async fn create(
    State(app): State<AppState>,
    user: CurrentUser,
    Json(body): Json<CreateThread>,
) -> ApiResult<(StatusCode, JsonBody<Thread>)> {
    check_title(&body.title)?;
    check_metadata(&body.metadata)?;
    let agent_id = match body.agent_id {
        Some(id) => id,
        None => default_agent(&app)?,
    };
    check_agent(&app, &agent_id).await?;
    let row = db::threads::create(
        &app.pool,
        db::threads::NewThread {
            owner: user.id,
            agent_id,
            title: body.title.filter(|t| !t.trim().is_empty()),
            metadata: body
                .metadata
                .unwrap_or_else(|| Value::Object(Default::default())),
            visibility: body.visibility.unwrap_or_default(),
        },
    )
    .await?;
    app.cache.put_thread(&row).await;
    // An empty message list, so that the first messages are written through
    // and the first run reads its history from the cache.
    app.cache.fill_messages(row.id, 0, &[]).await;
    Ok((StatusCode::CREATED, JsonBody(row.to_resource())))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// 1–100, default 20.
    pub limit: Option<i64>,
    pub cursor: Option<ThreadId>,
    pub agent_id: Option<String>,
    /// Search titles and message text.
    pub q: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct ThreadList {
    pub threads: Vec<Thread>,
    pub next_cursor: Option<String>,
}

pub fn check_limit(limit: Option<i64>) -> ApiResult<i64> {
    match limit.unwrap_or(20) {
        n @ 1..=100 => Ok(n),
        n => Err(ApiError::Validation(format!(
            "limit: must be between 1 and 100, not {n}"
        ))),
    }
}

/// Newest first.
#[utoipa::path(get, path = "/v1/threads", tag = "threads", params(ListParams),
    responses((status = 200, body = ThreadList), (status = 422, body = ErrorBody)))]
pub async fn list(
    State(app): State<AppState>,
    user: CurrentUser,
    Query(params): Query<ListParams>,
) -> ApiResult<JsonBody<ThreadList>> {
    let limit = check_limit(params.limit)?;
    let page = db::threads::list(
        &app.pool,
        db::threads::ListThreads {
            owner: user.id,
            limit,
            cursor: params.cursor,
            agent_id: params.agent_id,
            q: params.q,
        },
    )
    .await?;
    Ok(JsonBody(ThreadList {
        threads: page.items.iter().map(ThreadRow::to_resource).collect(),
        next_cursor: page.next_cursor,
    }))
}

#[utoipa::path(get, path = "/v1/threads/{thread_id}", tag = "threads",
    params(("thread_id" = String, Path)),
    responses((status = 200, body = Thread), (status = 404, body = ErrorBody)))]
pub async fn show(
    State(app): State<AppState>,
    user: CurrentUser,
    Path(id): Path<ThreadId>,
) -> ApiResult<JsonBody<Thread>> {
    Ok(JsonBody(
        load_readable(&app, user.id, id).await?.to_resource(),
    ))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateThread {
    pub title: Option<String>,
    #[schema(value_type = Object)]
    pub metadata: Option<Value>,
    /// `private` or `public`.
    pub visibility: Option<Visibility>,
}

#[utoipa::path(patch, path = "/v1/threads/{thread_id}", tag = "threads",
    params(("thread_id" = String, Path)), request_body = UpdateThread,
    responses((status = 200, body = Thread), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn update(
    State(app): State<AppState>,
    user: CurrentUser,
    Path(id): Path<ThreadId>,
    Json(body): Json<UpdateThread>,
) -> ApiResult<JsonBody<Thread>> {
    let patch = db::threads::ThreadPatch {
        title: body.title,
        metadata: body.metadata,
        agent_id: None,
        visibility: body.visibility,
    };
    Ok(JsonBody(
        patch_thread(&app, &user, id, patch).await?.to_resource(),
    ))
}

/// Change a thread of the caller's after checking the change; written
/// through to the cache.
pub async fn patch_thread(
    app: &AppState,
    user: &CurrentUser,
    id: ThreadId,
    patch: db::threads::ThreadPatch,
) -> ApiResult<ThreadRow> {
    check_title(&patch.title)?;
    check_metadata(&patch.metadata)?;
    if let Some(agent_id) = &patch.agent_id {
        check_agent(app, agent_id).await?;
    }
    let row = db::threads::update(&app.pool, user.id, id, patch)
        .await?
        .ok_or_else(|| ApiError::not_found("thread", id))?;
    app.cache.put_thread(&row).await;
    Ok(row)
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DeleteParams {
    /// Remove the thread with its messages, runs, steps and events for good.
    #[serde(default)]
    pub hard: bool,
}

#[utoipa::path(delete, path = "/v1/threads/{thread_id}", tag = "threads",
    params(("thread_id" = String, Path), DeleteParams),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn remove(
    State(app): State<AppState>,
    user: CurrentUser,
    Path(id): Path<ThreadId>,
    Query(params): Query<DeleteParams>,
) -> ApiResult<StatusCode> {
    delete(&app, &user, id, params.hard).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Delete a thread of the caller's: hide it, or (`hard`) remove it with
/// everything in it. `404` if there is none.
pub async fn delete(app: &AppState, user: &CurrentUser, id: ThreadId, hard: bool) -> ApiResult<()> {
    let existed = if hard {
        db::threads::hard_delete(&app.pool, user.id, id).await?
    } else {
        db::threads::soft_delete(&app.pool, user.id, id).await?
    };
    if !existed {
        return Err(ApiError::not_found("thread", id));
    }
    app.cache.forget_thread(id).await;
    Ok(())
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct MessageParams {
    /// 1–100, default 20.
    pub limit: Option<i64>,
    /// Messages older than this one (the previous page's `next_cursor`).
    pub before: Option<MessageId>,
}

#[derive(Serialize, ToSchema)]
pub struct MessageList {
    pub messages: Vec<Message>,
    pub next_cursor: Option<String>,
}

/// Oldest first within a page; pages walk back from the newest.
#[utoipa::path(get, path = "/v1/threads/{thread_id}/messages", tag = "threads",
    params(("thread_id" = String, Path), MessageParams),
    responses((status = 200, body = MessageList), (status = 404, body = ErrorBody)))]
pub async fn messages(
    State(app): State<AppState>,
    user: CurrentUser,
    Path(id): Path<ThreadId>,
    Query(params): Query<MessageParams>,
) -> ApiResult<JsonBody<MessageList>> {
    let limit = check_limit(params.limit)?;
    let thread = load_readable(&app, user.id, id).await?;
    let latest = params.before.is_none() && limit as usize <= RECENT_MESSAGES;
    if latest
        && let Some(cached) = app
            .cache
            .recent_messages(id, thread.message_count, limit as usize)
            .await
    {
        let next_cursor = (thread.message_count > limit)
            .then(|| cached.first().map(|m| m.id.to_string()))
            .flatten();
        return Ok(JsonBody(MessageList {
            messages: cached.iter().map(|m| m.to_resource()).collect(),
            next_cursor,
        }));
    }
    let page = db::messages::list(&app.pool, id, limit, params.before).await?;
    if latest {
        // The page may already hold a message newer than the thread we read.
        let up_to = page.items.last().map_or(0, |m| m.seq);
        app.cache.fill_messages(id, up_to, &page.items).await;
    }
    Ok(JsonBody(MessageList {
        messages: page.items.iter().map(|m| m.to_resource()).collect(),
        next_cursor: page.next_cursor,
    }))
}
