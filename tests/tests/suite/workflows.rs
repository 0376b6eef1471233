//! Workflows end to end on the built-in catalog's scripted agents: the
//! events and steps of triage and planner runs, in order; usage and cost.

use serde_json::{Value, json};
use switchyard_common::config::BUILTIN_CATALOG;
use switchyard_tests::{Options, SseEvent, TestApp, deltas_of};

async fn builtin_app() -> TestApp {
    TestApp::spawn_with(Options {
        catalog: BUILTIN_CATALOG.replace("chunk_delay_ms = 15", "chunk_delay_ms = 0"),
        ..Default::default()
    })
    .await
}

/// Run `content` on a new thread of `agent`; the run, its events and steps.
async fn run_on(app: &TestApp, agent: &str, content: &str) -> (Value, Vec<SseEvent>, Vec<Value>) {
    let thread = app.create_thread(json!({"agent_id": agent})).await;
    let run = app.start_run(thread["id"].as_str().unwrap(), content).await;
    let run_id = run["id"].as_str().unwrap();
    let events = app.stream_events(run_id, None, None).await;
    let run = app.wait_for_run(run_id).await;
    let (status, steps) = app.get(&format!("/v1/runs/{run_id}/steps")).await;
    assert_eq!(status, 200, "{steps}");
    (run, events, steps["steps"].as_array().unwrap().clone())
}

/// The events without deltas, as `kind` or `kind:agent-or-tool`.
fn outline(events: &[SseEvent]) -> Vec<String> {
    let mut outline: Vec<String> = Vec::new();
    for event in events {
        let name = event.data["agent"]
            .as_str()
            .or(event.data["tool"].as_str())
            .map(|name| format!("{}:{name}", event.event))
            .unwrap_or_else(|| event.event.clone());
        // Deltas come in bursts; one entry per burst.
        if !(name == "message.delta" && outline.last().is_some_and(|l| *l == name)) {
            outline.push(name);
        }
    }
    outline
}

/// Steps as `kind:name^parent-kind:parent-name`.
fn step_tree(steps: &[Value]) -> Vec<String> {
    let label = |s: &Value| {
        format!(
            "{}:{}",
            s["kind"].as_str().unwrap(),
            s["name"].as_str().unwrap()
        )
    };
    steps
        .iter()
        .map(|step| {
            let parent = steps
                .iter()
                .find(|p| p["id"] == step["parent_id"])
                .map(label)
                .unwrap_or_default();
            format!("{}^{parent}", label(step))
        })
        .collect()
}

fn sum_usage(steps: &[Value], field: &str) -> i64 {
    steps
        .iter()
        .filter(|s| s["kind"] == "llm")
        .map(|s| s["usage"][field].as_i64().unwrap())
        .sum()
}

#[tokio::test]
async fn triage_hands_a_billing_question_to_billing_who_answers() {
    let app = builtin_app().await;
    let (run, events, steps) = run_on(&app, "support-triage", "Where is my invoice?").await;
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(
        outline(&events),
        [
            "run.queued",
            "run.started",
            "agent.started:support-triage",
            "agent.finished:support-triage",
            "agent.started:billing",
            "message.delta",
            "agent.finished:billing",
            "message.completed",
            "usage",
            "run.completed",
        ]
    );
    let answer = deltas_of(&events);
    assert!(answer.starts_with("Billing here."), "{answer}");
    assert_eq!(events[events.len() - 3].data["content"], answer);

    assert_eq!(
        step_tree(&steps),
        [
            "agent:support-triage^",
            "llm:triage-1^agent:support-triage",
            "agent:billing^",
            "llm:billing-1^agent:billing",
        ]
    );
    assert!(
        steps.iter().all(|s| s["status"] == "completed"),
        "{steps:?}"
    );
    assert_eq!(
        steps[1]["output"]["tool_calls"][0]["name"],
        "transfer_to_billing"
    );
    assert_eq!(
        steps[2]["input"],
        json!({"handed_off_by": "support-triage", "reason": "The customer asks about billing."})
    );
    // The run's usage is the sum of its model calls.
    assert_eq!(
        run["usage"]["input_tokens"],
        sum_usage(&steps, "input_tokens")
    );
    assert_eq!(
        run["usage"]["output_tokens"],
        sum_usage(&steps, "output_tokens")
    );
    assert_eq!(events.last().unwrap().data["usage"], run["usage"]);
}

#[tokio::test]
async fn triage_reaches_each_specialist_on_everyday_wording() {
    let app = builtin_app().await;
    let questions = [
        (
            "I was charged twice this month",
            "billing",
            "I see two identical charges",
        ),
        (
            "Can I get my money back for last month?",
            "billing",
            "Billing here.",
        ),
        (
            "Why did my subscription price go up?",
            "billing",
            "Billing here.",
        ),
        (
            "My storage account deployment failed, what should I check?",
            "tech-support",
            "Open the deployment's activity log",
        ),
        (
            "The app crashes when I open settings",
            "tech-support",
            "Technical support here.",
        ),
        (
            "I can’t log in since yesterday",
            "tech-support",
            "Technical support here.",
        ),
    ];
    for (question, specialist, answer_starts) in questions {
        let (run, events, _) = run_on(&app, "support-triage", question).await;
        assert_eq!(run["status"], "completed", "{question}: {run}");
        let agents: Vec<String> = outline(&events)
            .into_iter()
            .filter_map(|e| e.strip_prefix("agent.started:").map(str::to_owned))
            .collect();
        assert_eq!(agents, ["support-triage", specialist], "{question}");
        let answer = deltas_of(&events);
        assert!(answer.contains(answer_starts), "{question}: {answer}");
    }
}

