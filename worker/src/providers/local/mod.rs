//! The `local` provider: a GGUF chat model (SmolLM2-135M-Instruct by
//! default) run in the worker process on the CPU, with candle's quantized
//! Llama.
//!
//! The model and its tokenizer both come from the file. It is loaded once,
//! in the background from the moment the provider is built; every answer
//! runs on a blocking thread of its own (never on the async runtime), at
//! most `max_concurrent` at once per worker, the others waiting for a turn.
//! Pieces of text go out through a channel as tokens are sampled; when the
//! run stops listening (a cancel, a timeout) generation stops at the next
//! token. The model offers no tool calls: the tools of a request are not
//! shown to it (see [`template`] for how earlier tool calls are rendered).

pub mod generate;
pub mod model;
pub mod template;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use futures::StreamExt;
use switchyard_common::config::{LocalSettings, Requantize};
use switchyard_common::domain::Usage;
use tokio::sync::{Semaphore, mpsc};

use super::{ChatRequest, Provider, ProviderError, ProviderEvent, ProviderStream};
use generate::{Sampler, generate};
use model::Model;

/// Pieces of text waiting for the run: the generation blocks when the run
/// falls this far behind.
const CHANNEL_CAPACITY: usize = 256;

type Loaded = Result<Arc<Model>, String>;

pub struct Local {
    settings: LocalSettings,
    path: PathBuf,
    model: Arc<OnceLock<Loaded>>,
    permits: Arc<Semaphore>,
}

impl Local {
    /// A provider for `settings`; fails at once when the model file is
    /// missing, and starts loading it in the background.
    pub fn new(settings: LocalSettings) -> anyhow::Result<Self> {
        let path = settings.model_file();
        if !path.is_file() {
            anyhow::bail!(
                "the model file {} does not exist (`switchyard model fetch` downloads the default model)",
                path.display()
            );
        }
        let local = Self {
            permits: Arc::new(Semaphore::new(settings.max_concurrent)),
            settings,
            path,
            model: Arc::new(OnceLock::new()),
        };
        let (model, path, requantize) = (
            local.model.clone(),
            local.path.clone(),
            local.settings.requantize,
        );
        std::thread::Builder::new()
            .name("local-model-load".into())
            .spawn(move || {
                let _ = load_once(&model, &path, requantize);
            })?;
        Ok(local)
    }

    /// The loaded model, waiting for the load if it is under way.
    pub fn model_blocking(&self) -> Loaded {
        load_once(&self.model, &self.path, self.settings.requantize)
    }

    /// Generations that could start now without waiting.
    pub fn idle_slots(&self) -> usize {
        self.permits.available_permits()
    }

    fn sampler(&self) -> Sampler {
        Sampler {
            temperature: self.settings.temperature,
            top_p: self.settings.top_p,
            seed: self.settings.seed.unwrap_or_else(rand::random),
            max_tokens: self.settings.max_tokens,
            stop: self.settings.stop.clone(),
            repeat_penalty: self.settings.repeat_penalty,
            repeat_last_n: self.settings.repeat_last_n,
        }
    }
}

fn load_once(cell: &OnceLock<Loaded>, path: &Path, requantize: Requantize) -> Loaded {
    cell.get_or_init(|| {
        let started = std::time::Instant::now();
        let loaded = model::load(path, requantize).map(Arc::new);
        match &loaded {
            Ok(_) => tracing::info!(
                path = %path.display(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "local model loaded"
            ),
            Err(error) => tracing::error!(%error, "the local model cannot be loaded"),
        }
        loaded
    })
    .clone()
}

impl Provider for Local {
    fn stream(&self, request: ChatRequest) -> ProviderStream {
        let permits = self.permits.clone();
        let cell = self.model.clone();
        let path = self.path.clone();
        let requantize = self.settings.requantize;
        let sampler = self.sampler();
        let budget = self.settings.context_tokens - self.settings.max_tokens;
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let start = async move {
            let permit = match permits.acquire_owned().await {
                Ok(permit) => permit,
                Err(_) => return,
            };
            tokio::task::spawn_blocking(move || {
                let _permit = permit;
                if tx.is_closed() {
                    return;
                }
                let result = answer(&cell, &path, requantize, &request, &sampler, budget, &tx);
                if let Err(error) = result {
                    let _ = tx.blocking_send(Err(error));
                }
            });
        };
        let events = tokio_stream::wrappers::ReceiverStream::new(rx);
        futures::stream::once(start)
            .filter_map(|()| async { None })
            .chain(events)
            .boxed()
    }

    fn max_attempts(&self) -> u32 {
        // A failure of the local model (a bad file) fails the same way again.
        1
    }
}

/// Generate one answer, sending its events to `tx` (blocking thread).
fn answer(
    cell: &OnceLock<Loaded>,
    path: &Path,
    requantize: Requantize,
    request: &ChatRequest,
    sampler: &Sampler,
    budget: usize,
    tx: &mpsc::Sender<Result<ProviderEvent, ProviderError>>,
) -> Result<(), ProviderError> {
    let model = load_once(cell, path, requantize).map_err(ProviderError::Local)?;
    let turns = template::turns(&request.messages);
    let prompt = template::fit(&model, &turns, budget).map_err(ProviderError::BadRequest)?;
    let generated = generate(&model, &prompt, sampler, |piece| {
        if piece.is_empty() {
            !tx.is_closed()
        } else {
            tx.blocking_send(Ok(ProviderEvent::TextDelta(piece.to_owned())))
                .is_ok()
        }
    })
    .map_err(ProviderError::Local)?;
    tracing::debug!(
        prompt_tokens = generated.prompt_tokens,
        output_tokens = generated.output_tokens,
        finish = ?generated.finish,
        "local generation finished"
    );
    let _ = tx.blocking_send(Ok(ProviderEvent::Usage(Usage {
        input_tokens: generated.prompt_tokens as i64,
        output_tokens: generated.output_tokens as i64,
        cached_input_tokens: 0,
    })));
    Ok(())
}
