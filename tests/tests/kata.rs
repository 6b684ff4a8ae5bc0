//! kata: checkpoint/restore inside QEMU guests through cedana-guest-agent, reached over
//! hybrid vsock (vhost-device-vsock), with real CRIU in the guest. Each guest boots once
//! for several checks: under emulation a boot takes from 7 s to over a minute.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant};

use cedana_e2e::containerd::{containerd_available, Containerd};
use cedana_e2e::guest::{build_image, missing_tools, Guest};
use cedana_e2e::{e2e_enabled, skip, Env, Run};
use cedana_runtime::adapters::commit::FAULT_ENV;
use cedana_runtime::guest::shards::CORRUPT_FAULT;
use cedana_runtime::streamer::StreamIndex;
use sha2::{Digest, Sha256};

/// The counter the guest's init runs as a plain process, and the one in the container
/// (each prints `COUNTER NAME N` on the console).
const COUNTER: &str = "counter";
const CONTAINER_COUNTER: &str = "container";
/// The count a client sends through an established TCP connection to an echo server in
/// the same guest, printed as it comes back (`COUNTER tcp N`).
const TCP_COUNTER: &str = "tcp";
const GUEST_MIB: u32 = 512;
/// The memory workload's count (`cedana-workload memcheck`).
const MEMORY_COUNTER: &str = "memory";
/// How long a big heap may take to build and checksum in a guest (a debug build under
/// emulation on a loaded machine).
const HEAP_BUILD: Duration = Duration::from_secs(300);

fn guests_can_run() -> bool {
    if !e2e_enabled() {
        return false;
    }
    match missing_tools() {
        Some(why) => skip(&why, "make deps"),
        None => true,
    }
}

/// kata's containerd shim, as a container record names it (no task is ever created).
const KATA_RUNTIME: &str = "io.containerd.kata.v2";
/// The pod sandbox CRI would put the kata container in.
const SANDBOX: &str = "sb1";

/// Points the sandbox's Cloud Hypervisor socket under `vm_root` at guest `g`'s
/// hybrid-vsock socket, as kata's runtime lays it out (`vm/SANDBOX/clh.sock`).
fn expose_as_sandbox(vm_root: &Path, g: &Guest) {
    let dir = vm_root.join("vm").join(SANDBOX);
    fs::create_dir_all(&dir).expect("mkdir");
    let link = dir.join("clh.sock");
    let _ = fs::remove_file(&link);
    std::os::unix::fs::symlink(&g.vsock, &link).expect("symlink");
}

