//! The MLIR text writer: typed SSA values and one helper per StableHLO op used.
//!
//! Every op is written in MLIR's generic form (`"stablehlo.add"(%a, %b) : (…) -> …`), which every
//! StableHLO parser accepts whatever its pretty-printing syntax; float constants are written as
//! their exact bit patterns (hex), so no value changes on the way through text.

use std::fmt::{self, Write};

/// Element types of the tensors in an exported module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Elem {
    F32,
    F16,
    BF16,
    I64,
    I32,
    U32,
    U8,
    /// Booleans (comparison results).
    I1,
}

impl Elem {
    pub fn mlir(self) -> &'static str {
        match self {
            Elem::F32 => "f32",
            Elem::F16 => "f16",
            Elem::BF16 => "bf16",
            Elem::I64 => "i64",
            Elem::I32 => "i32",
            Elem::U32 => "ui32",
            Elem::U8 => "ui8",
            Elem::I1 => "i1",
        }
    }

    /// The most negative finite value (a score that softmax turns into exactly 0).
    pub fn lowest(self) -> f64 {
        match self {
            Elem::F16 => -(half::f16::MAX.to_f64()),
            Elem::BF16 => -(half::bf16::MAX.to_f64()),
            _ => -(f32::MAX as f64),
        }
    }

    /// `value` as an MLIR literal of this type: floats by their bit pattern, so text is exact.
    fn literal(self, value: f64) -> String {
        match self {
            Elem::F32 => format!("0x{:08X}", (value as f32).to_bits()),
            Elem::F16 => format!("0x{:04X}", half::f16::from_f64(value).to_bits()),
            Elem::BF16 => format!("0x{:04X}", half::bf16::from_f64(value).to_bits()),
            Elem::I1 => (value != 0.0).to_string(),
            _ => format!("{}", value as i64),
        }
    }
}

/// A tensor type: element type and static shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ty {
    pub elem: Elem,
    pub shape: Vec<usize>,
}

impl Ty {
    pub fn new(elem: Elem, shape: &[usize]) -> Ty {
        Ty { elem, shape: shape.to_vec() }
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }
}

impl fmt::Display for Ty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("tensor<")?;
        for d in &self.shape {
            write!(f, "{d}x")?;
        }
        write!(f, "{}>", self.elem.mlir())
    }
}

/// An SSA value of the function being written.
#[derive(Debug, Clone)]
pub(crate) struct V {
    pub name: String,
    pub ty: Ty,
}

impl V {
    pub fn shape(&self) -> &[usize] {
        &self.ty.shape
    }

    pub fn elem(&self) -> Elem {
        self.ty.elem
    }
}

/// Comparison directions of `stablehlo.compare`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Cmp {
    Le,
    Ne,
    Eq,
    Gt,
}

/// `[1, 2, 3]` as an `array<i64: …>` attribute.
fn i64_array(values: &[usize]) -> String {
    if values.is_empty() {
        return "array<i64>".into();
    }
    let v: Vec<String> = values.iter().map(usize::to_string).collect();
    format!("array<i64: {}>", v.join(", "))
}

/// `[1, 2]` as a plain list, for dimension-number attributes.
fn list(values: &[usize]) -> String {
    let v: Vec<String> = values.iter().map(usize::to_string).collect();
    format!("[{}]", v.join(", "))
}

/// Writes the body of one function. Helpers check what StableHLO would reject (shapes that do not
/// line up) and return `Err` with a message, so a bad lowering fails here, naming the node.
#[derive(Default)]
pub(crate) struct Emitter {
    body: String,
    next: usize,
}

pub(crate) type R<T> = Result<T, String>;

impl Emitter {
    /// The text written so far.
    pub fn body(&self) -> &str {
        &self.body
    }

    pub fn comment(&mut self, text: &str) {
        let _ = writeln!(self.body, "    // {}", text.replace('\n', " "));
    }

    /// Writes `"op"(operands) {attrs} : (types) -> result` and returns the result.
    pub fn op(&mut self, op: &str, operands: &[&V], attrs: &str, ty: Ty) -> V {
        let name = format!("%v{}", self.next);
        self.next += 1;
        let args: Vec<&str> = operands.iter().map(|v| v.name.as_str()).collect();
        let types: Vec<String> = operands.iter().map(|v| v.ty.to_string()).collect();
        let attrs = if attrs.is_empty() { String::new() } else { format!(" {{{attrs}}}") };
        let _ =
            writeln!(self.body, "    {name} = \"{op}\"({}){attrs} : ({}) -> {ty}", args.join(", "), types.join(", "));
        V { name, ty }
    }

