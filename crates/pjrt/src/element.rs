//! Element types of device buffers (`PJRT_Buffer_Type`) and the host types that hold them.

use half::{bf16, f16};

/// The element type of a buffer. The names are StableHLO's (`f32`, `bf16`, `i32`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ElementType {
    /// Booleans (`i1`), one byte each. No [`Element`] type reads them: not every byte is a valid
    /// `bool`.
    Pred,
    /// Signed 8-bit integers (`i8`); host type `i8`.
    I8,
    /// Signed 16-bit integers (`i16`); host type `i16`.
    I16,
    /// Signed 32-bit integers (`i32`); host type `i32`.
    I32,
    /// Signed 64-bit integers (`i64`); host type `i64`.
    I64,
    /// Unsigned 8-bit integers (`ui8`); host type `u8`.
    U8,
    /// Unsigned 16-bit integers (`ui16`); host type `u16`.
    U16,
    /// Unsigned 32-bit integers (`ui32`); host type `u32`.
    U32,
    /// Unsigned 64-bit integers (`ui64`); host type `u64`.
    U64,
    /// IEEE 754 binary16 (`f16`); host type `half::f16`.
    F16,
    /// IEEE 754 binary32 (`f32`); host type `f32`.
    F32,
    /// IEEE 754 binary64 (`f64`); host type `f64`.
    F64,
    /// bfloat16 (`bf16`): f32's 8-bit exponent with a 7-bit mantissa; host type `half::bf16`.
    BF16,
    /// A type this binding has no host representation for, by its `PJRT_Buffer_Type` number.
    Other(i32),
}

impl ElementType {
    /// The `PJRT_Buffer_Type` value.
    pub fn to_raw(self) -> i32 {
        use ElementType::*;
        match self {
            Pred => 1,
            I8 => 2,
            I16 => 3,
            I32 => 4,
            I64 => 5,
            U8 => 6,
            U16 => 7,
            U32 => 8,
            U64 => 9,
            F16 => 10,
            F32 => 11,
            F64 => 12,
            BF16 => 13,
            Other(n) => n,
        }
    }

    /// The type for a `PJRT_Buffer_Type` value.
    pub fn from_raw(raw: i32) -> ElementType {
        use ElementType::*;
        match raw {
            1 => Pred,
            2 => I8,
            3 => I16,
            4 => I32,
            5 => I64,
            6 => U8,
            7 => U16,
            8 => U32,
            9 => U64,
            10 => F16,
            11 => F32,
            12 => F64,
            13 => BF16,
            n => Other(n),
        }
    }

    /// Bytes per element on the host, dense; `None` for types without a host representation here.
    pub fn size_in_bytes(self) -> Option<usize> {
        use ElementType::*;
        match self {
            Pred | I8 | U8 => Some(1),
            I16 | U16 | F16 | BF16 => Some(2),
            I32 | U32 | F32 => Some(4),
            I64 | U64 | F64 => Some(8),
            Other(_) => None,
        }
    }

    /// The type's name in StableHLO text (`i1` for predicates, `ui32` for unsigned).
    pub fn mlir_name(self) -> String {
        use ElementType::*;
        match self {
            Pred => "i1".into(),
            I8 => "i8".into(),
            I16 => "i16".into(),
            I32 => "i32".into(),
            I64 => "i64".into(),
            U8 => "ui8".into(),
            U16 => "ui16".into(),
            U32 => "ui32".into(),
            U64 => "ui64".into(),
            F16 => "f16".into(),
            F32 => "f32".into(),
            F64 => "f64".into(),
            BF16 => "bf16".into(),
            Other(n) => format!("PJRT_Buffer_Type({n})"),
        }
    }
}

impl std::fmt::Display for ElementType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.mlir_name())
    }
}

/// A host type whose values are a buffer's elements, bit for bit.
///
/// # Safety
/// Implementors are plain data of exactly `TYPE.size_in_bytes()` bytes, valid for every bit pattern.
pub unsafe trait Element: Copy + Default + Send + Sync + 'static {
    /// The buffer element type this host type holds.
    const TYPE: ElementType;
}

macro_rules! element {
    ($($t:ty => $e:ident),* $(,)?) => {
        $(
            // SAFETY: a plain number type of the element's size.
            unsafe impl Element for $t {
                const TYPE: ElementType = ElementType::$e;
            }
        )*
    };
}
element!(i8 => I8, i16 => I16, i32 => I32, i64 => I64, u8 => U8, u16 => U16, u32 => U32, u64 => U64,
    f16 => F16, f32 => F32, f64 => F64, bf16 => BF16);

/// The bytes of a slice of elements.
pub(crate) fn as_bytes<T: Element>(data: &[T]) -> &[u8] {
    // SAFETY: `Element` types are plain data; the byte view covers exactly the slice.
    unsafe { std::slice::from_raw_parts(data.as_ptr().cast::<u8>(), std::mem::size_of_val(data)) }
}
