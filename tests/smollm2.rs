//! SmolLM2-135M-Instruct (Q4_1 GGUF) against its references: token ids from llama.cpp and
//! transformers, greedy generations from llama.cpp (same quantised arithmetic: 8-bit activations)
//! and transformers (weights dequantised to fp32), and logits from the reference evaluator.

mod common;

use accelrt::core::reference;
use accelrt::models::gguf::GgufFile;
use accelrt::models::llama::{self, LlamaConfig};
use accelrt::models::{ChatMessage, ChatTokenizer, FinishReason, SamplingParams, TextGenerator};
use accelrt::{DType, HostTensor, PrepareOptions};
use common::{smollm2_gguf, smollm2_reference, test_devices};

fn load(device: &str, context: usize) -> TextGenerator {
    let backend = accelrt::open_backend(device).unwrap();
    TextGenerator::load(&smollm2_gguf(), backend.as_ref(), &PrepareOptions::default(), context).unwrap()
}

/// Greedy continuation by plain argmax, without stopping at end-of-turn tokens (as the references).
fn greedy_ids(g: &TextGenerator, prompt: &[u32], n: usize) -> Vec<u32> {
    let mut state = g.new_session(1).unwrap();
    let mut logits = g.step(&mut state, &[(0, 0, prompt)]).unwrap().remove(0);
    let mut out = Vec::new();
    for i in 0..n {
        let next = accelrt::models::sampling::argmax(&logits);
        out.push(next);
        if i + 1 < n {
            logits = g.step(&mut state, &[(0, prompt.len() + i, &[next])]).unwrap().remove(0);
        }
    }
    out
}

fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

#[test]
fn tokenizer_matches_llama_cpp_and_transformers_and_round_trips() {
    let file = GgufFile::open(&smollm2_gguf()).unwrap();
    let tok = ChatTokenizer::from_gguf(&file).unwrap();
    for t in smollm2_reference().texts {
        let ids = tok.encode(&t.text).unwrap();
        assert_eq!(ids, t.llama_cpp, "ids of {:?} differ from llama.cpp", t.text);
        assert_eq!(ids, t.transformers, "ids of {:?} differ from transformers", t.text);
        assert_eq!(tok.decode(&ids).unwrap(), t.text, "round trip of {:?}", t.text);
    }
}

