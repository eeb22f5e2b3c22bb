//! Compiling exported modules into NEFFs with AWS's compiler, `neuronx-cc`, and filling the NEFF
//! cache (`crate::cache`).
//!
//! One bucket goes: graph → StableHLO (`accelrt_stablehlo::export`) → serialized XLA
//! `HloModuleProto` (`accelrt_stablehlo::hlo_proto`) → `neuronx-cc compile X.hlo.pb --framework
//! XLA --target T --output X.neff [flags]` → NEFF + manifest in the cache. The compiler is found
//! as `$ACCELRT_NEURONX_CC`, else `neuronx-cc` on `PATH`; it needs no Neuron device, so NEFFs can
//! be compiled on any host with the Neuron SDK's Python packages and copied (or shared through
//! the cache directory) to the instances that run them.

use crate::cache::{CompilerVersion, NeffKey};
use accelrt_stablehlo::Manifest;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Environment variable naming the compiler executable (default: `neuronx-cc` on `PATH`).
pub const COMPILER_ENV: &str = "ACCELRT_NEURONX_CC";

/// The targets `neuronx-cc` compiles for that accelrt runs.
pub const TARGETS: [&str; 3] = ["inf2", "trn1", "trn2"];

/// What can go wrong compiling.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// The compiler could not be started at all (no such file, not executable, its Python
    /// interpreter missing). Check `$ACCELRT_NEURONX_CC` or the Neuron SDK's installation.
    #[error("could not run {program} ({source})")]
    Run {
        /// The executable that was run.
        program: PathBuf,
        /// Why the operating system could not run it.
        #[source]
        source: std::io::Error,
    },
    /// `--version` printed nothing that reads as `A.B.C`: most likely the program is not
    /// `neuronx-cc`.
    #[error("`{program} --version` printed no version ({output:?})")]
    NoVersion {
        /// The executable that was asked.
        program: PathBuf,
        /// Its stdout and stderr, trimmed.
        output: String,
    },
    /// The compiler ran and failed; `log` is the end of what it printed, `hint` what usually helps.
    #[error("neuronx-cc failed on {input} (exit {status}){hint}:\n{log}")]
    Failed {
        /// The HLO file being compiled.
        input: PathBuf,
        /// The exit code, `killed by signal N`, or `unknown`.
        status: String,
        /// The last 40 lines of its stdout and stderr.
        log: String,
        /// What usually helps ([`failure_hint`]), with its leading ` — `; empty when there is
        /// nothing to add to the compiler's own messages.
        hint: String,
    },
    /// The compiler exited with success but no NEFF file is at the path it was given.
    #[error("neuronx-cc reported success but wrote no NEFF at {0}")]
    NoOutput(PathBuf),
    /// `--compiler-flags` that do not parse or that name what accelrt sets itself.
    #[error("--compiler-flags: {0}")]
    Flags(String),
    /// A file could not be removed, read, written or renamed: the old NEFF at the output path,
    /// the compiler's output, or the cache entry. Check the directory's permissions and space.
    #[error("writing {path}: {source}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
}

/// A `neuronx-cc` executable and its version.
#[derive(Debug, Clone)]
pub struct Compiler {
    /// The executable, run with the arguments of [`compile_args`].
    pub program: PathBuf,
    /// What it printed for `--version`; part of every NEFF's cache key.
    pub version: CompilerVersion,
}

impl Compiler {
    /// `$ACCELRT_NEURONX_CC`, else `neuronx-cc` on `PATH`; `Ok(None)` when the variable is unset
    /// (or empty) and `PATH` has no `neuronx-cc`.
    ///
    /// # Errors
    ///
    /// As [`Compiler::at`] for the program found, including one named by the variable that does
    /// not exist ([`CompileError::Run`]).
    pub fn find() -> Result<Option<Compiler>, CompileError> {
        let program = match std::env::var_os(COMPILER_ENV).filter(|v| !v.is_empty()) {
            Some(p) => PathBuf::from(p),
            None => match find_on_path("neuronx-cc") {
                Some(p) => p,
                None => return Ok(None),
            },
        };
        Compiler::at(&program).map(Some)
    }

    /// The compiler at `program`, asked for its version (it runs `program --version`).
    ///
    /// # Errors
    ///
    /// [`CompileError::Run`] when it cannot be run, [`CompileError::NoVersion`] when its output
    /// holds no version.
    pub fn at(program: &Path) -> Result<Compiler, CompileError> {
        let out = Command::new(program)
            .arg("--version")
            .output()
            .map_err(|source| CompileError::Run { program: program.to_path_buf(), source })?;
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        let version = CompilerVersion::find(&text).ok_or_else(|| CompileError::NoVersion {
            program: program.to_path_buf(),
            output: text.trim().to_string(),
        })?;
        Ok(Compiler { program: program.to_path_buf(), version })
    }

