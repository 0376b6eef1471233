//! `GET /v1/agents`, `GET /v1/agents/{agent_id}`.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use switchyard_common::db;
use switchyard_common::domain::Agent;
use utoipa::ToSchema;

use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::Path;
use crate::state::{AppState, CurrentUser};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/agents", get(list))
        .route("/v1/agents/{agent_id}", get(show))
}

#[derive(Serialize, ToSchema)]
pub struct AgentList {
    pub agents: Vec<Agent>,
}

/// The agents this deployment offers.
#[utoipa::path(get, path = "/v1/agents", tag = "agents", responses((status = 200, body = AgentList)))]
pub async fn list(State(app): State<AppState>, _user: CurrentUser) -> ApiResult<Json<AgentList>> {
    Ok(Json(AgentList {
        agents: db::agents::list(&app.pool).await?,
    }))
}

#[utoipa::path(get, path = "/v1/agents/{agent_id}", tag = "agents",
    params(("agent_id" = String, Path)),
    responses((status = 200, body = Agent), (status = 404, body = ErrorBody)))]
pub async fn show(
    State(app): State<AppState>,
    _user: CurrentUser,
    Path(agent_id): Path<String>,
) -> ApiResult<Json<Agent>> {
    db::agents::get(&app.pool, &agent_id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("agent", &agent_id))
}
