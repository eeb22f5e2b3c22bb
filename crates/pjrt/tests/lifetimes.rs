//! Threads and leaks: one client used from many threads, clients made in several threads, and
//! every PJRT object destroyed — counted by the wrappers — after loops on success and error paths.

mod common;

use accelrt_pjrt::{Client, LiveObjects, PjrtError};
use common::plugin;
use std::sync::Arc;

const SCALE: &str = r#"func.func @main(%a: tensor<8xf32>, %s: tensor<f32>) -> (tensor<8xf32>, tensor<f32>) {
  %b = stablehlo.broadcast_in_dim %s, dims = [] : (tensor<f32>) -> tensor<8xf32>
  %0 = stablehlo.multiply %a, %b : tensor<8xf32>
  %zero = stablehlo.constant dense<0.0> : tensor<f32>
  %1 = stablehlo.reduce(%0 init: %zero) applies stablehlo.add across dimensions = [0] : (tensor<8xf32>, tensor<f32>) -> tensor<f32>
  return %0, %1 : tensor<8xf32>, tensor<f32>
}"#;

fn none() -> LiveObjects {
    LiveObjects::default()
}

#[test]
fn one_client_from_many_threads() {
    let client = Client::new(&plugin()).unwrap();
    let exe = Arc::new(client.compile_mlir(SCALE).unwrap());
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let (client, exe) = (client.clone(), exe.clone());
            std::thread::spawn(move || {
                for i in 0..50 {
                    let scale = (t * 100 + i) as f32;
                    let a: Vec<f32> = (0..8).map(|k| k as f32).collect();
                    let out = exe
                        .execute(&[
                            &client.buffer_from_host(&a, &[8]).unwrap(),
                            &client.buffer_from_host(&[scale], &[]).unwrap(),
                        ])
                        .unwrap();
                    let expected: Vec<f32> = a.iter().map(|x| x * scale).collect();
                    assert_eq!(out[0].to_vec::<f32>().unwrap(), expected);
                    assert_eq!(out[1].to_vec::<f32>().unwrap(), [28.0 * scale]);
                }
                // Each thread also compiles its own program.
                client.compile_mlir(SCALE).unwrap();
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    drop(exe);
    assert_eq!(client.live_objects(), none());
}

#[test]
fn clients_made_and_dropped_in_several_threads() {
    let threads: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                let client = Client::new(&plugin()).unwrap();
                let exe = client.compile_mlir(SCALE).unwrap();
                let a = client.buffer_from_host(&[1f32; 8], &[8]).unwrap();
                let s = client.buffer_from_host(&[t as f32], &[]).unwrap();
                let out = exe.execute(&[&a, &s]).unwrap();
                assert_eq!(out[1].to_vec::<f32>().unwrap(), [8.0 * t as f32]);
                // Buffers outlive the executable and the client handle: they keep the client alive.
                drop(exe);
                drop(client);
                out
            })
        })
        .collect();
    for (t, handle) in threads.into_iter().enumerate() {
        let out = handle.join().unwrap();
        assert_eq!(out[0].to_vec::<f32>().unwrap(), [t as f32; 8]);
    }
}

#[test]
fn no_pjrt_objects_leak_in_loops() {
    let client = Client::new(&plugin()).unwrap();
    assert_eq!(client.live_objects(), none());
    for _ in 0..20 {
        let exe = client.compile_mlir(SCALE).unwrap();
        assert_eq!(client.live_objects().executables, 1);
        for i in 0..20 {
            let a = client.buffer_from_host(&[i as f32; 8], &[8]).unwrap();
            let s = client.buffer_from_host(&[2f32], &[]).unwrap();
            let out = exe.execute(&[&a, &s]).unwrap();
            assert_eq!(client.live_objects(), LiveObjects { buffers: 4, executables: 1, events: 0 });
            out[0].to_bytes().unwrap();
            // Error paths: refused arguments, plugin errors, bad programs.
            assert!(matches!(exe.execute(&[&a]), Err(PjrtError::ArgumentCount { .. })));
            assert!(matches!(exe.execute(&[&s, &a]), Err(PjrtError::ArgumentMismatch { .. })));
            assert!(client.buffer_from_host(&[0f32; 3], &[8]).is_err());
            assert!(out[0].to_vec::<i32>().is_err());
        }
        assert!(client.compile_mlir("func.func @main(").is_err());
        assert_eq!(client.live_objects(), LiveObjects { buffers: 0, executables: 1, events: 0 });
    }
    assert_eq!(client.live_objects(), none());
}

#[test]
fn memory_stays_flat_over_many_runs() {
    // A leak the counters cannot see (inside the plugin) shows as growing resident memory.
    let client = Client::new(&plugin()).unwrap();
    let exe = client.compile_mlir(SCALE).unwrap();
    let big: Vec<f32> = vec![1.0; 8];
    let run = |n: usize| {
        for _ in 0..n {
            let a = client.buffer_from_host(&big, &[8]).unwrap();
            let s = client.buffer_from_host(&[3f32], &[]).unwrap();
            exe.execute(&[&a, &s]).unwrap();
        }
    };
    run(2_000);
    let before = resident_kib();
    run(20_000);
    let after = resident_kib();
    assert!(after < before + 20 * 1024, "resident memory grew from {before} KiB to {after} KiB over 20,000 runs");
}

fn resident_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}
