//! Stopping runs: cancel in each phase, `multitask: interrupt`, the per-run
//! time limit.

use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use serde_json::{Value, json};
use switchyard_fake_llm::{FakeLlm, Reply};
use switchyard_tests::{Options, SseEvent, TestApp, deltas_of, one_agent_catalog};

async fn cancel(app: &TestApp, run_id: &str) -> (u16, Value) {
    app.post(&format!("/v1/runs/{run_id}/cancel"), json!({}))
        .await
}

fn kinds(events: &[SseEvent]) -> Vec<&str> {
    events.iter().map(|e| e.event.as_str()).collect()
}

async fn thread_status(app: &TestApp, thread_id: &str) -> Value {
    app.get(&format!("/v1/threads/{thread_id}")).await.1["status"].clone()
}

#[tokio::test]
async fn a_queued_run_is_cancelled_at_once() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    let thread = app.create_thread(json!({})).await;
    let thread_id = thread["id"].as_str().unwrap();
    let run = app.start_run(thread_id, "Never mind").await;
    let run_id = run["id"].as_str().unwrap();
    assert_eq!(thread_status(&app, thread_id).await, "busy");

    let (status, cancelled) = cancel(&app, run_id).await;
    assert_eq!(status, 202, "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled");
    assert!(cancelled["finished_at"].is_string());
    let events = app.stream_events(run_id, None, None).await;
    assert_eq!(kinds(&events), ["run.queued", "run.cancelled"]);
    assert_eq!(events[1].data["reason"], "cancelled");
    assert_eq!(thread_status(&app, thread_id).await, "idle");

    let (status, body) = cancel(&app, run_id).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "conflict");
    let (status, body) = cancel(&app, "01a20000-0000-7000-8000-000000000000").await;
    assert_eq!(status, 404, "{body}");
}

