//! The OpenAPI 3.1 document, generated from the handlers themselves.

use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Switchyard",
        description = "Conversation threads, agent runs and their live event streams.\n\n\
            Errors have the shape `{\"error\": {\"code\", \"message\"}}`. Lists are paginated \
            with `limit` (1–100) and the `next_cursor` of the previous page. Threads and runs \
            are listed newest first; messages oldest first within a page, pages walking back \
            from the newest (`before`).\n\n\
            Every `/v1` and `/api` route needs credentials unless development mode is on: \
            `Authorization: Bearer <API key or OIDC token>`, or Azure App Service Easy Auth \
            headers where enabled; `401 unauthorized` without them, and `429 rate_limited` \
            with `Retry-After` and the limit's name past a per-user limit.\n\n\
            A service (a key made with `switchyard keys create --service`, or a token with the \
            service role) may act for one of its end users: `X-Switchyard-End-User: <id>` on \
            any route, `user_id` in a simple-chat body or `user` in an OpenAI body. The request \
            is then made as that end user, a user of their own under the service, with their own \
            threads, runs and limits; naming an end user without being a service is \
            `403 forbidden`.\n\n\
            A thread is `private` or `public`: a public thread, its messages and its finished \
            runs (with their steps and events) can be read by any signed-in user who has the id; \
            it is never listed to them, and every write answers `404` as for a private one.\n\n\
            Browsers: pages of the origins in `SWITCHYARD_CORS_ORIGINS` may call every route; \
            other origins' preflights answer `403 forbidden`."
    ),
    components(schemas(crate::error::ErrorBody, crate::error::ErrorDetail)),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags(
        (name = "identity", description = "Who the caller is"),
        (name = "agents", description = "What can answer"),
        (name = "threads", description = "Conversations and their messages"),
        (name = "runs", description = "Executions of an agent on a thread, and their events"),
        (name = "service", description = "Health and readiness"),
        (name = "openai-compatible", description = "OpenAI's chat-completions API over the agents: \
            `model` names an agent; every call is a run on a new thread"),
        (name = "agent-chat", description = "Chat with one agent: `data:` JSON token, trace, \
            heartbeat, error and done events; the agent's threads by offset; the agent registry \
            at `/api/agents`"),
        (name = "simple-chat", description = "One conversation at a time over the request queue, \
            per end user for a service (`user_id`); `POST /api/chat` also takes the Vercel AI \
            SDK's body; `/api/chat/stream?format=message` streams raw tokens as `message` events"),
        (name = "ai-sdk", description = "The Vercel AI SDK's UI message stream protocol (`useChat`): \
            `POST /api/chat` with `{id, messages}` and resuming a chat's stream"),
        (name = "conversations", description = "Conversations of OpsAgent-style UIs: messages, \
            the thinking stream of tool calls and agents, user, models and settings"),
    )
)]
pub struct ApiDoc;

/// Declares the bearer scheme every `/v1` route takes (API key or JWT).
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API key (`sy_…`) or an OIDC access token"))
                    .build(),
            ),
        );
    }
}
