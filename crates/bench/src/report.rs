//! `accelrt report`: merges result files from several instances and backends into one markdown
//! report with SVG charts. Costs come only from measured runs; families without a run are listed as
//! not measured, never estimated.

use crate::catalog::Catalog;
use crate::limits::{check_flag, Limit};
use crate::result::BenchResult;
use crate::{chart, BenchError, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::path::{Path, PathBuf};

/// Writes `DIR/report.md` and its charts; returns the report's path. Every string from a result
/// goes into the markdown through [`markdown_text`].
pub fn write_report(results: &[BenchResult], out: &Path, p99_ms: Option<f64>) -> Result<PathBuf> {
    if results.is_empty() {
        return Err(BenchError::Invalid("no results to report".into()));
    }
    if let Some(bound) = p99_ms {
        check_flag("--p99-ms", bound, Limit::LATENCY_BOUND_MS)?;
    }
    for (i, r) in results.iter().enumerate() {
        r.check().map_err(|why| {
            BenchError::Invalid(format!(
                "result {} ({} {} {}): {why}",
                i + 1,
                plain_text(&r.system),
                plain_text(&r.model),
                r.scenario
            ))
        })?;
    }
    std::fs::create_dir_all(out).map_err(|e| BenchError::io(out, e))?;
    let mut by_model: BTreeMap<&str, Vec<&BenchResult>> = BTreeMap::new();
    for r in results {
        by_model.entry(r.model.as_str()).or_default().push(r);
    }
    let catalog = Catalog::builtin();
    let text = markdown_text;
    let mut slugs = BTreeSet::new();
    let mut md = String::new();
    writeln!(md, "# accelrt benchmark report\n").unwrap();
    writeln!(md, "{} result(s) from {} instance type(s). $/1M = price per hour × 10⁶ / (3600 × throughput); each row says which throughput and which price it uses.\n",
        results.len(),
        results.iter().map(|r| r.instance_type.as_deref().unwrap_or("unknown")).collect::<std::collections::BTreeSet<_>>().len()).unwrap();

    for (model, rows) in &by_model {
        // Chart file names: distinct even when two model names clean to the same text.
        let clean: String = model.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
        let slug =
            (1..).map(|n| if n == 1 { clean.clone() } else { format!("{clean}-{n}") }).find(|s| !slugs.contains(s));
        let slug = slug.expect("an unused name");
        slugs.insert(slug.clone());
        let title = plain_text(model);
        writeln!(md, "## {}\n", text(model)).unwrap();
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
                Some(p) => format!("{:.4} ({})", p.usd_per_hour, text(&p.basis)),
                None => "unknown".into(),
            };
            let cost = r.usd_per_million_inferences.map(|c| format!("{c:.4}")).unwrap_or_else(|| "—".into());
            writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {:.1} | {:.2} | {} | {} | {} |",
                text(instance(r)),
                text(&r.system),
                text(&r.backend),
                r.scenario,
                r.batch_size,
                if r.valid { "yes" } else { "**no**" },
                r.throughput_per_s,
                r.latency_ms.p99,
                price,
                cost,
                text(&r.cost_basis)
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
                    text(instance(r)),
                    text(&r.system),
                    text(&r.backend),
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
                    text(&label(r)),
                    text(&r.backend),
                    r.scenario,
                    r.batch_size,
                    text(&r.invalid_reasons.join("; "))
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
            let cost = |r: &BenchResult| r.usd_per_million_inferences.unwrap_or(f64::INFINITY);
            match meeting.iter().min_by(|a, b| cost(a).total_cmp(&cost(b))) {
                Some(best) => writeln!(md, "**Cheapest measured setup with p99 ≤ {bound} ms:** {} ({}, {}, {} at batch {}) at ${:.4} per 1M inferences.",
                    text(instance(best)), text(&best.system), text(&best.backend), best.scenario, best.batch_size,
                    cost(best)).unwrap(),
                None => writeln!(md, "**Nothing measured meets p99 ≤ {bound} ms** for {} (with a known price).", text(model)).unwrap(),
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
                writeln!(md, "- {}: not measured", text(cat)).unwrap();
            } else {
                writeln!(md, "- {}: measured on {}", text(cat), text(&measured.join(", "))).unwrap();
            }
        }

        let bars_of = |f: &dyn Fn(&BenchResult) -> Option<f64>| -> Vec<(String, f64)> {
            sorted
                .iter()
                .filter(|r| r.valid)
                .filter_map(|r| {
                    f(r).map(|v| {
                        (plain_text(&format!("{} {} {} b{}", label(r), r.backend, r.scenario, r.batch_size)), v)
                    })
                })
                .collect()
        };
        let throughput = bars_of(&|r| Some(r.throughput_per_s));
        let file = format!("{slug}-throughput.svg");
        chart::bars(&out.join(&file), &format!("{title}: throughput"), "inferences / s", &throughput)
            .map_err(BenchError::Invalid)?;
        writeln!(md, "\n![throughput by instance]({file})").unwrap();
        let cost = bars_of(&|r| r.usd_per_million_inferences);
        if !cost.is_empty() {
            let file = format!("{slug}-cost.svg");
            chart::bars(&out.join(&file), &format!("{title}: $ per 1M inferences"), "US$ / 1M", &cost)
                .map_err(BenchError::Invalid)?;
            writeln!(md, "\n![$ per 1M inferences by instance]({file})").unwrap();
        }
        let curves: Vec<(String, Vec<(f64, f64)>)> = sorted
            .iter()
            .filter(|r| !r.sweep.is_empty())
            .map(|r| {
                (
                    plain_text(&format!("{} {} b{}", label(r), r.backend, r.batch_size)),
                    r.sweep.iter().map(|s| (s.target_qps, s.p99_ms)).collect(),
                )
            })
            .collect();
        if !curves.is_empty() {
            let file = format!("{slug}-latency-vs-load.svg");
            chart::lines(
                &out.join(&file),
                &format!("{title}: p99 latency vs offered load"),
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
            text(&r.system),
            r.scenario,
            text(r.instance_type.as_deref().unwrap_or("unknown instance")),
            text(&e.device_name),
            e.cpu_threads,
            text(&e.accelrt_version),
            text(&e.git_commit),
            text(&e.rustc),
            text(&e.date)
        )
        .unwrap();
    }
    let path = out.join("report.md");
    std::fs::write(&path, md).map_err(|e| BenchError::io(&path, e))?;
    Ok(path)
}

