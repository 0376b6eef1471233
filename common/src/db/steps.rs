//! Steps: the trace of a run (LLM calls, tool calls, agent hand-offs, plans).

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};

use crate::domain::{RunId, Step, StepId, StepKind, StepStatus, Usage};

#[derive(sqlx::FromRow)]
struct StepRow {
    id: StepId,
    run_id: RunId,
    parent_id: Option<StepId>,
    kind: StepKind,
    name: String,
    input: Value,
    output: Option<Value>,
    status: StepStatus,
    input_tokens: Option<i64>,
    output_tokens: Option<i64>,
    cached_input_tokens: Option<i64>,
    cost_usd: Option<f64>,
    started_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
    latency_ms: Option<i64>,
}

impl From<StepRow> for Step {
    fn from(row: StepRow) -> Self {
        Self {
            id: row.id,
            run_id: row.run_id,
            parent_id: row.parent_id,
            kind: row.kind,
            name: row.name,
            input: row.input,
            output: row.output,
            status: row.status,
            started_at: row.started_at,
            finished_at: row.finished_at,
            latency_ms: row.latency_ms,
            usage: match (row.input_tokens, row.output_tokens) {
                (Some(input_tokens), Some(output_tokens)) => Some(Usage {
                    input_tokens,
                    output_tokens,
                    cached_input_tokens: row.cached_input_tokens.unwrap_or(0),
                }),
                _ => None,
            },
            cost_usd: row.cost_usd,
        }
    }
}

/// A step about to start.
pub struct NewStep<'a> {
    pub run_id: RunId,
    /// The run's attempt the step belongs to.
    pub attempt: i32,
    /// The agent or plan step it runs under.
    pub parent_id: Option<StepId>,
    pub kind: StepKind,
    pub name: &'a str,
    pub input: &'a Value,
}

/// Record the start of a step.
pub async fn start(pool: &PgPool, step: NewStep<'_>) -> Result<StepId, sqlx::Error> {
    let id = StepId::new();
    sqlx::query(
        "insert into steps (id, run_id, parent_id, kind, name, input, attempt)
         values ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(id)
    .bind(step.run_id)
    .bind(step.parent_id)
    .bind(step.kind)
    .bind(step.name)
    .bind(step.input)
    .bind(step.attempt)
    .execute(pool)
    .await?;
    Ok(id)
}

/// How a step ended.
pub struct StepEnd<'a> {
    pub status: StepStatus,
    pub output: &'a Value,
    /// LLM steps: the provider's token counts for the call.
    pub usage: Option<Usage>,
    pub cost_usd: Option<f64>,
}

/// Record the end of a step.
pub async fn finish(pool: &PgPool, id: StepId, end: StepEnd<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update steps set status = $2, output = $3, input_tokens = $4, output_tokens = $5,
             cached_input_tokens = $6, cost_usd = $7, finished_at = now(),
             latency_ms = (extract(epoch from (now() - started_at)) * 1000)::bigint
         where id = $1",
    )
    .bind(id)
    .bind(end.status)
    .bind(end.output)
    .bind(end.usage.map(|u| u.input_tokens))
    .bind(end.usage.map(|u| u.output_tokens))
    .bind(end.usage.map(|u| u.cached_input_tokens))
    .bind(end.cost_usd)
    .execute(pool)
    .await?;
    Ok(())
}

/// SQL: end the steps of run `$1` that are still running, as failed.
macro_rules! close_running_steps {
    () => {
        "update steps set status = 'failed',
             output = coalesce(output, '{\"error\": \"the run ended before this step did\"}'),
             finished_at = now(),
             latency_ms = (extract(epoch from (now() - started_at)) * 1000)::bigint
         where run_id = $1 and status = 'running'"
    };
}
pub(crate) use close_running_steps;

/// End the steps of a run that are still running (the run was stopped or
/// failed around them), as failed.
pub async fn close_running(tx: &mut PgConnection, run_id: RunId) -> Result<(), sqlx::Error> {
    sqlx::query(close_running_steps!())
        .bind(run_id)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Results of tool calls an earlier attempt of the run completed with
/// exactly this tool and input, oldest first: a retried attempt reuses
/// them instead of calling the tool again.
pub async fn completed_earlier(
    pool: &PgPool,
    run_id: RunId,
    attempt: i32,
    tool: &str,
    input: &Value,
) -> Result<Vec<(StepId, Value)>, sqlx::Error> {
    sqlx::query_as(
        "select id, output from steps
         where run_id = $1 and attempt < $2 and kind = 'tool' and name = $3 and input = $4
           and status = 'completed' and output is not null
         order by started_at, id",
    )
    .bind(run_id)
    .bind(attempt)
    .bind(tool)
    .bind(input)
    .fetch_all(pool)
    .await
}

pub async fn list(pool: &PgPool, run_id: RunId) -> Result<Vec<Step>, sqlx::Error> {
    let rows: Vec<StepRow> = sqlx::query_as(
        "select id, run_id, parent_id, kind, name, input, output, status, input_tokens,
                output_tokens, cached_input_tokens, cost_usd, started_at, finished_at, latency_ms
         from steps where run_id = $1 order by started_at, id",
    )
    .bind(run_id)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(Step::from).collect())
}
