//! Health, readiness and the API's self-description.

use switchyard_tests::{Options, TestApp};

#[tokio::test]
async fn health_and_readiness_answer() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    let (status, body) = app.get("/health").await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
    let (status, body) = app.get("/ready").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["postgres"], "ok");
    assert_eq!(body["redis"], "ok");
}

#[tokio::test]
async fn the_openapi_document_and_docs_page_are_served_offline() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    let (status, doc) = app.get("/openapi.json").await;
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    for path in [
        "/v1/agents",
        "/v1/threads",
        "/v1/threads/{thread_id}",
        "/v1/threads/{thread_id}/messages",
        "/v1/threads/{thread_id}/runs",
        "/v1/runs/{run_id}",
        "/v1/runs/{run_id}/steps",
        "/v1/runs/{run_id}/events",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} is documented");
    }
    let response = app.http.get(app.url("/docs/")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let page = response.text().await.unwrap();
    assert!(page.contains("swagger"), "the docs page is Swagger UI");
    assert!(
        !page.contains("https://"),
        "the docs page loads nothing from the internet"
    );
}

#[tokio::test]
async fn agents_from_the_catalog_are_listed() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    let (status, body) = app.get("/v1/agents").await;
    assert_eq!(status, 200);
    let agents = body["agents"].as_array().unwrap();
    assert_eq!(agents.len(), 1);
    assert_eq!(agents[0]["id"], "assistant");
    assert_eq!(agents[0]["tools"], serde_json::json!(["current_time"]));
    assert_eq!(agents[0]["workflow"]["kind"], "single");
    let (status, agent) = app.get("/v1/agents/assistant").await;
    assert_eq!((status, &agent), (200, &agents[0]));
    let (status, _) = app.get("/v1/agents/nobody").await;
    assert_eq!(status, 404);
}