fn vm<'a>(g: &'a Guest, extra: &[&'a str]) -> Vec<String> {
    let mut v = vec!["--vm-socket".to_string(), g.vsock.display().to_string()];
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

/// The PIDs the agent in `g` lists.
fn listed_pids(env: &Env, g: &Guest) -> Vec<i64> {
    let s = g.vsock.display().to_string();
    let l = env
        .cedana(&["--json", "query", "kata", "--vm-socket", &s, "--no-server"])
        .ok()
        .json();
    l["processes"]
        .as_array()
        .map(|ps| ps.iter().filter_map(|p| p["pid"].as_i64()).collect())
        .unwrap_or_default()
}

fn run(env: &Env, args: &[String]) -> cedana_e2e::Run {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    env.cedana(&a)
}

/// Guest A runs a counter and a container; bad requests fail clearly and leave them
/// running; both are dumped to the host, A is shut down, and guest B carries both on.
#[test]
fn counter_and_container_move_to_a_fresh_guest() {
    if !guests_can_run() {
        return;
    }
    if !containerd_available() {
        return;
    }
    // kata requests go through the daemon unless --no-server; it finds a sandbox's VM
    // under kata.vm_root.
    let vm_root = tempfile::tempdir().expect("tempdir");
    let mut env = Env::new().with_vars(vec![(
        "CEDANA_KATA_VM_ROOT".into(),
        vm_root.path().display().to_string(),
    )]);
    env.start_daemon();
    let image = env.path("image");
    build_image(&image, &[]);
    let ck = env.checkpoints();
    // containerd's records of the kata container c1 (CRI's sandbox annotation names its
    // pod) and of a plain runc container.
    let ctrd = Containerd::start();
    let rootfs = env.path("unused-rootfs");
    fs::create_dir_all(&rootfs).expect("mkdir");
    let rootfs = rootfs.display().to_string();
    let annotation = format!("io.kubernetes.cri.sandbox-id={SANDBOX}");
    ctrd.ok(&[
        "container",
        "create",
        "--rootfs",
        "--runtime",
        KATA_RUNTIME,
        "--annotation",
        &annotation,
        &rootfs,
        "c1",
    ]);
    ctrd.ok(&["container", "create", "--rootfs", &rootfs, "plain"]);
    let in_containerd = [
        "--containerd-address".to_string(),
        ctrd.socket().display().to_string(),
        "--namespace".to_string(),
        ctrd.namespace.clone(),
    ];

    let a = Guest::boot(
        &image,
        env.dir.path(),
        "a",
        GUEST_MIB,
        "cedana.run=counter,container,tcp",
    );
    let pid = a.workload_pid("counter");
    let tcp_pid = a.workload_pid("tcp");
    expose_as_sandbox(vm_root.path(), &a);
    a.wait_counter_above(COUNTER, 2);
    a.wait_counter_above(CONTAINER_COUNTER, 2);
    a.wait_counter_above(TCP_COUNTER, 2);

    // What runs, and the guest's health, as the agent sees them.
    let mut query = vec!["--json".to_string(), "query".into(), "kata".into()];
    query.extend(vm(&a, &[]));
    let listed = run(&env, &query).ok().json();
    let procs = listed["processes"].as_array().expect("processes");
    assert!(
        procs.iter().any(|p| p["pid"] == pid),
        "counter PID {pid} not listed: {listed}"
    );
    let c1 = listed["containers"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["id"] == "c1").cloned())
        .expect("container c1 listed");
    assert!(c1["pid"].is_i64(), "c1 has a running tree: {c1}");
    let mut check = vec!["query".to_string(), "kata".into(), "--check".into()];
    check.extend(vm(&a, &[]));
    run(&env, &check).ok();

    // Bad input: each refused with its reason, before anything is touched.
    let dump = |g: &Guest, extra: &[&str]| {
        let mut args = vec!["dump".to_string(), "kata".into()];
        args.extend(vm(g, extra));
        args.extend(["--dir".to_string(), ck.display().to_string()]);
        args
    };
    let seen = a.wait_counter_above(COUNTER, 0);
    run(
        &env,
        &dump(&a, &["--pid", &pid.to_string(), "--port", "999"]),
    )
    .fails_with("nothing listens on vsock port 999");
    let mut gone = dump(&a, &["--pid", &pid.to_string()]);
    gone[3] = env.path("no-such-vm.sock").display().to_string();
    run(&env, &gone).fails_with("cannot reach the guest agent");
    run(&env, &dump(&a, &["nope"])).fails_with("no kata container \"nope\"");
    // By containerd id, without --vm-socket: an id containerd does not know, and a
    // container that is not kata's, each said plainly.
    let by_id = |id: &str| {
        let mut args = vec!["dump".to_string(), "kata".into(), id.into()];
        args.extend(in_containerd.iter().cloned());
        args.extend(["--dir".to_string(), ck.display().to_string()]);
        args
    };
    run(&env, &by_id("ghost")).fails_with("ghost");
    run(&env, &by_id("plain")).fails_with("not kata");
    // Refused on the host after CRIU ran in the guest (the name is taken): the tree,
    // held stopped until the host commits, runs on.
    fs::create_dir_all(ck.join("taken")).expect("mkdir");
    fs::write(ck.join("taken").join("x"), b"someone else's").expect("write");
    run(
        &env,
        &dump(&a, &["--pid", &pid.to_string(), "--name", "taken"]),
    )
    .fails_with("exists");
    fs::remove_dir_all(ck.join("taken")).expect("rm");
    let after = a.wait_counter_above(COUNTER, seen);
    a.wait_counter_above(COUNTER, after);

    // The dumps: each lands verified on the host, and the tree is gone from the guest.
    // The counter in this process (--no-server), c1 through the daemon, its VM found
    // from containerd.
    let out = run(
        &env,
        &dump(
            &a,
            &[
                "--pid",
                &pid.to_string(),
                "--name",
                "counter",
                "--no-server",
            ],
        ),
    )
    .ok();
    let last = *a.counter_values(COUNTER).last().expect("a value");
    // A directory: metadata.json, the stream index and the shard that crossed the link
    // while the guest's CRIU wrote it.
    let counter_ck = ck.join("counter");
    assert!(counter_ck.join("shard-0.lz4").is_file(), "{}", out.stdout);
    assert!(out.stdout.contains("verified"), "{}", out.stdout);
    let mut c1_dump = by_id("c1");
    c1_dump.extend(["--name".to_string(), "c1".into()]);
    run(&env, &c1_dump).ok();
    let c1_last = *a.counter_values(CONTAINER_COUNTER).last().expect("a value");
    let c1_ck = ck.join("c1");
    assert!(c1_ck.join("metadata.json").is_file());
    // The daemon recorded what it received; the --no-server dump is nobody's record.
    let listed = env.cedana(&["--json", "checkpoints"]).ok().json();
    let paths: Vec<&str> = listed
        .as_array()
        .expect("checkpoints")
        .iter()
        .filter_map(|c| c["path"].as_str())
        .collect();
    assert_eq!(paths, vec![c1_ck.display().to_string()], "{listed}");
    // The TCP pair (both ends in one tree): CRIU locks its connection with nftables.
    run(
        &env,
        &dump(&a, &["--pid", &tcp_pid.to_string(), "--name", "tcp"]),
    )
    .ok();
    let tcp_last = *a.counter_values(TCP_COUNTER).last().expect("a value");
    let tcp_ck = ck.join("tcp");
    let leftovers: Vec<_> = fs::read_dir(&ck)
        .expect("ls")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "staging left behind: {leftovers:?}");
    drop(a);

    // A damaged copy is refused on the host, before it reaches any guest.
    let bad = env.path("bad");
    fs::create_dir_all(&bad).expect("mkdir");
    for f in fs::read_dir(&counter_ck).expect("ls").flatten() {
        let mut bytes = fs::read(f.path()).expect("read");
        if f.file_name() == "shard-0.lz4" {
            let mid = bytes.len() / 2;
            bytes[mid] ^= 0x55;
        }
        fs::write(bad.join(f.file_name()), bytes).expect("write");
    }
    let restore = |g: &Guest, path: &Path, id: Option<&str>| {
        let mut args = vec!["restore".to_string(), "kata".into()];
        args.extend(id.map(str::to_string));
        args.extend(["--path".to_string(), path.display().to_string()]);
        args.extend(vm(g, &[]));
        args
    };

    let b = Guest::boot(
        &image,
        env.dir.path(),
        "b",
        GUEST_MIB,
        "cedana.layout=container",
    );
    run(&env, &restore(&b, &bad, None)).fails_with("shard-0.lz4 is corrupt");
    run(&env, &restore(&b, &c1_ck, Some("nope"))).fails_with("no kata container \"nope\"");
    let mut counter_back = restore(&b, &counter_ck, None);
    counter_back.push("--no-server".into());
    // Damaged in transit, mid-restore (the first memory chunk, after CRIU has begun):
    // the guest refuses the piece, CRIU's restore fails and leaves no process behind.
    let cut = Run::from_output(
        env.cmd()
            .env(FAULT_ENV, CORRUPT_FAULT)
            .args(&counter_back)
            .output()
            .expect("run cedana"),
    );
    cut.fails_with("corrupted");
    assert!(
        !listed_pids(&env, &b).contains(&(pid as i64)),
        "a process with the counter's PID {pid} is left in guest B after a failed restore"
    );
    run(&env, &counter_back).ok();
    let first = b.wait_counter_above(COUNTER, 0);
    assert!(
        first >= last,
        "the restored counter started at {first}, below its last value {last} in guest A"
    );
    b.wait_counter_above(COUNTER, first);
    // c1 into guest B found from containerd too, now that its sandbox runs there.
    expose_as_sandbox(vm_root.path(), &b);
    let mut c1_back = vec!["restore".to_string(), "kata".into(), "c1".into()];
    c1_back.extend(["--path".to_string(), c1_ck.display().to_string()]);
    c1_back.extend(in_containerd.iter().cloned());
    run(&env, &c1_back).ok();
    let c1_first = b.wait_counter_above(CONTAINER_COUNTER, 0);
    assert!(
        c1_first >= c1_last,
        "container counter restarted: {c1_first} < {c1_last}"
    );
    b.wait_counter_above(CONTAINER_COUNTER, c1_first);
    // The connection carries the count on in guest B: its echoes keep coming.
    run(&env, &restore(&b, &tcp_ck, None)).ok();
    let tcp_first = b.wait_counter_above(TCP_COUNTER, 0);
    assert!(
        tcp_first > tcp_last,
        "the TCP count came back at {tcp_first}, not after its last value {tcp_last}"
    );
    b.wait_counter_above(TCP_COUNTER, tcp_first + 2);
}

