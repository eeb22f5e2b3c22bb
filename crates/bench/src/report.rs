//! `accelrt report`: merges result files from several instances and backends into one markdown
//! report and one self-contained HTML report with SVG charts. Costs come only from measured runs
//! on the hardware they are priced as; families without such a run are listed as not measured,
//! never estimated.

use crate::catalog::{self, Catalog, Price};
use crate::hardware::{self, HardwareCheck};
use crate::limits::{check_flag, Limit};
use crate::result::BenchResult;
use crate::scenario::ScenarioKind;
use crate::{chart, BenchError, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::path::{Path, PathBuf};

/// What a report is made from besides the results.
#[derive(Debug, Clone)]
pub struct ReportOptions {
    /// Name the cheapest measured setup whose p99 is at most this (ms).
    pub p99_ms: Option<f64>,
    /// The catalog the results' instance types are checked against (when a result does not carry
    /// its own record of the instance).
    pub catalog: Catalog,
    /// The day prices' ages are counted to.
    pub today: chrono::NaiveDate,
}

impl Default for ReportOptions {
    fn default() -> Self {
        ReportOptions { p99_ms: None, catalog: Catalog::builtin(), today: chrono::Utc::now().date_naive() }
    }
}

/// Writes `DIR/report.md`, `DIR/report.html` and the charts with the built-in catalog and today's
/// date; returns the markdown report's path.
pub fn write_report(results: &[BenchResult], out: &Path, p99_ms: Option<f64>) -> Result<PathBuf> {
    write_report_with(results, out, &ReportOptions { p99_ms, ..ReportOptions::default() })
}

/// Whether a result measured its instance type, checked again here from its environment (a result
/// file's own verdict is not trusted): `None` when it names no instance type.
pub fn hardware_of(r: &BenchResult, catalog: &Catalog) -> Option<HardwareCheck> {
    let t = r.instance_type.as_deref()?;
    match r.instance.as_ref().filter(|i| i.instance_type == t).or_else(|| catalog.get(t)) {
        Some(instance) => Some(hardware::check(instance, &r.environment)),
        None => Some(HardwareCheck {
            instance_type: t.to_string(),
            matches: false,
            mismatches: vec![format!("{t} is not in the catalog: its hardware cannot be checked")],
            measures: None,
            note: None,
        }),
    }
}

/// One result as the report shows it.
struct Row<'a> {
    r: &'a BenchResult,
    hardware: Option<HardwareCheck>,
}

impl Row<'_> {
    /// Its cost may be quoted: the run is valid and either names no instance type (the user's own
    /// price for this machine) or measured the instance it names.
    fn cost_counts(&self) -> bool {
        self.r.valid && self.hardware.as_ref().is_none_or(|h| h.matches)
    }

    fn instance_label(&self) -> String {
        let t = instance(self.r).to_string();
        match &self.hardware {
            Some(h) if !h.matches => format!("{t} (hardware does not match)"),
            Some(h) if h.note.is_some() => format!("{t} (host CPU)"),
            _ => t,
        }
    }
}

/// A $ figure with what it rests on.
struct Dollars {
    text: String,
    /// Basis and date, shown beside the figure in markdown.
    beside: String,
    /// Basis, date, region and source, for the HTML's hover and footnote.
    detail: String,
    stale: bool,
}

fn dollars(value: Option<f64>, price: Option<&Price>, today: chrono::NaiveDate, counts: bool) -> Option<Dollars> {
    let (value, price) = (value?, price?);
    if !counts {
        return Some(Dollars {
            text: "not comparable".into(),
            beside: "run invalid or not on this instance's hardware".into(),
            detail: "the run is invalid, or its hardware does not match its instance type".into(),
            stale: false,
        });
    }
    let stale = catalog::price_is_stale(price, today);
    let age = catalog::price_age_days(price, today).map(|d| format!(", {d} days old")).unwrap_or_default();
    let warn = if stale { ", more than a year old" } else { "" };
    Some(Dollars {
        text: format!("{value:.4}"),
        beside: format!("{}, read {}{warn}", plain_text(&price.basis), plain_text(&price.date_read)),
        detail: format!(
            "{} price ${}/h{}, read {}{age}{warn}; source: {}",
            plain_text(&price.basis),
            price.usd_per_hour,
            price.region.as_deref().map(|r| format!(" in {}", plain_text(r))).unwrap_or_default(),
            plain_text(&price.date_read),
            plain_text(&price.source)
        ),
        stale,
    })
}

