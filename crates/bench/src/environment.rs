//! What a result was measured on: captured into every result file.

use crate::hardware::{probe_host_accelerators, HostAccelerator};
use accelrt_core::DeviceInfo;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The machine a result was measured on, and how busy it was.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Environment {
    /// What ran the model: the accelrt backend's name (e.g. `candle`, `xla`) for accelrt, the
    /// peer's system name (e.g. `pytorch`) for a peer, the server's backend for `--url`.
    pub backend: String,
    /// The device string, e.g. `cpu`, `cuda:0`, `neuron:0-1`; for a peer, the device it reports
    /// (else `--peer-device`).
    pub device: String,
    /// The device's model name (the CPU brand string, the GPU name).
    pub device_name: String,
    /// Device memory in bytes, when the backend reports it (`None` for the CPU).
    pub device_memory_total_bytes: Option<u64>,
    /// The host CPU's model name (`/proc/cpuinfo`), else the architecture.
    pub cpu_model: String,
    /// Threads available to the run (`available_parallelism`); must equal the catalog's vCPUs for
    /// the run to be priced as that instance type.
    pub cpu_threads: usize,
    /// Host memory (`MemTotal`) in bytes; `None` off Linux.
    pub host_memory_bytes: Option<u64>,
    /// `OS ARCH`, e.g. `linux x86_64`.
    pub os: String,
    /// The harness's crate version (`CARGO_PKG_VERSION`).
    pub accelrt_version: String,
    /// The source commit the harness was built from; see [`git_commit`].
    pub git_commit: String,
    /// `rustc --version` of the compiler that built the harness (`unknown` if it could not be read).
    pub rustc: String,
    /// Further device/runtime facts (driver, runtime, library versions …).
    pub details: Vec<(String, String)>,
    /// When the run finished, RFC 3339 UTC.
    pub date: String,
    /// Accelerators present on the host, used or not (a CPU run on a g5 still finds its GPU).
    #[serde(default)]
    pub host_accelerators: Vec<HostAccelerator>,
    /// How busy the host was while the scenario ran (absent in older results).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_load: Option<HostLoad>,
}

impl Environment {
    /// This host and `device` as they are now, recorded as run by `backend`. `date` is the time of
    /// the call (the harness calls it when a scenario ends); `host_load` is left `None` for the
    /// caller to fill in. Reads `/proc` and runs `git` once per process; never fails.
    pub fn capture(backend: &str, device: &DeviceInfo) -> Environment {
        Environment {
            backend: backend.into(),
            device: device.spec.clone(),
            device_name: device.name.clone(),
            device_memory_total_bytes: device.memory_total_bytes,
            cpu_model: accelrt_core::host::cpu_model(),
            cpu_threads: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            host_memory_bytes: accelrt_core::host::meminfo_bytes("MemTotal"),
            os: format!("{} {}", std::env::consts::OS, std::env::consts::ARCH),
            accelrt_version: env!("CARGO_PKG_VERSION").into(),
            git_commit: git_commit(),
            rustc: env!("ACCELRT_RUSTC_VERSION").into(),
            details: device
                .details
                .iter()
                .map(|(k, v)| match (device.kind, k.as_str()) {
                    // The host's full list (VNNI, BF16, AMX), not only what the kernels use.
                    (accelrt_core::DeviceKind::Cpu, "simd") => {
                        (k.clone(), accelrt_core::host::simd_features().join(","))
                    }
                    _ => (k.clone(), v.clone()),
                })
                .collect(),
            date: now_rfc3339(),
            host_accelerators: probe_host_accelerators(Path::new("/")),
            host_load: None,
        }
    }
}

/// The commit of the source checkout this harness was built from (12 hex digits, `-dirty` when
/// tracked files differ from it), read once per process with `git`; `unknown` when the checkout
/// or git is gone. Read at run time so that git operations never force a rebuild.
pub fn git_commit() -> String {
    static COMMIT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    COMMIT
        .get_or_init(|| {
            let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
            let git = |args: &[&str]| {
                let o = std::process::Command::new("git").arg("-C").arg(&root).args(args).output().ok()?;
                o.status.success().then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
            };
            match git(&["rev-parse", "--short=12", "HEAD"]) {
                Some(commit) => {
                    let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
                    format!("{commit}{}", if dirty { "-dirty" } else { "" })
                }
                None => "unknown".into(),
            }
        })
        .clone()
}

