//! The NEFF compile cache: where the program for one (graph, weights, target, bucket) lives, and the
//! manifest beside it that says what it was compiled from.
//!
//! A NEFF embeds the weights it was compiled with, so the graph's content hash (which covers ops,
//! names, types and shapes but not weight values) is not enough to name one: two checkpoints of one
//! architecture share a graph hash. The key is therefore
//!
//! ```text
//! <cache>/<graph content hash>/<weights hash>/<target>/<bucket>.neff
//! <cache>/<graph content hash>/<weights hash>/<target>/<bucket>.manifest.json
//! ```
//!
//! and the manifest repeats every part of the key, so a NEFF copied or compiled into the wrong place
//! is refused at load with an error naming the parts that differ.

use accelrt_core::{load_weight, Graph, Result, WeightSource};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A concrete assignment of every symbolic input dimension, e.g. {batch: 8, seq: 128}.
pub type Bucket = BTreeMap<String, usize>;

/// The `format` of manifests this version writes and reads. The layout before manifests
/// (`<graph hash>/<target>/<bucket>.neff`, no weights in the key) is not read.
pub const MANIFEST_FORMAT: &str = "accelrt-neff/1";

/// The file name part of a bucket: `batch=8,seq=128` (`static` for graphs without symbols).
pub fn bucket_key(bucket: &Bucket) -> String {
    if bucket.is_empty() {
        return "static".into();
    }
    bucket.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

/// SHA-256 over the weights a NEFF of `graph` embeds, read from `weights` exactly as the backend
/// reads them (each checked against its `Weight` node's dtype, shape and size).
///
/// Each weight's bytes are streamed through SHA-256 on their own (spread over up to 8 threads; the
/// bytes are borrowed from the source, so a memory-mapped file is not copied), and the result is
/// SHA-256 of a scheme tag followed by, for every weight in graph order, its name, dtype, shape,
/// byte length and digest. Any changed byte, renamed weight or re-typed weight changes it.
pub fn weights_hash(graph: &Graph, weights: &dyn WeightSource) -> Result<String> {
    let nodes: Vec<_> = graph.weights().map(|(_, n)| n).collect();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 8).min(nodes.len().max(1));
    let next = AtomicUsize::new(0);
    // Threads take the next unhashed weight until none is left; each returns (index, part) pairs.
    let results: Vec<Result<Vec<(usize, WeightDigest)>>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(node) = nodes.get(i) else { return Ok(done) };
                        let view = load_weight(weights, node)?;
                        done.push((
                            i,
                            WeightDigest {
                                dtype: view.dtype.to_string(),
                                shape: view.shape.clone(),
                                len: view.bytes.len(),
                                sha256: Sha256::digest(&view.bytes).into(),
                            },
                        ));
                    }
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().expect("a hashing thread panicked")).collect()
    });
    let mut parts: Vec<Option<WeightDigest>> = vec![None; nodes.len()];
    for done in results {
        for (i, part) in done? {
            parts[i] = Some(part);
        }
    }
    let mut total = Sha256::new();
    total.update(b"accelrt-neff-weights/1\n");
    for (node, part) in nodes.iter().zip(parts) {
        let part = part.expect("every weight hashed");
        total.update(node.name.as_bytes());
        total.update([0]);
        total.update(part.dtype.as_bytes());
        total.update([0]);
        total.update((part.shape.len() as u64).to_le_bytes());
        for d in part.shape {
            total.update((d as u64).to_le_bytes());
        }
        total.update((part.len as u64).to_le_bytes());
        total.update(part.sha256);
    }
    Ok(hex::encode(total.finalize()))
}

/// One weight's contribution to `weights_hash`.
#[derive(Clone)]
struct WeightDigest {
    dtype: String,
    shape: Vec<usize>,
    len: usize,
    sha256: [u8; 32],
}

/// Everything that decides which NEFF a prepare needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NeffKey {
    /// `Graph::content_hash()`: ops, names, dtypes, shapes (not weight values).
    pub graph: String,
    /// `weights_hash()` of the weights compiled into the NEFF.
    pub weights: String,
    /// neuronx-cc's `--target`: `inf2`, `trn1`, `trn2`.
    pub target: String,
    /// The static size of every symbolic input dimension.
    pub bucket: Bucket,
}

