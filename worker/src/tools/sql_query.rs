//! `sql_query`: one read-only query against a PostgreSQL database the agent
//! is configured for, answered as a table.
//!
//! Safety rests on PostgreSQL, not on inspecting the SQL text:
//!
//! - the query runs in a `BEGIN READ ONLY` transaction that is always
//!   rolled back, so writes, DDL, `nextval` and functions that write fail
//!   with PostgreSQL's own error, whatever the connecting role may do;
//! - it goes through the extended query protocol (Parse/Describe), which
//!   takes exactly one statement: `select 1; commit; insert …` cannot end
//!   the read-only transaction, and a `;` inside a string literal is
//!   simply part of the statement;
//! - a statement that returns no columns (`set role`, `commit`, DDL, DML
//!   without `returning`) is refused after Describe, before it runs;
//! - `statement_timeout` is set for the transaction (`set_config(…,
//!   true)`), so PostgreSQL cancels a query that runs too long; so is the
//!   time zone, UTC, so that timestamps read the same whatever the server's
//!   default.
//!
//! The read-only transaction does not stop a superuser from calling
//! administrative functions such as `pg_terminate_backend`: the role in
//! the configured URL should be one that may only read what the agent may
//! see.
//!
//! Values are converted to JSON by PostgreSQL itself, so that every type,
//! including extensions' and user-defined ones, has a faithful rendering.
//! After Describe gave the column names and types, the query is wrapped:
//!
//! ```sql
//! select row_to_json(r) from (
//!     select c1, c2::text as c2 from (<query>) as t (c1, c2) limit $1
//! ) as r
//! ```
//!
//! Renaming the columns positionally keeps duplicate and unnamed columns
//! (`select 1, 1`) apart, which a row object keyed by the query's own
//! names would merge; `numeric` goes as text, since a JSON number would be
//! read back as a double and lose digits. These plain projections keep the
//! order of an `order by` in the query. Fetching `max_rows + 1` rows tells
//! whether the result was truncated.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use switchyard_common::config::BuiltinTool;

use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::{Value, json};
use sqlx::postgres::{PgColumn, PgConnectOptions, PgDatabaseError, PgPoolOptions};
use sqlx::{AssertSqlSafe, Column, Either, Executor, PgPool, SqlSafeStr, Statement, TypeInfo};
use switchyard_common::config::SqlQuerySettings;

use super::{Tool, ToolError};

/// The longest query accepted, in characters.
const MAX_QUERY_CHARS: usize = 20_000;
/// Connections per database: tool queries are occasional and must not
/// crowd out the database's other clients.
const POOL_SIZE: u32 = 2;
/// The longest wait for a free connection (or a new one).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// What a call may take beyond its statement timeout: connecting, and the
/// few short statements around the query.
const CALL_ALLOWANCE: Duration = Duration::from_secs(10);

/// Connection pools by database URL, created on first use and kept for
/// the life of the process.
#[derive(Default)]
pub struct Pools(Mutex<HashMap<String, PgPool>>);

/// Which database a PostgreSQL URL names: its server (loopback names
/// counted as one), port and database.
#[derive(Debug, PartialEq, Eq)]
pub struct Database(String, u16, String);

impl Database {
    /// `None` for what is not a PostgreSQL URL.
    pub fn of(url: &str) -> Option<Self> {
        let options = PgConnectOptions::from_str(url).ok()?;
        let host = match options.get_host() {
            "localhost" | "127.0.0.1" | "::1" | "[::1]" => "localhost",
            host => host,
        };
        let database = options.get_database().unwrap_or(options.get_username());
        Some(Self(
            host.to_ascii_lowercase(),
            options.get_port(),
            database.to_owned(),
        ))
    }
}

impl Pools {
    /// The pool for `url`; no connection is made until a query needs one.
    /// Errors never repeat the URL, which holds credentials.
    pub fn get(&self, url: &str) -> Result<PgPool, String> {
        let mut pools = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(pool) = pools.get(url) {
            return Ok(pool.clone());
        }
        let invalid = || "it does not hold a valid PostgreSQL URL".to_owned();
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(invalid());
        }
        let options = PgConnectOptions::from_str(url)
            .map_err(|_| invalid())?
            .application_name("switchyard sql_query");
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .min_connections(0)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .idle_timeout(Duration::from_secs(60))
            // A query can leave session state behind, which rolling back
            // does not undo: advisory locks (`pg_advisory_lock`) and
            // settings (`set_config(…, false)`). None reaches the next
            // call; a connection that cannot be reset is closed.
            .after_release(|conn, _| {
                Box::pin(async move {
                    Ok(sqlx::raw_sql("select pg_advisory_unlock_all(); reset all")
                        .execute(conn)
                        .await
                        .is_ok())
                })
            })
            .connect_lazy_with(options);
        pools.insert(url.to_owned(), pool.clone());
        Ok(pool)
    }
}

pub struct SqlQuery(Arc<Inner>);

struct Inner {
    pool: PgPool,
    max_rows: u32,
    statement_timeout: Duration,
}

impl SqlQuery {
    pub fn new(pool: PgPool, settings: &SqlQuerySettings) -> Self {
        Self(Arc::new(Inner {
            pool,
            max_rows: settings.max_rows,
            statement_timeout: Duration::from_millis(settings.statement_timeout_ms),
        }))
    }
}

