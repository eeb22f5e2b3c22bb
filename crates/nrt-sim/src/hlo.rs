//! The simulator's second NEFF kind, *HLO NEFFs*: what the test double's compiler stand-in
//! (`neuronx-cc-sim`) makes from the serialized XLA `HloModuleProto` that `accelrt compile`
//! hands to `neuronx-cc --framework XLA`. The runtime side compiles the HLO with the XLA CPU
//! PJRT plugin at `nrt_load` and runs it at `nrt_execute`, so the program that executes is the
//! exported program itself, not a re-evaluation of the accelrt graph.
//!
//! Layout: [`HLO_MAGIC`] (16 bytes), the header's JSON length (u64, little-endian), the
//! [`HloNeffHeader`] JSON, then exactly `hlo_size` bytes of HLO proto.

use crate::neff::TensorDecl;
use accelrt_core::DType;
use accelrt_pjrt::{Client, CompileOptions, ElementType, LoadedExecutable, ProgramFormat};
use accelrt_stablehlo::Manifest;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::sync::Mutex;

/// First bytes of an HLO simulator NEFF (distinct from [`crate::MAGIC`], the graph kind's).
pub const HLO_MAGIC: &[u8; 16] = b"ACCELRT-SIM-HLO1";

/// Version of the [`HloNeffHeader`] layout this build writes and reads. A file with another
/// version is refused at load with `NRT_UNSUPPORTED_NEFF_VERSION`, as the runtime refuses a NEFF
/// from a compiler it does not support.
pub const HLO_NEFF_FORMAT: u32 = 1;

/// The compiler version the stand-in reports and records in every HLO NEFF it makes. It is shaped
/// like a neuronx-cc release (`2.21.0.0`) so version checks in accelrt's NEFF cache can be tested;
/// it is not a real compiler's version.
pub const COMPILER_VERSION: &str = "2.21.0.0";

/// The targets neuronx-cc compiles for (`--target`).
pub const TARGETS: [&str; 3] = ["inf2", "trn1", "trn2"];