/// Other processes may use at most this share of the host's CPU time during a scenario …
pub const NOISY_OTHER_CPU_SHARE: f64 = 0.10;
/// … and the hypervisor may steal at most this share, before the run is flagged noisy.
pub const NOISY_STEAL_SHARE: f64 = 0.02;

/// The host's load during one scenario (warm-up included), from `/proc/stat` and the processes'
/// `/proc/PID/stat` deltas. A noisy run is flagged, not invalid: its numbers are real but may not
/// repeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostLoad {
    /// The 1-minute load average when the scenario ended (`/proc/loadavg`; includes the run itself).
    pub load_avg_1m: Option<f64>,
    /// Share of the host's CPU time (all CPUs) that other processes used (0 to 1); `None` when it
    /// cannot be told apart, e.g. a local server measured with `--url`.
    pub other_cpu_share: Option<f64>,
    /// Share of the host's CPU time the hypervisor stole (0 to 1).
    pub steal_share: Option<f64>,
    /// Whether other processes or steal exceeded [`NOISY_OTHER_CPU_SHARE`] / [`NOISY_STEAL_SHARE`].
    pub noisy: bool,
    /// Why it is noisy, in words.
    #[serde(default)]
    pub noisy_reasons: Vec<String>,
}

/// CPU time counters at one moment, in clock ticks (`USER_HZ`, usually 1/100 s) since boot. Only
/// the difference between two readings means anything.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct CpuTimes {
    /// Every CPU's time: user, nice, system, idle, iowait, irq, softirq and steal.
    pub total: u64,
    /// Time spent running something: user, nice, system, irq and softirq.
    pub busy: u64,
    /// Time stolen by the hypervisor.
    pub steal: u64,
    /// User and system time of the measured processes (this one and any peer).
    pub ours: u64,
}

impl CpuTimes {
    /// Parses the `cpu` line of `/proc/stat` and adds the `utime`/`stime` of each `/proc/PID/stat`
    /// text in `processes`.
    pub fn parse(proc_stat: &str, processes: &[String]) -> Option<CpuTimes> {
        let line = proc_stat.lines().find(|l| l.starts_with("cpu "))?;
        let v: Vec<u64> = line.split_whitespace().skip(1).map(|f| f.parse().unwrap_or(0)).collect();
        let at = |i: usize| v.get(i).copied().unwrap_or(0);
        let (user, nice, system, idle, iowait, irq, softirq, steal) =
            (at(0), at(1), at(2), at(3), at(4), at(5), at(6), at(7));
        let ours = processes
            .iter()
            .filter_map(|s| {
                // Fields after the command name (which may hold spaces) in parentheses.
                let rest = &s[s.rfind(')')? + 1..];
                let f: Vec<&str> = rest.split_whitespace().collect();
                Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
            })
            .sum();
        Some(CpuTimes {
            total: user + nice + system + idle + iowait + irq + softirq + steal,
            busy: user + nice + system + irq + softirq,
            steal,
            ours,
        })
    }

    /// This host's counters now, with this process and `pids` as ours.
    pub fn now(pids: &[u32]) -> Option<CpuTimes> {
        let read = |p: &str| crate::limits::read_bounded(Path::new(p), crate::limits::MAX_FILE_BYTES, "host file").ok();
        let stat = read("/proc/stat")?;
        let mut processes = vec![read("/proc/self/stat")?];
        processes.extend(pids.iter().filter_map(|p| read(&format!("/proc/{p}/stat"))));
        CpuTimes::parse(&stat, &processes)
    }
}