#[test]
fn chat_template_renders_chatml_from_the_gguf() {
    let file = GgufFile::open(&smollm2_gguf()).unwrap();
    let tok = ChatTokenizer::from_gguf(&file).unwrap();
    let text = tok.apply_chat_template(&[ChatMessage::new("user", "Hi")]).unwrap();
    assert_eq!(
        text,
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
         <|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
    let with_system =
        tok.apply_chat_template(&[ChatMessage::new("system", "Be brief."), ChatMessage::new("user", "Hi")]).unwrap();
    assert!(with_system.starts_with("<|im_start|>system\nBe brief.<|im_end|>\n"));
    let end = tok.encode("<|im_end|>").unwrap();
    assert_eq!(end.len(), 1);
    assert!(tok.is_stop(end[0]));
}

/// Greedy output against llama.cpp, which computes as accelrt does (weights in their Q4_1/Q8_0
/// blocks, activations quantised to 8 bits per block of 32): the first 16 tokens must agree on
/// every prompt. Against transformers (exact fp32 activations) the generations part where two
/// candidates are nearly tied; that is reported, and explained in docs/PERFORMANCE.md.
#[test]
fn greedy_generation_matches_llama_cpp() {
    let reference = smollm2_reference();
    for device in test_devices() {
        let g = load(&device, 256);
        let mut matched = 0;
        for p in &reference.prompts {
            assert_eq!(g.tokenizer().encode(&p.text).unwrap(), p.prompt_ids, "prompt ids of {}", p.name);
            let ids = greedy_ids(&g, &p.prompt_ids, p.llama_cpp.len());
            let with_cpp = common_prefix(&ids, &p.llama_cpp);
            let with_hf = common_prefix(&ids, &p.transformers);
            println!(
                "{device} {:<12} agrees with llama.cpp for {with_cpp:>2}/{} tokens, with transformers for {with_hf:>2}",
                p.name,
                ids.len()
            );
            if with_cpp >= 16 {
                matched += 1;
            }
        }
        assert!(
            matched >= 5,
            "{device}: only {matched} of {} prompts match llama.cpp for 16 tokens",
            reference.prompts.len()
        );
    }
}

/// The graph on a backend against the reference evaluator (f64, weights dequantised exactly) on
/// several prompts, comparing the last position's logits. With the weights dequantised for the
/// backend too, the graph path itself must agree closely; with quantised matmuls the 8-bit
/// activations (as in llama.cpp) move logits by up to a few tenths, within the stated bounds.
#[test]
fn logits_match_the_reference_evaluator() {
    let path = smollm2_gguf();
    let file = GgufFile::open(&path).unwrap();
    let config = LlamaConfig::from_gguf(&file).unwrap();
    let stored = |name: &str| Ok(file.tensor(name).unwrap().dtype().unwrap());
    let widened = |name: &str| {
        Ok(match file.tensor(name).unwrap().dtype().unwrap() {
            DType::Quant(_) => DType::F32,
            d => d,
        })
    };
    let quantised = llama::build_graph(&config, 64, &stored).unwrap();
    let f32_graph = llama::build_graph(&config, 64, &widened).unwrap();
    let dequantised = accelrt::core::quant::Dequantized(&file);
    let tok = ChatTokenizer::from_gguf(&file).unwrap();
    for device in test_devices() {
        let backend = accelrt::open_backend(&device).unwrap();
        let exe_q = backend.prepare(&quantised, &file, &PrepareOptions::default()).unwrap();
        let exe_f = backend.prepare(&f32_graph, &dequantised, &PrepareOptions::default()).unwrap();
        for text in ["The capital of France is", "def add(a, b):", "<|im_start|>user\nHi<|im_end|>\n"] {
            let ids = tok.encode(text).unwrap();
            let n = ids.len();
            let tokens = HostTensor::u32(vec![1, n], ids.clone()).unwrap();
            let positions = HostTensor::u32(vec![1, n], (0..n as u32).collect()).unwrap();
            let slots = HostTensor::u32(vec![1], vec![0]).unwrap();
            let inputs = [(llama::TOKENS, &tokens), (llama::POSITIONS, &positions), (llama::SLOTS, &slots)];
            let want =
                reference::evaluate(&quantised, &file, &inputs).unwrap().get(llama::LOGITS).unwrap().to_f64_vec();
            let spread = want.iter().fold(f64::NEG_INFINITY, |m, v| m.max(*v))
                - want.iter().fold(f64::INFINITY, |m, v| m.min(*v));
            for (label, exe, max_bound, mean_bound) in
                [("f32 weights", &exe_f, 2e-3, 2e-4), ("quantised", &exe_q, 1.5, 0.35)]
            {
                let got = exe.run(&inputs).unwrap().get(llama::LOGITS).unwrap().to_f64_vec();
                let diffs: Vec<f64> = want.iter().zip(&got).map(|(a, b)| (a - b).abs()).collect();
                let max = diffs.iter().copied().fold(0.0, f64::max);
                let mean = diffs.iter().sum::<f64>() / diffs.len() as f64;
                let top5 = top(&want, 5);
                let best = argmax(&got);
                println!(
                    "{device} {label:<11} {text:?}: max |Δlogit| {max:.2e}, mean {mean:.2e} (logits span {spread:.1}); \
                     top token {best}, reference top {}",
                    top5[0]
                );
                assert!(max <= max_bound && mean <= mean_bound, "{device} {label} {text:?}: max {max}, mean {mean}");
                assert!(
                    top5.contains(&best),
                    "{device} {label} {text:?}: top token {best} not in the reference top 5 {top5:?}"
                );
            }
        }
    }
}

fn argmax(v: &[f64]) -> usize {
    top(v, 1)[0]
}

fn top(v: &[f64], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[b].total_cmp(&v[a]));
    idx.truncate(k);
    idx
}

