//! SmolLM2-135M generation on the Neuron backend through the real FFI, against the simulator (a
//! TEST DOUBLE of libnrt that runs the exported HLO on XLA CPU): the KV caches live on the
//! "device" for the whole session (bound as each program's state input and its aliased output),
//! prompts run as chunks of the compiled prefill sizes, and three prompts decode as one padded
//! batch. Greedy tokens equal the candle CPU backend's on the same dequantised f32 weights, and
//! the first logits are within a stated bound of the f64 reference evaluator.

mod common;

use accelrt_core::{reference, Backend, DType, DeviceSpec, Executable, HostTensor, PrepareOptions};
use accelrt_models::gguf::GgufFile;
use accelrt_models::llama::{self, LlamaConfig};
use accelrt_models::{registry, ChatTokenizer, ModelStore};
use accelrt_neuron::{NeuronBackend, NeuronOptions};

fn step_inputs(rows: &[(u32, u32, &[u32])]) -> [HostTensor; 3] {
    let n = rows[0].2.len();
    let tokens = rows.iter().flat_map(|r| r.2.iter().copied()).collect();
    let positions = rows.iter().flat_map(|r| (r.1..r.1 + n as u32).collect::<Vec<_>>()).collect();
    let slots = rows.iter().map(|r| r.0).collect();
    [
        HostTensor::u32(vec![rows.len(), n], tokens).unwrap(),
        HostTensor::u32(vec![rows.len(), n], positions).unwrap(),
        HostTensor::u32(vec![rows.len()], slots).unwrap(),
    ]
}

fn step(exe: &dyn Executable, state: &mut accelrt_core::SessionState, rows: &[(u32, u32, &[u32])]) -> Vec<Vec<f32>> {
    let [t, p, s] = step_inputs(rows);
    let inputs = [(llama::TOKENS, &t), (llama::POSITIONS, &p), (llama::SLOTS, &s)];
    let logits = exe.run_with_state(state, &inputs).unwrap().take(llama::LOGITS).unwrap();
    let vocab = logits.shape()[1];
    logits.as_f32().unwrap().chunks_exact(vocab).map(<[f32]>::to_vec).collect()
}

fn argmax(v: &[f32]) -> u32 {
    v.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i as u32).unwrap()
}

/// Greedy decoding of several prompts in one session: each prompt prefilled in its slot, then
/// every sequence decoded together (3 rows run in the batch-4 program, the padded row writing to
/// the spare slot).
fn greedy_batch(exe: &dyn Executable, prompts: &[Vec<u32>], n: usize) -> Vec<Vec<u32>> {
    let mut state = exe.new_state(prompts.len()).unwrap();
    let mut next: Vec<u32> =
        prompts.iter().enumerate().map(|(slot, p)| argmax(&step(exe, &mut state, &[(slot as u32, 0, p)])[0])).collect();
    let mut out: Vec<Vec<u32>> = next.iter().map(|&t| vec![t]).collect();
    for i in 1..n {
        let toks: Vec<[u32; 1]> = next.iter().map(|&t| [t]).collect();
        let rows: Vec<(u32, u32, &[u32])> =
            prompts.iter().enumerate().map(|(s, p)| (s as u32, (p.len() + i - 1) as u32, &toks[s][..])).collect();
        next = step(exe, &mut state, &rows).iter().map(|l| argmax(l)).collect();
        for (o, &t) in out.iter_mut().zip(&next) {
            o.push(t);
        }
    }
    out
}

