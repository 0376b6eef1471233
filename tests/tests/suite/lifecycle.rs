//! A run's life at its edges: a cancel racing the run's end, and a worker
//! that keeps going after a later attempt took its run.

use std::str::FromStr as _;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use sqlx::ConnectOptions as _;
use sqlx::postgres::PgConnectOptions;
use switchyard_tests::proxy::Proxy;
use switchyard_tests::{Options, SseEvent, TestApp};
use tokio_util::sync::CancellationToken;

/// Cancels sent at every moment of short runs, up to just after their end:
/// each `202` ends its run `cancelled`, each `409` finds it `completed`.
#[tokio::test]
async fn a_cancel_answered_202_always_ends_the_run_cancelled() {
    let app = Arc::new(TestApp::spawn_with(Options::slow_scripted(4)).await);
    let races = (0..40u64).map(|i| {
        let app = app.clone();
        async move {
            let thread = app.create_thread(json!({})).await;
            let run = app
                .start_run(thread["id"].as_str().unwrap(), "a short question to race")
                .await;
            let run_id = run["id"].as_str().unwrap().to_owned();
            // Spread over the run's life (some 200–800 ms here, the runs
            // sharing one worker) and past it.
            tokio::time::sleep(Duration::from_millis(i * 30)).await;
            let (status, body) = app
                .post(&format!("/v1/runs/{run_id}/cancel"), json!({}))
                .await;
            let ended = app.wait_for_run(&run_id).await;
            (status, body, ended)
        }
    });
    let outcomes = futures::future::join_all(races).await;
    let mut accepted = 0;
    for (status, body, ended) in &outcomes {
        match status {
            202 => {
                accepted += 1;
                assert_eq!(ended["status"], "cancelled", "a 202 ({body}) ended {ended}");
            }
            409 => {
                assert_eq!(body["error"]["code"], "conflict", "{body}");
                assert_eq!(ended["status"], "completed", "a 409 ({body}) for {ended}");
            }
            _ => panic!("cancel answered {status}: {body}"),
        }
    }
    println!(
        "{accepted} of {} cancels accepted, the rest too late",
        outcomes.len()
    );
}

/// The `message_id` of a `message.delta` or `message.completed`.
fn message_of(event: &SseEvent) -> Option<&str> {
    event.data["message_id"].as_str()
}

/// Worker A reaches PostgreSQL through a proxy; the test cuts it while A
/// streams an answer. A's lease runs out, the run goes to worker B as its
/// second attempt, and A — still connected to Redis, still holding the run
/// as far as it knows — must not reach any reader after that: the live
/// stream and the stored events are one gap-free sequence in which the
/// first attempt's text stops before the second attempt starts.
#[tokio::test]
async fn a_worker_held_past_its_lease_reaches_no_reader_once_the_run_moved_on() {
    let postgres = Proxy::to_url(&switchyard_tests::admin_url()).await;
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Options::slow_scripted(25)
    })
    .await;
    // Worker A, on its own pool through the proxy.
    let via = postgres.address();
    let url = PgConnectOptions::from_str(&app.config.database_url)
        .unwrap()
        .host(&via.ip().to_string())
        .port(via.port())
        .to_url_lossy()
        .to_string();
    let mut config_a = (*app.config).clone();
    config_a.database_url = url.clone();
    let pool_a = switchyard_common::db::connect(&url, 4).await.unwrap();
    let stop_a = CancellationToken::new();
    let worker_a = switchyard_worker::Worker::start(Arc::new(config_a), pool_a, stop_a.clone())
        .await
        .unwrap();
    let worker_a = tokio::spawn(worker_a.wait());

    let thread = app.create_thread(json!({})).await;
    let words = vec!["word"; 150].join(" ");
    let run = app.start_run(thread["id"].as_str().unwrap(), &words).await;
    let run_id = run["id"].as_str().unwrap().to_owned();

    let follow = app.stream_events(&run_id, None, None);
    let drive = async {
        // A streams; then it loses PostgreSQL, and B is there to take over.
        let first = app.stream_events(&run_id, None, Some(12)).await;
        assert_eq!(first[1].data["attempt"], 1, "{first:?}");
        app.start_worker().await;
        postgres.cut();
        let ended = app.wait_for_run(&run_id).await;
        postgres.restore();
        ended
    };
    let (live, ended) = tokio::join!(follow, drive);
    assert_eq!(ended["status"], "completed", "{ended}");
    assert_eq!(ended["attempt"], 2, "{ended}");

    // Whatever A still had to say has had time to arrive.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stored = app.stream_events(&run_id, None, None).await;
    assert_eq!(live, stored, "the live stream and the stored one differ");
    let ids: Vec<i64> = stored.iter().map(|e| e.id).collect();
    assert_eq!(ids, (1..=stored.len() as i64).collect::<Vec<_>>());

    let second = stored
        .iter()
        .position(|e| e.event == "run.started" && e.data["attempt"] == 2)
        .expect("the second attempt started");
    let completed = stored.last().unwrap();
    assert_eq!(completed.event, "run.completed", "{completed:?}");
    let answer = completed.data["message_id"].as_str().unwrap();
    let first_message = stored[..second]
        .iter()
        .find_map(message_of)
        .expect("the first attempt streamed")
        .to_owned();
    assert_ne!(first_message, answer);
    let foreign: Vec<&SseEvent> = stored[second..]
        .iter()
        .filter(|e| message_of(e).is_some_and(|m| m != answer))
        .collect();
    assert!(
        foreign.is_empty(),
        "the first attempt's events after the second's start: {foreign:?}"
    );
    let text: String = stored[second..]
        .iter()
        .filter(|e| e.event == "message.delta")
        .map(|e| e.data["delta"].as_str().unwrap())
        .collect();
    let content = stored
        .iter()
        .find(|e| e.event == "message.completed")
        .map(|e| e.data["content"].as_str().unwrap().to_owned())
        .unwrap();
    assert_eq!(text, content);

    stop_a.cancel();
    tokio::time::timeout(Duration::from_secs(30), worker_a)
        .await
        .expect("worker A stops")
        .unwrap();
}

/// A client resuming after an id the server does not have is told so: a
/// queued run's stream holds only `run.queued`, an ended run's ends where
/// it ended.
#[tokio::test]
async fn resuming_after_an_event_the_server_does_not_have_is_refused() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Options::default()
    })
    .await;
    let thread = app.create_thread(json!({})).await;
    let run = app.start_run(thread["id"].as_str().unwrap(), "hello").await;
    let run_id = run["id"].as_str().unwrap().to_owned();
    let resume = |after: i64| {
        app.http
            .get(app.url(&format!("/v1/runs/{run_id}/events")))
            .header("Last-Event-ID", after.to_string())
            .send()
    };
    let refused = resume(3).await.unwrap();
    assert_eq!(refused.status(), 409);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "conflict", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Last-Event-ID 3"),
        "{body}"
    );
    assert_eq!(resume(1).await.unwrap().status(), 200);

    app.start_worker().await;
    app.wait_for_run(&run_id).await;
    let all = app.stream_events(&run_id, None, None).await;
    let last = all.last().unwrap().id;
    assert_eq!(resume(last + 1).await.unwrap().status(), 409);
    assert!(
        app.stream_events(&run_id, Some(last), None)
            .await
            .is_empty()
    );
}
