//! Hostile model files, one test per kind of lie a file can tell: sizes and counts that would make
//! the loader allocate far more than the file holds, tensor ranges that read other tensors' bytes,
//! and configs whose counts would make graph building run forever. Each is refused with a typed
//! error (and where memory is the risk, in a child process whose address space is capped).

mod common;

use accelrt_core::PrepareOptions;
use accelrt_models::bert::BertConfig;
use accelrt_models::gguf::GgufFile;
use accelrt_models::llama::LlamaConfig;
use accelrt_models::{ModelError, SafetensorsWeights, SentenceEmbedder, TextGenerator};
use common::{Meta, Tensor};
use std::path::Path;
use std::time::{Duration, Instant};

fn gguf_err(path: &Path) -> String {
    match GgufFile::open(path) {
        Err(e @ ModelError::Config { .. }) => e.to_string(),
        Err(other) => panic!("unexpected error kind: {other}"),
        Ok(_) => panic!("{} opened", path.display()),
    }
}

fn write_gguf(dir: &Path, g: &common::Gguf) -> std::path::PathBuf {
    let path = dir.join("model.gguf");
    std::fs::write(&path, &g.bytes).unwrap();
    path
}

/// The GGUF header "GGUF", version 3, 0 tensors, 1 key/value: key `a`, an array of `count` items of
/// value type `item_type`; the caller pads the file.
fn one_array_header(item_type: u32, count: u64) -> Vec<u8> {
    let mut h = b"GGUF".to_vec();
    h.extend(3u32.to_le_bytes());
    h.extend(0u64.to_le_bytes());
    h.extend(1u64.to_le_bytes());
    h.extend(1u64.to_le_bytes());
    h.push(b'a');
    h.extend(9u32.to_le_bytes());
    h.extend(item_type.to_le_bytes());
    h.extend(count.to_le_bytes());
    h
}

/// A 300 MB sparse file whose one array of 300,000,000 u8 (all zero, so every item reads) would
/// decode to 9.6 GB of values. Refused by the decoded-header budget, under a 4 GiB cap.
#[test]
fn a_huge_metadata_array_in_a_sparse_file_is_refused_in_bounded_memory() {
    if common::in_capped_child("a_huge_metadata_array_in_a_sparse_file_is_refused_in_bounded_memory") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // u8 items (1 byte each) and empty strings (8 zero bytes each): both fit the file's bytes.
    for (item_type, count, len) in [(0u32, 300_000_000u64, 300_000_000u64), (8, 40_000_000, 320_000_000)] {
        let header = one_array_header(item_type, count);
        assert!(item_type != 0 || header.len() == 49);
        let path = dir.path().join("sparse.gguf");
        std::fs::write(&path, &header).unwrap();
        std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(header.len() as u64 + len).unwrap();
        let err = gguf_err(&path);
        assert!(err.contains("decoded header past 256 MiB"), "{err}");
    }
}

/// An array's count is checked against the bytes left at its item type's size: a string array
/// whose count fits at 1 byte per item but not at the 8 every string needs is refused outright.
#[test]
fn array_counts_are_checked_at_their_item_size() {
    let dir = tempfile::tempdir().unwrap();
    for (item_type, size) in [(8u32, 8u64), (10, 8), (4, 4), (2, 2)] {
        let mut bytes = one_array_header(item_type, 1000);
        bytes.resize(bytes.len() + (1000 * size as usize) / 2, 0);
        let path = dir.path().join("short.gguf");
        std::fs::write(&path, &bytes).unwrap();
        let err = gguf_err(&path);
        assert!(err.contains("`a` is 1000, more than the"), "type {item_type}: {err}");
    }
    // Arrays of arrays and unknown item types are refused before their count is used.
    for item_type in [9u32, 13, u32::MAX] {
        let path = dir.path().join("odd.gguf");
        std::fs::write(&path, one_array_header(item_type, u64::MAX)).unwrap();
        let err = gguf_err(&path);
        assert!(err.contains(&format!("array of value type {item_type}")), "{err}");
    }
}

