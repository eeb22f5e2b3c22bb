//! Facts about the host machine, read from Linux's /proc (absent elsewhere: `None` / the arch name).

/// The CPU's model name (`model name` in /proc/cpuinfo), else the architecture.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, v)| v.trim().to_string()))
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

/// A `Key: N kB` field of /proc/meminfo (e.g. `MemTotal`, `MemAvailable`), in bytes.
pub fn meminfo_bytes(key: &str) -> Option<u64> {
    kib_field(&std::fs::read_to_string("/proc/meminfo").ok()?, key)
}

/// A `Key: N kB` field of /proc/self/status (e.g. `VmHWM`, the peak resident size), in bytes.
pub fn process_status_bytes(key: &str) -> Option<u64> {
    kib_field(&std::fs::read_to_string("/proc/self/status").ok()?, key)
}

fn kib_field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(key)?.strip_prefix(':')?;
        rest.trim().strip_suffix("kB")?.trim().parse::<u64>().ok().map(|k| k * 1024)
    })
}

/// The CPU's SIMD features that matter for inference cost, as Linux names them in /proc/cpuinfo
/// (`avx2`, `fma`, `avx512f`, `avx512_vnni`, `avx_vnni`, `avx512_bf16`, `amx_tile`, `amx_bf16`,
/// `amx_int8`; on Arm `asimd`, `sve`, `bf16`, `i8mm`), in that order; those the CPU lacks are left out.
pub fn simd_features() -> Vec<String> {
    simd_features_in(&std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default())
}

/// [`simd_features`] from the text of a /proc/cpuinfo.
pub fn simd_features_in(cpuinfo: &str) -> Vec<String> {
    const KNOWN: &[&str] = &[
        "avx2",
        "fma",
        "avx512f",
        "avx512_vnni",
        "avx_vnni",
        "avx512_bf16",
        "amx_tile",
        "amx_bf16",
        "amx_int8",
        "asimd",
        "sve",
        "bf16",
        "i8mm",
    ];
    let flags: Vec<&str> = cpuinfo
        .lines()
        .find_map(|l| {
            let (key, value) = l.split_once(':')?;
            matches!(key.trim(), "flags" | "Features").then_some(value)
        })
        .map(|v| v.split_whitespace().collect())
        .unwrap_or_default();
    KNOWN.iter().filter(|k| flags.contains(k)).map(|k| k.to_string()).collect()
}

#[cfg(test)]
mod simd_tests {
    #[test]
    fn simd_features_include_vnni_bf16_and_amx() {
        let info = "processor\t: 0\nflags\t\t: fpu sse avx2 fma avx512f avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8 avx_vnni\n";
        assert_eq!(
            super::simd_features_in(info),
            ["avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8"]
        );
        assert_eq!(super::simd_features_in("Features\t: fp asimd sve i8mm bf16\n"), ["asimd", "sve", "bf16", "i8mm"]);
        assert!(super::simd_features_in("").is_empty());
    }
}
