//! Isolation: a second user gets `404 not_found` for every route that names
//! another user's thread, run, message, step or event stream, and sees none
//! of them in lists, on the native API and every compatible surface. The routes come from the router's own OpenAPI document
//! (the router and the document are built from one registration), so a new
//! route is walked as soon as it exists.

use serde_json::{Value, json};
use switchyard_tests::{Options, TestApp};

/// A body that passes validation, so that only ownership decides; where a
/// body can name a thread, it names Alice's.
fn body_for(method: &str, path: &str, thread_id: &str, run_id: &str) -> Option<Value> {
    match (method, path) {
        ("post", "/api/queue/status" | "/api/queue/cancel") => Some(json!({"request_id": run_id})),
        ("post", "/v1/threads/{thread_id}/runs") => Some(json!({"input": {"content": "mine now"}})),
        ("post", "/api/agents/{agent_id}/chat") => {
            Some(json!({"message": "mine now", "thread_id": thread_id, "stream": false}))
        }
        ("patch", "/v1/threads/{thread_id}") | ("put", "/api/conversations/{id}") => {
            Some(json!({"title": "taken over"}))
        }
        ("post", "/api/conversations/{id}/messages") => Some(json!({"message": "mine now"})),
        ("post", "/v1/runs/{run_id}/cancel") => None,
        ("post" | "put" | "patch", _) => Some(json!({})),
        _ => None,
    }
}

#[tokio::test]
async fn another_users_resources_are_not_found_on_every_route() {
    let app = TestApp::spawn_with(Options {
        env: vec![("SWITCHYARD_AUTH", "api_key".into())],
        ..Options::default()
    })
    .await;
    let alice = app.client_with_token(&app.api_key("alice", false).await);
    let bob = app.client_with_token(&app.api_key("bob", false).await);

    // Alice's thread with a finished run: messages, steps and events exist.
    let (status, thread) = app
        .call(
            alice
                .post(app.url("/v1/threads"))
                .json(&json!({"title": "Alice's"})),
        )
        .await;
    assert_eq!(status, 201, "{thread}");
    let thread_id = thread["id"].as_str().unwrap().to_owned();
    let (status, run) = app
        .call(
            alice
                .post(app.url(&format!("/v1/threads/{thread_id}/runs")))
                .json(&json!({"input": {"content": "/tool current_time"}})),
        )
        .await;
    assert_eq!(status, 202, "{run}");
    let run_id = run["id"].as_str().unwrap().to_owned();
    let finished = app.wait_for_run_as(&alice, &run_id).await;
    assert_eq!(finished["status"], "completed");
    // And a chat of the AI SDK surface, whose id is Alice's own name for it.
    let (status, _) = app
        .call(alice.post(app.url("/api/chat")).json(&json!({
            "id": "alices-chat",
            "message": {"id": "m1", "role": "user", "parts": [{"type": "text", "text": "Hi"}]},
        })))
        .await;
    assert_eq!(status, 200);
    let snapshot = |client: reqwest::Client| {
        let (app, thread_id, run_id) = (&app, thread_id.clone(), run_id.clone());
        async move {
            let mut seen = Vec::new();
            for path in [
                format!("/v1/threads/{thread_id}"),
                format!("/v1/threads/{thread_id}/messages"),
                format!("/v1/runs/{run_id}"),
                format!("/v1/runs/{run_id}/steps"),
            ] {
                let (status, body) = app.call(client.get(app.url(&path))).await;
                assert_eq!(status, 200, "{path}: {body}");
                seen.push(body);
            }
            seen
        }
    };
    let before = snapshot(alice.clone()).await;

    let (status, doc) = app.get("/openapi.json").await;
    assert_eq!(status, 200);
    let paths = doc["paths"].as_object().expect("paths");
    assert!(
        paths.len() >= 10,
        "the document lists the routes: {paths:?}"
    );
    let mut walked = 0;
    for (template, operations) in paths {
        if ["/health", "/ready"].contains(&template.as_str()) {
            continue;
        }
        for method in operations.as_object().unwrap().keys() {
            let mut path = template.clone();
            for (param, value) in [
                ("{thread_id}", thread_id.as_str()),
                ("{run_id}", run_id.as_str()),
                ("{agent_id}", "assistant"),
                // A conversation is a thread; an AI SDK chat id is Alice's own name.
                (
                    "{id}",
                    if template.starts_with("/api/conversations") {
                        thread_id.as_str()
                    } else {
                        "alices-chat"
                    },
                ),
            ] {
                path = path.replace(param, value);
            }
            assert!(
                !path.contains('{'),
                "{template} has a path parameter this test does not know: give it another user's id"
            );
            let mut request = bob.request(method.to_uppercase().parse().unwrap(), app.url(&path));
            let sent = body_for(method, template, &thread_id, &run_id);
            if let Some(body) = &sent {
                request = request.json(body);
            }
            let names_alices = template.contains("{thread_id}")
                || template.contains("{run_id}")
                || template.contains("{id}")
                || sent.is_some_and(|b| {
                    let text = b.to_string();
                    text.contains(&thread_id) || text.contains(&run_id)
                });
            let (status, body) = app.call(request).await;
            walked += 1;
            if template.starts_with("/v1/agents/{agent_id}") {
                // Agents are shared: everyone reads them, administrators change them.
                let expected = if method == "get" { 200 } else { 403 };
                assert_eq!(status, expected, "{method} {template}: {body}");
            } else if names_alices {
                assert_eq!(status, 404, "{method} {template} answered {status}: {body}");
                assert_eq!(body["error"]["code"], "not_found", "{method} {template}");
            } else if method == "get" {
                // Lists and `me`: none of Alice's ids appear.
                assert_eq!(status, 200, "{method} {template}: {body}");
                let text = body.to_string();
                assert!(
                    !text.contains(&thread_id) && !text.contains(&run_id),
                    "{template} shows Alice's resources to Bob: {text}"
                );
            }
        }
    }
    assert!(walked >= 12, "walked {walked} operations");

    // Nothing Bob tried changed Alice's data.
    assert_eq!(snapshot(alice).await, before);
    // A missing id and a foreign id answer alike.
    let missing = app
        .call(bob.get(app.url("/v1/threads/0193a5a0-0000-7000-8000-000000000000")))
        .await;
    assert_eq!(missing.0, 404);
}
