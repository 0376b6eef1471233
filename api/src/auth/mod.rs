//! Who a request comes from. The authenticators named by `SWITCHYARD_AUTH`
//! are tried in a fixed order:
//!
//! 1. `Authorization: Bearer …`: a JWT (three dot-separated parts) goes to
//!    OIDC, anything else is an API key. A bearer token that fails is a
//!    `401`, never a fall-through to a weaker authenticator.
//! 2. Easy Auth headers, read only when `easy_auth` is on.
//! 3. No credentials: the user `local` when `dev` is on, else `401`.
//!
//! When `dev` is the only authenticator on, every request is the user
//! `local`, whatever credentials it carries: official SDKs always send an
//! API key (people pass `"unused"`, as for Ollama or vLLM), and a local
//! server that refused it would be unusable with them. With any other
//! authenticator on, a bearer token is checked as in 1.
//!
//! A service (a key made with `--service`, an OIDC or Easy Auth caller with
//! the service role, or the development user) is an app serving many
//! people. Its requests may name the end user they act for, with the header
//! [`END_USER_HEADER`] on every surface, or in the body where a surface's
//! protocol has a field for it ([`for_end_user`]). The request is then made
//! as that end user: a user of their own, namespaced under the service (two
//! services' `alice` are two people), with everyone's limits. Anyone else
//! naming an end user is refused (`403`).
//!
//! [`authenticate`] runs as a middleware before every `/v1` route: it also
//! counts the request against the user's per-minute limit (a service's
//! request for an end user counts against both), and leaves the
//! [`CurrentUser`] in the request for the handlers.

pub mod easy_auth;
pub mod end_user;
mod key_guard;
pub mod oidc;

pub use end_user::{END_USER_HEADER, for_end_user};

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use sqlx::PgPool;
use switchyard_common::config::{AuthMethod, AuthSettings, LimitPolicy, Limits};
use switchyard_common::db;
use switchyard_common::domain::UserId;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::state::AppState;

/// Users remembered per replica, so that a token's user is not looked up
/// on every request (users are never deleted).
const REMEMBERED_USERS: usize = 10_000;

/// The user a request is made as.
#[derive(Debug, Clone)]
pub struct CurrentUser {
    pub id: UserId,
    pub name: String,
    pub roles: Vec<String>,
    /// How they signed in.
    pub method: AuthMethod,
    /// May change what all users share, such as the agents.
    pub is_admin: bool,
    /// The limits that apply to them.
    pub limits: Limits,
    /// May name the end user a request acts for.
    pub is_service: bool,
    /// For an end user, the service that acts for them.
    pub service: Option<UserId>,
}

impl CurrentUser {
    /// `forbidden` unless the user is an administrator.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.is_admin {
            Ok(())
        } else {
            Err(ApiError::Forbidden(
                "this operation is for administrators only".into(),
            ))
        }
    }
}

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Self>().cloned().ok_or_else(|| {
            ApiError::Internal(anyhow::anyhow!(
                "a route that needs a user is not behind the authentication middleware"
            ))
        })
    }
}

/// The caller, who must be an administrator: extracting it answers anyone
/// else `403 forbidden` before the request body is read.
#[derive(Debug, Clone)]
pub struct Admin(pub CurrentUser);

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let user = CurrentUser::from_request_parts(parts, state).await?;
        user.require_admin()?;
        Ok(Self(user))
    }
}

/// `GET /v1/me`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Me {
    pub id: UserId,
    pub name: String,
    pub roles: Vec<String>,
    /// `api_key`, `oidc`, `easy_auth` or `dev`.
    pub auth_method: &'static str,
    /// For an end user, the id of the service that acts for them.
    pub service: Option<UserId>,
}

impl From<&CurrentUser> for Me {
    fn from(user: &CurrentUser) -> Self {
        Self {
            id: user.id,
            name: user.name.clone(),
            roles: user.roles.clone(),
            auth_method: user.method.as_str(),
            service: user.service,
        }
    }
}

