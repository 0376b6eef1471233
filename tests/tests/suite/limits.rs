//! Per-user limits and resource bounds: each limit reached answers
//! `429 rate_limited` with `Retry-After` and the limit's name and stores
//! nothing; one user's flood leaves another user's requests alone.

use std::time::Duration;

use serde_json::{Value, json};
use switchyard_tests::{Options, SCRIPTED_CATALOG, TestApp, WAIT};

async fn app_with_limits(limits: &str, worker: bool) -> TestApp {
    TestApp::spawn_with(Options {
        catalog: format!("{SCRIPTED_CATALOG}\n{limits}"),
        worker,
        env: vec![("SWITCHYARD_AUTH", "api_key".into())],
        ..Options::default()
    })
    .await
}

/// Check a refusal: status, code, limit name, and `Retry-After` within
/// `retry_range` seconds.
fn assert_limited(
    response: &(u16, Value, Option<u64>),
    limit: &str,
    retry_range: std::ops::RangeInclusive<u64>,
) {
    let (status, body, retry_after) = response;
    assert_eq!(*status, 429, "{body}");
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    assert_eq!(body["error"]["limit"], limit, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains(limit),
        "{body}"
    );
    let retry_after = retry_after.expect("Retry-After is set");
    assert!(
        retry_range.contains(&retry_after),
        "Retry-After {retry_after} not in {retry_range:?}"
    );
}

/// Send and keep the `Retry-After` header too.
async fn send(request: reqwest::RequestBuilder) -> (u16, Value, Option<u64>) {
    let response = request.send().await.expect("the API answers");
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse().expect("whole seconds"));
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body, retry_after)
}

async fn new_thread(app: &TestApp, client: &reqwest::Client) -> String {
    let (status, thread) = app
        .call(client.post(app.url("/v1/threads")).json(&json!({})))
        .await;
    assert_eq!(status, 201, "{thread}");
    thread["id"].as_str().unwrap().to_owned()
}

fn start_run(app: &TestApp, client: &reqwest::Client, thread: &str) -> reqwest::RequestBuilder {
    client
        .post(app.url(&format!("/v1/threads/{thread}/runs")))
        .json(&json!({"input": {"content": "Hello"}}))
}

#[tokio::test]
async fn requests_per_minute_hold_per_user_and_a_flood_does_not_touch_others() {
    let app = app_with_limits(
        "[limits]\nrequests_per_minute = 10\n[limits.roles.admin]\nrequests_per_minute = 1000\n",
        false,
    )
    .await;
    let flooder = app.client_with_token(&app.api_key("flooder", false).await);
    let bystander = app.client_with_token(&app.api_key("bystander", false).await);
    let admin = app.client_with_token(&app.api_key("operator", true).await);

    // The flooder fires 60 requests at once: 10 pass, the rest are refused.
    let flood =
        futures::future::join_all((0..60).map(|_| send(flooder.get(app.url("/v1/threads"))))).await;
    let passed = flood.iter().filter(|r| r.0 == 200).count();
    assert_eq!(passed, 10, "a minute's allowance passes, no more");
    let refused: Vec<_> = flood.iter().filter(|r| r.0 != 200).collect();
    // One request is allowed every 6 s once the allowance is spent.
    for response in &refused {
        assert_limited(response, "requests_per_minute", 1..=6);
    }

    // The bystander's requests all succeed meanwhile, as do the admin's,
    // whose role allows more.
    for _ in 0..10 {
        assert_eq!(send(bystander.get(app.url("/v1/threads"))).await.0, 200);
    }
    for _ in 0..30 {
        assert_eq!(send(admin.get(app.url("/v1/me"))).await.0, 200);
    }
    // The flooder is still held back.
    assert_eq!(send(flooder.get(app.url("/v1/me"))).await.0, 429);
    // Unauthenticated service routes are not counted against anyone.
    assert_eq!(app.get("/health").await.0, 200);
}

#[tokio::test]
async fn messages_per_day_count_stored_messages_only() {
    let app = app_with_limits("[limits]\nmessages_per_day = 2\n", false).await;
    let user = app.client_with_token(&app.api_key("chatty", false).await);
    let thread = new_thread(&app, &user).await;

    // A refused request (no such thread) uses nothing up.
    let missing = start_run(&app, &user, "0193a5a0-0000-7000-8000-000000000000");
    assert_eq!(send(missing).await.0, 404);
    for _ in 0..2 {
        let (status, body, _) = send(start_run(&app, &user, &thread)).await;
        assert_eq!(status, 202, "{body}");
    }
    let third = send(start_run(&app, &user, &thread)).await;
    // The oldest message leaves the 24-hour window in about a day.
    assert_limited(&third, "messages_per_day", 86_000..=86_400);
    assert_eq!(app.count("select count(*) from messages").await, 2);
    assert_eq!(app.count("select count(*) from runs").await, 2);

    // Another user has their own allowance.
    let other = app.client_with_token(&app.api_key("quiet", false).await);
    let thread = new_thread(&app, &other).await;
    assert_eq!(send(start_run(&app, &other, &thread)).await.0, 202);
}

