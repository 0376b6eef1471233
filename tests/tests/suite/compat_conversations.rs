//! The conversations surface as its chat UIs call it: the conversation
//! resource, posting a message, the thinking stream opened before the post
//! (`data:` JSON events read line by line), and the user, models and
//! settings; what each call leaves is checked through the native API.

use serde_json::{Value, json};
use switchyard_common::config::BUILTIN_CATALOG;
use switchyard_tests::{Options, TestApp, sse_json};

async fn app() -> TestApp {
    TestApp::spawn_with(Options {
        catalog: BUILTIN_CATALOG.replace("chunk_delay_ms = 15", "chunk_delay_ms = 0"),
        env: vec![("SWITCHYARD_SHOW_FUNC_RESULT", "false".into())],
        ..Default::default()
    })
    .await
}

#[tokio::test]
async fn user_models_and_settings() {
    let app = app().await;
    let (status, user) = app.get("/api/user").await;
    assert_eq!(status, 200);
    assert_eq!(user["user_name"], "local");
    assert_eq!(user["first_name"], "local");
    assert_eq!(user["is_authenticated"], true);
    assert_eq!(user["mode"], "dev");
    let (_, me) = app.get("/v1/me").await;
    assert_eq!(user["user_id"], me["id"]);

    let (_, models) = app.get("/api/models").await;
    let (_, agents) = app.get("/v1/agents").await;
    let ids: Vec<&Value> = agents["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| &a["id"])
        .collect();
    assert_eq!(
        models["models"]
            .as_array()
            .unwrap()
            .iter()
            .collect::<Vec<_>>(),
        ids
    );

    let (_, settings) = app.get("/api/settings").await;
    assert_eq!(settings, json!({"show_func_result": false}));
}

#[tokio::test]
async fn conversations_are_created_listed_renamed_and_deleted() {
    let app = app().await;
    let empty = app.call(app.http.post(app.url("/api/conversations"))).await;
    assert_eq!(empty.0, 201, "{}", empty.1);
    let (status, named) = app
        .post(
            "/api/conversations",
            json!({"title": "Invoices", "model": "support-triage"}),
        )
        .await;
    assert_eq!(status, 201, "{named}");
    assert_eq!(named["title"], "Invoices");
    assert_eq!(named["model"], "support-triage");
    assert_eq!(named["messages"], json!([]));
    let id = named["id"].as_str().unwrap();

    let (_, list) = app.get("/api/conversations").await;
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["id"], id, "newest first");
    assert!(list[0].get("messages").is_none(), "lists carry no messages");

    let (status, renamed) = app
        .put(
            &format!("/api/conversations/{id}"),
            json!({"title": "Billing", "model": empty.1["model"]}),
        )
        .await;
    assert_eq!(status, 200, "{renamed}");
    assert_eq!(renamed["title"], "Billing");
    let (_, thread) = app.get(&format!("/v1/threads/{id}")).await;
    assert_eq!(thread["title"], "Billing");
    assert_eq!(thread["agent_id"], empty.1["model"]);

    for (body, status) in [
        (json!({"model": "nobody"}), 422),
        (json!({"colour": "red"}), 422),
    ] {
        let (got, answer) = app
            .put(&format!("/api/conversations/{id}"), body.clone())
            .await;
        assert_eq!(got, status, "{body}: {answer}");
    }
    for body in [
        json!({"model": "nobody"}),
        json!({"title": "x".repeat(1000)}),
    ] {
        let (status, _) = app.post("/api/conversations", body.clone()).await;
        assert_eq!(status, 422, "{body}");
    }
    let (_, list) = app.get("/api/conversations").await;
    assert_eq!(
        list.as_array().unwrap().len(),
        2,
        "refusals made no conversation"
    );

    let (status, _) = app.delete(&format!("/api/conversations/{id}")).await;
    assert_eq!(status, 204);
    let (status, _) = app.get(&format!("/api/conversations/{id}")).await;
    assert_eq!(status, 404);
    let (status, _) = app.get(&format!("/v1/threads/{id}")).await;
    assert_eq!(status, 404);
    let (_, list) = app.get("/api/conversations").await;
    assert_eq!(list.as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_message_is_answered_and_kept_in_the_conversation() {
    let app = app().await;
    let (_, conversation) = app.post("/api/conversations", json!({})).await;
    let id = conversation["id"].as_str().unwrap();
    let (status, exchange) = app
        .post(
            &format!("/api/conversations/{id}/messages"),
            json!({"message": "Hello there"}),
        )
        .await;
    assert_eq!(status, 200, "{exchange}");
    assert_eq!(exchange["user_message"]["role"], "user");
    assert_eq!(exchange["user_message"]["content"], "Hello there");
    assert_eq!(exchange["assistant_message"]["role"], "assistant");
    assert_eq!(exchange["title"], "Hello there");

    let (_, conversation) = app.get(&format!("/api/conversations/{id}")).await;
    let messages = conversation["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2);
    assert_eq!(
        messages[1]["content"],
        exchange["assistant_message"]["content"]
    );
    assert!(messages.iter().all(|m| m["time"].is_string()));
    let (_, native) = app.get(&format!("/v1/threads/{id}/messages")).await;
    assert_eq!(native["messages"][1]["content"], messages[1]["content"]);

    for (body, status) in [(json!({"message": ""}), 422), (json!({}), 422)] {
        let (got, _) = app
            .post(&format!("/api/conversations/{id}/messages"), body.clone())
            .await;
        assert_eq!(got, status, "{body}");
    }
    let (status, _) = app
        .post(
            "/api/conversations/0193a5a0-0000-7000-8000-000000000000/messages",
            json!({"message": "Hi"}),
        )
        .await;
    assert_eq!(status, 404);
    let (_, native) = app.get(&format!("/v1/threads/{id}/messages")).await;
    assert_eq!(
        native["messages"].as_array().unwrap().len(),
        2,
        "refusals add nothing"
    );
}

/// Open the thinking stream of `id` and read it to its end in the background.
fn think(app: &TestApp, id: &str) -> tokio::task::JoinHandle<Vec<Value>> {
    let request = app
        .http
        .get(app.url(&format!("/api/conversations/{id}/thinking")));
    tokio::spawn(async move {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        let text = response.text().await.unwrap();
        sse_json(&text)
    })
}

#[tokio::test]
async fn thinking_opened_before_the_post_shows_the_runs_functions_and_agents() {
    let app = app().await;
    let (_, conversation) = app
        .post("/api/conversations", json!({"model": "support-triage"}))
        .await;
    let id = conversation["id"].as_str().unwrap().to_owned();
    let thinking = think(&app, &id);
    // Let the stream settle on waiting for the next run.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let (status, _) = app
        .post(
            &format!("/api/conversations/{id}/messages"),
            json!({"message": "Where is my invoice?"}),
        )
        .await;
    assert_eq!(status, 200);
    let events = tokio::time::timeout(switchyard_tests::WAIT, thinking)
        .await
        .expect("the thinking stream closes when the run ends")
        .unwrap();
    let outline: Vec<String> = events
        .iter()
        .map(|e| {
            format!(
                "{}:{}",
                e["type"].as_str().unwrap(),
                e["agent"].as_str().or(e["function"].as_str()).unwrap()
            )
        })
        .collect();
    assert_eq!(
        outline.first().map(String::as_str),
        Some("agent_invoked:support-triage"),
        "{outline:?}"
    );
    assert!(
        outline.contains(&"agent_finished:support-triage".to_owned()),
        "{outline:?}"
    );
    assert!(
        outline
            .iter()
            .filter(|o| o.starts_with("agent_invoked:"))
            .count()
            >= 2,
        "the specialist is invoked too: {outline:?}"
    );

    // A tool call, watched while the run is in progress or just after.
    let (_, conversation) = app.post("/api/conversations", json!({})).await;
    let id = conversation["id"].as_str().unwrap().to_owned();
    let thinking = think(&app, &id);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let (status, _) = app
        .post(
            &format!("/api/conversations/{id}/messages"),
            json!({"message": "/tool current_time"}),
        )
        .await;
    assert_eq!(status, 200);
    let events = tokio::time::timeout(switchyard_tests::WAIT, thinking)
        .await
        .expect("the thinking stream closes when the run ends")
        .unwrap();
    let start = events
        .iter()
        .find(|e| e["type"] == "function_start")
        .expect("function_start");
    assert_eq!(start["function"], "current_time");
    assert!(start["arguments"].is_object());
    let end = events
        .iter()
        .find(|e| e["type"] == "function_end")
        .expect("function_end");
    assert_eq!(end["function"], "current_time");
    assert!(!end["result"].is_null());
}
