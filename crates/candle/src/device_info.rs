//! What this machine's CPU is, for `DeviceInfo`.

use accelrt_core::{DeviceInfo, DeviceKind};

pub(crate) fn cpu_info() -> DeviceInfo {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let name = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, v)| v.trim().to_string()))
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let kib = |key: &str| {
        meminfo.lines().find_map(|l| l.strip_prefix(key)?.trim().strip_suffix("kB")?.trim().parse::<u64>().ok())
    };
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let mut features: Vec<&str> = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        for (f, on) in [
            ("avx2", std::arch::is_x86_feature_detected!("avx2")),
            ("fma", std::arch::is_x86_feature_detected!("fma")),
            ("avx512f", std::arch::is_x86_feature_detected!("avx512f")),
        ] {
            if on {
                features.push(f);
            }
        }
    }
    DeviceInfo {
        kind: DeviceKind::Cpu,
        spec: "cpu".into(),
        name,
        memory_total_bytes: kib("MemTotal:").map(|k| k * 1024),
        memory_free_bytes: kib("MemAvailable:").map(|k| k * 1024),
        details: vec![
            ("threads".into(), threads.to_string()),
            ("simd".into(), features.join(",")),
            ("candle".into(), "0.11".into()),
        ],
    }
}
