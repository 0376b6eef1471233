//! Users, created on first sight. A user is identified by the authenticator
//! that vouched for them and its subject; the name is for display.

use sqlx::PgPool;

use crate::domain::UserId;

/// The user `subject` of authenticator `method` (`api_key`, `oidc`,
/// `easy_auth`, `dev`), created if new; a changed display name is updated.
pub async fn ensure(
    pool: &PgPool,
    method: &str,
    subject: &str,
    name: &str,
) -> Result<UserId, sqlx::Error> {
    sqlx::query_scalar(
        "insert into users (id, auth_method, subject, name) values ($1, $2, $3, $4)
         on conflict (auth_method, subject) do update set name = excluded.name
         returning id",
    )
    .bind(UserId::new())
    .bind(method)
    .bind(subject)
    .bind(name)
    .fetch_one(pool)
    .await
}
