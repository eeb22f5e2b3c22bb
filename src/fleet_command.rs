//! `accelrt fleet run|collect` (feature `fleet`): the benchmark fleet of crates/fleet on EC2.

use accelrt::bench::catalog::Catalog;
use accelrt_fleet::{Aws, AwsConfig, Binary, Family, FleetOptions, Market, Outcome};
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The fleet's subcommands.
#[derive(clap::Subcommand)]
pub enum FleetCommand {
    /// Launch one instance per instance type; each runs `accelrt bench --imds`, uploads its results
    /// to S3 and terminates itself. Waits for them and writes the merged report (unless --no-wait)
    Run(Box<RunArgs>),
    /// Download a run's results from S3 and write the merged report
    Collect(CollectArgs),
}

/// Where AWS is.
#[derive(clap::Args)]
pub struct AwsArgs {
    /// AWS region [default: $AWS_REGION, else $AWS_DEFAULT_REGION]
    #[arg(long)]
    region: Option<String>,
    /// One endpoint for EC2 and S3, e.g. an emulator [default: $AWS_ENDPOINT_URL, else AWS's]
    #[arg(long)]
    endpoint_url: Option<String>,
}

/// `accelrt fleet run`.
#[derive(clap::Args)]
pub struct RunArgs {
    /// Instance types, comma-separated: one instance of each (e.g. c7i.xlarge,g5.xlarge,inf2.xlarge)
    #[arg(long, value_delimiter = ',', required = true)]
    instance_types: Vec<String>,
    /// The model each instance benchmarks (a name `accelrt fetch` knows)
    #[arg(long, default_value = "all-minilm-l6-v2")]
    model: String,
    /// S3 bucket for results (the instances need write access under --prefix)
    #[arg(long)]
    bucket: String,
    /// Key prefix in the bucket; a run writes under PREFIX/RUN_ID/
    #[arg(long, default_value = "accelrt-fleet")]
    prefix: String,
    /// accelrt binary per family, FAMILY=s3://bucket/key (families: cpu-x86, cpu-graviton, nvidia,
    /// neuron; nvidia needs a --features cuda build, neuron a --features neuron build); repeat
    #[arg(long = "binary", value_name = "FAMILY=S3_URL")]
    binaries: Vec<String>,
    /// SHA-256 of each family's binary, FAMILY=HEX; repeat
    #[arg(long = "binary-sha256", value_name = "FAMILY=HEX")]
    binary_sha256: Vec<String>,
    /// AMI per family, FAMILY=ami-… (docs/deploy.md gives the public SSM parameter of each); repeat
    #[arg(long = "ami", value_name = "FAMILY=AMI_ID")]
    amis: Vec<String>,
    /// IAM instance profile the instances run as (S3 read of the binaries, write under --prefix)
    #[arg(long)]
    instance_profile: String,
    /// Subnet to launch into [default: the default VPC's]
    #[arg(long)]
    subnet_id: Option<String>,
    /// Security group(s) [default: the VPC's default group]; repeat
    #[arg(long = "security-group-id")]
    security_group_ids: Vec<String>,
    /// Spot instances (one-time; maximum price the on-demand price, so --max-spend holds)
    #[arg(long)]
    spot: bool,
    /// Refuse to launch if the run could cost more than this, in US$ (every instance running
    /// until its deadline, at the catalog's on-demand price)
    #[arg(long)]
    max_spend: f64,
    /// Each instance powers off, and so terminates, this many minutes after boot (10 to 1440)
    #[arg(long, default_value_t = 60)]
    max_minutes: u32,
    /// Price of an instance type the catalog lacks, TYPE=USD_PER_HOUR; repeat
    #[arg(long = "price", value_name = "TYPE=USD_PER_HOUR")]
    prices: Vec<String>,
    /// An extra argument for `accelrt bench` on every instance; repeat (e.g. --bench-arg=--scenario --bench-arg=offline)
    #[arg(long = "bench-arg", allow_hyphen_values = true)]
    bench_args: Vec<String>,
    /// An extra tag on everything launched, KEY=VALUE; repeat
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    tags: Vec<String>,
    /// Neuron only: s3://bucket/prefix/ of a NEFF compile cache made elsewhere
    #[arg(long)]
    neff_cache: Option<String>,
    #[command(flatten)]
    aws: AwsArgs,
    /// Print what would be launched and what it could cost; launch nothing (no credentials needed)
    #[arg(long)]
    dry_run: bool,
    /// Also write each instance's user data into this directory (with --dry-run too)
    #[arg(long)]
    user_data_dir: Option<PathBuf>,
    /// Launch and return; collect later with `accelrt fleet collect`
    #[arg(long)]
    no_wait: bool,
    /// Seconds between checks while waiting
    #[arg(long, default_value_t = 15.0)]
    poll_seconds: f64,
    /// Report directory
    #[arg(long, default_value = "fleet-report")]
    out: PathBuf,
    /// Name the cheapest measured setup whose p99 latency is at most this (ms)
    #[arg(long)]
    p99_ms: Option<f64>,
}

