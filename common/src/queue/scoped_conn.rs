//! The connection apalis-redis runs on, keeping every key it writes under
//! `SWITCHYARD_REDIS_PREFIX`.
//!
//! apalis names its queue's keys after the queue, which is ours
//! ([`crate::redis_conn::Keys::run_queue`]), with one exception: its
//! worker-registration script adds the queue to a registry at the fixed
//! key `core:apalis:queues:list`, shared by every deployment on the same
//! Redis. The script names that key in its text, so no configuration moves
//! it.
//!
//! [`ScopedConn`] moves it. apalis runs its scripts as redis-rs does:
//! `EVALSHA <hash>`, and on `NOSCRIPT` a `SCRIPT LOAD <text>` and the
//! `EVALSHA` again. The first `EVALSHA` of a hash this connection has not
//! loaded itself is answered `NOSCRIPT` without reaching Redis, so that the
//! script's text always passes through [`ScopedConn`]: it loads the text
//! with `core:apalis:` replaced by `{prefix}:apalis:`, and from then on
//! sends that script's hash in place of the original. A script apalis sent
//! before (by an older Switchyard, or another program on the same Redis)
//! is therefore never run under its original hash here.
//!
//! apalis-redis sends scripts one at a time, never in a pipeline; a
//! pipeline is passed through unchanged.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::{Arg, Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, ServerErrorKind, Value};

/// What apalis's scripts name outside the queue's own keys.
const GLOBAL_PREFIX: &str = "core:apalis:";

/// A [`ConnectionManager`] whose scripts keep their keys under a prefix.
#[derive(Clone)]
pub struct ScopedConn {
    inner: ConnectionManager,
    scope: Arc<Scope>,
}

struct Scope {
    /// What [`GLOBAL_PREFIX`] becomes: `{prefix}:apalis:`.
    replacement: String,
    /// The hash a script is sent under, by the hash of its original text.
    loaded: RwLock<HashMap<String, String>>,
}

/// What to send in place of a command.
enum Rewrite {
    Unchanged,
    Command(Cmd),
    /// `SCRIPT LOAD` of a script whose text changed: send the command, then
    /// answer with the original hash, as the caller expects.
    Load {
        command: Cmd,
        original_hash: String,
    },
    /// A script not loaded through this connection yet.
    NoScript,
}

impl ScopedConn {
    /// Keep apalis's keys under `prefix` (the deployment's key prefix).
    pub fn new(inner: ConnectionManager, prefix: &str) -> Self {
        Self {
            inner,
            scope: Arc::new(Scope {
                // The key sits in a Lua string literal: escape what would
                // end it.
                replacement: format!("{prefix}:apalis:")
                    .replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\'', "\\'"),
                loaded: RwLock::new(HashMap::new()),
            }),
        }
    }
}

impl Scope {
    fn rewrite(&self, cmd: &Cmd) -> Rewrite {
        // A cursor argument belongs to SCAN-like commands, never rewritten.
        let Some(args) = cmd
            .args_iter()
            .map(|arg| match arg {
                Arg::Simple(bytes) => Some(bytes),
                _ => None,
            })
            .collect::<Option<Vec<&[u8]>>>()
        else {
            return Rewrite::Unchanged;
        };
        let Some(name) = args.first() else {
            return Rewrite::Unchanged;
        };
        if name.eq_ignore_ascii_case(b"EVALSHA") || name.eq_ignore_ascii_case(b"EVALSHA_RO") {
            let Some(hash) = args.get(1).and_then(|h| std::str::from_utf8(h).ok()) else {
                return Rewrite::Unchanged;
            };
            let loaded = self.loaded.read().unwrap_or_else(|e| e.into_inner());
            return match loaded.get(hash) {
                None => Rewrite::NoScript,
                Some(sent) if sent == hash => Rewrite::Unchanged,
                Some(sent) => Rewrite::Command(with_arg(&args, 1, sent.as_bytes())),
            };
        }
        if name.eq_ignore_ascii_case(b"SCRIPT")
            && args.get(1).is_some_and(|a| a.eq_ignore_ascii_case(b"LOAD"))
            && let Some(text) = args.get(2).and_then(|t| std::str::from_utf8(t).ok())
        {
            let original_hash = redis::Script::new(text).get_hash().to_owned();
            let scoped = text.replace(GLOBAL_PREFIX, &self.replacement);
            let sent_hash = redis::Script::new(&scoped).get_hash().to_owned();
            self.loaded
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(original_hash.clone(), sent_hash);
            return match scoped == text {
                true => Rewrite::Unchanged,
                false => Rewrite::Load {
                    command: with_arg(&args, 2, scoped.as_bytes()),
                    original_hash,
                },
            };
        }
        if (name.eq_ignore_ascii_case(b"EVAL") || name.eq_ignore_ascii_case(b"EVAL_RO"))
            && let Some(text) = args.get(1).and_then(|t| std::str::from_utf8(t).ok())
            && text.contains(GLOBAL_PREFIX)
        {
            let scoped = text.replace(GLOBAL_PREFIX, &self.replacement);
            return Rewrite::Command(with_arg(&args, 1, scoped.as_bytes()));
        }
        Rewrite::Unchanged
    }
}

