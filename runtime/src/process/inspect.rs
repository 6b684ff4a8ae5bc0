//! Reads a live process tree from /proc: its processes, open files and sockets. The
//! adapters use this to choose CRIU options from what the tree really holds.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::state::{OpenFile, ProcessInfo, ProcessState, SocketInfo, SocketKind};

/// TCP states (from include/net/tcp_states.h) that CRIU must repair to keep connections.
const TCP_CONNECTED_STATES: &[u8] = &[
    0x01, // ESTABLISHED
    0x02, // SYN_SENT
    0x03, // SYN_RECV
    0x04, // FIN_WAIT1
    0x05, // FIN_WAIT2
    0x08, // CLOSE_WAIT
    0x09, // LAST_ACK
    0x0B, // CLOSING
];
const TCP_LISTEN: u8 = 0x0A;

/// Whether a process with this PID exists (zombies count as existing).
pub fn exists(pid: i32) -> bool {
    pid > 0 && Path::new(&format!("/proc/{pid}")).exists()
}

/// Every PID currently in /proc.
pub fn all_pids() -> Vec<i32> {
    fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// A process's (process group, session) ids, from its stat alone (cheap enough to ask of
/// every process on a host).
pub fn group_and_session(pid: i32) -> Option<(i32, i32)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat).map(|s| (s.pgid, s.sid))
}

/// Single-letter state of a process (`R`, `S`, `Z`, ...), if it exists.
pub fn state_letter(pid: i32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat).map(|s| s.state)
}

/// Whether the process exists and is not a zombie.
pub fn is_alive(pid: i32) -> bool {
    matches!(state_letter(pid), Some(c) if c != 'Z' && c != 'X')
}

struct Stat {
    comm: String,
    state: char,
    ppid: i32,
    pgid: i32,
    sid: i32,
}

/// Parses /proc/PID/stat; the command name may contain spaces and parentheses.
fn parse_stat(stat: &str) -> Option<Stat> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_string();
    let mut rest = stat.get(close + 1..)?.split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    let pgid = rest.next()?.parse().ok()?;
    let sid = rest.next()?.parse().ok()?;
    Some(Stat {
        comm,
        state,
        ppid,
        pgid,
        sid,
    })
}

/// Reads one process's identity.
pub fn read_info(pid: i32) -> io::Result<ProcessInfo> {
    let raw = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let stat = parse_stat(&raw)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unparsable /proc/PID/stat"))?;
    let cmdline = fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|c| *c == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        })
        .unwrap_or_default();
    let cwd = fs::read_link(format!("/proc/{pid}/cwd")).unwrap_or_default();
    let uid = fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0);
    let mut tids: Vec<i32> = fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    tids.sort_unstable();
    Ok(ProcessInfo {
        pid,
        ppid: stat.ppid,
        pgid: stat.pgid,
        sid: stat.sid,
        comm: stat.comm,
        cmdline,
        cwd,
        uid,
        tids,
    })
}

