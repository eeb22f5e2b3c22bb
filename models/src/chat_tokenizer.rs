//! The tokenizer and chat template a GGUF file carries in its metadata.
//!
//! Byte-level BPE (`tokenizer.ggml.model = gpt2`) is rebuilt as a Hugging Face `tokenizers`
//! tokenizer: the vocabulary and merges come from the file, control tokens become special tokens
//! (matched whole, e.g. `<|im_start|>`), and the pre-tokenizer follows `tokenizer.ggml.pre`. SmolLM2
//! (`pre = smollm`) splits every digit on its own and adds no prefix space; treating it as plain
//! GPT-2 with a prefix space gives different ids and inserts spaces when decoding.

use crate::gguf::{GgufFile, GgufValue};
use crate::{ModelError, Result};
use aho_corasick::{AhoCorasick, MatchKind};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, Tokenizer};

/// Instructions a chat template may execute per rendering (minijinja's fuel). Real templates use a
/// few dozen per message; a template that loops (`range(100000)` nested) stops here, after about a
/// tenth of a second, with an error instead of hanging the caller.
pub const TEMPLATE_FUEL: u64 = 5_000_000;

/// The longest token text accepted, in bytes. Real vocabularies stay far below (GPT-style byte-level
/// tokens are at most a few hundred bytes); a longer one makes building the tokenizer slow (work grows
/// faster than the token) and would weaken the prompt bound `context × max_token_bytes`.
pub const MAX_TOKEN_BYTES: usize = 1024;

/// GGUF token types (`tokenizer.ggml.token_type`).
const TOKEN_CONTROL: i64 = 3;
const TOKEN_USER_DEFINED: i64 = 4;

/// A message of a chat, as OpenAI's chat API and Hugging Face chat templates shape it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChatMessage {
    /// Who speaks: usually `system`, `user` or `assistant`. Passed to the template as it is; what
    /// roles mean (or whether an unknown one is an error) is up to the model's template.
    pub role: String,
    /// The message text. Tokenised as text, even where it spells a special token.
    pub content: String,
}

impl ChatMessage {
    /// A message from borrowed strings (copied).
    pub fn new(role: &str, content: &str) -> ChatMessage {
        ChatMessage { role: role.into(), content: content.into() }
    }
}

/// The tokenizer of a GGUF model, and its chat template.
///
/// Special-token text is control only where the template puts it: in chat messages it is text
/// (so a user's `<|im_end|>` cannot close a turn and forge another), see [`ChatTokenizer::encode_chat`].
pub struct ChatTokenizer {
    tokenizer: Tokenizer,
    /// The same tokenizer reading special-token text as plain text.
    text_tokenizer: Tokenizer,
    /// The special tokens, matched leftmost-longest as `tokenizers` splits on them, and their ids.
    specials: Option<(AhoCorasick, Vec<u32>)>,
    /// The most input bytes one token can stand for: a text of `n` bytes has at least
    /// `n / max_token_bytes` tokens, which bounds prompts before they are tokenised.
    max_token_bytes: usize,
    bos: Option<u32>,
    eos: Option<u32>,
    add_bos: bool,
    /// Token ids that end a generation (EOS, and end-of-turn tokens such as `<|im_end|>`).
    stop: Vec<u32>,
    chat_template: Option<String>,
    /// The parsed template (or why it does not parse), with [`TEMPLATE_FUEL`] set.
    template_env: Option<std::result::Result<minijinja::Environment<'static>, String>>,
}

/// An `io::Write` that refuses to grow past `cap` bytes (a template's output is bounded like its work).
struct CappedText {
    text: Vec<u8>,
    cap: usize,
    over: bool,
}

