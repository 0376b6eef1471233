//! The upstream of an `http` agent: the streaming endpoint its answers
//! come from, as written in the catalog (`upstream = {...}` on the agent)
//! and in the API (`"workflow": {"kind": "http", "upstream": {...}}`):
//!
//! ```toml
//! [[agents]]
//! id = "legacy"
//! name = "Legacy agent"
//! model = "legacy-agent"
//! workflow = "http"
//! upstream = { url = "https://app.example.com/api/chat", protocol = "ai-sdk",
//!              headers_env = { authorization = "LEGACY_AGENT_TOKEN" }, timeout_secs = 60 }
//! ```
//!
//! Credentials are never written here: `headers_env` maps a header name to
//! the environment variable holding the header's whole value, read by the
//! worker when a run starts.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Seconds to wait for the upstream's response, and between two of its
/// stream messages, unless the agent says otherwise.
pub const DEFAULT_UPSTREAM_TIMEOUT_SECS: u64 = 60;

/// Where an `http` agent's answers come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    /// `ai-sdk`: the route's full URL (e.g. `https://app.example.com/api/chat`).
    /// `openai`: the base URL as for an `openai` provider (e.g.
    /// `http://vllm:8000/v1`); `/chat/completions` is appended.
    pub url: String,
    pub protocol: UpstreamProtocol,
    /// Header name → the environment variable holding its value, e.g.
    /// `{"authorization": "UPSTREAM_TOKEN"}` with `UPSTREAM_TOKEN="Bearer …"`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers_env: BTreeMap<String, String>,
    /// Seconds to wait for the response to start and for each stream
    /// message after the one before (not for the whole answer).
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
}

fn default_timeout_secs() -> u64 {
    DEFAULT_UPSTREAM_TIMEOUT_SECS
}

/// The wire format an upstream speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum UpstreamProtocol {
    /// The Vercel AI SDK's UI message stream (a Next.js `useChat` route).
    #[serde(rename = "ai-sdk")]
    AiSdk,
    /// OpenAI's streamed chat completions.
    #[serde(rename = "openai")]
    Openai,
}

impl UpstreamProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AiSdk => "ai-sdk",
            Self::Openai => "openai",
        }
    }
}

impl Upstream {
    /// What is wrong with these settings, if anything: the URL must be an
    /// absolute `http(s)` URL without credentials, header names valid HTTP
    /// tokens, variable names valid environment variable names.
    pub fn problem(&self) -> Option<String> {
        match url::Url::parse(&self.url) {
            Err(e) => return Some(format!("upstream.url {:?} is not a URL: {e}", self.url)),
            Ok(url) if !matches!(url.scheme(), "http" | "https") => {
                return Some(format!("upstream.url {:?} must be http or https", self.url));
            }
            Ok(url) if !url.username().is_empty() || url.password().is_some() => {
                return Some(format!(
                    "upstream.url must not hold credentials; send them with headers_env \
                     (host {:?})",
                    url.host_str().unwrap_or_default()
                ));
            }
            Ok(_) => {}
        }
        if self.timeout_secs == 0 || self.timeout_secs > 3600 {
            return Some("upstream.timeout_secs must be between 1 and 3600".into());
        }
        for (header, var) in &self.headers_env {
            if header.is_empty() || !header.bytes().all(is_token_byte) {
                return Some(format!(
                    "upstream.headers_env: {header:?} is not a valid HTTP header name"
                ));
            }
            if !is_env_name(var) {
                return Some(format!(
                    "upstream.headers_env.{header}: {var:?} is not an environment variable name \
                     (the value is read from that variable, never written here)"
                ));
            }
        }
        None
    }
}

/// RFC 9110 `tchar`.
fn is_token_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

