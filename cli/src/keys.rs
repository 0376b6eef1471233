//! `switchyard keys`: API keys for services and people, made and revoked by
//! an operator. Only `DATABASE_URL` is needed.

use anyhow::{Context as _, bail};
use clap::Subcommand;
use switchyard_common::db;
use uuid::Uuid;

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Make a key for a user (created if new) and print it, once: only a
    /// hash is stored. The key is alone on the last line.
    Create {
        /// The user the key acts as.
        #[arg(long)]
        user: String,
        /// The key carries the `admin` role.
        #[arg(long)]
        admin: bool,
        /// A service key, for an app serving many people: its requests may
        /// name the end user they act for (`X-Switchyard-End-User`), who is
        /// then a user of their own under this key's user.
        #[arg(long)]
        service: bool,
    },
    /// List keys: id, user, prefix, role, when made, last used, revoked.
    List,
    /// Revoke a key: it stops working at once, on every API replica.
    Revoke {
        /// The key's id, from `switchyard keys list`.
        id: Uuid,
    },
}

pub async fn run(command: KeysCommand) -> anyhow::Result<()> {
    let url = std::env::var("DATABASE_URL").context("DATABASE_URL is not set")?;
    crate::services::probe::check(crate::services::probe::Service::Postgres, &url).await?;
    let pool = db::connect(&url, 2)
        .await
        .context("connecting to PostgreSQL")?;
    match command {
        KeysCommand::Create {
            user,
            admin,
            service,
        } => {
            let user = user.trim();
            if user.is_empty() || user.len() > 200 {
                bail!("--user: 1 to 200 characters");
            }
            let grants = db::api_keys::KeyGrants { admin, service };
            let (row, key) = db::api_keys::create(&pool, user, grants).await?;
            eprintln!(
                "key {} for user {:?} ({}); keep it now, it is not shown again:",
                row.id,
                row.user_name,
                role(&row)
            );
            println!("{key}");
        }
        KeysCommand::List => {
            println!("id\tuser\tprefix\trole\tcreated\tlast used\trevoked");
            let time = |t: Option<chrono::DateTime<chrono::Utc>>| {
                t.map_or("-".to_owned(), |t| {
                    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
                })
            };
            for key in db::api_keys::list(&pool).await? {
                println!(
                    "{}\t{}\t{}…\t{}\t{}\t{}\t{}",
                    key.id,
                    key.user_name,
                    key.prefix,
                    role(&key),
                    time(Some(key.created_at)),
                    time(key.last_used_at),
                    time(key.revoked_at),
                );
            }
        }
        KeysCommand::Revoke { id } => {
            if !db::api_keys::revoke(&pool, id).await? {
                bail!("no active key {id}");
            }
            eprintln!("revoked key {id}");
        }
    }
    Ok(())
}

/// `admin`, `service`, both, or `user`.
fn role(key: &db::api_keys::ApiKeyRow) -> &'static str {
    match (key.admin, key.service) {
        (true, true) => "admin+service",
        (true, false) => "admin",
        (false, true) => "service",
        (false, false) => "user",
    }
}
