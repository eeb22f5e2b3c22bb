//! Shared by the hostile-file and corruption tests: small valid model files built in memory (a
//! Llama GGUF with its tokenizer, a BERT sentence-transformers directory), and a way to run a test
//! body in a child process whose address space is capped, so that a loader that tries to allocate
//! gigabytes fails the test instead of the machine.

#![allow(dead_code)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Set in the child process: the test body runs there instead of spawning again.
const CHILD_ENV: &str = "ACCELRT_CAPPED_CHILD";
/// The child's address-space cap, in KiB (4 GiB): far above what loading a small file needs, far
/// below what trusting a corrupt size field would reserve.
const CAP_KIB: u64 = 4 << 20;

/// How long the child may run: the cases take seconds, so past this it is stuck (a loader that
/// loops on a corrupt count), and the test fails naming the last case the child started.
const CHILD_DEADLINE: Duration = Duration::from_secs(120);

/// Runs test `name` of this test binary again in a child process with its address space capped
/// (`ulimit -v`), and fails with the child's output unless the child passed within
/// `CHILD_DEADLINE`. Returns true in the parent (the caller then returns) and false in the child
/// (the caller runs the body):
///
/// ```ignore
/// if common::in_capped_child("my_test") { return; }
/// ```
pub fn in_capped_child(name: &str) -> bool {
    if std::env::var_os(CHILD_ENV).is_some() {
        return false;
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    // Output goes to files, not pipes, so a chatty child never blocks on a full pipe.
    let logs = tempfile::tempdir().expect("a temporary directory");
    let (out_path, err_path) = (logs.path().join("stdout"), logs.path().join("stderr"));
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("ulimit -v {CAP_KIB} && exec \"$0\" \"$@\""))
        .arg(exe)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        // glibc reserves 64 MiB of address space per malloc arena; keep that small under the cap.
        .env("MALLOC_ARENA_MAX", "2")
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .expect("run the test binary");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            break Some(status);
        }
        if started.elapsed() > CHILD_DEADLINE {
            child.kill().ok();
            child.wait().ok();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    let text = stdout.clone() + &std::fs::read_to_string(&err_path).unwrap_or_default();
    let tail: String = text.chars().rev().take(4000).collect::<Vec<_>>().into_iter().rev().collect();
    let Some(status) = status else {
        panic!("`{name}` was still running in the capped child after {CHILD_DEADLINE:?}:\n…{tail}");
    };
    assert!(status.success(), "`{name}` failed in the capped child ({status}):\n…{tail}");
    // The filter matched exactly this test, and it ran (a typo would run nothing and pass).
    assert!(text.contains("test result: ok. 1 passed"), "`{name}` did not run in the child:\n{tail}");
    // What the child reported (shown with --nocapture).
    print!("{stdout}");
    true
}

/// A tiny deterministic generator (xorshift64*), so failures reproduce from the seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in 0..n (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub fn f32(&mut self) -> f32 {
        ((self.next() >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.4
    }
}

// ---------------------------------------------------------------------------------------------
// GGUF

pub enum Meta {
    U32(u32),
    U64(u64),
    F32(f32),
    Bool(bool),
    Str(String),
    Strs(Vec<String>),
    I32s(Vec<i32>),
    /// An array of u8 with the given count and items (the count may lie).
    U8s(u64, Vec<u8>),
}

pub struct Tensor {
    pub name: String,
    /// Row-major [rows, cols]; written innermost first as GGUF stores them.
    pub dims: Vec<u64>,
    pub type_id: u32,
    pub data: Vec<u8>,
}

/// Where a fixed-width header field (a count, length, type, dim or offset) sits in a written file.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    pub at: usize,
    pub width: usize,
}

/// A GGUF file: its bytes, the header fields a mutation may target, and where each tensor's info
/// is (name → (offset of its type field, offset of its data-offset field)).
pub struct Gguf {
    pub bytes: Vec<u8>,
    pub fields: Vec<Field>,
    pub tensor_fields: Vec<(String, usize, usize)>,
}

/// Builds a file, remembering where each fixed-width header field is.
struct Writer {
    out: Vec<u8>,
    fields: Vec<Field>,
}

