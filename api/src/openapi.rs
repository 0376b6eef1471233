//! The OpenAPI 3.1 document, generated from the handlers themselves.

use utoipa::OpenApi;

use crate::routes::{agents, events, runs, service, threads};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Switchyard",
        description = "Conversation threads, agent runs and their live event streams.\n\n\
            Errors have the shape `{\"error\": {\"code\", \"message\"}}`. Lists are paginated \
            with `limit` (1–100) and the `next_cursor` of the previous page. Threads and runs \
            are listed newest first; messages oldest first within a page, pages walking back \
            from the newest (`before`)."
    ),
    paths(
        agents::list, agents::show, agents::create, agents::update, agents::remove,
        threads::create, threads::list, threads::show, threads::update, threads::remove,
        threads::messages,
        runs::create, runs::list, runs::show, runs::cancel, runs::steps,
        events::events,
        service::health, service::ready,
    ),
    components(schemas(crate::error::ErrorBody, crate::error::ErrorDetail)),
    tags(
        (name = "agents", description = "What can answer"),
        (name = "threads", description = "Conversations and their messages"),
        (name = "runs", description = "Executions of an agent on a thread, and their events"),
        (name = "service", description = "Health and readiness"),
    )
)]
pub struct ApiDoc;
