//! Serialised programs (the on-disk compile cache of the PJRT backend) and programs run on a
//! chosen device (`pjrt:PATH:N`), on the real XLA CPU plugin.

mod common;

use accelrt_pjrt::{CompileOptions, PjrtError, ProgramFormat};
use common::{assert_close, client};

const ADD: &str = r#"module @add {
  func.func public @main(%a: tensor<2x3xf32>, %b: tensor<2x3xf32>) -> tensor<2x3xf32> {
    %0 = stablehlo.add %a, %b : tensor<2x3xf32>
    return %0 : tensor<2x3xf32>
  }
}"#;

#[test]
fn a_serialised_program_loads_and_runs_like_the_compiled_one() {
    let client = client();
    let exe = client.compile_mlir(ADD).unwrap();
    let bytes = exe.serialize().expect("the XLA CPU plugin serialises executables");
    assert!(!bytes.is_empty());
    let loaded = client.load_serialized(&bytes, Some(ADD)).unwrap();
    assert_eq!(loaded.num_outputs(), 1);
    assert_eq!(loaded.parameters().map(<[_]>::len), Some(2), "the signature is read from the MLIR given");
    let a = client.buffer_from_host(&[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]).unwrap();
    let b = client.buffer_from_host(&[10.0f32; 6], &[2, 3]).unwrap();
    let out = loaded.execute(&[&a, &b]).unwrap().remove(0).to_vec::<f32>().unwrap();
    assert_close(&out, &[11.0, 12.0, 13.0, 14.0, 15.0, 16.0], 0.0);
    // The signature check applies to the loaded program too.
    assert!(matches!(loaded.execute(&[&a]), Err(PjrtError::ArgumentCount { expected: 2, actual: 1 })));
}

#[test]
fn corrupt_serialised_bytes_are_a_plugin_error() {
    let client = client();
    let err = client.load_serialized(b"not an executable", None).expect_err("garbage must not load");
    assert!(matches!(err, PjrtError::Plugin { call: "PJRT_Executable_DeserializeAndLoad", .. }), "{err}");
}

#[test]
fn a_portable_program_runs_on_a_chosen_device() {
    let client = client();
    let devices = client.devices();
    assert!(devices.len() >= 2, "the CPU client has several devices");
    let device = &devices[devices.len() - 1];
    let exe = client.compile(ADD.as_bytes(), ProgramFormat::Mlir, &CompileOptions::portable(1, 1)).unwrap();
    let on = |data: &[f32]| {
        let bytes: Vec<u8> = data.iter().flat_map(|x| x.to_le_bytes()).collect();
        client.buffer_from_bytes(accelrt_pjrt::ElementType::F32, &bytes, &[2, 3], Some(device)).unwrap()
    };
    let (a, b) = (on(&[1.0; 6]), on(&[2.0; 6]));
    let out = exe.execute_on(&[&a, &b], Some(device)).unwrap().remove(0).to_vec::<f32>().unwrap();
    assert_close(&out, &[3.0; 6], 0.0);
}
