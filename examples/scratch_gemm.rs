use candle_core::{DType, Device, Tensor};
use std::time::Instant;
fn bench(name: &str, f: impl Fn() -> Tensor, flops: f64) {
    for _ in 0..3 {
        f();
    }
    let n = 30;
    let t = Instant::now();
    for _ in 0..n {
        f();
    }
    let dt = t.elapsed().as_secs_f64() / n as f64;
    println!("{name:40} {:8.3} ms {:6.1} GFLOP/s", dt * 1e3, flops / dt / 1e9);
}
fn main() {
    let d = Device::Cpu;
    for m in [22usize, 256, 1024] {
        let x = Tensor::randn(0f32, 1., (m, 384), &d).unwrap();
        let w = Tensor::randn(0f32, 1., (1536, 384), &d).unwrap();
        let wt = w.t().unwrap().contiguous().unwrap();
        let fl = 2.0 * m as f64 * 384.0 * 1536.0;
        bench(&format!("m={m} x @ w.t() (strided)"), || x.matmul(&w.t().unwrap()).unwrap(), fl);
        bench(&format!("m={m} x @ wt (contiguous)"), || x.matmul(&wt).unwrap(), fl);
        let xb = x.to_dtype(DType::BF16).unwrap();
        let wtb = wt.to_dtype(DType::BF16).unwrap();
        bench(&format!("m={m} bf16 x @ wt"), || xb.matmul(&wtb).unwrap(), fl);
        let h = Tensor::randn(0f32, 1., (m, 1536), &d).unwrap();
        bench(&format!("m={m} gelu_erf"), || h.gelu_erf().unwrap(), 0.0);
        bench(&format!("m={m} gelu tanh"), || h.gelu().unwrap(), 0.0);
    }
}
