//! Facts about the machine a benchmark or evaluation ran on, recorded in every report so that numbers can be
//! compared across runs.

use serde::{Deserialize, Serialize};

/// Hardware and software facts, each `None` when the system does not expose it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MachineFacts {
    /// CPUs this process may use (honours affinity masks and cgroup CPU quotas).
    pub logical_cores: usize,
    /// CPU model name from `/proc/cpuinfo`.
    pub cpu_model: Option<String>,
    /// Physical memory from `/proc/meminfo` (`MemTotal`), in bytes.
    pub memory_bytes: Option<u64>,
    /// cgroup v2 memory limit (`/sys/fs/cgroup/memory.max`) when one is set, in bytes.
    pub memory_limit_bytes: Option<u64>,
    /// Distribution name (`PRETTY_NAME` from `/etc/os-release`), else the Rust target OS.
    pub os: String,
    /// Kernel release from `/proc/sys/kernel/osrelease`.
    pub kernel: Option<String>,
    pub arch: String,
    /// Version of this crate (the facematch build that produced the numbers).
    pub crate_version: String,
}

impl MachineFacts {
    /// Reads the facts of the running machine. Never fails: facts the system does not expose are `None`.
    pub fn collect() -> Self {
        let read = |path: &str| std::fs::read_to_string(path).ok();
        MachineFacts {
            logical_cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model: read("/proc/cpuinfo").as_deref().and_then(parse_cpu_model),
            memory_bytes: read("/proc/meminfo").as_deref().and_then(parse_mem_total),
            memory_limit_bytes: read("/sys/fs/cgroup/memory.max")
                .as_deref()
                .and_then(parse_memory_max),
            os: read("/etc/os-release")
                .as_deref()
                .and_then(parse_pretty_name)
                .unwrap_or_else(|| std::env::consts::OS.to_owned()),
            kernel: read("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty()),
            arch: std::env::consts::ARCH.to_owned(),
            crate_version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }

    /// One-line description for report headers, e.g.
    /// `16 cores, AMD EPYC 7B13, 62.8 GiB RAM, Debian GNU/Linux 12 (bookworm), x86_64, build 0.1.0`.
    pub fn summary(&self) -> String {
        let mut parts = vec![format!("{} cores", self.logical_cores)];
        if let Some(model) = &self.cpu_model {
            parts.push(model.clone());
        }
        if let Some(bytes) = self.memory_bytes {
            parts.push(format!("{} RAM", gibibytes(bytes)));
        }
        if let Some(limit) = self.memory_limit_bytes {
            parts.push(format!("cgroup limit {}", gibibytes(limit)));
        }
        parts.push(self.os.clone());
        if let Some(kernel) = &self.kernel {
            parts.push(format!("kernel {kernel}"));
        }
        parts.push(self.arch.clone());
        parts.push(format!("build {}", self.crate_version));
        parts.join(", ")
    }
}

fn gibibytes(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

/// First `model name` entry of `/proc/cpuinfo` (x86); ARM kernels name the part under `Model` or `Hardware`.
fn parse_cpu_model(cpuinfo: &str) -> Option<String> {
    ["model name", "Model", "Hardware"].iter().find_map(|key| {
        cpuinfo.lines().find_map(|line| {
            let (name, value) = line.split_once(':')?;
            (name.trim() == *key && !value.trim().is_empty()).then(|| value.trim().to_owned())
        })
    })
}

/// `MemTotal:  131899248 kB` → bytes.
fn parse_mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut fields = line.split_whitespace().skip(1);
    let value: u64 = fields.next()?.parse().ok()?;
    match fields.next() {
        Some("kB") => value.checked_mul(1024),
        None => Some(value),
        Some(_) => None,
    }
}

/// cgroup v2 `memory.max`: a byte count, or `max` when unlimited.
fn parse_memory_max(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// `PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"` → `Debian GNU/Linux 12 (bookworm)`.
fn parse_pretty_name(os_release: &str) -> Option<String> {
    let value = os_release.lines().find_map(|l| l.strip_prefix("PRETTY_NAME="))?;
    let value = value.trim().trim_matches('"').trim_matches('\'');
    (!value.is_empty()).then(|| value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collect_reads_this_machine() {
        let facts = MachineFacts::collect();
        assert!(facts.logical_cores >= 1);
        assert_eq!(facts.arch, std::env::consts::ARCH);
        assert!(!facts.os.is_empty());
        if cfg!(target_os = "linux") {
            assert!(facts.cpu_model.is_some(), "/proc/cpuinfo names the cpu");
            assert!(
                facts.memory_bytes.is_some_and(|b| b > 1 << 26),
                "/proc/meminfo gives MemTotal"
            );
        }
        let summary = facts.summary();
        assert!(
            summary.starts_with(&format!("{} cores", facts.logical_cores)),
            "{summary}"
        );
    }

    #[test]
    fn parsers_read_the_kernel_formats() {
        let cpuinfo =
            "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) CPU @ 2.20GHz\n";
        assert_eq!(
            parse_cpu_model(cpuinfo).as_deref(),
            Some("Intel(R) Xeon(R) CPU @ 2.20GHz")
        );
        assert_eq!(parse_cpu_model("processor : 0\n"), None);
        assert_eq!(
            parse_mem_total("MemTotal:       16384 kB\nMemFree: 1 kB\n"),
            Some(16384 * 1024)
        );
        assert_eq!(parse_mem_total("MemFree: 1 kB\n"), None);
        assert_eq!(parse_memory_max("max\n"), None);
        assert_eq!(parse_memory_max("4294967296\n"), Some(4294967296));
        assert_eq!(
            parse_pretty_name("NAME=\"Debian\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n").as_deref(),
            Some("Debian GNU/Linux 12 (bookworm)")
        );
    }
}
