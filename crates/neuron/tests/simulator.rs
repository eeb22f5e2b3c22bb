//! The binding through its real FFI path against the simulator: version, load, tensor info,
//! execute, read back; every injected failure as the right typed error; nothing leaked.

mod common;

use accelrt_core::{reference, BinaryOp, DType, GraphBuilder, HostTensor, HostWeights, Op, Shape, UnaryOp};
use accelrt_neuron::{Model, NeuronError, Runtime, Tensor, TensorSet, TensorUsage};
use std::ffi::{c_char, c_int, CString};
use std::sync::{Arc, Mutex};

/// Failure injection and leak counts are process-wide in the simulator: tests take turns.
static SERIAL: Mutex<()> = Mutex::new(());

fn runtime() -> Arc<Runtime> {
    common::use_simulator();
    Runtime::get().unwrap()
}

fn sim_symbol<T: Copy>(name: &str) -> T {
    let lib = unsafe { libloading::Library::new(common::simulator_library()) }.unwrap();
    let f: T = unsafe { *lib.get::<T>(name.as_bytes()).unwrap() };
    std::mem::forget(lib); // the runtime keeps the same library loaded
    f
}

fn inject(call: &str, status: i32, times: u32) {
    let f: unsafe extern "C" fn(*const c_char, c_int, u32) -> c_int = sim_symbol("nrt_sim_inject_failure");
    let c = CString::new(call).unwrap();
    assert_eq!(unsafe { f(c.as_ptr(), status, times) }, 0);
}

fn live() -> [i64; 4] {
    let f: unsafe extern "C" fn(*mut i64) = sim_symbol("nrt_sim_live_objects");
    let mut out = [0i64; 4];
    unsafe { f(out.as_mut_ptr()) };
    out
}

/// y = gelu(x · Wᵀ) / d, over a [2, 4] input.
fn program(divisor: f32) -> (Vec<u8>, HostTensor, HostTensor) {
    let mut b = GraphBuilder::new("tiny");
    let x = b.input("x", DType::F32, Shape::new([2, 4])).unwrap();
    let w = b.weight("w", DType::F32, Shape::new([3, 4])).unwrap();
    let d = b.weight("d", DType::F32, Shape::new([1])).unwrap();
    let y = b.add("lin", Op::Linear { x, weight: w, bias: None }).unwrap();
    let y = b.add("act", Op::Unary { op: UnaryOp::Gelu, x: y }).unwrap();
    let y = b.add("div", Op::Binary { op: BinaryOp::Div, a: y, b: d }).unwrap();
    b.output("y", y);
    let graph = b.build().unwrap();
    let mut weights = HostWeights::new();
    weights.insert("w", HostTensor::f32(vec![3, 4], (0..12).map(|i| i as f32 * 0.1 - 0.5).collect()).unwrap());
    weights.insert("d", HostTensor::f32(vec![1], vec![divisor]).unwrap());
    let input = HostTensor::f32(vec![2, 4], vec![0.5, -1.0, 2.0, 0.0, 1.5, 0.25, -0.75, 1.0]).unwrap();
    let neff = nrt_sim::pack(&graph, &weights, &[("x", &input)]).unwrap();
    let want = reference::evaluate(&graph, &weights, &[("x", &input)]).unwrap().get("y").unwrap().clone();
    (neff, input, want)
}

/// Allocates the model's tensors as the canonical flow does and writes the input.
fn tensors(rt: &Arc<Runtime>, model: &Model, input: &HostTensor) -> (TensorSet, TensorSet) {
    let (mut ins, mut outs) = (TensorSet::new(rt).unwrap(), TensorSet::new(rt).unwrap());
    for info in model.tensor_info().unwrap() {
        let mut t = Tensor::allocate(rt, 0, info.size, &info.name).unwrap();
        match info.usage {
            TensorUsage::Input => {
                t.write(&input.to_le_bytes(), 0).unwrap();
                ins.add(t).unwrap();
            }
            TensorUsage::Output => outs.add(t).unwrap(),
        }
    }
    (ins, outs)
}

fn read_f32(set: &TensorSet, name: &str) -> Vec<f32> {
    let t = set.get(name).unwrap();
    let mut buf = vec![0u8; t.size()];
    t.read(&mut buf, 0).unwrap();
    buf.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
}

