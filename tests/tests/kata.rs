//! kata: checkpoint/restore inside QEMU guests through cedana-guest-agent, reached over
//! hybrid vsock (vhost-device-vsock), with real CRIU in the guest. Each guest boots once
//! for several checks: under emulation a boot takes from 7 s to over a minute.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;

use cedana_e2e::containerd::{containerd_available, Containerd};
use cedana_e2e::guest::{build_image, missing_tools, Guest};
use cedana_e2e::{e2e_enabled, skip, Env};
use sha2::{Digest, Sha256};

/// The counter the guest's init runs as a plain process, and the one in the container
/// (each prints `COUNTER NAME N` on the console).
const COUNTER: &str = "counter";
const CONTAINER_COUNTER: &str = "container";
/// The count a client sends through an established TCP connection to an echo server in
/// the same guest, printed as it comes back (`COUNTER tcp N`).
const TCP_COUNTER: &str = "tcp";
const GUEST_MIB: u32 = 512;

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
    fs::create_dir_all(&ck).expect("mkdir");
    fs::write(ck.join("taken.tar.zst"), b"someone else's").expect("write");
    run(
        &env,
        &dump(&a, &["--pid", &pid.to_string(), "--name", "taken"]),
    )
    .fails_with("exists");
    fs::remove_file(ck.join("taken.tar.zst")).expect("rm");
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
    let counter_ck = ck.join("counter.tar.zst");
    assert!(counter_ck.is_file(), "{}", out.stdout);
    assert!(out.stdout.contains("verified"), "{}", out.stdout);
    let mut c1_dump = by_id("c1");
    c1_dump.extend(["--name".to_string(), "c1".into()]);
    run(&env, &c1_dump).ok();
    let c1_last = *a.counter_values(CONTAINER_COUNTER).last().expect("a value");
    let c1_ck = ck.join("c1.tar.zst");
    assert!(c1_ck.is_file());
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
    let tcp_ck = ck.join("tcp.tar.zst");
    let leftovers: Vec<_> = fs::read_dir(&ck)
        .expect("ls")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "staging left behind: {leftovers:?}");
    drop(a);

    // A damaged copy is refused on the host, before it reaches any guest.
    let bad = env.path("bad.tar.zst");
    let mut bytes = fs::read(&counter_ck).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    fs::write(&bad, bytes).expect("write");
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
    run(&env, &restore(&b, &bad, None)).fails_with("cannot restore");
    run(&env, &restore(&b, &c1_ck, Some("nope"))).fails_with("no kata container \"nope\"");
    let mut counter_back = restore(&b, &counter_ck, None);
    counter_back.push("--no-server".into());
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

/// 300 MiB of workload memory in a 1 GiB guest whose root is tmpfs: dumped to the host
/// and restored into a fresh 1 GiB guest, where it runs on under its PID.
/// Ignored for now: under emulation on a loaded 2-core machine the dump alone took about
/// 4.5 minutes (it succeeded: a 75 MiB archive from a 1 GiB guest), and the restore had
/// not finished 4.5 minutes later, past any CI budget. Run it by hand with
/// `-- --ignored a_300_mib`; needs a faster guest (KVM) or a streamed restore to fit.
#[test]
#[ignore = "takes over 10 minutes under TCG emulation here; see the doc comment"]
fn a_300_mib_workload_moves_between_1_gib_guests() {
    if !guests_can_run() {
        return;
    }
    let env = Env::new();
    let image = env.path("image");
    build_image(&image, &["cedana-workload"]);
    let ck = env.checkpoints().display().to_string();
    let a = Guest::boot(&image, env.dir.path(), "a", 1024, "cedana.run=memory:300");
    let pid_n = a.workload_pid("memory");
    let pid = pid_n.to_string();
    let listed = |g: &Guest| {
        let s = g.vsock.display().to_string();
        let l = env
            .cedana(&["--json", "query", "kata", "--vm-socket", &s, "--no-server"])
            .ok()
            .json();
        l["processes"]
            .as_array()
            .is_some_and(|ps| ps.iter().any(|p| p["pid"] == pid_n))
    };
    assert!(listed(&a), "memory workload not running in guest A");
    // It prints `ready` once its 300 MiB are touched; give it time under emulation.
    std::thread::sleep(std::time::Duration::from_secs(20));
    let s = a.vsock.display().to_string();
    env.cedana(&[
        "dump",
        "kata",
        "--pid",
        &pid,
        "--vm-socket",
        &s,
        "--dir",
        &ck,
        "--name",
        "mem",
        "--no-server",
    ])
    .ok();
    drop(a);
    let b = Guest::boot(&image, env.dir.path(), "b", 1024, "");
    let s = b.vsock.display().to_string();
    let path = env.checkpoints().join("mem.tar.zst").display().to_string();
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
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert!(listed(&b), "restored workload not running in guest B");
}

/// A fake agent on TCP that answers a dump with `body` after a valid announcement.
fn fake_agent(body: Vec<u8>, size: u64) -> String {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr").to_string();
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = l.accept() {
            let mut head = [0u8; 5];
            let _ = s.read_exact(&mut head);
            let mut req =
                vec![0u8; u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize];
            let _ = s.read_exact(&mut req);
            let ready = serde_json::json!({
                "name": "x", "file_name": "x.tar.zst", "size": size, "pid": 1,
                "duration_ms": 1, "metadata": {}
            });
            let json = serde_json::to_vec(&ready).expect("json");
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
        let addr = fake_agent(body, 1 << 20);
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
