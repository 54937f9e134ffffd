//! The process's own memory, for metrics: what a pod's limit is measured against.

/// Resident memory of this process, from `/proc/self/status`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcessMemory {
    /// `VmRSS`, in bytes.
    pub resident: u64,
    /// `VmHWM`: the most ever resident, in bytes.
    pub peak: u64,
}

/// This process's memory, or `None` where `/proc` does not tell it.
pub fn process_memory() -> Option<ProcessMemory> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_status(&status)
}

fn parse_status(status: &str) -> Option<ProcessMemory> {
    let kib = |key: &str| -> Option<u64> {
        let line = status.lines().find_map(|l| l.strip_prefix(key))?;
        let v = line.trim_start_matches(':').trim().strip_suffix("kB")?.trim();
        v.parse::<u64>().ok()?.checked_mul(1024)
    };
    Some(ProcessMemory { resident: kib("VmRSS")?, peak: kib("VmHWM")? })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_rss_and_peak() {
        let s = "Name:\taetherfs\nVmHWM:\t   92096 kB\nVmRSS:\t   70920 kB\nRssAnon:\t   47868 kB\n";
        assert_eq!(parse_status(s), Some(ProcessMemory { resident: 70920 * 1024, peak: 92096 * 1024 }));
        assert_eq!(parse_status("VmRSS:\t1 kB\n"), None);
        assert_eq!(parse_status("VmRSS:\tmany kB\nVmHWM:\t1 kB\n"), None);
        let own = process_memory().expect("Linux has /proc");
        assert!(own.resident > 0 && own.peak >= own.resident);
    }
}
