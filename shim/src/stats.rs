//! Task metrics from the container's cgroup files, as containerd's
//! `io.containerd.cgroups.v2.Metrics` on a unified (v2) host, or
//! `io.containerd.cgroups.v1.Metrics` on a v1/hybrid one (what containerd's runc shim
//! reports there, and what `ctr task metrics` prints).

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use containerd_shim::util::convert_to_any;
use containerd_shim_protos::cgroups::metrics as v1;
use containerd_shim_protos::cgroups_v2::metrics::{
    CPUStat, MemoryEvents, MemoryStat, Metrics, PidsStat,
};
use containerd_shim_protos::protobuf::well_known_types::any::Any;

use crate::error::{Result, ShimError};

/// Whether the host uses the unified (v2-only) hierarchy.
pub fn unified() -> bool {
    Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

/// The metrics of `pid`'s cgroup(s), packed for containerd.
pub fn metrics_any(pid: i32) -> Result<Any> {
    let any = if unified() {
        convert_to_any(Box::new(collect(&cgroup_dir(pid)?)))
    } else {
        convert_to_any(Box::new(collect_v1(pid)?))
    };
    any.map_err(|e| ShimError::Other(format!("encode metrics: {e}")))
}

/// The v1 directory of `controller` for `pid`.
fn v1_dir(cgroups: &str, controller: &str) -> Option<PathBuf> {
    cgroups.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, list, path) = (parts.next()?, parts.next()?, parts.next()?);
        list.split(',').any(|c| c == controller).then(|| {
            let mount = Path::new("/sys/fs/cgroup").join(list);
            let mount = if mount.exists() {
                mount
            } else {
                Path::new("/sys/fs/cgroup").join(controller)
            };
            mount.join(path.trim_start_matches('/'))
        })
    })
}

/// Reads v1 metrics (memory, cpuacct, pids) of `pid`'s cgroups.
pub fn collect_v1(pid: i32) -> Result<v1::Metrics> {
    let cgroups = fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .map_err(ShimError::io(format!("read cgroup of pid {pid}")))?;
    let mut m = v1::Metrics::new();
    if let Some(d) = v1_dir(&cgroups, "pids") {
        m.pids = Some(v1::PidsStat {
            current: single(&d, "pids.current", 0),
            limit: single(&d, "pids.max", 0),
            ..Default::default()
        })
        .into();
    }
    if let Some(d) = v1_dir(&cgroups, "cpuacct") {
        let stat = flat_keyed(&d, "cpuacct.stat");
        let tick_ns = 1_000_000_000 / 100; // USER_HZ ticks to ns
        m.cpu = Some(v1::CPUStat {
            usage: Some(v1::CPUUsage {
                total: single(&d, "cpuacct.usage", 0),
                user: stat.get("user").copied().unwrap_or(0) * tick_ns,
                kernel: stat.get("system").copied().unwrap_or(0) * tick_ns,
                per_cpu: fs::read_to_string(d.join("cpuacct.usage_percpu"))
                    .unwrap_or_default()
                    .split_whitespace()
                    .filter_map(|v| v.parse().ok())
                    .collect(),
                ..Default::default()
            })
            .into(),
            ..Default::default()
        })
        .into();
    }
    if let Some(d) = v1_dir(&cgroups, "memory") {
        let st = flat_keyed(&d, "memory.stat");
        let g = |k: &str| st.get(k).copied().unwrap_or(0);
        let entry = |prefix: &str| v1::MemoryEntry {
            usage: single(&d, &format!("{prefix}.usage_in_bytes"), 0),
            max: single(&d, &format!("{prefix}.max_usage_in_bytes"), 0),
            limit: single(&d, &format!("{prefix}.limit_in_bytes"), u64::MAX),
            failcnt: single(&d, &format!("{prefix}.failcnt"), 0),
            ..Default::default()
        };
        m.memory = Some(v1::MemoryStat {
            cache: g("cache"),
            rss: g("rss"),
            rss_huge: g("rss_huge"),
            mapped_file: g("mapped_file"),
            dirty: g("dirty"),
            writeback: g("writeback"),
            pg_pg_in: g("pgpgin"),
            pg_pg_out: g("pgpgout"),
            pg_fault: g("pgfault"),
            pg_maj_fault: g("pgmajfault"),
            inactive_anon: g("inactive_anon"),
            active_anon: g("active_anon"),
            inactive_file: g("inactive_file"),
            active_file: g("active_file"),
            unevictable: g("unevictable"),
            hierarchical_memory_limit: g("hierarchical_memory_limit"),
            hierarchical_swap_limit: g("hierarchical_memsw_limit"),
            total_cache: g("total_cache"),
            total_rss: g("total_rss"),
            total_inactive_file: g("total_inactive_file"),
            usage: Some(entry("memory")).into(),
            swap: Some(entry("memory.memsw")).into(),
            kernel: Some(entry("memory.kmem")).into(),
            kernel_tcp: Some(entry("memory.kmem.tcp")).into(),
            ..Default::default()
        })
        .into();
    }
    Ok(m)
}

/// The directory whose OOM kills are counted for `pid` (memory.events on v2,
/// memory.oom_control on v1).
pub fn oom_dir(pid: i32) -> Result<PathBuf> {
    if unified() {
        return cgroup_dir(pid);
    }
    let cgroups = fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .map_err(ShimError::io(format!("read cgroup of pid {pid}")))?;
    v1_dir(&cgroups, "memory")
        .ok_or_else(|| ShimError::FailedPrecondition(format!("pid {pid} has no memory cgroup")))
}

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

/// The OOM kill count of a cgroup (for OOM events), v2 or v1.
pub fn oom_kills(dir: &Path) -> u64 {
    ["memory.events", "memory.oom_control"]
        .iter()
        .find_map(|f| flat_keyed(dir, f).get("oom_kill").copied())
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

    #[test]
    fn v1_paths() {
        let cg = "4:memory:/a/b\n2:cpu,cpuacct:/x\n0::/\n";
        assert_eq!(
            v1_dir(cg, "memory").unwrap(),
            Path::new("/sys/fs/cgroup/memory/a/b")
        );
        let cpu = v1_dir(cg, "cpuacct").unwrap();
        assert!(cpu.ends_with("x"), "{cpu:?}");
        assert!(v1_dir(cg, "pids").is_none());
    }
}