/// Counts of tensors and key/values that the file could hold but whose items repeat (zeros read as
/// empty names) are refused at the repeat, not after decoding millions of them.
#[test]
fn repeated_keys_and_tensor_names_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let g = common::gguf(&[("a", Meta::U32(1)), ("a", Meta::U32(2))], &[]);
    assert!(gguf_err(&write_gguf(dir.path(), &g)).contains("key `a` appears twice"));
    let t = |name: &str| Tensor { name: name.into(), dims: vec![8], type_id: 0, data: vec![0; 32] };
    let g = common::gguf(&[], &[t("w"), t("w")]);
    assert!(gguf_err(&write_gguf(dir.path(), &g)).contains("tensor `w` appears twice"));
}

/// A tensor's size is its type × shape: a Q4_1 tensor relabelled F32 needs 6.4× its bytes, which
/// would be read from the tensors after it (or past the end of the file, for the last one).
#[test]
fn a_tensor_type_that_outgrows_its_bytes_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut g = common::llama_gguf();
    let (type_at, _) = g.tensor_at("blk.0.attn_q.weight");
    g.set(type_at, 4, 0);
    let err = gguf_err(&write_gguf(dir.path(), &g));
    assert!(err.contains("`blk.0.attn_q.weight` and `blk.0.attn_k.weight` overlap"), "{err}");

    let mut g = common::llama_gguf();
    let (type_at, _) = g.tensor_at("blk.1.ffn_down.weight");
    g.set(type_at, 4, 0);
    let err = gguf_err(&write_gguf(dir.path(), &g));
    assert!(err.contains("`blk.1.ffn_down.weight`") && err.contains("needs bytes up to"), "{err}");
}

#[test]
fn overlapping_and_misaligned_offsets_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut g = common::llama_gguf();
    let (_, q) = g.tensor_at("blk.0.attn_q.weight");
    let (_, k) = g.tensor_at("blk.0.attn_k.weight");
    let q_offset = u64::from_le_bytes(g.bytes[q..q + 8].try_into().unwrap());
    g.set(k, 8, q_offset);
    let err = gguf_err(&write_gguf(dir.path(), &g));
    assert!(err.contains("overlap") && err.contains("blk.0.attn_q.weight"), "{err}");

    let mut g = common::llama_gguf();
    g.set(k, 8, q_offset + 16);
    let err = gguf_err(&write_gguf(dir.path(), &g));
    assert!(err.contains("not a multiple of the alignment 32"), "{err}");

    // A huge alignment (a power of two) puts every tensor past the end, without overflowing.
    let g = common::llama_gguf_with(vec![("general.alignment", Meta::U64(1 << 63))]);
    let err = gguf_err(&write_gguf(dir.path(), &g));
    assert!(err.contains("needs bytes up to") || err.contains("alignment"), "{err}");
}

/// Tensors of types accelrt cannot run still have their real size, so they cannot hide an overlap;
/// types with no known layout are refused, and so are rows of partial blocks.
#[test]
fn every_tensor_is_sized_by_its_type_or_refused() {
    let dir = tempfile::tempdir().unwrap();
    let f32_w = Tensor { name: "w".into(), dims: vec![1, 256], type_id: 0, data: vec![0; 1024] };
    let iq2 = Tensor { name: "odd".into(), dims: vec![1, 256], type_id: 16, data: vec![0; 66] };
    let mut g = common::gguf(&[], &[f32_w, iq2]);
    let (_, odd_offset) = g.tensor_at("odd");
    g.set(odd_offset, 8, 0);
    let err = gguf_err(&write_gguf(dir.path(), &g));
    assert!(err.contains("`odd` and `w` overlap") || err.contains("`w` and `odd` overlap"), "{err}");

    let unknown = Tensor { name: "u".into(), dims: vec![32], type_id: 31, data: vec![0; 32] };
    let err = gguf_err(&write_gguf(dir.path(), &common::gguf(&[], &[unknown])));
    assert!(err.contains("ggml type 31 has no known layout"), "{err}");

    // 96 Q4_1 values are 3 whole blocks, but as 2 rows of 48 each row ends mid-block.
    let partial = Tensor { name: "p".into(), dims: vec![2, 48], type_id: 3, data: vec![0; 60] };
    let err = gguf_err(&write_gguf(dir.path(), &common::gguf(&[], &[partial])));
    assert!(err.contains("rows of 48 elements are not whole blocks of 32"), "{err}");

    let wide = Tensor { name: "r5".into(), dims: vec![1, 1, 1, 1, 8], type_id: 0, data: vec![0; 32] };
    let err = gguf_err(&write_gguf(dir.path(), &common::gguf(&[], &[wide])));
    assert!(err.contains("rank 5"), "{err}");

    let huge = Tensor { name: "h".into(), dims: vec![1 << 40, 1 << 40], type_id: 0, data: vec![0; 32] };
    let err = gguf_err(&write_gguf(dir.path(), &common::gguf(&[], &[huge])));
    assert!(err.contains("overflow"), "{err}");
}

