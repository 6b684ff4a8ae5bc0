//! What we read of `runc state ID` / `runc list --format json`: a container's state, its
//! status typed so callers match variants instead of comparing strings.

use std::fmt;

use serde::Deserialize;

/// A container's status as the OCI runtime reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContainerStatus {
    /// `runc create` has not finished.
    Creating,
    /// Created, its program not started yet.
    Created,
    /// Its init runs.
    Running,
    /// Frozen in its cgroup (`runc pause`).
    Paused,
    /// Its init has exited.
    Stopped,
    /// A status this code does not know (another runtime's), or none reported: kept
    /// readable so one odd container does not make a whole `list` fail.
    #[default]
    #[serde(other)]
    Unknown,
}

impl ContainerStatus {
    /// The runtime's own word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            ContainerStatus::Creating => "creating",
            ContainerStatus::Created => "created",
            ContainerStatus::Running => "running",
            ContainerStatus::Paused => "paused",
            ContainerStatus::Stopped => "stopped",
            ContainerStatus::Unknown => "unknown",
        }
    }
}

impl fmt::Display for ContainerStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `runc state ID` / `runc list --format json`: what we use of a container's state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct ContainerState {
    /// Container id.
    pub id: String,
    /// PID of the container's init, as seen from the host.
    pub pid: i32,
    /// Its status.
    pub status: ContainerStatus,
    /// Bundle directory.
    pub bundle: String,
    /// Root filesystem.
    pub rootfs: String,
    /// Creation time (RFC 3339).
    pub created: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_read_from_runtime_json() {
        let s: ContainerState =
            serde_json::from_str(r#"{"id":"c","pid":7,"status":"paused","bundle":"/b"}"#)
                .expect("state");
        assert_eq!(
            (s.id.as_str(), s.pid, s.status),
            ("c", 7, ContainerStatus::Paused)
        );
        let odd: ContainerState =
            serde_json::from_str(r#"{"id":"c","status":"hibernating"}"#).expect("odd");
        assert_eq!(odd.status, ContainerStatus::Unknown);
        assert_eq!(ContainerStatus::Stopped.to_string(), "stopped");
    }
}