#[tokio::test]
async fn an_in_progress_run_stops_and_keeps_what_it_said() {
    let app = TestApp::spawn_with(Options::slow_scripted(100)).await;
    let thread = app.create_thread(json!({})).await;
    let thread_id = thread["id"].as_str().unwrap();
    let run = app
        .start_run(thread_id, "Tell me a long story about the sea")
        .await;
    let run_id = run["id"].as_str().unwrap();
    // run.queued, run.started, the first delta: the answer is streaming.
    let first = app.stream_events(run_id, None, Some(3)).await;
    assert_eq!(kinds(&first)[2], "message.delta");

    let asked = Instant::now();
    let (status, body) = cancel(&app, run_id).await;
    assert_eq!(status, 202, "{body}");
    let run = app.wait_for_run(run_id).await;
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(run["status"], "cancelled", "{run}");

    let events = app.stream_events(run_id, None, None).await;
    let kinds = kinds(&events);
    assert_eq!(
        &kinds[kinds.len() - 2..],
        ["message.completed", "run.cancelled"]
    );
    let said = deltas_of(&events);
    assert!(!said.is_empty());
    assert!(said.len() < "You said: \"Tell me a long story about the sea\". I am the scripted model: I answer offline, the same way every time.".len());
    assert_eq!(events[events.len() - 2].data["content"], said.as_str());

    let (_, messages) = app.get(&format!("/v1/threads/{thread_id}/messages")).await;
    let messages = messages["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[1]["content"], said.as_str());
    assert_eq!(thread_status(&app, thread_id).await, "idle");
    // The thread takes the next run.
    let next = app.start_run(thread_id, "Hi").await;
    let next = app.wait_for_run(next["id"].as_str().unwrap()).await;
    assert_eq!(next["status"], "completed", "{next}");
}

#[tokio::test]
async fn a_run_waiting_on_a_tool_is_stopped() {
    // A server that takes a minute to answer.
    let app_router = Router::new().route(
        "/slow",
        get(|| async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            "late"
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/slow", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app_router).await });

    let fake = FakeLlm::start().await;
    let arguments = json!({ "url": url }).to_string();
    fake.push(Reply::tool_call(
        "call_1",
        "http_request",
        &[&arguments],
        None,
    ));
    let catalog = one_agent_catalog(
        &fake.base_url(),
        r#"model = "m"
tools = ["http_request"]

[agents.tool_settings.http_request]
allow_hosts = ["127.0.0.1"]
allow_private = true
timeout_secs = 90
"#,
    );
    let app = TestApp::spawn_with(Options {
        catalog,
        ..Default::default()
    })
    .await;
    let thread = app.create_thread(json!({})).await;
    let run = app
        .start_run(thread["id"].as_str().unwrap(), "Fetch it")
        .await;
    let run_id = run["id"].as_str().unwrap();
    let first = app.stream_events(run_id, None, Some(3)).await;
    assert_eq!(kinds(&first)[2], "tool.started");

    let asked = Instant::now();
    assert_eq!(cancel(&app, run_id).await.0, 202);
    let run = app.wait_for_run(run_id).await;
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(run["status"], "cancelled", "{run}");
    let (_, steps) = app.get(&format!("/v1/runs/{run_id}/steps")).await;
    let tool = steps["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["kind"] == "tool")
        .unwrap()
        .clone();
    assert_eq!(tool["status"], "failed", "{tool}");
    assert!(tool["finished_at"].is_string(), "{tool}");
}

#[tokio::test]
async fn interrupt_cancels_the_active_runs_then_runs_the_new_one() {
    let app = TestApp::spawn_with(Options::slow_scripted(100)).await;
    let thread = app.create_thread(json!({})).await;
    let thread_id = thread["id"].as_str().unwrap();
    let active = app.start_run(thread_id, "A long first question").await;
    let active_id = active["id"].as_str().unwrap();
    app.stream_events(active_id, None, Some(3)).await;
    let waiting = app.start_run(thread_id, "A second question").await;
    assert_eq!(waiting["queue_position"], 1);

    let (status, newest) = app
        .post(
            &format!("/v1/threads/{thread_id}/runs"),
            json!({"input": {"content": "Forget that"}, "multitask": "interrupt"}),
        )
        .await;
    assert_eq!(status, 202, "{newest}");
    // Only the in-progress run, being stopped, is still ahead of it.
    assert_eq!(newest["queue_position"], 1, "{newest}");

    for (run, reason) in [(&active, "interrupted"), (&waiting, "interrupted")] {
        let id = run["id"].as_str().unwrap();
        let done = app.wait_for_run(id).await;
        assert_eq!(done["status"], "cancelled", "{done}");
        let events = app.stream_events(id, None, None).await;
        assert_eq!(events.last().unwrap().data["reason"], reason);
    }
    let newest = app.wait_for_run(newest["id"].as_str().unwrap()).await;
    assert_eq!(newest["status"], "completed", "{newest}");
    assert_eq!(thread_status(&app, thread_id).await, "idle");
}

#[tokio::test]
async fn a_run_over_its_time_limit_fails_with_timeout() {
    let mut options = Options::slow_scripted(200);
    options
        .env
        .push(("SWITCHYARD_RUN_TIMEOUT_SECS", "1".into()));
    let app = TestApp::spawn_with(options).await;
    let (run, events) = app.run_to_end("Say a lot, slowly").await;
    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(run["error"]["code"], "timeout", "{run}");
    assert_eq!(events.last().unwrap().event, "run.failed");
}

#[tokio::test]
async fn a_cancel_racing_the_start_of_the_run_still_wins() {
    // The race is with the claim; the answer itself takes seconds, so that a
    // machine busy with other tests cannot finish it before the cancel.
    let app = TestApp::spawn_with(Options::slow_scripted(200)).await;
    for _ in 0..10 {
        let thread = app.create_thread(json!({})).await;
        let run = app.start_run(thread["id"].as_str().unwrap(), "Quick").await;
        let run_id = run["id"].as_str().unwrap();
        let (status, body) = cancel(&app, run_id).await;
        assert_eq!(status, 202, "{body}");
        let run = app.wait_for_run(run_id).await;
        assert_eq!(run["status"], "cancelled", "{run}");
    }
}