    /// Runs `neuronx-cc compile hlo --framework XLA --target target --output neff flags…` and
    /// returns once the NEFF is written. A failure carries the end of the compiler's output and
    /// the usual remedy (see [`failure_hint`]). A file already at `neff` is removed first, so a
    /// compiler that writes nothing is never mistaken for one that wrote it.
    ///
    /// # Errors
    ///
    /// [`CompileError::Io`] when an old file at `neff` cannot be removed; [`CompileError::Run`],
    /// [`CompileError::Failed`] (non-zero exit or a signal) or [`CompileError::NoOutput`].
    pub fn compile(&self, hlo: &Path, target: &str, flags: &[String], neff: &Path) -> Result<(), CompileError> {
        match std::fs::remove_file(neff) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(CompileError::Io { path: neff.to_path_buf(), source }),
        }
        let out = Command::new(&self.program)
            .args(compile_args(hlo, target, flags, neff))
            .output()
            .map_err(|source| CompileError::Run { program: self.program.clone(), source })?;
        if !out.status.success() {
            let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            let tail: Vec<&str> = log.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect();
            #[cfg(unix)]
            let signal = std::os::unix::process::ExitStatusExt::signal(&out.status);
            #[cfg(not(unix))]
            let signal: Option<i32> = None;
            return Err(CompileError::Failed {
                input: hlo.to_path_buf(),
                status: match (out.status.code(), signal) {
                    (Some(c), _) => c.to_string(),
                    (None, Some(s)) => format!("killed by signal {s}"),
                    (None, None) => "unknown".into(),
                },
                hint: failure_hint(&log, out.status.code(), signal, flags),
                log: tail.join("\n"),
            });
        }
        if !neff.is_file() {
            return Err(CompileError::NoOutput(neff.to_path_buf()));
        }
        Ok(())
    }

    /// Compiles `hlo` (the module `manifest` describes) and installs the NEFF and its manifest
    /// into `cache_dir`. The compiler writes to a name of this call's own beside `hlo` (another
    /// process compiling the same bucket with other flags into the same directory cannot swap
    /// NEFFs with it), which is renamed to `<stem>.neff` once installed. Returns the key and the
    /// NEFF's path in the cache. The temporary file is removed however this returns.
    ///
    /// # Errors
    ///
    /// As [`Compiler::compile`], and [`CompileError::Io`] when the NEFF cannot be read back,
    /// installed or renamed.
    pub fn compile_into_cache(
        &self,
        hlo: &Path,
        manifest: &Manifest,
        target: &str,
        flags: &[String],
        cache_dir: &Path,
    ) -> Result<(NeffKey, PathBuf), CompileError> {
        let beside = neff_path_beside(hlo);
        let own = beside.with_file_name(format!(
            ".{}.{}-{:016x}.neff",
            beside.file_name().and_then(|n| n.to_str()).unwrap_or("module"),
            std::process::id(),
            crate::cache::unique()
        ));
        let result = self.compile(hlo, target, flags, &own).and_then(|()| {
            let bytes = std::fs::read(&own).map_err(|source| CompileError::Io { path: own.clone(), source })?;
            let key = NeffKey::new(manifest, target, &self.version, flags);
            let path = key
                .install(cache_dir, &bytes, manifest)
                .map_err(|source| CompileError::Io { path: key.neff_path(cache_dir), source })?;
            std::fs::rename(&own, &beside).map_err(|source| CompileError::Io { path: beside.clone(), source })?;
            Ok((key, path))
        });
        let _ = std::fs::remove_file(&own);
        result
    }
}

/// Splits `--compiler-flags` as a POSIX shell would (quotes keep a value with spaces in one
/// argument, as neuronx-cc's `--tensorizer-options='…'` style needs) and refuses the arguments
/// accelrt sets itself: the input, `--framework`, `--target` and `--output` (`-o`), which would
/// otherwise make the NEFF disagree with its cache key.
///
/// # Errors
///
/// [`CompileError::Flags`] for unbalanced quotes or one of those arguments (also the word
/// `compile`).
pub fn parse_flags(text: &str) -> Result<Vec<String>, CompileError> {
    let flags = shlex::split(text).ok_or_else(|| CompileError::Flags(format!("unbalanced quotes in {text:?}")))?;
    for f in &flags {
        let name = f.split('=').next().unwrap_or(f);
        if matches!(name, "--framework" | "--target" | "--output" | "-o" | "compile") {
            return Err(CompileError::Flags(format!(
                "`{name}` is set by accelrt compile itself (--target, and the paths it writes); leave it out"
            )));
        }
    }
    Ok(flags)
}

/// `X.neff` for `X.hlo.pb`, in the same directory (`module.neff` if the name is not UTF-8; a name
/// without the `.hlo.pb` suffix just gets `.neff` appended).
pub fn neff_path_beside(hlo: &Path) -> PathBuf {
    let name = hlo.file_name().and_then(|n| n.to_str()).unwrap_or("module.hlo.pb");
    hlo.with_file_name(format!("{}.neff", name.strip_suffix(".hlo.pb").unwrap_or(name)))
}

