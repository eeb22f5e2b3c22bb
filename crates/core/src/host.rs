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
