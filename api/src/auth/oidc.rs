//! OIDC bearer tokens: JWTs signed by the configured issuer with one of the
//! keys it publishes at its JWKS URL.
//!
//! Only asymmetric algorithms are accepted, and only with a published key of
//! the matching kind: `alg: none` cannot even be parsed, and a token signed
//! with HMAC using a public key as the secret is refused before any
//! signature check.
//!
//! The key set is cached, and fetched by one request at a time that every
//! token waiting for it shares:
//!
//! - a set older than [`MAX_AGE`] is refreshed in the background while the
//!   cached keys keep serving;
//! - a token naming an unknown `kid` (the issuer rotated its keys) waits
//!   for a fetch, at most one every [`MIN_REFRESH`], so that made-up kids
//!   cannot hammer the issuer;
//! - after a failed fetch, none is tried for a while ([`backoff`]): tokens
//!   that need the issuer are refused at once (`503`) rather than queued
//!   behind it, and tokens signed with cached keys are not affected.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde_json::Value;
use switchyard_common::config::OidcSettings;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Least time between two fetches of the key set for unknown kids.
const MIN_REFRESH: Duration = Duration::from_secs(10);
/// A key set older than this is refreshed in the background.
const MAX_AGE: Duration = Duration::from_secs(3600);
/// Longest one fetch of the key set may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest pause after failed fetches.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// How long to wait before fetching again after `failures` failed fetches
/// in a row: 1 s, doubling, at most [`MAX_BACKOFF`].
pub fn backoff(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(6);
    (Duration::from_secs(1) * 2u32.pow(exponent)).min(MAX_BACKOFF)
}

/// Why a token was refused, worded for the client.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("the bearer token is not a valid JWT")]
    Malformed,
    #[error("tokens signed with {0:?} are not accepted")]
    Algorithm(Algorithm),
    #[error("the token's signing key is unknown")]
    UnknownKey,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token was issued for another audience")]
    Audience,
    #[error("the token comes from another issuer")]
    Issuer,
    #[error("the token's signature is invalid")]
    Signature,
    #[error("the token lacks the claim {0}")]
    MissingClaim(String),
    #[error("the issuer's signing keys cannot be fetched")]
    KeysUnavailable,
}

/// A verified token's claims, as far as Switchyard reads them.
#[derive(Debug, Clone)]
pub struct Verified {
    pub subject: String,
    pub name: String,
    pub roles: Vec<String>,
}

/// A usable published key: the decoding key and its algorithm family.
struct PublishedKey {
    key: DecodingKey,
    /// The `alg` the key is published for, if it says.
    alg: Option<Algorithm>,
}

struct KeySet {
    keys: HashMap<String, Arc<PublishedKey>>,
    fetched: Instant,
}

/// Why the key set is fetched.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Refresh {
    /// At start-up, none is cached, or the set is older than [`MAX_AGE`].
    Due,
    /// A token named a key the set lacks: rate-limited by [`MIN_REFRESH`].
    UnknownKey,
}

/// A fetch of the key set every waiter shares; `true` when it succeeded.
type Fetch = Shared<BoxFuture<'static, bool>>;

/// Whether a fetch can be waited for.
enum Fetching {
    Under(Fetch),
    /// The last fetch failed; the next is not due yet.
    BackingOff,
    /// One was made for an unknown key less than [`MIN_REFRESH`] ago.
    TooSoon,
}

pub struct Verifier {
    settings: OidcSettings,
    keys: Arc<Keys>,
}

/// The issuer's published keys, as cached, and their fetching.
struct Keys {
    jwks_url: String,
    http: reqwest::Client,
    cached: RwLock<Option<KeySet>>,
    fetching: Mutex<FetchState>,
    /// Where fetches run, until `shutdown`: waited for on shutdown.
    tasks: TaskTracker,
    shutdown: CancellationToken,
}

#[derive(Default)]
struct FetchState {
    under_way: Option<Fetch>,
    failures: u32,
    retry_at: Option<Instant>,
    last_unknown_key: Option<Instant>,
}

