//! The table `accelrt bench` prints at the end of a run, and the what-if prices of the catalog's
//! instances of the same device kind applied to the run's throughput.

use crate::catalog::{Catalog, Price};
use crate::result::{usd_per_million, BenchResult};
use crate::scenario::ScenarioKind;
use std::fmt::Write;

/// The table `accelrt bench` prints.
pub fn summary(results: &[BenchResult], catalog: &Catalog) -> String {
    let mut s = String::new();
    let Some(first) = results.first() else { return s };
    let e = &first.environment;
    let on = if e.device_name.starts_with(&first.backend) {
        e.device_name.clone()
    } else {
        format!("{} ({})", first.backend, e.device_name)
    };
    writeln!(s, "model {} on {on}, {} threads", first.model, e.cpu_threads).unwrap();
    let today = chrono::Utc::now().date_naive();
    let dated = |p: &Price| {
        let stale = if crate::catalog::price_is_stale(p, today) { "; MORE THAN A YEAR OLD" } else { "" };
        format!("${:.4}/h {} — {}, read {}{stale}", p.usd_per_hour, p.basis, p.source, p.date_read)
    };
    match (&first.instance_type, &first.price) {
        (Some(t), Some(p)) => writeln!(s, "instance {t} (from {}): {}", first.instance_type_source, dated(p)).unwrap(),
        (Some(t), None) => writeln!(s, "instance {t} (from {}): no price known; pass --price-per-hour or --prices FILE", first.instance_type_source).unwrap(),
        (None, Some(p)) => writeln!(s, "instance type unknown; {}", dated(p)).unwrap(),
        (None, None) => writeln!(s, "instance type unknown: pass --instance-type (or set ACCELRT_INSTANCE_TYPE, or --imds on EC2) or --price-per-hour for $/1M").unwrap(),
    }
    for r in results.iter().filter(|r| r.system == first.system).take(1) {
        if let Some(h) = &r.hardware {
            if h.matches {
                if let Some(note) = &h.note {
                    writeln!(s, "note: {note}").unwrap();
                }
            } else {
                writeln!(
                    s,
                    "NOT a {} measurement: {}. The cost uses your --price-per-hour for this machine.",
                    h.instance_type,
                    h.mismatches.join("; ")
                )
                .unwrap();
            }
        }
    }
    for r in results {
        if let Some(load) = r.environment.host_load.as_ref().filter(|l| l.noisy) {
            writeln!(s, "noisy: {} {}: {}", r.system, r.scenario, load.noisy_reasons.join("; ")).unwrap();
        }
    }
    let inference: Vec<&BenchResult> = results.iter().filter(|r| r.training.is_none()).collect();
    if !inference.is_empty() {
        writeln!(s).unwrap();
        inference_table(&mut s, &inference);
    }
    let training: Vec<&BenchResult> = results.iter().filter(|r| r.training.is_some()).collect();
    if !training.is_empty() {
        writeln!(s).unwrap();
        training_table(&mut s, &training);
    }
    let generation: Vec<&BenchResult> = results.iter().filter(|r| r.generation.is_some()).collect();
    if !generation.is_empty() {
        writeln!(
            s,
            "\ntext generation ({} new tokens per request; inferences above are requests):",
            generation[0].generation.as_ref().map_or(0, |g| g.max_tokens)
        )
        .unwrap();
        writeln!(
            s,
            "{:<14} {:<14} {:>5} {:>9} {:>11} {:>11} {:>11} {:>11} {:>12}",
            "system", "scenario", "batch", "tokens/s", "TTFT p50", "TTFT p99", "TPOT p50", "TPOT p99", "$/1M tokens"
        )
        .unwrap();
        for r in generation {
            let g = r.generation.as_ref().expect("filtered");
            let cost = g.usd_per_million_output_tokens.map(|c| format!("{c:.4}")).unwrap_or_else(|| "—".into());
            writeln!(
                s,
                "{:<14} {:<14} {:>5} {:>9.1} {:>8.1} ms {:>8.1} ms {:>8.2} ms {:>8.2} ms {:>12}",
                r.system,
                r.scenario.to_string(),
                r.batch_size,
                g.output_tokens_per_s,
                g.ttft_ms.p50,
                g.ttft_ms.p99,
                g.tpot_ms.p50,
                g.tpot_ms.p99,
                cost
            )
            .unwrap();
        }
    }
    // The same measured throughput priced at the catalog's instances of this device kind. These are
    // prices applied to this machine's measurement, not measurements on those instances.
    // A device the catalog does not price by kind (a PJRT plugin's) gets no what-if table.
    use accelrt_core::{DeviceKind, DeviceSpec};
    let kind = match first.backend.parse::<DeviceSpec>().map(|d| d.kind()) {
        Ok(DeviceKind::Cpu) => "cpu",
        Ok(DeviceKind::Cuda) => "cuda",
        Ok(DeviceKind::Neuron) => "neuron",
        _ => return s,
    };
    // The best valid accelrt throughput: training tokens/s for a training run, else inferences/s
    // (single-stream measures latency, not what an instance can do).
    let best = results
        .iter()
        .filter(|r| r.system == "accelrt" && r.valid && r.scenario != ScenarioKind::SingleStream)
        .map(|r| match &r.training {
            Some(t) => (r, t.tokens_per_s, "training tokens"),
            None => (r, r.throughput_per_s, "inferences"),
        })
        .max_by(|a, b| a.1.total_cmp(&b.1));
    if let Some((best, rate, unit)) = best {
        let rows: Vec<(&str, &Price)> = catalog
            .instances
            .iter()
            .filter(|i| i.accelerator.as_ref().map_or("cpu", |a| a.kind.as_str()) == kind)
            .filter_map(|i| i.prices.iter().find(|p| p.basis == "on-demand").map(|p| (i.instance_type.as_str(), p)))
            .collect();
        if !rows.is_empty() {
            writeln!(s, "\nWhat-if, NOT measured there: catalog on-demand prices applied to this run's {} throughput ({rate:.1} {unit}/s).", best.scenario).unwrap();
            writeln!(s, "Only a run on the instance itself measures it (`accelrt report` uses measured runs only).")
                .unwrap();
            for (t, p) in rows {
                let c = usd_per_million(p.usd_per_hour, rate).unwrap_or(f64::NAN);
                writeln!(s, "  {t:<14} ${:.4}/h → ${c:.4} per 1M {unit} if it matched this throughput", p.usd_per_hour)
                    .unwrap();
            }
        }
    }
    s
}

