//! Switchyard as deployed: `switchyard api` and `switchyard worker` as
//! separate processes, killed for real.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_methods,
    reason = "test code, helpers included (which allow-unwrap-in-tests misses in integration tests): a panic is the failure report, and spawned servers end with the test runtime"
)]

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Deployment, free_port};
use switchyard_tests::{SseEvent, one_agent_catalog, read_sse};

#[tokio::test(flavor = "multi_thread")]
async fn a_run_whose_worker_is_killed_completes_on_another_worker() {
    let mut deployment = Deployment::start().await;
    let doomed = deployment.start_worker();
    let thread = deployment.post("/v1/threads", json!({})).await;
    let thread_id = thread["id"].as_str().unwrap();
    let run = deployment
        .post(
            &format!("/v1/threads/{thread_id}/runs"),
            json!({"input": {"content": "Tell me everything about lighthouses"}}),
        )
        .await;
    let run_id = run["id"].as_str().unwrap().to_owned();

    // run.queued, run.started, two deltas: the first worker is streaming.
    let before = deployment.events(&run_id, 0, Some(4)).await;
    assert_eq!(before[1].event, "run.started");
    assert_eq!(before[1].data["attempt"], 1);
    deployment.start_worker();
    let killed_at = Instant::now();
    deployment.kill(doomed);

    // The client resumes where it was and reads to the end.
    let last_seen = before.last().unwrap().id;
    let after = deployment.events(&run_id, last_seen, None).await;
    let run = deployment
        .wait_for_run(&run_id, Duration::from_secs(60))
        .await;
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(run["attempt"], 2, "{run}");

    // One gap-free, duplicate-free stream across the two attempts.
    let all: Vec<&SseEvent> = before.iter().chain(after.iter()).collect();
    let ids: Vec<i64> = all.iter().map(|e| e.id).collect();
    assert_eq!(ids, (1..=ids.len() as i64).collect::<Vec<_>>(), "{ids:?}");
    let restarted = after
        .iter()
        .find(|e| e.event == "run.started")
        .expect("the second attempt starts");
    assert_eq!(restarted.data["attempt"], 2);
    // The worker's lease runs out, then another worker takes the run.
    assert!(killed_at.elapsed() < Duration::from_secs(60));

    // The second attempt's message: its deltas make the stored answer.
    let completed = after
        .iter()
        .find(|e| e.event == "message.completed")
        .unwrap();
    let message_id = completed.data["message_id"].as_str().unwrap();
    let text: String = after
        .iter()
        .filter(|e| e.event == "message.delta" && e.data["message_id"] == message_id)
        .map(|e| e.data["delta"].as_str().unwrap())
        .collect();
    assert_eq!(completed.data["content"], text.as_str());
    let first_message = before[2].data["message_id"].as_str().unwrap();
    assert_ne!(first_message, message_id, "a new attempt, a new message");

    let messages = deployment
        .get(&format!("/v1/threads/{thread_id}/messages"))
        .await;
    let messages = messages["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert_eq!(messages[1]["content"], text.as_str());
    // Every event, also those only the lost worker had sent, is durable.
    let replay = deployment.events(&run_id, 0, None).await;
    let replayed: Vec<i64> = replay.iter().map(|e| e.id).collect();
    assert_eq!(replayed, ids);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tool_call_of_a_lost_attempt_is_not_made_again() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use switchyard_fake_llm::{FakeLlm, Reply};

    // A side effect that counts how often it happens.
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let effect = axum::Router::new().route(
        "/effect",
        axum::routing::post(move || {
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            async move { format!("effect number {n}") }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/effect", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, effect).await });

    let fake = FakeLlm::start().await;
    let call = json!({"url": url, "method": "POST"}).to_string();
    fake.push(Reply::tool_call("call_1", "http_request", &[&call], None));
    // The first worker dies while waiting for this answer.
    fake.push(Reply::delayed(
        Duration::from_secs(60),
        Reply::text(&["Too late."], None),
    ));
    // The second attempt: the model asks for the same call, then answers.
    fake.push(Reply::tool_call("call_1", "http_request", &[&call], None));
    fake.push(Reply::text(&["Done."], Some((10, 2))));
    let catalog = one_agent_catalog(
        &fake.base_url(),
        r#"model = "m"
tools = ["http_request"]

[agents.tool_settings.http_request]
allow_hosts = ["127.0.0.1"]
allow_private = true
"#,
    );
    let mut deployment = Deployment::with_catalog(&catalog).await;
    let doomed = deployment.start_worker();
    let thread = deployment.post("/v1/threads", json!({})).await;
    let thread_id = thread["id"].as_str().unwrap();
    let run = deployment
        .post(
            &format!("/v1/threads/{thread_id}/runs"),
            json!({"input": {"content": "Do it once"}}),
        )
        .await;
    let run_id = run["id"].as_str().unwrap().to_owned();
    // run.queued, run.started, tool.started, tool.finished.
    let first = deployment.events(&run_id, 0, Some(4)).await;
    assert_eq!(first[3].event, "tool.finished");
    let deadline = Instant::now() + Duration::from_secs(20);
    while fake.requests().len() < 2 {
        assert!(Instant::now() < deadline, "the model was not asked again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    deployment.start_worker();
    deployment.kill(doomed);

    let run = deployment
        .wait_for_run(&run_id, Duration::from_secs(60))
        .await;
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(run["attempt"], 2, "{run}");
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "the side effect happened once"
    );

    let events = deployment.events(&run_id, 0, None).await;
    let results: Vec<&Value> = events
        .iter()
        .filter(|e| e.event == "tool.finished")
        .map(|e| &e.data["result"])
        .collect();
    assert_eq!(results.len(), 2, "{events:?}");
    assert_eq!(results[0], results[1], "the recorded result is reused");
    assert_eq!(results[1]["body"], "effect number 1");
    let steps = deployment.get(&format!("/v1/runs/{run_id}/steps")).await;
    let tools: Vec<&str> = steps["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["kind"] == "tool")
        .map(|s| s["status"].as_str().unwrap())
        .collect();
    assert_eq!(tools, ["completed", "completed"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_that_lost_its_workers_too_often_fails_with_worker_lost() {
    let mut deployment = Deployment::start().await;
    let doomed = deployment.start_worker();
    let thread = deployment.post("/v1/threads", json!({})).await;
    let thread_id = thread["id"].as_str().unwrap();
    let run = deployment
        .post(
            &format!("/v1/threads/{thread_id}/runs"),
            json!({"input": {"content": "Once only"}}),
        )
        .await;
    let run_id = run["id"].as_str().unwrap().to_owned();
    deployment.events(&run_id, 0, Some(3)).await;
    deployment.start_worker_with(&[("SWITCHYARD_MAX_ATTEMPTS", "1")]);
    deployment.kill(doomed);

    let run = deployment
        .wait_for_run(&run_id, Duration::from_secs(60))
        .await;
    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(run["error"]["code"], "worker_lost", "{run}");
    let events = deployment.events(&run_id, 0, None).await;
    assert_eq!(events.last().unwrap().event, "run.failed");
    let thread = deployment.get(&format!("/v1/threads/{thread_id}")).await;
    assert_eq!(thread["status"], "idle");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_a_worker_finish_its_runs_within_the_grace_period() {
    let mut deployment = Deployment::start().await;
    let worker = deployment.start_worker();
    let run_id = deployment.streaming_run().await;
    let status =
        tokio::task::block_in_place(|| deployment.terminate(worker, Duration::from_secs(40)));
    assert!(status.success(), "{status:?}");
    let run = deployment.get(&format!("/v1/runs/{run_id}")).await;
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(run["attempt"], 1, "{run}");
}

#[tokio::test(flavor = "multi_thread")]
async fn after_the_grace_period_a_worker_hands_its_runs_to_another() {
    let mut deployment = Deployment::start().await;
    let leaving = deployment.start_worker_with(&[("SWITCHYARD_SHUTDOWN_GRACE_SECS", "1")]);
    let run_id = deployment.streaming_run().await;
    deployment.start_worker();
    let status =
        tokio::task::block_in_place(|| deployment.terminate(leaving, Duration::from_secs(20)));
    assert!(status.success(), "{status:?}");
    // Released at once, not abandoned to its lease: queued again, or
    // already continued by the other worker.
    let run = deployment.get(&format!("/v1/runs/{run_id}")).await;
    assert!(
        run["status"] == "queued" || run["attempt"] == 2,
        "released, not abandoned: {run}"
    );

    let run = deployment
        .wait_for_run(&run_id, Duration::from_secs(60))
        .await;
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(run["attempt"], 2, "{run}");
    let events = deployment.events(&run_id, 0, None).await;
    let ids: Vec<i64> = events.iter().map(|e| e.id).collect();
    assert_eq!(ids, (1..=ids.len() as i64).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread")]
async fn runs_of_one_thread_execute_in_order_across_two_workers() {
    let mut deployment = Deployment::start().await;
    deployment.start_worker();
    deployment.start_worker();
    let thread = deployment.post("/v1/threads", json!({})).await;
    let thread_id = thread["id"].as_str().unwrap();
    let mut ids = Vec::new();
    for i in 1..=4 {
        let run = deployment
            .post(
                &format!("/v1/threads/{thread_id}/runs"),
                json!({"input": {"content": format!("Question {i}")}}),
            )
            .await;
        ids.push(run["id"].as_str().unwrap().to_owned());
    }
    let mut previous_finish: Option<String> = None;
    for id in &ids {
        let run = deployment.wait_for_run(id, Duration::from_secs(90)).await;
        assert_eq!(run["status"], "completed", "{run}");
        let started = run["started_at"].as_str().unwrap().to_owned();
        if let Some(finished) = &previous_finish {
            // RFC 3339 UTC timestamps of one format order as text.
            assert!(started >= *finished, "{started} began before {finished}");
        }
        previous_finish = Some(run["finished_at"].as_str().unwrap().to_owned());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_makes_the_api_close_its_streams_and_exit() {
    let mut deployment = Deployment::start().await;
    deployment.start_worker();
    let run_id = deployment.streaming_run().await;
    let response = deployment
        .http
        .get(format!("{}/v1/runs/{run_id}/events", deployment.address))
        .send()
        .await
        .unwrap();
    let reading = tokio::spawn(read_sse(response, None));
    // The API is process 0.
    let status = tokio::task::block_in_place(|| deployment.terminate(0, Duration::from_secs(20)));
    assert!(status.success(), "{status:?}");
    // The stream ended (the client would reconnect elsewhere) before the run did.
    let events = reading.await.unwrap();
    assert!(
        events.iter().all(|e| e.event != "run.completed"),
        "{events:?}"
    );
}

/// `switchyard api` will not start without an authenticator; keys made by
/// `switchyard keys` identify their user on a running API until revoked.
#[tokio::test]
async fn api_keys_from_the_command_line() {
    let deployment = Deployment::start().await;

    let refused = deployment
        .command("api")
        .env_remove("SWITCHYARD_AUTH")
        .env("SWITCHYARD_LISTEN", format!("127.0.0.1:{}", free_port()))
        .stderr(Stdio::piped())
        .output()
        .expect("running switchyard api");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("SWITCHYARD_AUTH"), "{stderr}");

    let created = deployment
        .command("keys")
        .args(["create", "--user", "carol"])
        .stdout(Stdio::piped())
        .output()
        .expect("running switchyard keys create");
    assert!(created.status.success());
    let stdout = String::from_utf8(created.stdout).unwrap();
    let key = stdout
        .lines()
        .last()
        .expect("the key is on the last line")
        .to_owned();
    assert!(key.starts_with("sy_"), "{stdout}");

    let port = free_port();
    let mut api = deployment
        .command("api")
        .env("SWITCHYARD_AUTH", "api_key")
        .env("SWITCHYARD_LISTEN", format!("127.0.0.1:{port}"))
        .spawn()
        .expect("starting switchyard api");
    let me = |token: String| async move {
        let response = reqwest::Client::new()
            .get(format!("http://127.0.0.1:{port}/v1/me"))
            .bearer_auth(token)
            .send()
            .await?;
        let status = response.status().as_u16();
        Ok::<_, reqwest::Error>((status, response.json::<Value>().await?))
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let (status, body) = loop {
        match me(key.clone()).await {
            Ok(answer) => break answer,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(error) => panic!("the API did not come up: {error}"),
        }
    };
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["name"], "carol");

    let listed = deployment
        .command("keys")
        .arg("list")
        .stdout(Stdio::piped())
        .output()
        .expect("running switchyard keys list");
    let listing = String::from_utf8(listed.stdout).unwrap();
    let line = listing
        .lines()
        .find(|l| l.contains("\tcarol\t"))
        .unwrap_or_else(|| panic!("carol's key is listed: {listing}"));
    assert!(
        !listing.contains(&key),
        "the key itself is never shown again"
    );
    let id = line.split('\t').next().unwrap();

    let revoked = deployment
        .command("keys")
        .args(["revoke", id])
        .status()
        .expect("running switchyard keys revoke");
    assert!(revoked.success());
    let (status, body) = me(key).await.expect("the API answers");
    assert_eq!(status, 401, "{body}");
    api.kill().ok();
    api.wait().ok();
}

/// A worker process serves its own metrics and a health check on
/// `SWITCHYARD_METRICS_LISTEN`.
#[tokio::test]
async fn a_worker_serves_its_metrics() {
    let mut deployment = Deployment::start().await;
    let port = free_port();
    deployment.start_worker_with(&[("SWITCHYARD_METRICS_LISTEN", &format!("127.0.0.1:{port}"))]);
    let run_id = deployment.streaming_run().await;
    let events = deployment.events(&run_id, 0, None).await;
    assert_eq!(events.last().unwrap().event, "run.completed");

    let http = reqwest::Client::new();
    let health = http
        .get(format!("http://127.0.0.1:{port}/health"))
        .send()
        .await
        .expect("the worker answers");
    assert_eq!(health.status(), 200);
    let text = http
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("switchyard_runs_finished_total{status=\"completed\"} 1"),
        "{text}"
    );
    assert!(text.contains("switchyard_time_to_first_token_seconds_count{provider=\"scripted\"} 1"));
}
