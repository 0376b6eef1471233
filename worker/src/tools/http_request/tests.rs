//! `http_request` against a local axum server: what it refuses, and what
//! it returns when allowed.

use axum::Router;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde_json::{Value, json};
use switchyard_common::config::HttpRequestSettings;

use super::*;
use crate::tools::invoke;

/// A server on 127.0.0.1; its port.
#[expect(
    clippy::disallowed_methods,
    reason = "the test's server ends with the test's runtime"
)]
async fn serve() -> u16 {
    let app = Router::new()
        .route(
            "/hello",
            get(|| async { ([(header::CONTENT_TYPE, "text/plain")], "hello") }),
        )
        .route("/big", get(|| async { "é".repeat(100_000) }))
        .route(
            "/moved",
            get(|| async { (StatusCode::FOUND, [(header::LOCATION, "/hello")], "") }),
        )
        .route(
            "/echo",
            post(|headers: HeaderMap, body: String| async move {
                let tag = headers
                    .get("x-tag")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                axum::Json(json!({"tag": tag, "body": body})).into_response()
            }),
        );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .expect("binding a local port");
    let port = listener.local_addr().expect("bound").port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    port
}

fn settings(allow_hosts: &[&str], allow_private: bool) -> HttpRequestSettings {
    HttpRequestSettings {
        allow_hosts: allow_hosts.iter().map(|h| (*h).to_owned()).collect(),
        allow_private,
        max_response_bytes: 64 * 1024,
        timeout_secs: 10,
    }
}

async fn call(settings: &HttpRequestSettings, arguments: Value) -> Result<Value, ToolError> {
    let tool = HttpRequest::new(&Clients::new().expect("building clients"), settings);
    invoke(&tool, &arguments.to_string()).await
}

async fn refusal(settings: &HttpRequestSettings, url: &str) -> String {
    match call(settings, json!({"url": url})).await {
        Ok(answer) => panic!("{url} was fetched: {answer}"),
        Err(error) => error.0,
    }
}

#[tokio::test]
async fn non_public_ip_literals_are_refused_even_when_allowed_by_name() {
    let port = serve().await;
    let allowed = settings(
        &[
            "127.0.0.1",
            "169.254.169.254",
            "::1",
            "::ffff:127.0.0.1",
            "10.0.0.1",
        ],
        false,
    );
    for (url, expected) in [
        (
            format!("http://127.0.0.1:{port}/hello"),
            "127.0.0.1 is a loopback address; only public addresses may be requested",
        ),
        (
            "http://169.254.169.254/latest/meta-data/".to_owned(),
            "169.254.169.254 is a link-local address",
        ),
        (
            format!("http://[::1]:{port}/hello"),
            "[::1] is a loopback address",
        ),
        (
            format!("http://[::ffff:127.0.0.1]:{port}/hello"),
            "[::ffff:7f00:1] is a loopback address",
        ),
        (
            "http://10.0.0.1/".to_owned(),
            "10.0.0.1 is a private address",
        ),
    ] {
        let error = refusal(&allowed, &url).await;
        assert!(error.starts_with(expected), "{url}: {error}");
    }
}

#[tokio::test]
async fn hosts_off_the_allow_list_are_refused() {
    let port = serve().await;
    let allowed = settings(&["api.example.com", "*.example.org"], true);
    for url in [
        format!("http://127.0.0.1:{port}/hello"),
        "https://example.org/".to_owned(),
        "https://evil.com/?api.example.com".to_owned(),
        "https://api.example.com.evil.com/".to_owned(),
    ] {
        let error = refusal(&allowed, &url).await;
        assert!(
            error.ends_with("is not among the hosts this agent may call"),
            "{url}: {error}"
        );
        assert!(
            !error.contains("*.example.org"),
            "the allow-list stays private: {error}"
        );
    }
}

