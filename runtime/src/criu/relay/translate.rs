//! A runtime's swrk request as CRIU's command line: each option CRIU's RPC service reads
//! (cr-service.c) becomes the flag its CLI parser (config.c) turns into the same setting.
//! Anything else in the request is refused by tag rather than silently dropped.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::RelayError;
use crate::criu::rpc::{self, CriuReqType};

/// `criu_opts` tags this module translates (CRIU 4.1 `images/rpc.proto`).
const KNOWN_OPTS: &[(u32, &str)] = &[
    (1, "images_dir_fd"),
    (2, "pid"),
    (3, "leave_running"),
    (4, "ext_unix_sk"),
    (5, "tcp_established"),
    (6, "evasive_devices"),
    (7, "shell_job"),
    (8, "file_locks"),
    (9, "log_level"),
    (10, "log_file"),
    (12, "notify_scripts"),
    (13, "root"),
    (16, "auto_dedup"),
    (17, "work_dir_fd"),
    (18, "link_remap"),
    (23, "ext_mnt"),
    (24, "manage_cgroups"),
    (25, "cg_root"),
    (26, "rst_sibling"),
    (27, "inherit_fd"),
    (34, "manage_cgroups_mode"),
    (37, "external"),
    (38, "empty_ns"),
    (39, "join_ns"),
    (44, "freeze_cgroup"),
    (48, "lazy_pages"),
    (50, "orphan_pts_master"),
    (51, "config_file"),
    (52, "tcp_close"),
    (53, "lsm_profile"),
    (68, "images_dir"),
    (69, "leave_stopped"),
];

/// `criu_req` tags a dump or restore request may carry.
const KNOWN_REQ: &[u32] = &[1, 2];

/// `criu_cg_mode` names, by value, as `--manage-cgroups` spells them (6 = default: soft).
const CG_MODES: &[&str] = &["ignore", "none", "props", "soft", "full", "strict", "soft"];

const CLONE_NEWNET: u32 = 0x4000_0000;

/// What the request's descriptors and our own files resolve to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Places {
    /// The images directory (CRIU looks for the streamer's socket there).
    pub images_dir: PathBuf,
    /// CRIU's work directory (its log goes there).
    pub work_dir: PathBuf,
    /// Where CRIU writes the restored root's PID.
    pub pid_file: PathBuf,
    /// The program CRIU runs for each action (the relay itself), when notifications were asked for.
    pub action_script: Option<PathBuf>,
}

/// The wire tags present in one protobuf message, in order.
pub fn tags(msg: &[u8]) -> Result<Vec<(u32, &[u8])>, RelayError> {
    let mut out = Vec::new();
    let mut at = 0usize;
    let bad = |what: &str| RelayError::Protocol(format!("undecodable request: {what}"));
    while at < msg.len() {
        let key = varint(msg, &mut at).ok_or_else(|| bad("truncated key"))?;
        let (tag, wire) = ((key >> 3) as u32, key & 7);
        let start = at;
        match wire {
            0 => {
                varint(msg, &mut at).ok_or_else(|| bad("truncated varint"))?;
            }
            1 => at += 8,
            2 => {
                let len = varint(msg, &mut at).ok_or_else(|| bad("truncated length"))?;
                let len = usize::try_from(len).map_err(|_| bad("length"))?;
                let body = at;
                at = at.checked_add(len).ok_or_else(|| bad("length"))?;
                if at > msg.len() {
                    return Err(bad("field runs past the message"));
                }
                out.push((tag, &msg[body..at]));
                continue;
            }
            5 => at += 4,
            other => return Err(bad(&format!("wire type {other}"))),
        }
        if at > msg.len() {
            return Err(bad("field runs past the message"));
        }
        out.push((tag, &msg[start..at]));
    }
    Ok(out)
}

