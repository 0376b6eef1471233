//! `sql_query` against the real PostgreSQL, each test in a database of
//! its own (`TEST_DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`, names the server). The
//! connecting role is a superuser, so what is refused here is refused by
//! the read-only transaction and the one-statement rule, not by grants.

use serde_json::{Value, json};
use sqlx::ConnectOptions;
use switchyard_common::config::SqlQuerySettings;

use super::*;
use crate::tools::invoke;

fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A database of its own, dropped with this value.
struct TestDb {
    name: String,
    url: String,
}

impl TestDb {
    /// A fresh database with a small table, a sequence and a function that
    /// writes.
    async fn create() -> Self {
        let name = format!("sy_tool_test_{}", uuid::Uuid::now_v7().simple());
        let admin = PgConnectOptions::from_str(&admin_url()).expect("TEST_DATABASE_URL is a URL");
        let mut conn = admin.connect().await.expect("PostgreSQL is reachable");
        sqlx::raw_sql(AssertSqlSafe(format!("create database {name}")))
            .execute(&mut conn)
            .await
            .expect("creating the test database");
        let url = admin.database(&name).to_url_lossy().to_string();
        let mut conn = PgConnectOptions::from_str(&url)
            .expect("a URL")
            .connect()
            .await
            .expect("connecting to the test database");
        sqlx::raw_sql(
            "create table fruit (id int primary key, name text, price numeric(12, 4),
                                 picked timestamptz, tags text[], extra jsonb);
             insert into fruit
                 select i, 'fruit ' || i, i * 1.25, '2026-01-02T03:04:05Z', array['a', 'b'],
                        '{\"ripe\": true}'
                 from generate_series(1, 5) as i;
             create sequence tickets;
             create function remember(v text) returns int language sql as
                 $$ insert into fruit (id, name) values (100, v) returning id $$;",
        )
        .execute(&mut conn)
        .await
        .expect("creating the test schema");
        Self { name, url }
    }

    fn tool(&self, max_rows: u32, statement_timeout_ms: u64) -> SqlQuery {
        let pool = Pools::default().get(&self.url).expect("a valid URL");
        SqlQuery::new(
            pool,
            &SqlQuerySettings {
                database_url_env: "UNUSED".into(),
                max_rows,
                statement_timeout_ms,
            },
        )
    }

    /// How many rows `fruit` holds, read outside the tool.
    async fn fruit_count(&self) -> i64 {
        let mut conn = PgConnectOptions::from_str(&self.url)
            .expect("a URL")
            .connect()
            .await
            .expect("connecting to the test database");
        sqlx::query_scalar("select count(*) from fruit")
            .fetch_one(&mut conn)
            .await
            .expect("counting")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop cannot await: clean up on a thread of its own.
        let cleanup = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                let Ok(admin) = PgConnectOptions::from_str(&admin_url()) else {
                    return;
                };
                if let Ok(mut conn) = admin.connect().await {
                    let _ = sqlx::raw_sql(AssertSqlSafe(format!(
                        "drop database if exists {name} with (force)"
                    )))
                    .execute(&mut conn)
                    .await;
                }
            });
        });
        let _ = cleanup.join();
    }
}

async fn query(tool: &SqlQuery, sql: &str) -> Result<Value, ToolError> {
    invoke(tool, &json!({ "query": sql }).to_string()).await
}

async fn refused(tool: &SqlQuery, sql: &str) -> String {
    match query(tool, sql).await {
        Ok(answer) => panic!("{sql} ran: {answer}"),
        Err(error) => error.0,
    }
}

#[tokio::test]
async fn a_select_comes_back_as_a_table() {
    let db = TestDb::create().await;
    let tool = db.tool(100, 5000);
    let answer = query(
        &tool,
        "select id, name, price, picked, tags, extra, null::int as nothing
         from fruit where id <= 2 order by id;",
    )
    .await
    .unwrap();
    assert_eq!(
        answer["columns"],
        json!([
            {"name": "id", "type": "int4"},
            {"name": "name", "type": "text"},
            {"name": "price", "type": "numeric"},
            {"name": "picked", "type": "timestamptz"},
            {"name": "tags", "type": "text[]"},
            {"name": "extra", "type": "jsonb"},
            {"name": "nothing", "type": "int4"},
        ])
    );
    assert_eq!(
        answer["rows"][1],
        json!([2, "fruit 2", "2.5000", "2026-01-02T03:04:05+00:00", ["a", "b"], {"ripe": true}, null])
    );
    assert_eq!(answer["row_count"], 2);
    assert_eq!(answer["truncated"], false);
}

