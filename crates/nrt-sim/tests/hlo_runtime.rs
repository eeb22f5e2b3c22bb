//! HLO NEFFs through the simulator's C functions: compile_hlo → nrt_load → tensor info →
//! nrt_execute with a KV cache bound as both input and output across steps; bad NEFFs, bad tensor
//! sets, injected failures, non-finite outputs; live objects back to zero.

mod common;

use accelrt_core::DType;
use accelrt_stablehlo::{ArgumentRole, OutputRole};
use common::*;
use nrt_sim::{Model, Tensor, TensorSet};
use std::ffi::{c_char, CStr, CString};
use std::ptr::null_mut;

const SUCCESS: i32 = 0;
const FAILURE: i32 = 1;
const INVALID: i32 = 2;
const UNSUPPORTED_NEFF_VERSION: i32 = 10;
const EXEC_BAD_INPUT: i32 = 1002;
const EXEC_COMPLETED_WITH_NUM_ERR: i32 = 1003;

fn inject(call: &str, status: i32, times: u32) {
    let c = CString::new(call).unwrap();
    assert_eq!(unsafe { nrt_sim::nrt_sim_inject_failure(c.as_ptr(), status, times) }, SUCCESS);
}

fn load(neff: &[u8]) -> Result<*mut Model, i32> {
    let mut model = null_mut();
    match unsafe { nrt_sim::nrt_load(neff.as_ptr().cast(), neff.len(), 0, 1, &mut model) } {
        SUCCESS => Ok(model),
        status => {
            assert!(model.is_null());
            Err(status)
        }
    }
}

fn unload(model: *mut Model) {
    assert_eq!(unsafe { nrt_sim::nrt_unload(model) }, SUCCESS);
}

/// The runtime's `nrt_tensor_info_t`, as the binding declares it (the simulator's fields are private).
#[repr(C)]
struct Info {
    name: [c_char; 256],
    usage: u32,
    size: usize,
    dtype: u32,
    shape: *mut u32,
    ndim: u32,
}

#[repr(C)]
struct InfoArray {
    count: u64,
    infos: [Info; 0],
}

/// (name, usage, size, dtype code, shape) of every tensor of `model`.
fn tensor_info(model: *mut Model) -> Vec<(String, u32, usize, u32, Vec<u32>)> {
    let mut array = null_mut();
    assert_eq!(unsafe { nrt_sim::nrt_get_model_tensor_info(model, &mut array) }, SUCCESS);
    let a = array as *mut InfoArray;
    let mut out = Vec::new();
    unsafe {
        for i in 0..(*a).count as usize {
            let e = &*(*a).infos.as_ptr().add(i);
            let name = CStr::from_ptr(e.name.as_ptr()).to_string_lossy().into_owned();
            let shape = std::slice::from_raw_parts(e.shape, e.ndim as usize).to_vec();
            out.push((name, e.usage, e.size, e.dtype, shape));
        }
        assert_eq!(nrt_sim::nrt_free_model_tensor_info(array), SUCCESS);
    }
    out
}

fn tensor(size: usize, data: Option<&[u8]>) -> *mut Tensor {
    let mut t = null_mut();
    assert_eq!(unsafe { nrt_sim::nrt_tensor_allocate(0, 0, size, c"t".as_ptr(), &mut t) }, SUCCESS);
    if let Some(d) = data {
        write(t, d);
    }
    t
}

/// The KV model's tensors: x, w, the cache (zeros), pos, s.
struct Kv {
    x: *mut Tensor,
    w: *mut Tensor,
    cache: *mut Tensor,
    pos: *mut Tensor,
    s: *mut Tensor,
}

impl Kv {
    fn new() -> Kv {
        Kv {
            x: tensor(8, None),
            w: tensor(8, Some(&f32_bytes(&[1.0, 10.0]))),
            cache: tensor(24, None),
            pos: tensor(8, None),
            s: tensor(8, None),
        }
    }

    /// The input set binds the cache as input2 and the output set binds the same tensor as output1.
    fn sets(&self) -> (*mut TensorSet, *mut TensorSet) {
        let ins = set(&[("input0", self.x), ("input1", self.w), ("input2", self.cache), ("input3", self.pos)]);
        let outs = set(&[("output0", self.s), ("output1", self.cache)]);
        (ins, outs)
    }