/// Boots guest A (`guest_mib` of RAM, tmpfs root) running `workload_mib` of heap that
/// counts on the console only while its memory matches its checksum, dumps it to the
/// host, restores it into a fresh guest B of the same size, and checks that the count
/// goes on there with the memory intact. Returns the dump's and the restore's wall time.
fn memory_moves_between_guests(guest_mib: u32, workload_mib: u64) -> (Duration, Duration) {
    let env = Env::new();
    let image = env.path("image");
    build_image(&image, &["cedana-workload"]);
    let ck = env.checkpoints();
    let a = Guest::boot(
        &image,
        env.dir.path(),
        "a",
        guest_mib,
        &format!("cedana.run=memcheck:{workload_mib}"),
    );
    let pid = a.workload_pid("memcheck").to_string();
    // A value means its heap is built; building it is slow under emulation.
    let seen = a.wait_counter_above_within(MEMORY_COUNTER, 0, HEAP_BUILD);
    let (s, dir) = (a.vsock.display().to_string(), ck.display().to_string());
    let t = Instant::now();
    env.cedana(&[
        "dump",
        "kata",
        "--pid",
        &pid,
        "--vm-socket",
        &s,
        "--dir",
        &dir,
        "--name",
        "mem",
        "--no-server",
    ])
    .ok();
    let dumped = t.elapsed();
    let last = *a.counter_values(MEMORY_COUNTER).last().expect("a value");
    assert!(last >= seen);
    assert!(!a.console_text().contains("MEMORY CORRUPT"));
    drop(a);
    // What crossed: CRIU's images of at least the whole heap (zero pages included).
    let index = StreamIndex::load(&ck.join("mem")).expect("stream index");
    assert!(
        index.raw_bytes() >= workload_mib << 20,
        "the images hold {} bytes, less than the {workload_mib} MiB heap",
        index.raw_bytes()
    );
    let b = Guest::boot(&image, env.dir.path(), "b", guest_mib, "");
    let s = b.vsock.display().to_string();
    let path = ck.join("mem").display().to_string();
    let t = Instant::now();
    env.cedana(&[
        "restore",
        "kata",
        "--path",
        &path,
        "--vm-socket",
        &s,
        "--no-server",
    ])
    .ok();
    let restored = t.elapsed();
    let first = b.wait_counter_above(MEMORY_COUNTER, 0);
    assert!(
        first >= last,
        "the restored count started at {first}, below its last value {last} in guest A"
    );
    // Each value checked a sixteenth of the heap: 16 more, and all of it matched.
    b.wait_counter_above(MEMORY_COUNTER, first + 16);
    assert!(
        !b.console_text().contains("MEMORY CORRUPT"),
        "the restored heap does not match its checksum"
    );
    eprintln!(
        "kata: {workload_mib} MiB workload, {guest_mib} MiB guests: dump {dumped:?}, restore {restored:?} ({} bytes of images)",
        index.raw_bytes()
    );
    (dumped, restored)
}

