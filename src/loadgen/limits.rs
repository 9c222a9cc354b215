//! The process limits a load run meets first: open files (each connection is a descriptor, and the
//! usual soft limit of 1,024 is far below the 10,000 idle connections the hardening target names),
//! and reading a server's resident memory to measure what its connections cost.

use std::path::Path;

use super::BenchError;

/// Linux's default `fs.nr_open`: a soft limit above it cannot be set even when the hard limit is
/// unlimited.
const NOFILE_CEILING: u64 = 1 << 20;

/// Raises this process's soft open-file limit to its hard limit; returns the limit now in force.
pub fn raise_nofile_limit() -> Result<u64, BenchError> {
    rlimit::increase_nofile_limit(NOFILE_CEILING).map_err(BenchError::FileLimit)
}

/// The resident memory of process `pid` in KiB (`VmRSS` in `/proc/PID/status`), where there is a
/// `/proc`.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status =
        std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("status")).ok()?;
    parse_vm_rss(&status)
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_rss_is_read() {
        let status = "Name:\tcardinal\nVmPeak:\t  99 kB\nVmRSS:\t   12345 kB\nThreads:\t3\n";
        assert_eq!(parse_vm_rss(status), Some(12345));
        assert_eq!(parse_vm_rss("Name: x\n"), None);
    }

    #[test]
    fn the_limit_is_raised_to_at_least_what_it_was() -> Result<(), BenchError> {
        let limit = raise_nofile_limit()?;
        assert!(limit >= 256, "{limit}");
        Ok(())
    }
}
