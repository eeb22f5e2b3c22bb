//! Hand-written StableHLO modules compiled and run on the real XLA CPU plugin.

mod common;

use accelrt_pjrt::{ElementType, TensorType, SUPPORTED_API};
use common::{assert_close, client, plugin};
use half::{bf16, f16};

#[test]
fn plugin_and_client_describe_themselves() {
    let plugin = plugin();
    assert_eq!(plugin.api_version(), SUPPORTED_API);
    assert!(plugin.attribute("xla_version").is_some(), "attributes: {:?}", plugin.attributes());
    assert!(plugin.attribute("stablehlo_current_version").is_some());
    let client = client();
    assert_eq!(client.platform_name(), "cpu");
    assert!(!client.platform_version().is_empty());
    let devices = client.devices();
    assert!(!devices.is_empty());
    assert_eq!(devices[0].kind(), "cpu");
    assert!(devices[0].description().contains("Cpu"), "{}", devices[0].description());
    let ids: Vec<i32> = devices.iter().map(|d| d.id()).collect();
    let mut unique = ids.clone();
    unique.dedup();
    assert_eq!(ids, unique);
}

#[test]
fn add() {
    let client = client();
    let exe = client
        .compile_mlir(
            r#"module @add {
  func.func public @main(%a: tensor<2x3xf32>, %b: tensor<2x3xf32>) -> tensor<2x3xf32> {
    %0 = stablehlo.add %a, %b : tensor<2x3xf32>
    return %0 : tensor<2x3xf32>
  }
}"#,
        )
        .unwrap();
    assert_eq!(exe.num_outputs(), 1);
    assert_eq!(exe.output_types(), [ElementType::F32]);
    assert_eq!(exe.output_dims().unwrap(), [vec![2, 3]]);
    assert_eq!(exe.parameters().unwrap(), vec![TensorType { element_type: ElementType::F32, dims: vec![2, 3] }; 2]);
    let a = client.buffer_from_host(&[1f32, 2., 3., 4., 5., 6.], &[2, 3]).unwrap();
    let b = client.buffer_from_host(&[0.5f32, -1., 10., 0., 1e6, -6.], &[2, 3]).unwrap();
    let out = exe.execute(&[&a, &b]).unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].dims(), [2, 3]);
    assert_eq!(out[0].element_type(), ElementType::F32);
    assert_eq!(out[0].to_vec::<f32>().unwrap(), [1.5, 1., 13., 4., 1000005., 0.]);
    // The arguments are not donated: they can be read and used again.
    assert_eq!(a.to_vec::<f32>().unwrap(), [1., 2., 3., 4., 5., 6.]);
    assert_eq!(exe.execute(&[&b, &a]).unwrap()[0].to_vec::<f32>().unwrap(), [1.5, 1., 13., 4., 1000005., 0.]);
}

#[test]
fn dot_general() {
    let client = client();
    let exe = client
        .compile_mlir(
            r#"func.func @main(%a: tensor<2x3xf32>, %b: tensor<3x4xf32>) -> tensor<2x4xf32> {
  %0 = stablehlo.dot_general %a, %b, contracting_dims = [1] x [0] : (tensor<2x3xf32>, tensor<3x4xf32>) -> tensor<2x4xf32>
  return %0 : tensor<2x4xf32>
}"#,
        )
        .unwrap();
    let a: Vec<f32> = (0..6).map(|i| i as f32 * 0.5 - 1.0).collect();
    let b: Vec<f32> = (0..12).map(|i| (i as f32).sin()).collect();
    let mut expected = vec![0f32; 8];
    for i in 0..2 {
        for j in 0..4 {
            expected[i * 4 + j] = (0..3).map(|k| a[i * 3 + k] * b[k * 4 + j]).sum();
        }
    }
    let (ba, bb) = (client.buffer_from_host(&a, &[2, 3]).unwrap(), client.buffer_from_host(&b, &[3, 4]).unwrap());
    let out = exe.execute(&[&ba, &bb]).unwrap();
    assert_eq!(out[0].dims(), [2, 4]);
    assert_close(&out[0].to_vec::<f32>().unwrap(), &expected, 1e-5);
}

#[test]
fn batched_dot_general() {
    let client = client();
    let exe = client
        .compile_mlir(
            r#"func.func @main(%q: tensor<2x3x4xf32>, %k: tensor<2x5x4xf32>) -> tensor<2x3x5xf32> {
  %0 = stablehlo.dot_general %q, %k, batching_dims = [0] x [0], contracting_dims = [2] x [2] : (tensor<2x3x4xf32>, tensor<2x5x4xf32>) -> tensor<2x3x5xf32>
  return %0 : tensor<2x3x5xf32>
}"#,
        )
        .unwrap();
    let q: Vec<f32> = (0..24).map(|i| (i as f32 * 0.37).cos()).collect();
    let k: Vec<f32> = (0..40).map(|i| (i as f32 * 0.11).sin()).collect();
    let mut expected = vec![0f32; 30];
    for b in 0..2 {
        for i in 0..3 {
            for j in 0..5 {
                expected[b * 15 + i * 5 + j] = (0..4).map(|c| q[b * 12 + i * 4 + c] * k[b * 20 + j * 4 + c]).sum();
            }
        }
    }
    let out = exe
        .execute(&[
            &client.buffer_from_host(&q, &[2, 3, 4]).unwrap(),
            &client.buffer_from_host(&k, &[2, 5, 4]).unwrap(),
        ])
        .unwrap();
    assert_close(&out[0].to_vec::<f32>().unwrap(), &expected, 1e-5);
}

