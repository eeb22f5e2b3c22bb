//! Graph NEFFs (`nrt_sim::pack`) through the simulator's C functions: a bad output set fails
//! before any output is written, and says why on stderr. Its own test binary: the simulator's
//! runtime is process-wide.

mod common;

use accelrt_core::{BinaryOp, DType, GraphBuilder, HostTensor, HostWeights, Op, Shape};
use common::{destroy, execute, f32_bytes, f32s, live, read, serial, set};
use nrt_sim::Tensor;
use std::ptr::null_mut;

const SUCCESS: i32 = 0;
const INVALID: i32 = 2;
const EXEC_BAD_INPUT: i32 = 1002;

fn tensor(data: &[u8]) -> *mut Tensor {
    let mut t = null_mut();
    assert_eq!(unsafe { nrt_sim::nrt_tensor_allocate(0, 0, data.len(), c"t".as_ptr(), &mut t) }, SUCCESS);
    assert_eq!(unsafe { nrt_sim::nrt_tensor_write(t, data.as_ptr().cast(), 0, data.len()) }, SUCCESS);
    t
}

/// A graph NEFF of x: f32[2] with two outputs, `a` = x + x and `b` = x · x.
fn two_output_neff() -> Vec<u8> {
    let mut g = GraphBuilder::new("two_outputs");
    let x = g.input("x", DType::F32, Shape::new([2])).unwrap();
    let a = g.add("a", Op::Binary { op: BinaryOp::Add, a: x, b: x }).unwrap();
    let b = g.add("b", Op::Binary { op: BinaryOp::Mul, a: x, b: x }).unwrap();
    g.output("a", a);
    g.output("b", b);
    let graph = g.build().unwrap();
    let example = HostTensor::f32(vec![2], vec![0.0, 0.0]).unwrap();
    nrt_sim::pack(&graph, &HostWeights::new(), &[("x", &example)]).unwrap()
}

/// Executes the two-output NEFF with its second output missing, then mis-sized, then with a
/// missing input: each fails and leaves the first output as it was; the fixed sets then run.
fn run_bad_output_sets() {
    let model = {
        let neff = two_output_neff();
        let mut model = null_mut();
        assert_eq!(unsafe { nrt_sim::nrt_load(neff.as_ptr().cast(), neff.len(), 0, 1, &mut model) }, SUCCESS);
        model
    };
    let x = tensor(&f32_bytes(&[1.0, 2.0]));
    let (a, b, short) = (tensor(&f32_bytes(&[-1.0, -1.0])), tensor(&f32_bytes(&[-1.0, -1.0])), tensor(&[0u8; 4]));
    let ins = set(&[("x", x)]);

    let outs = set(&[("a", a)]);
    assert_eq!(execute(model, ins, outs), INVALID, "output b missing");
    destroy(outs);
    assert_eq!(f32s(&read(a)), [-1.0, -1.0], "a failed run must not write output a");

    let outs = set(&[("a", a), ("b", short)]);
    assert_eq!(execute(model, ins, outs), INVALID, "output b of 4 bytes");
    destroy(outs);
    assert_eq!(f32s(&read(a)), [-1.0, -1.0], "a failed run must not write output a");
    assert_eq!(read(short), [0u8; 4]);

    let outs = set(&[("a", a), ("b", b)]);
    let empty = set(&[]);
    assert_eq!(execute(model, empty, outs), EXEC_BAD_INPUT, "input x missing");
    destroy(empty);
    assert_eq!((f32s(&read(a)), f32s(&read(b))), (vec![-1.0, -1.0], vec![-1.0, -1.0]));

    assert_eq!(execute(model, ins, outs), SUCCESS);
    assert_eq!((f32s(&read(a)), f32s(&read(b))), (vec![2.0, 4.0], vec![1.0, 4.0]));
    destroy(ins);
    destroy(outs);
    for mut t in [x, a, b, short] {
        unsafe { nrt_sim::nrt_tensor_free(&mut t) };
    }
    assert_eq!(unsafe { nrt_sim::nrt_unload(model) }, SUCCESS);
}

#[test]
fn a_bad_output_set_fails_before_any_output_is_written() {
    let _turn = serial();
    let before = live();
    run_bad_output_sets();
    assert_eq!(live(), before, "everything the test made is freed");
}

/// The same failures in a child process, whose stderr (the runtime's log) gives each reason.
#[test]
fn failed_graph_runs_say_why_on_stderr() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "bad_output_sets_in_a_child", "--ignored", "--nocapture", "--test-threads=1"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}\n{stderr}", String::from_utf8_lossy(&out.stdout));
    for reason in
        ["the output set has no tensor b", "b is 4 bytes, the model writes 8", "the input set has no tensor x"]
    {
        assert!(stderr.contains(&format!("NRT:nrt_execute  [accelrt nrt simulator] {reason}")), "{reason}: {stderr}");
    }
}

/// Run by the test above in a child process.
#[test]
#[ignore = "run as a child of failed_graph_runs_say_why_on_stderr"]
fn bad_output_sets_in_a_child() {
    let _turn = serial();
    run_bad_output_sets();
}