impl Verifier {
    pub fn new(
        settings: OidcSettings,
        tasks: TaskTracker,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder().timeout(FETCH_TIMEOUT).build()?;
        Ok(Self {
            keys: Arc::new(Keys {
                jwks_url: settings.jwks_url.clone(),
                http,
                cached: RwLock::new(None),
                fetching: Mutex::new(FetchState::default()),
                tasks,
                shutdown,
            }),
            settings,
        })
    }

    /// Fetch the key set now; at start-up, so that a wrong URL shows early.
    pub async fn prefetch(&self) {
        if let Fetching::Under(fetch) = self.keys.fetch(Refresh::Due) {
            fetch.await;
        }
    }

    pub async fn verify(&self, token: &str) -> Result<Verified, TokenError> {
        let header = decode_header(token).map_err(|_| TokenError::Malformed)?;
        if !matches!(
            header.alg,
            Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512
                | Algorithm::ES256
                | Algorithm::ES384
                | Algorithm::EdDSA
        ) {
            return Err(TokenError::Algorithm(header.alg));
        }
        let kid = header.kid.as_deref().unwrap_or_default();
        let key = match self.keys.key(kid).await? {
            Some(key) => key,
            // Perhaps the issuer rotated its keys.
            None => match self.keys.fetch(Refresh::UnknownKey) {
                Fetching::Under(fetch) => {
                    if !fetch.await {
                        return Err(TokenError::KeysUnavailable);
                    }
                    self.keys.cached(kid)?.ok_or(TokenError::UnknownKey)?
                }
                Fetching::BackingOff => return Err(TokenError::KeysUnavailable),
                Fetching::TooSoon => return Err(TokenError::UnknownKey),
            },
        };
        if key.key.family() != header.alg.family() || key.alg.is_some_and(|a| a != header.alg) {
            return Err(TokenError::Algorithm(header.alg));
        }

        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.settings.issuer]);
        validation.set_audience(&[&self.settings.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = self.settings.leeway.as_secs();
        let claims = decode::<HashMap<String, Value>>(token, &key.key, &validation)
            .map_err(|e| token_error(e.into_kind()))?
            .claims;

        let text = |name: &str| claims.get(name).and_then(Value::as_str).map(str::to_owned);
        let subject = text("sub").ok_or_else(|| TokenError::MissingClaim("sub".into()))?;
        let name = text("name")
            .or_else(|| text("preferred_username"))
            .or_else(|| text("email"))
            .unwrap_or_else(|| subject.clone());
        let roles = match claims.get(&self.settings.roles_claim) {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            Some(Value::String(one)) => one.split_whitespace().map(str::to_owned).collect(),
            _ => Vec::new(),
        };
        Ok(Verified {
            subject,
            name,
            roles,
        })
    }
}

impl Keys {
    /// The key `kid` (`""`: the only key, when the token names none), or
    /// `None` when the set lacks it. A stale set is refreshed in the
    /// background; with none cached yet, this waits for a fetch.
    async fn key(self: &Arc<Self>, kid: &str) -> Result<Option<Arc<PublishedKey>>, TokenError> {
        let age = self.read().as_ref().map(|set| set.fetched.elapsed());
        match age {
            Some(age) if age < MAX_AGE => {}
            // An old key set still serves meanwhile, and if the issuer is
            // unreachable.
            Some(_) => drop(self.fetch(Refresh::Due)),
            None => match self.fetch(Refresh::Due) {
                Fetching::Under(fetch) => drop(fetch.await),
                Fetching::BackingOff | Fetching::TooSoon => {}
            },
        }
        self.cached(kid)
    }