    /// A scalar constant.
    pub fn scalar(&mut self, elem: Elem, value: f64) -> V {
        let ty = Ty::new(elem, &[]);
        self.op("stablehlo.constant", &[], &format!("value = dense<{}> : {ty}", elem.literal(value)), ty)
    }

    /// A constant of `shape` with every element `value`.
    pub fn splat(&mut self, elem: Elem, value: f64, shape: &[usize]) -> V {
        let s = self.scalar(elem, value);
        self.broadcast_in_dim(&s, shape, &[]).expect("a scalar broadcasts to any shape")
    }

    /// A 1-D constant.
    pub fn vector(&mut self, elem: Elem, values: &[f64]) -> V {
        let ty = Ty::new(elem, &[values.len()]);
        // A hex literal for a whole tensor means its raw bytes, so elements are written in decimal,
        // with enough digits to be exact (see `float_text`).
        let items: Vec<String> = values.iter().map(|&v| float_text(elem, v)).collect();
        self.op("stablehlo.constant", &[], &format!("value = dense<[{}]> : {ty}", items.join(", ")), ty)
    }

    /// `broadcast_in_dim`: operand axis i becomes result axis dims[i] (size 1 or equal).
    pub fn broadcast_in_dim(&mut self, x: &V, shape: &[usize], dims: &[usize]) -> R<V> {
        if dims.len() != x.ty.rank()
            || dims.iter().zip(x.shape()).any(|(&d, &n)| d >= shape.len() || (n != 1 && n != shape[d]))
        {
            return Err(format!("cannot broadcast {} to {shape:?} along {dims:?}", x.ty));
        }
        if x.shape() == shape && dims.iter().enumerate().all(|(i, &d)| i == d) {
            return Ok(x.clone());
        }
        Ok(self.op(
            "stablehlo.broadcast_in_dim",
            &[x],
            &format!("broadcast_dimensions = {}", i64_array(dims)),
            Ty::new(x.elem(), shape),
        ))
    }

    /// NumPy broadcasting of `x` to `shape` (axes aligned on the right).
    pub fn broadcast_to(&mut self, x: &V, shape: &[usize]) -> R<V> {
        let offset =
            shape.len().checked_sub(x.ty.rank()).ok_or_else(|| format!("cannot broadcast {} to {shape:?}", x.ty))?;
        let dims: Vec<usize> = (offset..shape.len()).collect();
        self.broadcast_in_dim(x, shape, &dims)
    }

    /// An element-wise op on operands of one type (`add`, `multiply`, `maximum`, …).
    pub fn binary(&mut self, op: &str, a: &V, b: &V) -> R<V> {
        if a.ty != b.ty {
            return Err(format!("{op} of {} and {}", a.ty, b.ty));
        }
        Ok(self.op(&format!("stablehlo.{op}"), &[a, b], "", a.ty.clone()))
    }

    /// `binary` after broadcasting a scalar constant `value` to `a`'s type.
    pub fn binary_const(&mut self, op: &str, a: &V, value: f64) -> R<V> {
        let c = self.splat(a.elem(), value, a.shape());
        self.binary(op, a, &c)
    }

    /// An element-wise op of one operand (`exponential`, `tanh`, `rsqrt`, …).
    pub fn unary(&mut self, op: &str, x: &V) -> V {
        self.op(op_name(op), &[x], "", x.ty.clone())
    }

    /// `convert` to `elem` (nothing when it already is).
    pub fn convert(&mut self, x: &V, elem: Elem) -> V {
        if x.elem() == elem {
            return x.clone();
        }
        self.op("stablehlo.convert", &[x], "", Ty::new(elem, x.shape()))
    }

    pub fn reshape(&mut self, x: &V, shape: &[usize]) -> R<V> {
        if x.shape().iter().product::<usize>() != shape.iter().product::<usize>() {
            return Err(format!("cannot reshape {} to {shape:?}", x.ty));
        }
        if x.shape() == shape {
            return Ok(x.clone());
        }
        Ok(self.op("stablehlo.reshape", &[x], "", Ty::new(x.elem(), shape)))
    }