fn load_llama(path: &Path) -> Result<TextGenerator, ModelError> {
    let backend = accelrt_candle::CandleBackend::cpu();
    TextGenerator::load(path, &backend, &PrepareOptions::default(), 16)
}

#[test]
fn the_tiny_llama_loads() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_gguf(dir.path(), &common::llama_gguf());
    let generator = load_llama(&path).unwrap();
    assert_eq!(generator.config().num_layers, 2);
    assert_eq!(generator.tokenizer().vocab_size(), common::LLAMA_VOCAB);
}

/// A block_count of 10,000 or 2^40 (and the other counts and dims) is checked against the tensors
/// before a graph is built, through the normal loading API, at once.
#[test]
fn llama_counts_and_dims_must_match_the_tensors() {
    let dir = tempfile::tempdir().unwrap();
    for (meta, needle) in [
        (("llama.block_count", Meta::U32(10_000)), "block_count is 10000 but the file has 21 tensors"),
        (("llama.block_count", Meta::U64(1 << 40)), "block_count is 1099511627776"),
        (("llama.block_count", Meta::U32(1)), "block_count is 1 but the file has more blocks"),
        (("llama.embedding_length", Meta::U32(64)), "`token_embd.weight` has shape [32, 32]"),
        (("llama.embedding_length", Meta::U64(1 << 40)), "`token_embd.weight` has shape"),
        (("llama.attention.head_count_kv", Meta::U32(1)), "`blk.0.attn_k.weight` has shape [32, 32]"),
        (("llama.feed_forward_length", Meta::U32(128)), "`blk.0.ffn_gate.weight` has shape [64, 32]"),
        (("llama.feed_forward_length", Meta::U64(u64::MAX)), "`blk.0.ffn_gate.weight` has shape"),
        (("llama.context_length", Meta::U32(0)), "must all be positive"),
        (("llama.rope.freq_base", Meta::F32(f32::NAN)), "freq_base NaN"),
        (("tokenizer.ggml.tokens", Meta::Strs(vec!["a".into(); 31])), "has 31 tokens but token_embd.weight has 32"),
    ] {
        let key = meta.0;
        let path = write_gguf(dir.path(), &common::llama_gguf_with(vec![meta]));
        let started = Instant::now();
        let err = match load_llama(&path) {
            Err(e @ ModelError::Config { .. }) => e.to_string(),
            Err(other) => panic!("{key}: unexpected error kind: {other}"),
            Ok(_) => panic!("{key}: loaded"),
        };
        assert!(err.contains(needle), "{key}: {err}");
        assert!(started.elapsed() < Duration::from_secs(2), "{key}: took {:?}", started.elapsed());
        // The config reader alone refuses it too (callers that build graphs themselves).
        assert!(LlamaConfig::from_gguf(&GgufFile::open(&path).unwrap()).is_err(), "{key}");
    }
}

fn load_bert(dir: &Path) -> Result<SentenceEmbedder, ModelError> {
    let backend = accelrt_candle::CandleBackend::cpu();
    SentenceEmbedder::load(dir, &backend, &PrepareOptions::default())
}

#[test]
fn the_tiny_bert_loads() {
    let dir = tempfile::tempdir().unwrap();
    common::write_bert_dir(dir.path());
    let embedder = load_bert(dir.path()).unwrap();
    assert_eq!(embedder.dimension(), 8);
    let cfg = BertConfig::from_file(&dir.path().join("config.json")).unwrap();
    let weights = SafetensorsWeights::open(&dir.path().join("model.safetensors")).unwrap();
    cfg.check_weights(&weights, "").unwrap();
}

