//! The decoding loop: prompt in, text pieces out as tokens are sampled.

use candle_core::{Device, Tensor};
use candle_transformers::generation::{LogitsProcessor, Sampling};
use candle_transformers::utils::apply_repeat_penalty;

use super::model::Model;

/// How one answer is sampled.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampler {
    /// `0`: always the likeliest token.
    pub temperature: f64,
    pub top_p: f64,
    pub seed: u64,
    pub max_tokens: usize,
    /// Texts that end the answer (not included in it).
    pub stop: Vec<String>,
    /// Divides the scores of tokens the answer already used (`1`: off), so
    /// that a small model does not fall into repeating itself.
    pub repeat_penalty: f32,
    /// How many of the answer's latest tokens the penalty looks at.
    pub repeat_last_n: usize,
}

/// Why an answer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// The model ended its turn.
    EndOfTurn,
    /// A stop sequence appeared.
    Stop,
    /// `max_tokens` were generated.
    Length,
    /// The receiver of the text went away (the run was cancelled).
    Cancelled,
}

/// What a generation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generated {
    pub prompt_tokens: usize,
    /// Tokens sampled, the end-of-turn token included.
    pub output_tokens: usize,
    pub finish: Finish,
}

/// Generate an answer to `prompt`, handing each new piece of text to
/// `emit` after every token (an empty piece while text is held back),
/// which returns `false` to stop.
pub fn generate(
    model: &Model,
    prompt: &[u32],
    sampler: &Sampler,
    mut emit: impl FnMut(&str) -> bool,
) -> Result<Generated, String> {
    let failed = |e: candle_core::Error| format!("running the model: {e}");
    let mut weights = model.weights.clone();
    let sampling = if sampler.temperature <= 0.0 {
        Sampling::ArgMax
    } else if sampler.top_p >= 1.0 {
        Sampling::All {
            temperature: sampler.temperature,
        }
    } else {
        Sampling::TopP {
            p: sampler.top_p,
            temperature: sampler.temperature,
        }
    };
    let mut logits_processor = LogitsProcessor::from_sampling(sampler.seed, sampling);
    let mut text = TextOut::new(&sampler.stop);
    let mut generated: Vec<u32> = Vec::with_capacity(sampler.max_tokens);
    let mut input = Tensor::new(prompt, &Device::Cpu)
        .and_then(|t| t.unsqueeze(0))
        .map_err(failed)?;
    let mut position = 0;
    let finish = loop {
        if generated.len() >= sampler.max_tokens {
            break Finish::Length;
        }
        let mut logits = weights
            .forward(&input, position)
            .and_then(|l| l.squeeze(0))
            .map_err(failed)?;
        position += input.dim(1).map_err(failed)?;
        if sampler.repeat_penalty != 1.0 {
            let recent = &generated[generated.len().saturating_sub(sampler.repeat_last_n)..];
            logits =
                apply_repeat_penalty(&logits, sampler.repeat_penalty, recent).map_err(failed)?;
        }
        let token = logits_processor.sample(&logits).map_err(failed)?;
        generated.push(token);
        if model.stop_tokens.contains(&token) {
            break Finish::EndOfTurn;
        }
        let decoded = model.tokenizer.decode(&generated[text.first_token..])?;
        let (piece, stopped) = text.push(&decoded, generated.len());
        if !emit(piece) {
            break Finish::Cancelled;
        }
        if stopped {
            break Finish::Stop;
        }
        input = Tensor::new(&[token], &Device::Cpu)
            .and_then(|t| t.unsqueeze(0))
            .map_err(failed)?;
    };
    if matches!(finish, Finish::EndOfTurn | Finish::Length) {
        let rest = text.rest();
        if !rest.is_empty() {
            emit(&rest);
        }
    }
    Ok(Generated {
        prompt_tokens: prompt.len(),
        output_tokens: generated.len(),
        finish,
    })
}

/// The answer's text as tokens arrive: it hands out only complete
/// characters, and holds back what could be the start of a stop sequence.
struct TextOut<'a> {
    stop: &'a [String],
    /// The text of the tokens from `first_token` on.
    pending: String,
    /// How much of `pending` was handed out.
    sent: usize,
    /// Tokens before this one are in text already handed out.
    first_token: usize,
    piece: String,
}

