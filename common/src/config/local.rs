//! The `local` provider's settings and where its model file lives.
//!
//! The local provider runs a GGUF model in the worker process. Without a
//! `model_path` it uses SmolLM2-135M-Instruct from the model cache
//! directory, which `switchyard model fetch` fills.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The file name of the default model in the cache directory.
pub const DEFAULT_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// The environment variable that overrides the model cache directory.
pub const MODEL_DIR_ENV: &str = "SWITCHYARD_MODEL_DIR";

/// `[[providers]]` with `kind = "local"`: a GGUF model run in-process.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct LocalSettings {
    /// The GGUF file; the cached default model when unset.
    pub model_path: Option<PathBuf>,
    /// Generations running at once in one worker; more wait their turn.
    #[serde(default = "default_max_concurrent")]
    pub max_concurrent: usize,
    /// Sampling temperature; `0` always takes the likeliest token.
    #[serde(default = "default_temperature")]
    pub temperature: f64,
    /// Nucleus sampling: keep the likeliest tokens whose probabilities add
    /// up to this (`1` keeps all).
    #[serde(default = "default_top_p")]
    pub top_p: f64,
    /// The sampler's seed; every answer to the same prompt is the same.
    /// Unset: a new seed for every answer.
    pub seed: Option<u64>,
    /// Most tokens of one answer.
    #[serde(default = "default_max_tokens")]
    pub max_tokens: usize,
    /// Texts that end the answer where they appear (not included).
    #[serde(default)]
    pub stop: Vec<String>,
    /// Divides the scores of the tokens used in the answer's last
    /// `repeat_last_n` tokens (`1`: no penalty). A small model without it
    /// falls into repeating a sentence until `max_tokens`.
    #[serde(default = "default_repeat_penalty")]
    pub repeat_penalty: f32,
    /// How many of the answer's latest tokens `repeat_penalty` looks at
    /// (the whole of a default-length answer: the loops of a small model
    /// are often longer than a 64-token window).
    #[serde(default = "default_repeat_last_n")]
    pub repeat_last_n: usize,
    /// Prompt and answer together, in tokens: the oldest turns are left out
    /// of a longer conversation.
    #[serde(default = "default_context_tokens")]
    pub context_tokens: usize,
    /// Re-quantize the weights at load time to a format with faster CPU
    /// kernels: `q8_0` (the default; about twice the memory of 4-bit) or
    /// `none` to keep the file's own.
    #[serde(default = "default_requantize")]
    pub requantize: Requantize,
}

/// A weight format to convert the model's matrices to when loading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Requantize {
    None,
    Q8_0,
}

/// The longest context the local model code supports (prompt and answer).
pub const MAX_CONTEXT_TOKENS: usize = 4096;

fn default_max_concurrent() -> usize {
    1
}

fn default_temperature() -> f64 {
    0.2
}

fn default_top_p() -> f64 {
    0.9
}

/// A chat answer, not an essay: about 200 words.
fn default_max_tokens() -> usize {
    256
}

fn default_repeat_penalty() -> f32 {
    1.1
}

fn default_repeat_last_n() -> usize {
    256
}

fn default_context_tokens() -> usize {
    2048
}

fn default_requantize() -> Requantize {
    Requantize::Q8_0
}

impl Default for LocalSettings {
    fn default() -> Self {
        Self {
            model_path: None,
            max_concurrent: default_max_concurrent(),
            temperature: default_temperature(),
            top_p: default_top_p(),
            seed: None,
            max_tokens: default_max_tokens(),
            stop: Vec::new(),
            repeat_penalty: default_repeat_penalty(),
            repeat_last_n: default_repeat_last_n(),
            context_tokens: default_context_tokens(),
            requantize: default_requantize(),
        }
    }
}

impl LocalSettings {
    /// The model file these settings load.
    pub fn model_file(&self) -> PathBuf {
        self.model_path
            .clone()
            .unwrap_or_else(|| default_model_path(|name| std::env::var(name).ok()))
    }

