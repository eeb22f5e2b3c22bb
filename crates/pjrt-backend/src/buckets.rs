//! Which static sizes a run is padded to, and the padding itself.
//!
//! A PJRT program has static shapes, so every run needs a program compiled for one bucket. Padding
//! a symbolic axis is only exact when no op mixes the padded positions into the real ones, so a
//! symbol is padded only when the bucket lists name it **and** `paddable_symbols` finds that no
//! op of the graph reduces over it unmasked (a softmax or norm over it, `TakeLast` along it, a
//! contraction, a concatenation). BERT's `seq` pads (its attention and pooling are masked);
//! Llama's `seq` does not (the logits are `TakeLast` along it), its `batch` does (rows are
//! independent; padded rows of a session write to a spare cache slot). Every other size gets a
//! program of its own, compiled once and cached.

use std::collections::BTreeMap;

/// Environment variable with the bucket lists: `batch=1,2,4;seq=32,64,128` (the Neuron backend's
/// syntax). Symbols it lists are padded (where the graph allows) to the smallest listed size that
/// holds them, or run at their exact size beyond the largest; symbols it does not list always run
/// at their exact size. Set to the empty string, nothing is padded.
pub const BUCKETS_ENV: &str = "ACCELRT_PJRT_BUCKETS";

/// The default lists: `batch` padded to powers of two up to 256, `seq` to powers of two from 16
/// to 512 (each used only where the graph allows padding it).
pub const DEFAULT_BUCKETS: &str = "batch=1,2,4,8,16,32,64,128,256;seq=16,32,64,128,256,512";

/// Sizes per symbol that runs are padded to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketPolicy {
    /// Symbol → ascending sizes.
    pub sizes: BTreeMap<String, Vec<usize>>,
}

impl BucketPolicy {
    /// Parses `sym=a,b,c;sym2=…` (empty: no symbol is padded).
    pub fn parse(spec: &str) -> Result<BucketPolicy, String> {
        let mut sizes = BTreeMap::new();
        for part in spec.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, list) = part.split_once('=').ok_or_else(|| format!("bucket list `{part}` is not sym=a,b,…"))?;
            let mut list: Vec<usize> = list
                .split(',')
                .map(|s| {
                    s.trim().parse::<usize>().map_err(|_| format!("bucket size `{s}` of `{name}` is not a number"))
                })
                .collect::<Result<_, _>>()?;
            list.sort_unstable();
            list.dedup();
            if list.is_empty() || list[0] == 0 {
                return Err(format!("the bucket list of `{name}` needs sizes ≥ 1"));
            }
            if name.trim() == "slots" {
                return Err("`slots` is not a dimension: a session's slot count is its own".into());
            }
            sizes.insert(name.trim().to_string(), list);
        }
        Ok(BucketPolicy { sizes })
    }

    /// `$ACCELRT_PJRT_BUCKETS`, else [`DEFAULT_BUCKETS`].
    ///
    /// # Errors
    /// A value that does not parse: the message names the variable, the value and what is wrong.
    pub fn from_env() -> Result<BucketPolicy, String> {
        match std::env::var(BUCKETS_ENV) {
            Ok(spec) => BucketPolicy::parse(&spec).map_err(|e| format!("${BUCKETS_ENV} = `{spec}`: {e}")),
            Err(std::env::VarError::NotUnicode(value)) => Err(format!("${BUCKETS_ENV} = {value:?}: not UTF-8")),
            Err(std::env::VarError::NotPresent) => {
                Ok(BucketPolicy::parse(DEFAULT_BUCKETS).expect("the default parses"))
            }
        }
    }

    /// The size a run of `size` along `symbol` is padded to.
    pub fn pad(&self, symbol: &str, size: usize) -> usize {
        self.sizes.get(symbol).and_then(|list| list.iter().copied().find(|&n| n >= size)).unwrap_or(size)
    }
}

impl Default for BucketPolicy {
    fn default() -> BucketPolicy {
        BucketPolicy::parse(DEFAULT_BUCKETS).expect("the default parses")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_pads_listed_symbols_only() {
        let p = BucketPolicy::parse("batch=4,1,2; seq=32,64").unwrap();
        assert_eq!((p.pad("batch", 1), p.pad("batch", 3), p.pad("batch", 9)), (1, 4, 9));
        assert_eq!((p.pad("seq", 33), p.pad("other", 7)), (64, 7));
        assert!(BucketPolicy::parse("").unwrap().sizes.is_empty());
        assert!(BucketPolicy::parse("batch").is_err());
        assert!(BucketPolicy::parse("batch=0").is_err());
        assert!(BucketPolicy::parse("slots=2").is_err());
        assert_eq!(BucketPolicy::default().pad("batch", 5), 8);
    }

    #[test]
    fn pad_and_unpad_round_trip() {
        use accelrt_core::padding::{pad, unpad};
        let src: Vec<u8> = (1..=6).collect(); // [2, 3] of u8
        let padded = pad(&src, 1, &[2, 3], &[3, 4]);
        assert_eq!(padded, [1, 2, 3, 0, 4, 5, 6, 0, 0, 0, 0, 0]);
        assert_eq!(unpad(&padded, 1, &[3, 4], &[2, 3]), src);
        assert_eq!(pad(&[7], 1, &[], &[]), [7]);
        assert!(pad(&[], 1, &[0, 3], &[2, 3]).iter().all(|&b| b == 0));
    }
}