impl Writer {
    fn field(&mut self, bytes: &[u8]) {
        self.fields.push(Field { at: self.out.len(), width: bytes.len() });
        self.out.extend(bytes);
    }

    fn string(&mut self, s: &str) {
        self.field(&(s.len() as u64).to_le_bytes());
        self.out.extend(s.as_bytes());
    }

    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(32) {
            self.out.push(0);
        }
    }
}

/// Writes a version-3 GGUF with 32-byte alignment; each tensor's data starts at the next multiple
/// of 32 after the previous one's.
pub fn gguf(meta: &[(&str, Meta)], tensors: &[Tensor]) -> Gguf {
    let mut w = Writer { out: b"GGUF".to_vec(), fields: Vec::new() };
    w.field(&3u32.to_le_bytes());
    w.field(&(tensors.len() as u64).to_le_bytes());
    w.field(&(meta.len() as u64).to_le_bytes());
    for (key, value) in meta {
        w.string(key);
        match value {
            Meta::U32(v) => {
                w.field(&4u32.to_le_bytes());
                w.out.extend(v.to_le_bytes());
            }
            Meta::U64(v) => {
                w.field(&10u32.to_le_bytes());
                w.out.extend(v.to_le_bytes());
            }
            Meta::F32(v) => {
                w.field(&6u32.to_le_bytes());
                w.out.extend(v.to_le_bytes());
            }
            Meta::Bool(v) => {
                w.field(&7u32.to_le_bytes());
                w.out.push(*v as u8);
            }
            Meta::Str(s) => {
                w.field(&8u32.to_le_bytes());
                w.string(s);
            }
            Meta::Strs(items) => {
                w.field(&9u32.to_le_bytes());
                w.field(&8u32.to_le_bytes());
                w.field(&(items.len() as u64).to_le_bytes());
                for s in items {
                    w.string(s);
                }
            }
            Meta::I32s(items) => {
                w.field(&9u32.to_le_bytes());
                w.field(&5u32.to_le_bytes());
                w.field(&(items.len() as u64).to_le_bytes());
                for v in items {
                    w.out.extend(v.to_le_bytes());
                }
            }
            Meta::U8s(count, items) => {
                w.field(&9u32.to_le_bytes());
                w.field(&0u32.to_le_bytes());
                w.field(&count.to_le_bytes());
                w.out.extend(items);
            }
        }
    }
    let mut offset = 0u64;
    let mut tensor_fields = Vec::new();
    for t in tensors {
        w.string(&t.name);
        w.field(&(t.dims.len() as u32).to_le_bytes());
        for d in t.dims.iter().rev() {
            w.field(&d.to_le_bytes());
        }
        let type_at = w.out.len();
        w.field(&t.type_id.to_le_bytes());
        let offset_at = w.out.len();
        w.field(&offset.to_le_bytes());
        tensor_fields.push((t.name.clone(), type_at, offset_at));
        offset += (t.data.len() as u64).div_ceil(32) * 32;
    }
    w.pad();
    for t in tensors {
        w.out.extend(&t.data);
        w.pad();
    }
    Gguf { bytes: w.out, fields: w.fields, tensor_fields }
}

impl Gguf {
    /// Overwrites the little-endian field at `at` (4 or 8 bytes wide) with `value`.
    pub fn set(&mut self, at: usize, width: usize, value: u64) {
        self.bytes[at..at + width].copy_from_slice(&value.to_le_bytes()[..width]);
    }

    /// (offset of the type field, offset of the data-offset field) of tensor `name`.
    pub fn tensor_at(&self, name: &str) -> (usize, usize) {
        let (_, t, o) = self.tensor_fields.iter().find(|(n, _, _)| n == name).expect("tensor written");
        (*t, *o)
    }
}

/// An f32 tensor (type 0) of seeded values.
pub fn f32_tensor(name: &str, dims: &[u64], rng: &mut Rng) -> Tensor {
    let n = dims.iter().product::<u64>() as usize;
    let data = (0..n).flat_map(|_| rng.f32().to_le_bytes()).collect();
    Tensor { name: name.into(), dims: dims.to_vec(), type_id: 0, data }
}

