//! API keys: made by `switchyard keys create`, kept only as a SHA-256 of the
//! key, revoked by setting `revoked_at`. Every request looks its key up here,
//! so a revocation holds on every API replica at once.

use chrono::{DateTime, Utc};
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

use super::users;
use crate::domain::UserId;

/// Every key starts with this, so that a leaked key is recognisable (and
/// secret scanners can be taught it).
pub const KEY_PREFIX: &str = "sy_";
/// Characters of a key shown by `keys list`.
const SHOWN_CHARS: usize = 11;

/// A key as `keys list` shows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ApiKeyRow {
    pub id: Uuid,
    pub user_name: String,
    pub prefix: String,
    pub admin: bool,
    pub service: bool,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Who a valid key belongs to.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct KeyOwner {
    pub key_id: Uuid,
    pub user_id: UserId,
    pub user_name: String,
    pub admin: bool,
    /// May name the end user each request acts for.
    pub service: bool,
}

/// What a key may do besides acting as its user.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyGrants {
    /// The `admin` role.
    pub admin: bool,
    /// A service key: an app serving many people, whose requests may name
    /// the end user they act for.
    pub service: bool,
}

/// The stored form of a key.
pub fn hash(key: &str) -> Vec<u8> {
    Sha256::digest(key.as_bytes()).to_vec()
}

/// Make a key for the API-key user `user_name` (created if new). The key
/// itself is returned once and never stored.
pub async fn create(
    pool: &PgPool,
    user_name: &str,
    grants: KeyGrants,
) -> Result<(ApiKeyRow, String), sqlx::Error> {
    let user = users::ensure(pool, "api_key", user_name, user_name).await?;
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    let key: String = std::iter::once(KEY_PREFIX.to_owned())
        .chain(secret.iter().map(|b| format!("{b:02x}")))
        .collect();
    let row = sqlx::query_as(
        "with created as (
             insert into api_keys (id, user_id, prefix, hash, admin, service)
             values ($1, $2, $3, $4, $5, $6)
             returning *
         )
         select c.id, u.name as user_name, c.prefix, c.admin, c.service, c.created_at,
                c.last_used_at, c.revoked_at
         from created c join users u on u.id = c.user_id",
    )
    .bind(Uuid::now_v7())
    .bind(user)
    .bind(&key[..SHOWN_CHARS])
    .bind(hash(&key))
    .bind(grants.admin)
    .bind(grants.service)
    .fetch_one(pool)
    .await?;
    Ok((row, key))
}

/// Every key, revoked ones included, oldest first.
pub async fn list(pool: &PgPool) -> Result<Vec<ApiKeyRow>, sqlx::Error> {
    sqlx::query_as(
        "select k.id, u.name as user_name, k.prefix, k.admin, k.service, k.created_at,
                k.last_used_at, k.revoked_at
         from api_keys k join users u on u.id = k.user_id order by k.id",
    )
    .fetch_all(pool)
    .await
}

/// Revoke a key; `false` if there is no such key or it was revoked already.
pub async fn revoke(pool: &PgPool, id: Uuid) -> Result<bool, sqlx::Error> {
    let revoked =
        sqlx::query("update api_keys set revoked_at = now() where id = $1 and revoked_at is null")
            .bind(id)
            .execute(pool)
            .await?;
    Ok(revoked.rows_affected() == 1)
}

/// The owner of the key whose [`hash`] is `hash`, if it is valid now.
/// Notes the use, at most once a minute per key, in the same statement.
pub async fn owner(pool: &PgPool, hash: &[u8]) -> Result<Option<KeyOwner>, sqlx::Error> {
    sqlx::query_as(
        "with k as (
             select id, user_id, admin, service, last_used_at from api_keys
             where hash = $1 and revoked_at is null
         ), used as (
             update api_keys set last_used_at = now()
             where id = (select id from k)
               and (last_used_at is null or last_used_at < now() - interval '1 minute')
         )
         select k.id as key_id, k.user_id, u.name as user_name, k.admin, k.service
         from k join users u on u.id = k.user_id",
    )
    .bind(hash)
    .fetch_optional(pool)
    .await
}
