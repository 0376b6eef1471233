//! Inputs that would otherwise fail deep inside a write: NUL characters,
//! which PostgreSQL's text cannot hold, and thread metadata beyond its
//! bounds. Each is refused with `validation_failed` and leaves nothing.

use serde_json::{Value, json};
use switchyard_tests::TestApp;

async fn threads_of(app: &TestApp) -> Vec<Value> {
    let (_, list) = app.get("/v1/threads").await;
    list["threads"].as_array().unwrap().clone()
}

#[tokio::test]
async fn nul_characters_are_refused_wherever_they_come_in() {
    let app = TestApp::spawn().await;
    let thread = app.create_thread(json!({"title": "kept"})).await;
    let id = thread["id"].as_str().unwrap();
    let nul = "a\u{0}b";
    let bodies = [
        ("/v1/threads", json!({"title": nul})),
        ("/v1/threads", json!({"metadata": {"k": nul}})),
        ("/v1/threads", json!({"metadata": {nul: 1}})),
        ("/v1/threads", json!({"agent_id": nul})),
        (
            &*format!("/v1/threads/{id}/runs"),
            json!({"input": {"content": nul}}),
        ),
        (
            &*format!("/v1/threads/{id}/runs"),
            json!({"input": {"content": "hi"}, "model": nul}),
        ),
        ("/api/chat", json!({"message": nul})),
        (
            "/api/chat",
            json!({"id": nul, "message": {"role": "user", "parts": [{"type": "text", "text": "hi"}]}}),
        ),
        (
            "/v1/chat/completions",
            json!({"model": "assistant", "messages": [{"role": "user", "content": nul}]}),
        ),
        (
            "/api/agents/assistant/chat",
            json!({"message": nul, "stream": false}),
        ),
        ("/api/conversations", json!({"model": nul})),
        ("/api/conversations", json!({"title": nul})),
    ];
    for (path, body) in bodies {
        let (status, answer) = app.post(path, body.clone()).await;
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (422, Some("validation_failed")),
            "{path} {body}: {answer}"
        );
    }
    let (status, answer) = app
        .call(
            app.http
                .patch(app.url(&format!("/v1/threads/{id}")))
                .json(&json!({"title": nul})),
        )
        .await;
    assert_eq!(status, 422, "{answer}");
    for path in [
        "/v1/threads?q=a%00b".to_owned(),
        "/v1/threads?agent_id=%00".to_owned(),
        "/api/chat/a%00b/stream".to_owned(),
        format!("/v1/threads/{id}/messages?before=%00"),
    ] {
        let (status, answer) = app.get(&path).await;
        assert_eq!(status, 422, "{path}: {answer}");
    }
    // A backslash followed by the text "u0000" is no NUL.
    let (status, _) = app.post("/v1/threads", json!({"title": "\\u0000"})).await;
    assert_eq!(status, 201);

    let threads = threads_of(&app).await;
    assert_eq!(threads.len(), 2, "only the two good threads: {threads:?}");
    let (_, messages) = app.get(&format!("/v1/threads/{id}/messages")).await;
    assert_eq!(messages["messages"], json!([]));
}

#[tokio::test]
async fn thread_metadata_has_bounds() {
    let app = TestApp::spawn().await;
    let wide: serde_json::Map<String, Value> =
        (0..65).map(|i| (format!("k{i}"), json!(i))).collect();
    let deep = json!({"a": {"b": {"c": {"d": {"e": 1}}}}});
    let big = json!({"text": "x".repeat(17 * 1024)});
    for metadata in [Value::Object(wide), deep, big] {
        let (status, answer) = app.post("/v1/threads", json!({"metadata": metadata})).await;
        assert_eq!(status, 422, "{answer}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("metadata: at most"),
            "{answer}"
        );
    }
    assert!(threads_of(&app).await.is_empty());

    let fine = json!({"customer": "acme", "tags": ["a", "b"], "source": {"app": "web", "v": 2}});
    let thread = app.create_thread(json!({"metadata": fine})).await;
    assert_eq!(thread["metadata"], fine);
    let (status, _) = app
        .call(
            app.http
                .patch(app.url(&format!("/v1/threads/{}", thread["id"].as_str().unwrap())))
                .json(&json!({"metadata": {"text": "x".repeat(17 * 1024)}})),
        )
        .await;
    assert_eq!(status, 422, "a patch is bounded too");
}

#[tokio::test]
async fn numbers_a_double_cannot_give_back_are_refused_in_metadata() {
    let app = TestApp::spawn().await;
    let thread = app.create_thread(json!({"metadata": {"n": 1e307}})).await;
    let id = thread["id"].as_str().unwrap();
    // Stored as jsonb, this one would come back out of range and break
    // every later read of the thread.
    let edge: Value =
        serde_json::from_str(r#"{"metadata": {"x": 1.7976931348623157e308}}"#).unwrap();
    let (status, answer) = app.post("/v1/threads", edge.clone()).await;
    assert_eq!(status, 422, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("1e308"),
        "{answer}"
    );
    let (status, answer) = app
        .call(
            app.http
                .patch(app.url(&format!("/v1/threads/{id}")))
                .json(&edge),
        )
        .await;
    assert_eq!(status, 422, "{answer}");
    let (status, listed) = app.get("/v1/threads").await;
    assert_eq!(status, 200, "{listed}");
    let (status, read) = app.get(&format!("/v1/threads/{id}")).await;
    assert_eq!(
        (status, &read["metadata"]),
        (200, &json!({"n": 1e307})),
        "{read}"
    );
}
