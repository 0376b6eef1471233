//! The agent-chat surface as its chat UIs call it: `POST
//! /api/agents/{agent_id}/chat` streamed (`data:` JSON events read line by
//! line) and whole, and the agent's thread list, thread and delete; what
//! each call leaves is checked through the native API.

use std::time::Duration;

use serde_json::{Value, json};
use switchyard_fake_llm::{FakeLlm, Reply};
use switchyard_tests::{Options, TestApp, one_agent_catalog, sse_json};

/// Two scripted agents, so that one agent's threads stay out of the other's.
const CATALOG: &str = r#"
[[providers]]
name = "scripted"
kind = "scripted"

[[agents]]
id = "assistant"
name = "Assistant"
provider = "scripted"
model = "scripted-1"
tools = ["current_time"]

[[agents]]
id = "helper"
name = "Helper"
provider = "scripted"
model = "scripted-1"
"#;

async fn app() -> TestApp {
    TestApp::spawn_with(Options {
        catalog: CATALOG.to_owned(),
        ..Default::default()
    })
    .await
}

/// Chat with streaming and return the `data:` events, in order.
async fn chat_stream(app: &TestApp, agent: &str, body: Value) -> Vec<Value> {
    let response = app
        .http
        .post(app.url(&format!("/api/agents/{agent}/chat")))
        .json(&body)
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
    let text = response.text().await.unwrap();
    sse_json(&text)
}

fn of_type<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == kind).collect()
}

