//! Task metrics from the container's cgroup v2 files, as containerd's
//! `io.containerd.cgroups.v2.Metrics` (what `ctr task metrics` prints).

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use containerd_shim_protos::cgroups_v2::metrics::{
    CPUStat, MemoryEvents, MemoryStat, Metrics, PidsStat,
};

use crate::error::{Result, ShimError};

/// The cgroup v2 directory of `pid` (from /proc/PID/cgroup, seen from the host).
pub fn cgroup_dir(pid: i32) -> Result<PathBuf> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .map_err(ShimError::io(format!("read cgroup of pid {pid}")))?;
    let rel = text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or_else(|| ShimError::FailedPrecondition(format!("pid {pid} has no cgroup v2 path")))?;
    Ok(Path::new("/sys/fs/cgroup").join(rel.trim_start_matches('/')))
}

fn flat_keyed(dir: &Path, file: &str) -> HashMap<String, u64> {
    fs::read_to_string(dir.join(file))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

/// A single-value file; `max` reads as 0 (no limit), as containerd reports it... except
/// for memory, where runc's metrics use u64::MAX; callers choose.
fn single(dir: &Path, file: &str, max: u64) -> u64 {
    match fs::read_to_string(dir.join(file)) {
        Ok(s) if s.trim() == "max" => max,
        Ok(s) => s.trim().parse().unwrap_or(0),
        Err(_) => 0,
    }
}

/// Reads the metrics of the cgroup `dir`.
pub fn collect(dir: &Path) -> Metrics {
    let mut m = Metrics::new();
    m.pids = Some(PidsStat {
        current: single(dir, "pids.current", 0),
        limit: single(dir, "pids.max", 0),
        ..Default::default()
    })
    .into();
    let cpu = flat_keyed(dir, "cpu.stat");
    let g = |k: &str| cpu.get(k).copied().unwrap_or(0);
    m.cpu = Some(CPUStat {
        usage_usec: g("usage_usec"),
        user_usec: g("user_usec"),
        system_usec: g("system_usec"),
        nr_periods: g("nr_periods"),
        nr_throttled: g("nr_throttled"),
        throttled_usec: g("throttled_usec"),
        ..Default::default()
    })
    .into();
    let mem = flat_keyed(dir, "memory.stat");
    let g = |k: &str| mem.get(k).copied().unwrap_or(0);
    m.memory = Some(MemoryStat {
        anon: g("anon"),
        file: g("file"),
        kernel_stack: g("kernel_stack"),
        slab: g("slab"),
        sock: g("sock"),
        shmem: g("shmem"),
        file_mapped: g("file_mapped"),
        file_dirty: g("file_dirty"),
        file_writeback: g("file_writeback"),
        anon_thp: g("anon_thp"),
        inactive_anon: g("inactive_anon"),
        active_anon: g("active_anon"),
        inactive_file: g("inactive_file"),
        active_file: g("active_file"),
        unevictable: g("unevictable"),
        slab_reclaimable: g("slab_reclaimable"),
        slab_unreclaimable: g("slab_unreclaimable"),
        pgfault: g("pgfault"),
        pgmajfault: g("pgmajfault"),
        workingset_refault: g("workingset_refault"),
        workingset_activate: g("workingset_activate"),
        workingset_nodereclaim: g("workingset_nodereclaim"),
        pgrefill: g("pgrefill"),
        pgscan: g("pgscan"),
        pgsteal: g("pgsteal"),
        pgactivate: g("pgactivate"),
        pgdeactivate: g("pgdeactivate"),
        pglazyfree: g("pglazyfree"),
        pglazyfreed: g("pglazyfreed"),
        thp_fault_alloc: g("thp_fault_alloc"),
        thp_collapse_alloc: g("thp_collapse_alloc"),
        usage: single(dir, "memory.current", 0),
        usage_limit: single(dir, "memory.max", u64::MAX),
        swap_usage: single(dir, "memory.swap.current", 0),
        swap_limit: single(dir, "memory.swap.max", u64::MAX),
        max_usage: single(dir, "memory.peak", 0),
        ..Default::default()
    })
    .into();
    let ev = flat_keyed(dir, "memory.events");
    let g = |k: &str| ev.get(k).copied().unwrap_or(0);
    m.memory_events = Some(MemoryEvents {
        low: g("low"),
        high: g("high"),
        max: g("max"),
        oom: g("oom"),
        oom_kill: g("oom_kill"),
        ..Default::default()
    })
    .into();
    m
}

/// The OOM kill count of a cgroup (for OOM events).
pub fn oom_kills(dir: &Path) -> u64 {
    flat_keyed(dir, "memory.events")
        .get("oom_kill")
        .copied()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_fake_cgroup() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("pids.current"), "3\n").unwrap();
        fs::write(d.path().join("pids.max"), "max\n").unwrap();
        fs::write(d.path().join("cpu.stat"), "usage_usec 100\nuser_usec 60\n").unwrap();
        fs::write(d.path().join("memory.current"), "4096\n").unwrap();
        fs::write(d.path().join("memory.max"), "max\n").unwrap();
        fs::write(d.path().join("memory.events"), "oom 1\noom_kill 2\n").unwrap();
        let m = collect(d.path());
        assert_eq!(m.pids.current, 3);
        assert_eq!(m.pids.limit, 0);
        assert_eq!(m.cpu.usage_usec, 100);
        assert_eq!(m.memory.usage, 4096);
        assert_eq!(m.memory.usage_limit, u64::MAX);
        assert_eq!(m.memory_events.oom_kill, 2);
        assert_eq!(oom_kills(d.path()), 2);
    }
}
