//! `http_request`: GET or POST to a host on the agent's allow-list.
//!
//! A model choosing URLs is an open door into the worker's network unless
//! every request is checked, so:
//!
//! - the URL's host must be on the agent's `allow_hosts` (exact name,
//!   `*.example.com` for subdomains, or an IP address);
//! - unless the agent has `allow_private`, the address connected to must
//!   be public (see [`address`]). An IP in the URL is checked here; a name
//!   is checked by the client's own resolver ([`PublicOnly`]) on the very
//!   addresses the connection then uses, so a DNS answer that changes
//!   between a check and the connection (DNS rebinding) cannot slip a
//!   private address in;
//! - redirects are not followed: a 3xx comes back to the model with its
//!   `location`, and following it is a new, checked request;
//! - no proxy from the environment is used, since it would resolve names
//!   beyond our checks;
//! - the body read is capped at `max_response_bytes` (the rest is dropped
//!   and the result marked `truncated`), the whole request at
//!   `timeout_secs` (the tool's time limit in [`super::invoke`]).

use std::error::Error as StdError;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use switchyard_common::config::BuiltinTool;

use futures::FutureExt;
use futures::future::BoxFuture;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Map, Value, json};
use switchyard_common::config::HttpRequestSettings;
use switchyard_common::net::{self as address, host_matches, ip_literal};

use super::{Tool, ToolError};

/// The longest URL accepted, in characters.
const MAX_URL_CHARS: usize = 2048;
/// The longest request body accepted, in characters.
const MAX_BODY_CHARS: usize = 64 * 1024;
/// Response headers passed on to the model; the rest are noise to it.
const RESPONSE_HEADERS: &[&str] = &[
    "content-type",
    "content-length",
    "location",
    "last-modified",
    "retry-after",
];
/// Request headers the client sets itself, or that would misdirect the
/// request.
const RESERVED_HEADERS: &[&str] = &["host", "content-length", "transfer-encoding", "connection"];

/// The HTTP clients behind every agent's `http_request`, built once per
/// process: one that only connects to public addresses, and one for agents
/// allowed private ones.
pub struct Clients {
    public_only: reqwest::Client,
    any_address: reqwest::Client,
}

impl Clients {
    pub fn new() -> Result<Self, reqwest::Error> {
        let builder = || {
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .user_agent(concat!("switchyard/", env!("CARGO_PKG_VERSION")))
        };
        Ok(Self {
            public_only: builder().dns_resolver(PublicOnly).build()?,
            any_address: builder().build()?,
        })
    }

    /// The client that connects only to public addresses.
    pub fn public_only(&self) -> reqwest::Client {
        self.public_only.clone()
    }
}

pub struct HttpRequest(Arc<Inner>);

struct Inner {
    client: reqwest::Client,
    allow_hosts: Vec<String>,
    allow_private: bool,
    max_response_bytes: usize,
    timeout: Duration,
}

impl HttpRequest {
    pub fn new(clients: &Clients, settings: &HttpRequestSettings) -> Self {
        let client = if settings.allow_private {
            &clients.any_address
        } else {
            &clients.public_only
        };
        Self(Arc::new(Inner {
            client: client.clone(),
            allow_hosts: settings.allow_hosts.clone(),
            allow_private: settings.allow_private,
            max_response_bytes: usize::try_from(settings.max_response_bytes).unwrap_or(usize::MAX),
            timeout: Duration::from_secs(settings.timeout_secs),
        }))
    }
}

impl Tool for HttpRequest {
    fn name(&self) -> &'static str {
        BuiltinTool::HttpRequest.as_str()
    }

    fn description(&self) -> &'static str {
        "Make an HTTP GET or POST request to an allowed host and return the \
         status, a few headers and the body as text (cut off beyond a size \
         limit). Redirects are returned, not followed."
    }

    fn parameters(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "url": {
                    "type": "string",
                    "description": "An absolute http:// or https:// URL.",
                    "minLength": 1,
                    "maxLength": MAX_URL_CHARS
                },
                "method": {
                    "type": "string",
                    "enum": ["GET", "POST"],
                    "description": "GET (the default) or POST."
                },
                "headers": {
                    "type": "object",
                    "description": "Request headers, name to value.",
                    "additionalProperties": {"type": "string"}
                },
                "body": {
                    "type": "string",
                    "description": "The request body (POST only).",
                    "maxLength": MAX_BODY_CHARS
                }
            },
            "required": ["url"],
            "additionalProperties": false
        })
    }

    fn timeout(&self) -> Duration {
        self.0.timeout
    }

    fn call(&self, arguments: Value) -> BoxFuture<'static, Result<Value, ToolError>> {
        let inner = self.0.clone();
        async move { inner.request(&arguments).await }.boxed()
    }
}

