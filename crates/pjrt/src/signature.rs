//! The parameter types of a StableHLO module's `@main`, read from its MLIR text.
//!
//! The C API reports a compiled program's outputs but not its parameters, and the XLA CPU plugin
//! checks an argument only by byte size: an `i32` buffer passed for an `f32` parameter, or a 3x2
//! buffer for a 2x3 one, runs silently. Reading the signature lets `execute` refuse those with a
//! typed error. Only the text form is read; where it cannot be (bytecode, dynamic dimensions,
//! unusual types) no check is made and the plugin's own checks remain.

use crate::element::ElementType;

/// A ranked tensor type with static dimensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorType {
    /// The element type.
    pub element_type: ElementType,
    /// The dimensions, outermost first; empty for a scalar. All are static (≥ 0): a type with a
    /// dynamic dimension (`?`) is never read into this struct.
    pub dims: Vec<i64>,
}

impl std::fmt::Display for TensorType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("tensor<")?;
        for d in &self.dims {
            write!(f, "{d}x")?;
        }
        write!(f, "{}>", self.element_type)
    }
}

/// The parameters of `@main`, or `None` if the text does not state them in a form read here.
pub(crate) fn main_parameters(mlir: &str) -> Option<Vec<TensorType>> {
    let start = mlir.match_indices("@main(").find(|(at, _)| {
        let line_start = mlir[..*at].rfind('\n').map_or(0, |i| i + 1);
        mlir[line_start..*at].contains("func.func")
    })?;
    let args = &mlir[start.0 + "@main(".len()..];
    let end = closing(args, ')')?;
    split_top_level(&args[..end], ',').into_iter().filter(|a| !a.trim().is_empty()).map(parse_argument).collect()
}

/// `%name: tensor<…> {attributes} loc(…)` → the tensor type.
fn parse_argument(arg: &str) -> Option<TensorType> {
    let ty = arg.split_once(':')?.1.trim_start();
    let inner = ty.strip_prefix("tensor<")?;
    let inner = &inner[..closing(inner, '>')?];
    // An encoding follows a top-level comma (`tensor<4xf32, #enc>`); the shape comes first.
    let shape = split_top_level(inner, ',').into_iter().next()?.trim();
    let mut parts: Vec<&str> = shape.split('x').collect();
    let element_type = element_type(parts.pop()?)?;
    let dims = parts.iter().map(|d| d.parse::<i64>().ok().filter(|&d| d >= 0)).collect::<Option<Vec<_>>>()?;
    Some(TensorType { element_type, dims })
}

fn element_type(name: &str) -> Option<ElementType> {
    use ElementType::*;
    Some(match name {
        "i1" => Pred,
        "i8" | "si8" => I8,
        "i16" | "si16" => I16,
        "i32" | "si32" => I32,
        "i64" | "si64" => I64,
        "ui8" => U8,
        "ui16" => U16,
        "ui32" => U32,
        "ui64" => U64,
        "f16" => F16,
        "f32" => F32,
        "f64" => F64,
        "bf16" => BF16,
        _ => return None,
    })
}

/// The index of the `close` bracket that ends a text whose opening bracket was just consumed.
fn closing(text: &str, close: char) -> Option<usize> {
    let mut depth = 0i32;
    let mut in_string = false;
    let mut prev = '\0';
    for (i, c) in text.char_indices() {
        if in_string {
            in_string = !(c == '"' && prev != '\\');
        } else if c == '"' {
            in_string = true;
        } else if depth == 0 && c == close {
            return Some(i);
        } else if matches!(c, '(' | '<' | '{' | '[') {
            depth += 1;
        } else if matches!(c, ')' | '>' | '}' | ']') && !(c == '>' && prev == '-') {
            depth -= 1;
        }
        prev = c;
    }
    None
}

/// Splits at `sep` outside brackets and strings.
fn split_top_level(text: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut in_string = false;
    let mut prev = '\0';
    let mut start = 0;
    for (i, c) in text.char_indices() {
        if in_string {
            in_string = !(c == '"' && prev != '\\');
        } else if c == '"' {
            in_string = true;
        } else if depth == 0 && c == sep {
            parts.push(&text[start..i]);
            start = i + c.len_utf8();
        } else if matches!(c, '(' | '<' | '{' | '[') {
            depth += 1;
        } else if matches!(c, ')' | '>' | '}' | ']') && !(c == '>' && prev == '-') {
            depth -= 1;
        }
        prev = c;
    }
    parts.push(&text[start..]);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(element_type: ElementType, dims: &[i64]) -> TensorType {
        TensorType { element_type, dims: dims.to_vec() }
    }

    #[test]
    fn reads_main_parameters() {
        let text = r#"module @m attributes {mhlo.num_partitions = 1 : i32} {
  func.func private @helper(%x: tensor<9xf64>) -> tensor<9xf64> { return %x : tensor<9xf64> }
  func.func public @main(%arg0: tensor<2x3xf32> {jax.arg_info = "a, b", mhlo.sharding = "{replicated}"},
                         %arg1: tensor<i32>, %arg2: tensor<4xbf16, #enc> loc("x")) -> (tensor<2x3xf32>) {
    return %arg0 : tensor<2x3xf32>
  }
}"#;
        assert_eq!(
            main_parameters(text),
            Some(vec![t(ElementType::F32, &[2, 3]), t(ElementType::I32, &[]), t(ElementType::BF16, &[4])])
        );
        assert_eq!(main_parameters("func.func @main() -> tensor<f32> {"), Some(vec![]));
    }

    #[test]
    fn unreadable_signatures_are_not_checked() {
        assert_eq!(main_parameters("func.func @main(%a: tensor<?x3xf32>) -> tensor<f32>"), None);
        assert_eq!(main_parameters("func.func @main(%a: tensor<3xcomplex<f32>>)"), None);
        assert_eq!(main_parameters("func.func @main(%a: tuple<tensor<3xf32>>)"), None);
        assert_eq!(main_parameters("func.func @other(%a: tensor<3xf32>)"), None);
        assert_eq!(main_parameters("func.func @main(%a: tensor<3xf32>"), None);
    }
}
