//! OIDC bearer tokens: JWTs signed by the configured issuer with one of the
//! keys it publishes at its JWKS URL.
//!
//! Only asymmetric algorithms are accepted, and only with a published key of
//! the matching kind: `alg: none` cannot even be parsed, and a token signed
//! with HMAC using a public key as the secret is refused before any
//! signature check. The key set is cached; a token naming an unknown `kid`
//! (the issuer rotated its keys) makes one refresh, at most every
//! [`MIN_REFRESH`], so that made-up kids cannot hammer the issuer.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde_json::Value;
use switchyard_common::config::OidcSettings;
use tokio::sync::{Mutex, RwLock};

/// Least time between two fetches of the key set.
const MIN_REFRESH: Duration = Duration::from_secs(10);
/// A key set older than this is fetched again on the next token.
const MAX_AGE: Duration = Duration::from_secs(3600);

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
    /// Counts fetches: a refresh asked for by a reader of an older set is
    /// skipped if another reader refreshed meanwhile.
    generation: u64,
}

/// Why the key set is fetched.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Refresh {
    /// At start-up, or the set is older than [`MAX_AGE`].
    Due,
    /// A token named a key the set lacks: rate-limited by [`MIN_REFRESH`].
    UnknownKey,
}

pub struct Verifier {
    settings: OidcSettings,
    http: reqwest::Client,
    keys: RwLock<Option<KeySet>>,
    /// When an unknown key last caused a fetch; its lock serialises fetches.
    last_unknown_key: Mutex<Option<Instant>>,
}

impl Verifier {
    pub fn new(settings: OidcSettings) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()?;
        Ok(Self {
            settings,
            http,
            keys: RwLock::new(None),
            last_unknown_key: Mutex::new(None),
        })
    }

    /// Fetch the key set now; at start-up, so that a wrong URL shows early.
    pub async fn prefetch(&self) {
        if let Err(error) = self.refresh(0, Refresh::Due).await {
            tracing::warn!(error = %format!("{error:#}"), url = %self.settings.jwks_url, "fetching the OIDC signing keys failed; will retry on the first token");
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
        let key = match self.key(kid).await? {
            (Some(key), _) => key,
            (None, generation) => {
                // Perhaps the issuer rotated its keys.
                self.refresh(generation, Refresh::UnknownKey)
                    .await
                    .map_err(|_| TokenError::KeysUnavailable)?;
                self.key(kid).await?.0.ok_or(TokenError::UnknownKey)?
            }
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

    /// The cached key `kid` (`""`: the only key, when the token names
    /// none), `None` when the cache lacks it, and the generation of the set
    /// looked at. A stale set is refreshed first.
    async fn key(&self, kid: &str) -> Result<(Option<Arc<PublishedKey>>, u64), TokenError> {
        let stale = match &*self.keys.read().await {
            Some(set) if set.fetched.elapsed() < MAX_AGE => None,
            Some(set) => Some(set.generation),
            None => Some(0),
        };
        if let Some(generation) = stale {
            // An old key set still serves if the issuer is unreachable.
            if let Err(error) = self.refresh(generation, Refresh::Due).await {
                tracing::warn!(error = %format!("{error:#}"), "refreshing the OIDC signing keys failed");
            }
        }
        let keys = self.keys.read().await;
        let Some(set) = keys.as_ref() else {
            return Err(TokenError::KeysUnavailable);
        };
        let key = if kid.is_empty() && set.keys.len() == 1 {
            set.keys.values().next().cloned()
        } else {
            set.keys.get(kid).cloned()
        };
        Ok((key, set.generation))
    }

    /// Fetch the key set, unless someone did since generation `seen` was
    /// read, or (for an unknown key) one was fetched for that reason less
    /// than [`MIN_REFRESH`] ago.
    async fn refresh(&self, seen: u64, why: Refresh) -> anyhow::Result<()> {
        let mut last_unknown_key = self.last_unknown_key.lock().await;
        let current = self
            .keys
            .read()
            .await
            .as_ref()
            .map_or(0, |set| set.generation);
        if current != seen {
            return Ok(());
        }
        if why == Refresh::UnknownKey {
            if last_unknown_key.is_some_and(|at| at.elapsed() < MIN_REFRESH) {
                return Ok(());
            }
            *last_unknown_key = Some(Instant::now());
        }
        let set: JwkSet = self
            .http
            .get(&self.settings.jwks_url)
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
        tracing::info!(keys = keys.len(), "fetched the OIDC signing keys");
        *self.keys.write().await = Some(KeySet {
            keys,
            fetched: Instant::now(),
            generation: seen + 1,
        });
        Ok(())
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