#[tokio::test]
async fn duplicate_and_unnamed_columns_stay_apart_in_order() {
    let db = TestDb::create().await;
    let tool = db.tool(100, 5000);
    let answer = query(
        &tool,
        "select 1, 'two', 3 as x, 4 as x, ';' as semi -- the end",
    )
    .await
    .unwrap();
    let names: Vec<&str> = answer["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["?column?", "?column?", "x", "x", "semi"]);
    assert_eq!(answer["rows"], json!([[1, "two", 3, 4, ";"]]));
}

#[tokio::test]
async fn rows_beyond_the_cap_are_cut_and_flagged() {
    let db = TestDb::create().await;
    let tool = db.tool(3, 5000);
    let answer = query(&tool, "select id from fruit order by id")
        .await
        .unwrap();
    assert_eq!(answer["rows"], json!([[1], [2], [3]]));
    assert_eq!(answer["row_count"], 3);
    assert_eq!(answer["truncated"], true);

    let exact = query(&tool, "select id from fruit where id <= 3")
        .await
        .unwrap();
    assert_eq!(exact["truncated"], false);
    let empty = query(&tool, "select id from fruit where false")
        .await
        .unwrap();
    assert_eq!(empty["rows"], json!([]));
    assert_eq!(empty["columns"][0]["name"], "id");
}

#[tokio::test]
async fn writes_and_session_changes_are_refused() {
    let db = TestDb::create().await;
    let tool = db.tool(100, 5000);
    for (sql, expected) in [
        (
            "insert into fruit (id) values (50)",
            "the statement returns no rows",
        ),
        ("drop table fruit", "the statement returns no rows"),
        (
            "create table other (x int)",
            "the statement returns no rows",
        ),
        ("set role postgres", "the statement returns no rows"),
        ("commit", "the statement returns no rows"),
        (
            "insert into fruit (id) values (51) returning id",
            "only queries that can be used as a subquery",
        ),
        (
            "with gone as (delete from fruit returning id) select * from gone",
            "WITH clause containing a data-modifying statement must be at the top level",
        ),
        (
            "select nextval('tickets')",
            "cannot execute nextval() in a read-only transaction",
        ),
        (
            "select remember('sneaky')",
            "cannot execute INSERT in a read-only transaction",
        ),
        (
            "select set_config('transaction_read_only', 'off', true)",
            "transaction read-write mode must be set before any query",
        ),
    ] {
        let error = refused(&tool, sql).await;
        assert!(error.starts_with(expected), "{sql}: {error}");
    }
    assert_eq!(db.fruit_count().await, 5);
}

#[tokio::test]
async fn only_one_statement_runs() {
    let db = TestDb::create().await;
    let tool = db.tool(100, 5000);
    for sql in [
        "select 1; insert into fruit (id) values (60)",
        "set transaction read write; insert into fruit (id) values (61)",
        "commit; insert into fruit (id) values (62)",
        "select 1; select 2;",
    ] {
        assert_eq!(
            refused(&tool, sql).await,
            "only one statement can be run at a time",
            "{sql}"
        );
    }
    assert_eq!(db.fruit_count().await, 5);
    // A `;` inside a literal is part of the one statement.
    let answer = query(&tool, "select 'a; drop table fruit' as text;")
        .await
        .unwrap();
    assert_eq!(answer["rows"], json!([["a; drop table fruit"]]));
}

#[tokio::test]
async fn a_slow_query_is_cancelled_by_the_statement_timeout() {
    let db = TestDb::create().await;
    let tool = db.tool(100, 200);
    assert_eq!(
        refused(&tool, "select pg_sleep(10)").await,
        "the query was cancelled: it ran longer than the statement timeout of 200 ms"
    );
    // The connection is fine afterwards.
    let answer = query(&tool, "select 1 as one").await.unwrap();
    assert_eq!(answer["rows"], json!([[1]]));
}

#[tokio::test]
async fn mistakes_come_back_as_postgresql_words() {
    let db = TestDb::create().await;
    let tool = db.tool(100, 5000);
    assert_eq!(
        refused(&tool, "select * from vegetables").await,
        "relation \"vegetables\" does not exist"
    );
    assert!(
        refused(&tool, "selec 1")
            .await
            .starts_with("syntax error at or near \"selec\"")
    );
    assert_eq!(
        refused(&tool, "select $1::int").await,
        "the query has parameters ($1, …); write the values into the query"
    );
    assert_eq!(refused(&tool, " ; ").await, "the query is empty");
    assert_eq!(
        refused(&tool, "show statement_timeout").await,
        "only queries that can be used as a subquery (SELECT, VALUES, TABLE, WITH … SELECT) can be run"
    );
}

#[tokio::test]
async fn an_unreachable_database_is_reported_without_its_url() {
    let pool = Pools::default()
        .get("postgres://reader:hunter2@db.invalid/reports")
        .expect("a valid URL");
    let tool = SqlQuery::new(
        pool,
        &SqlQuerySettings {
            database_url_env: "UNUSED".into(),
            max_rows: 1,
            statement_timeout_ms: 1000,
        },
    );
    let error = refused(&tool, "select 1").await;
    assert!(error.starts_with("cannot reach the database: "), "{error}");
    assert!(!error.contains("hunter2"), "{error}");
}

#[tokio::test]
async fn pools_are_shared_by_url() {
    let pools = Pools::default();
    for url in [
        "postgres://u@127.0.0.1/a",
        "postgres://u@127.0.0.1/b",
        "postgres://u@127.0.0.1/a",
    ] {
        pools.get(url).unwrap();
    }
    assert_eq!(pools.0.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn no_session_state_outlives_a_call() {
    let db = TestDb::create().await;
    let tool = db.tool(100, 5000);
    query(&tool, "select pg_advisory_lock(4242)")
        .await
        .expect("taking a session lock");
    query(&tool, "select set_config('search_path', 'nowhere', false)")
        .await
        .expect("changing a session setting");
    // Another session can take the lock: the tool's connection let it go.
    let mut other = PgConnectOptions::from_str(&db.url)
        .expect("a URL")
        .connect()
        .await
        .expect("connecting to the test database");
    let taken: bool = sqlx::query_scalar("select pg_try_advisory_lock(4242)")
        .fetch_one(&mut other)
        .await
        .expect("trying the lock");
    assert!(taken, "the advisory lock outlived the call");
    let path = query(&tool, "select current_setting('search_path') as path")
        .await
        .expect("reading the setting");
    assert!(
        !path.to_string().contains("nowhere"),
        "the setting outlived the call: {path}"
    );
}
