//! GGUF parsing and the Llama builder on small synthetic files: any Llama-architecture GGUF (here
//! with an untied output matrix, f16 and Q8_0 tensors, no GQA) builds and runs, and malformed or
//! unsupported files are refused with messages that say what is wrong.

use accelrt_core::{quant, reference, DType, HostTensor, QuantType, WeightSource};
use accelrt_models::gguf::GgufFile;
use accelrt_models::llama::{self, LlamaConfig};
use accelrt_models::ModelError;
use std::path::Path;

enum Meta {
    U32(u32),
    F32(f32),
    Str(&'static str),
}

struct Tensor {
    name: String,
    dims: Vec<u64>, // row-major [rows, cols]
    type_id: u32,
    data: Vec<u8>,
}

fn write_gguf(path: &Path, meta: &[(&str, Meta)], tensors: &[Tensor]) {
    let mut out = Vec::new();
    let string = |out: &mut Vec<u8>, s: &str| {
        out.extend((s.len() as u64).to_le_bytes());
        out.extend(s.as_bytes());
    };
    out.extend(b"GGUF");
    out.extend(3u32.to_le_bytes());
    out.extend((tensors.len() as u64).to_le_bytes());
    out.extend((meta.len() as u64).to_le_bytes());
    for (key, value) in meta {
        string(&mut out, key);
        match value {
            Meta::U32(v) => {
                out.extend(4u32.to_le_bytes());
                out.extend(v.to_le_bytes());
            }
            Meta::F32(v) => {
                out.extend(6u32.to_le_bytes());
                out.extend(v.to_le_bytes());
            }
            Meta::Str(s) => {
                out.extend(8u32.to_le_bytes());
                string(&mut out, s);
            }
        }
    }
    let mut offset = 0u64;
    let mut offsets = Vec::new();
    for t in tensors {
        string(&mut out, &t.name);
        out.extend((t.dims.len() as u32).to_le_bytes());
        for d in t.dims.iter().rev() {
            out.extend(d.to_le_bytes());
        }
        out.extend(t.type_id.to_le_bytes());
        out.extend(offset.to_le_bytes());
        offsets.push(offset);
        offset += (t.data.len() as u64).div_ceil(32) * 32;
    }
    while out.len() % 32 != 0 {
        out.push(0);
    }
    for t in tensors {
        out.extend(&t.data);
        while out.len() % 32 != 0 {
            out.push(0);
        }
    }
    std::fs::write(path, out).unwrap();
}

fn values(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(747796405).wrapping_add(2891336453);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            ((s as f64 / u32::MAX as f64) * 2.0 - 1.0) as f32 * 0.2
        })
        .collect()
}

