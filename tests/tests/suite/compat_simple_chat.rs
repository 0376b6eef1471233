//! The simple chat surface as its front ends call it: `POST /api/chat`,
//! `POST /api/chat/stream` (`data:` JSON events), `/clear`, and the queue's
//! status and cancel; what each call leaves is checked through the native
//! API.

use serde_json::{Value, json};
use switchyard_tests::{Options, TestApp, WAIT, sse_json};

async fn data_events(response: reqwest::Response) -> Vec<Value> {
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    sse_json(&text)
}

#[tokio::test]
async fn a_conversation_goes_on_until_cleared() {
    let app = TestApp::spawn().await;
    let (status, first) = app
        .post("/api/chat", json!({"message": "Hello there"}))
        .await;
    assert_eq!(status, 200, "{first}");
    assert!(first["response"].as_str().unwrap().contains("Hello there"));
    let conversation = first["conversation_id"].as_str().unwrap();
    let (_, run) = app
        .get(&format!(
            "/v1/runs/{}",
            first["request_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(run["status"], "completed");
    assert_eq!(run["thread_id"], conversation);

    let (_, second) = app
        .post(
            "/api/chat",
            json!({"message": "Once more", "conversation_id": conversation, "priority": 2}),
        )
        .await;
    assert_eq!(second["conversation_id"], conversation);
    let (_, run) = app
        .get(&format!(
            "/v1/runs/{}",
            second["request_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(run["priority"], 2);
    let (_, messages) = app
        .get(&format!("/v1/threads/{conversation}/messages"))
        .await;
    assert_eq!(messages["messages"].as_array().unwrap().len(), 4);

    let (status, cleared) = app
        .post(
            "/api/chat",
            json!({"message": "/clear", "conversation_id": conversation}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(cleared["request_id"], Value::Null);
    let fresh = cleared["conversation_id"].as_str().unwrap();
    assert_ne!(fresh, conversation);
    let (_, messages) = app.get(&format!("/v1/threads/{fresh}/messages")).await;
    assert_eq!(messages["messages"], json!([]), "a new, empty conversation");
}

#[tokio::test]
async fn a_streamed_chat_sends_content_tokens_then_done() {
    let app = TestApp::spawn().await;
    let response = app
        .http
        .post(app.url("/api/chat/stream"))
        .json(&json!({"message": "Stream it"}))
        .send()
        .await
        .unwrap();
    let events = data_events(response).await;
    let (done, tokens) = events.split_last().unwrap();
    assert_eq!(done["done"], true, "{events:?}");
    assert!(tokens.iter().all(|e| e["type"] == "content"), "{events:?}");
    let text: String = tokens
        .iter()
        .map(|e| e["token"].as_str().unwrap())
        .collect();
    let metadata = &done["metadata"];
    let conversation = metadata["conversation_id"].as_str().unwrap();
    let (_, messages) = app
        .get(&format!("/v1/threads/{conversation}/messages"))
        .await;
    assert_eq!(messages["messages"][1]["content"], text.as_str());
    assert_eq!(messages["messages"][1]["id"], metadata["message_id"]);
    assert!(metadata["usage"]["output_tokens"].as_i64().unwrap() > 0);

    // `/clear` streams its notice and the new conversation.
    let response = app
        .http
        .post(app.url("/api/chat/stream"))
        .json(&json!({"message": "/clear", "conversation_id": conversation}))
        .send()
        .await
        .unwrap();
    let events = data_events(response).await;
    assert_eq!(events[0]["type"], "content");
    assert_eq!(events[1]["done"], true);
    assert_ne!(events[1]["metadata"]["conversation_id"], conversation);
}

#[tokio::test]
async fn a_failed_run_streams_an_error_token() {
    let fake = switchyard_fake_llm::FakeLlm::start().await;
    fake.push(switchyard_fake_llm::Reply::error(
        400,
        "the prompt is too long",
        None,
    ));
    let catalog = format!(
        "[[providers]]\nname = \"llm\"\nkind = \"openai\"\nbase_url = \"{}\"\n\n\
         [[agents]]\nid = \"assistant\"\nname = \"Assistant\"\nprovider = \"llm\"\nmodel = \"m\"\n",
        fake.base_url()
    );
    let app = TestApp::spawn_with(Options {
        catalog,
        ..Default::default()
    })
    .await;
    let response = app
        .http
        .post(app.url("/api/chat/stream"))
        .json(&json!({"message": "Hi"}))
        .send()
        .await
        .unwrap();
    let events = data_events(response).await;
    let last = events.last().unwrap();
    assert_eq!(last["type"], "error", "{events:?}");
    assert!(last["token"].as_str().is_some_and(|t| !t.is_empty()));
}

#[tokio::test]
async fn the_queue_reports_and_cancels_requests() {
    // No worker: requests stay queued.
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    let client = app.http.clone();
    let url = app.url("/api/chat");
    let waiting = tokio::spawn(async move {
        client
            .post(url)
            .json(&json!({"message": "Wait for me"}))
            .send()
            .await
            .unwrap()
    });
    // The request is a queued run of a new conversation.
    let deadline = tokio::time::Instant::now() + WAIT;
    let run_id = loop {
        let (_, threads) = app.get("/v1/threads").await;
        if let Some(thread) = threads["threads"].as_array().unwrap().first() {
            let (_, runs) = app
                .get(&format!(
                    "/v1/threads/{}/runs",
                    thread["id"].as_str().unwrap()
                ))
                .await;
            if let Some(run) = runs["runs"].as_array().unwrap().first() {
                break run["id"].as_str().unwrap().to_owned();
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the run was not created"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };

    let (status, state) = app
        .post("/api/queue/status", json!({"request_id": run_id}))
        .await;
    assert_eq!(status, 200, "{state}");
    assert_eq!(state["status"], "queued");
    assert_eq!(state["queue_position"], 0);
    let (_, overview) = app.get("/api/status").await;
    assert_eq!(overview["status"], "ok");
    assert_eq!(overview["mine"]["queued"], 1);
    assert!(overview["queue_stats"]["queued"].as_i64().unwrap() >= 1);

    let (status, cancelled) = app
        .post("/api/queue/cancel", json!({"request_id": run_id}))
        .await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled");
    // The waiting chat answers that its request was cancelled.
    let answer = waiting.await.unwrap();
    assert_eq!(answer.status(), 409);
    let (status, again) = app
        .post("/api/queue/cancel", json!({"request_id": run_id}))
        .await;
    assert_eq!(
        (status, again["error"]["code"].as_str()),
        (409, Some("conflict"))
    );
    let (status, missing) = app
        .post(
            "/api/queue/status",
            json!({"request_id": "0193a5a0-0000-7000-8000-000000000000"}),
        )
        .await;
    assert_eq!(
        (status, missing["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
}

#[tokio::test]
async fn bad_requests_are_refused_and_leave_nothing() {
    let app = TestApp::spawn().await;
    let cases = [
        ("/api/chat", json!({"message": ""}), 422),
        ("/api/chat", json!({"message": "Hi", "priority": 11}), 422),
        (
            "/api/chat",
            json!({"message": "/clear", "priority": 99}),
            422,
        ),
        (
            "/api/chat/stream",
            json!({"message": "/clear", "priority": 0}),
            422,
        ),
        ("/api/chat", json!({"message": "Hi", "colour": "red"}), 422),
        ("/api/chat", json!({}), 422),
        (
            "/api/chat",
            json!({"message": "Hi", "conversation_id": "0193a5a0-0000-7000-8000-000000000000"}),
            404,
        ),
        ("/api/chat/stream", json!({"message": ""}), 422),
        ("/api/queue/status", json!({"request_id": "nope"}), 422),
    ];
    for (path, body, status) in cases {
        let (got, answer) = app.post(path, body.clone()).await;
        assert_eq!(got, status, "{path} {body}: {answer}");
        assert!(answer["error"]["code"].is_string(), "{answer}");
    }
    let (_, threads) = app.get("/v1/threads").await;
    assert_eq!(
        threads["threads"],
        json!([]),
        "a refused chat left a thread"
    );
}

/// The stream's second form, `?format=message`, as servers written with
/// sse-starlette send it: named events, raw text.
async fn named_events(response: reqwest::Response) -> Vec<(String, String)> {
    use eventsource_stream::Eventsource;
    use futures::StreamExt;
    assert_eq!(response.status(), 200);
    response
        .bytes_stream()
        .eventsource()
        .map(|event| {
            let event = event.expect("a well-formed event");
            (event.event, event.data)
        })
        .collect()
        .await
}

#[tokio::test]
async fn the_message_form_streams_raw_tokens_then_done_or_error() {
    let app = TestApp::spawn().await;
    let stream = |body: Value| {
        app.http
            .post(app.url("/api/chat/stream?format=message"))
            .json(&body)
            .send()
    };
    let events = named_events(stream(json!({"message": "Raw, please"})).await.unwrap()).await;
    let ((last, metadata), tokens) = events.split_last().unwrap();
    assert_eq!(last, "done", "{events:?}");
    assert!(
        tokens.len() > 1 && tokens.iter().all(|(e, _)| e == "message"),
        "{events:?}"
    );
    let text: String = tokens.iter().map(|(_, t)| t.as_str()).collect();
    let metadata: Value = serde_json::from_str(metadata).unwrap();
    let (_, messages) = app
        .get(&format!(
            "/v1/threads/{}/messages",
            metadata["conversation_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(messages["messages"][1]["content"], text.as_str());
    assert_eq!(metadata["message_id"], messages["messages"][1]["id"]);

    let cleared = named_events(stream(json!({"message": "/clear"})).await.unwrap()).await;
    assert_eq!(cleared[0].0, "message");
    assert_eq!(cleared[1].0, "done");

    let (status, body) = app
        .call(
            app.http
                .post(app.url("/api/chat/stream?format=xml"))
                .json(&json!({"message": "Hi"})),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("validation_failed")),
        "{body}"
    );
}

#[tokio::test]
async fn the_message_form_ends_a_failed_run_with_an_error_event() {
    let fake = switchyard_fake_llm::FakeLlm::start().await;
    fake.push(switchyard_fake_llm::Reply::error(
        400,
        "the prompt is too long",
        None,
    ));
    let app = TestApp::spawn_with(Options {
        catalog: switchyard_tests::one_agent_catalog(&fake.base_url(), "model = \"m\""),
        ..Default::default()
    })
    .await;
    let response = app
        .http
        .post(app.url("/api/chat/stream?format=message"))
        .json(&json!({"message": "Hi"}))
        .send()
        .await
        .unwrap();
    let events = named_events(response).await;
    let (event, message) = events.last().unwrap();
    assert_eq!(event, "error", "{events:?}");
    assert!(message.contains("too long"), "the raw message: {message}");
}
