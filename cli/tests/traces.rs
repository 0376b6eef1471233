//! OpenTelemetry across processes: `switchyard api` and `switchyard worker`
//! export spans over OTLP/HTTP (JSON) to a receiver in this test, and one run
//! makes one trace, from the HTTP request that created it, through the
//! queue and the worker's run, to each LLM call, tool call and the
//! provider's HTTP request.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_methods,
    reason = "test code, helpers included (which allow-unwrap-in-tests misses in integration tests): a panic is the failure report, and spawned servers end with the test runtime"
)]

mod support;

use std::io::Read as _;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::Deployment;
use switchyard_fake_llm::{FakeLlm, Reply};
use switchyard_tests::one_agent_catalog;

/// A span as exported: its service, name, ids and parent.
#[derive(Debug, Clone)]
struct Exported {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
}

/// An OTLP/HTTP receiver for `http/json` trace exports.
#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Exported>>>,
}

impl Receiver {
    async fn start(&self) -> String {
        let spans = self.spans.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |body: axum::Json<Value>| {
                let spans = spans.clone();
                async move {
                    spans.lock().unwrap().extend(parse(&body));
                    axum::Json(json!({}))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{address}")
    }

    fn spans(&self) -> Vec<Exported> {
        self.spans.lock().unwrap().clone()
    }
}

/// The spans of one `ExportTraceServiceRequest` in OTLP's JSON encoding.
fn parse(request: &Value) -> Vec<Exported> {
    let mut out = Vec::new();
    for resource_spans in request["resourceSpans"].as_array().into_iter().flatten() {
        let service = resource_spans["resource"]["attributes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["key"] == "service.name")
            .and_then(|a| a["value"]["stringValue"].as_str())
            .unwrap_or_default()
            .to_owned();
        for scope in resource_spans["scopeSpans"]
            .as_array()
            .into_iter()
            .flatten()
        {
            for span in scope["spans"].as_array().into_iter().flatten() {
                let text = |key: &str| span[key].as_str().unwrap_or_default().to_lowercase();
                out.push(Exported {
                    service: service.clone(),
                    name: span["name"].as_str().unwrap_or_default().to_owned(),
                    trace_id: text("traceId"),
                    span_id: text("spanId"),
                    parent_span_id: text("parentSpanId"),
                });
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_is_one_trace_from_the_request_to_the_provider() {
    let receiver = Receiver::default();
    let endpoint = receiver.start().await;
    let fake = FakeLlm::start().await;
    fake.push(Reply::tool_call(
        "call_1",
        "calculator",
        &[r#"{"expression": "6 * 7"}"#],
        None,
    ));
    fake.push(Reply::text(&["It is ", "42."], Some((20, 4))));
    let catalog = one_agent_catalog(
        &fake.base_url(),
        r#"model = "m"
tools = ["calculator"]
"#,
    );
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let mut deployment = Deployment::with_catalog_and_env(&catalog, &env).await;
    // The worker writes JSON logs to stdout, read once the run is over.
    let worker = deployment
        .command("worker")
        .env("SWITCHYARD_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting switchyard worker");
    deployment.processes.push(worker);
    let thread = deployment.post("/v1/threads", json!({})).await;
    let thread_id = thread["id"].as_str().unwrap();
    let run = deployment
        .post(
            &format!("/v1/threads/{thread_id}/runs"),
            json!({"input": {"content": "What is 6 times 7?"}}),
        )
        .await;
    let run_id = run["id"].as_str().unwrap().to_owned();
    let run = deployment
        .wait_for_run(&run_id, Duration::from_secs(60))
        .await;
    assert_eq!(run["status"], "completed", "{run}");

    let create_route = "POST /v1/threads/{thread_id}/runs";
    let expected = ["run", "llm.call", "tool.call"];
    let deadline = Instant::now() + Duration::from_secs(30);
    let (request, spans) = loop {
        let spans = receiver.spans();
        let request = spans
            .iter()
            .find(|s| s.service == "switchyard-api" && s.name == create_route)
            .cloned();
        if let Some(request) = request {
            let in_trace: Vec<Exported> = spans
                .into_iter()
                .filter(|s| s.trace_id == request.trace_id)
                .collect();
            let worker_names: Vec<&str> = in_trace
                .iter()
                .filter(|s| s.service == "switchyard-worker")
                .map(|s| s.name.as_str())
                .collect();
            if expected.iter().all(|name| worker_names.contains(name))
                && worker_names.iter().filter(|&&n| n == "llm.call").count() == 2
            {
                break (request, in_trace);
            }
        }
        assert!(
            Instant::now() < deadline,
            "the trace did not arrive whole; spans received: {:#?}",
            receiver.spans()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // The worker's run hangs under the request's trace: its parent is a span
    // exported by the API process.
    let run_span = spans
        .iter()
        .find(|s| s.service == "switchyard-worker" && s.name == "run")
        .unwrap();
    let parent = spans
        .iter()
        .find(|s| s.span_id == run_span.parent_span_id)
        .unwrap_or_else(|| panic!("the run's parent is not in the trace: {spans:#?}"));
    assert_eq!(parent.service, "switchyard-api");
    // LLM and tool calls are children of the run.
    for span in spans.iter().filter(|s| s.name == "tool.call") {
        let parent = spans.iter().find(|p| p.span_id == span.parent_span_id);
        assert!(
            parent.is_some_and(|p| p.name == "run" || p.name == "llm.call"),
            "{span:?} hangs elsewhere"
        );
    }
    // The provider was called with the same trace in `traceparent`.
    let requests = fake.requests();
    assert_eq!(requests.len(), 2);
    for sent in &requests {
        let traceparent = sent.header("traceparent").expect("traceparent is sent");
        let trace_id = traceparent.split('-').nth(1).unwrap_or_default();
        assert_eq!(trace_id, request.trace_id, "{traceparent}");
    }

    // JSON log lines written during the run carry its trace id.
    let worker = &mut deployment.processes[1];
    worker.kill().ok();
    worker.wait().ok();
    let mut logs = String::new();
    worker
        .stdout
        .take()
        .expect("the worker's stdout")
        .read_to_string(&mut logs)
        .unwrap();
    let started = logs
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|line| line["fields"]["message"] == "run started")
        .unwrap_or_else(|| panic!("no 'run started' line in: {logs}"));
    let spans = started["spans"].as_array().expect("the line's spans");
    assert!(
        spans
            .iter()
            .any(|s| s["trace_id"] == request.trace_id.as_str()),
        "{started}"
    );
}