#[test]
fn reduce_sum_and_max() {
    let client = client();
    let exe = client
        .compile_mlir(
            r#"func.func @main(%a: tensor<2x3xf32>) -> (tensor<2xf32>, tensor<3xf32>) {
  %zero = stablehlo.constant dense<0.0> : tensor<f32>
  %sum = stablehlo.reduce(%a init: %zero) applies stablehlo.add across dimensions = [1] : (tensor<2x3xf32>, tensor<f32>) -> tensor<2xf32>
  %ninf = stablehlo.constant dense<0xFF800000> : tensor<f32>
  %max = stablehlo.reduce(%a init: %ninf) across dimensions = [0] : (tensor<2x3xf32>, tensor<f32>) -> tensor<3xf32>
   reducer(%x: tensor<f32>, %y: tensor<f32>) {
    %m = stablehlo.maximum %x, %y : tensor<f32>
    stablehlo.return %m : tensor<f32>
  }
  return %sum, %max : tensor<2xf32>, tensor<3xf32>
}"#,
        )
        .unwrap();
    let a = client.buffer_from_host(&[1f32, -2., 3., -4., 5., 0.25], &[2, 3]).unwrap();
    let out = exe.execute(&[&a]).unwrap();
    assert_eq!(out[0].to_vec::<f32>().unwrap(), [2., 1.25]);
    assert_eq!(out[1].to_vec::<f32>().unwrap(), [1., 5., 3.]);
}

#[test]
fn multiple_outputs_of_different_types_and_shapes() {
    let client = client();
    let exe = client
        .compile_mlir(
            r#"func.func @main(%a: tensor<3xf32>, %b: tensor<3xf32>) -> (tensor<3xf32>, tensor<3xf32>, tensor<f32>, tensor<3xi1>) {
  %0 = stablehlo.add %a, %b : tensor<3xf32>
  %1 = stablehlo.multiply %a, %b : tensor<3xf32>
  %zero = stablehlo.constant dense<0.0> : tensor<f32>
  %2 = stablehlo.reduce(%1 init: %zero) applies stablehlo.add across dimensions = [0] : (tensor<3xf32>, tensor<f32>) -> tensor<f32>
  %3 = stablehlo.compare GT, %a, %b : (tensor<3xf32>, tensor<3xf32>) -> tensor<3xi1>
  return %0, %1, %2, %3 : tensor<3xf32>, tensor<3xf32>, tensor<f32>, tensor<3xi1>
}"#,
        )
        .unwrap();
    assert_eq!(exe.num_outputs(), 4);
    assert_eq!(exe.output_types(), [ElementType::F32, ElementType::F32, ElementType::F32, ElementType::Pred]);
    assert_eq!(exe.output_dims().unwrap(), [vec![3], vec![3], vec![], vec![3]]);
    let a = client.buffer_from_host(&[1f32, 2., 3.], &[3]).unwrap();
    let b = client.buffer_from_host(&[4f32, 0., -1.], &[3]).unwrap();
    let out = exe.execute(&[&a, &b]).unwrap();
    assert_eq!(out.len(), 4);
    assert_eq!(out[0].to_vec::<f32>().unwrap(), [5., 2., 2.]);
    assert_eq!(out[1].to_vec::<f32>().unwrap(), [4., 0., -3.]);
    assert_eq!(out[2].dims(), [] as [i64; 0]);
    assert_eq!(out[2].to_vec::<f32>().unwrap(), [1.]);
    assert_eq!(out[3].element_type(), ElementType::Pred);
    assert_eq!(out[3].to_bytes().unwrap(), [0, 1, 1]);
}

#[test]
fn i32_input() {
    let client = client();
    let exe = client
        .compile_mlir(
            r#"func.func @main(%ids: tensor<4xi32>, %table: tensor<5x2xf32>) -> (tensor<4xi32>, tensor<4x2xf32>) {
  %two = stablehlo.constant dense<2> : tensor<4xi32>
  %0 = stablehlo.multiply %ids, %two : tensor<4xi32>
  %1 = "stablehlo.gather"(%table, %ids) {
    dimension_numbers = #stablehlo.gather<offset_dims = [1], collapsed_slice_dims = [0], start_index_map = [0], index_vector_dim = 1>,
    slice_sizes = array<i64: 1, 2>
  } : (tensor<5x2xf32>, tensor<4xi32>) -> tensor<4x2xf32>
  return %0, %1 : tensor<4xi32>, tensor<4x2xf32>
}"#,
        )
        .unwrap();
    let ids = client.buffer_from_host(&[3i32, 0, 4, 3], &[4]).unwrap();
    let table: Vec<f32> = (0..10).map(|i| i as f32).collect();
    let out = exe.execute(&[&ids, &client.buffer_from_host(&table, &[5, 2]).unwrap()]).unwrap();
    assert_eq!(out[0].element_type(), ElementType::I32);
    assert_eq!(out[0].to_vec::<i32>().unwrap(), [6, 0, 8, 6]);
    assert_eq!(out[1].to_vec::<f32>().unwrap(), [6., 7., 0., 1., 8., 9., 6., 7.]);
}

