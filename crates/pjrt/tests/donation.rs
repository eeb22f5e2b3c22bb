//! Donated arguments (`execute_with`): a state buffer aliased to an output is updated in place,
//! on the real XLA CPU plugin.

mod common;

use accelrt_pjrt::{Argument, PjrtError};
use common::{assert_close, client};

/// `cache` is aliased to the second result (index 1): the first result is an ordinary output.
const STEP: &str = r#"module @step {
  func.func public @main(%x: tensor<4xf32>, %cache: tensor<4xf32> {tf.aliasing_output = 1 : i32}) -> (tensor<f32>, tensor<4xf32>) {
    %0 = stablehlo.add %cache, %x : tensor<4xf32>
    %z = stablehlo.constant dense<0.0> : tensor<f32>
    %1 = stablehlo.reduce(%0 init: %z) applies stablehlo.add across dimensions = [0] : (tensor<4xf32>, tensor<f32>) -> tensor<f32>
    return %1, %0 : tensor<f32>, tensor<4xf32>
  }
}"#;

#[test]
fn a_donated_state_buffer_carries_the_state_from_step_to_step() {
    let client = client();
    let exe = client.compile_mlir(STEP).unwrap();
    assert_eq!(exe.num_outputs(), 2, "aliasing keeps the outputs");
    let x = client.buffer_from_host(&[1.0f32, 2.0, 3.0, 4.0], &[4]).unwrap();
    let mut cache = client.buffer_from_host(&[0.0f32; 4], &[4]).unwrap();
    for step in 1..=3 {
        let mut outs = exe.execute_with(vec![Argument::Keep(&x), Argument::Donate(cache)], None).unwrap();
        cache = outs.pop().unwrap();
        let sum = outs.pop().unwrap().to_vec::<f32>().unwrap();
        assert_close(&sum, &[10.0 * step as f32], 0.0);
    }
    assert_close(&cache.to_vec::<f32>().unwrap(), &[3.0, 6.0, 9.0, 12.0], 0.0);
    // The borrowed argument is still valid.
    assert_close(&x.to_vec::<f32>().unwrap(), &[1.0, 2.0, 3.0, 4.0], 0.0);
    drop((x, cache, exe));
    assert_eq!(client.live_objects().buffers, 0, "donated handles are destroyed, not leaked");
}

#[test]
fn a_refused_donation_still_consumes_nothing_it_should_not() {
    let client = client();
    let exe = client.compile_mlir(STEP).unwrap();
    let x = client.buffer_from_host(&[1.0f32, 2.0, 3.0, 4.0], &[4]).unwrap();
    let wrong = client.buffer_from_host(&[0.0f32; 3], &[3]).unwrap();
    let err = exe.execute_with(vec![Argument::Keep(&x), Argument::Donate(wrong)], None).unwrap_err();
    assert!(matches!(err, PjrtError::ArgumentMismatch { index: 1, .. }), "{err}");
    assert_close(&x.to_vec::<f32>().unwrap(), &[1.0, 2.0, 3.0, 4.0], 0.0);
}