/// Why an HLO NEFF could not be made, read or loaded.
#[derive(Debug, thiserror::Error)]
pub enum HloNeffError {
    /// The bytes are not a well-formed HLO simulator NEFF (wrong magic, truncated, bad header,
    /// HLO bytes that do not match the header's size or SHA-256).
    #[error("malformed HLO NEFF: {0}")]
    Malformed(String),
    /// The header's format is not [`HLO_NEFF_FORMAT`].
    #[error("HLO NEFF format {found} is not supported (this test double reads format {HLO_NEFF_FORMAT})")]
    UnsupportedVersion {
        /// The format the file's header states.
        found: u32,
    },
    /// `--target` is not one neuronx-cc knows.
    #[error("unknown target {0:?} (expected one of inf2, trn1, trn2)")]
    UnknownTarget(String),
    /// The manifest declares a tensor no NEFF tensor can hold (block-quantised types are
    /// dequantised by the exporter; one here means the manifest is wrong).
    #[error("{what} {name:?} has dtype {dtype:?}, which a NEFF tensor cannot hold")]
    UnsupportedDType {
        /// `argument` or `output` (from the manifest), or `tensor` (from a NEFF's header).
        what: &'static str,
        /// The argument's, output's or tensor's name.
        name: String,
        /// Its dtype: a block-quantised one.
        dtype: DType,
    },
    /// The HLO compiled, but its results differ from the manifest's outputs.
    #[error("the HLO does not match its manifest: {0}")]
    Mismatch(String),
    /// The XLA CPU plugin could not be loaded or refused the HLO (its message).
    #[error("XLA: {0}")]
    Pjrt(#[from] accelrt_pjrt::PjrtError),
    /// The header could not be written or read as JSON.
    #[error("HLO NEFF header: {0}")]
    Json(#[from] serde_json::Error),
}

/// The JSON header of an HLO NEFF: how it was "compiled" and what tensors it takes and gives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HloNeffHeader {
    /// [`HLO_NEFF_FORMAT`].
    pub format: u32,
    /// `inf2`, `trn1` or `trn2`.
    pub target: String,
    /// The compiler flags, exactly as given (recorded, not interpreted: XLA CPU runs the HLO as is).
    pub flags: Vec<String>,
    /// [`COMPILER_VERSION`] of the stand-in that made the file.
    pub compiler_version: String,
    /// `input0..input{N-1}`, in the manifest's argument order.
    pub inputs: Vec<TensorDecl>,
    /// `output0..output{M-1}`, in the manifest's output order.
    pub outputs: Vec<TensorDecl>,
    /// Bytes of HLO proto after the header.
    pub hlo_size: u64,
    /// Hex SHA-256 of the HLO proto, so a corrupted file is refused at load, not run.
    pub hlo_sha256: String,
}

/// A parsed HLO NEFF.
#[derive(Debug, Clone)]
pub struct HloNeff {
    /// The header, its format and HLO checksum already checked.
    pub header: HloNeffHeader,
    /// The serialized `HloModuleProto`.
    pub hlo: Vec<u8>,
}

/// The NEFF tensor name of the manifest's argument `i`.
///
/// neuronx-cc names the tensors of a NEFF compiled with `--framework XLA` after the HLO entry
/// computation's parameters and results by position: `input0, input1, …` and `output0, output1,
/// …`. This is what the test double uses; it is **believed** to match what the real compiler
/// does but has **not been verified on Neuron hardware** — a backend should read the names from
/// `nrt_get_model_tensor_info` and check them rather than assume them.
pub fn input_name(i: usize) -> String {
    format!("input{i}")
}

/// The NEFF tensor name of the manifest's output `j` (see [`input_name`]; same caveat).
pub fn output_name(j: usize) -> String {
    format!("output{j}")
}

fn check_dtype(what: &'static str, name: &str, dtype: DType) -> Result<(), HloNeffError> {
    element_type(dtype).map(|_| ()).ok_or_else(|| HloNeffError::UnsupportedDType { what, name: name.into(), dtype })
}

/// The PJRT element type holding `dtype`; `None` for block-quantised types.
pub(crate) fn element_type(dtype: DType) -> Option<ElementType> {
    Some(match dtype {
        DType::F32 => ElementType::F32,
        DType::F16 => ElementType::F16,
        DType::BF16 => ElementType::BF16,
        DType::I64 => ElementType::I64,
        DType::U32 => ElementType::U32,
        DType::U8 => ElementType::U8,
        DType::Quant(_) => return None,
    })
}

/// "Compiles" a serialized XLA `HloModuleProto` into an HLO simulator NEFF for `target`,
/// recording `flags` as given. The NEFF's tensors are named after the manifest's arguments and
/// outputs by position ([`input_name`], [`output_name`]) with their dtypes and shapes.
///
/// # Errors
///
/// [`HloNeffError::UnknownTarget`] for a target not in [`TARGETS`], [`HloNeffError::Malformed`]
/// for empty HLO, [`HloNeffError::UnsupportedDType`] for a block-quantised argument or output.
///
/// This only packages: it does not run XLA. [`validate_hlo`] checks that the HLO compiles and
/// matches the manifest (the stand-in compiler does both); `nrt_load` compiles it again.
pub fn compile_hlo(hlo: &[u8], manifest: &Manifest, target: &str, flags: &[String]) -> Result<Vec<u8>, HloNeffError> {
    if !TARGETS.contains(&target) {
        return Err(HloNeffError::UnknownTarget(target.into()));
    }
    if hlo.is_empty() {
        return Err(HloNeffError::Malformed("the HLO module is empty".into()));
    }
    for a in &manifest.arguments {
        check_dtype("argument", &a.name, a.dtype)?;
    }
    for o in &manifest.outputs {
        check_dtype("output", &o.name, o.dtype)?;
    }
    let header = HloNeffHeader {
        format: HLO_NEFF_FORMAT,
        target: target.into(),
        flags: flags.to_vec(),
        compiler_version: COMPILER_VERSION.into(),
        inputs: manifest
            .arguments
            .iter()
            .enumerate()
            .map(|(i, a)| TensorDecl { name: input_name(i), dtype: a.dtype, shape: a.shape.clone() })
            .collect(),
        outputs: manifest
            .outputs
            .iter()
            .enumerate()
            .map(|(j, o)| TensorDecl { name: output_name(j), dtype: o.dtype, shape: o.shape.clone() })
            .collect(),
        hlo_size: hlo.len() as u64,
        hlo_sha256: hex::encode(Sha256::digest(hlo)),
    };
    let json = serde_json::to_vec(&header)?;
    let mut out = Vec::with_capacity(24 + json.len() + hlo.len());
    out.extend_from_slice(HLO_MAGIC);
    out.extend((json.len() as u64).to_le_bytes());
    out.extend(json);
    out.extend_from_slice(hlo);
    Ok(out)
}

impl HloNeff {
    /// True when `bytes` start with [`HLO_MAGIC`] (the rest may still be malformed).
    pub fn is_hlo_neff(bytes: &[u8]) -> bool {
        bytes.starts_with(HLO_MAGIC)
    }