/// The load between two readings: shares of the host's CPU time, and the noisy flag.
pub fn host_load(before: CpuTimes, after: CpuTimes, load_avg_1m: Option<f64>, count_others: bool) -> HostLoad {
    let total = after.total.saturating_sub(before.total);
    let share = |n: u64| (total > 0).then(|| (n as f64 / total as f64).clamp(0.0, 1.0));
    let busy = after.busy.saturating_sub(before.busy);
    let ours = after.ours.saturating_sub(before.ours);
    let other_cpu_share = if count_others { share(busy.saturating_sub(ours)) } else { None };
    let steal_share = share(after.steal.saturating_sub(before.steal));
    let mut noisy_reasons = Vec::new();
    if let Some(o) = other_cpu_share.filter(|&o| o > NOISY_OTHER_CPU_SHARE) {
        noisy_reasons.push(format!(
            "other processes used {:.0} % of the host's CPU time (bound {:.0} %)",
            o * 100.0,
            NOISY_OTHER_CPU_SHARE * 100.0
        ));
    }
    if let Some(s) = steal_share.filter(|&s| s > NOISY_STEAL_SHARE) {
        noisy_reasons.push(format!(
            "the hypervisor stole {:.1} % of the CPU time (bound {:.0} %)",
            s * 100.0,
            NOISY_STEAL_SHARE * 100.0
        ));
    }
    HostLoad { load_avg_1m, other_cpu_share, steal_share, noisy: !noisy_reasons.is_empty(), noisy_reasons }
}

/// Watches the host's load over one scenario.
pub struct LoadProbe {
    before: Option<CpuTimes>,
    pids: Vec<u32>,
}

impl LoadProbe {
    /// Starts watching, with this process and `pids` (e.g. a peer runner) counted as the run.
    pub fn start(pids: Vec<u32>) -> LoadProbe {
        LoadProbe { before: CpuTimes::now(&pids), pids }
    }

    /// The load since `start`; `count_others: false` when another process of the run (a local
    /// server) cannot be told apart from other load.
    pub fn finish(&self, count_others: bool) -> Option<HostLoad> {
        let after = CpuTimes::now(&self.pids)?;
        let load = crate::limits::read_bounded(Path::new("/proc/loadavg"), crate::limits::MAX_FILE_BYTES, "host file")
            .ok()
            .and_then(|s| s.split_whitespace().next().and_then(|f| f.parse::<f64>().ok()));
        Some(host_load(self.before?, after, load, count_others))
    }
}

/// The time now, RFC 3339 UTC to the second.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Peak resident memory of this process so far (Linux `VmHWM`), in bytes.
pub fn peak_host_memory_bytes() -> Option<u64> {
    accelrt_core::host::process_status_bytes("VmHWM")
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT_A: &str = "cpu  1000 0 500 8000 100 0 0 0 0 0\ncpu0 1 2 3\n";
    const STAT_B: &str = "cpu  1600 0 700 8600 100 0 0 100 0 0\n";

    #[test]
    fn host_load_separates_our_cpu_time_from_others_and_steal() {
        let me_a = "42 (accelrt bench) R 1 1 1 0 -1 0 0 0 0 0 300 100 0 0".to_string();
        let me_b = "42 (accelrt bench) R 1 1 1 0 -1 0 0 0 0 0 600 200 0 0".to_string();
        let a = CpuTimes::parse(STAT_A, &[me_a]).unwrap();
        let b = CpuTimes::parse(STAT_B, &[me_b]).unwrap();
        assert_eq!(a, CpuTimes { total: 9600, busy: 1500, steal: 0, ours: 400 });
        // 1,500 ticks in all: 800 busy (400 ours, 400 others), 600 idle, 100 stolen.
        let load = host_load(a, b, Some(1.5), true);
        assert!((load.other_cpu_share.unwrap() - 400.0 / 1500.0).abs() < 1e-12);
        assert!((load.steal_share.unwrap() - 100.0 / 1500.0).abs() < 1e-12);
        assert!(load.noisy);
        assert_eq!(load.noisy_reasons.len(), 2, "{:?}", load.noisy_reasons);
        // A quiet host: all the busy time is ours.
        let me_c = "42 (a) R 1 1 1 0 -1 0 0 0 0 0 1000 200 0 0".to_string();
        let c = CpuTimes::parse("cpu  1600 0 700 8600 100 0 0 0 0 0\n", &[me_c]).unwrap();
        let a2 = CpuTimes { steal: 0, ..a };
        let quiet = host_load(a2, c, None, true);
        assert_eq!(quiet.other_cpu_share, Some(0.0));
        assert!(!quiet.noisy);
        // Others not told apart (a local server): only steal counts.
        assert_eq!(host_load(a, b, None, false).other_cpu_share, None);
    }
}
