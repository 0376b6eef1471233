//! Runs end to end: API → queue → worker → events → SSE, all real.

use serde_json::{Value, json};
use switchyard_tests::{SseEvent, TestApp, deltas_of, read_sse};

fn assert_gap_free(events: &[SseEvent], first: i64) {
    let ids: Vec<i64> = events.iter().map(|e| e.id).collect();
    let expected: Vec<i64> = (first..first + ids.len() as i64).collect();
    assert_eq!(ids, expected, "event ids are gap-free and in order");
}

#[tokio::test]
async fn a_run_completes_and_its_events_tell_the_whole_story() {
    let app = TestApp::spawn().await;
    let thread = app.create_thread(json!({})).await;
    let thread_id = thread["id"].as_str().unwrap();
    let run = app.start_run(thread_id, "Hello, Switchyard").await;
    assert_eq!(run["status"], "queued");
    assert_eq!(run["attempt"], 0);
    let run_id = run["id"].as_str().unwrap();

    let events = app.stream_events(run_id, None, None).await;
    assert_gap_free(&events, 1);
    let kinds: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(kinds.first(), Some(&"run.queued"));
    assert_eq!(kinds[1], "run.started");
    assert_eq!(
        &kinds[kinds.len() - 3..],
        ["message.completed", "usage", "run.completed"]
    );
    assert!(
        kinds[2..kinds.len() - 3]
            .iter()
            .all(|k| *k == "message.delta"),
        "{kinds:?}"
    );

    let completed = &events[events.len() - 3].data;
    let text = deltas_of(&events);
    assert_eq!(
        completed["content"].as_str().unwrap(),
        text,
        "deltas concatenate to the message"
    );
    assert!(
        text.starts_with("You said: \"Hello, Switchyard\"."),
        "{text}"
    );

    let run = app.wait_for_run(run_id).await;
    assert_eq!(run["status"], "completed");
    assert_eq!(run["attempt"], 1);
    assert!(run["usage"]["output_tokens"].as_i64().unwrap() > 0);
    assert_eq!(events.last().unwrap().data["usage"], run["usage"]);
    assert!(run["started_at"].is_string() && run["finished_at"].is_string());

    let (_, messages) = app.get(&format!("/v1/threads/{thread_id}/messages")).await;
    let messages = messages["messages"].as_array().unwrap().clone();
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0]["role"], "user");
    assert_eq!(messages[0]["content"], "Hello, Switchyard");
    assert_eq!(messages[1]["role"], "assistant");
    assert_eq!(
        messages[1]["content"].as_str().unwrap(),
        text,
        "the stored message is what was streamed"
    );
    assert_eq!(messages[1]["id"], completed["message_id"]);
    assert_eq!(messages[1]["run_id"], run["id"]);

    let (_, thread) = app.get(&format!("/v1/threads/{thread_id}")).await;
    assert_eq!(
        thread["title"], "Hello, Switchyard",
        "a thread without title is named after its first message"
    );
    assert_eq!(thread["status"], "idle");

    let (_, steps) = app.get(&format!("/v1/runs/{run_id}/steps")).await;
    let steps = steps["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 1);
    assert_eq!(steps[0]["kind"], "llm");
    assert_eq!(steps[0]["status"], "completed");
    assert_eq!(steps[0]["usage"], run["usage"]);
}