    /// Reads an HLO NEFF, checking its layout, format version and HLO checksum.
    ///
    /// # Errors
    ///
    /// [`HloNeffError::Malformed`] for a wrong magic, truncation, or HLO bytes that differ from the
    /// header's size or SHA-256; [`HloNeffError::UnsupportedVersion`]; [`HloNeffError::Json`] for
    /// a header that does not parse; [`HloNeffError::UnsupportedDType`].
    pub fn parse(bytes: &[u8]) -> Result<HloNeff, HloNeffError> {
        let malformed = |m: &str| HloNeffError::Malformed(m.into());
        if !Self::is_hlo_neff(bytes) {
            return Err(malformed("no HLO NEFF magic"));
        }
        let len = bytes.get(16..24).ok_or_else(|| malformed("truncated before the header length"))?;
        let len = u64::from_le_bytes(len.try_into().expect("8 bytes"));
        let end = usize::try_from(len).ok().and_then(|l| l.checked_add(24)).filter(|&e| e <= bytes.len());
        let end = end.ok_or_else(|| malformed("truncated header"))?;
        // Read the version alone first: a newer header may not parse as this one.
        #[derive(Deserialize)]
        struct Version {
            format: u32,
        }
        let version: Version = serde_json::from_slice(&bytes[24..end])?;
        if version.format != HLO_NEFF_FORMAT {
            return Err(HloNeffError::UnsupportedVersion { found: version.format });
        }
        let header: HloNeffHeader = serde_json::from_slice(&bytes[24..end])?;
        let hlo = &bytes[end..];
        if hlo.len() as u64 != header.hlo_size {
            return Err(HloNeffError::Malformed(format!(
                "{} bytes of HLO where the header says {}",
                hlo.len(),
                header.hlo_size
            )));
        }
        if hex::encode(Sha256::digest(hlo)) != header.hlo_sha256 {
            return Err(malformed("the HLO bytes do not match the header's SHA-256"));
        }
        for d in header.inputs.iter().chain(&header.outputs) {
            check_dtype("tensor", &d.name, d.dtype)?;
        }
        Ok(HloNeff { header, hlo: hlo.to_vec() })
    }

    /// Compiles the HLO with the process's XLA CPU client and checks its results against the
    /// header's outputs (count, element type, shape).
    ///
    /// # Errors
    ///
    /// [`HloNeffError::Pjrt`] when the plugin cannot be loaded or refuses the HLO,
    /// [`HloNeffError::Mismatch`] when the results differ from the header.
    pub fn load(&self) -> Result<LoadedExecutable, HloNeffError> {
        let outputs: Vec<(DType, Vec<usize>)> =
            self.header.outputs.iter().map(|d| (d.dtype, d.shape.clone())).collect();
        compile_checked(&self.hlo, &outputs)
    }
}

/// Checks that `hlo` compiles with XLA CPU and that its results are the manifest's outputs in
/// number, element type and shape: what the stand-in compiler checks before writing a NEFF, so a
/// broken export fails at compile time, as it would with neuronx-cc.
///
/// # Errors
///
/// As [`HloNeff::load`].
pub fn validate_hlo(hlo: &[u8], manifest: &Manifest) -> Result<(), HloNeffError> {
    let outputs: Vec<(DType, Vec<usize>)> = manifest.outputs.iter().map(|o| (o.dtype, o.shape.clone())).collect();
    compile_checked(hlo, &outputs).map(drop)
}

fn compile_checked(hlo: &[u8], outputs: &[(DType, Vec<usize>)]) -> Result<LoadedExecutable, HloNeffError> {
    let exe = client()?.compile(hlo, ProgramFormat::Hlo, &CompileOptions::default())?;
    if exe.num_outputs() != outputs.len() {
        return Err(HloNeffError::Mismatch(format!(
            "the HLO has {} results, the manifest {} outputs",
            exe.num_outputs(),
            outputs.len()
        )));
    }
    for (j, ((dtype, shape), ty)) in outputs.iter().zip(exe.output_types()).enumerate() {
        if element_type(*dtype) != Some(*ty) {
            return Err(HloNeffError::Mismatch(format!("result {j} is {ty}, the manifest says {dtype:?}")));
        }
        if let Some(dims) = exe.output_dims().and_then(|d| d.get(j)) {
            let want: Vec<i64> = shape.iter().map(|&s| s as i64).collect();
            if *dims != want {
                return Err(HloNeffError::Mismatch(format!(
                    "result {j} has shape {dims:?}, the manifest says {shape:?}"
                )));
            }
        }
    }
    Ok(exe)
}

/// The process's XLA CPU client (one per process, like the one runtime a process may open), made
/// on first use. A failure is not cached: a later call tries again.
pub(crate) fn client() -> Result<Client, HloNeffError> {
    static CLIENT: Mutex<Option<Client>> = Mutex::new(None);
    let mut slot = CLIENT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(c) = &*slot {
        return Ok(c.clone());
    }
    let client = Client::new(&accelrt_pjrt::xla_cpu_plugin()?)?;
    *slot = Some(client.clone());
    Ok(client)
}