fn varint(msg: &[u8], at: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *msg.get(*at)?;
        *at += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// Refuses a request carrying a field we do not translate, naming it.
pub fn check_known_fields(req: &[u8]) -> Result<(), RelayError> {
    for (tag, body) in tags(req)? {
        if !KNOWN_REQ.contains(&tag) {
            return Err(RelayError::Unsupported(format!("criu_req field {tag}")));
        }
        if tag == 2 {
            let unknown: Vec<String> = tags(body)?
                .into_iter()
                .map(|(t, _)| t)
                .filter(|t| !KNOWN_OPTS.iter().any(|(k, _)| k == t))
                .map(|t| format!("criu_opts field {t}"))
                .collect();
            if !unknown.is_empty() {
                return Err(RelayError::Unsupported(unknown.join(", ")));
            }
        }
    }
    Ok(())
}

/// CRIU's log file name in its work dir: the request's, else CRIU's default for `ty`.
pub fn log_name(o: &rpc::CriuOpts, ty: CriuReqType) -> String {
    o.log_file.clone().unwrap_or_else(|| {
        if ty == CriuReqType::Restore {
            "restore.log".into()
        } else {
            "dump.log".into()
        }
    })
}

/// CRIU's command line for a dump or restore request, streaming its images.
pub fn cli_args(
    ty: CriuReqType,
    o: &rpc::CriuOpts,
    at: &Places,
) -> Result<Vec<OsString>, RelayError> {
    let restore = match ty {
        CriuReqType::Dump => false,
        CriuReqType::Restore => true,
        other => {
            return Err(RelayError::Unsupported(format!(
                "request type {other:?} (only dump and restore stream)"
            )))
        }
    };
    if o.lazy_pages == Some(true) {
        return Err(RelayError::Unsupported(
            "lazy_pages (lazy restore does not stream)".into(),
        ));
    }
    let mut a = Args::default();
    a.push(if restore { "restore" } else { "dump" });
    a.push("--stream");
    a.path("-D", &at.images_dir);
    a.path("-W", &at.work_dir);
    let log = log_name(o, ty);
    if log.contains('/') {
        return Err(RelayError::Protocol(format!(
            "log_file {log:?} has a '/' (CRIU allows none)"
        )));
    }
    a.pair("-o", log);
    a.push(format!("-v{}", o.log_level.unwrap_or(2)));
    if let Some(conf) = o.config_file.as_deref().filter(|c| Path::new(c).is_file()) {
        a.pair("--config", conf);
    }
    if restore {
        a.push("--restore-detached");
        a.flag(o.rst_sibling, "--restore-sibling");
        a.path("--pidfile", &at.pid_file);
    } else {
        let pid = o.pid.ok_or_else(|| {
            RelayError::Protocol("a dump request without a pid (the relay is not the tree)".into())
        })?;
        a.pair("-t", pid.to_string());
        a.flag(o.leave_running, "--leave-running");
        a.flag(o.leave_stopped, "--leave-stopped");
    }
    if let Some(root) = &o.root {
        a.pair("--root", root);
    }
    a.flag(o.ext_unix_sk, "--ext-unix-sk");
    a.flag(o.tcp_established, "--tcp-established");
    a.flag(o.tcp_close, "--tcp-close");
    a.flag(o.evasive_devices, "--evasive-devices");
    a.flag(o.shell_job, "--shell-job");
    a.flag(o.file_locks, "--file-locks");
    a.flag(o.link_remap, "--link-remap");
    a.flag(o.auto_dedup, "--auto-dedup");
    for m in &o.ext_mnt {
        a.pair("--ext-mount-map", format!("{}:{}", m.key, m.val));
    }
    for j in &o.join_ns {
        let extra = j
            .extra_opt
            .as_deref()
            .map(|e| format!(",{e}"))
            .unwrap_or_default();
        a.pair("--join-ns", format!("{}:{}{extra}", j.ns, j.ns_file));
    }
    for i in &o.inherit_fd {
        a.pair("--inherit-fd", format!("fd[{}]:{}", i.fd, i.key));
    }
    for e in &o.external {
        a.pair("--external", e);
    }
    // As CRIU's service: the mode, when given, overrides the boolean.
    let cg_mode = match (o.manage_cgroups_mode, o.manage_cgroups) {
        (Some(m), _) => Some(
            usize::try_from(m)
                .ok()
                .and_then(|m| CG_MODES.get(m))
                .ok_or_else(|| RelayError::Protocol(format!("manage_cgroups_mode {m}")))?,
        ),
        (None, Some(true)) => Some(&"soft"),
        (None, Some(false)) => Some(&"ignore"),
        (None, None) => None,
    };
    if let Some(mode) = cg_mode {
        a.push(format!("--manage-cgroups={mode}"));
    }
    for r in &o.cg_root {
        let arg = match r.ctrl.as_deref() {
            Some(c) if !c.is_empty() => format!("{c}:{}", r.path),
            _ => r.path.clone(),
        };
        a.pair("--cgroup-root", arg);
    }
    if let Some(ns) = o.empty_ns.filter(|n| *n != 0) {
        if ns & !CLONE_NEWNET != 0 {
            return Err(RelayError::Unsupported(format!(
                "empty_ns {ns:#x} (CRIU empties only the network namespace)"
            )));
        }
        a.pair("--empty-ns", "net");
    }
    if let Some(f) = &o.freeze_cgroup {
        a.pair("--freeze-cgroup", f);
    }
    if let Some(p) = &o.lsm_profile {
        a.pair("--lsm-profile", p);
    }
    if let Some(script) = &at.action_script {
        a.path("--action-script", script);
    }
    Ok(a.0)
}

#[derive(Default)]
struct Args(Vec<OsString>);

impl Args {
    fn push(&mut self, s: impl Into<OsString>) {
        self.0.push(s.into());
    }
    fn pair(&mut self, flag: &str, v: impl Into<OsString>) {
        self.push(flag);
        self.push(v);
    }
    fn path(&mut self, flag: &str, p: &Path) {
        self.pair(flag, p.as_os_str());
    }
    fn flag(&mut self, on: Option<bool>, flag: &str) {
        if on == Some(true) {
            self.push(flag);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::criu::rpc::{CgroupRoot, CriuOpts, ExtMountMap, InheritFd};
    use crate::test_util::strs;
    use prost::Message;

    fn places() -> Places {
        Places {
            images_dir: "/ck".into(),
            work_dir: "/w".into(),
            pid_file: "/t/pid".into(),
            action_script: Some("/bin/relay".into()),
        }
    }

    /// What runc 1.1 sends for `runc checkpoint --leave-running` (seen on the wire).
    fn runc_dump() -> CriuOpts {
        CriuOpts {
            images_dir_fd: 7,
            pid: Some(4242),
            leave_running: Some(true),
            ext_unix_sk: Some(false),
            log_level: Some(4),
            log_file: Some("dump.log".into()),
            notify_scripts: Some(true),
            root: Some("/b/rootfs".into()),
            auto_dedup: Some(false),
            ext_mnt: vec![ExtMountMap {
                key: "/proc/keys".into(),
                val: "/dev/null".into(),
            }],
            manage_cgroups: Some(true),
            empty_ns: Some(CLONE_NEWNET),
            freeze_cgroup: Some("/sys/fs/cgroup/freezer/c1".into()),
            lazy_pages: Some(false),
            orphan_pts_master: Some(true),
            config_file: Some("/nonexistent/runc.conf".into()),
            ..Default::default()
        }
    }

    #[test]
    fn runc_dump_request_golden() {
        let args = cli_args(CriuReqType::Dump, &runc_dump(), &places()).expect("args");
        assert_eq!(
            strs(args),
            [
                "dump",
                "--stream",
                "-D",
                "/ck",
                "-W",
                "/w",
                "-o",
                "dump.log",
                "-v4",
                "-t",
                "4242",
                "--leave-running",
                "--root",
                "/b/rootfs",
                "--ext-mount-map",
                "/proc/keys:/dev/null",
                "--manage-cgroups=soft",
                "--empty-ns",
                "net",
                "--freeze-cgroup",
                "/sys/fs/cgroup/freezer/c1",
                "--action-script",
                "/bin/relay"
            ]
        );
    }

    #[test]
    fn runc_restore_request_golden() {
        let o = CriuOpts {
            images_dir_fd: 7,
            evasive_devices: Some(true),
            log_level: Some(4),
            log_file: Some("restore.log".into()),
            root: Some("/r/c1/criu-root".into()),
            manage_cgroups: Some(true),
            cg_root: vec![
                CgroupRoot {
                    ctrl: Some("name=systemd".into()),
                    path: "/c1".into(),
                },
                CgroupRoot {
                    ctrl: Some(String::new()),
                    path: "/c1".into(),
                },
            ],
            rst_sibling: Some(true),
            inherit_fd: vec![InheritFd {
                key: "pipe:[99]".into(),
                fd: 1,
            }],
            manage_cgroups_mode: Some(4),
            ..Default::default()
        };
        let args = strs(cli_args(CriuReqType::Restore, &o, &places()).expect("args"));
        assert_eq!(
            args,
            [
                "restore",
                "--stream",
                "-D",
                "/ck",
                "-W",
                "/w",
                "-o",
                "restore.log",
                "-v4",
                "--restore-detached",
                "--restore-sibling",
                "--pidfile",
                "/t/pid",
                "--root",
                "/r/c1/criu-root",
                "--evasive-devices",
                "--inherit-fd",
                "fd[1]:pipe:[99]",
                "--manage-cgroups=full",
                "--cgroup-root",
                "name=systemd:/c1",
                "--cgroup-root",
                "/c1",
                "--action-script",
                "/bin/relay"
            ]
        );
    }

    #[test]
    fn lazy_pages_other_types_and_bad_values_are_refused() {
        let lazy = CriuOpts {
            lazy_pages: Some(true),
            ..runc_dump()
        };
        assert!(matches!(
            cli_args(CriuReqType::Dump, &lazy, &places()),
            Err(RelayError::Unsupported(m)) if m.contains("lazy")
        ));
        assert!(cli_args(CriuReqType::PreDump, &runc_dump(), &places()).is_err());
        let no_pid = CriuOpts {
            pid: None,
            ..runc_dump()
        };
        assert!(cli_args(CriuReqType::Dump, &no_pid, &places()).is_err());
        let ns = CriuOpts {
            empty_ns: Some(0x2000_0000),
            ..runc_dump()
        };
        assert!(cli_args(CriuReqType::Dump, &ns, &places()).is_err());
        let log = CriuOpts {
            log_file: Some("../x.log".into()),
            ..runc_dump()
        };
        assert!(cli_args(CriuReqType::Dump, &log, &places()).is_err());
    }

    #[test]
    fn unknown_fields_are_named_not_dropped() {
        let req = rpc::CriuReq {
            opts: Some(runc_dump()),
            ..rpc::CriuReq::new(CriuReqType::Dump)
        };
        let mut bytes = req.encode_to_vec();
        check_known_fields(&bytes).expect("runc's own dump request is understood");
        // Append `track_mem = true` (criu_opts field 15) inside opts: rebuild by hand.
        let mut opts = runc_dump().encode_to_vec();
        opts.extend([15 << 3, 1]);
        bytes = vec![0x08, 1, 0x12];
        prost::encoding::encode_varint(opts.len() as u64, &mut bytes);
        bytes.extend(&opts);
        let err = check_known_fields(&bytes).expect_err("field 15 is not translated");
        assert!(err.to_string().contains("criu_opts field 15"), "{err}");
        // keep_open (criu_req field 4).
        let err = check_known_fields(&[0x08, 1, 0x20, 1]).expect_err("keep_open");
        assert!(err.to_string().contains("criu_req field 4"), "{err}");
        assert!(check_known_fields(&[0x08]).is_err(), "truncated");
        assert!(
            check_known_fields(&[0x12, 9, 1]).is_err(),
            "runs past the end"
        );
    }
}