#[test]
fn a_program_runs_through_the_ffi_like_the_reference_and_frees_everything() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let rt = runtime();
    let before = live();
    let version = rt.version().unwrap();
    assert!(version.detail.contains("TEST DOUBLE"), "{version:?}");
    assert_eq!(rt.core_count().unwrap(), 2);
    {
        let (neff, input, want) = program(2.0);
        let model = Model::load(&rt, &neff, Some(0)).unwrap();
        let info = model.tensor_info().unwrap();
        assert_eq!(info.len(), 2);
        assert_eq!((info[0].name.as_str(), info[0].usage, info[0].size), ("x", TensorUsage::Input, 32));
        assert_eq!(
            (info[1].name.as_str(), info[1].usage, info[1].size, info[1].shape.as_slice()),
            ("y", TensorUsage::Output, 24, &[2u32, 3][..])
        );
        let (ins, mut outs) = tensors(&rt, &model, &input);
        for _ in 0..3 {
            model.execute(&ins, &mut outs).unwrap();
            assert_eq!(read_f32(&outs, "y"), want.as_f32().unwrap());
        }
        // Out-of-range tensor access is refused before it reaches the runtime.
        let mut t = Tensor::allocate(&rt, 0, 8, "small").unwrap();
        assert!(matches!(t.write(&[0u8; 16], 0), Err(NeuronError::Invalid(_))));
        assert!(matches!(t.read(&mut [0u8; 4], 6), Err(NeuronError::Invalid(_))));
        assert!(live()[0] > before[0]);
    }
    assert_eq!(live(), before, "models, tensors, sets and info arrays are all freed");
}

#[test]
fn injected_failures_surface_as_typed_errors_without_leaks() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let rt = runtime();
    let before = live();
    let (neff, input, _) = program(2.0);
    let status_of = |e: NeuronError| match e {
        NeuronError::Status { call, status } => (call, status.name()),
        other => panic!("not a status error: {other}"),
    };
    inject("nrt_load", 10, 1);
    assert_eq!(status_of(Model::load(&rt, &neff, None).err().unwrap()), ("nrt_load", "NRT_UNSUPPORTED_NEFF_VERSION"));
    inject("nrt_load", 9, 1);
    assert_eq!(status_of(Model::load(&rt, &neff, None).err().unwrap()), ("nrt_load", "NRT_LOAD_NOT_ENOUGH_NC"));
    // A core the machine does not have.
    assert_eq!(status_of(Model::load(&rt, &neff, Some(7)).err().unwrap()).1, "NRT_LOAD_NOT_ENOUGH_NC");
    // Not a NEFF at all.
    assert_eq!(status_of(Model::load(&rt, b"garbage", None).err().unwrap()).1, "NRT_INVALID");
    {
        let model = Model::load(&rt, &neff, None).unwrap();
        let (ins, mut outs) = tensors(&rt, &model, &input);
        for (status, name) in [
            (1005, "NRT_EXEC_NC_BUSY"),
            (1004, "NRT_EXEC_COMPLETED_WITH_ERR"),
            (5, "NRT_TIMEOUT"),
            (1202, "NRT_EXEC_HW_ERR_NC_UE"),
        ] {
            inject("nrt_execute", status, 1);
            let err = model.execute(&ins, &mut outs).unwrap_err();
            assert!(err.to_string().contains(name), "{err}");
            assert_eq!(status_of(err), ("nrt_execute", name));
        }
        // After the failures the same model and tensors work again.
        model.execute(&ins, &mut outs).unwrap();
        inject("nrt_tensor_allocate", 4, 1);
        assert_eq!(status_of(Tensor::allocate(&rt, 0, 16, "t").err().unwrap()).1, "NRT_RESOURCE");
        inject("nrt_get_model_tensor_info", 1, 1);
        assert_eq!(status_of(model.tensor_info().unwrap_err()).1, "NRT_FAILURE");
        // A wrong input set: the runtime refuses it.
        let empty = TensorSet::new(&rt).unwrap();
        assert_eq!(status_of(model.execute(&empty, &mut outs).unwrap_err()).1, "NRT_EXEC_BAD_INPUT");
    }
    // A program whose output is not finite: the runtime's NaN status.
    {
        let (neff, input, _) = program(0.0);
        let model = Model::load(&rt, &neff, None).unwrap();
        let (ins, mut outs) = tensors(&rt, &model, &input);
        let err = model.execute(&ins, &mut outs).unwrap_err();
        assert!(err.to_string().contains("NaN or Inf"), "{err}");
    }
    assert_eq!(live(), before, "error paths free what they allocated");
}

#[test]
fn concurrent_callers_each_run_their_own_model() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let rt = runtime();
    let before = live();
    let (neff, input, want) = program(2.0);
    std::thread::scope(|scope| {
        for core in 0..2u32 {
            let (rt, neff, input, want) = (rt.clone(), &neff, &input, &want);
            scope.spawn(move || {
                let model = Model::load(&rt, neff, Some(core)).unwrap();
                let (ins, mut outs) = tensors(&rt, &model, input);
                for _ in 0..50 {
                    model.execute(&ins, &mut outs).unwrap();
                    assert_eq!(read_f32(&outs, "y"), want.as_f32().unwrap());
                }
            });
        }
    });
    assert_eq!(live(), before);
}
