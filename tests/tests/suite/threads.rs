//! Threads and messages through the HTTP API.

use serde_json::json;
use switchyard_tests::{Options, TestApp};

#[tokio::test]
async fn threads_can_be_created_read_updated_and_deleted() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    let thread = app
        .create_thread(json!({"title": "Planning", "metadata": {"customer": 42}}))
        .await;
    assert_eq!(thread["agent_id"], "assistant");
    assert_eq!(thread["title"], "Planning");
    assert_eq!(thread["metadata"], json!({"customer": 42}));
    assert_eq!(thread["status"], "idle");
    let id = thread["id"].as_str().unwrap();

    let (status, read) = app.get(&format!("/v1/threads/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(read, thread);

    let (status, updated) = app
        .call(
            app.http
                .patch(app.url(&format!("/v1/threads/{id}")))
                .json(&json!({"title": "Renamed"})),
        )
        .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["title"], "Renamed");
    assert_eq!(
        updated["metadata"],
        json!({"customer": 42}),
        "absent fields are kept"
    );
    let (_, read) = app.get(&format!("/v1/threads/{id}")).await;
    assert_eq!(
        read["title"], "Renamed",
        "the cached copy follows the update"
    );

    let (status, _) = app
        .call(app.http.delete(app.url(&format!("/v1/threads/{id}"))))
        .await;
    assert_eq!(status, 204);
    let (status, error) = app.get(&format!("/v1/threads/{id}")).await;
    assert_eq!(status, 404);
    assert_eq!(error["error"]["code"], "not_found");
    let (_, list) = app.get("/v1/threads").await;
    assert!(
        list["threads"].as_array().unwrap().is_empty(),
        "a soft-deleted thread is hidden from lists"
    );
    let (status, _) = app
        .call(app.http.delete(app.url(&format!("/v1/threads/{id}"))))
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn hard_delete_removes_the_thread_and_everything_under_it() {
    let app = TestApp::spawn().await;
    let thread = app.create_thread(json!({})).await;
    let id = thread["id"].as_str().unwrap();
    let run = app.start_run(id, "to be forgotten").await;
    let run_id = run["id"].as_str().unwrap();
    app.wait_for_run(run_id).await;

    let (status, _) = app
        .call(
            app.http
                .delete(app.url(&format!("/v1/threads/{id}?hard=true"))),
        )
        .await;
    assert_eq!(status, 204);
    for table in ["threads", "messages", "runs", "steps", "run_events"] {
        let column = if table == "threads" {
            "id"
        } else if table == "messages" || table == "runs" {
            "thread_id"
        } else {
            "run_id"
        };
        let value = if column == "run_id" { run_id } else { id };
        let count: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "select count(*) from {table} where {column} = '{value}'::uuid"
        )))
        .fetch_one(&app.pool)
        .await
        .unwrap();
        assert_eq!(count, 0, "{table} still has rows");
    }
    let thread_keys: Vec<String> = app
        .redis_keys()
        .await
        .into_iter()
        .filter(|k| k.contains(id) && !k.ends_with(&format!("thread:{id}")))
        .collect();
    assert!(
        thread_keys.is_empty(),
        "cache entries remain: {thread_keys:?}"
    );
    let (status, _) = app.get(&format!("/v1/threads/{id}")).await;
    assert_eq!(status, 404);
    let (status, _) = app.get(&format!("/v1/runs/{run_id}")).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn thread_lists_are_newest_first_paginated_filtered_and_searchable() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    let mut ids = Vec::new();
    for i in 0..7 {
        let thread = app
            .create_thread(json!({"title": format!("thread {i}")}))
            .await;
        ids.push(thread["id"].as_str().unwrap().to_owned());
    }
    ids.reverse();

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/threads?limit=3&cursor={c}"),
            None => "/v1/threads?limit=3".to_owned(),
        };
        let (status, page) = app.get(&path).await;
        assert_eq!(status, 200, "{page}");
        let threads = page["threads"].as_array().unwrap();
        assert!(threads.len() <= 3);
        seen.extend(threads.iter().map(|t| t["id"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, ids, "every thread once, newest first");

    let (_, found) = app.get("/v1/threads?q=THREAD%203").await;
    let titles: Vec<&str> = found["threads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles, ["thread 3"]);
    let searchable = &ids[0];
    app.start_run(searchable, "the word is xylophone").await;
    let (_, found) = app.get("/v1/threads?q=xylo").await;
    assert_eq!(
        found["threads"][0]["id"].as_str(),
        Some(searchable.as_str()),
        "message text is searched too"
    );
    let (_, none) = app.get("/v1/threads?q=100%25_").await;
    assert!(
        none["threads"].as_array().unwrap().is_empty(),
        "LIKE wildcards are literal"
    );
    let (_, by_agent) = app.get("/v1/threads?agent_id=assistant&limit=100").await;
    assert_eq!(by_agent["threads"].as_array().unwrap().len(), 7);
    let (_, by_other) = app.get("/v1/threads?agent_id=other").await;
    assert!(by_other["threads"].as_array().unwrap().is_empty());

    for bad in [
        "/v1/threads?limit=0",
        "/v1/threads?limit=101",
        "/v1/threads?limit=x",
        "/v1/threads?cursor=nope",
        "/v1/threads?sort=asc",
    ] {
        let (status, error) = app.get(bad).await;
        assert_eq!(status, 422, "{bad}: {error}");
        assert_eq!(error["error"]["code"], "validation_failed");
    }
}

#[tokio::test]
async fn messages_page_backwards_from_the_newest_oldest_first_within_a_page() {
    let app = TestApp::spawn().await;
    let thread = app.create_thread(json!({})).await;
    let id = thread["id"].as_str().unwrap();
    for i in 0..3 {
        let run = app.start_run(id, &format!("question {i}")).await;
        app.wait_for_run(run["id"].as_str().unwrap()).await;
    }
    let (_, all) = app
        .get(&format!("/v1/threads/{id}/messages?limit=100"))
        .await;
    let all = all["messages"].as_array().unwrap().clone();
    assert_eq!(all.len(), 6);
    assert_eq!(all[0]["content"], "question 0");

    let (_, page) = app.get(&format!("/v1/threads/{id}/messages?limit=4")).await;
    assert_eq!(page["messages"].as_array().unwrap().as_slice(), &all[2..]);
    let before = page["next_cursor"].as_str().expect("a next page");
    let (_, older) = app
        .get(&format!(
            "/v1/threads/{id}/messages?limit=4&before={before}"
        ))
        .await;
    assert_eq!(older["messages"].as_array().unwrap().as_slice(), &all[..2]);
    assert!(older["next_cursor"].is_null());

    // The same answers with the cache gone.
    app.flush_redis().await;
    let (_, page_again) = app.get(&format!("/v1/threads/{id}/messages?limit=4")).await;
    assert_eq!(page_again, page);
}

#[tokio::test]
async fn bad_thread_requests_are_refused_in_the_contract_shape() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    for (body, code) in [
        (json!({"agent_id": "nobody"}), "validation_failed"),
        (json!({"metadata": [1, 2]}), "validation_failed"),
        (json!({"title": "x".repeat(257)}), "validation_failed"),
        (json!({"owner": "me"}), "validation_failed"),
    ] {
        let (status, error) = app.post("/v1/threads", body.clone()).await;
        assert_eq!(
            (status, error["error"]["code"].as_str()),
            (422, Some(code)),
            "{body}"
        );
    }
    let (status, error) = app
        .call(
            app.http
                .post(app.url("/v1/threads"))
                .header("content-type", "text/plain")
                .body("{}"),
        )
        .await;
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (400, Some("bad_request"))
    );
    let (status, error) = app
        .call(
            app.http
                .post(app.url("/v1/threads"))
                .header("content-type", "application/json")
                .body(vec![b' '; 2 * 1024 * 1024]),
        )
        .await;
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (413, Some("payload_too_large"))
    );
    let (status, error) = app.get("/v1/nowhere").await;
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let (_, list) = app.get("/v1/threads").await;
    assert!(
        list["threads"].as_array().unwrap().is_empty(),
        "nothing was created"
    );
}