/// `[A-Za-z_][A-Za-z0-9_]*`.
pub(super) fn is_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(url: &str) -> Upstream {
        Upstream {
            url: url.into(),
            protocol: UpstreamProtocol::AiSdk,
            headers_env: BTreeMap::new(),
            timeout_secs: 5,
        }
    }

    #[test]
    fn urls_must_be_http_without_credentials() {
        assert_eq!(upstream("https://app.example.com/api/chat").problem(), None);
        assert!(
            upstream("not a url")
                .problem()
                .unwrap()
                .contains("not a URL")
        );
        assert!(
            upstream("ftp://x/y")
                .problem()
                .unwrap()
                .contains("http or https")
        );
        let with_password = upstream("https://u:secret@x.example/api")
            .problem()
            .unwrap();
        assert!(with_password.contains("headers_env"), "{with_password}");
        assert!(!with_password.contains("secret"), "{with_password}");
    }

    #[test]
    fn header_and_variable_names_are_checked() {
        let mut settings = upstream("http://127.0.0.1:3000/api/chat");
        settings
            .headers_env
            .insert("authorization".into(), "UPSTREAM_TOKEN".into());
        assert_eq!(settings.problem(), None);
        settings
            .headers_env
            .insert("x-key".into(), "Bearer abc".into());
        assert!(
            settings
                .problem()
                .unwrap()
                .contains("environment variable name")
        );
        settings.headers_env.clear();
        settings.headers_env.insert("bad header".into(), "X".into());
        assert!(settings.problem().unwrap().contains("header name"));
    }

    #[test]
    fn timeouts_are_bounded() {
        let mut settings = upstream("http://127.0.0.1:3000/api/chat");
        settings.timeout_secs = 0;
        assert!(settings.problem().unwrap().contains("timeout_secs"));
    }

    #[test]
    fn protocols_are_named_as_written() {
        let parsed: Upstream = serde_json::from_value(serde_json::json!({
            "url": "http://h/v1", "protocol": "openai"
        }))
        .unwrap();
        assert_eq!(parsed.protocol, UpstreamProtocol::Openai);
        assert_eq!(parsed.timeout_secs, DEFAULT_UPSTREAM_TIMEOUT_SECS);
        let unknown = serde_json::from_value::<Upstream>(serde_json::json!({
            "url": "http://h/v1", "protocol": "grpc"
        }))
        .unwrap_err();
        assert!(unknown.to_string().contains("ai-sdk"), "{unknown}");
    }

    /// A catalog with one scripted provider, an agent, and `agent` after it.
    fn catalog(agent: &str) -> Result<crate::config::Catalog, String> {
        let text = format!(
            "[[providers]]\nname = \"p\"\nkind = \"scripted\"\n\n[[agents]]\nid = \"a\"\n\
             name = \"A\"\nprovider = \"p\"\nmodel = \"m\"\n\n[[agents]]\n{agent}"
        );
        crate::config::Catalog::parse(&text, std::path::Path::new("agents.toml"))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn an_http_agent_parses_with_its_upstream() {
        let parsed = catalog(
            "id = \"legacy\"\nname = \"Legacy\"\nmodel = \"legacy-1\"\nworkflow = \"http\"\n\
             upstream = { url = \"https://app.example.com/api/chat\", protocol = \"ai-sdk\", \
             headers_env = { authorization = \"LEGACY_TOKEN\" } }\n",
        )
        .unwrap();
        let agent = parsed.agent("legacy").unwrap();
        assert_eq!(agent.workflow.kind, crate::domain::WorkflowKind::Http);
        assert_eq!(agent.provider, "");
        let upstream = agent.workflow.upstream.as_ref().unwrap();
        assert_eq!(upstream.protocol, UpstreamProtocol::AiSdk);
        assert_eq!(upstream.headers_env["authorization"], "LEGACY_TOKEN");
        assert_eq!(upstream.timeout_secs, DEFAULT_UPSTREAM_TIMEOUT_SECS);
    }

    #[test]
    fn a_bad_upstream_url_names_the_agent_line() {
        let err = catalog(
            "id = \"legacy\"\nname = \"Legacy\"\nmodel = \"m\"\nworkflow = \"http\"\n\
             upstream = { url = \"localhost:3000/api/chat\", protocol = \"ai-sdk\" }\n",
        )
        .unwrap_err();
        assert!(err.starts_with("agents.toml:11:"), "{err}");
        assert!(
            err.contains("agent \"legacy\"") && err.contains("http or https"),
            "{err}"
        );
    }

    #[test]
    fn an_unknown_protocol_names_its_line() {
        let err = catalog(
            "id = \"legacy\"\nname = \"Legacy\"\nmodel = \"m\"\nworkflow = \"http\"\n\
             upstream = { url = \"http://h/api/chat\", protocol = \"grpc\" }\n",
        )
        .unwrap_err();
        assert!(err.starts_with("agents.toml:16:"), "{err}");
        assert!(err.contains("grpc") && err.contains("ai-sdk"), "{err}");
    }

    #[test]
    fn http_agents_take_an_upstream_and_nothing_run_here() {
        let missing = catalog("id = \"h\"\nname = \"H\"\nmodel = \"m\"\nworkflow = \"http\"\n");
        assert!(missing.unwrap_err().contains("needs an upstream"));
        let upstream = "upstream = { url = \"http://h/v1\", protocol = \"openai\" }\n";
        let with_provider = catalog(&format!(
            "id = \"h\"\nname = \"H\"\nprovider = \"p\"\nmodel = \"m\"\nworkflow = \"http\"\n{upstream}"
        ));
        assert!(with_provider.unwrap_err().contains("leave provider out"));
        let with_tools = catalog(&format!(
            "id = \"h\"\nname = \"H\"\nmodel = \"m\"\nworkflow = \"http\"\ntools = [\"calculator\"]\n{upstream}"
        ));
        assert!(with_tools.unwrap_err().contains("leave tools out"));
        let on_single = catalog(&format!(
            "id = \"h\"\nname = \"H\"\nprovider = \"p\"\nmodel = \"m\"\n{upstream}"
        ));
        assert!(on_single.unwrap_err().contains("needs the http workflow"));
        let no_provider = catalog("id = \"h\"\nname = \"H\"\nmodel = \"m\"\n");
        assert!(no_provider.unwrap_err().contains("provider is required"));
    }
}