/// Direct children of a process, over all its threads.
fn children(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        if let Ok(list) = fs::read_to_string(task.path().join("children")) {
            out.extend(
                list.split_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok()),
            );
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// The PIDs below `pid`, each once, in the order found.
fn descendants(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let mut queue = vec![pid];
    let mut seen = HashSet::from([pid]);
    while let Some(p) = queue.pop() {
        for child in children(p) {
            if seen.insert(child) {
                out.push(child);
                queue.push(child);
            }
        }
    }
    out
}

/// Every process of the tree rooted at `pid`, root first.
pub fn tree(pid: i32) -> io::Result<Vec<ProcessInfo>> {
    let mut out = vec![read_info(pid)?];
    // A child may exit while we look; skip it rather than fail the dump.
    out.extend(
        descendants(pid)
            .into_iter()
            .filter_map(|c| read_info(c).ok()),
    );
    Ok(out)
}

/// Resident bytes of the tree rooted at `pid`, summed over its processes: an upper bound
/// on its memory images (it counts shared pages once per process, and file pages CRIU
/// does not dump).
pub fn tree_resident_bytes(pid: i32) -> io::Result<u64> {
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .unwrap_or(4096) as u64;
    let resident = |p: i32| -> io::Result<u64> {
        let statm = fs::read_to_string(format!("/proc/{p}/statm"))?;
        statm
            .split_whitespace()
            .nth(1)
            .and_then(|n| n.parse::<u64>().ok())
            .map(|pages| pages.saturating_mul(page))
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unparsable statm"))
    };
    // A child that exits while we look holds nothing.
    Ok(descendants(pid)
        .into_iter()
        .map(|c| resident(c).unwrap_or(0))
        .fold(resident(pid)?, u64::saturating_add))
}

/// Open descriptors of one process.
pub fn open_files(pid: i32) -> io::Result<Vec<OpenFile>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(format!("/proc/{pid}/fd"))? {
        let entry = entry?;
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        // The fd may be closed between readdir and readlink.
        if let Ok(target) = fs::read_link(entry.path()) {
            out.push(OpenFile {
                pid,
                fd,
                target: target.to_string_lossy().into_owned(),
            });
        }
    }
    out.sort_by_key(|f| f.fd);
    Ok(out)
}

/// Socket inode named by an fd target like `socket:[12345]`.
pub fn socket_inode(target: &str) -> Option<u64> {
    target
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// One row of /proc/net/tcp[6]: inode -> (state, local, remote).
fn parse_proc_net_tcp(text: &str, v6: bool) -> HashMap<u64, (u8, String, String)> {
    let mut out = HashMap::new();
    for line in text.lines().skip(1) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() < 10 {
            continue;
        }
        let (Ok(state), Ok(inode)) = (u8::from_str_radix(cols[3], 16), cols[9].parse::<u64>())
        else {
            continue;
        };
        if inode == 0 {
            continue;
        }
        out.insert(
            inode,
            (state, decode_addr(cols[1], v6), decode_addr(cols[2], v6)),
        );
    }
    out
}

/// Decodes `0100007F:1F90` (little-endian words) into `127.0.0.1:8080`.
fn decode_addr(hex: &str, v6: bool) -> String {
    let Some((addr, port)) = hex.split_once(':') else {
        return hex.to_string();
    };
    let port = u16::from_str_radix(port, 16).unwrap_or(0);
    let bytes: Vec<u8> = (0..addr.len() / 2)
        .filter_map(|i| u8::from_str_radix(addr.get(2 * i..2 * i + 2)?, 16).ok())
        .collect();
    if !v6 && bytes.len() == 4 {
        let ip = std::net::Ipv4Addr::new(bytes[3], bytes[2], bytes[1], bytes[0]);
        format!("{ip}:{port}")
    } else if v6 && bytes.len() == 16 {
        let mut b = [0u8; 16];
        for (word, chunk) in bytes.chunks(4).enumerate() {
            for (i, v) in chunk.iter().rev().enumerate() {
                b[word * 4 + i] = *v;
            }
        }
        format!("[{}]:{port}", std::net::Ipv6Addr::from(b))
    } else {
        hex.to_string()
    }
}

/// inode -> unix socket path (may be empty) from /proc/PID/net/unix.
fn parse_proc_net_unix(text: &str) -> HashMap<u64, String> {
    let mut out = HashMap::new();
    for line in text.lines().skip(1) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() < 7 {
            continue;
        }
        if let Ok(inode) = cols[6].parse::<u64>() {
            out.insert(
                inode,
                cols.get(7).map(|s| s.to_string()).unwrap_or_default(),
            );
        }
    }
    out
}

