//! The built shared library (`libnrt_sim.so`), loaded with dlopen as accelrt-neuron loads
//! `libnrt.so.1`, runs an HLO NEFF with its KV cache bound as input and output: the XLA CPU plugin
//! is loaded from inside the cdylib, through the C ABI only. Its own test binary, so that the
//! cdylib's copy of the PJRT client is the only one in the process.

mod common;

use common::*;
use std::ffi::{c_char, c_int, c_void};
use std::path::PathBuf;
use std::ptr::null_mut;

/// The cdylib cargo built for this package, next to the test binary or one level up.
fn library() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    let name = format!("{}nrt_sim{}", std::env::consts::DLL_PREFIX, std::env::consts::DLL_SUFFIX);
    [deps, deps.parent().unwrap()]
        .iter()
        .map(|d| d.join(&name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} was not built next to {}", exe.display()))
}

type P = *mut c_void;

#[test]
fn the_shared_library_runs_an_hlo_neff_with_an_aliased_cache() {
    let lib = unsafe { libloading::Library::new(library()) }.unwrap();
    macro_rules! sym {
        ($name:literal, $ty:ty) => {
            unsafe { *lib.get::<$ty>($name).unwrap() }
        };
    }
    let init = sym!(b"nrt_init", unsafe extern "C" fn(c_int, *const c_char, *const c_char) -> c_int);
    let load = sym!(b"nrt_load", unsafe extern "C" fn(*const c_void, usize, i32, i32, *mut P) -> c_int);
    let unload = sym!(b"nrt_unload", unsafe extern "C" fn(P) -> c_int);
    let alloc = sym!(b"nrt_tensor_allocate", unsafe extern "C" fn(c_int, c_int, usize, *const c_char, *mut P) -> c_int);
    let free = sym!(b"nrt_tensor_free", unsafe extern "C" fn(*mut P));
    let write = sym!(b"nrt_tensor_write", unsafe extern "C" fn(P, *const c_void, usize, usize) -> c_int);
    let read = sym!(b"nrt_tensor_read", unsafe extern "C" fn(P, *mut c_void, usize, usize) -> c_int);
    let new_set = sym!(b"nrt_allocate_tensor_set", unsafe extern "C" fn(*mut P) -> c_int);
    let destroy_set = sym!(b"nrt_destroy_tensor_set", unsafe extern "C" fn(*mut P));
    let add = sym!(b"nrt_add_tensor_to_tensor_set", unsafe extern "C" fn(P, *const c_char, P) -> c_int);
    let execute = sym!(b"nrt_execute", unsafe extern "C" fn(P, P, P) -> c_int);
    let live = sym!(b"nrt_sim_live_objects", unsafe extern "C" fn(*mut i64));

    unsafe {
        assert_eq!(init(1, c"".as_ptr(), c"".as_ptr()), 0);
        let neff = kv_neff();
        let mut model = null_mut();
        assert_eq!(load(neff.as_ptr().cast(), neff.len(), 0, 1, &mut model), 0);
        let tensor = |size: usize, data: &[u8]| {
            let mut t = null_mut();
            assert_eq!(alloc(0, 0, size, c"t".as_ptr(), &mut t), 0);
            if !data.is_empty() {
                assert_eq!(write(t, data.as_ptr().cast(), 0, data.len()), 0);
            }
            t
        };
        let (x, w, cache, pos, s) =
            (tensor(8, &[]), tensor(8, &f32_bytes(&[1.0, 10.0])), tensor(24, &[]), tensor(8, &[]), tensor(8, &[]));
        let (mut ins, mut outs) = (null_mut(), null_mut());
        assert_eq!(new_set(&mut ins), 0);
        assert_eq!(new_set(&mut outs), 0);
        for (name, t) in [(c"input0", x), (c"input1", w), (c"input2", cache), (c"input3", pos)] {
            assert_eq!(add(ins, name.as_ptr(), t), 0);
        }
        assert_eq!(add(outs, c"output0".as_ptr(), s), 0);
        assert_eq!(add(outs, c"output1".as_ptr(), cache), 0);
        for step in 0..2i64 {
            assert_eq!(write(x, f32_bytes(&[1.0, 1.0]).as_ptr().cast(), 0, 8), 0);
            assert_eq!(write(pos, step.to_le_bytes().as_ptr().cast(), 0, 8), 0);
            assert_eq!(execute(model, ins, outs), 0);
        }
        let mut buf = [0u8; 24];
        assert_eq!(read(cache, buf.as_mut_ptr().cast(), 0, 24), 0);
        assert_eq!(f32s(&buf), [1.0, 10.0, 1.0, 10.0, 0.0, 0.0]);
        assert_eq!(read(s, buf.as_mut_ptr().cast(), 0, 8), 0);
        assert_eq!(f32s(&buf[..8]), [2.0, 20.0]);

        destroy_set(&mut ins);
        destroy_set(&mut outs);
        for mut t in [x, w, cache, pos, s] {
            free(&mut t);
        }
        assert_eq!(unload(model), 0);
        let mut counts = [-1i64; 4];
        live(counts.as_mut_ptr());
        assert_eq!(counts, [0; 4]);
    }
}
