//! The NEFF compile cache: where the program for one exported module lives, and the manifest
//! beside it that says exactly what it was compiled from and by what.
//!
//! A NEFF here is compiled from a StableHLO module exported by `accelrt_stablehlo` (converted to
//! an XLA `HloModuleProto` for `neuronx-cc`). Weights are **arguments** of that program, not
//! constants, so one NEFF serves every checkpoint of an architecture and the weights are not part
//! of the key. What is:
//!
//! - the graph (`Graph::content_hash`: ops, names, dtypes, shapes) and the module made from it
//!   (`mlir_sha256`, which also covers the bucket and the compute dtype);
//! - the weights policy ([`WEIGHTS_POLICY`]: weights are program inputs);
//! - the bucket (every symbol's size and the cache slots);
//! - the target (`inf2`, `trn1`, `trn2`);
//! - the compiler's version and the flags it was given.
//!
//! ```text
//! <cache>/<graph content hash>/<target>/<bucket>@<compiler version>@<flags hash>.neff
//! <cache>/<graph content hash>/<target>/<bucket>@<compiler version>@<flags hash>.json
//! ```
//!
//! The cache is a plain directory, so it can live on a shared file system (EFS, NFS) that many
//! hosts read: files are written to a temporary name and renamed into place, so a reader sees a
//! whole NEFF and manifest or none. The manifest records the NEFF's SHA-256, so a truncated or
//! altered copy is refused at load.

use accelrt_core::DType;
use accelrt_stablehlo::{Bucket, Manifest};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// The `format` of manifests this version writes and reads. Earlier layouts (NEFFs with embedded
/// weights, keyed by a weights hash) are not read.
pub const MANIFEST_FORMAT: &str = "accelrt-neff/2";

/// How the weights reach the program: as inputs (the exporter's only policy). Part of the key so
/// that a future policy (weights folded into the NEFF as constants) can never be confused with it.
pub const WEIGHTS_POLICY: &str = "arguments";

/// The file name part of a bucket: `batch=8,seq=128` (`static` for graphs without symbols).
pub fn bucket_key(bucket: &Bucket) -> String {
    let text = bucket.to_string();
    if text.is_empty() {
        "static".into()
    } else {
        text
    }
}

/// A compiler version as `neuronx-cc --version` prints it (e.g. `2.21.33363.0`): the numbers
/// that matter are the first three. The runtime loads NEFFs of its own major version only.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CompilerVersion {
    /// First number (2 for the neuronx-cc 2.x releases); compared with the runtime's major
    /// version when NEFFs are chosen.
    pub major: u64,
    /// Second number (21 in `2.21.33363.0`).
    pub minor: u64,
    /// Third number (neuronx-cc puts a build number here, e.g. 33363).
    pub patch: u64,
    /// The whole version as printed (e.g. `2.21.33363.0+1c5ab5b7`), cut at the first character
    /// that is not alphanumeric, `.`, `+` or `_`, and to 64 characters: it becomes part of
    /// cache file names.
    pub text: String,
}

impl CompilerVersion {
    /// The first `A.B.C…` in `output` (what `neuronx-cc --version` prints). `None` when there is
    /// none.
    pub fn find(output: &str) -> Option<CompilerVersion> {
        for word in output.split(|c: char| c.is_whitespace() || c == ',' || c == '(' || c == ')') {
            let word = word.trim_start_matches('v');
            let numbers: Vec<&str> = word.split(['.', '+', '-']).collect();
            if numbers.len() < 3 {
                continue;
            }
            let parse = |s: &str| s.parse::<u64>().ok();
            if let (Some(major), Some(minor), Some(patch)) = (parse(numbers[0]), parse(numbers[1]), parse(numbers[2])) {
                // The text becomes part of a file name: keep only what a version is made of, so
                // that a crafted version string cannot reach outside the cache (`../`).
                let text: String = word
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '_'))
                    .take(64)
                    .collect();
                return Some(CompilerVersion { major, minor, patch, text });
            }
        }
        None
    }
}

impl std::fmt::Display for CompilerVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// Everything a NEFF depends on: two programs with the same key are interchangeable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NeffKey {
    /// `Graph::content_hash()` of the exported graph.
    pub graph_hash: String,
    /// SHA-256 of the exported module text (graph, bucket, compute dtype).
    pub mlir_sha256: String,
    /// [`WEIGHTS_POLICY`].
    pub weights: String,
    /// The dtype the module computes in (`accelrt compile --dtype`; f32 unless asked).
    pub compute_dtype: DType,
    /// The exported bucket (its `slots` counts the caches' rows, the spare one included).
    pub bucket: Bucket,
    /// `inf2`, `trn1` or `trn2`.
    pub target: String,
    /// The compiler that made the NEFF.
    pub compiler: CompilerVersion,
    /// The compiler flags, in the order given (besides input, `--framework`, `--target`, `--output`).
    pub flags: Vec<String>,
}