impl std::io::Write for CappedText {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.text.len() + buf.len() > self.cap {
            self.over = true;
            return Err(std::io::Error::other("the rendered prompt is over its size bound"));
        }
        self.text.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A piece of a rendered chat prompt: the template's own text, or message `i`'s content.
enum Piece<'a> {
    Template(&'a str),
    Content(usize),
}

impl ChatTokenizer {
    /// Builds the tokenizer from a GGUF file's `tokenizer.ggml.*` metadata and parses its
    /// `tokenizer.chat_template`. A template that does not parse is kept as an error, reported
    /// when a chat is rendered, so that plain-text prompts still work.
    ///
    /// # Errors
    ///
    /// [`ModelError::Tokenizer`] when the tokenizer is not byte-level BPE (`gpt2`), its
    /// pre-tokenizer is not `smollm`, `gpt2` or `default`, or the vocabulary, merges, token types
    /// or special token ids are missing, inconsistent or out of range (a token over
    /// [`MAX_TOKEN_BYTES`] bytes included).
    pub fn from_gguf(file: &GgufFile) -> Result<ChatTokenizer> {
        let bad = |m: String| ModelError::Tokenizer(format!("{}: {m}", file.path().display()));
        let model = file.value("tokenizer.ggml.model").and_then(GgufValue::as_str).unwrap_or("");
        if model != "gpt2" {
            return Err(bad(format!("tokenizer model `{model}` is not supported (only byte-level BPE, `gpt2`, is)")));
        }
        let strings = |key: &str| -> Result<Vec<String>> {
            let items = file.value(key).and_then(GgufValue::as_array).ok_or_else(|| bad(format!("no {key}")))?;
            items
                .iter()
                .map(|v| v.as_str().map(str::to_string).ok_or_else(|| bad(format!("{key} holds a non-string"))))
                .collect()
        };
        let tokens = strings("tokenizer.ggml.tokens")?;
        let merges: Vec<(String, String)> = strings("tokenizer.ggml.merges")?
            .into_iter()
            .map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| bad(format!("merge `{m}`")))
            })
            .collect::<Result<_>>()?;
        if tokens.is_empty() {
            return Err(bad("tokenizer.ggml.tokens is empty".into()));
        }
        if let Some((i, t)) = tokens.iter().enumerate().find(|(_, t)| t.is_empty() || t.len() > MAX_TOKEN_BYTES) {
            return Err(bad(format!(
                "tokenizer.ggml.tokens[{i}] is {} bytes; tokens must be 1 to {MAX_TOKEN_BYTES} bytes",
                t.len()
            )));
        }
        if merges.is_empty() {
            return Err(bad("tokenizer.ggml.merges is empty: a byte-level BPE needs its merges".into()));
        }
        // Token types: one per token, each a GGUF token type (1 normal … 6 byte); a short array
        // would silently demote control tokens to text.
        let types: Vec<i64> = match file.value("tokenizer.ggml.token_type").and_then(GgufValue::as_array) {
            Some(t) if t.len() != tokens.len() => {
                return Err(bad(format!(
                    "tokenizer.ggml.token_type has {} entries for {} tokens",
                    t.len(),
                    tokens.len()
                )))
            }
            Some(t) => t
                .iter()
                .enumerate()
                .map(|(i, v)| match v.as_u64() {
                    Some(x @ 1..=6) => Ok(x as i64),
                    _ => Err(bad(format!("tokenizer.ggml.token_type[{i}] is {v:?}, not a token type (1 to 6)"))),
                })
                .collect::<Result<_>>()?,
            None => vec![1; tokens.len()],
        };
        let vocab: Vocab = tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
        // Every merge joins two tokens into a third, all in the vocabulary (llama.cpp requires the
        // same); `tokenizers` would otherwise index past its buffers on such a file and panic.
        if let Some((a, b)) = merges
            .iter()
            .find(|(a, b)| !(vocab.contains_key(a) && vocab.contains_key(b) && vocab.contains_key(&format!("{a}{b}"))))
        {
            return Err(bad(format!("merge `{a} {b}` joins text that is not in the vocabulary")));
        }
        let bpe = BPE::builder().vocab_and_merges(vocab, merges).build().map_err(|e| bad(e.to_string()))?;
        let mut tokenizer = Tokenizer::new(bpe);
        let pre = file.value("tokenizer.ggml.pre").and_then(GgufValue::as_str).unwrap_or("default");
        let byte_level = ByteLevel::new(false, true, true);
        match pre {
            "smollm" => {
                let digits = PreTokenizerWrapper::Digits(Digits::new(true));
                tokenizer
                    .with_pre_tokenizer(Some(Sequence::new(vec![digits, PreTokenizerWrapper::ByteLevel(byte_level)])));
            }
            "gpt2" | "default" => {
                tokenizer.with_pre_tokenizer(Some(byte_level));
            }
            other => {
                return Err(bad(format!("pre-tokenizer `{other}` is not supported (smollm, gpt2 and default are)")))
            }
        }
        tokenizer.with_decoder(Some(ByteLevelDecoder::default()));
        let special: Vec<(u32, &String)> = tokens
            .iter()
            .zip(&types)
            .enumerate()
            .filter(|(_, (_, &t))| t == TOKEN_CONTROL || t == TOKEN_USER_DEFINED)
            .map(|(i, (s, _))| (i as u32, s))
            .filter(|(_, s)| !s.is_empty())
            .collect();
        tokenizer
            .add_special_tokens(special.iter().map(|(_, s)| AddedToken::from((*s).clone(), true)).collect::<Vec<_>>())
            .map_err(|e| bad(e.to_string()))?;
        let specials = if special.is_empty() {
            None
        } else {
            let matcher = AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostLongest)
                .build(special.iter().map(|(_, s)| s.as_str()))
                .map_err(|e| bad(format!("special tokens: {e}")))?;
            Some((matcher, special.iter().map(|(i, _)| *i).collect()))
        };
        let mut text_tokenizer = tokenizer.clone();
        text_tokenizer.set_encode_special_tokens(true);
        // Byte-level token strings hold one character per byte (at most 2 UTF-8 bytes each), and
        // special tokens stand for their own text, so a token string's length bounds its bytes.
        let max_token_bytes = tokens.iter().map(String::len).max().unwrap_or(1).max(1);

        // Special ids must name tokens of the vocabulary.
        let id = |key: &str| -> Result<Option<u32>> {
            match file.value(key) {
                None => Ok(None),
                Some(v) => match v.as_u64() {
                    Some(i) if (i as usize) < tokens.len() => Ok(Some(i as u32)),
                    _ => Err(bad(format!("{key} is {v:?}, not a token id below {}", tokens.len()))),
                },
            }
        };
        let (bos, eos) = (id("tokenizer.ggml.bos_token_id")?, id("tokenizer.ggml.eos_token_id")?);
        let add_bos = file.value("tokenizer.ggml.add_bos_token").and_then(GgufValue::as_bool).unwrap_or(false);
        let mut stop: Vec<u32> = eos.into_iter().collect();
        stop.extend(id("tokenizer.ggml.eot_token_id")?);
        for name in ["<|im_end|>", "<|eot_id|>", "<|endoftext|>", "</s>"] {
            if let Some(&i) = tokens.iter().position(|t| t == name).as_ref() {
                stop.push(i as u32);
            }
        }
        stop.sort_unstable();
        stop.dedup();
        let chat_template = file.value("tokenizer.chat_template").and_then(GgufValue::as_str).map(str::to_string);
        let template_env = chat_template.as_ref().map(|t| {
            let mut env = minijinja::Environment::new();
            env.set_fuel(Some(TEMPLATE_FUEL));
            env.add_template_owned("chat", t.clone()).map(|_| env).map_err(|e| format!("chat template: {e}"))
        });
        Ok(ChatTokenizer {
            tokenizer,
            text_tokenizer,
            specials,
            max_token_bytes,
            bos,
            eos,
            add_bos,
            stop,
            chat_template,
            template_env,
        })
    }

    /// Tokens in the vocabulary, special tokens included; every id the tokenizer produces is below.
    pub fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }

    /// Token ids of `text`; special-token strings in it (e.g. `<|im_start|>`) become their ids.
    /// The BOS token is prepended when the model asks for it (`add_bos_token`).
    ///
    /// # Errors
    ///
    /// [`ModelError::Tokenizer`] when the tokenizer fails on the text.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.tokenizer.encode(text, false).map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        let mut ids = Vec::with_capacity(enc.len() + 1);
        if self.add_bos {
            ids.extend(self.bos);
        }
        ids.extend_from_slice(enc.get_ids());
        Ok(ids)
    }

    /// The text of `ids`, special tokens included (so encode → decode gives the text back). Bytes
    /// of an incomplete UTF-8 character at the end decode as U+FFFD.
    ///
    /// # Errors
    ///
    /// [`ModelError::Tokenizer`] when the tokenizer's decoder fails.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.tokenizer.decode(ids, false).map_err(|e| ModelError::Tokenizer(e.to_string()))
    }

    /// Whether `id` ends a generation: the EOS and end-of-turn tokens named in the metadata, and
    /// any of `<|im_end|>`, `<|eot_id|>`, `<|endoftext|>`, `</s>` the vocabulary holds.
    pub fn is_stop(&self, id: u32) -> bool {
        self.stop.binary_search(&id).is_ok()
    }

    /// The end-of-sequence token id (`tokenizer.ggml.eos_token_id`), if the file names one.
    pub fn eos(&self) -> Option<u32> {
        self.eos
    }

    /// The Jinja source of the chat template (`tokenizer.chat_template`), if the file has one.
    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }

    /// The prompt text for `messages` by the model's own chat template (a Jinja template in the
    /// metadata), ending with the opening of the assistant's turn. The template's work is bounded
    /// by [`TEMPLATE_FUEL`] and its output by 64 MiB.
    ///
    /// # Errors
    ///
    /// [`ModelError::InvalidInput`] when the model has no template, the template runs out of
    /// fuel, or its output passes 64 MiB; [`ModelError::Tokenizer`] when the template does not
    /// parse, fails while rendering, or writes text that is not UTF-8.
    pub fn apply_chat_template(&self, messages: &[ChatMessage]) -> Result<String> {
        const CAP: usize = 64 << 20;
        self.render(messages, CAP)?
            .ok_or_else(|| ModelError::InvalidInput(format!("the chat template's output is over {CAP} bytes")))
    }

    /// The most input bytes one token stands for (the longest token's text).
    pub fn max_token_bytes(&self) -> usize {
        self.max_token_bytes
    }

    /// Refuses a text of `bytes` bytes before tokenising it when it cannot fit a context of
    /// `context` positions with room for one generated token: each token stands for at most
    /// `max_token_bytes` bytes, so it has at least `bytes / max_token_bytes` tokens (plus BOS).
    ///
    /// # Errors
    ///
    /// [`ModelError::ContextLengthExceeded`] with `at_least` set.
    pub fn check_fits(&self, bytes: usize, context: usize) -> Result<()> {
        let at_least = bytes.div_ceil(self.max_token_bytes) + usize::from(self.add_bos && self.bos.is_some());
        if at_least >= context {
            return Err(ModelError::ContextLengthExceeded { tokens: at_least, at_least: true, context });
        }
        Ok(())
    }

    /// The prompt tokens of a chat: the model's template rendered around `messages`, where the
    /// template's special tokens are control and the messages' contents — every role — are text.
    ///
    /// Work is bounded by `context` before anything is tokenised: contents, then the rendered
    /// prompt, that are too many bytes to fit `context` positions are `ContextLengthExceeded`.
    /// Prompts without special-token text in any message tokenise exactly as the whole rendered
    /// text does; otherwise the prompt is cut where the template placed each message (found by
    /// rendering with markers) and its text runs are tokenised with special tokens read as text.
    ///
    /// # Errors
    ///
    /// [`ModelError::ContextLengthExceeded`] as above; the errors of
    /// [`ChatTokenizer::apply_chat_template`]; and [`ModelError::InvalidInput`] when a message
    /// holds special-token text and the template alters message text, so the two cannot be kept
    /// apart.
    pub fn encode_chat(&self, messages: &[ChatMessage], context: usize) -> Result<Vec<u32>> {
        self.check_fits(messages.iter().map(|m| m.content.len()).sum(), context)?;
        let cap = context.saturating_mul(self.max_token_bytes);
        // Output past `cap` bytes is at least `context` tokens.
        let over = || ModelError::ContextLengthExceeded { tokens: context, at_least: true, context };
        let text = self.render(messages, cap)?.ok_or_else(over)?;
        self.check_fits(text.len(), context)?;
        let Some((matcher, ids)) = &self.specials else { return self.encode(&text) };
        if !messages.iter().any(|m| matcher.is_match(&m.content)) {
            return self.encode(&text);
        }
        let nonce: u64 = rand::random();
        let marker = |i: usize| format!("\u{E000}{nonce:016x}:{i}\u{E001}");
        let marked: Vec<ChatMessage> = messages
            .iter()
            .enumerate()
            .map(|(i, m)| ChatMessage { role: m.role.clone(), content: marker(i) })
            .collect();
        let marked_text = self.render(&marked, cap.saturating_add(marked.len() * 48))?.ok_or_else(over)?;
        let pieces = split_at_markers(&marked_text, &format!("\u{E000}{nonce:016x}:"), messages.len());
        let rebuilt: Option<String> = pieces.as_ref().map(|pieces| {
            pieces
                .iter()
                .map(|p| match p {
                    Piece::Template(t) => *t,
                    Piece::Content(i) => messages[*i].content.as_str(),
                })
                .collect()
        });
        let Some(pieces) = pieces.filter(|_| rebuilt.as_deref() == Some(text.as_str())) else {
            return Err(ModelError::InvalidInput(
                "a message contains special-token text (e.g. an end-of-turn marker) and this model's chat \
                 template changes message text, so it cannot be kept apart from the template's own control \
                 tokens; remove it from the message"
                    .into(),
            ));
        };
        let mut out: Vec<u32> = Vec::new();
        if self.add_bos {
            out.extend(self.bos);
        }
        let mut run = String::new();
        for piece in pieces {
            match piece {
                Piece::Content(i) => run.push_str(&messages[i].content),
                Piece::Template(t) => {
                    let mut last = 0;
                    for m in matcher.find_iter(t) {
                        run.push_str(&t[last..m.start()]);
                        self.encode_text_into(&mut run, &mut out)?;
                        out.push(ids[m.pattern().as_usize()]);
                        last = m.end();
                    }
                    run.push_str(&t[last..]);
                }
            }
        }
        self.encode_text_into(&mut run, &mut out)?;
        Ok(out)
    }

    /// Appends the ids of `run` (special-token text read as text) to `out` and empties `run`.
    fn encode_text_into(&self, run: &mut String, out: &mut Vec<u32>) -> Result<()> {
        if !run.is_empty() {
            let enc =
                self.text_tokenizer.encode(run.as_str(), false).map_err(|e| ModelError::Tokenizer(e.to_string()))?;
            out.extend_from_slice(enc.get_ids());
            run.clear();
        }
        Ok(())
    }

    /// Renders the template; `None` when its output would pass `cap` bytes. Errors: no template, a
    /// template error, or the template running out of fuel.
    fn render(&self, messages: &[ChatMessage], cap: usize) -> Result<Option<String>> {
        let env = match &self.template_env {
            None => {
                return Err(ModelError::InvalidInput(
                    "this model has no chat template (tokenizer.chat_template)".into(),
                ))
            }
            Some(Err(e)) => return Err(ModelError::Tokenizer(e.clone())),
            Some(Ok(env)) => env,
        };
        let bos = self.bos.and_then(|b| self.tokenizer.id_to_token(b)).unwrap_or_default();
        let eos = self.eos.and_then(|e| self.tokenizer.id_to_token(e)).unwrap_or_default();
        let mut out = CappedText { text: Vec::new(), cap, over: false };
        let rendered = match env.get_template("chat") {
            Ok(t) => t
                .render_captured_to(
                    minijinja::context! {
                        messages => messages,
                        add_generation_prompt => true,
                        bos_token => bos,
                        eos_token => eos,
                    },
                    &mut out,
                )
                .map(drop),
            Err(e) => Err(e),
        };
        if out.over {
            return Ok(None);
        }
        match rendered {
            Err(e) if e.kind() == minijinja::ErrorKind::OutOfFuel => Err(ModelError::InvalidInput(format!(
                "the chat template did not finish within {TEMPLATE_FUEL} steps (it loops, or the conversation is \
                 too long)"
            ))),
            Err(e) => Err(ModelError::Tokenizer(format!("chat template: {e}"))),
            Ok(_) => String::from_utf8(out.text)
                .map(Some)
                .map_err(|_| ModelError::Tokenizer("chat template: the output is not UTF-8".into())),
        }
    }
}

/// Cuts `text` at markers `{prefix}{i}\u{E001}` for `i` in `0..n`: template pieces and contents in
/// the order the template wrote them. `None` unless every marker appears exactly once.
fn split_at_markers<'a>(text: &'a str, prefix: &str, n: usize) -> Option<Vec<Piece<'a>>> {
    let mut pieces = Vec::new();
    let mut seen = vec![false; n];
    let mut rest = text;
    while let Some(at) = rest.find(prefix) {
        pieces.push(Piece::Template(&rest[..at]));
        let after = &rest[at + prefix.len()..];
        let end = after.find('\u{E001}')?;
        let i: usize = after[..end].parse().ok()?;
        if i >= n || std::mem::replace(&mut seen[i], true) {
            return None;
        }
        pieces.push(Piece::Content(i));
        rest = &after[end + '\u{E001}'.len_utf8()..];
    }
    pieces.push(Piece::Template(rest));
    seen.iter().all(|&s| s).then_some(pieces)
}