#[tokio::test]
async fn a_name_resolving_to_a_private_address_is_refused_at_connection() {
    // The server listens, so a missing check would show as a fetched page.
    let port = serve().await;
    let error = refusal(
        &settings(&["localhost"], false),
        &format!("http://localhost:{port}/hello"),
    )
    .await;
    assert!(error.starts_with("localhost resolves to "), "{error}");
    assert!(
        error.ends_with("a loopback address; only public addresses may be requested"),
        "{error}"
    );
}

#[tokio::test]
async fn only_http_urls_are_requested() {
    let allowed = settings(&["localhost"], true);
    assert_eq!(
        refusal(&allowed, "file:///etc/passwd").await,
        "only http:// and https:// URLs can be requested, not file:"
    );
    assert!(
        refusal(&allowed, "not a url")
            .await
            .starts_with("\"not a url\" is not a valid URL")
    );
}

#[tokio::test]
async fn an_allowed_private_server_is_fetched() {
    let port = serve().await;
    let allowed = settings(&["127.0.0.1"], true);
    let answer = call(
        &allowed,
        json!({"url": format!("http://127.0.0.1:{port}/hello")}),
    )
    .await
    .unwrap();
    assert_eq!(answer["status"], 200);
    assert_eq!(answer["body"], "hello");
    assert_eq!(answer["truncated"], false);
    assert_eq!(answer["headers"]["content-type"], "text/plain");
    assert_eq!(answer["headers"]["content-length"], "5");
}

#[tokio::test]
async fn an_oversized_body_is_cut_at_the_limit() {
    let port = serve().await;
    let mut capped = settings(&["127.0.0.1"], true);
    capped.max_response_bytes = 1001;
    let answer = call(
        &capped,
        json!({"url": format!("http://127.0.0.1:{port}/big")}),
    )
    .await
    .unwrap();
    assert_eq!(answer["status"], 200);
    assert_eq!(answer["truncated"], true);
    // 500 two-byte characters; the half character at the cut is dropped.
    assert_eq!(answer["body"], "é".repeat(500));
}

#[tokio::test]
async fn redirects_are_returned_not_followed() {
    let port = serve().await;
    let answer = call(
        &settings(&["127.0.0.1"], true),
        json!({"url": format!("http://127.0.0.1:{port}/moved")}),
    )
    .await
    .unwrap();
    assert_eq!(answer["status"], 302);
    assert_eq!(answer["headers"]["location"], "/hello");
    assert_eq!(answer["body"], "");
}

#[tokio::test]
async fn a_post_sends_its_body_and_headers() {
    let port = serve().await;
    let allowed = settings(&["127.0.0.1"], true);
    let url = format!("http://127.0.0.1:{port}/echo");
    let answer = call(
        &allowed,
        json!({"url": url, "method": "POST", "headers": {"X-Tag": "t1"}, "body": "ping"}),
    )
    .await
    .unwrap();
    assert_eq!(answer["status"], 200);
    let echoed: Value = serde_json::from_str(answer["body"].as_str().unwrap()).unwrap();
    assert_eq!(echoed, json!({"tag": "t1", "body": "ping"}));

    let error = call(&allowed, json!({"url": url, "body": "ping"}))
        .await
        .unwrap_err();
    assert_eq!(error.0, "a body can only be sent with POST");
    let error = call(
        &allowed,
        json!({"url": url, "method": "POST", "headers": {"Host": "x"}}),
    )
    .await
    .unwrap_err();
    assert_eq!(
        error.0,
        "/headers: Host is set by the client and cannot be given"
    );
}

#[tokio::test]
async fn a_closed_port_is_a_connection_error() {
    // Bind and drop, so that nothing listens on the port.
    let port = {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .unwrap();
        listener.local_addr().unwrap().port()
    };
    let error = call(
        &settings(&["127.0.0.1"], true),
        json!({"url": format!("http://127.0.0.1:{port}/")}),
    )
    .await
    .unwrap_err();
    assert!(
        error.0.starts_with("cannot connect to 127.0.0.1: "),
        "{error}"
    );
}
