//! Agents: `GET /v1/agents`, `GET /v1/agents/{agent_id}`, and the writes
//! `POST`, `PUT` and `DELETE`, which are for administrators.
//!
//! Agents declared in the configuration file are re-applied at every
//! start-up, so the API refuses to change them (`409`): the file is where
//! they change.

use axum::Json as JsonBody;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use switchyard_common::config;
use switchyard_common::db::{self, agents::WriteRefused};
use switchyard_common::domain::{Agent, AgentSource, AgentSpec};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{Admin, CurrentUser};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{Json, Path};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(show, update, remove))
}

#[derive(Serialize, ToSchema)]
pub struct AgentList {
    pub agents: Vec<Agent>,
}

/// The agents this deployment offers. Administrators see whole
/// definitions; other callers see them without `instructions`,
/// `tool_settings` and `workflow.upstream` (empty).
#[utoipa::path(get, path = "/v1/agents", tag = "agents", responses((status = 200, body = AgentList)))]
pub async fn list(
    State(app): State<AppState>,
    user: CurrentUser,
) -> ApiResult<JsonBody<AgentList>> {
    let agents = db::agents::list(&app.pool).await?;
    Ok(JsonBody(AgentList {
        agents: agents.into_iter().map(|a| visible(&user, a)).collect(),
    }))
}

/// What `user` sees of `agent`: all of it for an administrator, the rest
/// without its instructions, tool settings and upstream.
fn visible(user: &CurrentUser, agent: Agent) -> Agent {
    match user.is_admin {
        true => agent,
        false => agent.for_users(),
    }
}

#[utoipa::path(get, path = "/v1/agents/{agent_id}", tag = "agents",
    params(("agent_id" = String, Path)),
    responses((status = 200, body = Agent), (status = 404, body = ErrorBody)))]
pub async fn show(
    State(app): State<AppState>,
    user: CurrentUser,
    Path(agent_id): Path<String>,
) -> ApiResult<JsonBody<Agent>> {
    db::agents::get(&app.pool, &agent_id)
        .await?
        .map(|agent| JsonBody(visible(&user, agent)))
        .ok_or_else(|| ApiError::not_found("agent", &agent_id))
}

/// Create an agent. `id` is required; a deleted agent's id may be reused.
#[utoipa::path(post, path = "/v1/agents", tag = "agents", request_body = AgentSpec,
    responses((status = 201, body = Agent),
              (status = 403, body = ErrorBody, description = "The caller is not an administrator"),
              (status = 409, body = ErrorBody, description = "An agent with this id exists"),
              (status = 422, body = ErrorBody, description = "The definition is invalid; the message names the field")))]
pub async fn create(
    State(app): State<AppState>,
    _admin: Admin,
    Json(spec): Json<AgentSpec>,
) -> ApiResult<(StatusCode, JsonBody<Agent>)> {
    if spec.id.is_empty() {
        return Err(ApiError::Validation("id: required".into()));
    }
    validate(&app, &spec).await?;
    let agent = db::agents::create(&app.pool, &spec)
        .await?
        .map_err(|refused| refusal(&spec.id, refused))?;
    Ok((StatusCode::CREATED, JsonBody(agent)))
}

/// Replace an agent's definition: fields left out take their defaults.
/// `id` may be left out; when given it must be the path's.
#[utoipa::path(put, path = "/v1/agents/{agent_id}", tag = "agents",
    params(("agent_id" = String, Path)), request_body = AgentSpec,
    responses((status = 200, body = Agent),
              (status = 403, body = ErrorBody, description = "The caller is not an administrator"),
              (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody, description = "The agent is declared in the configuration file"),
              (status = 422, body = ErrorBody, description = "The definition is invalid; the message names the field")))]
pub async fn update(
    State(app): State<AppState>,
    _admin: Admin,
    Path(agent_id): Path<String>,
    Json(mut spec): Json<AgentSpec>,
) -> ApiResult<JsonBody<Agent>> {
    // Whether the agent may be changed at all comes before what it is changed to.
    match db::agents::get(&app.pool, &agent_id).await? {
        None => return Err(refusal(&agent_id, WriteRefused::NotFound)),
        Some(agent) if agent.source == AgentSource::Config => {
            return Err(refusal(&agent_id, WriteRefused::FromConfig));
        }
        Some(_) => {}
    }
    if spec.id.is_empty() {
        spec.id.clone_from(&agent_id);
    } else if spec.id != agent_id {
        return Err(ApiError::Validation(format!(
            "id: {:?} differs from the path's {agent_id:?}; leave it out or make them equal",
            spec.id
        )));
    }
    validate(&app, &spec).await?;
    db::agents::update(&app.pool, &spec)
        .await?
        .map(JsonBody)
        .map_err(|refused| refusal(&agent_id, refused))
}

/// Delete an agent. Its threads and runs stay readable; new threads and
/// runs on it are refused.
#[utoipa::path(delete, path = "/v1/agents/{agent_id}", tag = "agents",
    params(("agent_id" = String, Path)),
    responses((status = 204),
              (status = 403, body = ErrorBody, description = "The caller is not an administrator"),
              (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody, description = "The agent is declared in the configuration file, or other agents hand off to it")))]
pub async fn remove(
    State(app): State<AppState>,
    _admin: Admin,
    Path(agent_id): Path<String>,
) -> ApiResult<StatusCode> {
    db::agents::delete(&app.pool, &agent_id)
        .await?
        .map_err(|refused| refusal(&agent_id, refused))?;
    Ok(StatusCode::NO_CONTENT)
}

/// Check a definition against the deployment's providers, the stored
/// agents it hands off to (read in one query), and what `[api_agents]`
/// lets agents written here reach.
async fn validate(app: &AppState, spec: &AgentSpec) -> ApiResult<()> {
    let live = db::agents::existing(&app.pool, &spec.workflow.handoffs).await?;
    let catalog = &app.config.catalog;
    config::check_agent(spec, &catalog.providers, |id| live.iter().any(|l| l == id))
        .and_then(|()| catalog.api_agents.check(spec))
        .map_err(|problem| ApiError::Validation(format!("{}: {}", problem.field, problem.message)))
}

/// The answer to a write the store refused.
fn refusal(agent_id: &str, refused: WriteRefused) -> ApiError {
    match refused {
        WriteRefused::NotFound => ApiError::not_found("agent", agent_id),
        WriteRefused::Exists => ApiError::Conflict(format!("agent {agent_id:?} exists already")),
        WriteRefused::FromConfig => ApiError::Conflict(format!(
            "agent {agent_id:?} is declared in the configuration file; change it there"
        )),
        WriteRefused::InUse(users) => {
            let users: Vec<String> = users.iter().map(|u| format!("{u:?}")).collect();
            ApiError::Conflict(format!(
                "agent {agent_id:?} is in the handoffs of {}; remove it there first",
                users.join(", ")
            ))
        }
        WriteRefused::MissingHandoff(target) => ApiError::Validation(format!(
            "workflow.handoffs: hand-off to agent {target:?}, which does not exist"
        )),
    }
}
