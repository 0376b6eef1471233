//! Steps: the trace of a run (LLM calls, tool calls, agent hand-offs).

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;

use crate::domain::{RunId, Step, StepId, StepKind, StepStatus, Usage};

#[derive(sqlx::FromRow)]
struct StepRow {
    id: StepId,
    run_id: RunId,
    kind: StepKind,
    name: String,
    input: Value,
    output: Option<Value>,
    status: StepStatus,
    input_tokens: Option<i64>,
    output_tokens: Option<i64>,
    started_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
    latency_ms: Option<i64>,
}

impl From<StepRow> for Step {
    fn from(row: StepRow) -> Self {
        Self {
            id: row.id,
            run_id: row.run_id,
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
                }),
                _ => None,
            },
        }
    }
}

/// Record the start of a step.
pub async fn start(
    pool: &PgPool,
    run_id: RunId,
    kind: StepKind,
    name: &str,
    input: &Value,
) -> Result<StepId, sqlx::Error> {
    let id = StepId::new();
    sqlx::query("insert into steps (id, run_id, kind, name, input) values ($1, $2, $3, $4, $5)")
        .bind(id)
        .bind(run_id)
        .bind(kind)
        .bind(name)
        .bind(input)
        .execute(pool)
        .await?;
    Ok(id)
}

/// Record the end of a step.
pub async fn finish(
    pool: &PgPool,
    id: StepId,
    status: StepStatus,
    output: &Value,
    usage: Option<Usage>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update steps set status = $2, output = $3, input_tokens = $4, output_tokens = $5,
             finished_at = now(),
             latency_ms = (extract(epoch from (now() - started_at)) * 1000)::bigint
         where id = $1",
    )
    .bind(id)
    .bind(status)
    .bind(output)
    .bind(usage.map(|u| u.input_tokens))
    .bind(usage.map(|u| u.output_tokens))
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn list(pool: &PgPool, run_id: RunId) -> Result<Vec<Step>, sqlx::Error> {
    let rows: Vec<StepRow> = sqlx::query_as(
        "select id, run_id, kind, name, input, output, status, input_tokens, output_tokens,
                started_at, finished_at, latency_ms
         from steps where run_id = $1 order by started_at, id",
    )
    .bind(run_id)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(Step::from).collect())
}
