//! Agents: the catalog's declarations, stored so that threads and runs can
//! reference them.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::config::AgentConfig;
use crate::domain::{Agent, Workflow};

#[derive(sqlx::FromRow)]
struct AgentRow {
    id: String,
    name: String,
    description: String,
    provider: String,
    model: String,
    instructions: String,
    tools: Vec<String>,
    workflow: sqlx::types::Json<Workflow>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<AgentRow> for Agent {
    fn from(row: AgentRow) -> Self {
        Self {
            id: row.id,
            name: row.name,
            description: row.description,
            provider: row.provider,
            model: row.model,
            instructions: row.instructions,
            tools: row.tools,
            workflow: row.workflow.0,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// `select … from agents` followed by the rest of a query, as one static string.
macro_rules! select_agents {
    ($rest:literal) => {
        concat!(
            "select id, name, description, provider, model, instructions, tools, workflow,
                    created_at, updated_at
             from agents ",
            $rest
        )
    };
}

/// Create or update the catalog's agents (start-up).
pub async fn upsert_catalog(pool: &PgPool, agents: &[AgentConfig]) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    for agent in agents {
        sqlx::query(
            "insert into agents (id, name, description, provider, model, instructions, tools)
             values ($1, $2, $3, $4, $5, $6, $7)
             on conflict (id) do update set
                 name = excluded.name, description = excluded.description,
                 provider = excluded.provider, model = excluded.model,
                 instructions = excluded.instructions, tools = excluded.tools,
                 updated_at = now()
             where (agents.name, agents.description, agents.provider, agents.model,
                    agents.instructions, agents.tools)
                 is distinct from
                   (excluded.name, excluded.description, excluded.provider, excluded.model,
                    excluded.instructions, excluded.tools)",
        )
        .bind(&agent.id)
        .bind(&agent.name)
        .bind(&agent.description)
        .bind(&agent.provider)
        .bind(&agent.model)
        .bind(&agent.instructions)
        .bind(&agent.tools)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}

pub async fn list(pool: &PgPool) -> Result<Vec<Agent>, sqlx::Error> {
    let rows: Vec<AgentRow> = sqlx::query_as(select_agents!("order by id"))
        .fetch_all(pool)
        .await?;
    Ok(rows.into_iter().map(Agent::from).collect())
}

pub async fn get(pool: &PgPool, id: &str) -> Result<Option<Agent>, sqlx::Error> {
    let row: Option<AgentRow> = sqlx::query_as(select_agents!("where id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await?;
    Ok(row.map(Agent::from))
}