/// `accelrt fleet collect`.
#[derive(clap::Args)]
pub struct CollectArgs {
    /// S3 bucket of the run
    #[arg(long)]
    bucket: String,
    /// Key prefix given to `fleet run`
    #[arg(long, default_value = "accelrt-fleet")]
    prefix: String,
    /// The run id `fleet run` printed
    #[arg(long)]
    run_id: String,
    /// Report directory
    #[arg(long, default_value = "fleet-report")]
    out: PathBuf,
    /// Name the cheapest measured setup whose p99 latency is at most this (ms)
    #[arg(long)]
    p99_ms: Option<f64>,
    #[command(flatten)]
    aws: AwsArgs,
}

fn pairs(flag: &str, items: &[String]) -> Result<Vec<(String, String)>> {
    items
        .iter()
        .map(|s| match s.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => bail!("{flag} takes NAME=VALUE, got {s:?}"),
        })
        .collect()
}

fn by_family(flag: &str, items: &[String]) -> Result<BTreeMap<Family, String>> {
    let mut out = BTreeMap::new();
    for (k, v) in pairs(flag, items)? {
        let family = Family::parse(&k).with_context(|| format!("{flag} {k}={v}"))?;
        if out.insert(family, v).is_some() {
            bail!("{flag} {k} is given twice");
        }
    }
    Ok(out)
}

fn region_of(aws: &AwsArgs) -> Result<String> {
    aws.region
        .clone()
        .or_else(|| std::env::var("AWS_REGION").ok())
        .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
        .filter(|r| !r.is_empty())
        .context("no region: give --region or set AWS_REGION")
}

fn client(aws: &AwsArgs) -> Result<Aws> {
    let region = region_of(aws)?;
    Ok(Aws::new(AwsConfig::from_env(Some(&region), aws.endpoint_url.as_deref())?))
}

/// Runs a fleet subcommand.
pub fn fleet(command: FleetCommand) -> Result<()> {
    match command {
        FleetCommand::Run(a) => run(*a),
        FleetCommand::Collect(a) => {
            let aws = client(&a.aws)?;
            let run_prefix = format!("{}/{}", a.prefix.trim_matches('/'), a.run_id);
            let c = accelrt_fleet::collect(&aws, &a.bucket, run_prefix.trim_start_matches('/'), &a.out, a.p99_ms)?;
            print_outcomes(&c.outcomes);
            println!("{} result file(s); report: {}", c.result_files.len(), c.report.display());
            Ok(())
        }
    }
}

fn print_outcomes(outcomes: &[(String, Outcome)]) {
    for (t, o) in outcomes {
        let what = match o {
            Outcome::Done => "results uploaded",
            Outcome::Failed => "failed: see logs/<type>.log in the report directory",
            Outcome::NoStatus => "no status (terminated before it uploaded one)",
        };
        println!("  {t}: {what}");
    }
}