    fn free(self) {
        for t in [self.x, self.w, self.cache, self.pos, self.s] {
            free(t);
        }
    }
}

#[test]
fn kv_cache_stays_in_one_tensor_across_three_steps() {
    let _g = serial();
    let before = live();
    let model = load(&kv_neff()).unwrap();

    let info = tensor_info(model);
    let expect = [
        ("input0", 0, 8, 0xA, vec![2]),
        ("input1", 0, 8, 0xA, vec![2]),
        ("input2", 0, 24, 0xA, vec![3, 2]),
        ("input3", 0, 8, 0xC, vec![]),
        ("output0", 1, 8, 0xA, vec![2]),
        ("output1", 1, 24, 0xA, vec![3, 2]),
    ];
    assert_eq!(info.len(), expect.len());
    for (got, want) in info.iter().zip(&expect) {
        assert_eq!((got.0.as_str(), got.1, got.2, got.3, &got.4), (want.0, want.1, want.2, want.3, &want.4));
    }

    let kv = Kv::new();
    let (ins, outs) = kv.sets();
    let mut rows: Vec<[f32; 2]> = vec![[0.0; 2]; 3];
    for step in 0..3 {
        let x = [(step + 1) as f32, 2.0 * (step + 1) as f32];
        write(kv.x, &f32_bytes(&x));
        write(kv.pos, &(step as i64).to_le_bytes());
        assert_eq!(execute(model, ins, outs), SUCCESS, "step {step}");
        rows[step] = [x[0] * 1.0, x[1] * 10.0];
        let want_cache: Vec<f32> = rows.iter().flatten().copied().collect();
        assert_eq!(f32s(&read(kv.cache)), want_cache, "cache after step {step}");
        let sum = [rows.iter().map(|r| r[0]).sum::<f32>(), rows.iter().map(|r| r[1]).sum::<f32>()];
        assert_eq!(f32s(&read(kv.s)), sum, "output after step {step}");
    }
    // Rows 0..2 are [1, 20], [2, 40], [3, 60]: each step saw the previous steps' cache.
    assert_eq!(f32s(&read(kv.s)), [6.0, 120.0]);

    destroy(ins);
    destroy(outs);
    kv.free();
    unload(model);
    assert_eq!(live(), before);
}

#[test]
fn malformed_hlo_neffs_are_refused_with_the_runtimes_statuses() {
    let _g = serial();
    let before = live();
    let neff = kv_neff();
    let header_end = 24 + u64::from_le_bytes(neff[16..24].try_into().unwrap()) as usize;
    // Truncated anywhere: inside the magic, the length, the header, the HLO.
    for cut in [10, 20, 40, header_end, neff.len() - 1] {
        assert_eq!(load(&neff[..cut]).unwrap_err(), INVALID, "cut at {cut}");
    }
    // One HLO byte changed: the checksum refuses it before XLA sees it.
    let mut corrupt = neff.clone();
    *corrupt.last_mut().unwrap() ^= 0xff;
    assert_eq!(load(&corrupt).unwrap_err(), INVALID);
    // Extra bytes after the HLO.
    let mut long = neff.clone();
    long.push(0);
    assert_eq!(load(&long).unwrap_err(), INVALID);
    // A header format this build does not read.
    let text = String::from_utf8(neff[24..header_end].to_vec()).unwrap();
    let newer = text.replacen("\"format\":1", "\"format\":2", 1);
    assert_ne!(newer, text);
    let mut v2 = neff[..16].to_vec();
    v2.extend((newer.len() as u64).to_le_bytes());
    v2.extend(newer.as_bytes());
    v2.extend(&neff[header_end..]);
    assert_eq!(load(&v2).unwrap_err(), UNSUPPORTED_NEFF_VERSION);
    // Well-formed file, but the HLO is not a program XLA accepts: the runtime fails to load it.
    let garbage = nrt_sim::compile_hlo(b"not an HLO module proto", &kv_manifest(), "inf2", &[]).unwrap();
    assert_eq!(load(&garbage).unwrap_err(), FAILURE);
    assert_eq!(live(), before);
}