/// Classifies the sockets among `files`, reading the network tables of `pid`'s netns.
fn sockets(pid: i32, files: &[OpenFile]) -> Vec<SocketInfo> {
    // The tables can be large (a busy host's netns); a tree without sockets needs none.
    if !files.iter().any(|f| socket_inode(&f.target).is_some()) {
        return Vec::new();
    }
    let read =
        |name: &str| fs::read_to_string(format!("/proc/{pid}/net/{name}")).unwrap_or_default();
    let mut tcp = parse_proc_net_tcp(&read("tcp"), false);
    tcp.extend(parse_proc_net_tcp(&read("tcp6"), true));
    let mut udp = parse_proc_net_tcp(&read("udp"), false);
    udp.extend(parse_proc_net_tcp(&read("udp6"), true));
    let unix = parse_proc_net_unix(&read("unix"));
    files
        .iter()
        .filter_map(|f| {
            let inode = socket_inode(&f.target)?;
            let mut s = SocketInfo {
                pid: f.pid,
                fd: f.fd,
                inode,
                ..Default::default()
            };
            if let Some((state, local, remote)) = tcp.get(&inode) {
                s.kind = if TCP_CONNECTED_STATES.contains(state) {
                    SocketKind::TcpConnected
                } else if *state == TCP_LISTEN {
                    SocketKind::TcpListen
                } else {
                    SocketKind::TcpOther
                };
                s.local = local.clone();
                s.remote = remote.clone();
            } else if let Some((_, local, remote)) = udp.get(&inode) {
                s.kind = SocketKind::Udp;
                s.local = local.clone();
                s.remote = remote.clone();
            } else if let Some(path) = unix.get(&inode) {
                s.kind = SocketKind::Unix;
                s.local = path.clone();
            }
            Some(s)
        })
        .collect()
}

/// Whether an fd target is a terminal.
fn is_tty(target: &str) -> bool {
    target.starts_with("/dev/pts/") || target.starts_with("/dev/tty") || target == "/dev/console"
}

/// Gathers the whole state of the tree rooted at `pid`.
pub fn inspect(pid: i32) -> io::Result<ProcessState> {
    let tree = tree(pid)?;
    let mut open = Vec::new();
    for p in &tree {
        match open_files(p.pid) {
            Ok(files) => open.extend(files),
            Err(e) if p.pid == pid => return Err(e),
            Err(_) => {} // a child that exited meanwhile
        }
    }
    let sockets = sockets(pid, &open);
    let has_tty = open.iter().any(|f| f.fd <= 2 && is_tty(&f.target));
    let uses_io_uring = open.iter().any(|f| f.target == "anon_inode:[io_uring]");
    Ok(ProcessState {
        pid,
        tree,
        open_files: open,
        sockets,
        has_tty,
        uses_io_uring,
    })
}

/// PIDs among `pids` that hold a lock: those with an open file a lock belongs to
/// (`lock:` in /proc/PID/fdinfo/N). That covers every lock a live process holds: a POSIX
/// lock goes with any close of its file, so the fd it was taken through is still open;
/// flock and OFD locks belong to the open file itself, which also catches
/// `exec 9>F; flock 9` (a child takes the lock on the shell's fd and exits). Not
/// /proc/locks: reading it takes the kernel's file-lock rwsem for writing (an RCU grace
/// period, 6 ms here), and every lock operation on the host waits meanwhile.
pub fn pids_holding_locks(pids: &[i32]) -> Vec<i32> {
    let mut out: Vec<i32> = pids
        .iter()
        .copied()
        .filter(|&p| fds_hold_locks(p))
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// Whether any open file of `pid` carries a lock (fdinfo lists it as `lock:`).
fn fds_hold_locks(pid: i32) -> bool {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return false;
    };
    dir.flatten().any(|e| {
        fs::read_to_string(e.path()).is_ok_and(|info| info.lines().any(|l| l.starts_with("lock:")))
    })
}

/// Describes who holds a PID, for error messages: `comm (state S, parent 1)`.
pub fn describe(pid: i32) -> String {
    match read_info(pid) {
        Ok(info) => format!(
            "`{}` (state {}, parent {})",
            info.comm,
            state_letter(pid).unwrap_or('?'),
            info.ppid
        ),
        Err(_) => "a process that exited while we looked".to_string(),
    }
}