    /// Result axis i is operand axis perm[i].
    pub fn transpose(&mut self, x: &V, perm: &[usize]) -> V {
        let shape: Vec<usize> = perm.iter().map(|&p| x.shape()[p]).collect();
        self.op("stablehlo.transpose", &[x], &format!("permutation = {}", i64_array(perm)), Ty::new(x.elem(), &shape))
    }

    /// `x[start..limit]` along every axis (stride 1).
    pub fn slice(&mut self, x: &V, start: &[usize], limit: &[usize]) -> V {
        let shape: Vec<usize> = start.iter().zip(limit).map(|(s, l)| l - s).collect();
        let strides = vec![1; start.len()];
        let attrs = format!(
            "start_indices = {}, limit_indices = {}, strides = {}",
            i64_array(start),
            i64_array(limit),
            i64_array(&strides)
        );
        self.op("stablehlo.slice", &[x], &attrs, Ty::new(x.elem(), &shape))
    }

    /// `x[start..end]` along one axis.
    pub fn slice_axis(&mut self, x: &V, axis: usize, start: usize, end: usize) -> V {
        let mut from = vec![0; x.ty.rank()];
        let mut to = x.shape().to_vec();
        from[axis] = start;
        to[axis] = end;
        self.slice(x, &from, &to)
    }

    pub fn concatenate(&mut self, xs: &[&V], axis: usize) -> R<V> {
        let first = xs.first().ok_or("concatenate of nothing")?;
        let mut shape = first.shape().to_vec();
        shape[axis] = xs.iter().map(|x| x.shape()[axis]).sum();
        for x in xs {
            let same = x.elem() == first.elem()
                && x.ty.rank() == first.ty.rank()
                && x.shape().iter().zip(first.shape()).enumerate().all(|(i, (a, b))| i == axis || a == b);
            if !same {
                return Err(format!("cannot concatenate {} with {} along {axis}", x.ty, first.ty));
            }
        }
        if xs.len() == 1 {
            return Ok((*first).clone());
        }
        Ok(self.op("stablehlo.concatenate", xs, &format!("dimension = {axis} : i64"), Ty::new(first.elem(), &shape)))
    }

    /// A reduction over `dims` with `add` or `maximum`, starting from `init`.
    pub fn reduce(&mut self, x: &V, dims: &[usize], op: &str, init: f64) -> V {
        let init = self.scalar(x.elem(), init);
        let scalar = Ty::new(x.elem(), &[]);
        let shape: Vec<usize> =
            x.shape().iter().enumerate().filter(|(i, _)| !dims.contains(i)).map(|(_, &n)| n).collect();
        let name = format!("%v{}", self.next);
        self.next += 1;
        let ty = Ty::new(x.elem(), &shape);
        let _ = writeln!(self.body, "    {name} = \"stablehlo.reduce\"({}, {}) ({{", x.name, init.name);
        let _ = writeln!(self.body, "    ^bb0(%a: {scalar}, %b: {scalar}):");
        let _ = writeln!(self.body, "      %r = \"stablehlo.{op}\"(%a, %b) : ({scalar}, {scalar}) -> {scalar}");
        let _ = writeln!(self.body, "      \"stablehlo.return\"(%r) : ({scalar}) -> ()");
        let _ = writeln!(self.body, "    }}) {{dimensions = {}}} : ({}, {scalar}) -> {ty}", i64_array(dims), x.ty);
        V { name, ty }
    }

    /// Sum over the last axis, kept as an axis of size 1.
    pub fn sum_last_keep(&mut self, x: &V) -> R<V> {
        self.reduce_last_keep(x, "add", 0.0)
    }

    /// Maximum over the last axis, kept as an axis of size 1.
    pub fn max_last_keep(&mut self, x: &V) -> R<V> {
        self.reduce_last_keep(x, "maximum", f64::NEG_INFINITY)
    }

    fn reduce_last_keep(&mut self, x: &V, op: &str, init: f64) -> R<V> {
        let last = x.ty.rank() - 1;
        let r = self.reduce(x, &[last], op, init);
        let mut keep = x.shape().to_vec();
        keep[last] = 1;
        self.reshape(&r, &keep)
    }

