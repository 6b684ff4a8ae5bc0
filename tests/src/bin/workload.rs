//! Workloads the end-to-end tests checkpoint. Each prints what a user would look at, so
//! a test can tell whether state survived a dump and restore:
//!
//! - `counter [INTERVAL_MS]`: prints 0, 1, 2, ... one per line on stdout.
//! - `tcp-client ADDR [INTERVAL_MS]`: sends `ping N` to an echo server and prints each
//!   reply; exits non-zero if the connection breaks.
//! - `gpu-counter PATH...`: opens each PATH (read-only, kept open) and counts; with
//!   stand-in device files named `nvidia0`, `nvidiactl`, ... this is a CPU process that
//!   cedana's GPU detection takes for a GPU user. A thread named `cuda-restore` that only
//!   sleeps stands in for the CUDA driver's restore thread, which the stand-in
//!   cuda-checkpoint names to CRIU's cuda_plugin.
//! - `io-uring`: holds an io_uring instance (which CRIU cannot dump) and counts.
//! - `memory MIB`: holds MIB of memory shaped like a real heap (a quarter random bytes,
//!   three eighths repetitive text, three eighths zero-filled but touched pages), prints
//!   `ready`, then counts; used by the benchmarks.
//! - `memserve MIB ADDR [FILE]`: the same memory; listens on TCP ADDR, prints `ready` and
//!   counts on stdout; each connection's line `ping` is answered `pong`, `sum` with a
//!   checksum of the whole buffer, so a test can tell that a restored memory is byte for
//!   byte what was dumped, and a benchmark when it answers again. With FILE, it also
//!   writes 16 MiB of 0xA5 there, maps it private and overwrites the mapping with zeros;
//!   `sum` covers those too.
//! - `memcheck MIB NAME`: the same memory; counts on the kernel log (`<3>COUNTER NAME N`
//!   into /dev/kmsg, opened per line, so a guest's console shows it), each value only
//!   after one sixteenth of the buffer, in turn, still matched the checksum taken at
//!   start (else `<3>MEMORY CORRUPT NAME`): in a VM guest, a restored count that goes on
//!   16 values proves the memory came back byte for byte.
//! - `vsock-exec PORT`: in a VM guest, for the kata bench's by-hand baseline: on each
//!   AF_VSOCK connection to PORT, reads one line and runs it with `sh -c`, the rest of
//!   the connection as its stdin and the connection as its stdout, then closes. (A line,
//!   not all input: the hybrid vsock of vhost-device-vsock turns the host's half-close
//!   into a full close, so a command cannot wait for end of input; one that reads stdin
//!   is told how much to read, as `head -c N`.) Never in a real image: it is a root shell.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

fn interval(arg: Option<&String>) -> Duration {
    Duration::from_millis(arg.and_then(|s| s.parse().ok()).unwrap_or(100))
}

fn counter(every: Duration) -> ! {
    let mut out = std::io::stdout().lock();
    let mut i: u64 = 0;
    loop {
        // Ignore write errors: the log may be briefly unavailable; the count goes on.
        let _ = writeln!(out, "{i}");
        let _ = out.flush();
        i += 1;
        std::thread::sleep(every);
    }
}

fn tcp_client(addr: &str, every: Duration) -> Result<(), String> {
    let stream = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    let mut reader = BufReader::new(stream.try_clone().map_err(|e| e.to_string())?);
    let mut writer = stream;
    let mut out = std::io::stdout().lock();
    let mut i: u64 = 0;
    loop {
        writeln!(writer, "ping {i}").map_err(|e| format!("send: {e}"))?;
        let mut line = String::new();
        let n = reader
            .read_line(&mut line)
            .map_err(|e| format!("receive: {e}"))?;
        if n == 0 {
            return Err("server closed the connection".into());
        }
        let _ = write!(out, "{line}");
        let _ = out.flush();
        i += 1;
        std::thread::sleep(every);
    }
}

fn io_uring() -> Result<(), String> {
    // io_uring_setup(entries, params); the params struct is 120 bytes of zeros.
    let mut params = [0u8; 120];
    // SAFETY: a valid pointer to a zeroed io_uring_params-sized buffer.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 4u32, params.as_mut_ptr()) };
    if fd < 0 {
        return Err(format!(
            "io_uring_setup: {}",
            std::io::Error::last_os_error()
        ));
    }
    counter(Duration::from_millis(100))
}

