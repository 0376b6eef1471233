//! Agents: the catalog's declarations (applied at start-up) and the agents
//! written over the API. Deleting one hides it (`deleted_at`): threads and
//! runs keep referencing it.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use sqlx::types::Json;

use crate::config::ToolSettings;
use crate::domain::{Agent, AgentSource, AgentSpec, AgentStatus, Workflow};

/// An agent row, read by column or as `to_jsonb(agents)`.
#[derive(sqlx::FromRow, serde::Deserialize)]
pub(crate) struct AgentRow {
    id: String,
    name: String,
    description: String,
    provider: String,
    model: String,
    instructions: String,
    tools: Vec<String>,
    workflow: Json<Workflow>,
    tool_settings: Json<ToolSettings>,
    context_tokens: i32,
    status: AgentStatus,
    allowed_models: Vec<String>,
    source: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<AgentRow> for Agent {
    fn from(row: AgentRow) -> Self {
        Self {
            spec: AgentSpec {
                id: row.id,
                name: row.name,
                description: row.description,
                provider: row.provider,
                model: row.model,
                instructions: row.instructions,
                tools: row.tools,
                workflow: row.workflow.0,
                tool_settings: row.tool_settings.0,
                context_tokens: u32::try_from(row.context_tokens).unwrap_or(1),
                status: row.status,
                allowed_models: row.allowed_models,
            },
            source: if row.source == "api" {
                AgentSource::Api
            } else {
                AgentSource::Config
            },
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// The columns of an agent row, for `select` and `returning`.
macro_rules! agent_columns {
    () => {
        "id, name, description, provider, model, instructions, tools, workflow, tool_settings,
         context_tokens, status, allowed_models, source, created_at, updated_at"
    };
}

/// `insert … on conflict do update` of every definition column (`$11` is
/// the source, `$12` the status, `$13` the allowed models) and of `$set` columns, then the rest of the statement.
macro_rules! upsert {
    ($set:literal, $rest:literal) => {
        concat!(
            "insert into agents (id, name, description, provider, model, instructions, tools,
                                 workflow, tool_settings, context_tokens, source, status,
                                 allowed_models)
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
             on conflict (id) do update set
                 name = excluded.name, description = excluded.description,
                 provider = excluded.provider, model = excluded.model,
                 instructions = excluded.instructions, tools = excluded.tools,
                 workflow = excluded.workflow, tool_settings = excluded.tool_settings,
                 context_tokens = excluded.context_tokens, source = excluded.source,
                 status = excluded.status, allowed_models = excluded.allowed_models,
                 deleted_at = null, updated_at = now() ",
            $set,
            " ",
            $rest,
            " returning ",
            agent_columns!()
        )
    };
}

type RowQuery<'q> = sqlx::query::QueryAs<'q, sqlx::Postgres, AgentRow, sqlx::postgres::PgArguments>;

/// Bind `$1`…`$13` of [`upsert!`] (and of [`update`]).
fn bind_spec<'q>(query: RowQuery<'q>, spec: &'q AgentSpec, source: &'static str) -> RowQuery<'q> {
    query
        .bind(&spec.id)
        .bind(&spec.name)
        .bind(&spec.description)
        .bind(&spec.provider)
        .bind(&spec.model)
        .bind(&spec.instructions)
        .bind(&spec.tools)
        .bind(Json(&spec.workflow))
        .bind(Json(&spec.tool_settings))
        .bind(i32::try_from(spec.context_tokens).unwrap_or(i32::MAX))
        .bind(source)
        .bind(spec.status)
        .bind(&spec.allowed_models)
}

/// Create or update the catalog's agents (start-up). An agent of the same
/// id written over the API is replaced: the file wins.
pub async fn upsert_catalog(pool: &PgPool, agents: &[AgentSpec]) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    for agent in agents {
        bind_spec(sqlx::query_as(upsert!("", "")), agent, "config")
            .fetch_one(&mut *tx)
            .await?;
    }
    tx.commit().await
}

/// The agents that are not deleted, by id.
pub async fn list(pool: &PgPool) -> Result<Vec<Agent>, sqlx::Error> {
    select_live(pool, false).await
}

/// The agents that take runs (not deleted, not inactive), by id: what a
/// client can call, such as OpenAI's models.
pub async fn list_active(pool: &PgPool) -> Result<Vec<Agent>, sqlx::Error> {
    select_live(pool, true).await
}

async fn select_live(pool: &PgPool, active_only: bool) -> Result<Vec<Agent>, sqlx::Error> {
    let rows: Vec<AgentRow> = sqlx::query_as(concat!(
        "select ",
        agent_columns!(),
        " from agents where deleted_at is null and (not $1 or status = 'active') order by id"
    ))
    .bind(active_only)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(Agent::from).collect())
}