#[test]
fn smollm2_generates_on_neuron_with_kv_state_on_the_device_like_candle() {
    let dir = ModelStore::from_env()
        .ensure(&registry::SMOLLM2_135M_INSTRUCT)
        .unwrap_or_else(|e| panic!("SmolLM2-135M-Instruct is needed by this test: {e}"));
    let path = dir.join(registry::SMOLLM2_135M_INSTRUCT.files[0].path);
    let file = GgufFile::open(&path).unwrap();
    let config = LlamaConfig::from_gguf(&file).unwrap();
    let stored = |name: &str| Ok(file.tensor(name).unwrap().dtype().unwrap());
    let widened = |name: &str| {
        Ok(match file.tensor(name).unwrap().dtype().unwrap() {
            DType::Quant(_) => DType::F32,
            d => d,
        })
    };
    let context = 64;
    let graph = llama::build_graph(&config, context, &stored).unwrap();
    let f32_graph = llama::build_graph(&config, context, &widened).unwrap();
    let tok = ChatTokenizer::from_gguf(&file).unwrap();

    // Sessions of 3 sequences (4 cache rows with the spare): prefill chunks of 1, 2, 4 and 8
    // tokens for one row, decode steps of 1 token for up to 4 rows.
    let cache = tempfile::tempdir().unwrap();
    for bucket in ["batch=1,seq=1", "batch=1,seq=2", "batch=1,seq=4", "batch=1,seq=8", "batch=2,seq=1", "batch=4,seq=1"]
    {
        common::compile_bucket(cache.path(), &graph, &format!("{bucket},slots=4"), &[]);
    }
    common::use_simulator();
    let options = NeuronOptions { cache_dir: cache.path().into(), target: "inf2".into(), flags: None };
    let neuron = NeuronBackend::with_options(&"neuron:0".parse::<DeviceSpec>().unwrap(), options).unwrap();
    let exe_n = neuron.prepare(&graph, &file, &PrepareOptions::default()).unwrap();
    let cpu = accelrt_candle::CandleBackend::cpu();
    let exe_c = cpu.prepare(&f32_graph, &accelrt_core::quant::Dequantized(&file), &PrepareOptions::default()).unwrap();

    let prompts: Vec<Vec<u32>> =
        ["The capital of France is", "def fibonacci(n):", "Once upon a time, in a quiet village"]
            .iter()
            .map(|t| tok.encode(t).unwrap())
            .collect();
    assert!(prompts.iter().any(|p| p.len() > 8), "one prompt needs more than one chunk of the largest size");

    // First logits of one prompt against the f64 reference evaluator (weights dequantised exactly).
    let [t, p, s] = step_inputs(&[(0, 0, &prompts[0])]);
    let inputs = [(llama::TOKENS, &t), (llama::POSITIONS, &p), (llama::SLOTS, &s)];
    let want = reference::evaluate(&graph, &file, &inputs).unwrap().get(llama::LOGITS).unwrap().to_f64_vec();
    let mut state = exe_n.new_state(3).unwrap();
    let got = step(exe_n.as_ref(), &mut state, &[(0, 0, &prompts[0])]).remove(0);
    let max = want.iter().zip(&got).map(|(a, &b)| (a - b as f64).abs()).fold(0.0, f64::max);
    eprintln!(
        "neuron (test double) prefill of {} tokens: max |Δlogit| vs the f64 reference {max:.2e}",
        prompts[0].len()
    );
    assert!(max <= 5e-4, "max |Δlogit| {max} (bound 5e-4)");

    let got = greedy_batch(exe_n.as_ref(), &prompts, 12);
    let want = greedy_batch(exe_c.as_ref(), &prompts, 12);
    assert_eq!(got, want, "greedy tokens through the Neuron FFI and on candle (same f32 weights)");
    eprintln!("greedy continuations: {:?}", got.iter().map(|ids| tok.decode(ids).unwrap()).collect::<Vec<_>>());

    // A smaller session runs on the programs compiled for 3 (its caches have rows it never uses);
    // a larger one has no program. A write past the context is refused on the host.
    let mut small = exe_n.new_state(1).unwrap();
    assert_eq!(argmax(&step(exe_n.as_ref(), &mut small, &[(0, 0, &prompts[0])])[0]), want[0][0]);
    assert!(exe_n.new_state(4).err().unwrap().to_string().contains("a session of 4 sequence(s)"));
    let mut state = exe_n.new_state(3).unwrap();
    let long = vec![1u32; context + 1];
    let [t, p, s] = step_inputs(&[(0, 0, &long)]);
    let err = exe_n.run_with_state(&mut state, &[(llama::TOKENS, &t), (llama::POSITIONS, &p), (llama::SLOTS, &s)]);
    assert!(err.unwrap_err().to_string().contains("capacity"));
}
