//! The route to the Neuron compiler, checked here: every exported conformance module converted to
//! a serialized XLA `HloModuleProto` (`accelrt_stablehlo::hlo_proto`, XLA's own converter in
//! jaxlib), loaded back by XLA's own parser (the XLA CPU plugin's `hlo` program format) and run
//! on XLA CPU against the reference evaluator. This is the file `neuronx-cc compile --framework
//! XLA` takes; if it runs here with the reference's answers, what the Neuron compiler receives
//! means what the graph means.

use accelrt_conformance::{cases, Tolerance};
use accelrt_core::{reference, DType};
use accelrt_pjrt::{Argument, CompileOptions, ElementType, ProgramFormat};
use accelrt_stablehlo::{export, hlo_proto, weight_argument, ArgumentRole, Bucket, ExportOptions, HloError};

fn element_type(dtype: DType) -> ElementType {
    match dtype {
        DType::F32 => ElementType::F32,
        DType::F16 => ElementType::F16,
        DType::BF16 => ElementType::BF16,
        DType::I64 => ElementType::I64,
        DType::U32 => ElementType::U32,
        DType::U8 => ElementType::U8,
        other => panic!("no PJRT type for {other}"),
    }
}

#[test]
fn every_stateless_case_runs_from_its_hlo_proto_like_the_reference() {
    let plugin = accelrt_pjrt::xla_cpu_plugin().expect("the XLA CPU plugin (fetched with pip on first use)");
    let client = accelrt_pjrt::Client::new(&plugin).unwrap();
    let mut ran = 0;
    for case in cases::all().into_iter().filter(|c| c.later_steps.is_empty() && c.slots == 0) {
        let feed: Vec<(&str, &accelrt_core::HostTensor)> = case.inputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
        let bucket = Bucket::from_bindings(&case.graph.bind_inputs(&feed).unwrap());
        let module = export(&case.graph, &bucket, &ExportOptions::default()).unwrap();
        let proto = hlo_proto(&module.mlir).unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let exe = client
            .compile(&proto, ProgramFormat::Hlo, &CompileOptions::default())
            .unwrap_or_else(|e| panic!("{}: XLA does not load the HLO proto: {e}", case.name));
        assert_eq!(exe.num_outputs(), module.manifest.outputs.len(), "{}", case.name);
        let mut buffers = Vec::new();
        for arg in &module.manifest.arguments {
            let host = match &arg.role {
                ArgumentRole::Input => feed.iter().find(|(n, _)| *n == arg.name).unwrap().1.clone(),
                ArgumentRole::Weight { .. } => weight_argument(arg, &case.weights).unwrap(),
                ArgumentRole::State { .. } | ArgumentRole::Variable { .. } => unreachable!("stateless cases"),
            };
            let dims: Vec<i64> = arg.shape.iter().map(|&d| d as i64).collect();
            buffers.push(client.buffer_from_bytes(element_type(arg.dtype), &host.to_le_bytes(), &dims, None).unwrap());
        }
        let outputs = exe.execute_with(buffers.iter().map(Argument::Keep).collect(), None).unwrap();
        let expected = reference::evaluate(&case.graph, &case.weights, &feed).unwrap();
        let mut tol = Tolerance::for_compute(DType::F32);
        if let Some(min) = case.min_tolerance {
            tol = Tolerance { abs: tol.abs.max(min.abs), rel: tol.rel.max(min.rel) };
        }
        for (out, buffer) in module.manifest.outputs.iter().zip(outputs) {
            let got =
                accelrt_core::HostTensor::from_le_bytes(out.dtype, out.shape.clone(), &buffer.to_bytes().unwrap())
                    .unwrap()
                    .to_f64_vec();
            let want = expected.get(&out.name).unwrap().to_f64_vec();
            assert_eq!(got.len(), want.len(), "{}: {}", case.name, out.name);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (g - w).abs() <= tol.abs + tol.rel * w.abs(),
                    "{}: output {} [{i}] = {g}, the reference says {w}",
                    case.name,
                    out.name
                );
            }
        }
        ran += 1;
    }
    assert!(ran >= 20, "only {ran} cases ran");
}

#[test]
fn a_cache_parameter_stays_aliased_in_the_hlo_proto() {
    let case = cases::kv_cache_session();
    let feed: Vec<(&str, &accelrt_core::HostTensor)> = case.inputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let bucket = Bucket::from_bindings(&case.graph.bind_inputs(&feed).unwrap()).with_slots(3);
    let module = export(&case.graph, &bucket, &ExportOptions::default()).unwrap();
    let proto = hlo_proto(&module.mlir).unwrap();
    // The proto is binary; XLA's text form shows the alias. Round-trip through jaxlib to read it.
    let script = "import sys\nfrom jax._src.lib import _jax\nm = _jax.hlo_module_from_serialized_proto(sys.stdin.buffer.read()) if hasattr(_jax, 'hlo_module_from_serialized_proto') else None\nprint(m.to_string() if m is not None else 'unavailable')";
    let mut child = std::process::Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), &proto).unwrap();
    let text = String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap();
    if text.trim() != "unavailable" {
        assert!(text.contains("input_output_alias"), "no alias in:\n{}", &text[..text.len().min(2000)]);
    }
    // Whatever the reader, the state outputs pair with their arguments in the manifest.
    assert_eq!(module.manifest.state_pairs().len(), 2);
}

#[test]
fn a_module_xla_refuses_and_a_missing_python_are_clear_errors() {
    let err = hlo_proto("module { this is not mlir }").unwrap_err();
    assert!(matches!(err, HloError::Convert(_)), "{err}");
    // The interpreter is chosen by ACCELRT_PYTHON; a missing one is named.
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "missing_python_probe", "--ignored", "--nocapture"])
        .env("ACCELRT_PYTHON", "/nonexistent/python3")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

/// Run by the test above in a child process with `ACCELRT_PYTHON` pointing nowhere.
#[test]
#[ignore = "run as a child of a_module_xla_refuses_and_a_missing_python_are_clear_errors"]
fn missing_python_probe() {
    let err = hlo_proto("module {}").unwrap_err();
    assert!(matches!(err, HloError::Python { .. }), "{err}");
    assert!(err.to_string().contains("/nonexistent/python3"), "{err}");
}