impl NeffKey {
    /// The key of the NEFF compiled from `module` for `target` by `compiler` with `flags`.
    pub fn new(module: &Manifest, target: &str, compiler: &CompilerVersion, flags: &[String]) -> NeffKey {
        NeffKey {
            graph_hash: module.graph_hash.clone(),
            mlir_sha256: module.mlir_sha256.clone(),
            weights: WEIGHTS_POLICY.into(),
            compute_dtype: module.compute_dtype,
            bucket: module.bucket.clone(),
            target: target.to_string(),
            compiler: compiler.clone(),
            flags: flags.to_vec(),
        }
    }

    /// First 8 hex digits of SHA-256 over the flags (one per line).
    pub fn flags_hash(flags: &[String]) -> String {
        let mut h = Sha256::new();
        for f in flags {
            h.update(f.as_bytes());
            h.update(b"\n");
        }
        hex::encode(&h.finalize()[..4])
    }

    /// `<cache>/<graph hash>/<target>`: every NEFF of one graph for one chip.
    pub fn dir_for(cache_dir: &Path, graph_hash: &str, target: &str) -> PathBuf {
        cache_dir.join(graph_hash).join(target)
    }

    fn stem(&self) -> String {
        format!("{}@{}@{}", bucket_key(&self.bucket), self.compiler.text, NeffKey::flags_hash(&self.flags))
    }

    /// Where this key's NEFF lives under `cache_dir`:
    /// `<graph hash>/<target>/<bucket>@<compiler version>@<flags hash>.neff`. The compute dtype
    /// and module hash are not in the name; the manifest beside it records them.
    pub fn neff_path(&self, cache_dir: &Path) -> PathBuf {
        NeffKey::dir_for(cache_dir, &self.graph_hash, &self.target).join(format!("{}.neff", self.stem()))
    }

    /// Where this key's [`NeffManifest`] lives: [`NeffKey::neff_path`] with `.json` for `.neff`.
    pub fn manifest_path(&self, cache_dir: &Path) -> PathBuf {
        NeffKey::dir_for(cache_dir, &self.graph_hash, &self.target).join(format!("{}.json", self.stem()))
    }

    /// Writes `neff` and its manifest (with `module`, the exported module's manifest) into the
    /// cache, each through a temporary file renamed into place, NEFF first: a reader that finds
    /// the manifest finds the whole NEFF. Returns the NEFF's path.
    pub fn install(&self, cache_dir: &Path, neff: &[u8], module: &Manifest) -> std::io::Result<PathBuf> {
        let manifest = NeffManifest {
            format: MANIFEST_FORMAT.into(),
            key: self.clone(),
            neff_sha256: sha256(neff),
            module: module.clone(),
        };
        let path = self.neff_path(cache_dir);
        write_atomic(&path, neff)?;
        write_atomic(&self.manifest_path(cache_dir), manifest.to_json().as_bytes())?;
        Ok(path)
    }
}

/// The manifest written beside each NEFF.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NeffManifest {
    /// [`MANIFEST_FORMAT`].
    pub format: String,
    /// Everything the NEFF was compiled from and by.
    pub key: NeffKey,
    /// Hex SHA-256 of the NEFF file.
    pub neff_sha256: String,
    /// The exported module's manifest: the program's arguments and results, in order.
    pub module: Manifest,
}

impl NeffManifest {
    /// The manifest as the cache stores it: pretty-printed JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a manifest always serialises")
    }
}

/// A NEFF found in the cache, with its manifest.
#[derive(Debug, Clone)]
pub struct CachedNeff {
    /// The NEFF file (not yet read or checked: [`read_checked`] does both).
    pub neff: PathBuf,
    /// Its manifest, already checked to be of [`MANIFEST_FORMAT`] and of the directory's graph
    /// and target.
    pub manifest: NeffManifest,
}