    /// The cached key `kid`, without fetching.
    fn cached(&self, kid: &str) -> Result<Option<Arc<PublishedKey>>, TokenError> {
        let cached = self.read();
        let set = cached.as_ref().ok_or(TokenError::KeysUnavailable)?;
        Ok(if kid.is_empty() && set.keys.len() == 1 {
            set.keys.values().next().cloned()
        } else {
            set.keys.get(kid).cloned()
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Option<KeySet>> {
        self.cached.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// The fetch under way, or a new one (run by its own task, so that it
    /// ends even if every waiter leaves; shutdown stops it), unless the
    /// last failed too recently or `why` is an unknown key and one was
    /// fetched for that less than [`MIN_REFRESH`] ago.
    fn fetch(self: &Arc<Self>, why: Refresh) -> Fetching {
        let mut state = self.fetching.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(fetch) = &state.under_way {
            return Fetching::Under(fetch.clone());
        }
        let now = Instant::now();
        if state.retry_at.is_some_and(|at| now < at) {
            return Fetching::BackingOff;
        }
        if why == Refresh::UnknownKey {
            if state
                .last_unknown_key
                .is_some_and(|at| now - at < MIN_REFRESH)
            {
                return Fetching::TooSoon;
            }
            state.last_unknown_key = Some(now);
        }
        let keys = self.clone();
        let fetch = async move {
            let result = keys.download().await;
            keys.fetched(result)
        }
        .boxed()
        .shared();
        state.under_way = Some(fetch.clone());
        let (shutdown, run) = (self.shutdown.clone(), fetch.clone());
        self.tasks
            .spawn(async move { shutdown.run_until_cancelled(run).await });
        Fetching::Under(fetch)
    }

    /// Record a fetch's result: the new set, or the next time to try.
    fn fetched(&self, result: anyhow::Result<HashMap<String, Arc<PublishedKey>>>) -> bool {
        let mut state = self.fetching.lock().unwrap_or_else(PoisonError::into_inner);
        state.under_way = None;
        match result {
            Ok(keys) => {
                tracing::info!(keys = keys.len(), "fetched the OIDC signing keys");
                *self.cached.write().unwrap_or_else(PoisonError::into_inner) = Some(KeySet {
                    keys,
                    fetched: Instant::now(),
                });
                state.failures = 0;
                state.retry_at = None;
                true
            }
            Err(error) => {
                state.failures += 1;
                let pause = backoff(state.failures);
                state.retry_at = Some(Instant::now() + pause);
                tracing::warn!(
                    error = %format!("{error:#}"),
                    url = %self.jwks_url,
                    retry_in_secs = pause.as_secs(),
                    "fetching the OIDC signing keys failed; cached keys keep serving"
                );
                false
            }
        }
    }

    async fn download(&self) -> anyhow::Result<HashMap<String, Arc<PublishedKey>>> {
        let set: JwkSet = self
            .http
            .get(&self.jwks_url)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption))
                || matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_))
            {
                // Encryption keys sign nothing; shared secrets are never
                // taken from a published key set.
                continue;
            }
            let Ok(key) = DecodingKey::from_jwk(jwk) else {
                tracing::warn!(kid = ?jwk.common.key_id, "skipping an unusable published key");
                continue;
            };
            let alg = jwk
                .common
                .key_algorithm
                .and_then(|a| a.to_string().parse::<Algorithm>().ok());
            keys.insert(
                jwk.common.key_id.clone().unwrap_or_default(),
                Arc::new(PublishedKey { key, alg }),
            );
        }
        Ok(keys)
    }
}

fn token_error(kind: jsonwebtoken::errors::ErrorKind) -> TokenError {
    use jsonwebtoken::errors::ErrorKind as K;
    match kind {
        K::ExpiredSignature => TokenError::Expired,
        K::ImmatureSignature => TokenError::NotYetValid,
        K::InvalidAudience => TokenError::Audience,
        K::InvalidIssuer => TokenError::Issuer,
        K::InvalidSignature => TokenError::Signature,
        K::MissingRequiredClaim(claim) => TokenError::MissingClaim(claim),
        K::InvalidAlgorithm => TokenError::Signature,
        _ => TokenError::Malformed,
    }
}

#[cfg(test)]
mod backoff_tests {
    use super::*;

    #[test]
    fn failed_fetches_back_off_doubling_to_a_minute() {
        let pauses: Vec<u64> = (1..=8).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(pauses, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }
}