    /// `dot_general` with explicit batching and contracting axes; the result is
    /// [batch…, a's free axes…, b's free axes…], computed at the highest precision.
    pub fn dot_general(&mut self, a: &V, b: &V, batch: (&[usize], &[usize]), contract: (&[usize], &[usize])) -> R<V> {
        let dims_ok = batch.0.len() == batch.1.len()
            && contract.0.len() == contract.1.len()
            && batch.0.iter().zip(batch.1).all(|(&i, &j)| a.shape()[i] == b.shape()[j])
            && contract.0.iter().zip(contract.1).all(|(&i, &j)| a.shape()[i] == b.shape()[j]);
        if !dims_ok || a.elem() != b.elem() {
            return Err(format!("dot_general of {} and {} over {batch:?} / {contract:?}", a.ty, b.ty));
        }
        let free = |v: &V, used: &[usize], other: &[usize]| -> Vec<usize> {
            (0..v.ty.rank()).filter(|i| !used.contains(i) && !other.contains(i)).map(|i| v.shape()[i]).collect()
        };
        let mut shape: Vec<usize> = batch.0.iter().map(|&i| a.shape()[i]).collect();
        shape.extend(free(a, batch.0, contract.0));
        shape.extend(free(b, batch.1, contract.1));
        let attrs = format!(
            "dot_dimension_numbers = #stablehlo.dot<lhs_batching_dimensions = {}, rhs_batching_dimensions = {}, \
             lhs_contracting_dimensions = {}, rhs_contracting_dimensions = {}>, \
             precision_config = [#stablehlo<precision HIGHEST>, #stablehlo<precision HIGHEST>]",
            list(batch.0),
            list(batch.1),
            list(contract.0),
            list(contract.1)
        );
        Ok(self.op("stablehlo.dot_general", &[a, b], &attrs, Ty::new(a.elem(), &shape)))
    }

    /// Indices 0, 1, … along `axis` of `shape`.
    pub fn iota(&mut self, elem: Elem, shape: &[usize], axis: usize) -> V {
        self.op("stablehlo.iota", &[], &format!("iota_dimension = {axis} : i64"), Ty::new(elem, shape))
    }

    pub fn compare(&mut self, a: &V, b: &V, cmp: Cmp) -> R<V> {
        if a.ty != b.ty {
            return Err(format!("compare of {} and {}", a.ty, b.ty));
        }
        let dir = match cmp {
            Cmp::Le => "LE",
            Cmp::Ne => "NE",
            Cmp::Eq => "EQ",
            Cmp::Gt => "GT",
        };
        let attrs = format!("comparison_direction = #stablehlo<comparison_direction {dir}>");
        Ok(self.op("stablehlo.compare", &[a, b], &attrs, Ty::new(Elem::I1, a.shape())))
    }

    pub fn select(&mut self, pred: &V, on_true: &V, on_false: &V) -> R<V> {
        if on_true.ty != on_false.ty || pred.shape() != on_true.shape() || pred.elem() != Elem::I1 {
            return Err(format!("select({}, {}, {})", pred.ty, on_true.ty, on_false.ty));
        }
        Ok(self.op("stablehlo.select", &[pred, on_true, on_false], "", on_true.ty.clone()))
    }

    /// The block of `sizes` starting at the (scalar i32) `start` indices.
    pub fn dynamic_slice(&mut self, x: &V, start: &[&V], sizes: &[usize]) -> V {
        let mut operands = vec![x];
        operands.extend_from_slice(start);
        self.op(
            "stablehlo.dynamic_slice",
            &operands,
            &format!("slice_sizes = {}", i64_array(sizes)),
            Ty::new(x.elem(), sizes),
        )
    }

    /// `x` with `update` written at the (scalar i32) `start` indices.
    pub fn dynamic_update_slice(&mut self, x: &V, update: &V, start: &[&V]) -> V {
        let mut operands = vec![x, update];
        operands.extend_from_slice(start);
        self.op("stablehlo.dynamic_update_slice", &operands, "", x.ty.clone())
    }

    /// Rows of `table` ([rows, width]) at integer `ids` (any shape): ids.shape + [width].
    pub fn gather_rows(&mut self, table: &V, ids: &V) -> V {
        let r = ids.ty.rank();
        let width = table.shape()[1];
        let mut shape = ids.shape().to_vec();
        shape.push(width);
        let attrs = format!(
            "dimension_numbers = #stablehlo.gather<offset_dims = [{r}], collapsed_slice_dims = [0], \
             start_index_map = [0], index_vector_dim = {r}>, slice_sizes = {}, indices_are_sorted = false",
            i64_array(&[1, width])
        );
        self.op("stablehlo.gather", &[table, ids], &attrs, Ty::new(table.elem(), &shape))
    }

