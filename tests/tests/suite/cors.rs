//! Browser front ends on other origins: preflights answered on every route
//! for the allowed origins, with the headers the surfaces use; refused for
//! the others; and a real page in headless Chromium streaming a run from
//! Switchyard on another origin, and refused when its origin is not allowed.

use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use switchyard_tests::{Options, TestApp, clients};

const FRONT_END: &str = "https://chat.example.com";

/// The headers the surfaces' clients send, which a preflight asks about.
const ASKED: &str =
    "authorization,content-type,last-event-id,idempotency-key,x-switchyard-end-user,x-stainless-os";

async fn app_allowing(origins: &str) -> TestApp {
    TestApp::spawn_with(Options {
        env: vec![
            ("SWITCHYARD_AUTH", "api_key".into()),
            ("SWITCHYARD_CORS_ORIGINS", origins.into()),
        ],
        ..Default::default()
    })
    .await
}

async fn preflight(
    app: &TestApp,
    path: &str,
    origin: &str,
    method: &str,
) -> (u16, HeaderMap, Value) {
    let response = app
        .http
        .request(Method::OPTIONS, app.url(path))
        .header("Origin", origin)
        .header("Access-Control-Request-Method", method)
        .header("Access-Control-Request-Headers", ASKED)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, headers, body)
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> &'h str {
    headers
        .get(name)
        .map_or("", |v| v.to_str().expect("a text header"))
}

#[tokio::test]
async fn preflights_from_allowed_origins_are_answered_on_every_route() {
    let app = app_allowing(&format!("http://localhost:*,{FRONT_END}")).await;
    let some_id = "0193a5b0-0000-7000-8000-000000000000";
    for (path, method) in [
        ("/api/chat/stream", "POST"),
        ("/api/chat", "POST"),
        (&*format!("/v1/runs/{some_id}/events"), "GET"),
        (&*format!("/v1/threads/{some_id}/runs"), "POST"),
        (&*format!("/v1/threads/{some_id}"), "PATCH"),
        (&*format!("/v1/threads/{some_id}"), "DELETE"),
        ("/v1/chat/completions", "POST"),
        ("/api/agents/assistant/chat", "POST"),
        ("/api/agents/assistant", "PUT"),
        (&*format!("/api/chat/{some_id}/stream"), "GET"),
    ] {
        for origin in [FRONT_END, "http://localhost:3000", "http://localhost:5173"] {
            let (status, headers, body) = preflight(&app, path, origin, method).await;
            assert_eq!(status, 200, "{method} {path} from {origin}: {body}");
            assert_eq!(header(&headers, "access-control-allow-origin"), origin);
            assert!(
                header(&headers, "access-control-allow-methods").contains(method),
                "{method} {path}: {headers:?}"
            );
            let allowed = header(&headers, "access-control-allow-headers").to_ascii_lowercase();
            for asked in ASKED.split(',') {
                assert!(allowed.contains(asked), "{asked} on {path}: {allowed}");
            }
            assert!(
                header(&headers, "vary")
                    .to_ascii_lowercase()
                    .contains("origin")
            );
            assert_eq!(header(&headers, "access-control-max-age"), "3600");
            assert!(
                headers.get("access-control-allow-credentials").is_none(),
                "credentials are off unless configured"
            );
        }
    }

    // Answers, refusals included, carry the permission, so that a page can
    // read why it was refused; and the headers it needs are exposed.
    let response = app
        .http
        .get(app.url("/v1/threads"))
        .header("Origin", FRONT_END)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let headers = response.headers();
    assert_eq!(header(headers, "access-control-allow-origin"), FRONT_END);
    let exposed = header(headers, "access-control-expose-headers").to_ascii_lowercase();
    for name in [
        "retry-after",
        "x-vercel-ai-ui-message-stream",
        "x-switchyard-run-id",
    ] {
        assert!(exposed.contains(name), "{name}: {exposed}");
    }
}

