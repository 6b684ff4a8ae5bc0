//! A TCP connection inside a container run by containerd with our shim: checkpointed
//! with no extra options (the engine sees the connection and turns on tcp_established),
//! restored into a new container, and still talking. runc restores the container's own
//! network namespace empty (its `lo` down); cedana-runc brings `lo` up with a prestart
//! hook for the restore only, before CRIU reconnects the sockets.

use std::time::Duration;

use cedana_e2e::containerd::{Containerd, CEDANA};
use cedana_e2e::wait_for;

/// The numbers the client got back from the echo server, read inside the container.
fn echoed(c: &Containerd, id: &str, exec: &str) -> Vec<u64> {
    let r = c.ctr(&["task", "exec", "--exec-id", exec, id, "/bin/cat", "/echo"]);
    r.stdout
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Waits until the last echoed number passes `above`; returns all of them.
fn wait_echo_above(c: &Containerd, id: &str, above: u64) -> Vec<u64> {
    let mut n = 0;
    wait_for(
        &format!("{id} to echo past {above}"),
        Duration::from_secs(20),
        || {
            n += 1;
            let v = echoed(c, id, &format!("w{n}"));
            (v.last().copied().unwrap_or(0) > above).then_some(v)
        },
    )
}

#[test]
fn containerd_tcp_connection_survives_checkpoint_and_restore() {
    let Some(c) = Containerd::setup() else { return };
    // An echo server and a client in the container's own network namespace, over
    // loopback (brought up by the container itself, hence CAP_NET_ADMIN).
    let script = "ip link set lo up; nc -l -p 5000 -e cat & sleep 0.5; \
                  i=0; while true; do i=$((i+1)); echo $i; sleep 0.05; done \
                  | nc 127.0.0.1 5000 > /echo";
    c.run_detached(
        &[CEDANA, "--cap-add", "CAP_NET_ADMIN"],
        "tcp-src",
        &["/bin/sh", "-c", script],
    );
    wait_echo_above(&c, "tcp-src", 10);
    c.ok(&[
        "container",
        "checkpoint",
        "--task",
        "--rw",
        "tcp-src",
        "cedana.test/tcp:1",
    ]);
    let before = echoed(&c, "tcp-src", "b1");
    let last = *before.last().expect("echoed before");
    c.kill_and_remove("tcp-src");

    c.ok(&[
        "container",
        "restore",
        "--live",
        "--rw",
        "tcp-dst",
        "cedana.test/tcp:1",
    ]);
    let after = wait_echo_above(&c, "tcp-dst", last + 10);
    // The same connection carries on: the sequence continues with no restart at 1
    // (a new connection would start again from 1 after the restored numbers).
    let start = after
        .iter()
        .position(|v| *v == 1)
        .expect("the sequence starts at 1");
    let seq = &after[start..];
    for w in seq.windows(2) {
        assert_eq!(w[1], w[0] + 1, "sequence broken: {seq:?}");
    }
    assert_eq!(
        after.iter().filter(|v| **v == 1).count(),
        1,
        "restarted: {after:?}"
    );
}