/// Inference results: throughput, latency percentiles and $/1M inferences.
fn inference_table(s: &mut String, results: &[&BenchResult]) {
    writeln!(
        s,
        "{:<14} {:<14} {:>5} {:>6} {:>12} {:>9} {:>9} {:>9} {:>10}",
        "system", "scenario", "batch", "valid", "inferences/s", "p50 ms", "p90 ms", "p99 ms", "$/1M"
    )
    .unwrap();
    for r in results.iter().copied() {
        let cost = r.usd_per_million_inferences.map(|c| format!("{c:.4}")).unwrap_or_else(|| "—".into());
        writeln!(
            s,
            "{:<14} {:<14} {:>5} {:>6} {:>12.1} {:>9.2} {:>9.2} {:>9.2} {:>10}",
            r.system,
            r.scenario.to_string(),
            r.batch_size,
            if r.valid { "yes" } else { "NO" },
            r.throughput_per_s,
            r.latency_ms.p50,
            r.latency_ms.p90,
            r.latency_ms.p99,
            cost
        )
        .unwrap();
        for reason in &r.invalid_reasons {
            writeln!(s, "{:<14}   invalid: {reason}", "").unwrap();
        }
    }
}

/// Training results: samples/s, tokens/s, step time, peak memory, the first and last step's loss
/// and $/1M training tokens.
fn training_table(s: &mut String, results: &[&BenchResult]) {
    let first = results[0].training.as_ref().expect("filtered");
    let what = match first.seq_len {
        Some(n) => format!("{}, windows of {n} tokens", first.task),
        None => first.task.clone(),
    };
    let what = match first.precision.as_str() {
        crate::training::PRECISION_F32 => what,
        other => format!("{what}, {other} precision"),
    };
    writeln!(
        s,
        "training ({what}; AdamW lr {:e}, weight decay {:e}; {} data; steps on the same batches on every system):",
        first.lr, first.weight_decay, first.data
    )
    .unwrap();
    writeln!(
        s,
        "{:<14} {:>5} {:>6} {:>6} {:>10} {:>10} {:>10} {:>10} {:>9} {:>21} {:>14}",
        "system",
        "batch",
        "valid",
        "steps",
        "samples/s",
        "tokens/s",
        "step p50",
        "step p99",
        "peak GB",
        "loss first → last",
        "$/1M tokens"
    )
    .unwrap();
    for r in results {
        let t = r.training.as_ref().expect("filtered");
        let cost = t.usd_per_million_tokens.map(|c| format!("{c:.4}")).unwrap_or_else(|| "—".into());
        let peak = r.memory.peak_host_bytes.map(|b| format!("{:.2}", b as f64 / 1e9)).unwrap_or_else(|| "—".into());
        let losses = crate::training::loss_span(&t.losses);
        writeln!(
            s,
            "{:<14} {:>5} {:>6} {:>6} {:>10.2} {:>10.1} {:>7.0} ms {:>7.0} ms {:>9} {:>21} {:>14}",
            r.system,
            r.batch_size,
            if r.valid { "yes" } else { "NO" },
            r.queries,
            r.throughput_per_s,
            t.tokens_per_s,
            r.latency_ms.p50,
            r.latency_ms.p99,
            peak,
            losses,
            cost
        )
        .unwrap();
        for reason in &r.invalid_reasons {
            writeln!(s, "{:<14}   invalid: {reason}", "").unwrap();
        }
    }
    if let (Some(ours), Some(peer)) =
        (results.iter().find(|r| r.system == "accelrt"), results.iter().find(|r| r.system != "accelrt"))
    {
        let (a, b) = (ours.training.as_ref().expect("filtered"), peer.training.as_ref().expect("filtered"));
        if b.tokens_per_s > 0.0 {
            let ratio = crate::training::short_number(a.tokens_per_s / b.tokens_per_s);
            writeln!(s, "accelrt / {}: {ratio}× the training tokens/s", peer.system).unwrap();
        }
    }
}