#[tokio::test]
async fn a_streamed_post_answers_with_the_event_stream() {
    let app = TestApp::spawn().await;
    let thread = app.create_thread(json!({})).await;
    let response = app
        .http
        .post(app.url(&format!(
            "/v1/threads/{}/runs",
            thread["id"].as_str().unwrap()
        )))
        .header("Accept", "text/event-stream")
        .json(&json!({"input": {"content": "stream me"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let events = read_sse(response, None).await;
    assert_gap_free(&events, 1);
    assert_eq!(events.last().unwrap().event, "run.completed");
    assert!(deltas_of(&events).contains("stream me"));
}

#[tokio::test]
async fn resuming_after_any_event_of_a_finished_run_gives_every_later_event_once() {
    let app = TestApp::spawn().await;
    let (run, all) = app.run_to_end("resume me please").await;
    let run_id = run["id"].as_str().unwrap();
    assert!(all.len() > 5);
    for last in 0..=all.len() as i64 {
        let resumed = app.stream_events(run_id, Some(last), None).await;
        assert_eq!(
            resumed,
            all[last as usize..].to_vec(),
            "resume after {last}"
        );
    }
    // `?after=` is the same as the header.
    let (status, _) = app.get(&format!("/v1/runs/{run_id}/events?after=-1")).await;
    assert_eq!(status, 422);
    let response = app
        .http
        .get(app.url(&format!("/v1/runs/{run_id}/events?after=3")))
        .send()
        .await
        .unwrap();
    assert_eq!(read_sse(response, None).await, all[3..].to_vec());
}

#[tokio::test]
async fn events_survive_the_loss_of_the_redis_stream() {
    let app = TestApp::spawn().await;
    let (run, all) = app.run_to_end("durable").await;
    let run_id = run["id"].as_str().unwrap();
    app.flush_redis().await;
    let stream_key = format!("{}:run:{run_id}:events", app.config.redis_prefix);
    assert!(
        !app.redis_keys().await.contains(&stream_key),
        "the run's stream is gone"
    );
    assert_eq!(app.stream_events(run_id, None, None).await, all);
    assert_eq!(
        app.stream_events(run_id, Some(4), None).await,
        all[4..].to_vec()
    );
}

#[tokio::test]
async fn resuming_in_the_middle_of_a_live_run_has_no_gap_and_no_duplicate() {
    let app = TestApp::spawn_with(switchyard_tests::Options::slow_scripted(30)).await;
    let thread = app.create_thread(json!({})).await;
    let run = app
        .start_run(
            thread["id"].as_str().unwrap(),
            "a long enough message to stream slowly",
        )
        .await;
    let run_id = run["id"].as_str().unwrap();

    // Disconnect after a few events, while the run is still streaming.
    let first = app.stream_events(run_id, None, Some(5)).await;
    assert_gap_free(&first, 1);
    let (_, live) = app.get(&format!("/v1/runs/{run_id}")).await;
    assert_eq!(
        live["status"], "in_progress",
        "the run is still live when we reconnect"
    );

    let rest = app
        .stream_events(run_id, Some(first.last().unwrap().id), None)
        .await;
    let mut joined = first.clone();
    joined.extend(rest);
    assert_gap_free(&joined, 1);
    assert_eq!(joined.last().unwrap().event, "run.completed");
    let content = joined
        .iter()
        .find(|e| e.event == "message.completed")
        .unwrap()
        .data["content"]
        .clone();
    assert_eq!(Value::String(deltas_of(&joined)), content);
    // And a second reconnect from the middle of the (now finished) run agrees.
    assert_eq!(
        app.stream_events(run_id, Some(3), None).await,
        joined[3..].to_vec()
    );
}

#[tokio::test]
async fn the_scripted_model_calls_a_tool_and_the_trace_shows_it() {
    let app = TestApp::spawn().await;
    let (run, events) = app.run_to_end("/tool current_time").await;
    let run_id = run["id"].as_str().unwrap();
    assert_gap_free(&events, 1);
    let started = events
        .iter()
        .find(|e| e.event == "tool.started")
        .expect("tool.started");
    let finished = events
        .iter()
        .find(|e| e.event == "tool.finished")
        .expect("tool.finished");
    assert_eq!(started.data["tool"], "current_time");
    assert_eq!(started.data["step_id"], finished.data["step_id"]);
    assert_eq!(finished.data["is_error"], false);
    let utc = finished.data["result"]["utc"].as_str().expect("a time");
    assert!(
        deltas_of(&events).contains(utc),
        "the answer reports the tool's result"
    );

    let (_, steps) = app.get(&format!("/v1/runs/{run_id}/steps")).await;
    let kinds: Vec<&str> = steps["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["llm", "tool", "llm"]);
}

#[tokio::test]
async fn runs_of_one_thread_execute_one_at_a_time_in_order() {
    let app = TestApp::spawn().await;
    let thread = app.create_thread(json!({})).await;
    let thread_id = thread["id"].as_str().unwrap();
    let mut runs = Vec::new();
    for i in 0..4 {
        runs.push(app.start_run(thread_id, &format!("message {i}")).await);
    }
    for run in &runs {
        assert_eq!(
            app.wait_for_run(run["id"].as_str().unwrap()).await["status"],
            "completed"
        );
    }
    let (_, messages) = app
        .get(&format!("/v1/threads/{thread_id}/messages?limit=100"))
        .await;
    let roles_and_text: Vec<(String, String)> = messages["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["role"].as_str().unwrap().to_owned(),
                m["content"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    // Every user message is stored when its run is created; each answer quotes
    // its own run's message, and answers come in run order.
    let answers: Vec<&String> = roles_and_text
        .iter()
        .filter(|(r, _)| r == "assistant")
        .map(|(_, t)| t)
        .collect();
    assert_eq!(answers.len(), 4);
    for (i, answer) in answers.iter().enumerate() {
        assert!(answer.contains(&format!("message {i}")), "{answer}");
    }
    let starts: Vec<String> = {
        let mut v = Vec::new();
        for run in &runs {
            let (_, r) = app
                .get(&format!("/v1/runs/{}", run["id"].as_str().unwrap()))
                .await;
            v.push(r["started_at"].as_str().unwrap().to_owned());
            v.push(r["finished_at"].as_str().unwrap().to_owned());
        }
        v
    };
    let mut sorted = starts.clone();
    sorted.sort();
    assert_eq!(
        starts, sorted,
        "each run started after the previous one finished"
    );
}

#[tokio::test]
async fn a_run_stored_but_not_enqueued_is_enqueued_by_the_sweeper() {
    use switchyard_common::db;
    let app = TestApp::spawn().await;
    let thread = app.create_thread(json!({})).await;
    let thread_id: switchyard_common::domain::ThreadId =
        thread["id"].as_str().unwrap().parse().unwrap();
    let owner: switchyard_common::domain::UserId =
        db::users::ensure(&app.pool, "dev", "local", "local")
            .await
            .unwrap();
    // What the API leaves behind when Redis is unreachable: the run is stored,
    // its job never reached the queue.
    let created = db::runs::create(
        &app.pool,
        db::runs::NewRun {
            owner,
            thread_id,
            agent_id: "assistant".into(),
            model: "scripted-1".into(),
            priority: 5,
            multitask: Default::default(),
            content: "stored while Redis was away",
            idempotency: None,
            limits: Default::default(),
            trace: &Default::default(),
            priority_aging: app.config.priority_aging,
            agent_inactive: false,
        },
    )
    .await
    .unwrap();
    let db::runs::Created::New { run, .. } = created else {
        panic!("expected a new run");
    };
    // The push to Redis failed: the API clears the mark, the sweeper takes over.
    db::runs::mark_unenqueued(&app.pool, run.id).await.unwrap();
    let run = app.wait_for_run(&run.id.to_string()).await;
    assert_eq!(run["status"], "completed");
}

#[tokio::test]
async fn an_idempotency_key_makes_a_retried_post_return_the_same_run() {
    let app = TestApp::spawn().await;
    let thread = app.create_thread(json!({})).await;
    let path = format!("/v1/threads/{}/runs", thread["id"].as_str().unwrap());
    let post = |key: &'static str, content: &'static str| {
        app.call(
            app.http
                .post(app.url(&path))
                .header("Idempotency-Key", key)
                .json(&json!({"input": {"content": content}})),
        )
    };
    let (status, first) = post("key-1", "once").await;
    assert_eq!(status, 202);
    let (status, again) = post("key-1", "once").await;
    assert_eq!(status, 202);
    assert_eq!(again["id"], first["id"]);
    let (status, other) = post("key-1", "twice").await;
    assert_eq!(status, 409, "{other}");
    assert_eq!(other["error"]["code"], "conflict");

    // Ten simultaneous duplicates create one run.
    let results = futures::future::join_all((0..10).map(|_| post("key-2", "concurrent"))).await;
    let ids: std::collections::HashSet<String> = results
        .iter()
        .map(|(s, r)| {
            assert_eq!(*s, 202, "{r}");
            r["id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(ids.len(), 1);
    let (_, runs) = app.get(&format!("{path}?limit=100")).await;
    assert_eq!(runs["runs"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn multitask_reject_refuses_a_run_while_the_thread_is_busy() {
    let app = TestApp::spawn_with(switchyard_tests::Options {
        worker: false,
        ..Default::default()
    })
    .await;
    let thread = app.create_thread(json!({})).await;
    let thread_id = thread["id"].as_str().unwrap();
    let first = app.start_run(thread_id, "first").await;
    assert_eq!(first["queue_position"], 0);
    let (_, busy) = app.get(&format!("/v1/threads/{thread_id}")).await;
    assert_eq!(busy["status"], "busy");
    let (status, body) = app
        .post(
            &format!("/v1/threads/{thread_id}/runs"),
            json!({"input": {"content": "second"}, "multitask": "reject"}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    let second = app.start_run(thread_id, "queued behind").await;
    assert_eq!(second["queue_position"], 1);
    let (_, messages) = app.get(&format!("/v1/threads/{thread_id}/messages")).await;
    assert_eq!(
        messages["messages"].as_array().unwrap().len(),
        2,
        "the rejected message was not stored"
    );
}

#[tokio::test]
async fn bad_run_requests_are_refused_in_the_contract_shape_and_change_nothing() {
    let app = TestApp::spawn_with(switchyard_tests::Options {
        worker: false,
        ..Default::default()
    })
    .await;
    let thread = app.create_thread(json!({})).await;
    let path = format!("/v1/threads/{}/runs", thread["id"].as_str().unwrap());
    let cases = [
        (json!({}), 422),
        (json!({"input": {"content": ""}}), 422),
        (json!({"input": {"content": "x".repeat(32_001)}}), 422),
        (json!({"input": {"content": "hi"}, "priority": 0}), 422),
        (json!({"input": {"content": "hi"}, "priority": 11}), 422),
        (
            json!({"input": {"content": "hi"}, "multitask": "sometimes"}),
            422,
        ),
        (
            json!({"input": {"content": "hi"}, "agent_id": "nobody"}),
            422,
        ),
        (json!({"input": {"content": "hi"}, "colour": "blue"}), 422),
        (json!({"input": {"content": "hi", "extra": 1}}), 422),
    ];
    for (body, expected) in cases {
        let (status, error) = app.post(&path, body.clone()).await;
        assert_eq!(status, expected, "{body} → {error}");
        assert_eq!(error["error"]["code"], "validation_failed", "{error}");
        assert!(
            error["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    let (status, error) = app
        .call(
            app.http
                .post(app.url(&path))
                .header("content-type", "application/json")
                .body("{not json"),
        )
        .await;
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (400, Some("bad_request"))
    );
    let (status, error) = app
        .post(
            "/v1/threads/00000000-0000-0000-0000-000000000000/runs",
            json!({"input": {"content": "hi"}}),
        )
        .await;
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let (status, _) = app.get("/v1/runs/not-a-uuid").await;
    assert_eq!(status, 404);
    let (_, runs) = app.get(&path).await;
    assert!(
        runs["runs"].as_array().unwrap().is_empty(),
        "nothing was stored"
    );
}

#[tokio::test]
async fn token_deltas_are_coalesced_within_the_flush_interval() {
    let message = "one two three four five six seven eight nine ten eleven twelve";
    let mut counts = Vec::new();
    for flush_ms in ["0", "250"] {
        let app = TestApp::spawn_with(switchyard_tests::Options {
            env: vec![("SWITCHYARD_DELTA_FLUSH_MS", flush_ms.into())],
            ..switchyard_tests::Options::slow_scripted(10)
        })
        .await;
        let thread = app.create_thread(json!({})).await;
        let run = app.start_run(thread["id"].as_str().unwrap(), message).await;
        let events = app
            .stream_events(run["id"].as_str().unwrap(), None, None)
            .await;
        assert_gap_free(&events, 1);
        let completed = events
            .iter()
            .find(|e| e.event == "message.completed")
            .unwrap();
        assert_eq!(Value::String(deltas_of(&events)), completed.data["content"]);
        counts.push(events.iter().filter(|e| e.event == "message.delta").count());
    }
    let chunks = format!("You said: \"{message}\". I am the scripted model: I answer offline, the same way every time.")
        .split_whitespace()
        .count();
    assert_eq!(
        counts[0], chunks,
        "without a window every chunk is its own delta"
    );
    assert!(
        counts[1] < chunks / 4,
        "a 250 ms window joins 10 ms chunks: {counts:?}"
    );
    assert!(
        counts[1] >= 2,
        "the first delta is not held back: {counts:?}"
    );
}

#[tokio::test]
async fn a_live_stream_follows_the_runs_channel_only_while_it_is_open() {
    use futures::StreamExt;
    let app = TestApp::spawn_with(switchyard_tests::Options::slow_scripted(30)).await;
    let thread = app.create_thread(json!({})).await;
    let response = app
        .http
        .post(app.url(&format!(
            "/v1/threads/{}/runs",
            thread["id"].as_str().unwrap()
        )))
        .json(&json!({"input": {"content": "follow me live"}, "stream": true}))
        .send()
        .await
        .unwrap();
    let mut stream = eventsource_stream::Eventsource::eventsource(response.bytes_stream());
    let mut run_id = String::new();
    for _ in 0..4 {
        let event = tokio::time::timeout(switchyard_tests::WAIT, stream.next())
            .await
            .expect("an event in time")
            .expect("an event")
            .expect("well-formed");
        let data: Value = serde_json::from_str(&event.data).unwrap();
        if let Some(id) = data["run_id"].as_str() {
            run_id = id.to_owned();
        }
    }
    let channel = format!("{}:run:{run_id}:live", app.config.redis_prefix);
    let subscribers = |app: &TestApp| {
        let mut conn = app.redis.clone();
        let channel = channel.clone();
        async move {
            let (_, n): (String, i64) = redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg(&channel)
                .query_async(&mut conn)
                .await
                .unwrap();
            n
        }
    };
    assert_eq!(
        subscribers(&app).await,
        1,
        "the API follows the run's live channel"
    );
    drop(stream);
    let deadline = tokio::time::Instant::now() + switchyard_tests::WAIT;
    while subscribers(&app).await != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the API never unsubscribed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn interrupting_runs_that_workers_are_claiming_answers_no_error() {
    // Bursts of interrupting runs on fresh threads: some interrupt a run
    // just as a worker claims it, which must be seen in progress and asked
    // to stop, not overwritten as cancelled.
    let app = TestApp::spawn().await;
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    for _ in 0..20 {
        let thread = app.create_thread(json!({})).await;
        let path = format!("/v1/threads/{}/runs", thread["id"].as_str().unwrap());
        let burst = (0..10).map(|n| {
            app.post(
                &path,
                json!({"input": {"content": format!("hi {n}")}, "multitask": "interrupt"}),
            )
        });
        for (status, body) in futures::future::join_all(burst).await {
            assert!(status < 500, "{status}: {body}");
            *statuses.entry(status).or_default() += 1;
        }
    }
    assert_eq!(statuses.get(&202), Some(&200), "{statuses:?}");
}