impl NeffKey {
    /// The key for `graph` with weights hashing to `weights_hash`, on `target`, at `bucket`.
    pub fn new(graph: &Graph, weights_hash: &str, target: &str, bucket: &Bucket) -> NeffKey {
        NeffKey {
            graph: graph.content_hash(),
            weights: weights_hash.to_string(),
            target: target.to_string(),
            bucket: bucket.clone(),
        }
    }

    fn dir(&self, cache_dir: &Path) -> PathBuf {
        cache_dir.join(&self.graph).join(&self.weights).join(&self.target)
    }

    /// `<cache>/<graph>/<weights>/<target>/<bucket>.neff`
    pub fn neff_path(&self, cache_dir: &Path) -> PathBuf {
        self.dir(cache_dir).join(format!("{}.neff", bucket_key(&self.bucket)))
    }

    /// `<cache>/<graph>/<weights>/<target>/<bucket>.manifest.json`, beside the NEFF.
    pub fn manifest_path(&self, cache_dir: &Path) -> PathBuf {
        self.dir(cache_dir).join(format!("{}.manifest.json", bucket_key(&self.bucket)))
    }

    /// The manifest to write beside this key's NEFF (one line of JSON).
    pub fn manifest_json(&self, graph_name: &str) -> String {
        let manifest =
            Manifest { format: MANIFEST_FORMAT.into(), graph_name: Some(graph_name.into()), key: self.clone() };
        serde_json::to_string(&manifest).expect("a manifest always serialises")
    }

    /// Writes `neff` and its manifest at this key's paths (directories created): what a compile step
    /// does once neuronx-cc has produced the NEFF. Returns the NEFF's path.
    pub fn install(&self, cache_dir: &Path, graph_name: &str, neff: &[u8]) -> std::io::Result<PathBuf> {
        let path = self.neff_path(cache_dir);
        std::fs::create_dir_all(path.parent().expect("a file in a directory"))?;
        std::fs::write(&path, neff)?;
        std::fs::write(self.manifest_path(cache_dir), self.manifest_json(graph_name))?;
        Ok(path)
    }

    /// Reads the manifest beside this key's NEFF and checks that it records exactly this key.
    /// Errors name the manifest's path and, for a mismatch, every part that differs.
    pub fn check_manifest(&self, cache_dir: &Path) -> std::result::Result<(), String> {
        let path = self.manifest_path(cache_dir);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            format!(
                "the NEFF at {} has no readable manifest at {} ({e}); a NEFF is only used with the manifest that records what it was compiled from: {}",
                self.neff_path(cache_dir).display(),
                path.display(),
                self.manifest_json("<graph name>")
            )
        })?;
        let manifest: Manifest = serde_json::from_str(&text)
            .map_err(|e| format!("the NEFF manifest {} is not a valid manifest ({e})", path.display()))?;
        let mut differs = Vec::new();
        if manifest.format != MANIFEST_FORMAT {
            differs.push(format!("format (manifest {}, expected {MANIFEST_FORMAT})", manifest.format));
        }
        let m = &manifest.key;
        if m.graph != self.graph {
            differs.push(format!("graph (manifest {}, this graph {})", m.graph, self.graph));
        }
        if m.weights != self.weights {
            differs.push(format!("weights (manifest {}, these weights {})", m.weights, self.weights));
        }
        if m.target != self.target {
            differs.push(format!("target (manifest {}, expected {})", m.target, self.target));
        }
        if m.bucket != self.bucket {
            differs.push(format!("bucket (manifest {}, expected {})", bucket_key(&m.bucket), bucket_key(&self.bucket)));
        }
        if differs.is_empty() {
            return Ok(());
        }
        Err(format!(
            "the NEFF at {} is refused: its manifest {} records a different program: {} differ{}",
            self.neff_path(cache_dir).display(),
            path.display(),
            differs.join(", "),
            if differs.len() == 1 { "s" } else { "" }
        ))
    }
}

/// The manifest file: the key's parts plus a format tag (checked) and the graph's name (for people).
#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    format: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    graph_name: Option<String>,
    #[serde(flatten)]
    key: NeffKey,
}
