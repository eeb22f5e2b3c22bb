//! `accelrt report`: merges result files from several instances and backends into one markdown
//! report with SVG charts. Costs come only from measured runs; families without a run are listed as
//! not measured, never estimated.

use crate::catalog::Catalog;
use crate::result::BenchResult;
use crate::{chart, BenchError, Result};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};

/// Writes `DIR/report.md` and its charts; returns the report's path.
pub fn write_report(results: &[BenchResult], out: &Path, p99_ms: Option<f64>) -> Result<PathBuf> {
    if results.is_empty() {
        return Err(BenchError::Invalid("no results to report".into()));
    }
    std::fs::create_dir_all(out).map_err(|e| BenchError::io(out, e))?;
    let mut by_model: BTreeMap<&str, Vec<&BenchResult>> = BTreeMap::new();
    for r in results {
        by_model.entry(r.model.as_str()).or_default().push(r);
    }
    let catalog = Catalog::builtin();
    let mut md = String::new();
    writeln!(md, "# accelrt benchmark report\n").unwrap();
    writeln!(md, "{} result(s) from {} instance type(s). $/1M = price per hour × 10⁶ / (3600 × throughput); each row says which throughput and which price it uses.\n",
        results.len(),
        results.iter().map(|r| r.instance_type.as_deref().unwrap_or("unknown")).collect::<std::collections::BTreeSet<_>>().len()).unwrap();

    for (model, rows) in &by_model {
        let slug: String = model.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
        writeln!(md, "## {model}\n").unwrap();
        writeln!(md, "| instance | system | backend | scenario | batch | valid | throughput (/s) | p99 (ms) | price ($/h, basis) | $/1M inferences | cost uses |").unwrap();
        writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|").unwrap();
        let mut sorted = rows.clone();
        sorted.sort_by(|a, b| {
            (a.instance_type.clone(), &a.system, a.scenario as u8, a.batch_size).cmp(&(
                b.instance_type.clone(),
                &b.system,
                b.scenario as u8,
                b.batch_size,
            ))
        });
        for r in &sorted {
            let price = match &r.price {
                Some(p) => format!("{:.4} ({})", p.usd_per_hour, p.basis),
                None => "unknown".into(),
            };
            let cost = r.usd_per_million_inferences.map(|c| format!("{c:.4}")).unwrap_or_else(|| "—".into());
            writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {:.1} | {:.2} | {} | {} | {} |",
                r.instance_type.as_deref().unwrap_or("unknown"),
                r.system,
                r.backend,
                r.scenario,
                r.batch_size,
                if r.valid { "yes" } else { "**no**" },
                r.throughput_per_s,
                r.latency_ms.p99,
                price,
                cost,
                r.cost_basis
            )
            .unwrap();
        }
        let generation: Vec<&&BenchResult> = sorted.iter().filter(|r| r.generation.is_some()).collect();
        if !generation.is_empty() {
            writeln!(md, "\nText generation (throughput above counts requests):\n").unwrap();
            writeln!(md, "| instance | system | backend | scenario | batch | new tokens/request | output tokens/s | TTFT p50 / p99 (ms) | TPOT p50 / p99 (ms) | $/1M output tokens |").unwrap();
            writeln!(md, "|---|---|---|---|---|---|---|---|---|---|").unwrap();
            for r in generation {
                let g = r.generation.as_ref().expect("filtered");
                let cost = g.usd_per_million_output_tokens.map(|c| format!("{c:.4}")).unwrap_or_else(|| "—".into());
                writeln!(
                    md,
                    "| {} | {} | {} | {} | {} | {} | {:.1} | {:.1} / {:.1} | {:.2} / {:.2} | {} |",
                    r.instance_type.as_deref().unwrap_or("unknown"),
                    r.system,
                    r.backend,
                    r.scenario,
                    r.batch_size,
                    g.max_tokens,
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
        let invalid: Vec<&&BenchResult> = sorted.iter().filter(|r| !r.valid).collect();
        if !invalid.is_empty() {
            writeln!(md, "\nInvalid runs (their numbers are shown but must not be quoted):").unwrap();
            for r in invalid {
                writeln!(
                    md,
                    "- {} {} {} b{}: {}",
                    label(r),
                    r.backend,
                    r.scenario,
                    r.batch_size,
                    r.invalid_reasons.join("; ")
                )
                .unwrap();
            }
        }

        if let Some(bound) = p99_ms {
            writeln!(md).unwrap();
            let meeting: Vec<&&BenchResult> = sorted
                .iter()
                .filter(|r| r.valid && r.latency_ms.p99 <= bound && r.usd_per_million_inferences.is_some())
                .collect();
            match meeting.iter().min_by(|a, b| a.usd_per_million_inferences.partial_cmp(&b.usd_per_million_inferences).expect("finite")) {
                Some(best) => writeln!(md, "**Cheapest measured setup with p99 ≤ {bound} ms:** {} ({}, {}, {} at batch {}) at ${:.4} per 1M inferences.",
                    best.instance_type.as_deref().unwrap_or("unknown"), best.system, best.backend, best.scenario, best.batch_size,
                    best.usd_per_million_inferences.expect("filtered")).unwrap(),
                None => writeln!(md, "**Nothing measured meets p99 ≤ {bound} ms** for {model} (with a known price).").unwrap(),
            }
        }

        let mut categories: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for i in &catalog.instances {
            let measured = sorted.iter().any(|r| r.instance_type.as_deref() == Some(i.instance_type.as_str()));
            if measured {
                categories.entry(i.category.clone()).or_default().push(i.instance_type.clone());
            } else {
                categories.entry(i.category.clone()).or_default();
            }
        }
        writeln!(md, "\nInstance families in the catalog, and whether this model was measured there (costs are never extrapolated to an unmeasured family):\n").unwrap();
        for (cat, measured) in &categories {
            if measured.is_empty() {
                writeln!(md, "- {cat}: not measured").unwrap();
            } else {
                writeln!(md, "- {cat}: measured on {}", measured.join(", ")).unwrap();
            }
        }

        let bars_of = |f: &dyn Fn(&BenchResult) -> Option<f64>| -> Vec<(String, f64)> {
            sorted
                .iter()
                .filter(|r| r.valid)
                .filter_map(|r| {
                    f(r).map(|v| (format!("{} {} {} b{}", label(r), r.backend, r.scenario, r.batch_size), v))
                })
                .collect()
        };
        let throughput = bars_of(&|r| Some(r.throughput_per_s));
        let file = format!("{slug}-throughput.svg");
        chart::bars(&out.join(&file), &format!("{model}: throughput"), "inferences / s", &throughput)
            .map_err(BenchError::Invalid)?;
        writeln!(md, "\n![throughput by instance]({file})").unwrap();
        let cost = bars_of(&|r| r.usd_per_million_inferences);
        if !cost.is_empty() {
            let file = format!("{slug}-cost.svg");
            chart::bars(&out.join(&file), &format!("{model}: $ per 1M inferences"), "US$ / 1M", &cost)
                .map_err(BenchError::Invalid)?;
            writeln!(md, "\n![$ per 1M inferences by instance]({file})").unwrap();
        }
        let curves: Vec<(String, Vec<(f64, f64)>)> = sorted
            .iter()
            .filter(|r| !r.sweep.is_empty())
            .map(|r| {
                (
                    format!("{} {} b{}", label(r), r.backend, r.batch_size),
                    r.sweep.iter().map(|s| (s.target_qps, s.p99_ms)).collect(),
                )
            })
            .collect();
        if !curves.is_empty() {
            let file = format!("{slug}-latency-vs-load.svg");
            chart::lines(
                &out.join(&file),
                &format!("{model}: p99 latency vs offered load"),
                "queries / s",
                "p99 (ms)",
                &curves,
            )
            .map_err(BenchError::Invalid)?;
            writeln!(md, "\n![p99 latency vs load]({file})").unwrap();
        }
        writeln!(md).unwrap();
    }

    writeln!(md, "## Environments\n").unwrap();
    for r in results {
        let e = &r.environment;
        writeln!(
            md,
            "- {} {} on {}: {} ({} threads), accelrt {} ({}), {} — {}",
            r.system,
            r.scenario,
            r.instance_type.as_deref().unwrap_or("unknown instance"),
            e.device_name,
            e.cpu_threads,
            e.accelrt_version,
            e.git_commit,
            e.rustc,
            e.date
        )
        .unwrap();
    }
    let path = out.join("report.md");
    std::fs::write(&path, md).map_err(|e| BenchError::io(&path, e))?;
    Ok(path)
}

fn label(r: &BenchResult) -> String {
    format!("{} {}", r.instance_type.as_deref().unwrap_or("unknown"), r.system)
}
