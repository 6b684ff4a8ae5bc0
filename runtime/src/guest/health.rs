//! What the guest must offer CRIU and the agent, checked from inside it, each failure
//! with the kernel option or step that fixes it (the guest kernel's config is rarely
//! readable in a guest, so features are probed where they show, not looked up).

use std::path::Path;

use crate::plugins::{Health, HealthCheck};

/// Plugin name the checks are reported under.
const PLUGIN: &str = "kata-guest";

/// A probe: name, path whose presence proves the feature, and the fix when absent.
struct Probe {
    name: &'static str,
    path: &'static str,
    fix: &'static str,
    /// Fail, or only Warn where a built-in feature leaves no trace to probe.
    missing: Health,
}

/// Kernel features CRIU needs, probed by the files they create.
const PROBES: &[Probe] = &[
    Probe {
        name: "checkpoint/restore support",
        path: "/proc/sys/kernel/ns_last_pid",
        fix: "build the guest kernel with CONFIG_CHECKPOINT_RESTORE=y",
        missing: Health::Fail,
    },
    Probe {
        name: "PID namespaces",
        path: "/proc/self/ns/pid",
        fix: "build the guest kernel with CONFIG_PID_NS=y",
        missing: Health::Fail,
    },
    Probe {
        name: "network namespaces",
        path: "/proc/self/ns/net",
        fix: "build the guest kernel with CONFIG_NET_NS=y",
        missing: Health::Fail,
    },
    Probe {
        name: "IPC namespaces",
        path: "/proc/self/ns/ipc",
        fix: "build the guest kernel with CONFIG_IPC_NS=y",
        missing: Health::Fail,
    },
    Probe {
        name: "UTS namespaces",
        path: "/proc/self/ns/uts",
        fix: "build the guest kernel with CONFIG_UTS_NS=y",
        missing: Health::Fail,
    },
    Probe {
        name: "vsock (virtio transport)",
        path: "/dev/vsock",
        fix: "CONFIG_VSOCKETS and CONFIG_VIRTIO_VSOCKETS (=m: load virtio_pci and vmw_vsock_virtio_transport), and a vsock device on the VM",
        missing: Health::Fail,
    },
    Probe {
        name: "nf_tables (CRIU probes it at start-up)",
        path: "/sys/module/nf_tables",
        fix: "CONFIG_NF_TABLES (=m: load nf_tables and its dependencies before the agent)",
        missing: Health::Fail,
    },
    Probe {
        name: "socket diagnostics (unix)",
        path: "/sys/module/unix_diag",
        fix: "CONFIG_UNIX_DIAG (=m: load unix_diag); CRIU needs it for sockets",
        missing: Health::Warn,
    },
    Probe {
        name: "socket diagnostics (inet)",
        path: "/sys/module/inet_diag",
        fix: "CONFIG_INET_DIAG and CONFIG_INET_TCP_DIAG (=m: load inet_diag tcp_diag); CRIU needs them for TCP sockets",
        missing: Health::Warn,
    },
    Probe {
        name: "socket diagnostics (netlink)",
        path: "/sys/module/netlink_diag",
        fix: "CONFIG_NETLINK_DIAG (=m: load netlink_diag)",
        missing: Health::Warn,
    },
    Probe {
        name: "devpts mounted",
        path: "/dev/pts/ptmx",
        fix: "mount devpts on /dev/pts in the guest's init (mount -t devpts devpts /dev/pts)",
        missing: Health::Fail,
    },
];

/// The guest's checks (the engine's CRIU checks are added by the caller).
pub fn checks() -> Vec<HealthCheck> {
    let mut out: Vec<HealthCheck> = PROBES.iter().map(probe).collect();
    out.push(loopback());
    out
}

fn probe(p: &Probe) -> HealthCheck {
    let ok = Path::new(p.path).exists();
    HealthCheck {
        plugin: PLUGIN.into(),
        name: p.name.into(),
        health: if ok { Health::Ok } else { p.missing },
        detail: match (ok, p.missing) {
            (true, _) => format!("{} present", p.path),
            (false, Health::Warn) => format!(
                "{} missing (fine if built in: a built-in *_diag leaves no trace)",
                p.path
            ),
            (false, _) => format!("{} missing", p.path),
        },
        fix: (!ok).then(|| p.fix.to_string()),
    }
}

/// CRIU restores sockets bound to 127.0.0.1 only with `lo` up.
fn loopback() -> HealthCheck {
    const IFF_UP: u32 = 1;
    let flags = std::fs::read_to_string("/sys/class/net/lo/flags")
        .ok()
        .and_then(|s| u32::from_str_radix(s.trim().trim_start_matches("0x"), 16).ok());
    let up = flags.is_some_and(|f| f & IFF_UP != 0);
    HealthCheck {
        plugin: PLUGIN.into(),
        name: "loopback up".into(),
        health: if up { Health::Ok } else { Health::Fail },
        detail: if up {
            "lo is up".into()
        } else {
            "lo is down".into()
        },
        fix: (!up).then(|| "bring lo up in the guest's init (ip link set lo up)".to_string()),
    }
}