#[test]
fn sampling_with_a_seed_is_reproducible_and_streams_the_text() {
    let g = load("cpu", 128);
    let ids = g.tokenizer().encode("Once upon a time").unwrap();
    let params =
        SamplingParams { temperature: 0.8, top_k: Some(40), top_p: Some(0.95), repetition_penalty: 1.1, seed: 42 };
    let mut streamed = String::new();
    let a = g.generate(&ids, &params, 24, |piece| streamed.push_str(piece)).unwrap();
    let b = g.generate(&ids, &params, 24, |_| {}).unwrap();
    assert_eq!(a.tokens, b.tokens);
    assert_eq!(streamed, a.text);
    assert_eq!(a.text, g.tokenizer().decode(&a.tokens).unwrap());
    let other = g.generate(&ids, &SamplingParams { seed: 43, ..params.clone() }, 24, |_| {}).unwrap();
    assert_ne!(a.tokens, other.tokens, "a different seed should give different text");
}

/// Several sequences of different lengths decoded together give what each gives alone.
#[test]
fn batched_decode_matches_one_sequence_at_a_time() {
    let g = load("cpu", 128);
    let prompts: Vec<Vec<u32>> = ["The capital of France is", "def fibonacci(n):\n", "Three primary colors are"]
        .iter()
        .map(|t| g.tokenizer().encode(t).unwrap())
        .collect();
    let params = SamplingParams::greedy();
    let together = g.generate_batch(&prompts, &params, &accelrt::models::Limits::max_tokens(12), |_, _| {}).unwrap();
    for (p, t) in prompts.iter().zip(&together) {
        let alone = g.generate(p, &params, 12, |_| {}).unwrap();
        assert_eq!(alone.tokens, t.tokens);
    }
}

#[test]
fn bad_requests_are_refused_clearly() {
    let g = load("cpu", 16);
    let long = g.tokenizer().encode(&"word ".repeat(40)).unwrap();
    let err = g.generate(&long, &SamplingParams::greedy(), 4, |_| {}).unwrap_err().to_string();
    assert!(err.contains("context holds 16 positions"), "{err}");
    let ids = g.tokenizer().encode("Hi").unwrap();
    let err = g.generate(&ids, &SamplingParams::greedy(), 0, |_| {}).unwrap_err().to_string();
    assert!(err.contains("at least 1"), "{err}");
    assert!(g.generate(&[], &SamplingParams::greedy(), 4, |_| {}).is_err());
    // Output stops when the context is full.
    let out = g.generate(&ids, &SamplingParams::greedy(), 100, |_| {}).unwrap();
    assert!(out.finish_reason == FinishReason::Length || out.finish_reason == FinishReason::Stop);
    assert!(ids.len() + out.tokens.len() <= 16);
}

/// The quantised path against llama.cpp's own logits at each prompt's last position, over
/// llama.cpp's 50 most likely tokens. Both quantise activations to 8 bits, but with different
/// rounding details (llama.cpp keeps block scales and its KV cache in f16, accelrt in f32), so
/// each sits a few tenths from the exact logits and from the other; the bound is the one stated in
/// docs/PERFORMANCE.md.
#[test]
fn quantised_logits_match_llama_cpp() {
    let reference = smollm2_reference();
    for device in test_devices() {
        let g = load(&device, 256);
        for p in &reference.prompts {
            let mut state = g.new_session(1).unwrap();
            let logits = g.step(&mut state, &[(0, 0, &p.prompt_ids)]).unwrap().remove(0);
            let max = p
                .llama_cpp_top_logits
                .iter()
                .map(|&(id, want)| (logits[id as usize] as f64 - want).abs())
                .fold(0.0, f64::max);
            println!("{device} {:<12} max |Δlogit| vs llama.cpp over its top 50: {max:.3}", p.name);
            assert!(max < 1.0, "{device} {}: max |Δlogit| {max} vs llama.cpp", p.name);
        }
    }
}