#[test]
fn bad_tensor_sets_fail_without_touching_the_outputs() {
    let _g = serial();
    let before = live();
    let model = load(&kv_neff()).unwrap();
    let kv = Kv::new();
    write(kv.cache, &f32_bytes(&[7.0; 6]));
    write(kv.s, &f32_bytes(&[-1.0, -1.0]));

    // input3 missing.
    let ins = set(&[("input0", kv.x), ("input1", kv.w), ("input2", kv.cache)]);
    let outs = set(&[("output0", kv.s), ("output1", kv.cache)]);
    assert_eq!(execute(model, ins, outs), EXEC_BAD_INPUT);
    destroy(ins);
    // input0 of the wrong size.
    let short = tensor(4, None);
    let ins = set(&[("input0", short), ("input1", kv.w), ("input2", kv.cache), ("input3", kv.pos)]);
    assert_eq!(execute(model, ins, outs), EXEC_BAD_INPUT);
    destroy(ins);
    destroy(outs);
    // output1 missing, then of the wrong size.
    let (ins, full) = kv.sets();
    destroy(full);
    let outs = set(&[("output0", kv.s)]);
    assert_eq!(execute(model, ins, outs), INVALID);
    destroy(outs);
    let outs = set(&[("output0", kv.s), ("output1", short)]);
    assert_eq!(execute(model, ins, outs), INVALID);
    destroy(outs);
    assert_eq!(f32s(&read(kv.cache)), [7.0; 6], "a failed run must not write the cache");
    assert_eq!(f32s(&read(kv.s)), [-1.0, -1.0]);

    // The same sets run once fixed.
    let outs = set(&[("output0", kv.s), ("output1", kv.cache)]);
    write(kv.x, &f32_bytes(&[1.0, 1.0]));
    assert_eq!(execute(model, ins, outs), SUCCESS);
    assert_eq!(f32s(&read(kv.cache)), [1.0, 10.0, 7.0, 7.0, 7.0, 7.0]);
    destroy(ins);
    destroy(outs);
    free(short);
    kv.free();
    unload(model);
    assert_eq!(live(), before);
}

#[test]
fn injected_failures_cover_hlo_neffs() {
    let _g = serial();
    let before = live();
    let neff = kv_neff();
    inject("nrt_load", 9, 1);
    assert_eq!(load(&neff).unwrap_err(), 9);
    let model = load(&neff).unwrap();
    inject("nrt_get_model_tensor_info", 5, 1);
    let mut array = null_mut();
    assert_eq!(unsafe { nrt_sim::nrt_get_model_tensor_info(model, &mut array) }, 5);
    assert!(array.is_null());

    let kv = Kv::new();
    let (ins, outs) = kv.sets();
    write(kv.x, &f32_bytes(&[1.0, 2.0]));
    inject("nrt_execute", 1004, 2);
    assert_eq!(execute(model, ins, outs), 1004);
    assert_eq!(execute(model, ins, outs), 1004);
    assert_eq!(f32s(&read(kv.cache)), [0.0; 6], "an injected failure runs nothing");
    assert_eq!(execute(model, ins, outs), SUCCESS);
    assert_eq!(f32s(&read(kv.s)), [1.0, 20.0]);
    destroy(ins);
    destroy(outs);
    kv.free();
    unload(model);
    assert_eq!(live(), before);
}