/// `args` as a command, with argument `index` replaced by `value`.
fn with_arg(args: &[&[u8]], index: usize, value: &[u8]) -> Cmd {
    let mut cmd = Cmd::new();
    for (i, arg) in args.iter().enumerate() {
        cmd.arg(if i == index { value } else { arg });
    }
    cmd
}

impl ConnectionLike for ScopedConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            match self.scope.rewrite(cmd) {
                Rewrite::Unchanged => self.inner.req_packed_command(cmd).await,
                Rewrite::Command(rewritten) => self.inner.req_packed_command(&rewritten).await,
                Rewrite::Load {
                    command,
                    original_hash,
                } => {
                    self.inner.req_packed_command(&command).await?;
                    Ok(Value::BulkString(original_hash.into_bytes()))
                }
                Rewrite::NoScript => Err(RedisError::from((
                    ErrorKind::Server(ServerErrorKind::NoScript),
                    "the script is loaded through this connection first",
                ))),
            }
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        self.inner.req_packed_commands(pipeline, offset, count)
    }

    fn get_db(&self) -> i64 {
        self.inner.get_db()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope() -> Scope {
        Scope {
            replacement: "sy:apalis:".into(),
            loaded: RwLock::new(HashMap::new()),
        }
    }

    fn args(cmd: &Cmd) -> Vec<Vec<u8>> {
        cmd.args_iter()
            .map(|a| match a {
                Arg::Simple(b) => b.to_vec(),
                _ => Vec::new(),
            })
            .collect()
    }

    #[test]
    fn a_script_naming_a_global_key_runs_under_the_prefix() {
        let scope = scope();
        let text = r#"redis.call("zadd", "core:apalis:queues:list", 1, KEYS[1])"#;
        let script = redis::Script::new(text);
        let mut evalsha = redis::cmd("EVALSHA");
        evalsha.arg(script.get_hash()).arg(1).arg("sy:queue:runs");
        assert!(matches!(scope.rewrite(&evalsha), Rewrite::NoScript));

        let mut load = redis::cmd("SCRIPT");
        load.arg("LOAD").arg(text);
        let Rewrite::Load {
            command,
            original_hash,
        } = scope.rewrite(&load)
        else {
            panic!("the script's text is rewritten");
        };
        assert_eq!(original_hash, script.get_hash());
        let scoped = r#"redis.call("zadd", "sy:apalis:queues:list", 1, KEYS[1])"#;
        assert_eq!(args(&command)[2], scoped.as_bytes());

        let Rewrite::Command(sent) = scope.rewrite(&evalsha) else {
            panic!("the script runs under its new hash");
        };
        let sent = args(&sent);
        assert_eq!(sent[1], redis::Script::new(scoped).get_hash().as_bytes());
        assert_eq!(sent[3], b"sy:queue:runs");
    }

    #[test]
    fn other_scripts_and_commands_pass_unchanged_once_loaded() {
        let scope = scope();
        let text = "return redis.call('get', KEYS[1])";
        let hash = redis::Script::new(text).get_hash().to_owned();
        let mut evalsha = redis::cmd("evalsha");
        evalsha.arg(&hash).arg(0);
        assert!(matches!(scope.rewrite(&evalsha), Rewrite::NoScript));
        let mut load = redis::cmd("script");
        load.arg("load").arg(text);
        assert!(matches!(scope.rewrite(&load), Rewrite::Unchanged));
        assert!(matches!(scope.rewrite(&evalsha), Rewrite::Unchanged));
        let mut zrem = redis::cmd("ZREM");
        zrem.arg("sy:queue:runs:workers").arg("w");
        assert!(matches!(scope.rewrite(&zrem), Rewrite::Unchanged));
    }
}