#[tokio::test]
async fn active_runs_are_bounded_per_user() {
    // No worker: runs stay queued, so they stay active.
    let app = app_with_limits("[limits]\nactive_runs = 2\n", false).await;
    let user = app.client_with_token(&app.api_key("busy", false).await);
    for _ in 0..2 {
        let thread = new_thread(&app, &user).await;
        assert_eq!(send(start_run(&app, &user, &thread)).await.0, 202);
    }
    let thread = new_thread(&app, &user).await;
    let refused = send(start_run(&app, &user, &thread)).await;
    assert_limited(&refused, "active_runs", 1..=10);
    assert_eq!(app.count("select count(*) from runs").await, 2);
    assert_eq!(
        app.count("select count(*) from messages").await,
        2,
        "the refused run's message is not stored"
    );

    // Cancelling one frees a place.
    let (_, runs) = app
        .call(user.get(app.url(&format!(
            "/v1/threads/{}/runs",
            sqlx::query_scalar::<_, uuid::Uuid>("select thread_id from runs limit 1")
                .fetch_one(&app.pool)
                .await
                .unwrap()
        ))))
        .await;
    let run_id = runs["runs"][0]["id"].as_str().unwrap().to_owned();
    let (status, _) = app
        .call(user.post(app.url(&format!("/v1/runs/{run_id}/cancel"))))
        .await;
    assert_eq!(status, 202);
    assert_eq!(send(start_run(&app, &user, &thread)).await.0, 202);
}

#[tokio::test]
async fn the_daily_token_budget_stops_new_runs() {
    let app = app_with_limits("[limits]\ntokens_per_day = 5\n", true).await;
    let user = app.client_with_token(&app.api_key("spender", false).await);
    let thread = new_thread(&app, &user).await;
    let (status, run, _) = send(start_run(&app, &user, &thread)).await;
    assert_eq!(status, 202, "{run}");
    let run = app
        .wait_for_run_as(&user, run["id"].as_str().unwrap())
        .await;
    let used = run["usage"]["input_tokens"].as_i64().unwrap()
        + run["usage"]["output_tokens"].as_i64().unwrap();
    assert!(used >= 5, "the first run spends the budget: {run}");

    let refused = send(start_run(&app, &user, &thread)).await;
    // Until the next midnight, UTC.
    assert_limited(&refused, "tokens_per_day", 1..=86_400);
    assert!(
        refused.1["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&format!("{used} of 5 tokens")),
        "{}",
        refused.1
    );
    assert_eq!(app.count("select count(*) from runs").await, 1);
}

#[tokio::test]
async fn open_event_streams_are_bounded_and_given_back() {
    let app = TestApp::spawn_with(Options {
        catalog: format!(
            "{}\n[limits]\nopen_streams = 1\n",
            Options::slow_scripted(400).catalog
        ),
        env: vec![("SWITCHYARD_AUTH", "api_key".into())],
        ..Options::default()
    })
    .await;
    let user = app.client_with_token(&app.api_key("watcher", false).await);
    let thread = new_thread(&app, &user).await;
    let (status, run, _) = send(start_run(&app, &user, &thread)).await;
    assert_eq!(status, 202, "{run}");
    let events = app.url(&format!("/v1/runs/{}/events", run["id"].as_str().unwrap()));

    let first = user.get(&events).send().await.unwrap();
    assert_eq!(first.status(), 200);
    let second = send(user.get(&events)).await;
    assert_limited(&second, "open_streams", 1..=10);
    // A streamed run start needs a stream too, and is refused before
    // anything is stored.
    let runs_before = app.count("select count(*) from runs").await;
    let streamed = send(
        user.post(app.url(&format!("/v1/threads/{thread}/runs")))
            .json(&json!({"input": {"content": "again"}, "stream": true})),
    )
    .await;
    assert_limited(&streamed, "open_streams", 1..=10);
    assert_eq!(app.count("select count(*) from runs").await, runs_before);

    // Closing the first stream gives its place back.
    drop(first);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let response = user.get(&events).send().await.unwrap();
        if response.status() == 200 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slot never came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn oversized_requests_get_clear_errors() {
    let app = TestApp::spawn().await;
    let thread = app.create_thread(json!({})).await;
    let runs = format!("/v1/threads/{}/runs", thread["id"].as_str().unwrap());

    // A body over 1 MiB.
    let huge = "x".repeat(1024 * 1024 + 10);
    let (status, body) = app.post(&runs, json!({"input": {"content": huge}})).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["code"], "payload_too_large");

    // A message over the configured length.
    let long = "y".repeat(app.config.max_message_chars + 1);
    let (status, body) = app.post(&runs, json!({"input": {"content": long}})).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "validation_failed");

    // Page sizes.
    for path in [
        "/v1/threads?limit=101",
        "/v1/threads?limit=0",
        &format!("{runs}?limit=500"),
    ] {
        let (status, body) = app.get(path).await;
        assert_eq!(status, 422, "{path}: {body}");
        assert_eq!(body["error"]["code"], "validation_failed");
    }

    // Too many headers, and headers too large.
    let mut many = app.http.get(app.url("/v1/threads"));
    for i in 0..80 {
        many = many.header(format!("x-filler-{i}"), "1");
    }
    let (status, body) = app.call(many).await;
    assert_eq!(status, 431, "{body}");
    assert_eq!(body["error"]["code"], "payload_too_large");
    let big = app
        .http
        .get(app.url("/v1/threads"))
        .header("x-big", "z".repeat(40 * 1024));
    let (status, body) = app.call(big).await;
    assert_eq!(status, 431, "{body}");

    // Nothing was stored by any of it.
    assert_eq!(app.count("select count(*) from runs").await, 0);
}