/// Nothing whole in guest memory: a guest whose RAM cannot hold the workload plus one
/// copy of its images (260 MiB of heap, 260 MiB or more of images, 512 MiB of RAM, the
/// root filesystem, about 140 MiB with the debug agent, and the agent's scratch in that
/// same RAM) dumps it and a fresh one restores it, its heap intact. Writing the images,
/// or an archive of them, anywhere in the guest would run it out of memory. (A 140 MiB
/// heap in a 256 MiB guest, and 196 MiB in 384 MiB, were killed by the guest's OOM
/// killer: the debug image leaves too little room.)
/// Measured on the 2-core development machine, debug agent (its codecs and hashes at
/// opt-level 3, Cargo.toml), TCG: dump 29.9 s, restore 27.7 s, 132 s for the whole test
/// (166 s and 465 s with the codecs unoptimised).
#[test]
fn a_workload_larger_than_half_the_guest_moves_between_guests() {
    if !guests_can_run() {
        return;
    }
    const GUEST: u32 = 512;
    const HEAP: u64 = 260;
    assert!(
        2 * HEAP > GUEST as u64,
        "the guest must not hold two copies"
    );
    memory_moves_between_guests(GUEST, HEAP);
}

/// 300 MiB of workload memory in a 1 GiB guest whose root is tmpfs: dumped to the host
/// and restored into a fresh 1 GiB guest, where it counts on with its memory intact.
/// Measured on the 2-core development machine, debug agent (codecs at opt-level 3), TCG:
/// dump 30.1 s, restore 27.1 s, 132 s for the whole test.
#[test]
fn a_300_mib_workload_moves_between_1_gib_guests() {
    if !guests_can_run() {
        return;
    }
    memory_moves_between_guests(1024, 300);
}

