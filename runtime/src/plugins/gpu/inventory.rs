//! The host's NVIDIA GPUs and the memory each GPU job holds, from `nvidia-smi`'s CSV
//! queries (`gpu.nvidia_smi`).

use std::collections::BTreeMap;
use std::path::Path;

use super::meta::GpuInfo;
use super::tool::{self, ToolFailure};

/// Query for each GPU: the order [`parse_gpus`] reads.
pub const GPU_QUERY: &str = "--query-gpu=index,uuid,name,memory.total,memory.free,driver_version";
/// Query for each compute process: the order [`parse_apps`] reads.
pub const APPS_QUERY: &str = "--query-compute-apps=pid,gpu_uuid,used_memory";
/// Output format of both queries.
pub const FORMAT: &str = "--format=csv,noheader,nounits";

/// The host's GPUs and driver.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inventory {
    /// Driver version (`580.65.06`); empty with no GPU.
    pub driver_version: String,
    /// The GPUs, by index.
    pub gpus: Vec<GpuInfo>,
}

/// The driver branch of a version: `580` of `580.65.06`.
pub fn branch(version: &str) -> &str {
    version.split('.').next().unwrap_or(version)
}

fn fields(line: &str) -> Vec<&str> {
    line.split(',').map(str::trim).collect()
}

fn number(field: &str, what: &str, line: &str) -> Result<u64, String> {
    field
        .parse()
        .map_err(|_| format!("{what} {field:?} is not a number in {line:?}"))
}

/// Parses the [`GPU_QUERY`] answer.
pub fn parse_gpus(text: &str) -> Result<Inventory, String> {
    let mut inv = Inventory::default();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let f = fields(line);
        let [index, uuid, name, total, free, driver, mig] = f[..] else {
            return Err(format!("expected 7 fields, got {line:?}"));
        };
        inv.gpus.push(GpuInfo {
            index: number(index, "index", line)? as u32,
            uuid: uuid.to_string(),
            name: name.to_string(),
            memory_total_mib: number(total, "memory.total", line)?,
            memory_free_mib: number(free, "memory.free", line)?,
            // `Disabled`, or `[N/A]` on GPUs without MIG.
            mig: mig.eq_ignore_ascii_case("enabled"),
        });
        inv.driver_version = driver.to_string();
    }
    Ok(inv)
}

/// Parses the [`APPS_QUERY`] answer: MiB held per PID, per GPU UUID.
pub fn parse_apps(text: &str) -> Result<BTreeMap<i32, Vec<(String, u64)>>, String> {
    let mut apps: BTreeMap<i32, Vec<(String, u64)>> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let [pid, uuid, used] = fields(line)[..] else {
            return Err(format!("expected 3 fields, got {line:?}"));
        };
        let pid = number(pid, "pid", line)? as i32;
        let used = number(used, "used_memory", line)?;
        apps.entry(pid).or_default().push((uuid.to_string(), used));
    }
    Ok(apps)
}

/// The host's GPUs; an error when nvidia-smi is missing or finds no driver.
pub fn query(nvidia_smi: &Path) -> Result<Inventory, ToolFailure> {
    let text = tool::run(nvidia_smi, &[GPU_QUERY, FORMAT])?;
    parse_gpus(&text).map_err(|e| ToolFailure::Failed(format!("nvidia-smi answered oddly: {e}")))
}

/// GPU memory held per PID (empty where nvidia-smi cannot say).
pub fn apps(nvidia_smi: &Path) -> BTreeMap<i32, Vec<(String, u64)>> {
    tool::run(nvidia_smi, &[APPS_QUERY, FORMAT])
        .ok()
        .and_then(|t| parse_apps(&t).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpus_and_driver_are_read_from_nvidia_smi_csv() {
        let text = "0, GPU-aaaa, NVIDIA H200, 143771, 143000, 580.65.06, Disabled\n\
                    1, GPU-bbbb, NVIDIA H200, 143771, 100, 580.65.06, Enabled\n";
        let inv = parse_gpus(text).expect("parse");
        assert_eq!(inv.driver_version, "580.65.06");
        assert_eq!(branch(&inv.driver_version), "580");
        assert_eq!(inv.gpus.len(), 2);
        assert_eq!(inv.gpus[1].uuid, "GPU-bbbb");
        assert_eq!(inv.gpus[1].memory_free_mib, 100);
        assert!(!inv.gpus[0].mig && inv.gpus[1].mig);
        assert_eq!(parse_gpus("").expect("empty"), Inventory::default());
        let e = parse_gpus("0, GPU-a, H200, lots, 1, 580, [N/A]").expect_err("bad");
        assert!(e.contains("memory.total"), "{e}");
        assert!(parse_gpus("No devices were found").is_err());
    }

    #[test]
    fn compute_apps_are_grouped_by_pid() {
        let apps =
            parse_apps("42, GPU-aaaa, 1024\n42, GPU-bbbb, 10\n7, GPU-aaaa, 5\n").expect("parse");
        assert_eq!(
            apps[&42],
            [("GPU-aaaa".into(), 1024), ("GPU-bbbb".into(), 10)]
        );
        assert_eq!(apps[&7].len(), 1);
    }
}