    /// A zero [rows, width] matrix with each row of `updates` ([n, width]) added into row `ids[i]`
    /// (`ids` [n], i32; repeated ids accumulate).
    pub fn scatter_add_rows(&mut self, ids: &V, updates: &V, rows: usize) -> R<V> {
        if ids.ty.rank() != 1 || updates.ty.rank() != 2 || updates.shape()[0] != ids.shape()[0] {
            return Err(format!("scatter of {} at {}", updates.ty, ids.ty));
        }
        let width = updates.shape()[1];
        let zeros = self.splat(updates.elem(), 0.0, &[rows, width]);
        let scalar = Ty::new(updates.elem(), &[]);
        let name = format!("%v{}", self.next);
        self.next += 1;
        let ty = Ty::new(updates.elem(), &[rows, width]);
        let _ = writeln!(
            self.body,
            "    {name} = \"stablehlo.scatter\"({}, {}, {}) ({{",
            zeros.name, ids.name, updates.name
        );
        let _ = writeln!(self.body, "    ^bb0(%a: {scalar}, %b: {scalar}):");
        let _ = writeln!(self.body, "      %r = \"stablehlo.add\"(%a, %b) : ({scalar}, {scalar}) -> {scalar}");
        let _ = writeln!(self.body, "      \"stablehlo.return\"(%r) : ({scalar}) -> ()");
        let _ = writeln!(
            self.body,
            "    }}) {{scatter_dimension_numbers = #stablehlo.scatter<update_window_dims = [1], \
             inserted_window_dims = [0], scatter_dims_to_operand_dims = [0], index_vector_dim = 1>, \
             indices_are_sorted = false, unique_indices = false}} : ({}, {}, {}) -> {ty}",
            zeros.ty, ids.ty, updates.ty
        );
        Ok(V { name, ty })
    }

    /// Element `index` of a vector as a scalar.
    pub fn element(&mut self, x: &V, index: &[usize]) -> R<V> {
        let limit: Vec<usize> = index.iter().map(|i| i + 1).collect();
        let one = self.slice(x, index, &limit);
        self.reshape(&one, &[])
    }
}

fn op_name(op: &str) -> &str {
    match op {
        "erf" => "chlo.erf",
        "exponential" => "stablehlo.exponential",
        "tanh" => "stablehlo.tanh",
        "logistic" => "stablehlo.logistic",
        "rsqrt" => "stablehlo.rsqrt",
        "sqrt" => "stablehlo.sqrt",
        "sine" => "stablehlo.sine",
        "cosine" => "stablehlo.cosine",
        "negate" => "stablehlo.negate",
        "log" => "stablehlo.log",
        other => panic!("no unary op `{other}` in the emitter"),
    }
}

/// A float in a form MLIR's lexer takes as a float literal (digits, a dot, an optional exponent).
fn float_text(elem: Elem, value: f64) -> String {
    let v = match elem {
        Elem::F32 => value as f32 as f64,
        Elem::F16 => half::f16::from_f64(value).to_f64(),
        Elem::BF16 => half::bf16::from_f64(value).to_f64(),
        _ => return format!("{}", value as i64),
    };
    // 17 significant digits identify any f64, hence any value of a narrower type, exactly.
    format!("{v:.16e}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_and_literals() {
        assert_eq!(Ty::new(Elem::F32, &[2, 3]).to_string(), "tensor<2x3xf32>");
        assert_eq!(Ty::new(Elem::U32, &[]).to_string(), "tensor<ui32>");
        assert_eq!(Elem::F32.literal(1.0), "0x3F800000");
        assert_eq!(Elem::BF16.literal(1.0), "0x3F80");
        assert_eq!(float_text(Elem::F32, 0.5), "5.0000000000000000e-1");
    }

    #[test]
    fn helpers_refuse_shapes_stablehlo_would_reject() {
        let mut e = Emitter::default();
        let x = e.iota(Elem::F32, &[2, 3], 0);
        assert!(e.broadcast_to(&x, &[4, 3]).is_err());
        assert!(e.reshape(&x, &[5]).is_err());
        let y = e.iota(Elem::F32, &[4, 3], 0);
        assert!(e.dot_general(&x, &y, (&[], &[]), (&[1], &[0])).is_err());
        assert!(e.binary("add", &x, &y).is_err());
    }
}