impl Tool for SqlQuery {
    fn name(&self) -> &'static str {
        BuiltinTool::SqlQuery.as_str()
    }

    fn description(&self) -> &'static str {
        "Run one read-only SQL query (PostgreSQL: SELECT, VALUES, TABLE or WITH … \
         SELECT) and get the result as a table. Writes are refused. Long results \
         are cut off (truncated: true); add WHERE, LIMIT or aggregates to narrow \
         them."
    }

    fn parameters(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "query": {
                    "type": "string",
                    "description": "One SQL statement, without parameters.",
                    "minLength": 1,
                    "maxLength": MAX_QUERY_CHARS
                }
            },
            "required": ["query"],
            "additionalProperties": false
        })
    }

    fn timeout(&self) -> Duration {
        self.0.statement_timeout + CALL_ALLOWANCE
    }

    fn call(&self, arguments: Value) -> BoxFuture<'static, Result<Value, ToolError>> {
        let inner = self.0.clone();
        async move {
            let query = arguments["query"].as_str().unwrap_or_default();
            inner.run(query).await
        }
        .boxed()
    }
}

impl Inner {
    async fn run(&self, query: &str) -> Result<Value, ToolError> {
        // A trailing `;` is harmless alone but would break the wrapping.
        let query = query.trim_end_matches(|c: char| c == ';' || c.is_whitespace());
        if query.trim().is_empty() {
            return Err(ToolError("the query is empty".into()));
        }
        let failed = |error| self.failure(error);
        let mut tx = self
            .pool
            .begin_with("begin read only")
            .await
            .map_err(failed)?;
        sqlx::query(
            "select set_config('statement_timeout', $1, true), set_config('TimeZone', 'UTC', true)",
        )
        .bind(format!("{}ms", self.statement_timeout.as_millis()))
        .execute(&mut *tx)
        .await
        .map_err(failed)?;

        let statement = (&mut *tx)
            .prepare(AssertSqlSafe(query.to_owned()).into_sql_str())
            .await
            .map_err(failed)?;
        let parameters = match statement.parameters() {
            Some(Either::Left(types)) => types.len(),
            Some(Either::Right(count)) => count,
            None => 0,
        };
        if parameters > 0 {
            return Err(ToolError(
                "the query has parameters ($1, …); write the values into the query".into(),
            ));
        }
        let columns = statement.columns();
        if columns.is_empty() {
            return Err(ToolError(
                "the statement returns no rows: only queries that read (SELECT, VALUES, \
                 TABLE, WITH … SELECT) can be run"
                    .into(),
            ));
        }

        let rows: Vec<Value> = sqlx::query_scalar(AssertSqlSafe(wrap(query, columns)))
            .bind(i64::from(self.max_rows) + 1)
            .persistent(false)
            .fetch_all(&mut *tx)
            .await
            .map_err(|error| match &error {
                sqlx::Error::Database(db) if db.code().as_deref() == Some("42601") => ToolError(
                    "only queries that can be used as a subquery (SELECT, VALUES, TABLE, \
                     WITH … SELECT) can be run"
                        .into(),
                ),
                _ => failed(error),
            })?;
        // Nothing was written; a failed rollback only costs the connection,
        // which sqlx then closes.
        let _ = tx.rollback().await;

        let truncated = rows.len() > self.max_rows as usize;
        let rows: Vec<Value> = rows
            .into_iter()
            .take(self.max_rows as usize)
            .map(|row| positional(row, columns.len()))
            .collect();
        let columns: Vec<Value> = columns
            .iter()
            .map(|c| json!({"name": c.name(), "type": c.type_info().name().to_lowercase()}))
            .collect();
        Ok(json!({
            "columns": columns,
            "rows": rows,
            "row_count": rows.len(),
            "truncated": truncated,
        }))
    }

    /// A database failure, worded for the model: PostgreSQL's own message
    /// (and hint), or what went wrong reaching the database.
    fn failure(&self, error: sqlx::Error) -> ToolError {
        let message = match &error {
            sqlx::Error::Database(db) => match db.code().as_deref() {
                Some("57014") => format!(
                    "the query was cancelled: it ran longer than the statement timeout of {} ms",
                    self.statement_timeout.as_millis()
                ),
                Some("42601") if db.message().contains("multiple commands") => {
                    "only one statement can be run at a time".to_owned()
                }
                _ => match db
                    .try_downcast_ref::<PgDatabaseError>()
                    .and_then(PgDatabaseError::hint)
                {
                    Some(hint) => format!("{} (hint: {hint})", db.message()),
                    None => db.message().to_owned(),
                },
            },
            sqlx::Error::PoolTimedOut => format!(
                "no database connection became available within {} s: the database is \
                 unreachable or busy",
                ACQUIRE_TIMEOUT.as_secs()
            ),
            other => {
                tracing::warn!(error = %other, "sql_query cannot reach its database");
                format!("cannot reach the database: {other}")
            }
        };
        ToolError(message)
    }
}

/// The query wrapped to return each row as one JSON object keyed `c1`,
/// `c2`, … in column order (see the module documentation).
fn wrap(query: &str, columns: &[PgColumn]) -> String {
    let names: Vec<String> = (1..=columns.len()).map(|i| format!("c{i}")).collect();
    let projection: Vec<String> = columns
        .iter()
        .zip(&names)
        .map(|(column, name)| match column.type_info().name() {
            "NUMERIC" => format!("{name}::text as {name}"),
            _ => name.clone(),
        })
        .collect();
    // The query sits on lines of its own so that a trailing `--` comment
    // cannot swallow the closing parenthesis.
    format!(
        "select row_to_json(r) from (select {} from (\n{query}\n) as t ({}) limit $1) as r",
        projection.join(", "),
        names.join(", "),
    )
}

/// A `{"c1": …, "c2": …}` row as an array in column order.
fn positional(row: Value, width: usize) -> Value {
    let Value::Object(mut fields) = row else {
        return Value::Null;
    };
    (1..=width)
        .map(|i| fields.remove(&format!("c{i}")).unwrap_or(Value::Null))
        .collect()
}

#[cfg(test)]
mod tests;
