//! Prometheus metrics at `/metrics`: request latency by route, runs, queue
//! wait, time to first token, token rate, provider errors and open streams.
//! The registry is the process's, shared by the tests of this binary, so
//! figures are checked as lower bounds.

use serde_json::json;
use switchyard_tests::{Options, SCRIPTED_CATALOG, TestApp};

/// The value of the sample `name{labels}` (labels as rendered, sorted as
/// the encoder writes them), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
}

async fn scrape(app: &TestApp) -> String {
    let response = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    response.text().await.unwrap()
}

#[tokio::test]
async fn runs_requests_and_model_calls_are_measured() {
    let app = TestApp::spawn().await;
    let (run, events) = app.run_to_end("/tool current_time").await;
    assert_eq!(run["status"], "completed");
    assert!(events.iter().any(|e| e.event == "message.delta"));

    let text = scrape(&app).await;
    let route = r#"method="POST",route="/v1/threads/{thread_id}/runs",status="202""#;
    assert!(
        sample(&text, &format!("switchyard_http_requests_total{{{route}}}")).unwrap_or(0.0) >= 1.0,
        "{text}"
    );
    assert!(
        sample(
            &text,
            &format!("switchyard_http_request_duration_seconds_count{{{route}}}")
        )
        .unwrap_or(0.0)
            >= 1.0
    );
    assert!(
        sample(
            &text,
            r#"switchyard_runs_finished_total{status="completed"}"#
        )
        .unwrap_or(0.0)
            >= 1.0
    );
    assert!(sample(&text, "switchyard_runs_created_total").unwrap_or(0.0) >= 1.0);
    assert!(sample(&text, "switchyard_queue_wait_seconds_count").unwrap_or(0.0) >= 1.0);
    assert!(
        sample(
            &text,
            r#"switchyard_time_to_first_token_seconds_count{provider="scripted"}"#
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{text}"
    );
    assert!(
        sample(
            &text,
            r#"switchyard_tokens_per_second_count{provider="scripted"}"#
        )
        .unwrap_or(0.0)
            >= 1.0
    );
    // Read from this app's database at the scrape: nothing is active now.
    assert_eq!(
        sample(&text, r#"switchyard_runs{status="queued"}"#),
        Some(0.0)
    );
    assert_eq!(
        sample(&text, r#"switchyard_runs{status="in_progress"}"#),
        Some(0.0)
    );
    assert!(sample(&text, "switchyard_sse_streams_active").is_some());
    assert!(text.contains("switchyard_sweeper_recoveries_total"));
}

#[tokio::test]
async fn queued_runs_and_provider_failures_show() {
    // A provider nobody listens on: every call fails to connect.
    let unreachable = SCRIPTED_CATALOG.replace(
        "[[agents]]",
        "[[providers]]\nname = \"nowhere\"\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\nmax_attempts = 1\n\n[[agents]]\nid = \"broken\"\nname = \"Broken\"\nprovider = \"nowhere\"\nmodel = \"gpt-4o-mini\"\n\n[[agents]]",
    );
    let app = TestApp::spawn_with(Options {
        catalog: unreachable,
        ..Options::default()
    })
    .await;
    let thread = app.create_thread(json!({"agent_id": "broken"})).await;
    let run = app
        .start_run(thread["id"].as_str().unwrap(), "Hello?")
        .await;
    let ended = app.wait_for_run(run["id"].as_str().unwrap()).await;
    assert_eq!(ended["status"], "failed", "{ended}");
    let text = scrape(&app).await;
    assert!(
        sample(
            &text,
            r#"switchyard_provider_errors_total{provider="nowhere",kind="transport"}"#
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{text}"
    );
    assert!(
        sample(&text, r#"switchyard_runs_finished_total{status="failed"}"#).unwrap_or(0.0) >= 1.0
    );

    // Without a worker, a run stays queued and the gauge shows it.
    let idle = TestApp::spawn_with(Options {
        worker: false,
        ..Options::default()
    })
    .await;
    let thread = idle.create_thread(json!({})).await;
    idle.start_run(thread["id"].as_str().unwrap(), "Anyone?")
        .await;
    let text = scrape(&idle).await;
    assert_eq!(
        sample(&text, r#"switchyard_runs{status="queued"}"#),
        Some(1.0)
    );
}
