//! Shapes with symbolic dimensions (batch, sequence) resolved when a graph runs.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// One dimension: a fixed size, or a named symbol bound by the inputs at run time. In a graph's
/// JSON a dim is a number or a string.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Dim {
    /// A size known when the graph is built; checked against operands then.
    Fixed(usize),
    /// A named size such as `batch` or `seq`: every occurrence of one name in a graph is one size,
    /// bound at run time by the input tensors (`Graph::bind_inputs`). Shape inference adds
    /// `kv_len` (after a `KvCache`) and derived symbols `<node>:<axis>`, which no input binds.
    Sym(String),
}

impl Dim {
    /// A symbolic dim named `name`: shorthand for `Dim::Sym(name.to_string())`.
    pub fn sym(name: &str) -> Dim {
        Dim::Sym(name.to_string())
    }

    /// The size if it is fixed, `None` for a symbol.
    pub fn fixed(&self) -> Option<usize> {
        match self {
            Dim::Fixed(n) => Some(*n),
            Dim::Sym(_) => None,
        }
    }

    /// Whether two dims can describe the same size. Symbols are checked when the graph runs, so a
    /// symbol is compatible with anything at build time; two fixed sizes must agree.
    pub fn compatible(&self, other: &Dim) -> bool {
        match (self, other) {
            (Dim::Fixed(a), Dim::Fixed(b)) => a == b,
            _ => true,
        }
    }
}

impl From<usize> for Dim {
    fn from(n: usize) -> Self {
        Dim::Fixed(n)
    }
}

impl From<&str> for Dim {
    fn from(s: &str) -> Self {
        Dim::Sym(s.to_string())
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Fixed(n) => write!(f, "{n}"),
            Dim::Sym(s) => f.write_str(s),
        }
    }
}

/// A shape whose dimensions may be symbolic.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct Shape(pub Vec<Dim>);

impl Shape {
    /// A shape from anything that converts to `Dim`: `usize` sizes become fixed dims, `&str`s
    /// symbols, e.g. `Shape::new(["batch", "seq"])`; to mix both, pass `Dim`s.
    pub fn new<D: Into<Dim>>(dims: impl IntoIterator<Item = D>) -> Shape {
        Shape(dims.into_iter().map(Into::into).collect())
    }

    /// The number of axes (0 for a scalar).
    pub fn rank(&self) -> usize {
        self.0.len()
    }

    /// The dims, outermost axis first.
    pub fn dims(&self) -> &[Dim] {
        &self.0
    }

    /// The concrete sizes, if no dimension is symbolic.
    pub fn concrete(&self) -> Option<Vec<usize>> {
        self.0.iter().map(Dim::fixed).collect()
    }

    /// Concrete sizes under a binding of the symbols; `None` if a symbol is unbound, as derived
    /// symbols and `kv_len` are in bindings from `Graph::bind_inputs`.
    pub fn resolve(&self, bindings: &Bindings) -> Option<Vec<usize>> {
        self.0
            .iter()
            .map(|d| match d {
                Dim::Fixed(n) => Some(*n),
                Dim::Sym(s) => bindings.get(s),
            })
            .collect()
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]")
    }
}

/// Sizes bound to a graph's symbols by one set of inputs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bindings(BTreeMap<String, usize>);

impl Bindings {
    /// The size bound to the symbol `name`, `None` if none is.
    pub fn get(&self, name: &str) -> Option<usize> {
        self.0.get(name).copied()
    }

    /// Binds `name` to `size`; returns the earlier size if it was bound to a different one.
    pub fn bind(&mut self, name: &str, size: usize) -> Result<(), usize> {
        match self.0.get(name) {
            Some(&old) if old != size => Err(old),
            _ => {
                self.0.insert(name.to_string(), size);
                Ok(())
            }
        }
    }

    /// Every (symbol, size) pair, sorted by symbol name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, usize)> {
        self.0.iter().map(|(k, v)| (k.as_str(), *v))
    }
}