    /// What is wrong with these settings, if anything.
    pub(super) fn problem(&self) -> Option<String> {
        if self.max_concurrent == 0 {
            Some("max_concurrent must be at least 1".into())
        } else if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            Some("temperature must be a number of at least 0".into())
        } else if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            Some("top_p must be above 0 and at most 1".into())
        } else if self.max_tokens == 0 {
            Some("max_tokens must be at least 1".into())
        } else if !(self.repeat_penalty.is_finite() && (1.0..=2.0).contains(&self.repeat_penalty)) {
            Some("repeat_penalty must be from 1 (none) to 2".into())
        } else if self.stop.iter().any(String::is_empty) {
            Some("stop sequences must not be empty".into())
        } else if self.context_tokens <= self.max_tokens || self.context_tokens > MAX_CONTEXT_TOKENS
        {
            Some(format!(
                "context_tokens must be above max_tokens and at most {MAX_CONTEXT_TOKENS}"
            ))
        } else {
            None
        }
    }
}

/// The model cache directory: `SWITCHYARD_MODEL_DIR`, else
/// `$XDG_CACHE_HOME/switchyard/models`, else `$HOME/.cache/switchyard/models`,
/// else `.switchyard/models` under the current directory.
pub fn model_dir(lookup: impl Fn(&str) -> Option<String>) -> PathBuf {
    let set = |name: &str| lookup(name).filter(|v| !v.is_empty());
    if let Some(dir) = set(MODEL_DIR_ENV) {
        return PathBuf::from(dir);
    }
    if let Some(cache) = set("XDG_CACHE_HOME") {
        return Path::new(&cache).join("switchyard").join("models");
    }
    if let Some(home) = set("HOME") {
        return Path::new(&home)
            .join(".cache")
            .join("switchyard")
            .join("models");
    }
    PathBuf::from(".switchyard").join("models")
}

/// Where the default model is kept.
pub fn default_model_path(lookup: impl Fn(&str) -> Option<String>) -> PathBuf {
    model_dir(lookup).join(DEFAULT_MODEL_FILE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ProviderKind;
    use crate::config::catalog::testing::parse;

    #[test]
    fn the_model_dir_follows_the_environment() {
        let env = crate::config::lookup_of;
        assert_eq!(
            model_dir(env(&[(MODEL_DIR_ENV, "/m"), ("HOME", "/h")])),
            PathBuf::from("/m")
        );
        assert_eq!(
            model_dir(env(&[("XDG_CACHE_HOME", "/c"), ("HOME", "/h")])),
            PathBuf::from("/c/switchyard/models")
        );
        assert_eq!(
            default_model_path(env(&[("HOME", "/h")])),
            PathBuf::from("/h/.cache/switchyard/models").join(DEFAULT_MODEL_FILE)
        );
        assert_eq!(model_dir(env(&[])), PathBuf::from(".switchyard/models"));
    }

    #[test]
    fn bad_settings_are_named() {
        let bad = |f: fn(&mut LocalSettings)| {
            let mut settings = LocalSettings::default();
            f(&mut settings);
            settings.problem().expect("a problem")
        };
        assert!(bad(|s| s.max_concurrent = 0).contains("max_concurrent"));
        assert!(bad(|s| s.temperature = -1.0).contains("temperature"));
        assert!(bad(|s| s.top_p = 0.0).contains("top_p"));
        assert!(bad(|s| s.max_tokens = 0).contains("max_tokens"));
        assert!(bad(|s| s.repeat_penalty = 0.5).contains("repeat_penalty"));
        assert!(bad(|s| s.stop = vec![String::new()]).contains("stop"));
        assert!(bad(|s| s.context_tokens = 100_000).contains("context_tokens"));
        assert_eq!(LocalSettings::default().problem(), None);
    }

    #[test]
    fn local_providers_parse_and_bad_settings_are_refused() {
        let catalog = parse(
            r#"
[[providers]]
name = "small"
kind = "local"
model_path = "m.gguf"
temperature = 0
seed = 7
max_tokens = 64
stop = ["User:"]

[[agents]]
id = "a"
name = "A"
provider = "small"
model = "smollm2"
instructions = "Hi."
"#,
        )
        .unwrap();
        let ProviderKind::Local(local) = &catalog.providers[0].kind else {
            panic!("expected a local provider");
        };
        assert_eq!(local.seed, Some(7));
        assert_eq!(local.max_tokens, 64);
        assert_eq!(local.requantize, Requantize::Q8_0);
        let error = parse(
            "[[providers]]\nname = \"small\"\nkind = \"local\"\ntop_p = 2\n\n[[agents]]\nid = \"a\"\nname = \"A\"\nprovider = \"small\"\nmodel = \"m\"\ninstructions = \"x\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("top_p"), "{error}");
    }
}
