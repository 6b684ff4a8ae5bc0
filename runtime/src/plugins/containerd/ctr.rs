//! containerd through its own client, `ctr`: container info, task state, snapshot
//! mounts, container create and removal. Reading and simple writes go through `ctr`
//! (no containerd client crate to match with our tonic/prost); what `ctr` cannot do
//! (a task created from a checkpoint path, a container's spec replaced) is in `grpc.rs`.

use std::path::Path;
use std::process::{Command, Stdio};

use serde::Deserialize;

use super::error::ContainerdError;
use super::target::ContainerdTarget;
use crate::host;

/// `ctr containers info` (the fields we use).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ContainerInfo {
    /// Image reference.
    #[serde(rename = "Image")]
    pub image: String,
    /// Runtime.
    #[serde(rename = "Runtime")]
    pub runtime: RuntimeInfo,
    /// Snapshot key.
    #[serde(rename = "SnapshotKey")]
    pub snapshot_key: String,
    /// Snapshotter.
    #[serde(rename = "Snapshotter")]
    pub snapshotter: String,
    /// The OCI spec.
    #[serde(rename = "Spec")]
    pub spec: serde_json::Value,
    /// Labels.
    #[serde(rename = "Labels")]
    pub labels: std::collections::HashMap<String, String>,
}

/// A container's runtime.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct RuntimeInfo {
    /// e.g. `io.containerd.runc.v2`.
    #[serde(rename = "Name")]
    pub name: String,
    /// Its options, as `ctr` prints a protobuf Any.
    #[serde(rename = "Options")]
    pub options: Option<AnyJson>,
}

/// A protobuf Any as `ctr` prints it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct AnyJson {
    /// Type URL.
    pub type_url: String,
    /// Base64 value.
    pub value: String,
}

/// Runs `ctr --address A --namespace N ARGS`; maps failures onto clear errors.
pub fn ctr(t: &ContainerdTarget, args: &[&str]) -> Result<String, ContainerdError> {
    let bin = host::find_executable(Path::new("ctr")).ok_or(ContainerdError::CtrNotFound)?;
    let out = Command::new(bin)
        .args(["--address", &t.address, "--namespace", &t.namespace])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| ContainerdError::Command {
            command: format!("ctr {}", args.join(" ")),
            detail: e.to_string(),
        })?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let detail = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if detail.contains("connection error") || detail.contains("failed to dial") {
        return Err(ContainerdError::Unreachable {
            address: t.address.clone(),
            detail,
        });
    }
    if detail.contains("not found") {
        return Err(ContainerdError::NotFound {
            id: t.id.clone(),
            namespace: t.namespace.clone(),
            address: t.address.clone(),
        });
    }
    Err(ContainerdError::Command {
        command: format!("ctr {}", args.join(" ")),
        detail,
    })
}

/// The container's record.
pub fn info(t: &ContainerdTarget) -> Result<ContainerInfo, ContainerdError> {
    let out = ctr(t, &["containers", "info", &t.id])?;
    serde_json::from_str(&out).map_err(|e| ContainerdError::Command {
        command: format!("ctr containers info {}", t.id),
        detail: format!("unexpected output: {e}"),
    })
}

/// Whether a container of the id exists.
pub fn exists(t: &ContainerdTarget) -> Result<bool, ContainerdError> {
    let out = ctr(t, &["containers", "list", "-q"])?;
    Ok(out.lines().any(|l| l.trim() == t.id))
}

/// The task's (PID, status), from `ctr task ls`; `None` when it has no task.
pub fn task(t: &ContainerdTarget) -> Result<Option<(i32, String)>, ContainerdError> {
    let out = ctr(t, &["tasks", "list"])?;
    Ok(out.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() >= 3 && f[0] == t.id).then(|| (f[1].parse().unwrap_or(0), f[2].to_string()))
    }))
}

/// A mount as containerd describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Filesystem type.
    pub kind: String,
    /// Source.
    pub source: String,
    /// Options.
    pub options: Vec<String>,
}

/// The mounts of snapshot `key` (`ctr snapshots mounts`, which prints a mount command).
pub fn snapshot_mounts(
    t: &ContainerdTarget,
    snapshotter: &str,
    key: &str,
) -> Result<Vec<Mount>, ContainerdError> {
    let mut args = vec!["snapshots"];
    if !snapshotter.is_empty() {
        args.extend(["--snapshotter", snapshotter]);
    }
    args.extend(["mounts", "/cedana-target", key]);
    let out = ctr(t, &args)?;
    Ok(out.lines().filter_map(parse_mount_command).collect())
}

/// `mount -t TYPE SOURCE TARGET [-o OPTS]` -> a mount.
fn parse_mount_command(line: &str) -> Option<Mount> {
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.first() != Some(&"mount") || f.get(1) != Some(&"-t") || f.len() < 5 {
        return None;
    }
    let options = match f.iter().position(|x| *x == "-o") {
        Some(i) => f.get(i + 1)?.split(',').map(str::to_string).collect(),
        None => Vec::new(),
    };
    Some(Mount {
        kind: f[2].into(),
        source: f[3].into(),
        options,
    })
}

/// Removes the container, its task and its snapshot (best effort, for cleanup).
pub fn remove(t: &ContainerdTarget) {
    let _ = ctr(t, &["tasks", "delete", "--force", &t.id]);
    let _ = ctr(t, &["containers", "delete", &t.id]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ctr_snapshot_mount_commands() {
        let m = parse_mount_command(
            "mount -t overlay overlay /cedana-target -o index=off,workdir=/w,upperdir=/u,lowerdir=/l",
        )
        .unwrap();
        assert_eq!(m.kind, "overlay");
        assert_eq!(m.source, "overlay");
        assert_eq!(
            m.options,
            ["index=off", "workdir=/w", "upperdir=/u", "lowerdir=/l"]
        );
        assert_eq!(
            parse_mount_command("mount -t bind /src /cedana-target -o rbind,rw")
                .unwrap()
                .options,
            ["rbind", "rw"]
        );
        assert!(parse_mount_command("something else").is_none());
    }
}