impl Inner {
    async fn request(&self, arguments: &Value) -> Result<Value, ToolError> {
        let raw_url = arguments["url"].as_str().unwrap_or_default();
        let url = reqwest::Url::parse(raw_url)
            .map_err(|e| ToolError(format!("{raw_url:?} is not a valid URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(ToolError(format!(
                "only http:// and https:// URLs can be requested, not {}:",
                url.scheme()
            )));
        }
        let host = url
            .host_str()
            .ok_or_else(|| ToolError(format!("{raw_url:?} has no host")))?
            .to_owned();
        // The allow-list is not repeated: it may name internal hosts the
        // model (and so the user) has no business learning.
        if !self.allow_hosts.iter().any(|p| host_matches(p, &host)) {
            return Err(ToolError(format!(
                "{host} is not among the hosts this agent may call"
            )));
        }
        if let Some(ip) = ip_literal(&host)
            && !self.allow_private
            && let Some(kind) = address::non_public(ip)
        {
            return Err(ToolError(refused_message(&host, ip, kind)));
        }

        let post = arguments["method"].as_str() == Some("POST");
        let mut request = if post {
            self.client.post(url)
        } else {
            self.client.get(url)
        };
        request = request.headers(request_headers(&arguments["headers"])?);
        if let Some(body) = arguments["body"].as_str() {
            if !post {
                return Err(ToolError("a body can only be sent with POST".into()));
            }
            request = request.body(body.to_owned());
        }

        let mut response = request.send().await.map_err(|e| failure(&host, &e))?;
        let status = response.status().as_u16();
        let headers: Map<String, Value> = RESPONSE_HEADERS
            .iter()
            .filter_map(|name| {
                let value = response.headers().get(*name)?.to_str().ok()?;
                Some(((*name).to_owned(), Value::from(value)))
            })
            .collect();
        let mut body = Vec::new();
        let mut truncated = false;
        while let Some(chunk) = response.chunk().await.map_err(|e| failure(&host, &e))? {
            let room = self.max_response_bytes - body.len();
            if chunk.len() > room {
                body.extend_from_slice(&chunk[..room]);
                truncated = true;
                break;
            }
            body.extend_from_slice(&chunk);
        }
        Ok(json!({
            "status": status,
            "headers": headers,
            "body": text(&body, truncated),
            "truncated": truncated,
        }))
    }
}

fn request_headers(headers: &Value) -> Result<HeaderMap, ToolError> {
    let mut map = HeaderMap::new();
    for (name, value) in headers.as_object().into_iter().flatten() {
        let header = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| ToolError(format!("/headers: {name:?} is not a valid header name")))?;
        if RESERVED_HEADERS.contains(&header.as_str()) {
            return Err(ToolError(format!(
                "/headers: {name} is set by the client and cannot be given"
            )));
        }
        let value = HeaderValue::from_str(value.as_str().unwrap_or_default())
            .map_err(|_| ToolError(format!("/headers/{name}: not a valid header value")))?;
        map.append(header, value);
    }
    Ok(map)
}

/// The body as text; a cut in the middle of a UTF-8 character is dropped
/// rather than shown as a replacement character.
fn text(body: &[u8], truncated: bool) -> String {
    let complete = match std::str::from_utf8(body) {
        Err(e) if truncated && e.error_len().is_none() => &body[..e.valid_up_to()],
        _ => body,
    };
    String::from_utf8_lossy(complete).into_owned()
}

/// A name or address that resolves to a non-public address.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
struct Refused {
    message: String,
}

fn refused_message(host: &str, ip: IpAddr, kind: &str) -> String {
    let target = if ip_literal(host) == Some(ip) {
        format!("{host} is")
    } else {
        format!("{host} resolves to {ip},")
    };
    format!("{target} {kind} address; only public addresses may be requested")
}

/// A failed request, worded for the model: a refused address says so, a
/// connection failure gives its root cause.
fn failure(host: &str, error: &reqwest::Error) -> ToolError {
    // The innermost cause says what happened; reqwest's outer layers only
    // repeat the URL.
    let mut innermost: &(dyn StdError + 'static) = error;
    while let Some(cause) = innermost.source() {
        innermost = cause;
        if let Some(refused) = cause.downcast_ref::<Refused>() {
            return ToolError(refused.message.clone());
        }
    }
    let what = if error.is_connect() {
        format!("cannot connect to {host}")
    } else {
        format!("the request to {host} failed")
    };
    ToolError(format!("{what}: {innermost}"))
}

/// A resolver that refuses names resolving to any non-public address; the
/// addresses it returns are the ones connected to.
struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addresses: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if let Some((ip, kind)) = addresses
                .iter()
                .find_map(|a| address::non_public(a.ip()).map(|kind| (a.ip(), kind)))
            {
                return Err(Box::new(Refused {
                    message: refused_message(&host, ip, kind),
                }) as Box<dyn StdError + Send + Sync>);
            }
            Ok(Box::new(addresses.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests;
