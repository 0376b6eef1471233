//! The Vercel AI SDK surface: the `ai` package's own client (`DefaultChatTransport`
//! and `readUIMessageStream`, run by node) chats with Switchyard, resumes a
//! stream and finds none to resume; the raw stream's framing, refusals and
//! ownership are checked here; the chats' data through the native API.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use switchyard_fake_llm::{FakeLlm, Reply};
use switchyard_tests::{Options, TestApp, sse_data};

/// Scripted agents slow enough that a stream can be resumed mid-way.
const CATALOG: &str = r#"
[[providers]]
name = "scripted"
kind = "scripted"
chunk_delay_ms = 150

[[agents]]
id = "assistant"
name = "Assistant"
provider = "scripted"
model = "scripted-1"
tools = ["current_time"]
"#;

async fn app(catalog: &str) -> TestApp {
    TestApp::spawn_with(Options {
        catalog: catalog.to_owned(),
        env: vec![("SWITCHYARD_AUTH", "api_key".into())],
        ..Default::default()
    })
    .await
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The `ai` package's entry point, installed by the test tools script.
fn ai_package() -> PathBuf {
    let entry = repo().join(".tools/node/node_modules/ai/dist/index.js");
    assert!(
        entry.is_file(),
        "the `ai` npm package is needed by this test and was not found at {}: \
         run scripts/install-test-tools.sh",
        entry.display()
    );
    entry
}

/// The text of a UIMessage's text parts.
fn text_of(message: &Value) -> String {
    message["parts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["type"] == "text")
        .map(|p| p["text"].as_str().unwrap())
        .collect()
}

/// The thread that holds the chat `chat_id`, and its messages' contents.
async fn chat_thread(app: &TestApp, chat_id: &str) -> (String, Vec<(String, String)>) {
    let (_, threads) = app.get("/v1/threads").await;
    let thread = threads["threads"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["metadata"]["chat_id"] == chat_id)
        .unwrap_or_else(|| panic!("no thread holds chat {chat_id}: {threads}"));
    let id = thread["id"].as_str().unwrap().to_owned();
    let (_, messages) = app.get(&format!("/v1/threads/{id}/messages")).await;
    let turns = messages["messages"]
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
    (id, turns)
}

#[tokio::test]
async fn the_ai_packages_own_client_chats_resumes_and_finds_nothing_to_resume() {
    let mut app = app(CATALOG).await;
    let key = app.api_key("ui-user", false).await;
    app.http = app.client_with_token(&key);
    let entry = ai_package();
    let script = repo().join("tests/clients/ai_sdk.mjs");
    let seen = switchyard_tests::clients::run_json(
        "node".into(),
        vec![
            script.display().to_string(),
            entry.display().to_string(),
            app.address.clone(),
            key,
        ],
    )
    .await;

    // First exchange: text, stored as the thread's answer.
    let first = &seen["first"];
    assert_eq!(first["role"], "assistant");
    let (_, turns) = chat_thread(&app, seen["chatId"].as_str().unwrap()).await;
    assert_eq!(
        turns.len(),
        4,
        "two exchanges, nothing sent twice: {turns:?}"
    );
    assert_eq!(turns[0], ("user".into(), "Hello there".into()));
    assert_eq!(turns[1], ("assistant".into(), text_of(first)));
    assert_eq!(turns[2], ("user".into(), "/tool current_time".into()));

    // Second exchange: a tool call with its output, then text, in steps.
    let second = &seen["second"];
    let parts = second["parts"].as_array().unwrap();
    let tool = parts
        .iter()
        .find(|p| p["type"] == "tool-current_time")
        .unwrap_or_else(|| panic!("no tool part: {second}"));
    assert_eq!(tool["state"], "output-available", "{tool}");
    assert!(!tool["output"].is_null());
    assert!(
        parts.iter().filter(|p| p["type"] == "step-start").count() >= 2,
        "{second}"
    );
    assert_eq!(turns[3], ("assistant".into(), text_of(second)));

    assert_eq!(seen["idle"], true, "no run active: nothing to resume");

    // The resumed stream is the whole answer, as the original stream's.
    let resumed = text_of(&seen["resumed"]);
    assert!(!resumed.is_empty());
    assert_eq!(resumed, text_of(&seen["completed"]));
    let (_, turns) = chat_thread(&app, seen["slowChat"].as_str().unwrap()).await;
    assert_eq!(turns[1].1, resumed);
}

#[tokio::test]
async fn the_stream_is_framed_as_the_protocol_says_and_errors_are_parts() {
    let fake = FakeLlm::start().await;
    fake.push(Reply::error(400, "the prompt is too long", None));
    let catalog = format!(
        "[[providers]]\nname = \"llm\"\nkind = \"openai\"\nbase_url = \"{}\"\n\n\
         [[agents]]\nid = \"assistant\"\nname = \"Assistant\"\nprovider = \"llm\"\nmodel = \"m\"\n",
        fake.base_url()
    );
    let mut app = app(&catalog).await;
    app.http = app.client_with_token(&app.api_key("ui-user", false).await);
    let response = app
        .http
        .post(app.url("/api/chat"))
        .json(&json!({"id": "c1", "messages": [
            {"id": "u1", "role": "user", "parts": [{"type": "text", "text": "Hi"}]}
        ]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-vercel-ai-ui-message-stream"], "v1");
    let data = sse_data(&response.text().await.unwrap());
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let parts: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(parts[0]["type"], "start");
    let error = parts.last().unwrap();
    assert_eq!(error["type"], "error", "{parts:?}");
    assert!(error["errorText"].as_str().is_some_and(|t| !t.is_empty()));
}

#[tokio::test]
async fn bad_requests_are_refused_and_chats_are_the_callers_own() {
    let mut app = app(CATALOG).await;
    let alice = app.client_with_token(&app.api_key("alice", false).await);
    let bob = app.client_with_token(&app.api_key("bob", false).await);
    app.http = alice.clone();
    let hi = json!({"id": "u1", "role": "user", "parts": [{"type": "text", "text": "Hi"}]});
    let cases = [
        json!({"id": "", "messages": [hi]}),
        json!({"id": "c", "messages": []}),
        json!({"id": "c", "messages": [{"id": "a", "role": "assistant", "parts": [{"type": "text", "text": "Hi"}]}]}),
        json!({"id": "c", "messages": [{"id": "u", "role": "user", "parts": [{"type": "file", "url": "x"}]}]}),
        json!({"id": "c", "messages": [hi], "trigger": "regenerate-message"}),
        json!({"id": "c", "message": hi, "messages": [hi]}),
        json!({"id": "c", "messages": [{"id": "t", "role": "tool", "parts": []}, hi]}),
    ];
    for body in cases {
        let (status, answer) = app.post("/api/chat", body.clone()).await;
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (422, Some("validation_failed")),
            "{body}: {answer}"
        );
    }
    let (_, threads) = app.get("/v1/threads").await;
    assert_eq!(
        threads["threads"],
        json!([]),
        "a refused chat left a thread"
    );

    // Alice's chat, then Bob with the same chat id: his own chat.
    let (status, _) = app
        .call(
            alice
                .post(app.url("/api/chat"))
                .json(&json!({"id": "shared", "message": hi})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = app
        .call(
            bob.post(app.url("/api/chat"))
                .json(&json!({"id": "shared", "message": hi})),
        )
        .await;
    assert_eq!(status, 200);
    let (_, theirs) = app.call(bob.get(app.url("/v1/threads"))).await;
    assert_eq!(theirs["threads"].as_array().unwrap().len(), 1);
    let (_, mine) = app.call(alice.get(app.url("/v1/threads"))).await;
    assert_eq!(mine["threads"].as_array().unwrap().len(), 1);
    assert_ne!(theirs["threads"][0]["id"], mine["threads"][0]["id"]);
    let (status, _) = app
        .call(bob.get(app.url("/api/chat/nobodys-chat/stream")))
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_chat_whose_thread_was_deleted_starts_over_and_a_refused_first_message_leaves_nothing() {
    let mut app = app(CATALOG).await;
    app.http = app.client_with_token(&app.api_key("ui-user", false).await);
    let say = |text: &str| {
        json!({"id": "again", "message": {"id": "u", "role": "user",
            "parts": [{"type": "text", "text": text}]}})
    };
    // Too long for a message: refused after the chat's thread was made.
    let (status, _) = app.post("/api/chat", say(&"x".repeat(40_000))).await;
    assert_eq!(status, 422);
    let (_, threads) = app.get("/v1/threads").await;
    assert_eq!(
        threads["threads"],
        json!([]),
        "the refused first message left a thread"
    );

    let (status, _) = app.post("/api/chat", say("Hello")).await;
    assert_eq!(status, 200);
    let (first, _) = chat_thread(&app, "again").await;
    let (status, _) = app.delete(&format!("/v1/threads/{first}")).await;
    assert_eq!(status, 204);
    // The chat id goes on, on a new thread.
    let (status, _) = app.post("/api/chat", say("Hello again")).await;
    assert_eq!(status, 200);
    let (second, turns) = chat_thread(&app, "again").await;
    assert_ne!(second, first);
    assert_eq!(turns[0], ("user".into(), "Hello again".into()));
}