#[tokio::test]
async fn a_flushed_cache_never_changes_what_a_reader_sees() {
    let app = TestApp::spawn().await;
    let thread = app.create_thread(json!({"title": "cached"})).await;
    let id = thread["id"].as_str().unwrap();
    let run = app.start_run(id, "hello cache").await;
    app.wait_for_run(run["id"].as_str().unwrap()).await;
    let (_, warm) = app.get(&format!("/v1/threads/{id}")).await;
    let (_, warm_messages) = app.get(&format!("/v1/threads/{id}/messages")).await;
    app.flush_redis().await;
    let (_, cold) = app.get(&format!("/v1/threads/{id}")).await;
    let (_, cold_messages) = app.get(&format!("/v1/threads/{id}/messages")).await;
    assert_eq!(warm, cold);
    assert_eq!(warm_messages, cold_messages);
    // A run after the flush still sees the whole history (cache-aside reload).
    let run = app.start_run(id, "second").await;
    assert_eq!(
        app.wait_for_run(run["id"].as_str().unwrap()).await["status"],
        "completed"
    );
    let (_, messages) = app.get(&format!("/v1/threads/{id}/messages")).await;
    assert_eq!(messages["messages"].as_array().unwrap().len(), 4);
    // And the database agrees with the cache.
    app.flush_redis().await;
    let (_, from_db) = app.get(&format!("/v1/threads/{id}/messages")).await;
    assert_eq!(messages, from_db);
}
