//! Which tasks of a tree use a GPU: a task that maps or holds open an NVIDIA device node
//! (`nvidia0`..., `nvidiactl`, `nvidia-uvm`) or AMD's `kfd` under the device directory
//! (`gpu.device_dir`, `/dev` on a real host).

use std::collections::BTreeMap;
use std::path::Path;

use crate::process::state::ProcessState;

/// GPU vendor of a device node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vendor {
    /// `/dev/nvidia*`.
    Nvidia,
    /// `/dev/kfd`.
    Amd,
}

impl Vendor {
    /// Its name in metadata.json.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Nvidia => "nvidia",
            Self::Amd => "amd",
        }
    }
}

/// The GPU device node `path` names under `device_dir`, with its vendor.
pub fn device(device_dir: &Path, path: &str) -> Option<(Vendor, String)> {
    // /proc shows a deleted node as `PATH (deleted)`; it is still the device.
    let path = Path::new(path.trim_end_matches(" (deleted)"));
    if path.parent()? != device_dir {
        return None;
    }
    let name = path.file_name()?.to_str()?;
    let numbered = name
        .strip_prefix("nvidia")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    match name {
        "nvidiactl" | "nvidia-uvm" => Some((Vendor::Nvidia, name.to_string())),
        "kfd" => Some((Vendor::Amd, name.to_string())),
        _ if numbered => Some((Vendor::Nvidia, name.to_string())),
        _ => None,
    }
}

/// The paths of the mappings in a `/proc/PID/maps` text.
pub fn mapped_paths(maps: &str) -> impl Iterator<Item = &str> {
    // `start-end perms offset dev inode   path`: the path is the sixth field on.
    maps.lines().filter_map(|l| {
        let mut rest = l;
        for _ in 0..5 {
            rest = rest.trim_start().split_once(' ')?.1;
        }
        let path = rest.trim_start();
        (!path.is_empty()).then_some(path)
    })
}

/// GPU device nodes `pid` maps, from `/proc/PID/maps` (none if it cannot be read).
pub fn mapped_devices(device_dir: &Path, pid: i32) -> Vec<(Vendor, String)> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    mapped_paths(&maps)
        .filter_map(|p| device(device_dir, p))
        .collect()
}

/// Every task of `state` that uses a GPU, with its devices (sorted, once each) and the
/// vendor of the first one found.
pub fn gpu_tasks(
    device_dir: &Path,
    state: &ProcessState,
) -> (Option<Vendor>, BTreeMap<i32, Vec<String>>) {
    let mut vendor = None;
    let mut tasks: BTreeMap<i32, Vec<String>> = BTreeMap::new();
    let held = state
        .open_files
        .iter()
        .filter_map(|f| Some((f.pid, device(device_dir, &f.target)?)));
    let mapped = state.tree.iter().flat_map(|p| {
        mapped_devices(device_dir, p.pid)
            .into_iter()
            .map(|d| (p.pid, d))
    });
    for (pid, (v, name)) in held.chain(mapped) {
        vendor.get_or_insert(v);
        let devices = tasks.entry(pid).or_default();
        if !devices.contains(&name) {
            devices.push(name);
        }
    }
    tasks.values_mut().for_each(|d| d.sort());
    (vendor, tasks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::state::OpenFile;

    #[test]
    fn device_nodes_are_told_from_other_files() {
        let dev = Path::new("/dev");
        for (path, want) in [
            ("/dev/nvidia0", Some((Vendor::Nvidia, "nvidia0"))),
            ("/dev/nvidia12", Some((Vendor::Nvidia, "nvidia12"))),
            ("/dev/nvidiactl", Some((Vendor::Nvidia, "nvidiactl"))),
            ("/dev/nvidia-uvm", Some((Vendor::Nvidia, "nvidia-uvm"))),
            (
                "/dev/nvidia-uvm (deleted)",
                Some((Vendor::Nvidia, "nvidia-uvm")),
            ),
            ("/dev/kfd", Some((Vendor::Amd, "kfd"))),
            ("/dev/nvidia", None),
            ("/dev/nvidia-modeset", None),
            ("/dev/nvidia0x", None),
            ("/dev/null", None),
            ("/tmp/nvidia0", None),
            ("/dev/dri/nvidia0", None),
            ("socket:[1234]", None),
        ] {
            let got = device(dev, path);
            let want = want.map(|(v, n)| (v, n.to_string()));
            assert_eq!(got, want, "{path}");
        }
    }

    #[test]
    fn mapping_paths_are_read_from_maps_lines() {
        let maps = "\
7f0000000000-7f0000001000 rw-s 00000000 00:05 1234                       /dev/nvidia0
7f0000002000-7f0000003000 rw-p 00000000 00:00 0 
7f0000004000-7f0000005000 r--p 00000000 08:01 99    /usr/lib/x86_64-linux-gnu/libcuda.so.1
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0                          [stack]
";
        let paths: Vec<&str> = mapped_paths(maps).collect();
        assert_eq!(
            paths,
            [
                "/dev/nvidia0",
                "/usr/lib/x86_64-linux-gnu/libcuda.so.1",
                "[stack]"
            ]
        );
    }

    #[test]
    fn tasks_holding_device_files_are_gpu_users() {
        let dir = Path::new("/tmp/fake-dev");
        let file = |pid, fd, target: &str| OpenFile {
            pid,
            fd,
            target: target.into(),
        };
        let state = ProcessState {
            pid: -1,
            open_files: vec![
                file(-1, 3, "/tmp/fake-dev/nvidiactl"),
                file(-1, 4, "/tmp/fake-dev/nvidia0"),
                file(-1, 5, "/tmp/fake-dev/nvidia0"),
                file(-2, 3, "/dev/nvidia0"),
                file(-2, 4, "pipe:[7]"),
            ],
            ..Default::default()
        };
        let (vendor, tasks) = gpu_tasks(dir, &state);
        assert_eq!(vendor, Some(Vendor::Nvidia));
        assert_eq!(tasks.len(), 1, "{tasks:?}");
        assert_eq!(tasks[&-1], ["nvidia0", "nvidiactl"]);
        let (none, empty) = gpu_tasks(Path::new("/dev"), &ProcessState::default());
        assert!(none.is_none() && empty.is_empty());
    }
}