/// A table cell: plain text, and (for $ figures) what it rests on.
struct Cell {
    text: String,
    dollars: Option<Dollars>,
    strong: bool,
}

impl Cell {
    fn plain(text: impl Into<String>) -> Cell {
        Cell { text: text.into(), dollars: None, strong: false }
    }
    fn money(d: Option<Dollars>) -> Cell {
        match d {
            Some(d) => Cell { text: d.text.clone(), dollars: Some(d), strong: false },
            None => Cell::plain("—"),
        }
    }
}

/// The report's content, rendered as markdown and as HTML from the same blocks.
enum Block {
    Heading(u8, String),
    Paragraph { strong: Option<String>, text: String },
    Table { header: Vec<&'static str>, rows: Vec<Vec<Cell>> },
    List(Vec<String>),
    Chart { file: String, alt: String },
}

/// Writes `DIR/report.md`, `DIR/report.html` (one self-contained file: tables, the charts inline,
/// each $ figure's basis, date and source on hover and in footnotes) and the SVG charts; returns
/// the markdown report's path. Every string from a result goes into the markdown through
/// [`markdown_text`] and into the HTML escaped.
pub fn write_report_with(results: &[BenchResult], out: &Path, options: &ReportOptions) -> Result<PathBuf> {
    if results.is_empty() {
        return Err(BenchError::Invalid("no results to report".into()));
    }
    let p99_ms = options.p99_ms;
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
    // A result that measured nothing is invalid however it was made (and so never priced nor
    // named cheapest).
    let results: Vec<BenchResult> = results.iter().cloned().map(BenchResult::refusing_empty).collect();
    let results = &results[..];
    std::fs::create_dir_all(out).map_err(|e| BenchError::io(out, e))?;
    let today = options.today;
    let catalog = &options.catalog;
    let mut by_model: BTreeMap<&str, Vec<&BenchResult>> = BTreeMap::new();
    for r in results {
        by_model.entry(r.model.as_str()).or_default().push(r);
    }
    let mut slugs = BTreeSet::new();
    let mut blocks = vec![
        Block::Heading(1, "accelrt benchmark report".into()),
        Block::Paragraph {
            strong: None,
            text: format!(
                "{} result(s) from {} instance type(s), reported {today}. $/1M = price per hour × 10⁶ / (3600 × throughput); each row says which throughput it uses, and each $ figure the price's basis and the date it was read. A run counts for its instance type only when its threads, memory and device match the catalog's vCPUs, memory and accelerator.",
                results.len(),
                results.iter().map(instance).collect::<BTreeSet<_>>().len()
            ),
        },
    ];

    for (model, rows) in &by_model {
        // Chart file names: bounded in length (a hash keeps cut names apart) and distinct even
        // when two model names clean to the same text.
        let clean = crate::limits::bounded_name(model, crate::limits::MAX_NAME_PART, |c| c.is_ascii_alphanumeric());
        let slug =
            (1..).map(|n| if n == 1 { clean.clone() } else { format!("{clean}-{n}") }).find(|s| !slugs.contains(s));
        let slug = slug.expect("an unused name");
        slugs.insert(slug.clone());
        let title = plain_text(model);
        blocks.push(Block::Heading(2, model.to_string()));
        let mut sorted = rows.clone();
        sorted.sort_by(|a, b| {
            (a.instance_type.clone(), &a.system, a.scenario as u8, a.batch_size).cmp(&(
                b.instance_type.clone(),
                &b.system,
                b.scenario as u8,
                b.batch_size,
            ))
        });
        let rows: Vec<Row> = sorted.iter().map(|r| Row { r, hardware: hardware_of(r, catalog) }).collect();
        let host = |r: &BenchResult| match &r.environment.host_load {
            Some(l) if l.noisy => "noisy",
            Some(_) => "quiet",
            None => "—",
        };
        let table = rows
            .iter()
            .map(|row| {
                let r = row.r;
                let price = match &r.price {
                    Some(p) => Cell::money(dollars(Some(p.usd_per_hour), Some(p), today, true)),
                    None => Cell::plain("unknown"),
                };
                let cost =
                    Cell::money(dollars(r.usd_per_million_inferences, r.price.as_ref(), today, row.cost_counts()));
                vec![
                    Cell::plain(row.instance_label()),
                    Cell::plain(&r.system),
                    Cell::plain(&r.backend),
                    Cell::plain(r.scenario.to_string()),
                    Cell::plain(r.batch_size.to_string()),
                    Cell { text: if r.valid { "yes".into() } else { "no".into() }, dollars: None, strong: !r.valid },
                    Cell::plain(host(r)),
                    Cell::plain(format!("{:.1}", r.throughput_per_s)),
                    Cell::plain(format!("{:.2}", r.latency_ms.p99)),
                    price,
                    cost,
                    Cell::plain(&r.cost_basis),
                ]
            })
            .collect();
        blocks.push(Block::Table {
            header: vec![
                "instance",
                "system",
                "backend",
                "scenario",
                "batch",
                "valid",
                "host",
                "throughput (/s)",
                "p99 (ms)",
                "price ($/h)",
                "$/1M inferences",
                "cost uses",
            ],
            rows: table,
        });
        let generation: Vec<&Row> = rows.iter().filter(|row| row.r.generation.is_some()).collect();
        if !generation.is_empty() {
            blocks.push(Block::Paragraph {
                strong: None,
                text: "Text generation (throughput above counts requests):".into(),
            });
            let table = generation
                .iter()
                .map(|row| {
                    let r = row.r;
                    let g = r.generation.as_ref().expect("filtered");
                    vec![
                        Cell::plain(row.instance_label()),
                        Cell::plain(&r.system),
                        Cell::plain(&r.backend),
                        Cell::plain(r.scenario.to_string()),
                        Cell::plain(r.batch_size.to_string()),
                        Cell::plain(g.max_tokens.to_string()),
                        Cell::plain(format!("{:.1}", g.output_tokens_per_s)),
                        Cell::plain(format!("{:.1} / {:.1}", g.ttft_ms.p50, g.ttft_ms.p99)),
                        Cell::plain(format!("{:.2} / {:.2}", g.tpot_ms.p50, g.tpot_ms.p99)),
                        Cell::money(dollars(
                            g.usd_per_million_output_tokens,
                            r.price.as_ref(),
                            today,
                            row.cost_counts(),
                        )),
                    ]
                })
                .collect();
            blocks.push(Block::Table {
                header: vec![
                    "instance",
                    "system",
                    "backend",
                    "scenario",
                    "batch",
                    "new tokens/request",
                    "output tokens/s",
                    "TTFT p50 / p99 (ms)",
                    "TPOT p50 / p99 (ms)",
                    "$/1M output tokens",
                ],
                rows: table,
            });
        }
        let training: Vec<&Row> = rows.iter().filter(|row| row.r.training.is_some()).collect();
        if !training.is_empty() {
            blocks.push(Block::Paragraph {
                strong: None,
                text: "Training (throughput above counts training samples — pairs or windows —, p99 the step time; within one run of `accelrt bench`, every system trains on the same batches — rows with the same task and data):".into(),
            });
            let table = training
                .iter()
                .map(|row| {
                    let r = row.r;
                    let t = r.training.as_ref().expect("filtered");
                    let losses = crate::training::loss_span(&t.losses);
                    vec![
                        Cell::plain(row.instance_label()),
                        Cell::plain(&r.system),
                        Cell::plain(&r.backend),
                        Cell::plain(format!(
                            "{}{} on {}, AdamW lr {:e}, {}",
                            plain_text(&t.task),
                            t.seq_len.map(|n| format!(" × {n} tokens")).unwrap_or_default(),
                            plain_text(&t.data),
                            t.lr,
                            plain_text(&t.precision)
                        )),
                        Cell::plain(r.batch_size.to_string()),
                        Cell::plain(format!("{:.2}", r.throughput_per_s)),
                        Cell::plain(format!("{:.1}", t.tokens_per_s)),
                        Cell::plain(format!("{:.0} / {:.0}", r.latency_ms.p50, r.latency_ms.p99)),
                        Cell::plain(
                            r.memory
                                .peak_host_bytes
                                .map(|b| format!("{:.2}", b as f64 / 1e9))
                                .unwrap_or_else(|| "—".into()),
                        ),
                        Cell::plain(losses),
                        Cell::money(dollars(t.usd_per_million_tokens, r.price.as_ref(), today, row.cost_counts())),
                    ]
                })
                .collect();
            blocks.push(Block::Table {
                header: vec![
                    "instance",
                    "system",
                    "backend",
                    "task",
                    "batch",
                    "samples/s",
                    "training tokens/s",
                    "step p50 / p99 (ms)",
                    "peak memory (GB)",
                    "loss first → last",
                    "$/1M training tokens",
                ],
                rows: table,
            });
        }
        let invalid: Vec<String> = rows
            .iter()
            .filter(|row| !row.r.valid)
            .map(|row| {
                let r = row.r;
                format!("{} {} {} b{}: {}", label(r), r.backend, r.scenario, r.batch_size, r.invalid_reasons.join("; "))
            })
            .collect();
        push_titled_list(&mut blocks, "Invalid runs (their numbers are shown but must not be quoted):".into(), invalid);
        let mismatched: Vec<String> = rows
            .iter()
            .filter_map(|row| {
                let h = row.hardware.as_ref().filter(|h| !h.matches)?;
                let r = row.r;
                Some(format!(
                    "{} {} {} b{}: not a {} measurement: {}",
                    r.system,
                    r.backend,
                    r.scenario,
                    r.batch_size,
                    h.instance_type,
                    h.mismatches.join("; ")
                ))
            })
            .collect();
        push_titled_list(
            &mut blocks,
            "Runs whose hardware does not match their instance type (not counted for it; their costs are not comparable):".into(),
            mismatched,
        );
        let noisy: Vec<String> = rows
            .iter()
            .filter_map(|row| {
                let l = row.r.environment.host_load.as_ref().filter(|l| l.noisy)?;
                let r = row.r;
                Some(format!(
                    "{} {} {} b{}: {}",
                    label(r),
                    r.backend,
                    r.scenario,
                    r.batch_size,
                    l.noisy_reasons.join("; ")
                ))
            })
            .collect();
        push_titled_list(
            &mut blocks,
            format!(
                "Noisy runs (valid, but the host was busy: other processes above {:.0} % of the CPU time or steal above {:.0} %; they may not repeat):",
                crate::environment::NOISY_OTHER_CPU_SHARE * 100.0,
                crate::environment::NOISY_STEAL_SHARE * 100.0
            ),
            noisy,
        );

        if let Some(bound) = p99_ms {
            let meeting: Vec<&Row> = rows
                .iter()
                .filter(|row| {
                    row.r.training.is_none()
                        && row.cost_counts()
                        && row.r.latency_ms.p99 <= bound
                        && row.r.usd_per_million_inferences.is_some()
                })
                .collect();
            let cost = |row: &Row| row.r.usd_per_million_inferences.unwrap_or(f64::INFINITY);
            match meeting.iter().min_by(|a, b| cost(a).total_cmp(&cost(b))) {
                Some(best) => {
                    let r = best.r;
                    let d = dollars(r.usd_per_million_inferences, r.price.as_ref(), today, true).expect("priced");
                    blocks.push(Block::Paragraph {
                        strong: Some(format!("Cheapest measured setup with p99 ≤ {bound} ms:")),
                        text: format!(
                            "{} ({}, {}, {} at batch {}) at ${} per 1M inferences ({}).",
                            best.instance_label(),
                            r.system,
                            r.backend,
                            r.scenario,
                            r.batch_size,
                            d.text,
                            d.beside
                        ),
                    })
                }
                None => blocks.push(Block::Paragraph {
                    strong: Some(format!("Nothing measured meets p99 ≤ {bound} ms")),
                    text: format!("for {model} (with a known price and hardware matching its instance type)."),
                }),
            }
        }

        // Families: a category counts as measured only by a matching run on its own device (a CPU
        // run on an accelerator instance measures that host's CPU, listed under cpu).
        let mut categories: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for i in &catalog.instances {
            categories.entry(i.category.clone()).or_default();
        }
        for row in rows.iter().filter(|row| row.r.empty_reason().is_none()) {
            let Some(h) = &row.hardware else { continue };
            let Some(category) = &h.measures else { continue };
            let name =
                if h.note.is_some() { format!("{} (host CPU)", h.instance_type) } else { h.instance_type.clone() };
            let list = categories.entry(category.clone()).or_default();
            if !list.contains(&name) {
                list.push(name);
            }
        }
        blocks.push(Block::Paragraph {
            strong: None,
            text: "Instance families in the catalog, and whether this model was measured there (costs are never extrapolated to an unmeasured family; an accelerator family counts only runs on its accelerator):".into(),
        });
        blocks.push(Block::List(
            categories
                .iter()
                .map(|(cat, measured)| {
                    if measured.is_empty() {
                        format!("{cat}: not measured")
                    } else {
                        format!("{cat}: measured on {}", measured.join(", "))
                    }
                })
                .collect(),
        ));

        charts(&mut blocks, out, &slug, &title, &rows)?;
    }

    // Every price used, with its source and age.
    let mut prices: BTreeMap<(String, String, String), &Price> = BTreeMap::new();
    for r in results {
        if let Some(p) = &r.price {
            prices.insert((instance(r).to_string(), p.basis.clone(), p.date_read.clone()), p);
        }
    }
    if !prices.is_empty() {
        blocks.push(Block::Heading(2, "Prices".into()));
        blocks.push(Block::List(
            prices
                .iter()
                .map(|((t, ..), p)| {
                    let d = dollars(Some(p.usd_per_hour), Some(p), today, true).expect("priced");
                    let warn = if d.stale { " WARNING: more than a year old; check the current price." } else { "" };
                    format!("{t}: {}.{warn}", d.detail)
                })
                .collect(),
        ));
    }

    blocks.push(Block::Heading(2, "Environments".into()));
    blocks.push(Block::List(
        results
            .iter()
            .map(|r| {
                let e = &r.environment;
                let load = match &e.host_load {
                    Some(l) => format!(
                        "; host: others {} of the CPU time, steal {}, load {}",
                        l.other_cpu_share.map(|v| format!("{:.0} %", v * 100.0)).unwrap_or_else(|| "unknown".into()),
                        l.steal_share.map(|v| format!("{:.1} %", v * 100.0)).unwrap_or_else(|| "unknown".into()),
                        l.load_avg_1m.map(|v| format!("{v:.2}")).unwrap_or_else(|| "unknown".into())
                    ),
                    None => String::new(),
                };
                format!(
                    "{} {} on {}: {} ({} threads), accelrt {} ({}), {} — {}{load}",
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
            })
            .collect(),
    ));

    let html = render_html(&blocks, out);
    let html_path = out.join("report.html");
    std::fs::write(&html_path, html).map_err(|e| BenchError::io(&html_path, e))?;
    let path = out.join("report.md");
    std::fs::write(&path, render_markdown(&blocks)).map_err(|e| BenchError::io(&path, e))?;
    Ok(path)
}

/// The charts of one model's results.
fn charts(blocks: &mut Vec<Block>, out: &Path, slug: &str, title: &str, rows: &[Row]) -> Result<()> {
    let name = |r: &BenchResult| plain_text(&format!("{} {} {} b{}", label(r), r.backend, r.scenario, r.batch_size));
    let mut chart =
        |file: String, alt: String, draw: &dyn Fn(&Path) -> std::result::Result<(), String>| -> Result<()> {
            draw(&out.join(&file)).map_err(BenchError::Invalid)?;
            blocks.push(Block::Chart { file, alt });
            Ok(())
        };
    let bars_of = |keep: &dyn Fn(&Row) -> bool, f: &dyn Fn(&BenchResult) -> Vec<(String, f64)>| -> Vec<(String, f64)> {
        rows.iter().filter(|row| row.r.valid && keep(row)).flat_map(|row| f(row.r)).collect()
    };
    // Offline (and server) throughput and single-stream latency are different measures: separate charts.
    let inference = |row: &Row| row.r.training.is_none();
    let throughput = bars_of(&|row| inference(row) && row.r.scenario != ScenarioKind::SingleStream, &|r| {
        vec![(name(r), r.throughput_per_s)]
    });
    if !throughput.is_empty() {
        chart(format!("{slug}-throughput.svg"), "throughput, offline and server".into(), &|p| {
            chart::bars(p, &format!("{title}: throughput (offline, server)"), "inferences / s", &throughput)
        })?;
    }
    let single = bars_of(&|row| row.r.scenario == ScenarioKind::SingleStream, &|r| {
        vec![(format!("{} p50", name(r)), r.latency_ms.p50), (format!("{} p99", name(r)), r.latency_ms.p99)]
    });
    if !single.is_empty() {
        chart(format!("{slug}-single-stream-latency.svg"), "single-stream latency".into(), &|p| {
            chart::bars(p, &format!("{title}: single-stream latency"), "ms per query", &single)
        })?;
    }
    let cost = bars_of(&|row| row.cost_counts(), &|r| {
        r.usd_per_million_inferences.map(|c| (name(r), c)).into_iter().collect()
    });
    if !cost.is_empty() {
        chart(format!("{slug}-cost.svg"), "$ per 1M inferences".into(), &|p| {
            chart::bars(p, &format!("{title}: $ per 1M inferences"), "US$ / 1M", &cost)
        })?;
    }
    let generation = |f: &dyn Fn(&crate::result::GenerationMetrics) -> Vec<(&'static str, f64)>| {
        bars_of(&|_| true, &|r| match &r.generation {
            Some(g) => {
                f(g).into_iter().map(|(what, v)| (format!("{} {what}", name(r)).trim().to_string(), v)).collect()
            }
            None => vec![],
        })
    };
    let tokens = generation(&|g| vec![("", g.output_tokens_per_s)]);
    if !tokens.is_empty() {
        chart(format!("{slug}-tokens-per-s.svg"), "output tokens per second".into(), &|p| {
            chart::bars(p, &format!("{title}: output tokens / s"), "tokens / s", &tokens)
        })?;
        let ttft = generation(&|g| vec![("p50", g.ttft_ms.p50), ("p99", g.ttft_ms.p99)]);
        chart(format!("{slug}-ttft.svg"), "time to first token".into(), &|p| {
            chart::bars(p, &format!("{title}: time to first token"), "ms", &ttft)
        })?;
        let tpot = generation(&|g| vec![("p50", g.tpot_ms.p50), ("p99", g.tpot_ms.p99)]);
        chart(format!("{slug}-tpot.svg"), "time per output token".into(), &|p| {
            chart::bars(p, &format!("{title}: time per output token"), "ms", &tpot)
        })?;
    }
    // Training: tokens/s and $ per 1M training tokens, apart from inference's measures.
    let training = |f: &dyn Fn(&crate::training::TrainingMetrics) -> Option<f64>| {
        bars_of(&|row| row.r.training.is_some(), &|r| {
            r.training.as_ref().and_then(f).map(|v| (name(r), v)).into_iter().collect()
        })
    };
    let training_tokens = training(&|t| Some(t.tokens_per_s));
    if !training_tokens.is_empty() {
        chart(format!("{slug}-training-tokens-per-s.svg"), "training tokens per second".into(), &|p| {
            chart::bars(p, &format!("{title}: training tokens / s"), "tokens / s", &training_tokens)
        })?;
    }
    let training_cost = bars_of(&|row| row.r.training.is_some() && row.cost_counts(), &|r| {
        r.training.as_ref().and_then(|t| t.usd_per_million_tokens).map(|c| (name(r), c)).into_iter().collect()
    });
    if !training_cost.is_empty() {
        chart(format!("{slug}-training-cost.svg"), "$ per 1M training tokens".into(), &|p| {
            chart::bars(p, &format!("{title}: $ per 1M training tokens"), "US$ / 1M", &training_cost)
        })?;
    }
    let curves: Vec<chart::LoadCurve> = rows
        .iter()
        .filter(|row| !row.r.sweep.is_empty())
        .map(|row| {
            let r = row.r;
            chart::LoadCurve {
                name: plain_text(&format!("{} {} b{}", label(r), r.backend, r.batch_size)),
                points: r.sweep.iter().map(|s| (s.target_qps, s.p99_ms, s.valid)).collect(),
                chosen: r.valid.then_some(r.target_qps).flatten(),
                bound: r.p99_bound_ms,
            }
        })
        .collect();
    if !curves.is_empty() {
        chart(format!("{slug}-latency-vs-load.svg"), "p99 latency vs offered load".into(), &|p| {
            chart::latency_vs_load(p, &format!("{title}: p99 latency vs offered load"), &curves)
        })?;
    }
    Ok(())
}

fn render_markdown(blocks: &[Block]) -> String {
    let text = markdown_text;
    let mut md = String::new();
    for b in blocks {
        match b {
            Block::Heading(level, t) => writeln!(md, "{} {}\n", "#".repeat(*level as usize), text(t)).unwrap(),
            Block::Paragraph { strong, text: t } => {
                let strong = strong.as_ref().map(|s| format!("**{}** ", text(s))).unwrap_or_default();
                writeln!(md, "{strong}{}\n", text(t)).unwrap()
            }
            Block::Table { header, rows } => {
                writeln!(md, "| {} |", header.join(" | ")).unwrap();
                writeln!(md, "|{}", "---|".repeat(header.len())).unwrap();
                for row in rows {
                    let cells: Vec<String> = row
                        .iter()
                        .map(|c| {
                            let mut s = text(&c.text);
                            if c.strong {
                                s = format!("**{s}**");
                            }
                            if let Some(d) = &c.dollars {
                                s = format!("{s} ({})", text(&d.beside));
                            }
                            s
                        })
                        .collect();
                    writeln!(md, "| {} |", cells.join(" | ")).unwrap();
                }
                writeln!(md).unwrap();
            }
            Block::List(items) => {
                for i in items {
                    writeln!(md, "- {}", text(i)).unwrap();
                }
                writeln!(md).unwrap();
            }
            Block::Chart { file, alt } => writeln!(md, "![{}]({file})\n", text(alt)).unwrap(),
        }
    }
    md
}

/// The report as one self-contained HTML file: no scripts, no external resources; the charts'
/// SVG inline; every $ figure with its basis, date and source on hover and in a numbered footnote.
fn render_html(blocks: &[Block], out: &Path) -> String {
    use html_escape::{encode_double_quoted_attribute as attr, encode_text as esc};
    let mut notes: Vec<String> = Vec::new();
    let mut body = String::new();
    for b in blocks {
        match b {
            Block::Heading(level, t) => writeln!(body, "<h{level}>{}</h{level}>", esc(&plain_text(t))).unwrap(),
            Block::Paragraph { strong, text } => {
                let strong =
                    strong.as_ref().map(|s| format!("<strong>{}</strong> ", esc(&plain_text(s)))).unwrap_or_default();
                writeln!(body, "<p>{strong}{}</p>", esc(&plain_text(text))).unwrap()
            }
            Block::Table { header, rows } => {
                body.push_str("<table>\n<thead><tr>");
                for h in header {
                    write!(body, "<th>{}</th>", esc(h)).unwrap();
                }
                body.push_str("</tr></thead>\n<tbody>\n");
                for row in rows {
                    body.push_str("<tr>");
                    for c in row {
                        let t = esc(&plain_text(&c.text)).into_owned();
                        let t = if c.strong { format!("<strong>{t}</strong>") } else { t };
                        match &c.dollars {
                            Some(d) => {
                                let n = match notes.iter().position(|x| *x == d.detail) {
                                    Some(i) => i + 1,
                                    None => {
                                        notes.push(d.detail.clone());
                                        notes.len()
                                    }
                                };
                                let class = if d.stale { " class=\"stale\"" } else { "" };
                                write!(
                                    body,
                                    "<td class=\"num\"><span title=\"{}\"{class}>{t}</span><sup><a href=\"#price-{n}\">{n}</a></sup></td>",
                                    attr(&d.detail)
                                )
                                .unwrap();
                            }
                            None => write!(body, "<td>{t}</td>").unwrap(),
                        }
                    }
                    body.push_str("</tr>\n");
                }
                body.push_str("</tbody>\n</table>\n");
            }
            Block::List(items) => {
                body.push_str("<ul>\n");
                for i in items {
                    writeln!(body, "<li>{}</li>", esc(&plain_text(i))).unwrap();
                }
                body.push_str("</ul>\n");
            }
            Block::Chart { file, alt } => {
                let svg = crate::limits::read_bounded(&out.join(file), crate::limits::MAX_FILE_BYTES, "chart")
                    .unwrap_or_default();
                // The SVG element itself, without an XML declaration (not allowed inside HTML).
                let svg = svg.find("<svg").map(|i| &svg[i..]).unwrap_or("");
                writeln!(body, "<figure role=\"img\" aria-label=\"{}\">{svg}</figure>", attr(&plain_text(alt)))
                    .unwrap();
            }
        }
    }
    if !notes.is_empty() {
        body.push_str("<h2>Price notes</h2>\n<ol class=\"notes\">\n");
        for (i, n) in notes.iter().enumerate() {
            writeln!(body, "<li id=\"price-{}\">{}</li>", i + 1, esc(n)).unwrap();
        }
        body.push_str("</ol>\n");
    }
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\n<title>accelrt benchmark report</title>\n<style>\n{CSS}</style>\n</head>\n<body>\n{body}</body>\n</html>\n"
    )
}

const CSS: &str =
    "body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; }
th { background: #f3f3f3; }
td.num { text-align: right; white-space: nowrap; }
span[title] { text-decoration: underline dotted; cursor: help; }
span.stale { color: #a33; }
sup a { text-decoration: none; }
figure { margin: 1em 0; }
figure svg { max-width: 100%; height: auto; }
";

fn instance(r: &BenchResult) -> &str {
    r.instance_type.as_deref().unwrap_or("unknown")
}

fn label(r: &BenchResult) -> String {
    // Training in another precision is another configuration: say so wherever results are named.
    match r.training.as_ref().map(|t| t.precision.as_str()) {
        Some(p) if p != crate::training::PRECISION_F32 => format!("{} {} ({p})", instance(r), r.system),
        _ => format!("{} {}", instance(r), r.system),
    }
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

/// A paragraph introducing a list, and the list; nothing when the list is empty.
fn push_titled_list(blocks: &mut Vec<Block>, title: String, items: Vec<String>) {
    if !items.is_empty() {
        blocks.push(Block::Paragraph { strong: None, text: title });
        blocks.push(Block::List(items));
    }
}