/// Every readable NEFF manifest of `graph_hash` for `target`, and for each unreadable one its
/// path and why (a malformed or foreign manifest, a missing NEFF). An absent directory is an
/// empty cache.
pub fn scan(cache_dir: &Path, graph_hash: &str, target: &str) -> (Vec<CachedNeff>, Vec<(PathBuf, String)>) {
    let dir = NeffKey::dir_for(cache_dir, graph_hash, target);
    let (mut found, mut refused) = (Vec::new(), Vec::new());
    let Ok(entries) = std::fs::read_dir(&dir) else { return (found, refused) };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for path in paths {
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        // Only regular files, and only their first MAX_MANIFEST_BYTES: a FIFO would block the
        // read forever and a link to /dev/zero would never end.
        if !std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
            refused.push((path, "not a regular file".into()));
            continue;
        }
        let manifest = read_bounded(&path).and_then(|text| {
            serde_json::from_str::<NeffManifest>(&text).map_err(|e| format!("not a NEFF manifest: {e}"))
        });
        let manifest = match manifest {
            Ok(m) if m.format != MANIFEST_FORMAT => {
                Err(format!("format `{}`, this accelrt reads `{MANIFEST_FORMAT}`", m.format))
            }
            Ok(m) if m.key.graph_hash != graph_hash || m.key.target != target => Err(format!(
                "records graph {} / target {}, but sits under {graph_hash}/{target}",
                m.key.graph_hash, m.key.target
            )),
            other => other,
        };
        match manifest {
            Ok(manifest) => {
                let neff = path.with_extension("neff");
                if neff.is_file() {
                    found.push(CachedNeff { neff, manifest });
                } else {
                    refused.push((path, format!("its NEFF {} is missing", neff.display())));
                }
            }
            Err(why) => refused.push((path, why)),
        }
    }
    (found, refused)
}

/// Reads a cached NEFF and checks it against the SHA-256 its manifest records.
///
/// # Errors
///
/// A message naming the file when it cannot be read, or when its SHA-256 differs from the
/// manifest's (a truncated or altered copy: delete it and compile again).
pub fn read_checked(cached: &CachedNeff) -> Result<Vec<u8>, String> {
    let bytes = std::fs::read(&cached.neff).map_err(|e| format!("reading {}: {e}", cached.neff.display()))?;
    let actual = sha256(&bytes);
    if actual != cached.manifest.neff_sha256 {
        return Err(format!(
            "{} has SHA-256 {actual}, its manifest records {} (a truncated or altered copy?); delete it and compile again",
            cached.neff.display(),
            cached.manifest.neff_sha256
        ));
    }
    Ok(bytes)
}

/// Manifests are a few KiB; anything past this is not one.
const MAX_MANIFEST_BYTES: u64 = 1 << 20;

fn read_bounded(path: &Path) -> Result<String, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut text = String::new();
    file.take(MAX_MANIFEST_BYTES + 1).read_to_string(&mut text).map_err(|e| e.to_string())?;
    if text.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(format!("larger than {MAX_MANIFEST_BYTES} bytes: not a NEFF manifest"));
    }
    Ok(text)
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().expect("cache paths have a parent");
    std::fs::create_dir_all(dir)?;
    // Unique across processes and hosts sharing the directory (EFS): containers often share PIDs.
    let tmp = dir.join(format!(
        ".{}.partial-{}-{:016x}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("neff"),
        std::process::id(),
        unique()
    ));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// A number that differs between calls, processes and hosts (std's per-process random hash
/// keys, the time and a counter).
pub(crate) fn unique() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiler_versions_are_read_from_what_neuronx_cc_prints() {
        let v = CompilerVersion::find("NeuronX Compiler version 2.21.33363.0+1c5ab5b7\n").unwrap();
        assert_eq!((v.major, v.minor, v.patch), (2, 21, 33363));
        assert_eq!(v.text, "2.21.33363.0+1c5ab5b7");
        assert_eq!(CompilerVersion::find("neuronx-cc 2.15.128.0 (accelrt test double)").unwrap().major, 2);
        assert!(CompilerVersion::find("no version here 1.2").is_none());
        // Only version characters survive into the text (it becomes part of a file name).
        let v = CompilerVersion::find("NeuronX Compiler version 2.21.0-x/../../../tmp/PWNED").unwrap();
        assert_eq!(v.text, "2.21.0");
    }

    #[test]
    fn flags_change_the_key_and_the_file_name() {
        assert_ne!(NeffKey::flags_hash(&["--optlevel".into(), "1".into()]), NeffKey::flags_hash(&[]));
        assert_ne!(NeffKey::flags_hash(&["-O1".into()]), NeffKey::flags_hash(&["-O2".into()]));
        assert_eq!(NeffKey::flags_hash(&[]).len(), 8);
    }
}