/// The arguments after `neuronx-cc`: `compile <hlo> --framework XLA --target <target> --output
/// <neff>`, then `flags` unchanged (the documented `neuronx-cc` command line for XLA input, per
/// `../shared/reference/neuron-runtime.md`).
pub fn compile_args(hlo: &Path, target: &str, flags: &[String], neff: &Path) -> Vec<String> {
    let mut args = vec![
        "compile".to_string(),
        hlo.display().to_string(),
        "--framework".into(),
        "XLA".into(),
        "--target".into(),
        target.into(),
        "--output".into(),
        neff.display().to_string(),
    ];
    args.extend(flags.iter().cloned());
    args
}

/// The command line to run by hand (shell-quoted where needed), for messages and for
/// `compile.sh` where no compiler is installed.
pub fn command_line(hlo: &Path, target: &str, flags: &[String], neff: &Path) -> String {
    std::iter::once("neuronx-cc".to_string())
        .chain(compile_args(hlo, target, flags, neff).iter().map(|a| shell_quote(a)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `s` as one POSIX shell word: unchanged when it is made of safe characters, else single-quoted.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=,:@+".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// What usually helps when `neuronx-cc` fails, from how it ended and what it printed: a process
/// killed by SIGKILL (or exit 137, a shell's report of it) or one that says it ran out of memory
/// has most likely hit the host's memory, which large models do on the smaller instances
/// (trn1.2xlarge has 32 GiB); an internal compiler error often passes at a lower optimisation
/// level. Anything else gets no hint: the compiler's own messages say more.
pub fn failure_hint(log: &str, code: Option<i32>, signal: Option<i32>, flags: &[String]) -> String {
    let lower = log.to_lowercase();
    let oom_words = lower.lines().any(|l| l.trim_start().starts_with("killed"))
        || lower.contains("out of memory")
        || lower.contains("memoryerror")
        || lower.contains("cannot allocate memory");
    if signal == Some(9) || code == Some(137) || oom_words {
        return " — the compiler was killed, most likely out of host memory: compile on a larger instance \
                 (compiling needs no Neuron device) or with fewer buckets at once"
            .into();
    }
    let internal = lower.contains("internal compiler error")
        || lower.contains("internal error")
        || lower.contains("assertionerror")
        || lower.contains("assertion failed");
    let has_optlevel = flags.iter().any(|f| f.starts_with("--optlevel") || f.starts_with("-O"));
    if internal && !has_optlevel {
        return " — an internal compiler error: try again with `--compiler-flags '--optlevel 1'`, and report the \
                 HLO file to AWS if it persists"
            .into();
    }
    String::new()
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_the_documented_one() {
        let cmd = command_line(
            Path::new("out/batch=1,seq=8.hlo.pb"),
            "inf2",
            &["--model-type".into(), "transformer".into(), "--auto-cast".into(), "matmult".into()],
            Path::new("out/batch=1,seq=8.neff"),
        );
        assert_eq!(
            cmd,
            "neuronx-cc compile out/batch=1,seq=8.hlo.pb --framework XLA --target inf2 --output out/batch=1,seq=8.neff \
             --model-type transformer --auto-cast matmult"
        );
        assert_eq!(neff_path_beside(Path::new("d/b=1.hlo.pb")), Path::new("d/b=1.neff"));
    }

    #[test]
    fn flags_split_like_a_shell_and_keep_accelrts_own_arguments_out() {
        assert_eq!(
            parse_flags("--model-type transformer --tensorizer-options='--verify-hlo --foo'").unwrap(),
            ["--model-type", "transformer", "--tensorizer-options=--verify-hlo --foo"]
        );
        assert!(parse_flags("").unwrap().is_empty());
        for bad in ["--target trn2", "--output /tmp/x.neff", "--framework=XLA", "-o x", "'unbalanced"] {
            assert!(parse_flags(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn failures_come_with_the_usual_remedy() {
        assert!(failure_hint("Killed", Some(137), None, &[]).contains("host memory"));
        assert!(failure_hint("", None, Some(9), &[]).contains("host memory"));
        assert!(failure_hint("INTERNAL ERROR: assert failed in tiling", Some(1), None, &[]).contains("--optlevel 1"));
        assert_eq!(failure_hint("INTERNAL ERROR", Some(1), None, &["--optlevel".into(), "1".into()]), "");
        assert_eq!(failure_hint("unsupported operator", Some(1), None, &[]), "");
        // Found by trying: a crash is not memory, a word containing "killed" is not a kill, and a
        // bad argument is not an internal error.
        assert_eq!(failure_hint("", None, Some(11), &[]), "");
        assert_eq!(failure_hint("ERROR: tensor 'skilled_op' has no layout", Some(1), None, &[]), "");
        assert_eq!(failure_hint("error: unexpected keyword argument '--auto-cast'", Some(2), None, &[]), "");
    }
}