fn instance(r: &BenchResult) -> &str {
    r.instance_type.as_deref().unwrap_or("unknown")
}

fn label(r: &BenchResult) -> String {
    format!("{} {}", instance(r), r.system)
}

/// Text on one line: line breaks, tabs, other control characters and invisible direction
/// overrides become spaces; runs of spaces become one; no space at either end.
pub fn plain_text(s: &str) -> String {
    let spaced: String = s
        .chars()
        .map(|c| {
            let invisible = matches!(c, '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
            if c.is_control() || invisible {
                ' '
            } else {
                c
            }
        })
        .collect();
    spaced.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Text for any place in the report's markdown (a table cell, a heading, a list item), from any
/// string a result file holds: on one line ([`plain_text`]) with markdown's syntax characters
/// backslash-escaped, so it cannot end a table cell or add headings, lists, links, emphasis or HTML.
pub fn markdown_text(s: &str) -> String {
    let plain = plain_text(s);
    let chars: Vec<char> = plain.chars().collect();
    // At the start, "-", "+" or "12." / "12)" followed by a space would begin a list in a list item.
    let digits = chars.iter().take_while(|c| c.is_ascii_digit()).count();
    let marker_end = match chars.first() {
        Some('-' | '+') => Some(0),
        _ if digits > 0 && matches!(chars.get(digits), Some('.' | ')')) => Some(digits),
        _ => None,
    };
    let marker = marker_end.filter(|&i| chars.get(i + 1).is_none_or(|c| *c == ' '));
    let mut out = String::with_capacity(plain.len() + 8);
    for (i, &c) in chars.iter().enumerate() {
        let syntax = matches!(c, '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '|' | '#' | '~' | '&' | '$');
        if syntax || marker == Some(i) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