impl<'a> TextOut<'a> {
    fn new(stop: &'a [String]) -> Self {
        Self {
            stop,
            pending: String::new(),
            sent: 0,
            first_token: 0,
            piece: String::new(),
        }
    }

    /// The text of the tokens since `first_token` is now `decoded`, after
    /// `count` tokens: the piece that can be handed out, and whether a stop
    /// sequence ended the answer.
    fn push(&mut self, decoded: &str, count: usize) -> (&str, bool) {
        self.piece.clear();
        // An incomplete character decodes as U+FFFD: wait for its next bytes.
        if decoded.ends_with('\u{FFFD}') {
            return (&self.piece, false);
        }
        self.pending.clear();
        self.pending.push_str(decoded);
        let mut search_from = self.sent.saturating_sub(self.longest_stop());
        while !self.pending.is_char_boundary(search_from) {
            search_from -= 1;
        }
        let found = self
            .stop
            .iter()
            .filter_map(|s| self.pending[search_from..].find(s.as_str()))
            .min()
            .map(|at| search_from + at);
        let (end, stopped) = match found {
            Some(at) => (at.max(self.sent), true),
            None => (self.sent + self.safe_len(), false),
        };
        self.piece.push_str(&self.pending[self.sent..end]);
        self.sent = end;
        if !stopped && self.sent == self.pending.len() {
            // Everything so far is out: start the next text afresh, so that
            // each token is decoded once or twice, not the whole answer.
            self.first_token = count;
            self.pending.clear();
            self.sent = 0;
        }
        (&self.piece, stopped)
    }

    /// How much of the unsent text is certainly not a stop sequence's start.
    fn safe_len(&self) -> usize {
        let unsent = &self.pending[self.sent..];
        unsent
            .char_indices()
            .map(|(i, _)| i)
            .find(|&i| {
                let tail = &unsent[i..];
                self.stop.iter().any(|s| s.starts_with(tail))
            })
            .unwrap_or(unsent.len())
    }

    fn longest_stop(&self) -> usize {
        self.stop.iter().map(String::len).max().unwrap_or(0)
    }

    /// What is still held back, once the answer is over.
    fn rest(&self) -> String {
        self.pending[self.sent..].to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stop: &[&str], pieces: &[&str]) -> (String, bool) {
        let stop: Vec<String> = stop.iter().map(|s| s.to_string()).collect();
        let mut out = TextOut::new(&stop);
        let mut decoded = String::new();
        let mut text = String::new();
        for (i, piece) in pieces.iter().enumerate() {
            // What decoding the tokens since `first_token` gives.
            if out.first_token == i {
                decoded.clear();
            }
            decoded.push_str(piece);
            let (emitted, stopped) = out.push(&decoded, i + 1);
            text.push_str(emitted);
            if stopped {
                return (text, true);
            }
        }
        text.push_str(&out.rest());
        (text, false)
    }

    #[test]
    fn text_without_stops_passes_whole() {
        assert_eq!(
            run(&[], &["Hel", "lo", " there"]),
            ("Hello there".into(), false)
        );
    }

    #[test]
    fn a_stop_sequence_ends_the_text_before_it() {
        assert_eq!(
            run(&["User:"], &["Hi", " Us", "er", ": more"]),
            ("Hi ".into(), true)
        );
        assert_eq!(run(&["\n\n"], &["a\n", "\nb"]), ("a".into(), true));
    }

    #[test]
    fn a_possible_stop_start_is_released_when_it_is_not_one() {
        assert_eq!(run(&["User:"], &["Us", "ually"]), ("Usually".into(), false));
        assert_eq!(run(&["User:"], &["Hi Us"]), ("Hi Us".into(), false));
    }

    #[test]
    fn stops_are_found_after_multibyte_text() {
        assert_eq!(run(&["ab"], &["ééé", "é a", "b"]), ("éééé ".into(), true));
    }

    #[test]
    fn incomplete_characters_wait_for_their_bytes() {
        let stop: Vec<String> = Vec::new();
        let mut out = TextOut::new(&stop);
        assert_eq!(out.push("caf\u{FFFD}", 1), ("", false));
        assert_eq!(out.push("café", 2), ("café", false));
    }
}