/// A Q4_1 tensor (type 3; 32 elements in 20 bytes) of seeded values.
pub fn q4_1_tensor(name: &str, dims: &[u64], rng: &mut Rng) -> Tensor {
    let n = dims.iter().product::<u64>() as usize;
    let values: Vec<f32> = (0..n).map(|_| rng.f32()).collect();
    let data = accelrt_core::quant::quantize(accelrt_core::QuantType::Q4_1, &values).unwrap();
    Tensor { name: name.into(), dims: dims.to_vec(), type_id: 3, data }
}

pub const LLAMA_VOCAB: usize = 32;

/// The metadata of a tiny Llama: 2 blocks, hidden 32, 2 heads of 16, FFN 64, context 32, and a
/// byte-level BPE tokenizer of `LLAMA_VOCAB` tokens with a chat template.
pub fn llama_meta() -> Vec<(&'static str, Meta)> {
    // Letters, a few merges of them, and the end-of-turn control token.
    let mut tokens: Vec<String> = ('a'..='z').map(String::from).collect();
    tokens.extend(["Ġ", "ab", "cd", "ef", "gh"].map(String::from));
    tokens.push("<|im_end|>".into());
    assert_eq!(tokens.len(), LLAMA_VOCAB);
    let mut types = vec![1; LLAMA_VOCAB];
    types[LLAMA_VOCAB - 1] = 3;
    vec![
        ("general.architecture", Meta::Str("llama".into())),
        ("llama.block_count", Meta::U32(2)),
        ("llama.embedding_length", Meta::U32(32)),
        ("llama.feed_forward_length", Meta::U32(64)),
        ("llama.attention.head_count", Meta::U32(2)),
        ("llama.attention.head_count_kv", Meta::U32(2)),
        ("llama.context_length", Meta::U32(32)),
        ("llama.attention.layer_norm_rms_epsilon", Meta::F32(1e-5)),
        ("llama.rope.freq_base", Meta::F32(10000.0)),
        ("tokenizer.ggml.model", Meta::Str("gpt2".into())),
        ("tokenizer.ggml.pre", Meta::Str("default".into())),
        ("tokenizer.ggml.tokens", Meta::Strs(tokens)),
        ("tokenizer.ggml.token_type", Meta::I32s(types)),
        ("tokenizer.ggml.merges", Meta::Strs(["a b", "c d", "e f", "g h"].map(String::from).to_vec())),
        ("tokenizer.ggml.eos_token_id", Meta::U32(LLAMA_VOCAB as u32 - 1)),
        ("tokenizer.ggml.add_bos_token", Meta::Bool(false)),
        ("tokenizer.chat_template", Meta::Str("{% for m in messages %}{{ m.content }}<|im_end|>{% endfor %}".into())),
    ]
}

/// The tensors of the tiny Llama of [`llama_meta`]: f32 norms, embedding and output, Q4_1 matrices.
pub fn llama_tensors(seed: u64) -> Vec<Tensor> {
    let mut rng = Rng::new(seed);
    let (h, ffn, vocab) = (32u64, 64u64, LLAMA_VOCAB as u64);
    let mut tensors = vec![
        f32_tensor("token_embd.weight", &[vocab, h], &mut rng),
        f32_tensor("output_norm.weight", &[h], &mut rng),
        q4_1_tensor("output.weight", &[vocab, h], &mut rng),
    ];
    for l in 0..2 {
        let p = format!("blk.{l}");
        tensors.push(f32_tensor(&format!("{p}.attn_norm.weight"), &[h], &mut rng));
        for m in ["attn_q", "attn_k", "attn_v", "attn_output"] {
            tensors.push(q4_1_tensor(&format!("{p}.{m}.weight"), &[h, h], &mut rng));
        }
        tensors.push(f32_tensor(&format!("{p}.ffn_norm.weight"), &[h], &mut rng));
        tensors.push(q4_1_tensor(&format!("{p}.ffn_gate.weight"), &[ffn, h], &mut rng));
        tensors.push(q4_1_tensor(&format!("{p}.ffn_up.weight"), &[ffn, h], &mut rng));
        tensors.push(q4_1_tensor(&format!("{p}.ffn_down.weight"), &[h, ffn], &mut rng));
    }
    tensors
}

