//! `switchyard chat`: a terminal client of a running server. It creates (or
//! continues) a thread, starts a streamed run, and prints the answer as it
//! arrives; tool and agent events are shown dimmed.

use std::io::Write;

use anyhow::{Context as _, bail};
use clap::Args;
use eventsource_stream::Eventsource;
use futures::StreamExt;
use serde_json::{Value, json};

#[derive(Args)]
pub struct ChatArgs {
    /// The agent to talk to (default: the server's first agent).
    #[arg(long)]
    agent: Option<String>,
    /// Continue this thread instead of starting a new one.
    #[arg(long)]
    thread: Option<String>,
    /// The server's address.
    #[arg(long, env = "SWITCHYARD_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// An API key (`switchyard keys create`) or OIDC token; not needed
    /// against `switchyard dev`.
    #[arg(long, env = "SWITCHYARD_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The message to send.
    message: String,
}

const DIM: &str = "\x1b[2m";
const RESET: &str = "\x1b[0m";

pub async fn run(args: ChatArgs) -> anyhow::Result<()> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = &args.token {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
            .context("the token is not a valid header value")?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    let http = reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .context("building the HTTP client")?;
    let base = args.url.trim_end_matches('/');
    let thread_id = match args.thread {
        Some(id) => id,
        None => {
            let mut body = json!({});
            if let Some(agent) = &args.agent {
                body["agent_id"] = json!(agent);
            }
            let thread: Value = send(http.post(format!("{base}/v1/threads")).json(&body)).await?;
            let id = thread["id"]
                .as_str()
                .context("the server returned a thread without id")?
                .to_owned();
            eprintln!("{DIM}thread {id}{RESET}");
            id
        }
    };
    let mut body = json!({"input": {"content": args.message}, "stream": true});
    if let Some(agent) = &args.agent {
        body["agent_id"] = json!(agent);
    }
    let response = http
        .post(format!("{base}/v1/threads/{thread_id}/runs"))
        .json(&body)
        .send()
        .await
        .map_err(unreachable)?;
    if !response.status().is_success() {
        bail!("{}", error_text(response).await);
    }
    let mut events = response.bytes_stream().eventsource();
    let mut stdout = std::io::stdout();
    while let Some(event) = events.next().await {
        let event = event.context("reading the event stream")?;
        let data: Value = serde_json::from_str(&event.data).unwrap_or(Value::Null);
        match event.event.as_str() {
            "message.delta" => {
                print!("{}", data["delta"].as_str().unwrap_or_default());
                stdout.flush()?;
            }
            "tool.started" => eprintln!(
                "{DIM}→ {} {}{RESET}",
                data["tool"].as_str().unwrap_or("?"),
                data["arguments"]
            ),
            "tool.finished" => eprintln!(
                "{DIM}← {} {}{RESET}",
                data["tool"].as_str().unwrap_or("?"),
                data["result"]
            ),
            "agent.started" => eprintln!("{DIM}[{}]{RESET}", data["agent"].as_str().unwrap_or("?")),
            "run.completed" => {
                println!();
                let usage = &data["usage"];
                eprintln!(
                    "{DIM}{} tokens in, {} out{RESET}",
                    usage["input_tokens"], usage["output_tokens"]
                );
                return Ok(());
            }
            "run.failed" => {
                println!();
                bail!(
                    "the run failed: {}",
                    data["error"]["message"].as_str().unwrap_or("unknown error")
                );
            }
            "run.cancelled" => {
                println!();
                bail!("the run was cancelled");
            }
            _ => {}
        }
    }
    bail!("the event stream ended before the run did")
}

async fn send(request: reqwest::RequestBuilder) -> anyhow::Result<Value> {
    let response = request.send().await.map_err(unreachable)?;
    if !response.status().is_success() {
        bail!("{}", error_text(response).await);
    }
    Ok(response.json().await?)
}

/// A request that found no server, in one line saying what to do.
fn unreachable(error: reqwest::Error) -> anyhow::Error {
    let url = error
        .url()
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_else(|| "the server".into());
    let why = if error.is_connect() {
        "cannot connect".to_owned()
    } else if error.is_timeout() {
        "no answer in time".to_owned()
    } else {
        error.without_url().to_string()
    };
    anyhow::anyhow!(
        "cannot reach {url} ({why}): is `switchyard dev` running? (--url names another server)"
    )
}

async fn error_text(response: reqwest::Response) -> String {
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    match body["error"]["message"].as_str() {
        Some(message) => format!("{status}: {message}"),
        None => status.to_string(),
    }
}