/// Path of a process's executable, if readable.
pub fn exe(pid: i32) -> Option<PathBuf> {
    fs::read_link(format!("/proc/{pid}/exe")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_spaces_and_parens_in_comm() {
        let s = parse_stat("42 (my (odd) prog) S 1 42 42 0 -1 4194560").expect("parses");
        assert_eq!(s.comm, "my (odd) prog");
        assert_eq!((s.state, s.ppid, s.pgid, s.sid), ('S', 1, 42, 42));
    }

    #[test]
    fn tcp_table_rows_are_classified() {
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1111 1\n\
   1: 0100007F:A2C4 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 2222 1\n";
        let t = parse_proc_net_tcp(text, false);
        assert_eq!(
            t[&1111],
            (0x0A, "127.0.0.1:8080".to_string(), "0.0.0.0:0".to_string())
        );
        assert_eq!(t[&2222].0, 0x01);
        assert_eq!(t[&2222].2, "127.0.0.1:8080");
    }

    #[test]
    fn socket_inode_parses_only_sockets() {
        assert_eq!(socket_inode("socket:[991]"), Some(991));
        assert_eq!(socket_inode("pipe:[991]"), None);
    }

    #[test]
    fn a_posix_lock_is_seen_and_a_process_without_locks_is_not() {
        use std::os::fd::AsRawFd;
        let file = tempfile::tempfile().expect("temp file");
        let lock = libc::flock {
            l_type: libc::F_WRLCK as libc::c_short,
            l_whence: libc::SEEK_SET as libc::c_short,
            l_start: 0,
            l_len: 1,
            l_pid: 0,
        };
        // SAFETY: a valid fd and a valid, initialised `flock`.
        let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLK, &lock) };
        assert_eq!(r, 0, "fcntl F_SETLK");
        let me = std::process::id() as i32;
        assert!(pids_holding_locks(&[me]).contains(&me));
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .expect("spawn sleep");
        let pid = child.id() as i32;
        assert_eq!(pids_holding_locks(&[pid]), Vec::<i32>::new());
        let _ = child.kill();
        let _ = child.wait();
    }

    /// `exec 9>F; flock 9` in a shell: a child takes the lock on an inherited fd and
    /// exits; /proc/locks names the child, yet the lock is ours through the fd.
    #[test]
    fn lock_taken_by_an_exited_child_on_our_fd_is_ours() {
        use std::os::fd::AsRawFd;
        let file = tempfile::tempfile().expect("temp file");
        let fd = file.as_raw_fd();
        // SAFETY: the child only calls flock and _exit, both async-signal-safe.
        let child = unsafe { libc::fork() };
        if child == 0 {
            // SAFETY: as above.
            unsafe { libc::_exit(i32::from(libc::flock(fd, libc::LOCK_EX) != 0)) };
        }
        assert!(child > 0, "fork");
        let mut status = 0;
        // SAFETY: waits for our own child.
        assert_eq!(unsafe { libc::waitpid(child, &mut status, 0) }, child);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "flock"
        );
        let me = std::process::id() as i32;
        assert!(fds_hold_locks(me), "fdinfo shows our fd's lock");
        assert!(pids_holding_locks(&[me]).contains(&me));
        drop(file);
    }

    #[test]
    fn inspects_our_own_process() {
        let me = std::process::id() as i32;
        let state = inspect(me).expect("inspect self");
        assert_eq!(state.tree[0].pid, me);
        assert!(state
            .open_files
            .iter()
            .any(|f| f.fd == 0 || f.fd == 1 || f.fd == 2));
        assert!(!state.uses_io_uring);
    }

    #[test]
    fn listening_socket_is_seen() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let _c = std::net::TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
        let state = inspect(std::process::id() as i32).expect("inspect self");
        assert!(state
            .sockets
            .iter()
            .any(|s| s.kind == SocketKind::TcpListen));
        assert!(state
            .sockets
            .iter()
            .any(|s| s.kind == SocketKind::TcpConnected));
    }
}
