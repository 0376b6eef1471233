//! Agents written over the HTTP API: the round trip, validation, conflicts,
//! what a deleted agent still allows, and runs on an agent written this way.
//!
//! Every request is made as the development user `local`, an administrator;
//! the refusal of other users (`403 forbidden`) is unit-tested with the
//! guard in the API crate.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use switchyard_tests::{Options, TestApp};

async fn without_worker() -> TestApp {
    TestApp::spawn_with(Options {
        worker: false,
        ..Default::default()
    })
    .await
}

/// A valid definition of agent `id` on the test catalog's scripted provider.
fn spec(id: &str) -> Value {
    json!({
        "id": id,
        "name": "Billing",
        "description": "Answers billing questions.",
        "provider": "scripted",
        "model": "scripted-1",
        "instructions": "Be brief.",
        "tools": ["current_time"],
    })
}

/// [`spec`] of `billing` with the top-level fields of `patch` replaced.
fn billing_with(patch: Value) -> Value {
    let mut body = spec("billing");
    for (key, value) in patch.as_object().expect("a patch object") {
        body[key] = value.clone();
    }
    body
}

/// [`spec`] of `billing` without `field`.
fn billing_without(field: &str) -> Value {
    let mut body = spec("billing");
    body.as_object_mut()
        .expect("an object")
        .remove(field)
        .expect("the field was there");
    body
}

fn time(value: &Value) -> DateTime<Utc> {
    value
        .as_str()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("an RFC 3339 time, not {value}"))
}