#[test]
fn non_finite_outputs_are_reported_and_still_written() {
    let _g = serial();
    let before = live();
    let mlir = r#"
module @div {
  func.func public @main(%a: tensor<3xf32>, %b: tensor<3xf32>) -> (tensor<3xf32>, tensor<3xbf16>) {
    %q = stablehlo.divide %a, %b : tensor<3xf32>
    %h = stablehlo.convert %q : (tensor<3xf32>) -> tensor<3xbf16>
    return %q, %h : tensor<3xf32>, tensor<3xbf16>
  }
}
"#;
    let manifest = manifest(
        vec![arg("a", DType::F32, &[3], ArgumentRole::Input), arg("b", DType::F32, &[3], ArgumentRole::Input)],
        vec![out("q", DType::F32, &[3], OutputRole::Output), out("h", DType::BF16, &[3], OutputRole::Output)],
    );
    let neff = nrt_sim::compile_hlo(&hlo_from_mlir(mlir), &manifest, "trn1", &[]).unwrap();
    let model = load(&neff).unwrap();
    let info = tensor_info(model);
    assert_eq!((info[3].0.as_str(), info[3].2, info[3].3), ("output1", 6, 0x6));
    let (a, b) = (tensor(12, Some(&f32_bytes(&[1.0, 6.0, 1.0]))), tensor(12, Some(&f32_bytes(&[2.0, 3.0, 4.0]))));
    let (q, h) = (tensor(12, None), tensor(6, None));
    let ins = set(&[("input0", a), ("input1", b)]);
    let outs = set(&[("output0", q), ("output1", h)]);
    assert_eq!(execute(model, ins, outs), SUCCESS);
    assert_eq!(f32s(&read(q)), [0.5, 2.0, 0.25]);
    // bf16 0.5, 2.0, 0.25.
    assert_eq!(read(h), [0x00, 0x3f, 0x00, 0x40, 0x80, 0x3e]);
    write(b, &f32_bytes(&[0.0, 3.0, 4.0]));
    assert_eq!(execute(model, ins, outs), EXEC_COMPLETED_WITH_NUM_ERR);
    let got = f32s(&read(q));
    assert!(got[0].is_infinite() && got[1] == 2.0, "outputs are written even so: {got:?}");
    destroy(ins);
    destroy(outs);
    for t in [a, b, q, h] {
        free(t);
    }
    unload(model);
    assert_eq!(live(), before);
}

#[test]
fn compile_hlo_records_what_it_was_given_and_refuses_what_no_neff_can_hold() {
    let flags: Vec<String> = ["--model-type", "transformer", "-O1"].iter().map(|s| s.to_string()).collect();
    let bytes = nrt_sim::compile_hlo(&kv_hlo(), &kv_manifest(), "trn2", &flags).unwrap();
    assert!(bytes.starts_with(nrt_sim::HLO_MAGIC) && !bytes.starts_with(nrt_sim::MAGIC));
    let neff = nrt_sim::HloNeff::parse(&bytes).unwrap();
    assert_eq!(neff.hlo, kv_hlo());
    let h = &neff.header;
    assert_eq!((h.format, h.target.as_str(), h.compiler_version.as_str()), (1, "trn2", nrt_sim::COMPILER_VERSION));
    assert_eq!(h.flags, flags);
    let names: Vec<&str> = h.inputs.iter().chain(&h.outputs).map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["input0", "input1", "input2", "input3", "output0", "output1"]);
    assert_eq!((h.inputs[3].dtype, h.inputs[3].shape.as_slice()), (DType::I64, &[][..]));

    let err = nrt_sim::compile_hlo(&kv_hlo(), &kv_manifest(), "inf1", &[]).unwrap_err();
    assert!(matches!(err, nrt_sim::HloNeffError::UnknownTarget(_)), "{err}");
    assert!(nrt_sim::compile_hlo(&[], &kv_manifest(), "inf2", &[]).is_err());
    let mut quant = kv_manifest();
    quant.arguments[1].dtype = DType::Quant(accelrt_core::QuantType::Q8_0);
    let err = nrt_sim::compile_hlo(&kv_hlo(), &quant, "inf2", &[]).unwrap_err();
    assert!(err.to_string().contains("\"w\""), "{err}");
}

#[test]
fn validate_hlo_checks_the_results_against_the_manifest() {
    nrt_sim::validate_hlo(&kv_hlo(), &kv_manifest()).unwrap();
    let mut fewer = kv_manifest();
    fewer.outputs.pop();
    let err = nrt_sim::validate_hlo(&kv_hlo(), &fewer).unwrap_err();
    assert!(err.to_string().contains("2 results"), "{err}");
    let mut wrong_shape = kv_manifest();
    wrong_shape.outputs[1].shape = vec![4, 2];
    assert!(matches!(nrt_sim::validate_hlo(&kv_hlo(), &wrong_shape), Err(nrt_sim::HloNeffError::Mismatch(_))));
    let mut wrong_type = kv_manifest();
    wrong_type.outputs[0].dtype = DType::F16;
    assert!(matches!(nrt_sim::validate_hlo(&kv_hlo(), &wrong_type), Err(nrt_sim::HloNeffError::Mismatch(_))));
    let err = nrt_sim::validate_hlo(b"\x08\x01garbage", &kv_manifest()).unwrap_err();
    assert!(matches!(err, nrt_sim::HloNeffError::Pjrt(_)), "{err}");
}
