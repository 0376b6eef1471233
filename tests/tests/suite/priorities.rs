//! Priorities: workers take more urgent runs first, equal priorities in
//! order, a thread's runs in their order; aging keeps the least urgent from
//! waiting forever; `queue_position` follows the queue.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use switchyard_tests::{Options, SseEvent, TestApp, WAIT};

/// An app whose runs wait for [`TestApp::start_worker`]: one worker, one
/// run at a time.
async fn without_worker(mut options: Options, env: &[(&'static str, &str)]) -> TestApp {
    options.worker = false;
    options
        .env
        .push(("SWITCHYARD_WORKER_CONCURRENCY", "1".into()));
    options
        .env
        .extend(env.iter().map(|(name, value)| (*name, (*value).to_owned())));
    TestApp::spawn_with(options).await
}

/// Start a run of `priority` on `thread_id`; returns the run as answered.
async fn start(app: &TestApp, thread_id: &str, content: &str, priority: i64) -> Value {
    let (status, run) = app
        .post(
            &format!("/v1/threads/{thread_id}/runs"),
            json!({"input": {"content": content}, "priority": priority}),
        )
        .await;
    assert_eq!(status, 202, "{run}");
    assert_eq!(run["priority"], priority, "{run}");
    assert_eq!(run["status"], "queued", "{run}");
    run
}

/// Start a run of `priority` on a thread of its own.
async fn start_alone(app: &TestApp, content: &str, priority: i64) -> Value {
    let thread = app.create_thread(json!({})).await;
    start(app, thread["id"].as_str().unwrap(), content, priority).await
}

fn id(run: &Value) -> String {
    run["id"].as_str().unwrap().to_owned()
}

async fn get_run(app: &TestApp, run_id: &str) -> Value {
    let (status, run) = app.get(&format!("/v1/runs/{run_id}")).await;
    assert_eq!(status, 200, "{run}");
    run
}

async fn positions(app: &TestApp, runs: &[String]) -> Vec<Value> {
    let mut positions = Vec::new();
    for run in runs {
        positions.push(get_run(app, run).await["queue_position"].clone());
    }
    positions
}

/// Wait for every run to complete; the runs' indexes in the order they started.
async fn start_order(app: &TestApp, runs: &[String]) -> Vec<usize> {
    let mut started = Vec::new();
    for (index, run) in runs.iter().enumerate() {
        let done = app.wait_for_run(run).await;
        assert_eq!(done["status"], "completed", "{done}");
        assert_eq!(done["queue_position"], Value::Null, "{done}");
        let at: DateTime<Utc> = done["started_at"].as_str().unwrap().parse().unwrap();
        started.push((at, index));
    }
    started.sort();
    started.into_iter().map(|(_, index)| index).collect()
}

/// The first event of a run's stream: its `run.queued`.
async fn queued_event(app: &TestApp, run_id: &str) -> SseEvent {
    let events = app.stream_events(run_id, None, Some(1)).await;
    assert_eq!(events[0].event, "run.queued", "{events:?}");
    events[0].clone()
}

#[tokio::test]
async fn one_worker_takes_runs_by_priority_then_in_order() {
    let app = without_worker(Options::default(), &[]).await;
    let priorities = [5, 1, 10, 1, 5];
    let mut runs = Vec::new();
    let mut at_creation = Vec::new();
    for (n, priority) in priorities.into_iter().enumerate() {
        let run = start_alone(&app, &format!("run {n}"), priority).await;
        let queued = queued_event(&app, &id(&run)).await;
        assert_eq!(
            queued.data["queue_position"], run["queue_position"],
            "run.queued reports the position the run was created with"
        );
        at_creation.push(run["queue_position"].clone());
        runs.push(id(&run));
    }
    // Each run counts the ready runs ranked ahead of it when it came.
    assert_eq!(at_creation, [0, 0, 2, 1, 3].map(Value::from));
    // Read now, the later arrivals are counted too: 1, 1, 5, 5, 10.
    assert_eq!(
        positions(&app, &runs).await,
        [2, 0, 4, 1, 3].map(Value::from)
    );

    app.start_worker().await;
    assert_eq!(start_order(&app, &runs).await, [1, 3, 0, 4, 2]);
}

#[tokio::test]
async fn queue_positions_follow_the_queue_as_the_worker_takes_runs() {
    // Slow runs: each stays in progress while the test looks.
    let app = without_worker(Options::slow_scripted(60), &[]).await;
    let priorities = [3, 7, 1, 10];
    let mut runs = Vec::new();
    for (n, priority) in priorities.into_iter().enumerate() {
        runs.push(id(&start_alone(
            &app,
            &format!("run {n} of four"),
            priority,
        )
        .await));
    }
    // Taken in the order 2, 0, 1, 3.
    let expected = [2, 0, 1, 3];
    assert_eq!(positions(&app, &runs).await, [1, 2, 0, 3].map(Value::from));

    app.start_worker().await;
    // Statuses only move forward, so a look whose statuses did not change
    // from its start to its end saw one state of the queue.
    let mut seen: BTreeMap<usize, Vec<i64>> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let before = statuses(&app, &runs).await;
        let looked = positions(&app, &runs).await;
        let after = statuses(&app, &runs).await;
        if before == after {
            let queued: Vec<usize> = expected
                .into_iter()
                .filter(|&i| after[i] == "queued")
                .collect();
            for (index, status) in after.iter().enumerate() {
                if status == "queued" {
                    // The queued runs stand in line: 0, 1, 2… in priority order.
                    let place = queued.iter().position(|&i| i == index).unwrap();
                    assert_eq!(looked[index], place, "{after:?} {looked:?}");
                    seen.entry(index).or_default().push(place as i64);
                } else {
                    assert_eq!(looked[index], Value::Null, "{after:?} {looked:?}");
                }
            }
        }
        if after.iter().all(|s| s == "completed") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the runs did not finish: {after:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (index, places) in &seen {
        assert!(
            places.windows(2).all(|w| w[1] <= w[0]),
            "run {index}'s position only decreases: {places:?}"
        );
    }
    assert_eq!(
        seen.get(&3).and_then(|places| places.last()),
        Some(&0),
        "the least urgent run reached the head of the queue: {seen:?}"
    );
    assert_eq!(start_order(&app, &runs).await, expected);
}

async fn statuses(app: &TestApp, runs: &[String]) -> Vec<String> {
    let mut statuses = Vec::new();
    for run in runs {
        statuses.push(
            get_run(app, run).await["status"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    statuses
}

#[tokio::test]
async fn an_old_run_of_priority_ten_is_taken_before_newer_urgent_ones() {
    // Each step of priority counts as 0.2 s of waiting: a priority-10 run
    // ranks as if created 1.8 s later.
    let app = without_worker(
        Options::default(),
        &[("SWITCHYARD_PRIORITY_AGING_SECS", "0.2")],
    )
    .await;
    let old = start_alone(&app, "old and patient", 10).await;
    // Longer than its handicap: it has waited enough.
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    let urgent = start_alone(&app, "urgent", 1).await;
    let also_urgent = start_alone(&app, "also urgent", 1).await;
    let new = start_alone(&app, "new and patient", 10).await;
    assert_eq!(urgent["queue_position"], 1, "behind the old run: {urgent}");
    let runs = [old, urgent, also_urgent, new].map(|run| id(&run));
    assert_eq!(positions(&app, &runs).await, [0, 1, 2, 3].map(Value::from));

    app.start_worker().await;
    assert_eq!(start_order(&app, &runs).await, [0, 1, 2, 3]);
}

#[tokio::test]
async fn a_threads_runs_keep_their_order_and_cancels_move_the_queue() {
    let app = without_worker(Options::default(), &[]).await;
    let thread = app.create_thread(json!({})).await;
    let thread_id = thread["id"].as_str().unwrap();
    let first = start(&app, thread_id, "first on the thread", 5).await;
    // Urgent, but behind the thread's first run.
    let second = start(&app, thread_id, "second on the thread", 1).await;
    assert_eq!(second["queue_position"], 1, "{second}");
    let cancelled = start_alone(&app, "will be cancelled", 1).await;
    let other = start_alone(&app, "another thread", 1).await;
    let runs = [first, second, cancelled, other].map(|run| id(&run));
    // first: behind the two ready urgent runs; second: behind first only
    // (the others came after it); cancelled: first in line; other: behind it.
    assert_eq!(positions(&app, &runs).await, [2, 1, 0, 1].map(Value::from));
    let (_, listed) = app.get(&format!("/v1/threads/{thread_id}/runs")).await;
    let listed: Vec<Value> = listed["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|run| run["queue_position"].clone())
        .collect();
    assert_eq!(listed, [1, 2].map(Value::from), "newest first");

    let (status, body) = app
        .post(&format!("/v1/runs/{}/cancel", runs[2]), json!({}))
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        positions(&app, &runs).await,
        [Value::from(1), Value::from(1), Value::Null, Value::from(0)]
    );

    app.start_worker().await;
    let order: Vec<usize> =
        start_order(&app, &[runs[0].clone(), runs[1].clone(), runs[3].clone()]).await;
    // The urgent run of another thread, then the thread's runs in order.
    assert_eq!(order, [2, 0, 1]);
}

#[tokio::test]
async fn a_bad_priority_is_refused_and_changes_nothing() {
    let app = without_worker(Options::default(), &[]).await;
    let thread = app.create_thread(json!({})).await;
    let thread_id = thread["id"].as_str().unwrap();
    let path = format!("/v1/threads/{thread_id}/runs");
    for priority in [json!(0), json!(11), json!(-1), json!("high"), json!(2.5)] {
        let (status, body) = app
            .post(
                &path,
                json!({"input": {"content": "hi"}, "priority": priority}),
            )
            .await;
        assert_eq!(status, 422, "{priority} → {body}");
        assert_eq!(body["error"]["code"], "validation_failed", "{body}");
    }
    let (_, listed) = app.get(&path).await;
    assert_eq!(listed["runs"], json!([]), "{listed}");
    let (_, messages) = app.get(&format!("/v1/threads/{thread_id}/messages")).await;
    assert_eq!(messages["messages"], json!([]), "{messages}");
    // The default is 5.
    let (status, run) = app.post(&path, json!({"input": {"content": "hi"}})).await;
    assert_eq!(status, 202, "{run}");
    assert_eq!(run["priority"], 5);
}