#[tokio::test]
async fn other_origins_are_refused_and_nothing_is_allowed_unless_configured() {
    let app = app_allowing(FRONT_END).await;
    for origin in [
        "https://evil.example",
        "http://chat.example.com",
        "https://chat.example.com.evil.example",
        "http://localhost:3000",
        "null",
    ] {
        let (status, headers, body) = preflight(&app, "/api/chat/stream", origin, "POST").await;
        assert_eq!(status, 403, "{origin}: {body}");
        assert_eq!(body["error"]["code"], "forbidden", "{origin}: {body}");
        assert!(headers.get("access-control-allow-origin").is_none());
    }
    // A request that needs no preflight is answered, but without the
    // permission: the browser keeps the answer from the page.
    let response = app
        .http
        .get(app.url("/health"))
        .header("Origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );

    let closed = TestApp::spawn().await;
    let (status, headers, body) =
        preflight(&closed, "/v1/threads", "http://localhost:3000", "POST").await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("SWITCHYARD_CORS_ORIGINS"),
        "{body}"
    );
    assert!(headers.get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn credentials_are_allowed_only_when_configured() {
    let app = TestApp::spawn_with(Options {
        env: vec![
            ("SWITCHYARD_CORS_ORIGINS", FRONT_END.into()),
            ("SWITCHYARD_CORS_CREDENTIALS", "true".into()),
        ],
        ..Default::default()
    })
    .await;
    let (status, headers, _) = preflight(&app, "/v1/threads", FRONT_END, "POST").await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "access-control-allow-credentials"), "true");
    assert_eq!(header(&headers, "access-control-allow-origin"), FRONT_END);
}

#[tokio::test]
async fn a_page_on_another_origin_streams_a_run_in_chromium() {
    // Pages on any port of `localhost` may call; `127.0.0.1` is another
    // origin, which may not.
    let app = app_allowing("http://localhost:*").await;
    let key = app.service_key("front-end").await;

    let seen = clients::browser(&app.address, &key, "localhost").await;
    assert!(seen.get("error").is_none(), "{seen}");
    assert_eq!(seen["thread_status"], 201, "{seen}");
    assert_eq!(seen["run_status"], 200, "{seen}");
    let live = seen["live"].as_array().unwrap();
    let kinds: Vec<&str> = live.iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(kinds.first(), Some(&"run.queued"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"run.completed"), "{kinds:?}");
    let ids: Vec<i64> = live
        .iter()
        .map(|e| e["id"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(ids, (1..=ids.len() as i64).collect::<Vec<_>>());
    let deltas: String = live
        .iter()
        .filter(|e| e["event"] == "message.delta")
        .map(|e| e["data"]["delta"].as_str().unwrap())
        .collect();
    let completed = live
        .iter()
        .find(|e| e["event"] == "message.completed")
        .expect("the message completed");
    assert_eq!(deltas, completed["data"]["content"].as_str().unwrap());
    assert!(deltas.contains("Hello from a browser"), "{deltas}");
    assert_eq!(
        seen["replayed_ids"],
        json!((3..=ids.len() as i64).collect::<Vec<_>>()),
        "Last-Event-ID reached the server through the preflight"
    );
    let simple = seen["simple"].as_array().unwrap();
    let (end, tokens) = simple.split_last().unwrap();
    assert_eq!(end["event"], "done", "{simple:?}");
    assert!(tokens.iter().all(|e| e["event"] == "message"), "{simple:?}");
    let text: String = tokens.iter().map(|e| e["data"].as_str().unwrap()).collect();
    assert!(text.contains("Hi, simple chat"), "{text}");
    // The end user the page named owns that conversation.
    let done: Value = serde_json::from_str(end["data"].as_str().unwrap()).unwrap();
    let visitor = app.client_with_headers(&[
        ("authorization", &format!("Bearer {key}")),
        ("x-switchyard-end-user", "visitor-1"),
    ]);
    let thread = format!("/v1/threads/{}", done["conversation_id"].as_str().unwrap());
    let (status, _) = app.call(visitor.get(app.url(&thread))).await;
    assert_eq!(status, 200);
    let (status, _) = app
        .call(app.client_with_token(&key).get(app.url(&thread)))
        .await;
    assert_eq!(status, 404, "the service itself does not own it");

    let refused = clients::browser(&app.address, &key, "127.0.0.1").await;
    let error = refused["error"].as_str().unwrap_or_default();
    assert!(error.contains("Failed to fetch"), "{refused}");
    assert!(
        refused["console_errors"].to_string().contains("CORS"),
        "the browser says why: {refused}"
    );
    let (_, threads) = app
        .call(app.client_with_token(&key).get(app.url("/v1/threads")))
        .await;
    assert_eq!(
        threads["threads"].as_array().unwrap().len(),
        1,
        "the refused page made nothing: {threads}"
    );
}