fn tensor(name: &str, dims: &[u64], dtype: DType, seed: u32) -> Tensor {
    let n = dims.iter().product::<u64>() as usize;
    let v = values(n, seed);
    let (type_id, data) = match dtype {
        DType::F32 => (0, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
        DType::F16 => (1, v.iter().flat_map(|x| half::f16::from_f32(*x).to_le_bytes()).collect()),
        DType::Quant(QuantType::Q8_0) => (8, quant::quantize(QuantType::Q8_0, &v).unwrap()),
        DType::Quant(QuantType::Q4_1) => (3, quant::quantize(QuantType::Q4_1, &v).unwrap()),
        other => panic!("{other}"),
    };
    Tensor { name: name.into(), dims: dims.to_vec(), type_id, data }
}

/// A 2-layer Llama: hidden 64, 4 heads of 16 (no GQA), FFN 96, vocab 40, untied output.
fn tiny_llama(dir: &Path, arch: &'static str) -> std::path::PathBuf {
    let (h, ffn, vocab) = (64u64, 96u64, 40u64);
    let meta = vec![
        ("general.architecture", Meta::Str(arch)),
        ("llama.block_count", Meta::U32(2)),
        ("llama.embedding_length", Meta::U32(h as u32)),
        ("llama.feed_forward_length", Meta::U32(ffn as u32)),
        ("llama.attention.head_count", Meta::U32(4)),
        ("llama.context_length", Meta::U32(32)),
        ("llama.attention.layer_norm_rms_epsilon", Meta::F32(1e-5)),
        ("llama.rope.freq_base", Meta::F32(10000.0)),
    ];
    let q8 = DType::Quant(QuantType::Q8_0);
    let q4 = DType::Quant(QuantType::Q4_1);
    let mut tensors = vec![
        tensor("token_embd.weight", &[vocab, h], DType::F16, 1),
        tensor("output_norm.weight", &[h], DType::F32, 2),
        tensor("output.weight", &[vocab, h], q8, 3),
    ];
    for l in 0..2u32 {
        let p = format!("blk.{l}");
        let seed = 10 * (l + 1);
        tensors.push(tensor(&format!("{p}.attn_norm.weight"), &[h], DType::F32, seed));
        tensors.push(tensor(&format!("{p}.attn_q.weight"), &[h, h], q4, seed + 1));
        tensors.push(tensor(&format!("{p}.attn_k.weight"), &[h, h], q8, seed + 2));
        tensors.push(tensor(&format!("{p}.attn_v.weight"), &[h, h], DType::F16, seed + 3));
        tensors.push(tensor(&format!("{p}.attn_output.weight"), &[h, h], DType::F32, seed + 4));
        tensors.push(tensor(&format!("{p}.ffn_norm.weight"), &[h], DType::F32, seed + 5));
        tensors.push(tensor(&format!("{p}.ffn_gate.weight"), &[ffn, h], q4, seed + 6));
        tensors.push(tensor(&format!("{p}.ffn_up.weight"), &[ffn, h], q4, seed + 7));
        tensors.push(tensor(&format!("{p}.ffn_down.weight"), &[h, ffn], q4, seed + 8));
    }
    let path = dir.join("tiny.gguf");
    write_gguf(&path, &meta, &tensors);
    path
}

#[test]
fn a_small_llama_gguf_builds_and_evaluates() {
    let dir = tempfile::tempdir().unwrap();
    let path = tiny_llama(dir.path(), "llama");
    let file = GgufFile::open(&path).unwrap();
    let cfg = LlamaConfig::from_gguf(&file).unwrap();
    assert_eq!((cfg.num_layers, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim), (2, 4, 4, 16));
    assert_eq!(cfg.vocab_size, 40);
    assert!(!cfg.tied_embeddings);
    let dtype_of = |name: &str| Ok(file.tensor(name).unwrap().dtype().unwrap());
    let graph = llama::build_graph(&cfg, 16, &dtype_of).unwrap();
    assert_eq!(graph.node(graph.outputs()[0].1).dtype, DType::F32);
    // Shapes as stored: GGUF dims are innermost first; the reader gives [rows, columns].
    assert_eq!(file.get("blk.0.ffn_down.weight").unwrap().shape, vec![64, 96]);
    let n = 5;
    let tokens = HostTensor::u32(vec![1, n], vec![3, 1, 4, 1, 5]).unwrap();
    let positions = HostTensor::u32(vec![1, n], (0..n as u32).collect()).unwrap();
    let slots = HostTensor::u32(vec![1], vec![0]).unwrap();
    let out = reference::evaluate(
        &graph,
        &file,
        &[(llama::TOKENS, &tokens), (llama::POSITIONS, &positions), (llama::SLOTS, &slots)],
    )
    .unwrap();
    let logits = out.get(llama::LOGITS).unwrap();
    assert_eq!(logits.shape(), [1, 40]);
    assert!(logits.to_f64_vec().iter().all(|v| v.is_finite()));
}

/// The same file on the candle CPU backend through a session (prefill, then two decode steps)
/// against the reference evaluator: f16, f32, Q4_1 and Q8_0 weights, an untied output matrix.
#[test]
fn a_small_llama_gguf_runs_on_the_cpu_backend_like_the_reference() {
    use accelrt_core::{Backend, PrepareOptions};
    let dir = tempfile::tempdir().unwrap();
    let path = tiny_llama(dir.path(), "llama");
    let file = GgufFile::open(&path).unwrap();
    let cfg = LlamaConfig::from_gguf(&file).unwrap();
    let dtype_of = |name: &str| Ok(file.tensor(name).unwrap().dtype().unwrap());
    let graph = llama::build_graph(&cfg, 16, &dtype_of).unwrap();
    let backend = accelrt_candle::CandleBackend::cpu();
    let exe = backend.prepare(&graph, &file, &PrepareOptions::default()).unwrap();
    let mut got_state = exe.new_state(1).unwrap();
    let mut want_state = reference::new_state(1);
    for (start, ids) in [(0u32, vec![3u32, 1, 4, 1, 5]), (5, vec![9]), (6, vec![2])] {
        let n = ids.len();
        let tokens = HostTensor::u32(vec![1, n], ids).unwrap();
        let positions = HostTensor::u32(vec![1, n], (start..start + n as u32).collect()).unwrap();
        let slots = HostTensor::u32(vec![1], vec![0]).unwrap();
        let inputs = [(llama::TOKENS, &tokens), (llama::POSITIONS, &positions), (llama::SLOTS, &slots)];
        let want = reference::evaluate_with_state(&graph, &file, &inputs, &mut want_state).unwrap();
        let got = exe.run_with_state(&mut got_state, &inputs).unwrap();
        let (w, g) = (want.get(llama::LOGITS).unwrap().to_f64_vec(), got.get(llama::LOGITS).unwrap().to_f64_vec());
        let max = w.iter().zip(&g).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        // 8-bit activations in the Q4_1/Q8_0 matmuls; logits here are of size ≈ 0.1–1.
        assert!(max < 2e-2, "step at {start}: max |Δlogit| {max}");
    }
    // Positions must continue the sequence: skipping ahead is refused, and nothing is recorded.
    let tokens = HostTensor::u32(vec![1, 1], vec![1]).unwrap();
    let positions = HostTensor::u32(vec![1, 1], vec![12]).unwrap();
    let slots = HostTensor::u32(vec![1], vec![0]).unwrap();
    let err = exe
        .run_with_state(
            &mut got_state,
            &[(llama::TOKENS, &tokens), (llama::POSITIONS, &positions), (llama::SLOTS, &slots)],
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("positions would be skipped"), "{err}");
    assert_eq!(got_state.slot_len(0), 7);
}

fn open_err(path: &Path) -> String {
    match GgufFile::open(path) {
        Err(e @ ModelError::Config { .. }) => e.to_string(),
        Err(other) => panic!("unexpected error kind: {other}"),
        Ok(_) => panic!("{} opened", path.display()),
    }
}

#[test]
fn truncated_and_corrupt_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = tiny_llama(dir.path(), "llama");
    let bytes = std::fs::read(&path).unwrap();
    let cut = dir.path().join("cut.gguf");
    // Cut inside the tensor data, inside the tensor infos, inside the metadata, inside the header.
    for (len, needle) in
        [(bytes.len() - 100, "truncated: tensor"), (bytes.len() / 3, "truncated"), (40, "truncated"), (10, "truncated")]
    {
        std::fs::write(&cut, &bytes[..len]).unwrap();
        let err = open_err(&cut);
        assert!(err.contains(needle) && err.contains("cut.gguf"), "cut at {len}: {err}");
    }
    let mut bad = bytes.clone();
    bad[..4].copy_from_slice(b"GGML");
    std::fs::write(&cut, &bad).unwrap();
    assert!(open_err(&cut).contains("magic"));
    let mut huge = bytes.clone();
    huge[8..16].copy_from_slice(&u64::MAX.to_le_bytes()); // tensor count
    std::fs::write(&cut, &huge).unwrap();
    assert!(open_err(&cut).contains("corrupt"));
    std::fs::write(&cut, b"").unwrap();
    assert!(open_err(&cut).contains("truncated"));
}

#[test]
fn unknown_architectures_and_unsupported_types_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = tiny_llama(dir.path(), "mamba");
    let file = GgufFile::open(&path).unwrap();
    let err = LlamaConfig::from_gguf(&file).unwrap_err().to_string();
    assert!(err.contains("architecture `mamba` is not supported"), "{err}");

    let odd = dir.path().join("odd.gguf");
    write_gguf(
        &odd,
        &[("general.architecture", Meta::Str("llama"))],
        &[Tensor { name: "w".into(), dims: vec![1, 256], type_id: 16, data: vec![0; 66] }],
    );
    let file = GgufFile::open(&odd).unwrap();
    let err = file.get("w").unwrap_err().to_string();
    assert!(err.contains("IQ2_XXS") && err.contains("not supported"), "{err}");
    let err = LlamaConfig::from_gguf(&file).unwrap_err().to_string();
    assert!(err.contains("llama."), "{err}");
}