/// Users by authenticator (`users.auth_method`) and subject: their id
/// and name.
type Remembered = HashMap<(&'static str, String), (UserId, String)>;

/// Tells users apart; one per API process.
pub struct Authenticator {
    settings: AuthSettings,
    pool: PgPool,
    policy: LimitPolicy,
    oidc: Option<oidc::Verifier>,
    /// The development user, when `dev` is on.
    local_user: Option<UserId>,
    /// `dev` is the only authenticator: credentials are not looked at.
    dev_only: bool,
    users: Mutex<Remembered>,
    /// Which keys are looked up in the database (see [`key_guard`]).
    keys: key_guard::KeyGuard,
}

impl Authenticator {
    /// Refuses a configuration with no authenticator: an API nobody can
    /// call is a mistake, not a choice.
    pub async fn new(
        settings: AuthSettings,
        policy: LimitPolicy,
        pool: PgPool,
        tasks: TaskTracker,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(
            !settings.methods.is_empty(),
            "no authenticator is on: set SWITCHYARD_AUTH to a comma list of api_key, oidc, \
             easy_auth and dev (dev lets anyone in as the user `local`: for a laptop only)"
        );
        let dev_only = settings.methods == [AuthMethod::Dev];
        if dev_only {
            tracing::warn!(
                "development mode is on: every request acts as the user `local`, an administrator, whatever token it sends"
            );
        } else if settings.enabled(AuthMethod::Dev) {
            tracing::warn!(
                "development mode is on: requests without credentials act as the user `local`, an administrator"
            );
        }
        let local_user = match settings.enabled(AuthMethod::Dev) {
            true => Some(db::users::ensure(&pool, "dev", "local", "local").await?),
            false => None,
        };
        let oidc = match &settings.oidc {
            Some(oidc) => {
                let verifier = oidc::Verifier::new(oidc.clone(), tasks, shutdown)?;
                verifier.prefetch().await;
                Some(verifier)
            }
            None => None,
        };
        Ok(Self {
            settings,
            pool,
            policy,
            oidc,
            local_user,
            dev_only,
            users: Mutex::new(HashMap::new()),
            keys: key_guard::KeyGuard::default(),
        })
    }

    /// Who sent these headers.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<CurrentUser, ApiError> {
        if self.dev_only
            && let Some(id) = self.local_user
        {
            return Ok(self.local(id));
        }
        if let Some(value) = headers.get(header::AUTHORIZATION) {
            let token = value
                .to_str()
                .ok()
                .and_then(|v| {
                    v.strip_prefix("Bearer ")
                        .or_else(|| v.strip_prefix("bearer "))
                })
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .ok_or_else(|| {
                    ApiError::Unauthorized(
                        "the Authorization header must be `Bearer <token>`".into(),
                    )
                })?;
            return if token.split('.').count() == 3 {
                self.oidc_user(token).await
            } else {
                self.key_user(token).await
            };
        }
        if self.settings.enabled(AuthMethod::EasyAuth)
            && let Some(caller) =
                easy_auth::principal(headers).map_err(|e| ApiError::Unauthorized(e.into()))?
        {
            let id = self
                .remember(AuthMethod::EasyAuth.as_str(), &caller.id, &caller.name)
                .await?;
            return Ok(self.user(id, caller.name, caller.roles, AuthMethod::EasyAuth));
        }
        match self.local_user {
            Some(id) => Ok(self.local(id)),
            None => Err(ApiError::Unauthorized(
                "credentials are required: send `Authorization: Bearer <token>`".into(),
            )),
        }
    }

    /// The development user `local` (whose id is `id`), an administrator.
    fn local(&self, id: UserId) -> CurrentUser {
        // On a developer's machine, a front end that serves many people
        // (and so names them) works as it would with a service key.
        let roles = vec![
            self.settings.admin_role.clone(),
            self.settings.service_role.clone(),
        ];
        self.user(id, "local".into(), roles, AuthMethod::Dev)
    }

    async fn key_user(&self, key: &str) -> Result<CurrentUser, ApiError> {
        if !self.settings.enabled(AuthMethod::ApiKey) {
            return Err(ApiError::Unauthorized(
                "API keys are not accepted here".into(),
            ));
        }
        let unknown = || ApiError::Unauthorized("the API key is unknown or revoked".into());
        let hash = db::api_keys::hash(key);
        match self.keys.before_lookup(key, &hash) {
            key_guard::Verdict::Lookup => {}
            key_guard::Verdict::Unknown => return Err(unknown()),
            key_guard::Verdict::Throttled => {
                return Err(ApiError::RateLimited {
                    limit: "unknown_api_keys",
                    message: "too many unknown API keys were sent lately; retry shortly".into(),
                    retry_after: Duration::from_secs(1),
                });
            }
        }
        let owner = db::api_keys::owner(&self.pool, &hash).await?;
        self.keys.after_lookup(&hash, owner.is_some());
        let owner = owner.ok_or_else(unknown)?;
        // A key's grants are roles too, so that `[limits.roles.…]` sets
        // their figures (a service's requests are all its users').
        let roles = [
            (owner.admin, &self.settings.admin_role),
            (owner.service, &self.settings.service_role),
        ]
        .into_iter()
        .filter(|(granted, _)| *granted)
        .map(|(_, role)| role.clone())
        .collect();
        Ok(self.user(owner.user_id, owner.user_name, roles, AuthMethod::ApiKey))
    }

    async fn oidc_user(&self, token: &str) -> Result<CurrentUser, ApiError> {
        let Some(verifier) = &self.oidc else {
            return Err(ApiError::Unauthorized(
                "OIDC tokens are not accepted here".into(),
            ));
        };
        let verified = verifier.verify(token).await.map_err(|e| match e {
            oidc::TokenError::KeysUnavailable => ApiError::Unavailable,
            e => ApiError::Unauthorized(e.to_string()),
        })?;
        let id = self
            .remember(AuthMethod::Oidc.as_str(), &verified.subject, &verified.name)
            .await?;
        Ok(self.user(id, verified.name, verified.roles, AuthMethod::Oidc))
    }

    /// A caller whose roles say what they may do, a key's grants included.
    fn user(
        &self,
        id: UserId,
        name: String,
        roles: Vec<String>,
        method: AuthMethod,
    ) -> CurrentUser {
        let is_admin = roles.contains(&self.settings.admin_role);
        let is_service = roles.contains(&self.settings.service_role);
        CurrentUser {
            id,
            name,
            limits: self.policy.for_roles(&roles),
            roles,
            method,
            is_admin,
            is_service,
            service: None,
        }
    }

    /// The user `subject` of `method`, created on first sight.
    pub(crate) async fn remember(
        &self,
        method: &'static str,
        subject: &str,
        name: &str,
    ) -> Result<UserId, ApiError> {
        let key = (method, subject.to_owned());
        if let Some((id, known_name)) = self.remembered().get(&key)
            && known_name == name
        {
            return Ok(*id);
        }
        let id = db::users::ensure(&self.pool, method, subject, name).await?;
        let mut users = self.remembered();
        if users.len() >= REMEMBERED_USERS {
            users.clear();
        }
        users.insert(key, (id, name.to_owned()));
        Ok(id)
    }

    /// The users seen lately: a cache of the database, so still usable
    /// after a panic elsewhere poisoned its lock.
    fn remembered(&self) -> MutexGuard<'_, Remembered> {
        self.users.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The middleware in front of every `/v1` route.
pub async fn authenticate(
    State(app): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let user = match end_user::acting_user(&app, request.headers()).await {
        Ok(user) => user,
        Err(error) => return error.into_response(),
    };
    request.extensions_mut().insert(user);
    next.run(request).await
}
