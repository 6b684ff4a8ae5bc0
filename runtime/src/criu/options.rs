//! CRIU options the engine can turn on. Recorded in a checkpoint's metadata so that a
//! restore applies the same ones without the caller repeating them.

use serde::{Deserialize, Serialize};

/// The CRIU options used for a dump (and re-applied on restore).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CriuOpts {
    /// Keep the process tree running after the dump.
    pub leave_running: bool,
    /// Checkpoint/restore established TCP connections (TCP repair mode).
    pub tcp_established: bool,
    /// Restore TCP sockets as closed instead of repairing them.
    pub tcp_close: bool,
    /// Checkpoint/restore file locks (flock/posix/ofd).
    pub file_locks: bool,
    /// The tree is attached to a terminal/session it does not own (a "shell job").
    pub shell_job: bool,
    /// Allow link remapping of open-but-unlinked or hard-linked files.
    pub link_remap: bool,
    /// Allow unix sockets whose peer is outside the dumped tree.
    pub ext_unix_sk: bool,
    /// External resources, in CRIU's `--external` syntax (e.g. `mnt[/path]:key`).
    pub external: Vec<String>,
    /// Files already open in the restorer handed to the restored tree: (fd, key).
    #[serde(skip)]
    pub inherit_fds: Vec<(i32, String)>,
}

impl CriuOpts {
    /// The RPC `criu_opts` carrying these options. Only options that are on are sent, so
    /// CRIU's own defaults apply to the rest. `images_dir_fd` and the other per-request
    /// fields (pid, log, work dir, rst_sibling) are the caller's to fill in.
    pub(crate) fn to_rpc(&self, images_dir_fd: i32) -> super::rpc::CriuOpts {
        let on = |b: bool| b.then_some(true);
        super::rpc::CriuOpts {
            images_dir_fd,
            leave_running: on(self.leave_running),
            tcp_established: on(self.tcp_established),
            tcp_close: on(self.tcp_close),
            file_locks: on(self.file_locks),
            shell_job: on(self.shell_job),
            link_remap: on(self.link_remap),
            ext_unix_sk: on(self.ext_unix_sk),
            external: self.external.clone(),
            inherit_fd: self
                .inherit_fds
                .iter()
                .map(|(fd, key)| super::rpc::InheritFd {
                    key: key.clone(),
                    fd: *fd,
                })
                .collect(),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn to_rpc_maps_fields_one_to_one() {
        let opts = CriuOpts {
            leave_running: true,
            tcp_established: true,
            tcp_close: false,
            file_locks: true,
            shell_job: true,
            link_remap: true,
            ext_unix_sk: true,
            external: vec!["mnt[/data]:data".into()],
            inherit_fds: vec![(9, "pipe:[123]".into())],
        };
        let r = opts.to_rpc(4);
        assert_eq!(r.images_dir_fd, 4);
        assert_eq!(r.leave_running, Some(true));
        assert_eq!(r.tcp_established, Some(true));
        assert_eq!(r.tcp_close, None);
        assert_eq!(r.file_locks, Some(true));
        assert_eq!(r.shell_job, Some(true));
        assert_eq!(r.link_remap, Some(true));
        assert_eq!(r.ext_unix_sk, Some(true));
        assert_eq!(r.external, vec!["mnt[/data]:data".to_string()]);
        assert_eq!(r.inherit_fd.len(), 1);
        assert_eq!(
            (r.inherit_fd[0].fd, r.inherit_fd[0].key.as_str()),
            (9, "pipe:[123]")
        );
        // Never set by the engine for plain processes.
        assert_eq!(r.manage_cgroups, None);
        assert_eq!(r.orphan_pts_master, None);
        assert_eq!(r.pid, None);
    }

    #[test]
    fn default_opts_send_only_the_images_dir() {
        use prost::Message;
        let r = CriuOpts::default().to_rpc(3);
        assert_eq!(r.encode_to_vec(), vec![0x08, 3]);
    }
}
