//! The manifest that comes with every exported module: what to pass, in which order, and what
//! comes back.

use crate::Bucket;
use accelrt_core::DType;
use serde::{Deserialize, Serialize};

/// Version of the manifest's JSON form.
pub const MANIFEST_FORMAT: u32 = 1;

/// Describes one exported module: its arguments and results in order, and what it was made from.
///
/// A runtime passes `arguments` in order (inputs from the caller, weights from the model file,
/// state from the session) and gets `outputs` back in order; each state output is the new value of
/// the state argument with the same `cache`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`MANIFEST_FORMAT`].
    pub format: u32,
    /// The graph's name.
    pub graph: String,
    /// `Graph::content_hash()` of the exported graph (ops, names, types; not weight values).
    pub graph_hash: String,
    /// The sizes the module is specialised to.
    pub bucket: Bucket,
    /// The dtype f32 values of the graph are computed in (f32 unless asked otherwise).
    pub compute_dtype: DType,
    /// Hex SHA-256 of the module text: what a compile cache keys the program by (with the target
    /// and compiler version); it changes with anything that changes the program.
    pub mlir_sha256: String,
    /// The function's arguments, in order.
    pub arguments: Vec<Argument>,
    /// The function's results, in order.
    pub outputs: Vec<Output>,
}

/// One argument of the exported function.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Argument {
    /// The graph input's name, the weight's name, or the `KvCache` node's name.
    pub name: String,
    /// The element type the function takes (for weights, after dequantisation/conversion).
    pub dtype: DType,
    /// The static shape.
    pub shape: Vec<usize>,
    /// Who supplies the value: the caller, the model file, or the session.
    pub role: ArgumentRole,
}

/// Where an argument's value comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ArgumentRole {
    /// A graph input, supplied by the caller at every run (padded to the bucket).
    Input,
    /// A weight, read from the model file by `weight` and converted from `source_dtype` (its
    /// stored type, possibly block-quantised) to the argument's dtype, once, at upload; see
    /// [`crate::weight_argument`].
    Weight {
        /// The weight's name in the model file.
        weight: String,
        /// The dtype it is stored in.
        source_dtype: DType,
    },
    /// The contents of a `KvCache` node's cache, `[slots, heads, capacity, head_dim]`: zeros for a
    /// new session, then the matching state output of the previous step.
    State {
        /// The `KvCache` node's name.
        cache: String,
    },
    /// The value of the graph variable `variable` (`Op::Variable`: a parameter in training, an
    /// optimiser moment), at its exact dtype and shape: `init` for a new session (the weight of
    /// that name, or zeros), then the matching variable output of the previous step.
    Variable {
        /// The `Op::Variable` node's name.
        variable: String,
        /// How a new session fills it.
        init: accelrt_core::VariableInit,
    },
}

/// One result of the exported function.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Output {
    /// The graph output's name, or the `KvCache` node's name for state.
    pub name: String,
    /// The element type returned: a graph output keeps the graph's dtype; state comes back in the
    /// dtype it was passed in.
    pub dtype: DType,
    /// The static shape (a `kv_len` axis has the caches' capacity).
    pub shape: Vec<usize>,
    /// Whether the result is for the caller or is state to pass back next step.
    pub role: OutputRole,
}

/// What a result is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OutputRole {
    /// A graph output.
    Output,
    /// The updated cache of `cache`, to pass as that state argument next step.
    State {
        /// The `KvCache` node's name, as in the matching [`ArgumentRole::State`].
        cache: String,
    },
    /// The next value of the variable `variable` (its `Assign`'s value, or the value it came in
    /// with when the graph does not assign it), to pass as that variable argument next step.
    Variable {
        /// The variable's name, as in the matching [`ArgumentRole::Variable`].
        variable: String,
    },
}

impl Manifest {
    /// The manifest as pretty-printed JSON, the form written beside the module text.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a manifest always serialises")
    }

    /// Reads a manifest written by [`Manifest::to_json`]. The `format` field is read first, so a
    /// manifest of another format is refused as such (not with whatever field error its other
    /// layout would give).
    ///
    /// # Errors
    /// The JSON error if the text is not a manifest, or if its `format` is not
    /// [`MANIFEST_FORMAT`] (the message names both: re-export the module with this accelrt).
    pub fn from_json(text: &str) -> Result<Manifest, serde_json::Error> {
        #[derive(Deserialize)]
        struct Format {
            format: u32,
        }
        let Format { format } = serde_json::from_str(text)?;
        if format != MANIFEST_FORMAT {
            return Err(serde::de::Error::custom(format!(
                "manifest format {format} is not supported: this accelrt reads format {MANIFEST_FORMAT} \
                 (re-export the module with it)"
            )));
        }
        serde_json::from_str(text)
    }

    /// (argument index, output index) of every state pair — caches and variables: the output's
    /// value is the argument's next value.
    pub fn state_pairs(&self) -> Vec<(usize, usize)> {
        let mut pairs = Vec::new();
        for (o, out) in self.outputs.iter().enumerate() {
            let arg = match &out.role {
                OutputRole::Output => continue,
                OutputRole::State { cache } => self
                    .arguments
                    .iter()
                    .position(|a| matches!(&a.role, ArgumentRole::State { cache: c } if c == cache)),
                OutputRole::Variable { variable } => self
                    .arguments
                    .iter()
                    .position(|a| matches!(&a.role, ArgumentRole::Variable { variable: v, .. } if v == variable)),
            };
            pairs.push((arg.expect("every state output has its argument"), o));
        }
        pairs
    }
}