fn run(a: RunArgs) -> Result<()> {
    if !(a.poll_seconds.is_finite() && (1.0..=600.0).contains(&a.poll_seconds)) {
        bail!("--poll-seconds must be 1 to 600, got {}", a.poll_seconds);
    }
    let urls = by_family("--binary", &a.binaries)?;
    let mut shas = by_family("--binary-sha256", &a.binary_sha256)?;
    let mut binaries = BTreeMap::new();
    for (family, url) in urls {
        let sha256 = shas
            .remove(&family)
            .with_context(|| format!("--binary {} needs --binary-sha256 {}=HEX", family.name(), family.name()))?;
        binaries.insert(family, Binary { url, sha256 });
    }
    if let Some(f) = shas.keys().next() {
        bail!("--binary-sha256 {} without --binary {}", f.name(), f.name());
    }
    let mut prices = BTreeMap::new();
    for (t, p) in pairs("--price", &a.prices)? {
        let usd: f64 = p.parse().with_context(|| format!("--price {t}={p}: not a number"))?;
        prices.insert(t, usd);
    }
    let options = FleetOptions {
        instance_types: a.instance_types.clone(),
        model: a.model.clone(),
        bucket: a.bucket.clone(),
        prefix: a.prefix.clone(),
        binaries,
        amis: by_family("--ami", &a.amis)?,
        instance_profile: a.instance_profile.clone(),
        subnet_id: a.subnet_id.clone(),
        security_group_ids: a.security_group_ids.clone(),
        market: if a.spot { Market::Spot } else { Market::OnDemand },
        max_spend_usd: a.max_spend,
        max_minutes: a.max_minutes,
        prices,
        bench_args: a.bench_args.clone(),
        tags: pairs("--tag", &a.tags)?,
        neff_cache: a.neff_cache.clone(),
        run_id: accelrt_fleet::new_run_id(),
        region: region_of(&a.aws)?,
    };
    let plan = accelrt_fleet::plan(&options, &Catalog::builtin())?;
    print!("{}", plan.describe());
    if let Some(dir) = &a.user_data_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        for i in &plan.instances {
            let path = dir.join(format!("{}.yaml", i.instance_type));
            std::fs::write(&path, &i.spec.user_data).with_context(|| format!("writing {}", path.display()))?;
            println!("user data: {}", path.display());
        }
    }
    if a.dry_run {
        println!("dry run: nothing launched");
        return Ok(());
    }
    let aws = client(&a.aws)?;
    // Ctrl-C: the launch or the wait stops and terminates what was launched (a second Ctrl-C
    // kills the tool; the instances still power off at their deadline).
    accelrt::bench::interrupt::install_handler();
    let manifest = accelrt_fleet::launch(&aws, &plan)?;
    for i in &manifest.instances {
        println!("launched {} {}", i.instance_type, i.instance_id);
    }
    let collect_cmd = format!(
        "accelrt fleet collect --bucket {} --prefix {} --run-id {} --out {}",
        plan.bucket,
        a.prefix,
        plan.run_id,
        a.out.display()
    );
    if a.no_wait {
        println!(
            "run {}: the instances terminate themselves within {} min; then: {collect_cmd}",
            plan.run_id, plan.max_minutes
        );
        return Ok(());
    }
    // The instances' own deadline counts from boot; allow for the boot and the last upload.
    let deadline = Instant::now() + Duration::from_secs(plan.max_minutes as u64 * 60 + 600);
    let started = Instant::now();
    let outcomes = accelrt_fleet::wait(
        &aws,
        &plan.bucket,
        &manifest,
        deadline,
        Duration::from_secs_f64(a.poll_seconds),
        &mut |line| eprintln!("[{:>5.0} s] {line}", started.elapsed().as_secs_f64()),
    )
    .with_context(|| format!("run {} (results so far: {collect_cmd})", plan.run_id))?;
    print_outcomes(&outcomes);
    let c = accelrt_fleet::collect(&aws, &plan.bucket, &plan.run_prefix, &a.out, a.p99_ms)?;
    println!("{} result file(s); report: {}", c.result_files.len(), c.report.display());
    Ok(())
}