#[tokio::test]
async fn the_compatible_surfaces_count_against_the_same_limits() {
    let app = app_with_limits("[limits]\nmessages_per_day = 1\n", true).await;
    let user = app.client_with_token(&app.api_key("everywhere", false).await);
    let (status, body) = app
        .call(user.post(app.url("/v1/chat/completions")).json(&json!({
            "model": "assistant",
            "messages": [{"role": "user", "content": "Hi"}],
        })))
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, conversation) = app
        .call(user.post(app.url("/api/conversations")).json(&json!({})))
        .await;
    assert_eq!(status, 201);
    let conversation = conversation["id"].as_str().unwrap();

    let hi = json!({"id": "u1", "role": "user", "parts": [{"type": "text", "text": "Hi"}]});
    let refused = [
        (
            "/v1/chat/completions".to_owned(),
            json!({"model": "assistant", "messages": [{"role": "user", "content": "Hi"}]}),
        ),
        (
            "/api/agents/assistant/chat".to_owned(),
            json!({"message": "Hi", "stream": false}),
        ),
        ("/api/chat".to_owned(), json!({"message": "Hi"})),
        ("/api/chat/stream".to_owned(), json!({"message": "Hi"})),
        (
            "/api/chat".to_owned(),
            json!({"id": "c1", "messages": [hi]}),
        ),
        (
            format!("/api/conversations/{conversation}/messages"),
            json!({"message": "Hi"}),
        ),
    ];
    for (path, body) in refused {
        let response = send(user.post(app.url(&path)).json(&body)).await;
        assert_limited(&response, "messages_per_day", 86_000..=86_400);
    }
    // Refused calls leave no thread behind: the first call's and the
    // conversation's only.
    assert_eq!(app.count("select count(*) from threads").await, 2);
    assert_eq!(
        app.count("select count(*) from messages where role = 'user'")
            .await,
        1
    );
}

#[tokio::test]
async fn the_most_urgent_priorities_are_kept_for_the_roles_that_may_use_them() {
    let app = app_with_limits(
        "[limits]\nmost_urgent_priority = 3\n\n[limits.roles.admin]\nmost_urgent_priority = 1\n",
        false,
    )
    .await;
    let user = app.client_with_token(&app.api_key("someone", false).await);
    let admin = app.client_with_token(&app.api_key("root", true).await);
    let run = |client: &reqwest::Client, thread: &str, priority: Option<i16>| {
        let mut body = json!({"input": {"content": "Hi"}, "multitask": "enqueue"});
        if let Some(priority) = priority {
            body["priority"] = json!(priority);
        }
        client
            .post(app.url(&format!("/v1/threads/{thread}/runs")))
            .json(&body)
    };
    let mine = new_thread(&app, &user).await;
    let (status, body, _) = send(run(&user, &mine, Some(1))).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("forbidden")),
        "{body}"
    );
    let (status, body, _) = send(run(&user, &mine, Some(3))).await;
    assert_eq!((status, &body["priority"]), (202, &json!(3)), "{body}");
    let (status, body, _) = send(run(&user, &mine, None)).await;
    assert_eq!(
        (status, &body["priority"]),
        (202, &json!(5)),
        "the default stays 5"
    );
    let simple = user
        .post(app.url("/api/chat/stream"))
        .json(&json!({"message": "Hi", "priority": 2}));
    let (status, body, _) = send(simple).await;
    assert_eq!(status, 403, "every surface: {body}");

    let theirs = new_thread(&app, &admin).await;
    let (status, body, _) = send(run(&admin, &theirs, Some(1))).await;
    assert_eq!((status, &body["priority"]), (202, &json!(1)), "{body}");
    assert_eq!(
        app.count("select count(*) from runs").await,
        3,
        "the refused runs left nothing"
    );
}

#[tokio::test]
async fn the_default_priority_gives_way_to_a_less_urgent_floor() {
    let app = app_with_limits("[limits]\nmost_urgent_priority = 7\n", false).await;
    let user = app.client_with_token(&app.api_key("someone", false).await);
    let thread = new_thread(&app, &user).await;
    let (status, body, _) = send(
        user.post(app.url(&format!("/v1/threads/{thread}/runs")))
            .json(&json!({"input": {"content": "Hi"}})),
    )
    .await;
    assert_eq!((status, &body["priority"]), (202, &json!(7)), "{body}");
}