#[test]
fn bf16_and_f16_inputs() {
    let client = client();
    let exe = client
        .compile_mlir(
            r#"func.func @main(%a: tensor<4xbf16>, %b: tensor<4xf16>) -> (tensor<4xbf16>, tensor<4xf32>, tensor<4xf16>) {
  %0 = stablehlo.add %a, %a : tensor<4xbf16>
  %1 = stablehlo.convert %a : (tensor<4xbf16>) -> tensor<4xf32>
  %2 = stablehlo.multiply %b, %b : tensor<4xf16>
  return %0, %1, %2 : tensor<4xbf16>, tensor<4xf32>, tensor<4xf16>
}"#,
        )
        .unwrap();
    let a: Vec<bf16> = [1.5f32, -2.0, 0.09375, 300.0].iter().map(|&x| bf16::from_f32(x)).collect();
    let b: Vec<f16> = [0.5f32, -3.0, 10.0, 0.0].iter().map(|&x| f16::from_f32(x)).collect();
    let out = exe
        .execute(&[&client.buffer_from_host(&a, &[4]).unwrap(), &client.buffer_from_host(&b, &[4]).unwrap()])
        .unwrap();
    let doubled: Vec<f32> = out[0].to_vec::<bf16>().unwrap().iter().map(|x| x.to_f32()).collect();
    assert_eq!(doubled, [3.0, -4.0, 0.1875, 600.0]);
    assert_eq!(out[1].to_vec::<f32>().unwrap(), [1.5, -2.0, 0.09375, 300.0]);
    let squared: Vec<f32> = out[2].to_vec::<f16>().unwrap().iter().map(|x| x.to_f32()).collect();
    assert_eq!(squared, [0.25, 9.0, 100.0, 0.0]);
}

#[test]
fn integer_buffers_round_trip() {
    let client = client();
    let u = client.buffer_from_host(&[0u32, 1, u32::MAX, 7], &[2, 2]).unwrap();
    assert_eq!((u.element_type(), u.dims()), (ElementType::U32, &[2i64, 2][..]));
    assert_eq!(u.to_vec::<u32>().unwrap(), [0, 1, u32::MAX, 7]);
    let l = client.buffer_from_host(&[i64::MIN, -1, i64::MAX], &[3]).unwrap();
    assert_eq!(l.to_vec::<i64>().unwrap(), [i64::MIN, -1, i64::MAX]);
    let exe = client
        .compile_mlir(
            r#"func.func @main(%a: tensor<2x2xui32>, %b: tensor<3xi64>) -> (tensor<2x2xui32>, tensor<3xi64>) {
  %0 = stablehlo.add %a, %a : tensor<2x2xui32>
  %1 = stablehlo.negate %b : tensor<3xi64>
  return %0, %1 : tensor<2x2xui32>, tensor<3xi64>
}"#,
        )
        .unwrap();
    let out = exe.execute(&[&u, &l]).unwrap();
    assert_eq!(out[0].to_vec::<u32>().unwrap(), [0, 2, u32::MAX.wrapping_mul(2), 14]);
    assert_eq!(out[1].to_vec::<i64>().unwrap(), [i64::MIN, 1, -i64::MAX]);
    // Reading back as the wrong host type is refused.
    assert!(out[0].to_vec::<i32>().is_err());
}

#[test]
fn scalars_and_empty_arrays() {
    let client = client();
    let exe = client
        .compile_mlir(
            r#"func.func @main(%s: tensor<f32>, %e: tensor<0x3xf32>) -> (tensor<f32>, tensor<0x3xf32>) {
  %0 = stablehlo.sqrt %s : tensor<f32>
  %1 = stablehlo.abs %e : tensor<0x3xf32>
  return %0, %1 : tensor<f32>, tensor<0x3xf32>
}"#,
        )
        .unwrap();
    let s = client.buffer_from_host(&[16f32], &[]).unwrap();
    let e = client.buffer_from_host::<f32>(&[], &[0, 3]).unwrap();
    let out = exe.execute(&[&s, &e]).unwrap();
    assert_eq!(out[0].to_vec::<f32>().unwrap(), [4.]);
    assert_eq!(out[1].dims(), [0, 3]);
    assert!(out[1].to_vec::<f32>().unwrap().is_empty());
}

#[test]
fn buffers_on_another_device() {
    let client = client();
    let devices = client.devices();
    let last = devices.last().unwrap();
    let b = client.buffer_from_bytes(ElementType::F32, &1.25f32.to_ne_bytes(), &[1], Some(last)).unwrap();
    assert_eq!(b.to_vec::<f32>().unwrap(), [1.25]);
}