#[tokio::test]
async fn triage_answers_what_needs_no_specialist() {
    let app = builtin_app().await;
    let (run, events, steps) = run_on(&app, "support-triage", "Hello there").await;
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(
        outline(&events),
        [
            "run.queued",
            "run.started",
            "agent.started:support-triage",
            "message.delta",
            "agent.finished:support-triage",
            "message.completed",
            "usage",
            "run.completed",
        ]
    );
    assert!(deltas_of(&events).starts_with("I route questions"));
    assert_eq!(
        step_tree(&steps),
        ["agent:support-triage^", "llm:triage-1^agent:support-triage"]
    );
}

#[tokio::test]
async fn a_planner_runs_its_plan_on_specialists_then_answers_from_their_results() {
    let app = builtin_app().await;
    let (run, events, steps) = run_on(&app, "trip-planner", "Plan three days in Lisbon").await;
    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(
        outline(&events),
        [
            "run.queued",
            "run.started",
            "agent.started:trip-planner",
            "tool.started:create_plan",
            "agent.started:researcher",
            "agent.finished:researcher",
            "agent.started:writer",
            "agent.finished:writer",
            "tool.finished:create_plan",
            "message.delta",
            "agent.finished:trip-planner",
            "message.completed",
            "usage",
            "run.completed",
        ]
    );
    let plan = events.iter().find(|e| e.event == "tool.started").unwrap();
    assert_eq!(
        plan.data["arguments"]["steps"][1]["depends_on"],
        json!(["research"])
    );
    let results = &events
        .iter()
        .find(|e| e.event == "tool.finished")
        .unwrap()
        .data;
    assert_eq!(results["is_error"], false);
    assert_eq!(results["result"]["results"][0]["id"], "research");
    assert!(
        results["result"]["results"][1]["output"]
            .as_str()
            .unwrap()
            .starts_with("Day 1:")
    );
    // Only the planner's answer is streamed; it reports the tasks' results.
    let answer = deltas_of(&events);
    assert!(answer.starts_with("Your plan is ready."), "{answer}");
    assert!(answer.contains("Day 1:"), "{answer}");

    assert_eq!(
        step_tree(&steps),
        [
            "agent:trip-planner^",
            "llm:planner-1^agent:trip-planner",
            "plan:plan^agent:trip-planner",
            "agent:researcher^plan:plan",
            "llm:researcher-1^agent:researcher",
            "agent:writer^plan:plan",
            "llm:writer-1^agent:writer",
            "llm:planner-1^agent:trip-planner",
        ]
    );
    // The writer saw the researcher's result.
    let writer_step = steps.iter().find(|s| s["name"] == "writer").unwrap();
    assert_eq!(writer_step["input"]["depends_on"], json!(["research"]));
    assert_eq!(
        run["usage"]["output_tokens"],
        sum_usage(&steps, "output_tokens")
    );
}

#[tokio::test]
async fn cost_comes_from_the_price_table_on_steps_events_and_the_run() {
    let catalog = format!(
        "{BUILTIN_CATALOG}\n[prices.triage-1]\ninput = 2.0\noutput = 8.0\n\n[prices.billing-1]\ninput = 1.0\noutput = 4.0\ncached_input = 0.5\n"
    )
    .replace("chunk_delay_ms = 15", "chunk_delay_ms = 0");
    let app = TestApp::spawn_with(Options {
        catalog,
        ..Default::default()
    })
    .await;
    let (run, events, steps) = run_on(&app, "support-triage", "A refund please").await;
    assert_eq!(run["status"], "completed", "{run}");
    let mut expected = 0.0;
    for step in steps.iter().filter(|s| s["kind"] == "llm") {
        let usage = &step["usage"];
        let (input, output) = match step["name"].as_str().unwrap() {
            "triage-1" => (2.0, 8.0),
            "billing-1" => (1.0, 4.0),
            other => panic!("unexpected model {other}"),
        };
        let cost = usage["input_tokens"].as_f64().unwrap() * input / 1e6
            + usage["output_tokens"].as_f64().unwrap() * output / 1e6;
        let recorded = step["cost_usd"].as_f64().unwrap();
        assert!((recorded - cost).abs() < 1e-12, "{step}");
        assert!(recorded > 0.0);
        expected += cost;
    }
    let cost = run["cost_usd"].as_f64().unwrap();
    assert!((cost - expected).abs() < 1e-12, "{run}");
    let usage_event = events.iter().find(|e| e.event == "usage").unwrap();
    assert_eq!(usage_event.data["cost_usd"], run["cost_usd"]);
    assert_eq!(events.last().unwrap().data["cost_usd"], run["cost_usd"]);

    // A model without a price leaves the run's cost unknown.
    let (run, _, _) = run_on(&app, "trip-planner", "Plan a weekend").await;
    assert_eq!(run["status"], "completed", "{run}");
    assert!(run["cost_usd"].is_null(), "{run}");
}
