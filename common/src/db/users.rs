//! Users, created on first sight.

use sqlx::PgPool;

use crate::domain::UserId;

/// The user named `name`, created if new.
pub async fn ensure(pool: &PgPool, name: &str) -> Result<UserId, sqlx::Error> {
    sqlx::query_scalar(
        "insert into users (id, name) values ($1, $2)
         on conflict (name) do update set name = excluded.name
         returning id",
    )
    .bind(UserId::new())
    .bind(name)
    .fetch_one(pool)
    .await
}
