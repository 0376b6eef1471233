//! Outages of one dependency, through a proxy the test cuts: nothing
//! accepted is lost, and the service recovers by itself.

use std::time::Duration;

use serde_json::json;
use switchyard_tests::proxy::Proxy;
use switchyard_tests::{Options, TestApp, WAIT};

#[tokio::test]
async fn with_redis_down_runs_are_accepted_and_run_once_it_returns() {
    let redis = Proxy::to_url(&switchyard_tests::redis_url()).await;
    let app = TestApp::spawn_with(Options {
        redis_via: Some(redis.address()),
        ..Options::default()
    })
    .await;
    let thread = app.create_thread(json!({})).await;
    let thread_id = thread["id"].as_str().unwrap();

    redis.cut();
    let (status, ready) = app.get("/ready").await;
    // Still serving: a load balancer keeps this replica.
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["status"], "degraded", "{ready}");
    assert_eq!(ready["postgres"], "ok");
    // Reads come from PostgreSQL; a new run is stored.
    let (status, read) = app.get(&format!("/v1/threads/{thread_id}")).await;
    assert_eq!(status, 200, "{read}");
    let run = app.start_run(thread_id, "Are you there?").await;
    let run_id = run["id"].as_str().unwrap();
    let (status, listed) = app.get(&format!("/v1/threads/{thread_id}/messages")).await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["messages"].as_array().unwrap().len(), 1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, still) = app.get(&format!("/v1/runs/{run_id}")).await;
    assert_eq!(still["status"], "queued", "{still}");

    redis.restore();
    let run = app.wait_for_run(run_id).await;
    assert_eq!(run["status"], "completed", "{run}");
    let events = app.stream_events(run_id, None, None).await;
    assert_eq!(events.last().unwrap().event, "run.completed");
    let (status, ready) = app.get("/ready").await;
    assert_eq!(status, 200, "{ready}");
}

#[tokio::test]
async fn with_postgres_down_requests_answer_unavailable_until_it_returns() {
    let postgres = Proxy::to_url(&switchyard_tests::admin_url()).await;
    let app = TestApp::spawn_with(Options {
        postgres_via: Some(postgres.address()),
        worker: false,
        ..Options::default()
    })
    .await;
    let thread = app.create_thread(json!({})).await;
    let thread_id = thread["id"].as_str().unwrap();

    postgres.cut();
    let response = app
        .http
        .post(app.url("/v1/threads"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unavailable", "{body}");
    let (status, ready) = app.get("/ready").await;
    assert_eq!(status, 503, "{ready}");
    assert_eq!(ready["status"], "unavailable", "{ready}");

    postgres.restore();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, read) = app.get(&format!("/v1/threads/{thread_id}")).await;
        if status == 200 {
            break;
        }
        assert_eq!(status, 503, "{read}");
        assert!(tokio::time::Instant::now() < deadline, "no recovery");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, created) = app.post("/v1/threads", json!({})).await;
    assert_eq!(status, 201, "{created}");
}

#[tokio::test]
async fn a_run_streaming_when_redis_goes_away_completes_and_its_stream_is_whole() {
    let redis = Proxy::to_url(&switchyard_tests::redis_url()).await;
    let mut options = Options::slow_scripted(100);
    options.redis_via = Some(redis.address());
    let app = TestApp::spawn_with(options).await;
    let thread = app.create_thread(json!({})).await;
    let run = app
        .start_run(thread["id"].as_str().unwrap(), "Keep talking, please")
        .await;
    let run_id = run["id"].as_str().unwrap();
    let before = app.stream_events(run_id, None, Some(3)).await;

    redis.cut();
    tokio::time::sleep(Duration::from_secs(1)).await;
    redis.restore();

    let after = app
        .stream_events(run_id, Some(before.last().unwrap().id), None)
        .await;
    let run = app.wait_for_run(run_id).await;
    assert_eq!(run["status"], "completed", "{run}");
    let ids: Vec<i64> = before.iter().chain(after.iter()).map(|e| e.id).collect();
    assert_eq!(ids, (1..=ids.len() as i64).collect::<Vec<_>>(), "{ids:?}");
    let all: Vec<_> = before.into_iter().chain(after).collect();
    let completed = all.iter().find(|e| e.event == "message.completed").unwrap();
    assert_eq!(completed.data["content"], switchyard_tests::deltas_of(&all));
}