/// The tiny Llama with `meta` replacing or adding metadata values.
pub fn llama_gguf_with(meta: Vec<(&'static str, Meta)>) -> Gguf {
    let mut all = llama_meta();
    for (key, value) in meta {
        match all.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => all.push((key, value)),
        }
    }
    gguf(&all, &llama_tensors(7))
}

pub fn llama_gguf() -> Gguf {
    llama_gguf_with(Vec::new())
}

// ---------------------------------------------------------------------------------------------
// BERT

pub const BERT_CONFIG: &str = r#"{"model_type": "bert", "vocab_size": 12, "hidden_size": 8,
  "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 16, "hidden_act": "gelu",
  "max_position_embeddings": 16, "type_vocab_size": 2, "layer_norm_eps": 1e-12}"#;

/// The weights of the BERT of [`BERT_CONFIG`] (no name prefix), as (name, shape).
pub fn bert_weight_shapes(layers: usize) -> Vec<(String, Vec<usize>)> {
    let (h, ffn) = (8, 16);
    let mut w = vec![
        ("embeddings.word_embeddings.weight".to_string(), vec![12, h]),
        ("embeddings.position_embeddings.weight".into(), vec![16, h]),
        ("embeddings.token_type_embeddings.weight".into(), vec![2, h]),
        ("embeddings.LayerNorm.weight".into(), vec![h]),
        ("embeddings.LayerNorm.bias".into(), vec![h]),
    ];
    for l in 0..layers {
        let p = format!("encoder.layer.{l}");
        for (name, out, inp) in [
            ("attention.self.query", h, h),
            ("attention.self.key", h, h),
            ("attention.self.value", h, h),
            ("attention.output.dense", h, h),
            ("intermediate.dense", ffn, h),
            ("output.dense", h, ffn),
        ] {
            w.push((format!("{p}.{name}.weight"), vec![out, inp]));
            w.push((format!("{p}.{name}.bias"), vec![out]));
        }
        for ln in ["attention.output.LayerNorm", "output.LayerNorm"] {
            w.push((format!("{p}.{ln}.weight"), vec![h]));
            w.push((format!("{p}.{ln}.bias"), vec![h]));
        }
    }
    w
}

/// A safetensors file of f32 tensors with seeded values.
pub fn safetensors_bytes(shapes: &[(String, Vec<usize>)], seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let data: Vec<Vec<u8>> = shapes
        .iter()
        .map(|(_, s)| (0..s.iter().product::<usize>()).flat_map(|_| rng.f32().to_le_bytes()).collect())
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = shapes
        .iter()
        .zip(&data)
        .map(|((name, shape), d)| {
            (name.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), d).unwrap())
        })
        .collect();
    safetensors::serialize(views, None::<std::collections::HashMap<String, String>>).unwrap()
}

/// A word-level tokenizer over the BERT vocabulary (12 ids).
pub const BERT_TOKENIZER: &str = r#"{"version": "1.0", "truncation": null, "padding": null,
  "added_tokens": [], "normalizer": null, "pre_tokenizer": {"type": "Whitespace"},
  "post_processor": null, "decoder": null,
  "model": {"type": "WordLevel", "unk_token": "[UNK]", "vocab": {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2,
    "[SEP]": 3, "a": 4, "b": 5, "c": 6, "d": 7, "e": 8, "f": 9, "g": 10, "h": 11}}}"#;

/// Writes a complete tiny sentence-transformers BERT directory into `dir`.
pub fn write_bert_dir(dir: &Path) {
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    };
    write("config.json", BERT_CONFIG.as_bytes());
    write("tokenizer.json", BERT_TOKENIZER.as_bytes());
    write(
        "modules.json",
        br#"[{"idx":0,"name":"0","path":"","type":"sentence_transformers.models.Transformer"},
             {"idx":1,"name":"1","path":"1_Pooling","type":"sentence_transformers.models.Pooling"},
             {"idx":2,"name":"2","path":"2_Normalize","type":"sentence_transformers.models.Normalize"}]"#,
    );
    write("1_Pooling/config.json", br#"{"pooling_mode_mean_tokens": true}"#);
    write("model.safetensors", &safetensors_bytes(&bert_weight_shapes(2), 3));
}