/// Absurd BERT counts and dims are refused when the config is read, so the normal loading API
/// never starts building a graph of 2^40 layers.
#[test]
fn absurd_bert_configs_are_refused_before_building() {
    let dir = tempfile::tempdir().unwrap();
    common::write_bert_dir(dir.path());
    for (from, to, needle) in [
        ("\"num_hidden_layers\": 2", "\"num_hidden_layers\": 10000", "num_hidden_layers 10000 is more than 1024"),
        ("\"num_hidden_layers\": 2", "\"num_hidden_layers\": 1099511627776", "num_hidden_layers 1099511627776"),
        ("\"hidden_size\": 8", "\"hidden_size\": 1099511627776", "hidden_size 1099511627776 is not between"),
        ("\"vocab_size\": 12", "\"vocab_size\": 0", "vocab_size 0 is not between"),
        ("\"max_position_embeddings\": 16", "\"max_position_embeddings\": 0", "max_position_embeddings 0"),
        ("\"layer_norm_eps\": 1e-12", "\"layer_norm_eps\": -1", "layer_norm_eps -1"),
    ] {
        let config = common::BERT_CONFIG.replace(from, to);
        assert_ne!(config, common::BERT_CONFIG);
        std::fs::write(dir.path().join("config.json"), config).unwrap();
        let started = Instant::now();
        let err = match load_bert(dir.path()) {
            Err(e @ ModelError::Config { .. }) => e.to_string(),
            Err(other) => panic!("{to}: unexpected error kind: {other}"),
            Ok(_) => panic!("{to}: loaded"),
        };
        assert!(err.contains(needle) && err.contains("config.json"), "{to}: {err}");
        assert!(started.elapsed() < Duration::from_secs(2), "{to}: took {:?}", started.elapsed());
    }
}

/// `BertConfig::check_weights` compares a config with the weights before building: missing layers,
/// extra layers and dims that disagree with the tensors are named.
#[test]
fn bert_configs_are_checked_against_their_weights() {
    let dir = tempfile::tempdir().unwrap();
    common::write_bert_dir(dir.path());
    let weights = SafetensorsWeights::open(&dir.path().join("model.safetensors")).unwrap();
    for (from, to, needle) in [
        ("\"num_hidden_layers\": 2", "\"num_hidden_layers\": 3", "needs tensor `encoder.layer.2.attention.self.query"),
        ("\"num_hidden_layers\": 2", "\"num_hidden_layers\": 1", "num_hidden_layers is 1 but the weights have more"),
        ("\"intermediate_size\": 16", "\"intermediate_size\": 32", "`encoder.layer.0.intermediate.dense.weight` has"),
        ("\"vocab_size\": 12", "\"vocab_size\": 13", "`embeddings.word_embeddings.weight` has shape [12, 8]"),
    ] {
        std::fs::write(dir.path().join("config.json"), common::BERT_CONFIG.replace(from, to)).unwrap();
        let cfg = BertConfig::from_file(&dir.path().join("config.json")).unwrap();
        let err = cfg.check_weights(&weights, "").unwrap_err();
        assert!(matches!(err, ModelError::Config { .. }) && err.to_string().contains(needle), "{to}: {err}");
    }
    let cfg = BertConfig::from_file(&dir.path().join("config.json")).unwrap();
    assert!(cfg.check_weights(&weights, "bert.").unwrap_err().to_string().contains("`bert.embeddings"));
}

fn safetensors_err(path: &Path, bytes: &[u8]) -> String {
    std::fs::write(path, bytes).unwrap();
    match SafetensorsWeights::open(path) {
        Err(e @ ModelError::Safetensors { .. }) => e.to_string(),
        Err(other) => panic!("unexpected error kind: {other}"),
        Ok(_) => panic!("opened"),
    }
}

/// A safetensors file from a header and a data length.
fn safetensors_file(header: &str, data_len: usize) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend(header.as_bytes());
    out.resize(out.len() + data_len, 0);
    out
}

