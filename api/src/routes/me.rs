//! The caller.

use axum::Json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{CurrentUser, Me};
use crate::error::ErrorBody;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(me))
}

/// Who the caller is, their roles, and how they signed in.
#[utoipa::path(get, path = "/v1/me", tag = "identity",
    responses((status = 200, body = Me), (status = 401, body = ErrorBody)))]
pub async fn me(user: CurrentUser) -> Json<Me> {
    Json(Me::from(&user))
}
