//! `neuronx-cc-sim`: a TEST DOUBLE of AWS's Neuron compiler, `neuronx-cc`, for the one use accelrt
//! makes of it — `neuronx-cc compile X.hlo.pb --framework XLA --target … --output Y.neff [flags]`.
//! Tests put it on PATH as `neuronx-cc` (a symlink) so `accelrt compile` runs it as it would run
//! the real compiler.
//!
//! It reads the accelrt manifest `X.json` beside `X.hlo.pb`, checks that the HLO compiles with
//! XLA CPU and matches the manifest (so a broken export fails here, at "compile" time, with a
//! message and a non-zero exit, as it would with neuronx-cc), and writes an HLO simulator NEFF
//! (`nrt_sim::compile_hlo`) atomically. The flags are checked and recorded in the NEFF, not
//! applied: the test double's runtime runs the HLO as is on XLA CPU.
//!
//! Exit status: 0 on success, 1 when compilation fails (including `NRT_SIM_CC_FAIL=<message>`,
//! which makes every compile fail with that message, for testing how failures are reported), 2
//! for a command line it does not accept (unknown flag, bad value), like the real compiler's
//! argument parser.

use accelrt_stablehlo::Manifest;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Environment variable that makes every compile fail with its value as the message.
const FAIL_ENV: &str = "NRT_SIM_CC_FAIL";

const USAGE: &str = "usage: neuronx-cc compile <input.hlo.pb> --framework XLA --target {inf2,trn1,trn2} \
--output <output.neff> [--model-type {transformer,generic,unet-inference}] \
[--auto-cast {none,matmult,all}] [--auto-cast-type {bf16,fp16}] [--optlevel {1,2,3} | -O1 | -O2 | -O3] \
[--verbose <level>]
       neuronx-cc --version";

/// A compile request, as parsed from the command line.
#[derive(Debug)]
struct Request {
    input: PathBuf,
    target: String,
    output: PathBuf,
    /// The optional flags, as given (recorded in the NEFF).
    flags: Vec<String>,
}

enum Command {
    Version,
    Compile(Request),
}

/// A command-line error (exit 2) or a compile failure (exit 1).
enum Failure {
    Usage(String),
    Compile(String),
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = parse(&args).and_then(|command| match command {
        Command::Version => {
            println!("NeuronX Compiler version {} (accelrt test double, not neuronx-cc)", nrt_sim::COMPILER_VERSION);
            Ok(())
        }
        Command::Compile(request) => compile(&request),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(message)) => {
            eprintln!("{USAGE}\nneuronx-cc: error: {message}");
            ExitCode::from(2)
        }
        Err(Failure::Compile(message)) => {
            eprintln!("ERROR [neuronx-cc (accelrt test double)]: {message}");
            println!("Compiler status ERROR");
            ExitCode::from(1)
        }
    }
}

fn parse(args: &[String]) -> Result<Command, Failure> {
    let usage = |m: String| Failure::Usage(m);
    match args.first().map(String::as_str) {
        Some("--version") if args.len() == 1 => return Ok(Command::Version),
        Some("compile") => {}
        Some(other) => return Err(usage(format!("unknown command or flag {other:?}"))),
        None => return Err(usage("a command is required".into())),
    }
    let mut input = None;
    let (mut framework, mut target, mut output) = (None, None, None);
    let mut flags = Vec::new();
    let mut rest = args[1..].iter();
    while let Some(arg) = rest.next() {
        // `--flag=value` and `--flag value` are both accepted, as by Python's argparse.
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        let mut value = |choices: &[&str]| -> Result<String, Failure> {
            let v = match inline.clone() {
                Some(v) => v,
                None => rest.next().cloned().ok_or_else(|| usage(format!("{flag} needs a value")))?,
            };
            if !choices.is_empty() && !choices.contains(&v.as_str()) {
                return Err(usage(format!(
                    "argument {flag}: invalid choice {v:?} (choose from {})",
                    choices.join(", ")
                )));
            }
            Ok(v)
        };
        match flag {
            "--framework" => framework = Some(value(&["XLA"])?),
            "--target" => target = Some(value(&nrt_sim::TARGETS)?),
            "--output" => output = Some(value(&[])?),
            "--model-type" | "--auto-cast" | "--auto-cast-type" | "--optlevel" | "--verbose" => {
                let choices: &[&str] = match flag {
                    "--model-type" => &["transformer", "generic", "unet-inference"],
                    "--auto-cast" => &["none", "matmult", "all"],
                    "--auto-cast-type" => &["bf16", "fp16"],
                    "--optlevel" => &["1", "2", "3"],
                    _ => &[],
                };
                let v = value(choices)?;
                flags.push(flag.to_string());
                flags.push(v);
            }
            "-O1" | "-O2" | "-O3" => flags.push(flag.to_string()),
            f if f.starts_with('-') => return Err(usage(format!("unrecognized argument {arg:?}"))),
            _ if input.is_none() => input = Some(PathBuf::from(arg)),
            _ => return Err(usage(format!("unrecognized argument {arg:?} (one input file only)"))),
        }
    }
    let input = input.ok_or_else(|| usage("the input file is required".into()))?;
    if framework.is_none() {
        return Err(usage("--framework is required (this test double compiles XLA only)".into()));
    }
    let target = target.ok_or_else(|| usage("--target is required".into()))?;
    let output = PathBuf::from(output.ok_or_else(|| usage("--output is required".into()))?);
    Ok(Command::Compile(Request { input, target, output, flags }))
}

/// `X.json` for the input `X.hlo.pb`.
fn manifest_path(input: &Path) -> Result<PathBuf, Failure> {
    let name = input.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let stem = name.strip_suffix(".hlo.pb").filter(|s| !s.is_empty()).ok_or_else(|| {
        Failure::Compile(format!(
            "{}: the input must be named <bucket>.hlo.pb, with the accelrt manifest <bucket>.json beside it",
            input.display()
        ))
    })?;
    Ok(input.with_file_name(format!("{stem}.json")))
}

fn compile(request: &Request) -> Result<(), Failure> {
    let fail = Failure::Compile;
    if let Ok(message) = std::env::var(FAIL_ENV) {
        return Err(fail(message));
    }
    let hlo = std::fs::read(&request.input).map_err(|e| fail(format!("{}: {e}", request.input.display())))?;
    let manifest_path = manifest_path(&request.input)?;
    let text =
        std::fs::read_to_string(&manifest_path).map_err(|e| fail(format!("{}: {e}", manifest_path.display())))?;
    let manifest = Manifest::from_json(&text)
        .map_err(|e| fail(format!("{}: not an accelrt manifest: {e}", manifest_path.display())))?;
    nrt_sim::validate_hlo(&hlo, &manifest).map_err(|e| fail(format!("{}: {e}", request.input.display())))?;
    let neff =
        nrt_sim::compile_hlo(&hlo, &manifest, &request.target, &request.flags).map_err(|e| fail(e.to_string()))?;
    write_atomically(&request.output, &neff).map_err(|e| fail(format!("{}: {e}", request.output.display())))?;
    println!("Compiler status PASS");
    Ok(())
}

/// Writes `bytes` to a temporary file beside `path`, then renames it over `path`, so a reader never
/// sees a partial NEFF (a cache shared between hosts may be read while a compile is running).
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = path.file_name().ok_or_else(|| std::io::Error::other("the output path has no file name"))?;
    let tmp = path.with_file_name(format!(".{}.{}.tmp", name.to_string_lossy(), std::process::id()));
    let result = std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
