//! End users: the people an app serving many of them (a service) acts
//! for. A service names the end user of a request with
//! [`END_USER_HEADER`] on every surface, or in the body where a surface's
//! protocol has a field for it ([`for_end_user`]). The end user is a user
//! of their own, namespaced under the service (two services' `alice` are
//! two people), never an administrator or a service, with everyone's
//! limits.

use axum::http::HeaderMap;

use super::{Authenticator, CurrentUser};
use crate::error::ApiError;
use crate::state::AppState;

/// The header with which a service names the end user a request acts for.
pub const END_USER_HEADER: &str = "x-switchyard-end-user";

/// Longest end-user id, in bytes.
const MAX_END_USER: usize = 256;

/// The `auth_method` of end users' rows: their subject is
/// `{service's user id}/{end user id}`.
const END_USER_METHOD: &str = "end_user";

impl Authenticator {
    /// The end user `end_user` that the service `caller` acts for, created
    /// on first sight; `field` names where the request named them.
    pub async fn end_user(
        &self,
        caller: &CurrentUser,
        end_user: &str,
        field: &str,
    ) -> Result<CurrentUser, ApiError> {
        if !caller.is_service {
            return Err(ApiError::Forbidden(format!(
                "{field}: only a service may name the end user it acts for (a key made with \
                 `switchyard keys create --service`, or a token with the role {:?})",
                self.settings.service_role
            )));
        }
        if end_user.is_empty()
            || end_user.len() > MAX_END_USER
            || end_user.trim() != end_user
            || end_user.chars().any(char::is_control)
        {
            return Err(ApiError::Validation(format!(
                "{field}: an end user's id is 1 to {MAX_END_USER} bytes, without control \
                 characters or surrounding spaces"
            )));
        }
        let subject = format!("{}/{end_user}", caller.id);
        let id = self.remember(END_USER_METHOD, &subject, end_user).await?;
        Ok(CurrentUser {
            id,
            name: end_user.to_owned(),
            roles: Vec::new(),
            method: caller.method,
            is_admin: false,
            limits: self.policy.for_roles(&[]),
            is_service: false,
            service: Some(caller.id),
        })
    }
}

/// Who the request is made as, its requests counted: the caller, or the
/// end user that [`END_USER_HEADER`] names.
pub(super) async fn acting_user(
    app: &AppState,
    headers: &HeaderMap,
) -> Result<CurrentUser, ApiError> {
    let caller = app.auth.authenticate(headers).await?;
    app.limiter.request(&caller).await?;
    let Some(named) = headers.get(END_USER_HEADER) else {
        return Ok(caller);
    };
    let named = named.to_str().map_err(|_| {
        ApiError::Validation("X-Switchyard-End-User: must be printable ASCII".into())
    })?;
    let end_user = app
        .auth
        .end_user(&caller, named, "X-Switchyard-End-User")
        .await?;
    app.limiter.request(&end_user).await?;
    Ok(end_user)
}

/// The user a request acts as when its body may name an end user
/// (`user_id` of the simple chat, `user` of OpenAI's bodies; `field`
/// names it): that end user, its request counted, or the caller when the
/// body names nobody. A body that names someone else than the header did
/// is refused.
pub async fn for_end_user(
    app: &AppState,
    user: CurrentUser,
    named: Option<&str>,
    field: &str,
) -> Result<CurrentUser, ApiError> {
    let Some(named) = named else {
        return Ok(user);
    };
    if user.service.is_some() {
        return match user.name == named {
            true => Ok(user),
            false => Err(ApiError::Validation(format!(
                "{field}: names another end user than X-Switchyard-End-User does"
            ))),
        };
    }
    let end_user = app.auth.end_user(&user, named, field).await?;
    app.limiter.request(&end_user).await?;
    Ok(end_user)
}
