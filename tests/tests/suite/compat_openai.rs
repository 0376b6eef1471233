//! The OpenAI-compatible surface, called as OpenAI's clients call it:
//! `POST /v1/chat/completions` whole and streamed (chunks parsed by the
//! stream's rules: `data:` lines, JSON chunks, `[DONE]`), `GET /v1/models`;
//! what each call leaves is checked through the native API.

use serde_json::{Value, json};
use switchyard_fake_llm::{FakeLlm, Reply};
use switchyard_tests::{Options, TestApp, one_agent_catalog, sse_data};

async fn app_with(fake: &FakeLlm) -> TestApp {
    app_with_env(fake, Vec::new()).await
}

/// As [`app_with`], with API keys as the only way in.
async fn app_with_auth(fake: &FakeLlm) -> TestApp {
    app_with_env(fake, vec![("SWITCHYARD_AUTH", "api_key".into())]).await
}

async fn app_with_env(fake: &FakeLlm, env: Vec<(&'static str, String)>) -> TestApp {
    let catalog = one_agent_catalog(
        &fake.base_url(),
        r#"model = "upstream-model"
instructions = "You are a helpful assistant."
"#,
    );
    TestApp::spawn_with(Options {
        catalog,
        env,
        ..Default::default()
    })
    .await
}

/// The conversation a chat UI sends: everything so far, the user's last.
fn conversation() -> Value {
    json!([
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": [{"type": "text", "text": "What is "}, {"type": "text", "text": "2 + 2?"}]},
    ])
}

async fn thread_count(app: &TestApp) -> usize {
    let (_, threads) = app.get("/v1/threads").await;
    threads["threads"].as_array().unwrap().len()
}

#[tokio::test]
async fn models_are_the_agents() {
    let fake = FakeLlm::start().await;
    let app = app_with(&fake).await;
    let (status, body) = app.get("/v1/models").await;
    assert_eq!(status, 200);
    assert_eq!(body["object"], "list");
    let ids: Vec<&str> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"assistant"), "{body}");
    assert!(
        body["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["object"] == "model" && m["created"].is_i64())
    );
}

#[tokio::test]
async fn a_completion_is_a_recorded_run_on_a_thread_holding_the_conversation() {
    let fake = FakeLlm::start().await;
    fake.push(Reply::text(&["It is ", "4."], Some((31, 5))));
    let app = app_with(&fake).await;

    let response = app
        .http
        .post(app.url("/v1/chat/completions"))
        .json(&json!({"model": "assistant", "messages": conversation(), "temperature": 0.2}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let run_id = response.headers()["x-switchyard-run-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let thread_id = response.headers()["x-switchyard-thread-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["id"], format!("chatcmpl-{run_id}"));
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "assistant");
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    assert_eq!(body["choices"][0]["message"]["content"], "It is 4.");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens": 31, "completion_tokens": 5, "total_tokens": 36})
    );

    // The run, its thread and the whole conversation, natively.
    let (_, run) = app.get(&format!("/v1/runs/{run_id}")).await;
    assert_eq!(run["status"], "completed");
    assert_eq!(run["thread_id"], thread_id.as_str());
    let (_, messages) = app.get(&format!("/v1/threads/{thread_id}/messages")).await;
    let turns: Vec<(&str, &str)> = messages["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
        .collect();
    assert_eq!(
        turns,
        [
            ("system", "Answer briefly."),
            ("user", "Hi"),
            ("assistant", "Hello! How can I help?"),
            ("user", "What is 2 + 2?"),
            ("assistant", "It is 4."),
        ]
    );
    // The provider saw the agent's instructions and the whole conversation.
    let sent = &fake.requests()[0].body;
    assert_eq!(sent["model"], "upstream-model");
    let roles: Vec<&str> = sent["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(
        roles,
        ["system", "system", "user", "assistant", "user"],
        "{sent}"
    );
}

#[tokio::test]
async fn a_streamed_completion_sends_chunks_usage_and_done() {
    let fake = FakeLlm::start().await;
    fake.push(Reply::text(&["It ", "is ", "4."], Some((31, 5))));
    let app = app_with(&fake).await;

    let response = app
        .http
        .post(app.url("/v1/chat/completions"))
        .json(&json!({
            "model": "assistant",
            "messages": conversation(),
            "stream": true,
            "stream_options": {"include_usage": true},
        }))
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
    let run_id = response.headers()["x-switchyard-run-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let body = response.text().await.unwrap();
    let data = sse_data(&body);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{body}");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).expect("each chunk is JSON"))
        .collect();
    for chunk in &chunks {
        assert_eq!(chunk["id"], format!("chatcmpl-{run_id}"));
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["model"], "assistant");
    }
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "It is 4.");
    let finish: Vec<&Value> = chunks
        .iter()
        .map(|c| &c["choices"][0]["finish_reason"])
        .filter(|f| !f.is_null())
        .collect();
    assert_eq!(finish, [&json!("stop")]);
    // The usage chunk comes last, with no choices.
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["total_tokens"], 36);

    let (_, run) = app.get(&format!("/v1/runs/{run_id}")).await;
    assert_eq!(run["status"], "completed");
}