/// A fake agent on TCP that answers a dump by starting to send its shard, then `body`.
fn fake_agent(body: Vec<u8>) -> String {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr").to_string();
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = l.accept() {
            let mut head = [0u8; 5];
            let _ = s.read_exact(&mut head);
            let mut req =
                vec![0u8; u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize];
            let _ = s.read_exact(&mut req);
            let part = serde_json::json!({"part": "file", "rel": "shard-0.lz4"});
            let json = serde_json::to_vec(&part).expect("json");
            let _ = s.write_all(&frame(1, &json));
            let _ = s.write_all(&body);
        }
    });
    addr
}

fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![kind];
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn chunk(data: &[u8], sum_of: &[u8]) -> Vec<u8> {
    let mut p = Sha256::digest(sum_of).to_vec();
    p.extend_from_slice(data);
    frame(2, &p)
}

/// A stream cut short or damaged in transit leaves nothing on the host (TCP transport;
/// no guest needed).
#[test]
fn a_truncated_or_corrupted_stream_leaves_nothing() {
    if !e2e_enabled() {
        return;
    }
    let env = Env::new();
    let ck = env.checkpoints();
    let data = vec![7u8; 4096];
    let cases = [
        (chunk(&data, &data), "truncated"),
        (chunk(&data, b"other bytes"), "corrupted"),
    ];
    for (body, needle) in cases {
        let addr = fake_agent(body);
        let d = ck.display().to_string();
        env.cedana(&[
            "dump",
            "kata",
            "--pid",
            "1",
            "--tcp",
            &addr,
            "--dir",
            &d,
            "--no-server",
        ])
        .fails_with(needle);
        let left: Vec<_> = fs::read_dir(&ck)
            .map(|r| r.flatten().count())
            .into_iter()
            .collect();
        assert_eq!(left, vec![0], "{needle}: files left in {d}");
    }
}