/// Assert an error answer in the contract's shape; returns its message.
fn error_message((status, body): (u16, Value), expected_status: u16, code: &str) -> String {
    assert_eq!(status, expected_status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    body["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("an error message in {body}"))
        .to_owned()
}

async fn agent_ids(app: &TestApp) -> Vec<String> {
    let (status, body) = app.get("/v1/agents").await;
    assert_eq!(status, 200, "{body}");
    body["agents"]
        .as_array()
        .expect("an agent list")
        .iter()
        .map(|a| a["id"].as_str().expect("an id").to_owned())
        .collect()
}

async fn create(app: &TestApp, body: Value) -> Value {
    let (status, agent) = app.post("/v1/agents", body).await;
    assert_eq!(status, 201, "{agent}");
    agent
}

#[tokio::test]
async fn agents_can_be_created_read_listed_updated_and_deleted() {
    let app = without_worker().await;

    let created = create(&app, spec("billing")).await;
    assert_eq!(created["id"], "billing");
    assert_eq!(created["name"], "Billing");
    assert_eq!(created["description"], "Answers billing questions.");
    assert_eq!(created["provider"], "scripted");
    assert_eq!(created["model"], "scripted-1");
    assert_eq!(created["instructions"], "Be brief.");
    assert_eq!(created["tools"], json!(["current_time"]));
    assert_eq!(
        created["workflow"],
        json!({"kind": "single", "handoffs": [], "max_iterations": 8}),
        "workflow defaults"
    );
    assert_eq!(created["context_tokens"], 16000);
    assert_eq!(created["source"], "api");
    assert_eq!(created["created_at"], created["updated_at"]);

    let (status, read) = app.get("/v1/agents/billing").await;
    assert_eq!((status, &read), (200, &created));
    assert_eq!(agent_ids(&app).await, ["assistant", "billing"]);

    // A PUT replaces the definition: the id may be left out, and fields
    // left out take their defaults.
    let (status, updated) = app
        .put(
            "/v1/agents/billing",
            json!({
                "name": "Billing desk",
                "provider": "scripted",
                "model": "scripted-2",
                "instructions": "Be thorough.",
                "workflow": {"kind": "single", "max_iterations": 3},
            }),
        )
        .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["id"], "billing");
    assert_eq!(updated["name"], "Billing desk");
    assert_eq!(updated["model"], "scripted-2");
    assert_eq!(updated["instructions"], "Be thorough.");
    assert_eq!(updated["description"], "");
    assert_eq!(updated["tools"], json!([]));
    assert_eq!(updated["workflow"]["max_iterations"], 3);
    assert_eq!(updated["source"], "api");
    assert_eq!(updated["created_at"], created["created_at"]);
    assert!(
        time(&updated["updated_at"]) > time(&created["updated_at"]),
        "updated_at moves on update: {} then {}",
        created["updated_at"],
        updated["updated_at"]
    );
    let (status, read) = app.get("/v1/agents/billing").await;
    assert_eq!((status, &read), (200, &updated));

    let (status, again) = app
        .put(
            "/v1/agents/billing",
            billing_with(json!({"model": "scripted-3"})),
        )
        .await;
    assert_eq!(
        status, 200,
        "an id equal to the path's is accepted: {again}"
    );
    assert_eq!(again["model"], "scripted-3");

    let (status, body) = app.delete("/v1/agents/billing").await;
    assert_eq!((status, body), (204, Value::Null));
    error_message(app.get("/v1/agents/billing").await, 404, "not_found");
    assert_eq!(agent_ids(&app).await, ["assistant"]);
    error_message(app.delete("/v1/agents/billing").await, 404, "not_found");
    error_message(
        app.put("/v1/agents/billing", spec("billing")).await,
        404,
        "not_found",
    );

    // The id of a deleted agent can be used again, for a new agent.
    let revived = create(&app, spec("billing")).await;
    assert_eq!(revived["model"], "scripted-1");
    assert!(
        time(&revived["created_at"]) > time(&again["updated_at"]),
        "a revived agent is new: {revived}"
    );
    assert_eq!(agent_ids(&app).await, ["assistant", "billing"]);
}

/// Definitions that are refused, what is wrong with them, and what the
/// message must say (its field first).
fn invalid_definitions() -> Vec<(&'static str, Value, &'static [&'static str])> {
    vec![
        (
            "unknown provider",
            billing_with(json!({"provider": "nope"})),
            &["provider: ", "\"nope\""],
        ),
        (
            "unknown tool",
            billing_with(json!({"tools": ["teleport"]})),
            &["tools: ", "\"teleport\""],
        ),
        (
            "tool listed twice",
            billing_with(json!({"tools": ["current_time", "current_time"]})),
            &["tools: ", "twice"],
        ),
        (
            "hand-off to a missing agent",
            billing_with(json!({"workflow": {"kind": "triage", "handoffs": ["ghost"]}})),
            &["workflow.handoffs: ", "\"ghost\""],
        ),
        (
            "hand-off to itself",
            billing_with(json!({"workflow": {"kind": "triage", "handoffs": ["billing"]}})),
            &["workflow.handoffs: ", "itself"],
        ),
        (
            "hand-off listed twice",
            billing_with(
                json!({"workflow": {"kind": "planner", "handoffs": ["assistant", "assistant"]}}),
            ),
            &["workflow.handoffs: ", "twice"],
        ),
        (
            "triage without hand-offs",
            billing_with(json!({"workflow": {"kind": "triage"}})),
            &["workflow.handoffs: ", "triage"],
        ),
        (
            "planner without hand-offs",
            billing_with(json!({"workflow": {"kind": "planner", "handoffs": []}})),
            &["workflow.handoffs: ", "planner"],
        ),
        (
            "single with hand-offs",
            billing_with(json!({"workflow": {"kind": "single", "handoffs": ["assistant"]}})),
            &["workflow.handoffs: "],
        ),
        (
            "id that is not a slug",
            billing_with(json!({"id": "Billing Desk"})),
            &["id: "],
        ),
        (
            "id longer than 63 characters",
            billing_with(json!({"id": "b".repeat(64)})),
            &["id: "],
        ),
        (
            "blank name",
            billing_with(json!({"name": "  "})),
            &["name: "],
        ),
        (
            "empty model",
            billing_with(json!({"model": ""})),
            &["model: "],
        ),
        (
            "max_iterations 0",
            billing_with(json!({"workflow": {"kind": "single", "max_iterations": 0}})),
            &["workflow.max_iterations: "],
        ),
        (
            "context_tokens 0",
            billing_with(json!({"context_tokens": 0})),
            &["context_tokens: "],
        ),
        (
            "unknown field",
            billing_with(json!({"colour": "blue"})),
            &["colour"],
        ),
        (
            "unknown workflow field",
            billing_with(json!({"workflow": {"kind": "single", "loops": 2}})),
            &["workflow", "loops"],
        ),
        (
            "unknown workflow kind",
            billing_with(json!({"workflow": {"kind": "round_robin"}})),
            &["workflow.kind", "round_robin"],
        ),
        (
            "settings of an unknown tool",
            billing_with(json!({"tool_settings": {"teleport": {"range_km": 5}}})),
            &["tool_settings", "teleport"],
        ),
        (
            "tool settings that are not an object",
            billing_with(json!({"tool_settings": "allow everything"})),
            &["tool_settings"],
        ),
        (
            "name of the wrong type",
            billing_with(json!({"name": 5})),
            &["name"],
        ),
        ("no name", billing_without("name"), &["name"]),
        ("no model", billing_without("model"), &["model"]),
        (
            "negative max_iterations",
            billing_with(json!({"workflow": {"kind": "single", "max_iterations": -1}})),
            &["workflow.max_iterations"],
        ),
    ]
}

fn assert_refused(what: &str, answer: (u16, Value), expected: &[&str]) {
    let message = error_message(answer, 422, "validation_failed");
    for part in expected {
        assert!(
            message.contains(part),
            "{what}: the message should contain {part:?}: {message}"
        );
    }
}

#[tokio::test]
async fn invalid_definitions_are_refused_naming_the_field() {
    let app = without_worker().await;

    for (what, body, expected) in invalid_definitions() {
        assert_refused(what, app.post("/v1/agents", body).await, expected);
    }
    assert_refused(
        "no id",
        app.post("/v1/agents", billing_without("id")).await,
        &["id: required"],
    );
    assert_eq!(agent_ids(&app).await, ["assistant"], "nothing was created");

    let billing = create(&app, spec("billing")).await;
    for (what, body, expected) in invalid_definitions() {
        let expected = if body["id"] == "billing" {
            expected
        } else {
            // An id that is not the path's is refused as such.
            &["id: ", "differs from the path"]
        };
        assert_refused(what, app.put("/v1/agents/billing", body).await, expected);
    }
    let (_, read) = app.get("/v1/agents/billing").await;
    assert_eq!(read, billing, "no refused update changed anything");
}

#[tokio::test]
async fn writes_that_conflict_are_refused_with_the_reason() {
    let app = without_worker().await;
    create(&app, spec("billing")).await;

    let message = error_message(
        app.post("/v1/agents", spec("billing")).await,
        409,
        "conflict",
    );
    assert!(message.contains("\"billing\" exists already"), "{message}");
    let message = error_message(
        app.post("/v1/agents", spec("assistant")).await,
        409,
        "conflict",
    );
    assert!(message.contains("\"assistant\""), "{message}");

    // The configuration file's agents are changed in the file.
    let (_, assistant) = app.get("/v1/agents/assistant").await;
    assert_eq!(assistant["source"], "config");
    for answer in [
        app.put("/v1/agents/assistant", spec("assistant")).await,
        app.delete("/v1/agents/assistant").await,
    ] {
        let message = error_message(answer, 409, "conflict");
        assert!(message.contains("configuration file"), "{message}");
    }
    let (_, unchanged) = app.get("/v1/agents/assistant").await;
    assert_eq!(unchanged, assistant);

    // An agent others hand off to stays until they stop.
    for id in ["front-desk", "escalation"] {
        let mut triage = spec(id);
        triage["workflow"] = json!({"kind": "triage", "handoffs": ["billing"]});
        create(&app, triage).await;
    }
    let message = error_message(app.delete("/v1/agents/billing").await, 409, "conflict");
    assert!(
        message.contains("\"escalation\", \"front-desk\""),
        "the message names the agents that hand off to it: {message}"
    );
    assert_eq!(app.get("/v1/agents/billing").await.0, 200);

    let mut escalation = spec("escalation");
    escalation["workflow"] = json!({"kind": "triage", "handoffs": ["assistant"]});
    let (status, body) = app.put("/v1/agents/escalation", escalation).await;
    assert_eq!(status, 200, "{body}");
    let message = error_message(app.delete("/v1/agents/billing").await, 409, "conflict");
    assert!(
        message.contains("\"front-desk\"") && !message.contains("escalation"),
        "{message}"
    );
    assert_eq!(app.delete("/v1/agents/front-desk").await.0, 204);
    assert_eq!(app.delete("/v1/agents/billing").await.0, 204);
}

#[tokio::test]
async fn writes_to_missing_agents_answer_not_found() {
    let app = without_worker().await;
    error_message(app.get("/v1/agents/ghost").await, 404, "not_found");
    error_message(
        app.put("/v1/agents/ghost", spec("ghost")).await,
        404,
        "not_found",
    );
    error_message(app.delete("/v1/agents/ghost").await, 404, "not_found");
    // Whether the agent exists is answered before what is wrong with the body.
    error_message(
        app.put(
            "/v1/agents/ghost",
            json!({"name": "Ghost", "provider": "nope", "model": "m"}),
        )
        .await,
        404,
        "not_found",
    );
    // An id that cannot be a slug names no agent.
    error_message(
        app.put("/v1/agents/Not%20A%20Slug", spec("billing")).await,
        404,
        "not_found",
    );
    assert_eq!(agent_ids(&app).await, ["assistant"]);
}

#[tokio::test]
async fn a_deleted_agent_takes_no_new_threads_or_runs_but_its_threads_stay_readable() {
    let app = without_worker().await;
    create(&app, spec("billing")).await;
    let thread = app.create_thread(json!({"agent_id": "billing"})).await;
    let thread_id = thread["id"].as_str().expect("a thread id");
    let run = app.start_run(thread_id, "Where is my invoice?").await;
    let other = app.create_thread(json!({})).await;
    let other_id = other["id"].as_str().expect("a thread id");

    assert_eq!(app.delete("/v1/agents/billing").await.0, 204);

    error_message(app.get("/v1/agents/billing").await, 404, "not_found");
    assert_eq!(agent_ids(&app).await, ["assistant"]);
    let refusals = [
        (
            "a thread on it",
            app.post("/v1/threads", json!({"agent_id": "billing"})).await,
        ),
        (
            "a run on its thread",
            app.post(
                &format!("/v1/threads/{thread_id}/runs"),
                json!({"input": {"content": "Hello?"}}),
            )
            .await,
        ),
        (
            "a run on its thread with another model",
            app.post(
                &format!("/v1/threads/{thread_id}/runs"),
                json!({"input": {"content": "Hello?"}, "model": "scripted-2"}),
            )
            .await,
        ),
        (
            "a run on another thread naming it",
            app.post(
                &format!("/v1/threads/{other_id}/runs"),
                json!({"input": {"content": "Hello?"}, "agent_id": "billing"}),
            )
            .await,
        ),
        (
            "a hand-off to it",
            app.post(
                "/v1/agents",
                billing_with(
                    json!({"id": "front-desk", "workflow": {"kind": "triage", "handoffs": ["billing"]}}),
                ),
            )
            .await,
        ),
    ];
    for (what, answer) in refusals {
        let message = error_message(answer, 422, "validation_failed");
        assert!(message.contains("\"billing\""), "{what}: {message}");
    }

    // What was written on it before stays readable.
    let (status, read) = app.get(&format!("/v1/threads/{thread_id}")).await;
    assert_eq!(status, 200, "{read}");
    assert_eq!(read["agent_id"], "billing");
    let (status, list) = app.get("/v1/threads?agent_id=billing").await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["threads"][0]["id"], thread["id"]);
    let (status, messages) = app.get(&format!("/v1/threads/{thread_id}/messages")).await;
    assert_eq!(status, 200, "{messages}");
    assert_eq!(messages["messages"][0]["content"], "Where is my invoice?");
    let (status, runs) = app.get(&format!("/v1/threads/{thread_id}/runs")).await;
    assert_eq!(status, 200, "{runs}");
    assert_eq!(runs["runs"].as_array().map(Vec::len), Some(1), "{runs}");
    let (status, read_run) = app
        .get(&format!("/v1/runs/{}", run["id"].as_str().unwrap()))
        .await;
    assert_eq!(status, 200, "{read_run}");
    assert_eq!(read_run["agent_id"], "billing");
}

/// Start a run on a new thread of `agent_id` and wait for its end.
async fn run_on(app: &TestApp, agent_id: &str, content: &str) -> Value {
    let thread = app.create_thread(json!({"agent_id": agent_id})).await;
    let run = app
        .start_run(thread["id"].as_str().expect("a thread id"), content)
        .await;
    app.wait_for_run(run["id"].as_str().expect("a run id"))
        .await
}

#[tokio::test]
async fn an_agent_written_over_the_api_runs_and_its_update_applies_to_the_next_run() {
    let app = TestApp::spawn().await;
    let mut echo = spec("echo");
    echo["model"] = json!("scripted-2");
    echo["instructions"] = json!("Be brief.");
    create(&app, echo.clone()).await;

    let first = run_on(&app, "echo", "hello").await;
    assert_eq!(first["status"], "completed", "{first}");
    assert_eq!(first["agent_id"], "echo");
    assert_eq!(first["model"], "scripted-2");

    echo["model"] = json!("scripted-3");
    echo["instructions"] = json!("Answer every question politely and briefly.");
    let (status, body) = app.put("/v1/agents/echo", echo).await;
    assert_eq!(status, 200, "{body}");

    let second = run_on(&app, "echo", "hello").await;
    assert_eq!(second["status"], "completed", "{second}");
    assert_eq!(second["model"], "scripted-3");
    // The scripted model counts the words of its prompt: the same question
    // under the new instructions is four words longer.
    let input = |run: &Value| run["usage"]["input_tokens"].as_i64().expect("input tokens");
    assert_eq!(
        input(&second) - input(&first),
        4,
        "the new instructions are used: {first} then {second}"
    );
}

#[tokio::test]
async fn the_openapi_document_describes_the_agent_writes() {
    let app = without_worker().await;
    let (status, doc) = app.get("/openapi.json").await;
    assert_eq!(status, 200);
    let operations = [
        (
            "/v1/agents",
            "post",
            &["201", "403", "409", "422"][..],
            true,
        ),
        (
            "/v1/agents/{agent_id}",
            "put",
            &["200", "403", "404", "409", "422"][..],
            true,
        ),
        (
            "/v1/agents/{agent_id}",
            "delete",
            &["204", "403", "404", "409"][..],
            false,
        ),
    ];
    for (path, method, statuses, has_body) in operations {
        let operation = &doc["paths"][path][method];
        assert!(operation.is_object(), "{method} {path} is documented");
        for status in statuses {
            assert!(
                operation["responses"][status].is_object(),
                "{method} {path} documents {status}: {operation}"
            );
        }
        if has_body {
            assert_eq!(
                operation["requestBody"]["content"]["application/json"]["schema"]["$ref"],
                "#/components/schemas/AgentSpec",
                "{method} {path}"
            );
        }
    }
    for field in [
        "id",
        "name",
        "provider",
        "model",
        "workflow",
        "tool_settings",
    ] {
        assert!(
            doc["components"]["schemas"]["AgentSpec"]["properties"][field].is_object(),
            "AgentSpec documents {field}"
        );
    }
}

/// A run may name another model only when its agent allows that model: a
/// caller cannot pick a costlier one than the administrator chose.
#[tokio::test]
async fn a_run_names_only_the_models_its_agent_allows() {
    let app = without_worker().await;
    let (status, bad) = app
        .post("/v1/agents", billing_with(json!({"allowed_models": [""]})))
        .await;
    assert_eq!(status, 422, "{bad}");
    let (status, agent) = app
        .post(
            "/v1/agents",
            billing_with(json!({"allowed_models": ["scripted-2"]})),
        )
        .await;
    assert_eq!(status, 201, "{agent}");
    assert_eq!(agent["allowed_models"], json!(["scripted-2"]));
    let thread = app.create_thread(json!({"agent_id": "billing"})).await;
    let runs = format!("/v1/threads/{}/runs", thread["id"].as_str().unwrap());
    let run_with = |model: &str| json!({"input": {"content": "Hi"}, "model": model});

    let (status, run) = app.post(&runs, run_with("scripted-2")).await;
    assert_eq!(
        (status, &run["model"]),
        (202, &json!("scripted-2")),
        "{run}"
    );
    let (status, run) = app.post(&runs, run_with("scripted-1")).await;
    assert_eq!(
        (status, &run["model"]),
        (202, &json!("scripted-1")),
        "{run}"
    );
    let message = error_message(
        app.post(&runs, run_with("gpt-5-pro")).await,
        422,
        "validation_failed",
    );
    assert!(message.contains("scripted-2"), "{message}");

    // The test catalog's agent allows no other model.
    let other = app.create_thread(json!({})).await;
    let (status, body) = app
        .post(
            &format!("/v1/threads/{}/runs", other["id"].as_str().unwrap()),
            run_with("scripted-2"),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    let (_, listed) = app.get(&runs).await;
    assert_eq!(
        listed["runs"].as_array().unwrap().len(),
        2,
        "refused runs left nothing"
    );
}