#[tokio::test]
async fn bad_requests_are_refused_and_leave_nothing() {
    let fake = FakeLlm::start().await;
    let app = app_with(&fake).await;
    let user = |content: Value| json!([{"role": "user", "content": content}]);
    let cases = [
        (
            json!({"model": "nobody", "messages": user(json!("Hi"))}),
            404,
            "not_found",
        ),
        (
            json!({"model": "assistant", "messages": []}),
            422,
            "validation_failed",
        ),
        (
            json!({"model": "assistant", "messages": [{"role": "assistant", "content": "Hi"}]}),
            422,
            "validation_failed",
        ),
        (
            json!({"model": "assistant", "messages": [{"role": "tool", "content": "42", "tool_call_id": "x"}, {"role": "user", "content": "Hi"}]}),
            422,
            "validation_failed",
        ),
        (
            json!({"model": "assistant", "messages": user(json!([{"type": "image_url", "image_url": {"url": "http://x/y.png"}}]))}),
            422,
            "validation_failed",
        ),
        (
            json!({"model": "assistant", "messages": user(json!("Hi")), "tools": [{"type": "function", "function": {"name": "f"}}]}),
            422,
            "validation_failed",
        ),
        (
            json!({"model": "assistant", "messages": user(json!(""))}),
            422,
            "validation_failed",
        ),
        (
            json!({"messages": user(json!("Hi"))}),
            422,
            "validation_failed",
        ),
    ];
    for (body, status, code) in cases {
        let (got, answer) = app.post("/v1/chat/completions", body.clone()).await;
        assert_eq!(
            (got, answer["error"]["code"].as_str()),
            (status, Some(code)),
            "{body} → {answer}"
        );
        assert!(
            answer["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    assert_eq!(thread_count(&app).await, 0, "a refused call left a thread");
    assert!(fake.requests().is_empty());
}

#[tokio::test]
async fn a_failed_run_answers_502_with_the_runs_error() {
    let fake = FakeLlm::start().await;
    fake.push(Reply::error(400, "context length exceeded", None));
    let app = app_with(&fake).await;
    let (status, body) = app
        .post(
            "/v1/chat/completions",
            json!({"model": "assistant", "messages": [{"role": "user", "content": "Hi"}]}),
        )
        .await;
    assert_eq!(status, 502, "{body}");
    let code = body["error"]["code"].as_str().unwrap();
    let (_, runs) = app.get("/v1/threads").await;
    let thread_id = runs["threads"][0]["id"].as_str().unwrap();
    let (_, runs) = app.get(&format!("/v1/threads/{thread_id}/runs")).await;
    assert_eq!(runs["runs"][0]["status"], "failed");
    assert_eq!(runs["runs"][0]["error"]["code"], code);
}

#[tokio::test]
async fn openais_python_sdk_chats_with_an_agent() {
    let fake = FakeLlm::start().await;
    fake.push(Reply::text(&["It is ", "4."], Some((12, 3))));
    fake.push(Reply::text(&["Four", "."], Some((12, 2))));
    let mut app = app_with_auth(&fake).await;
    let key = app.api_key("sdk-user", false).await;
    app.http = app.client_with_token(&key);
    let seen = switchyard_tests::clients::openai_sdk(&app.address, &key).await;
    assert!(
        seen["models"]
            .as_array()
            .unwrap()
            .contains(&json!("assistant"))
    );
    assert_eq!(seen["content"], "It is 4.");
    assert_eq!(seen["total_tokens"], 15);
    assert_eq!(seen["streamed"], "Four.");
    assert_eq!(seen["finish_reasons"], json!(["stop"]));
    assert_eq!(seen["stream_usage"], 14);
    assert_eq!(seen["missing"], json!({"status": 404, "code": "not_found"}));

    // Both calls are the key's user's runs.
    let run_id = seen["run_id"].as_str().unwrap();
    let (status, run) = app.get(&format!("/v1/runs/{run_id}")).await;
    assert_eq!((status, run["status"].as_str()), (200, Some("completed")));
    assert_eq!(thread_count(&app).await, 2);
}

#[tokio::test]
async fn openais_python_sdk_works_in_development_mode_with_any_key() {
    // `dev` alone, as `switchyard dev` runs: the SDK's placeholder key is
    // the development user, as it is for local model servers.
    let fake = FakeLlm::start().await;
    fake.push(Reply::text(&["It is ", "4."], Some((12, 3))));
    fake.push(Reply::text(&["Four", "."], Some((12, 2))));
    let app = app_with(&fake).await;
    let seen = switchyard_tests::clients::openai_sdk(&app.address, "unused").await;
    assert_eq!(seen["content"], "It is 4.");
    assert_eq!(seen["streamed"], "Four.");
    let run_id = seen["run_id"].as_str().unwrap();
    let (status, run) = app.get(&format!("/v1/runs/{run_id}")).await;
    assert_eq!((status, run["status"].as_str()), (200, Some("completed")));
    let owner: (String, String) = sqlx::query_as(
        "select u.auth_method, u.subject from runs r join users u on u.id = r.owner_id \
         where r.id = $1::uuid",
    )
    .bind(run_id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(owner, ("dev".to_owned(), "local".to_owned()));
}
