//! Loading a GGUF model: the Llama weights (optionally re-quantized) and
//! the tokenizer, both from the file alone.

use std::io::{Cursor, Seek};
use std::path::Path;

use candle_core::Device;
use candle_core::quantized::{GgmlDType, QTensor, gguf_file};
use candle_transformers::models::quantized_llama::ModelWeights;
use switchyard_common::config::Requantize;
use tokenizers::Tokenizer;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;

/// The chat-turn markers of the ChatML template.
pub const IM_START: &str = "<|im_start|>";
pub const IM_END: &str = "<|im_end|>";

/// A loaded model, shared by every generation (each clones the weights,
/// which shares their storage, for a cache of its own).
pub struct Model {
    pub(super) weights: ModelWeights,
    pub tokenizer: TextTokenizer,
    /// Tokens that end an answer.
    pub(super) stop_tokens: Vec<u32>,
    pub(super) im_start: u32,
    pub(super) im_end: u32,
}

/// Byte-level BPE as in GPT-2 with digits split one by one (SmolLM2's
/// tokenizer), built from the GGUF vocabulary and merges. It knows no
/// special tokens: text is always text, and the template places the chat
/// markers by id, so a message cannot forge a turn.
pub struct TextTokenizer {
    inner: Tokenizer,
    tokens: Vec<String>,
}

impl TextTokenizer {
    /// The ids of `text`.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, String> {
        self.inner
            .encode_fast(text, false)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| format!("tokenizing: {e}"))
    }

    /// The text of `ids` (bytes that do not yet form a character come out
    /// as U+FFFD).
    pub fn decode(&self, ids: &[u32]) -> Result<String, String> {
        self.inner
            .decode(ids, false)
            .map_err(|e| format!("decoding tokens: {e}"))
    }

    /// The id of a vocabulary entry, as written in the file.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.tokens
            .iter()
            .position(|t| t == token)
            .map(|i| i as u32)
    }

    /// The vocabulary entry of `id`.
    pub fn token(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }
}

/// Load the model at `path`.
pub fn load(path: &Path, requantize: Requantize) -> Result<Model, String> {
    let context = |e: &dyn std::fmt::Display| format!("reading the model {}: {e}", path.display());
    let mut file = std::fs::File::open(path).map_err(|e| context(&e))?;
    let content = gguf_file::Content::read(&mut file).map_err(|e| context(&e))?;
    let tokenizer = tokenizer(&content).map_err(|e| context(&e))?;
    let special = |name: &str| {
        tokenizer
            .token_id(name)
            .ok_or_else(|| context(&format!("the vocabulary has no {name} token")))
    };
    let im_start = special(IM_START)?;
    let im_end = special(IM_END)?;
    let mut stop_tokens = vec![im_end];
    if let Some(eos) = content
        .metadata
        .get("tokenizer.ggml.eos_token_id")
        .and_then(|v| v.to_u32().ok())
    {
        stop_tokens.push(eos);
    }
    let weights = match requantize {
        Requantize::None => ModelWeights::from_gguf(content, &mut file, &Device::Cpu),
        Requantize::Q8_0 => {
            let mut converted = to_q8_0(&content, &mut file).map_err(|e| context(&e))?;
            let content = gguf_file::Content::read(&mut converted).map_err(|e| context(&e))?;
            ModelWeights::from_gguf(content, &mut converted, &Device::Cpu)
        }
    }
    .map_err(|e| context(&e))?;
    Ok(Model {
        weights,
        tokenizer,
        stop_tokens,
        im_start,
        im_end,
    })
}

/// The file's content with every 4- or 5-bit matrix converted to Q8_0,
/// whose dot products have vectorised kernels on x86 and ARM, as an
/// in-memory GGUF file.
fn to_q8_0(
    content: &gguf_file::Content,
    file: &mut std::fs::File,
) -> candle_core::Result<Cursor<Vec<u8>>> {
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    let mut tensors = Vec::with_capacity(names.len());
    for name in names {
        file.rewind()?;
        let tensor = content.tensor(file, name, &Device::Cpu)?;
        let convert = matches!(
            tensor.dtype(),
            GgmlDType::Q4_0 | GgmlDType::Q4_1 | GgmlDType::Q5_0 | GgmlDType::Q5_1
        ) && tensor.shape().dims().last().is_some_and(|k| k % 32 == 0);
        let tensor = if convert {
            QTensor::quantize(&tensor.dequantize(&Device::Cpu)?, GgmlDType::Q8_0)?
        } else {
            tensor
        };
        tensors.push((name.as_str(), tensor));
    }
    let metadata: Vec<(&str, &gguf_file::Value)> = content
        .metadata
        .iter()
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    let refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (*n, t)).collect();
    let mut out = Cursor::new(Vec::new());
    gguf_file::write(&mut out, &metadata, &refs)?;
    out.rewind()?;
    Ok(out)
}

/// The tokenizer described by the file's `tokenizer.ggml.*` metadata.
fn tokenizer(content: &gguf_file::Content) -> Result<TextTokenizer, String> {
    let get = |key: &str| {
        content
            .metadata
            .get(key)
            .ok_or_else(|| format!("no {key} in the metadata"))
    };
    let strings = |key: &str| -> Result<Vec<String>, String> {
        get(key)?
            .to_vec()
            .map_err(|e| format!("{key}: {e}"))?
            .iter()
            .map(|v| v.to_string().cloned().map_err(|e| format!("{key}: {e}")))
            .collect()
    };
    let model = get("tokenizer.ggml.model")?
        .to_string()
        .map_err(|e| e.to_string())?;
    if model != "gpt2" {
        return Err(format!(
            "the tokenizer is {model:?}; only byte-level BPE (\"gpt2\") is supported"
        ));
    }
    let tokens = strings("tokenizer.ggml.tokens")?;
    let merges = strings("tokenizer.ggml.merges")?
        .into_iter()
        .map(|m| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_owned(), b.to_owned()))
                .ok_or_else(|| format!("bad merge {m:?}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let vocab: Vocab = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| format!("building the BPE model: {e}"))?;
    let mut inner = Tokenizer::new(bpe);
    inner.with_pre_tokenizer(Some(Sequence::new(vec![
        Digits::new(true).into(),
        ByteLevel::new(false, true, true).into(),
    ])));
    inner.with_decoder(Some(ByteLevelDecoder::default()));
    Ok(TextTokenizer { inner, tokens })
}
