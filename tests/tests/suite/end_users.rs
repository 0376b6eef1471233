//! Apps acting for their users: a service key may name the end user each
//! request acts for (`X-Switchyard-End-User` on every surface, `user_id` on
//! the simple chat, `user` on OpenAI's bodies). Everything then belongs
//! to, is isolated for and is limited per that end user, namespaced under
//! the service; anyone else naming a user is refused.

use serde_json::{Value, json};
use switchyard_tests::{Options, SCRIPTED_CATALOG, TestApp, clients};

async fn app_with_keys() -> TestApp {
    TestApp::spawn_with(Options {
        env: vec![("SWITCHYARD_AUTH", "api_key".into())],
        ..Default::default()
    })
    .await
}

fn acting(app: &TestApp, key: &str, end_user: &str) -> reqwest::Client {
    app.client_with_headers(&[
        ("authorization", &format!("Bearer {key}")),
        ("x-switchyard-end-user", end_user),
    ])
}

async fn post(app: &TestApp, client: &reqwest::Client, path: &str, body: Value) -> (u16, Value) {
    app.call(client.post(app.url(path)).json(&body)).await
}

async fn get(app: &TestApp, client: &reqwest::Client, path: &str) -> (u16, Value) {
    app.call(client.get(app.url(path))).await
}

fn ids(list: &Value, field: &str) -> Vec<String> {
    list[field]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn each_end_user_has_their_own_threads_and_runs_on_every_surface() {
    let app = app_with_keys().await;
    let shop = app.service_key("shop").await;
    let other_shop = app.service_key("other-shop").await;
    let alice = acting(&app, &shop, "alice");
    let bob = acting(&app, &shop, "bob");
    let other_alice = acting(&app, &other_shop, "alice");
    let service = app.client_with_token(&shop);

    // The native API, by header.
    let (status, thread) = post(&app, &alice, "/v1/threads", json!({"title": "a's"})).await;
    assert_eq!(status, 201, "{thread}");
    let thread_path = format!("/v1/threads/{}", thread["id"].as_str().unwrap());
    let (status, run) = post(
        &app,
        &alice,
        &format!("{thread_path}/runs"),
        json!({"input": {"content": "Hello"}}),
    )
    .await;
    assert_eq!(status, 202, "{run}");
    let run_path = format!("/v1/runs/{}", run["id"].as_str().unwrap());
    let done = app
        .wait_for_run_as(&alice, run["id"].as_str().unwrap())
        .await;
    assert_eq!(done["status"], "completed");

    // The simple chat, by body; OpenAI's chat completions, by `user`.
    let (status, chat) = app
        .call(
            service
                .post(app.url("/api/chat"))
                .json(&json!({"message": "Hi", "user_id": "alice"})),
        )
        .await;
    assert_eq!(status, 200, "{chat}");
    let (status, completion) = app
        .call(service.post(app.url("/v1/chat/completions")).json(&json!({
            "model": "assistant", "user": "alice",
            "messages": [{"role": "user", "content": "Hey"}]})))
        .await;
    assert_eq!(status, 200, "{completion}");

    let (_, listed) = get(&app, &alice, "/v1/threads").await;
    let alices = ids(&listed, "threads");
    assert_eq!(alices.len(), 3, "all three surfaces made alice's: {listed}");
    assert!(alices.contains(&chat["conversation_id"].as_str().unwrap().to_owned()));

    // Nobody else sees them: bob, the service itself, another service's alice.
    for (who, client) in [
        ("bob", &bob),
        ("the service", &service),
        ("other alice", &other_alice),
    ] {
        let (_, listed) = get(&app, client, "/v1/threads").await;
        assert_eq!(listed["threads"], json!([]), "{who}: {listed}");
        for path in [&thread_path, &run_path] {
            let (status, body) = get(&app, client, path).await;
            assert_eq!(status, 404, "{who} reads {path}: {body}");
        }
        let (status, _) = post(
            &app,
            client,
            &format!("{thread_path}/runs"),
            json!({"input": {"content": "mine now"}}),
        )
        .await;
        assert_eq!(status, 404, "{who} continues alice's thread");
        let (status, _) = app
            .call(client.post(app.url("/api/queue/status")).json(&json!({
                "request_id": chat["request_id"]})))
            .await;
        assert_eq!(status, 404, "{who} asks after alice's request");
    }

    // `/v1/me` tells who a request acts as.
    let (_, me) = get(&app, &alice, "/v1/me").await;
    assert_eq!(me["name"], "alice");
    let (_, service_me) = get(&app, &service, "/v1/me").await;
    assert_eq!(me["service"], service_me["id"]);
    let (_, other_me) = get(&app, &other_alice, "/v1/me").await;
    assert_ne!(
        me["id"], other_me["id"],
        "two services' alice are two people"
    );
}

#[tokio::test]
async fn only_a_service_may_name_an_end_user() {
    let app = app_with_keys().await;
    let person = app.api_key("person", false).await;
    let admin = app.api_key("root", true).await;
    for key in [&person, &admin] {
        let named = acting(&app, key, "alice");
        let (status, body) = post(&app, &named, "/v1/threads", json!({})).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (403, Some("forbidden")),
            "{body}"
        );
        let plain = app.client_with_token(key);
        let (status, body) = app
            .call(
                plain
                    .post(app.url("/api/chat"))
                    .json(&json!({"message": "Hi", "user_id": "alice"})),
            )
            .await;
        assert_eq!(status, 403, "{body}");
        let (status, body) = app
            .call(plain.post(app.url("/v1/chat/completions")).json(&json!({
                "model": "assistant", "user": "alice",
                "messages": [{"role": "user", "content": "Hey"}]})))
            .await;
        assert_eq!(status, 403, "{body}");
        let (_, listed) = app.call(plain.get(app.url("/v1/threads"))).await;
        assert_eq!(
            listed["threads"],
            json!([]),
            "a refused request made nothing"
        );
    }

    // Malformed or contradictory names are refused too, and leave nothing.
    let shop = app.service_key("shop").await;
    for bad in ["", " alice", &"x".repeat(300)] {
        let (status, body) = app
            .call(
                app.client_with_token(&shop)
                    .post(app.url("/api/chat"))
                    .json(&json!({"message": "Hi", "user_id": bad})),
            )
            .await;
        assert_eq!(status, 422, "{bad:?}: {body}");
    }
    let (status, body) = post(
        &app,
        &acting(&app, &shop, "alice"),
        "/api/chat",
        json!({"message": "Hi", "user_id": "bob"}),
    )
    .await;
    assert_eq!(status, 422, "header and body disagree: {body}");
    let (_, listed) = get(&app, &app.client_with_token(&shop), "/v1/threads").await;
    assert_eq!(listed["threads"], json!([]));
}