#[tokio::test]
async fn a_streamed_chat_sends_tokens_traces_and_done() {
    let app = app().await;
    let events = chat_stream(&app, "assistant", json!({"message": "/tool current_time"})).await;
    assert!(
        events.iter().all(|e| e["timestamp"].is_string()),
        "{events:?}"
    );

    let starts = of_type(&events, "trace_start");
    let ends = of_type(&events, "trace_end");
    assert_eq!(starts.len(), 1, "{events:?}");
    assert_eq!(starts[0]["tool"], "current_time");
    assert_eq!(starts[0]["arguments"], json!({}));
    assert_eq!(ends.len(), 1);
    assert_eq!(ends[0]["trace_id"], starts[0]["trace_id"]);
    assert_eq!(ends[0]["is_error"], false);

    let done = events.last().unwrap();
    assert_eq!(done["type"], "done", "{events:?}");
    let tokens: String = of_type(&events, "token")
        .iter()
        .map(|e| e["content"].as_str().unwrap())
        .collect();

    // The same through the native API.
    let run_id = done["run_id"].as_str().unwrap();
    let thread_id = done["thread_id"].as_str().unwrap();
    let (_, run) = app.get(&format!("/v1/runs/{run_id}")).await;
    assert_eq!(run["status"], "completed");
    assert_eq!(run["thread_id"], thread_id);
    let used = run["usage"]["input_tokens"].as_i64().unwrap()
        + run["usage"]["output_tokens"].as_i64().unwrap();
    assert_eq!(done["tokens_used"], used);
    let (_, messages) = app.get(&format!("/v1/threads/{thread_id}/messages")).await;
    let last = messages["messages"].as_array().unwrap().last().unwrap();
    assert_eq!(last["id"], done["message_id"]);
    assert_eq!(last["content"], tokens.as_str());
    let (_, steps) = app.get(&format!("/v1/runs/{run_id}/steps")).await;
    assert!(
        steps["steps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["id"] == starts[0]["trace_id"]),
        "{steps}"
    );
}

#[tokio::test]
async fn a_chat_continues_its_thread_and_answers_whole_without_stream() {
    let app = app().await;
    let (status, first) = app
        .post(
            "/api/agents/assistant/chat",
            json!({"message": "Hello there", "stream": false}),
        )
        .await;
    assert_eq!(status, 200, "{first}");
    assert!(first["content"].as_str().unwrap().contains("Hello there"));
    let thread_id = first["thread_id"].as_str().unwrap();

    let (status, second) = app
        .post(
            "/api/agents/assistant/chat",
            json!({"message": "And again", "thread_id": thread_id, "stream": false}),
        )
        .await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["thread_id"], thread_id);
    assert!(second["tokens_used"].as_i64().unwrap() > 0);

    let (status, thread) = app
        .get(&format!("/api/agents/assistant/threads/{thread_id}"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(thread["message_count"], 4);
    let contents: Vec<&str> = thread["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(contents[0], "Hello there");
    assert_eq!(contents[2], "And again");
    assert_eq!(contents[3], second["content"].as_str().unwrap());
    // Another agent's path does not reach the thread.
    let (status, _) = app
        .get(&format!("/api/agents/helper/threads/{thread_id}"))
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn an_agents_threads_are_listed_by_offset_with_their_total() {
    let app = app().await;
    for message in ["one", "two", "three"] {
        let (status, _) = app
            .post(
                "/api/agents/assistant/chat",
                json!({"message": message, "stream": false}),
            )
            .await;
        assert_eq!(status, 200);
    }
    let (status, _) = app
        .post(
            "/api/agents/helper/chat",
            json!({"message": "elsewhere", "stream": false}),
        )
        .await;
    assert_eq!(status, 200);

    let (status, page) = app
        .get("/api/agents/assistant/threads?limit=2&offset=0")
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        (
            page["total"].as_i64(),
            page["limit"].as_i64(),
            page["offset"].as_i64()
        ),
        (Some(3), Some(2), Some(0))
    );
    let titles: Vec<&str> = page["threads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles, ["three", "two"]);
    let (_, rest) = app
        .get("/api/agents/assistant/threads?limit=2&offset=2")
        .await;
    assert_eq!(rest["threads"][0]["title"], "one");
    assert_eq!(rest["threads"].as_array().unwrap().len(), 1);
    let (_, idle) = app.get("/api/agents/assistant/threads?status=idle").await;
    assert_eq!(idle["total"], 3);
    let (_, busy) = app.get("/api/agents/assistant/threads?status=busy").await;
    assert_eq!(busy["total"], 0);

    for bad in [
        "limit=0",
        "limit=101",
        "offset=-1",
        "status=sleeping",
        "sort=title",
    ] {
        let (status, body) = app
            .get(&format!("/api/agents/assistant/threads?{bad}"))
            .await;
        assert_eq!(status, 422, "{bad}: {body}");
        assert_eq!(body["error"]["code"], "validation_failed", "{bad}");
    }
}

#[tokio::test]
async fn deleting_hides_a_thread_and_hard_delete_removes_it() {
    let app = app().await;
    let mut ids = Vec::new();
    for _ in 0..2 {
        let (_, answer) = app
            .post(
                "/api/agents/assistant/chat",
                json!({"message": "Keep this", "stream": false}),
            )
            .await;
        ids.push(answer["thread_id"].as_str().unwrap().to_owned());
    }
    let (status, _) = app
        .delete(&format!("/api/agents/helper/threads/{}", ids[0]))
        .await;
    assert_eq!(status, 404, "another agent's path deletes nothing");
    let (status, _) = app
        .delete(&format!("/api/agents/assistant/threads/{}", ids[0]))
        .await;
    assert_eq!(status, 204);
    let (status, _) = app.get(&format!("/v1/threads/{}", ids[0])).await;
    assert_eq!(status, 404);
    let hidden: Option<i64> =
        sqlx::query_scalar("select count(*) from messages where thread_id = $1::uuid")
            .bind(&ids[0])
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(hidden, Some(2), "a soft delete keeps the messages");

    let (status, _) = app
        .delete(&format!(
            "/api/agents/assistant/threads/{}?hard_delete=true",
            ids[1]
        ))
        .await;
    assert_eq!(status, 204);
    let left: Option<i64> = sqlx::query_scalar(
        "select (select count(*) from threads where id = $1::uuid)
              + (select count(*) from messages where thread_id = $1::uuid)
              + (select count(*) from runs where thread_id = $1::uuid)",
    )
    .bind(&ids[1])
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(left, Some(0));
}

#[tokio::test]
async fn bad_chats_are_refused_and_leave_nothing() {
    let app = app().await;
    let (_, helper) = app
        .post(
            "/api/agents/helper/chat",
            json!({"message": "mine", "stream": false}),
        )
        .await;
    let helpers_thread = helper["thread_id"].as_str().unwrap();
    let cases = [
        ("nobody", json!({"message": "Hi"}), 404, "not_found"),
        (
            "assistant",
            json!({"message": ""}),
            422,
            "validation_failed",
        ),
        ("assistant", json!({}), 422, "validation_failed"),
        (
            "assistant",
            json!({"message": "Hi", "colour": "red"}),
            422,
            "validation_failed",
        ),
        (
            "assistant",
            json!({"message": "Hi", "thread_id": helpers_thread}),
            404,
            "not_found",
        ),
        (
            "assistant",
            json!({"message": "Hi", "thread_id": "0193a5a0-0000-7000-8000-000000000000"}),
            404,
            "not_found",
        ),
    ];
    for (agent, body, status, code) in cases {
        let (got, answer) = app
            .post(&format!("/api/agents/{agent}/chat"), body.clone())
            .await;
        assert_eq!(
            (got, answer["error"]["code"].as_str()),
            (status, Some(code)),
            "{agent} {body}: {answer}"
        );
    }
    let (_, threads) = app.get("/v1/threads").await;
    assert_eq!(
        threads["threads"].as_array().unwrap().len(),
        1,
        "only the helper's thread"
    );
    let (_, messages) = app
        .get(&format!("/v1/threads/{helpers_thread}/messages"))
        .await;
    assert_eq!(messages["messages"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn a_slow_answer_gets_heartbeats() {
    let fake = FakeLlm::start().await;
    fake.push(Reply::delayed(
        Duration::from_secs(16),
        Reply::text(&["Sorry, ", "slow model."], Some((5, 3))),
    ));
    let catalog = one_agent_catalog(&fake.base_url(), r#"model = "m""#);
    let app = TestApp::spawn_with(Options {
        catalog,
        ..Default::default()
    })
    .await;
    let events = chat_stream(&app, "assistant", json!({"message": "Take your time"})).await;
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    let heartbeat = kinds.iter().position(|&k| k == "heartbeat");
    let first_token = kinds.iter().position(|&k| k == "token");
    assert!(
        heartbeat.is_some() && heartbeat < first_token,
        "a heartbeat came while the model was silent: {kinds:?}"
    );
    assert_eq!(kinds.last(), Some(&"done"));
}

/// The registry agent-chat front ends manage agents with, at `/api/agents`:
/// the native agents, with the same bodies and rights; an inactive agent
/// stays listed and readable but takes no new runs on any surface.
#[tokio::test]
async fn the_agent_registry_lists_manages_and_deactivates_agents() {
    let catalog = format!(
        "{CATALOG}\n[[agents]]\nid = \"retired\"\nname = \"Retired\"\nprovider = \"scripted\"\n\
         model = \"scripted-1\"\nstatus = \"inactive\"\n"
    );
    let app = TestApp::spawn_with(Options {
        catalog,
        env: vec![("SWITCHYARD_AUTH", "api_key".into())],
        ..Default::default()
    })
    .await;
    let admin = app.client_with_token(&app.api_key("root", true).await);
    let user = app.client_with_token(&app.api_key("someone", false).await);

    let (status, registry) = app.call(user.get(app.url("/api/agents"))).await;
    assert_eq!(status, 200, "{registry}");
    let (_, native) = app.call(user.get(app.url("/v1/agents"))).await;
    assert_eq!(registry, native, "the same agents");
    let statuses: Vec<(&str, &str)> = registry["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["id"].as_str().unwrap(), a["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        statuses,
        [
            ("assistant", "active"),
            ("helper", "active"),
            ("retired", "inactive")
        ]
    );

    let spec = json!({"id": "support", "name": "Support", "provider": "scripted",
                      "model": "scripted-1", "instructions": "Help."});
    for (request, what) in [
        (user.post(app.url("/api/agents")).json(&spec), "create"),
        (
            user.put(app.url("/api/agents/assistant")).json(&spec),
            "update",
        ),
        (user.delete(app.url("/api/agents/helper")), "delete"),
    ] {
        let (status, body) = app.call(request).await;
        assert_eq!(status, 403, "a user may not {what}: {body}");
    }
    let (status, created) = app
        .call(admin.post(app.url("/api/agents")).json(&spec))
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["status"], "active");
    let (status, shown) = app.call(user.get(app.url("/api/agents/support"))).await;
    assert_eq!((status, &shown["name"]), (200, &json!("Support")));

    let chat = |agent: &str| {
        user.post(app.url(&format!("/api/agents/{agent}/chat")))
            .json(&json!({"message": "Hello", "stream": false}))
    };
    let (status, answer) = app.call(chat("support")).await;
    assert_eq!(status, 200, "{answer}");
    let thread = answer["thread_id"].as_str().unwrap().to_owned();
    let keyed = |key: &str| {
        user.post(app.url(&format!("/v1/threads/{thread}/runs")))
            .header("Idempotency-Key", key)
            .json(&json!({"input": {"content": "Once"}}))
    };
    let (status, first) = app.call(keyed("k-1")).await;
    assert_eq!(status, 202, "{first}");
    app.wait_for_run_as(&user, first["id"].as_str().unwrap())
        .await;

    // Made inactive: still listed and readable, but no new run anywhere.
    let mut inactive = spec.clone();
    inactive["status"] = json!("inactive");
    let (status, updated) = app
        .call(admin.put(app.url("/api/agents/support")).json(&inactive))
        .await;
    assert_eq!(
        (status, &updated["status"]),
        (200, &json!("inactive")),
        "{updated}"
    );
    let (_, listed) = app.call(user.get(app.url("/api/agents"))).await;
    assert!(
        listed["agents"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["id"] == "support" && a["status"] == "inactive")
    );
    let (status, _) = app.call(user.get(app.url("/api/agents/support"))).await;
    assert_eq!(status, 200);
    let (_, models) = app.call(user.get(app.url("/v1/models"))).await;
    let callable: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        callable,
        ["assistant", "helper"],
        "only what takes runs is a model"
    );
    for agent in ["support", "retired"] {
        let (status, body) = app.call(chat(agent)).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (409, Some("conflict")),
            "{agent}: {body}"
        );
        let (status, body) = app
            .call(user.post(app.url("/v1/chat/completions")).json(&json!({
                "model": agent, "messages": [{"role": "user", "content": "Hi"}]})))
            .await;
        assert_eq!(status, 409, "{agent}: {body}");
    }
    let (status, body) = app
        .call(
            user.post(app.url(&format!("/v1/threads/{thread}/runs")))
                .json(&json!({"input": {"content": "More"}})),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    // A retry of a request made before still gets its run; a new one not.
    let (status, again) = app.call(keyed("k-1")).await;
    assert_eq!((status, &again["id"]), (202, &first["id"]), "{again}");
    let (status, _) = app.call(keyed("k-2")).await;
    assert_eq!(status, 409);
    let (_, history) = app
        .call(user.get(app.url(&format!("/v1/threads/{thread}/messages"))))
        .await;
    assert_eq!(
        history["messages"].as_array().unwrap().len(),
        4,
        "the refused runs left nothing"
    );
    let (status, retired) = app
        .call(admin.put(app.url("/api/agents/retired")).json(&spec))
        .await;
    assert_eq!(
        status, 409,
        "a catalog agent changes in its file: {retired}"
    );

    // Active again, it answers; deleted, it is gone.
    let (status, _) = app
        .call(admin.put(app.url("/api/agents/support")).json(&spec))
        .await;
    assert_eq!(status, 200);
    let (status, _) = app.call(chat("support")).await;
    assert_eq!(status, 200);
    let (status, _) = app.call(admin.delete(app.url("/api/agents/support"))).await;
    assert_eq!(status, 204);
    let (status, _) = app.call(user.get(app.url("/api/agents/support"))).await;
    assert_eq!(status, 404);
    let (status, body) = app
        .call(admin.put(app.url("/api/agents/assistant")).json(&json!({
            "name": "A", "model": "scripted-1", "provider": "scripted", "status": "paused"})))
        .await;
    assert_eq!(status, 422, "{body}");
}