fn gpu_counter(paths: &[String]) -> Result<(), String> {
    if paths.is_empty() {
        return Err("usage: cedana-workload gpu-counter PATH...".into());
    }
    let held = paths
        .iter()
        .map(|p| std::fs::File::open(p).map_err(|e| format!("open {p}: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let _held = std::hint::black_box(held);
    std::thread::Builder::new()
        .name("cuda-restore".into())
        .spawn(|| loop {
            std::thread::sleep(Duration::from_secs(3600));
        })
        .map_err(|e| format!("restore thread: {e}"))?;
    counter(Duration::from_millis(100))
}

fn memory(mib: usize) -> ! {
    let buf = heap(mib);
    println!("ready");
    let _keep = std::hint::black_box(buf);
    counter(Duration::from_millis(200))
}

/// A 64-bit FNV-style fold over the buffer's words.
fn checksum(buf: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for w in buf.chunks(8) {
        let mut word = [0u8; 8];
        word[..w.len()].copy_from_slice(w);
        h = (h ^ u64::from_le_bytes(word)).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Bytes of `memserve`'s private file mapping.
const MAPPED_FILE_BYTES: usize = 16 << 20;

/// A private, writable mapping of a new file `path` of [`MAPPED_FILE_BYTES`] bytes of
/// 0xA5, then overwritten with zeros: memory whose zero pages a restore must write back,
/// since a missing page there would read the file's 0xA5.
fn zeroed_private_file_mapping(path: &str) -> Result<&'static mut [u8], String> {
    use std::os::fd::AsRawFd;
    std::fs::write(path, vec![0xA5u8; MAPPED_FILE_BYTES]).map_err(|e| format!("{path}: {e}"))?;
    let file = std::fs::File::open(path).map_err(|e| format!("{path}: {e}"))?;
    // SAFETY: a fresh private mapping of a file we just wrote; never unmapped, so the
    // slice lives as long as the process.
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            MAPPED_FILE_BYTES,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE,
            file.as_raw_fd(),
            0,
        )
    };
    if map == libc::MAP_FAILED {
        return Err(format!("mmap {path}: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: the mapping is MAPPED_FILE_BYTES long, readable and writable.
    let bytes = unsafe { std::slice::from_raw_parts_mut(map.cast::<u8>(), MAPPED_FILE_BYTES) };
    bytes.fill(0);
    Ok(bytes)
}

fn memserve(mib: usize, addr: &str, file: Option<&String>) -> Result<(), String> {
    let buf = heap(mib);
    let mapped: Option<&[u8]> = match file {
        Some(path) => Some(zeroed_private_file_mapping(path)?),
        None => None,
    };
    let listener = std::net::TcpListener::bind(addr).map_err(|e| format!("bind {addr}: {e}"))?;
    println!("ready");
    std::thread::spawn(|| counter(Duration::from_millis(100)));
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { continue };
        let mut line = String::new();
        let Ok(mut reader) = conn.try_clone().map(BufReader::new) else {
            continue;
        };
        if reader.read_line(&mut line).is_err() {
            continue;
        }
        let answer = match line.trim() {
            "sum" => {
                let sum = checksum(&buf);
                let sum = mapped.map_or(sum, |m| sum ^ checksum(m).rotate_left(1));
                format!("sum {sum:016x}\n")
            }
            _ => "pong\n".to_string(),
        };
        let _ = conn.write_all(answer.as_bytes());
    }
    Ok(())
}

/// Slices `memcheck` checks in turn, one per count: the whole heap every this many counts,
/// cheap enough per count for a debug build in an emulated guest.
const MEMCHECK_SLICES: usize = 16;

fn memcheck(mib: usize, name: &str) -> Result<(), String> {
    let buf = heap(mib);
    let slice = buf.len().div_ceil(MEMCHECK_SLICES).max(1);
    let sums: Vec<u64> = buf.chunks(slice).map(checksum).collect();
    let mut i: u64 = 0;
    loop {
        let k = (i as usize) % sums.len();
        i += 1;
        let part = std::hint::black_box(&buf)
            .chunks(slice)
            .nth(k)
            .unwrap_or_default();
        let line = if checksum(part) == sums[k] {
            format!("<3>COUNTER {name} {i}\n")
        } else {
            format!("<3>MEMORY CORRUPT {name}\n")
        };
        // Opened per line: the kernel rate-limits a /dev/kmsg file that writes often.
        if let Ok(mut f) = std::fs::OpenOptions::new().write(true).open("/dev/kmsg") {
            let _ = f.write_all(line.as_bytes());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// MIB of memory shaped like a real heap (see `memory`), every page backed.
fn heap(mib: usize) -> Vec<u8> {
    let len = mib << 20;
    let mut buf = vec![0u8; len];
    let (random_end, text_end) = (len / 4, len / 4 + len * 3 / 8);
    // xorshift64: fast, and incompressible enough to stand for encrypted or packed data.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for chunk in buf[..random_end].chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    let text = b"GET /index.html HTTP/1.1 200 OK user=alice session=42 cache=hit\n";
    for (i, b) in buf[random_end..text_end].iter_mut().enumerate() {
        *b = text[i % text.len()];
    }
    // Write a zero into every page so the kernel really backs it (not the shared zero page).
    for page in buf[text_end..].chunks_mut(4096) {
        // SAFETY: a valid, aligned-enough pointer into our own buffer.
        unsafe { std::ptr::write_volatile(page.as_mut_ptr(), 0) };
    }
    buf
}

/// `mib` MiB of touched pages, all zeros but 1 MiB of noise: a checkpoint that
/// compresses to almost nothing, so only an uncompressed copy would fill a small disk.
fn zeros(mib: usize) -> ! {
    let mut buf = vec![0u8; mib << 20];
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    for chunk in buf[..1 << 20].chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    for page in buf[1 << 20..].chunks_mut(4096) {
        // SAFETY: a valid pointer into our own buffer; the write makes the page real.
        unsafe { std::ptr::write_volatile(page.as_mut_ptr(), 0) };
    }
    println!("ready");
    let _keep = std::hint::black_box(buf);
    counter(Duration::from_millis(200))
}

fn vsock_exec(port: u32) -> Result<(), String> {
    use nix::sys::socket::{
        accept, bind, listen, socket, AddressFamily, Backlog, SockFlag, SockType, VsockAddr,
    };
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    fn e(what: &'static str) -> impl Fn(nix::Error) -> String {
        move |err| format!("{what}: {err}")
    }
    let sock = socket(
        AddressFamily::Vsock,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(e("vsock socket"))?;
    let any = VsockAddr::new(libc::VMADDR_CID_ANY, port);
    bind(sock.as_raw_fd(), &any).map_err(e("bind"))?;
    listen(&sock, Backlog::new(16).map_err(e("backlog"))?).map_err(e("listen"))?;
    loop {
        let fd = accept(sock.as_raw_fd()).map_err(e("accept"))?;
        // SAFETY: accept returned a new descriptor that nothing else owns.
        let conn = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        std::thread::spawn(move || {
            if let Err(err) = run_connection(conn) {
                eprintln!("cedana-workload vsock-exec: {err}");
            }
        });
    }
}

fn run_connection(conn: std::fs::File) -> std::io::Result<()> {
    use std::process::{Command, Stdio};
    // Byte by byte: what follows the line is the command's stdin.
    let mut script = Vec::new();
    for byte in std::io::Read::bytes(&conn) {
        match byte? {
            b'\n' => break,
            b => script.push(b),
        }
    }
    Command::new("sh")
        .arg("-c")
        .arg(String::from_utf8_lossy(&script).as_ref())
        .stdin(conn.try_clone()?)
        .stdout(conn)
        .stderr(Stdio::null())
        .status()
        .map(drop)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let result = match args.get(1).map(String::as_str) {
        Some("counter") => counter(interval(args.get(2))),
        Some("tcp-client") => match args.get(2) {
            Some(addr) => tcp_client(addr, interval(args.get(3))),
            None => Err("usage: cedana-workload tcp-client ADDR [INTERVAL_MS]".into()),
        },
        Some("io-uring") => io_uring(),
        Some("gpu-counter") => gpu_counter(&args[2..]),
        Some("memory") => match args.get(2).and_then(|s| s.parse().ok()) {
            Some(mib) => memory(mib),
            None => Err("usage: cedana-workload memory MIB".into()),
        },
        Some("memserve") => match (args.get(2).and_then(|s| s.parse().ok()), args.get(3)) {
            (Some(mib), Some(addr)) => memserve(mib, addr, args.get(4)),
            _ => Err("usage: cedana-workload memserve MIB ADDR [FILE]".into()),
        },
        Some("memcheck") => match (args.get(2).and_then(|s| s.parse().ok()), args.get(3)) {
            (Some(mib), Some(name)) => memcheck(mib, name),
            _ => Err("usage: cedana-workload memcheck MIB NAME".into()),
        },
        Some("zeros") => match args.get(2).and_then(|s| s.parse().ok()) {
            Some(mib) => zeros(mib),
            None => Err("usage: cedana-workload zeros MIB".into()),
        },
        Some("vsock-exec") => match args.get(2).and_then(|s| s.parse().ok()) {
            Some(port) => vsock_exec(port),
            None => Err("usage: cedana-workload vsock-exec PORT".into()),
        },
        _ => Err(
            "usage: cedana-workload counter|tcp-client|gpu-counter|io-uring|memory|memserve|memcheck|zeros|vsock-exec ..."
                .into(),
        ),
    };
    if let Err(e) = result {
        eprintln!("cedana-workload: {e}");
        std::process::exit(1);
    }
}