/// Header lengths, offsets, dtype × shape sizes and overlaps are all checked when the file opens.
#[test]
fn safetensors_sizes_and_ranges_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    let good = safetensors_file(r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, 8);
    std::fs::write(&path, &good).unwrap();
    assert_eq!(SafetensorsWeights::open(&path).unwrap().shape("a"), Some(&[2usize][..]));
    for len in [u64::MAX, 1 << 40, u32::MAX as u64, good.len() as u64 - 7] {
        let mut bad = good.clone();
        bad[..8].copy_from_slice(&len.to_le_bytes());
        let err = safetensors_err(&path, &bad);
        assert!(err.contains("header length") || err.contains("Header"), "{len}: {err}");
    }
    for (header, data_len) in [
        // Overlapping ranges (the second tensor re-reads the first's bytes).
        (
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
            8,
        ),
        // A size that is not dtype × shape.
        (r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#, 8),
        // A range past the data.
        (r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}"#, 8),
        // A shape whose element count overflows.
        (r#"{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}}"#, 8),
        // Offsets of 2^64 - 1.
        (r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[18446744073709551615,7]}}"#, 8),
    ] {
        safetensors_err(&path, &safetensors_file(header, data_len));
    }
}

/// A merge whose parts or joined text are not tokens is refused (found by the chat_tokenizer fuzz
/// target: tokens ["a"], merges ["a a"] made `tokenizers` index past its buffer and panic).
#[test]
fn merges_outside_the_vocabulary_are_refused() {
    use accelrt_models::ChatTokenizer;
    for (tokens, merges) in
        [(vec!["a"], vec!["a a"]), (vec!["a", "b"], vec!["a c"]), (vec!["a", "b", "ab"], vec!["a b", "ab ab"])]
    {
        let meta = vec![
            ("tokenizer.ggml.model", Meta::Str("gpt2".into())),
            ("tokenizer.ggml.tokens", Meta::Strs(tokens.iter().map(|s| s.to_string()).collect())),
            ("tokenizer.ggml.merges", Meta::Strs(merges.iter().map(|s| s.to_string()).collect())),
        ];
        let file = GgufFile::from_bytes(Path::new("merges.gguf"), common::gguf(&meta, &[]).bytes).unwrap();
        let err = ChatTokenizer::from_gguf(&file).err().expect("refused");
        assert!(err.to_string().contains("not in the vocabulary"), "{tokens:?} {merges:?}: {err}");
    }
}

/// Tokenizer metadata must agree with itself: token texts of sane length (a 30 KB token made
/// loading take minutes), one token type per token and each a known type, special ids inside the
/// vocabulary, and merges present.
#[test]
fn inconsistent_tokenizer_metadata_is_refused() {
    use accelrt_models::ChatTokenizer;
    let tokens = |v: &[&str]| Meta::Strs(v.iter().map(|s| s.to_string()).collect());
    let long = "x".repeat(30_000);
    let cases: Vec<(Vec<(&str, Meta)>, &str)> = vec![
        (vec![("tokenizer.ggml.tokens", tokens(&["a", "b", &long]))], "tokens[2] is 30000 bytes"),
        (vec![("tokenizer.ggml.tokens", tokens(&["a", "b", ""]))], "tokens[2] is 0 bytes"),
        (vec![("tokenizer.ggml.token_type", Meta::I32s(vec![1, 1]))], "has 2 entries for 3 tokens"),
        (vec![("tokenizer.ggml.token_type", Meta::I32s(vec![1, 99, 1]))], "token_type[1]"),
        (vec![("tokenizer.ggml.eos_token_id", Meta::U32(u32::MAX))], "eos_token_id"),
        (vec![("tokenizer.ggml.bos_token_id", Meta::U32(3))], "bos_token_id"),
        (vec![("tokenizer.ggml.merges", tokens(&[]))], "merges is empty"),
    ];
    for (overrides, needle) in cases {
        let mut meta = vec![
            ("tokenizer.ggml.model", Meta::Str("gpt2".into())),
            ("tokenizer.ggml.tokens", tokens(&["a", "b", "ab"])),
            ("tokenizer.ggml.merges", tokens(&["a b"])),
        ];
        for (key, value) in overrides {
            meta.retain(|(k, _)| *k != key);
            meta.push((key, value));
        }
        let file = GgufFile::from_bytes(Path::new("tok.gguf"), common::gguf(&meta, &[]).bytes).unwrap();
        let started = Instant::now();
        let err = ChatTokenizer::from_gguf(&file).err().expect("refused");
        assert!(err.to_string().contains(needle), "{needle}: {err}");
        assert!(started.elapsed() < Duration::from_secs(5), "{needle}: refused before any slow work");
    }
}