/// An agent that is not deleted.
pub async fn get(pool: &PgPool, id: &str) -> Result<Option<Agent>, sqlx::Error> {
    let row: Option<AgentRow> = sqlx::query_as(concat!(
        "select ",
        agent_columns!(),
        " from agents where id = $1 and deleted_at is null"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(Agent::from))
}

/// Which of `ids` name agents that are not deleted.
pub async fn existing(pool: &PgPool, ids: &[String]) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("select id from agents where id = any($1) and deleted_at is null")
        .bind(ids)
        .fetch_all(pool)
        .await
}

/// Why an agent write was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteRefused {
    /// No such agent (or it is deleted).
    NotFound,
    /// A live agent has this id already (create).
    Exists,
    /// The agent is declared in the configuration file, which is re-applied
    /// at every start-up: it is changed there.
    FromConfig,
    /// These agents hand off to it (delete).
    InUse(Vec<String>),
    /// The definition hands off to this agent, which does not exist (or was
    /// deleted while the write was being checked).
    MissingHandoff(String),
}

/// Create an agent over the API. A deleted agent of the same id is revived
/// with the new definition, as if new.
pub async fn create(
    pool: &PgPool,
    spec: &AgentSpec,
) -> Result<Result<Agent, WriteRefused>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    if let Some(missing) = lock_handoffs(&mut tx, spec).await? {
        return Ok(Err(WriteRefused::MissingHandoff(missing)));
    }
    let row: Option<AgentRow> = bind_spec(
        sqlx::query_as(upsert!(
            ", created_at = now()",
            "where agents.deleted_at is not null"
        )),
        spec,
        "api",
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else {
        return Ok(Err(WriteRefused::Exists));
    };
    tx.commit().await?;
    Ok(Ok(Agent::from(row)))
}

/// Replace the definition of an agent written over the API.
pub async fn update(
    pool: &PgPool,
    spec: &AgentSpec,
) -> Result<Result<Agent, WriteRefused>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    if let Some(missing) = lock_handoffs(&mut tx, spec).await? {
        return Ok(Err(WriteRefused::MissingHandoff(missing)));
    }
    let row: Option<AgentRow> = bind_spec(
        sqlx::query_as(concat!(
            "update agents set name = $2, description = $3, provider = $4, model = $5,
                 instructions = $6, tools = $7, workflow = $8, tool_settings = $9,
                 context_tokens = $10, status = $12, allowed_models = $13, updated_at = now()
             where id = $1 and deleted_at is null and source = $11
             returning ",
            agent_columns!()
        )),
        spec,
        "api",
    )
    .fetch_optional(&mut *tx)
    .await?;
    match row {
        Some(row) => {
            tx.commit().await?;
            Ok(Ok(Agent::from(row)))
        }
        None => Ok(Err(refusal(pool, &spec.id).await?)),
    }
}

/// Lock the agents `spec` hands off to until the write commits, so that
/// none of them is deleted meanwhile ([`delete`] locks the row it deletes,
/// then looks for agents handing off to it). The first hand-off that does
/// not name a live agent, if any.
async fn lock_handoffs(
    tx: &mut sqlx::PgConnection,
    spec: &AgentSpec,
) -> Result<Option<String>, sqlx::Error> {
    let handoffs = &spec.workflow.handoffs;
    if handoffs.is_empty() {
        return Ok(None);
    }
    let live: Vec<String> = sqlx::query_scalar(
        "select id from agents where id = any($1) and deleted_at is null for share",
    )
    .bind(handoffs)
    .fetch_all(tx)
    .await?;
    Ok(handoffs.iter().find(|h| !live.contains(h)).cloned())
}

/// Hide an agent written over the API. Its threads and runs stay; new runs
/// on it are refused.
pub async fn delete(pool: &PgPool, id: &str) -> Result<Result<(), WriteRefused>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let source: Option<String> = sqlx::query_scalar(
        "select source from agents where id = $1 and deleted_at is null for update",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    match source.as_deref() {
        None => return Ok(Err(WriteRefused::NotFound)),
        Some("config") => return Ok(Err(WriteRefused::FromConfig)),
        Some(_) => {}
    }
    let users: Vec<String> = sqlx::query_scalar(
        "select id from agents
         where deleted_at is null and workflow -> 'handoffs' ? $1 order by id",
    )
    .bind(id)
    .fetch_all(&mut *tx)
    .await?;
    if !users.is_empty() {
        return Ok(Err(WriteRefused::InUse(users)));
    }
    sqlx::query("update agents set deleted_at = now(), updated_at = now() where id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Ok(()))
}

/// Why an update found no API agent to change.
async fn refusal(pool: &PgPool, id: &str) -> Result<WriteRefused, sqlx::Error> {
    Ok(match get(pool, id).await? {
        Some(agent) if agent.source == AgentSource::Config => WriteRefused::FromConfig,
        _ => WriteRefused::NotFound,
    })
}
