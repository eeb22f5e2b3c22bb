//! The inference runners: the embedding and text-generation workloads on accelrt, then on each
//! peer, through the configured scenarios.

use super::scenarios::run_scenarios;
use super::{BenchConfig, Outcome};
use crate::environment::Environment;
use crate::peers::{ExternalRunner, PeerOptions};
use crate::result::{BenchResult, GenerationMetrics};
use crate::scenario::ScenarioKind;
use crate::workload::{EmbeddingWorkload, GenerationWorkload};
use crate::{BenchError, Result};
use accelrt_core::Backend;
use accelrt_models::{ChatMessage, SentenceEmbedder, TextGenerator};
use std::path::Path;

pub(super) fn device_bytes(backend: &dyn Backend) -> Option<u64> {
    backend.device_info().ok().and_then(|d| match (d.memory_total_bytes, d.memory_free_bytes) {
        (Some(t), Some(f)) if d.kind != accelrt_core::DeviceKind::Cpu => Some(t.saturating_sub(f)),
        _ => None,
    })
}

pub(super) fn run_embedding(
    config: &BenchConfig,
    backend: &dyn Backend,
    dir: &Path,
    model_name: &str,
) -> Result<Outcome> {
    let embedder = SentenceEmbedder::load(dir, backend, &config.options)?;
    let device = backend.device_info()?;
    let mut outcome = Outcome::default();
    {
        let mut workload = EmbeddingWorkload::new(&embedder, config.texts.clone())?;
        outcome.interrupted = run_scenarios(config, &mut workload, "accelrt", &[], &mut |o| {
            let mut env = Environment::capture(backend.name(), &device);
            env.host_load = o.load;
            let r =
                BenchResult::new(&o.m, model_name, "accelrt", &config.pricing, &o.sweep, env, device_bytes(backend));
            outcome.keep(config, r)
        })?;
    }
    drop(embedder);
    for (name, script) in &config.peers {
        if outcome.interrupted {
            break;
        }
        if let Err(e) =
            run_peer(config, name, script, dir, model_name, &device, config.texts.clone(), None, &mut outcome)
        {
            outcome.peer_failures.push(e);
        }
    }
    Ok(outcome)
}

pub(super) fn run_generation(
    config: &BenchConfig,
    backend: &dyn Backend,
    gguf: &Path,
    model_name: &str,
) -> Result<Outcome> {
    if config.scenarios.contains(&ScenarioKind::Server) {
        return Err(BenchError::Invalid(
            "the in-process server scenario is not available for text generation (it would need the harness \
             to batch continuously); measure it against `accelrt serve` with `--url`, or use offline and single-stream"
                .into(),
        ));
    }
    let generator = TextGenerator::load(gguf, backend, &config.options, config.context)?;
    // Instruct models get each text as a user message in their own chat template (tokenised as the
    // server does: the text is text, only the template's markers are control).
    let chat = generator.tokenizer().chat_template().is_some();
    let prompts = config
        .texts
        .iter()
        .map(|t| if chat { generator.chat_prompt(&[ChatMessage::new("user", t)]) } else { generator.text_prompt(t) })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    // Peers are given the same prompts as text.
    let prompts_text: Vec<String> = config
        .texts
        .iter()
        .map(|t| {
            if chat {
                generator.tokenizer().apply_chat_template(&[ChatMessage::new("user", t)])
            } else {
                Ok(t.clone())
            }
        })
        .collect::<std::result::Result<_, _>>()?;
    if let Some(p) = prompts.iter().find(|p| p.len() + config.max_tokens > generator.context()) {
        return Err(BenchError::Invalid(format!(
            "a prompt of {} tokens plus {} new tokens does not fit the context of {} (raise --context)",
            p.len(),
            config.max_tokens,
            generator.context()
        )));
    }
    let device = backend.device_info()?;
    let mut outcome = Outcome::default();
    {
        let mut workload = GenerationWorkload::new(&generator, prompts, config.max_tokens)?;
        outcome.interrupted = run_scenarios(config, &mut workload, "accelrt", &[], &mut |o| {
            let mut env = Environment::capture(backend.name(), &device);
            env.host_load = o.load;
            let mut r =
                BenchResult::new(&o.m, model_name, "accelrt", &config.pricing, &o.sweep, env, device_bytes(backend));
            r.generation =
                Some(GenerationMetrics::new(&o.requests, config.max_tokens, o.m.duration_s, r.price_usd_per_hour));
            outcome.keep(config, r)
        })?;
    }
    drop(generator);
    for (name, script) in &config.peers {
        if outcome.interrupted {
            break;
        }
        if let Err(e) = run_peer(
            config,
            name,
            script,
            gguf,
            model_name,
            &device,
            prompts_text.clone(),
            Some(config.max_tokens),
            &mut outcome,
        ) {
            outcome.peer_failures.push(e);
        }
    }
    Ok(outcome)
}

#[allow(clippy::too_many_arguments)]
pub(super) fn run_peer(
    config: &BenchConfig,
    name: &str,
    script: &Path,
    dir: &Path,
    model_name: &str,
    device: &accelrt_core::DeviceInfo,
    inputs: Vec<String>,
    max_tokens: Option<usize>,
    outcome: &mut Outcome,
) -> Result<()> {
    let options = PeerOptions {
        threads: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        device: config.peer_device.clone(),
        dtype: config.peer_dtype.clone(),
        max_tokens,
    };
    let mut runner = ExternalRunner::spawn(name, script, dir, &options, inputs)?;
    let info = runner.info.clone();
    let pid = runner.pid();
    outcome.interrupted = run_scenarios(config, &mut runner, name, &[pid], &mut |o| {
        let mut env = super::peer_environment(&info, device, config);
        env.host_load = o.load;
        // A peer's own memory is not this process's; leave it out rather than misreport it.
        let mut r = BenchResult::new(&o.m, model_name, &info.system, &config.pricing, &o.sweep, env, None);
        r.memory.peak_host_bytes = None;
        if let Some(n) = max_tokens {
            r.generation = Some(GenerationMetrics::new(&o.requests, n, o.m.duration_s, r.price_usd_per_hour));
        }
        outcome.keep(config, r)
    })?;
    Ok(())
}