#[tokio::test]
async fn limits_apply_to_each_end_user() {
    let app = TestApp::spawn_with(Options {
        env: vec![("SWITCHYARD_AUTH", "api_key".into())],
        catalog: format!("{SCRIPTED_CATALOG}\n[limits]\nmessages_per_day = 1\n"),
        ..Default::default()
    })
    .await;
    let shop = app.service_key("shop").await;
    let service = app.client_with_token(&shop);
    let say = |user: &'static str| {
        service
            .post(app.url("/api/chat"))
            .json(&json!({"message": "Hi", "user_id": user}))
    };
    let (status, _) = app.call(say("alice")).await;
    assert_eq!(status, 200);
    let (status, body) = app.call(say("alice")).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["limit"], "messages_per_day");
    let (status, body) = app.call(say("bob")).await;
    assert_eq!(status, 200, "bob has his own allowance: {body}");
}

#[tokio::test]
async fn a_service_has_its_roles_figures_and_each_end_user_everyones() {
    let app = TestApp::spawn_with(Options {
        env: vec![("SWITCHYARD_AUTH", "api_key".into())],
        catalog: format!(
            "{SCRIPTED_CATALOG}\n[limits]\nrequests_per_minute = 2\n\n\
             [limits.roles.service]\nrequests_per_minute = 100\n"
        ),
        ..Default::default()
    })
    .await;
    let shop = app.service_key("shop").await;
    let person = app.client_with_token(&app.api_key("person", false).await);
    for user in ["u1", "u2", "u3"] {
        for _ in 0..2 {
            let (status, body) = get(&app, &acting(&app, &shop, user), "/v1/threads").await;
            assert_eq!(status, 200, "{user}: {body}");
        }
    }
    let (status, body) = get(&app, &acting(&app, &shop, "u1"), "/v1/threads").await;
    assert_eq!(
        (status, &body["error"]["limit"]),
        (429, &json!("requests_per_minute"))
    );
    for expected in [200, 200, 429] {
        let (status, _) = get(&app, &person, "/v1/threads").await;
        assert_eq!(status, expected);
    }
}

#[tokio::test]
async fn a_simple_chat_server_acts_for_two_end_users() {
    let app = app_with_keys().await;
    let key = app.service_key("simple-chat").await;
    let seen = clients::simple_chat(&app.address, &key, &["ann", "ben"]).await;
    for user in ["ann", "ben"] {
        let mine = &seen[user];
        for turn in ["first", "second"] {
            let said = &mine[turn];
            let done = &said["end"]["done"];
            assert!(done.is_object(), "{user} {turn}: {said}");
            assert!(
                said["tokens"].as_i64().unwrap() > 1,
                "streamed in pieces: {said}"
            );
            let run = format!("/v1/runs/{}", done["request_id"].as_str().unwrap());
            let (status, run) = get(&app, &acting(&app, &key, user), &run).await;
            assert_eq!(status, 200, "{run}");
            assert_eq!(run["priority"], 3);
            let (_, messages) = get(
                &app,
                &acting(&app, &key, user),
                &format!(
                    "/v1/threads/{}/messages",
                    done["conversation_id"].as_str().unwrap()
                ),
            )
            .await;
            let answer = messages["messages"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["role"] == "assistant" && m["run_id"] == done["request_id"])
                .unwrap()["content"]
                .clone();
            assert_eq!(said["text"], answer, "the raw tokens make the answer");
        }
        assert_eq!(
            mine["first"]["end"]["done"]["conversation_id"],
            mine["second"]["end"]["done"]["conversation_id"],
            "{user}'s conversation went on"
        );
        let status = &mine["status"];
        assert_eq!(status["status"], "ok");
        assert_eq!(status["provider"], "scripted");
        assert!(status["queue_stats"]["queued"].is_i64(), "{status}");
        assert!(status["queue_stats"]["in_progress"].is_i64(), "{status}");
        assert!(status["active_users"].is_i64(), "{status}");
    }
    assert_ne!(
        seen["ann"]["first"]["end"]["done"]["conversation_id"],
        seen["ben"]["first"]["end"]["done"]["conversation_id"]
    );
    assert_eq!(seen["other_user_asks"]["status"], 404, "{seen}");
    assert_eq!(seen["owner_asks"]["status"], 200, "{seen}");
    assert_eq!(seen["owner_asks"]["body"]["status"], "completed");
}

#[tokio::test]
async fn status_counts_the_queue_and_its_users() {
    // No worker: runs stay queued.
    let app = TestApp::spawn_with(Options {
        env: vec![("SWITCHYARD_AUTH", "api_key".into())],
        worker: false,
        ..Default::default()
    })
    .await;
    let shop = app.service_key("shop").await;
    for user in ["u1", "u2", "u3"] {
        let client = acting(&app, &shop, user);
        let (status, thread) = post(&app, &client, "/v1/threads", json!({})).await;
        assert_eq!(status, 201);
        let (status, _) = post(
            &app,
            &client,
            &format!("/v1/threads/{}/runs", thread["id"].as_str().unwrap()),
            json!({"input": {"content": "wait"}}),
        )
        .await;
        assert_eq!(status, 202);
    }
    let (_, status) = get(&app, &acting(&app, &shop, "u1"), "/api/status").await;
    assert_eq!(
        status["queue_stats"],
        json!({"queued": 3, "in_progress": 0})
    );
    assert_eq!(status["active_users"], 3);
    assert_eq!(status["mine"], json!({"queued": 1, "in_progress": 0}));
    assert_eq!(status["model"], "scripted-1");
}
