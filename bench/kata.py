"""kata: dump and restore of a workload in a QEMU guest through cedana-guest-agent,
against the standard way (CRIU by hand in the guest, its images to the guest's tmpfs,
then tar over vsock to the host; back in: tar over vsock into tmpfs, then criu restore).
Each side boots its own guests (A to dump from, B to restore into), one run each; the
times are wall clock on the host, from the command to its end (ours: `cedana dump|restore
kata --no-server`; baseline: from sending the script until the tar stream ends, and from
sending the tar until criu restore returns). Saves the figures as JSON (argv[1])."""
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import time

BIN = os.environ.get("BIN", "target/release")
CEDANA = f"{BIN}/cedana"
VDV = os.environ["VDV"]
WORK = os.environ["WORK"]
IMAGE = f"{WORK}/image"
MIB = int(os.environ.get("BENCH_KATA_MIB", "256"))
GUEST_MIB = int(os.environ.get("BENCH_KATA_GUEST_MIB", "1024"))
STEP_S = int(os.environ.get("BENCH_KATA_STEP_S", "600"))
SHELL_PORT = 1100


class Guest:
    """A QEMU guest (TCG) with a vhost-user vsock device; killed by stop()."""

    def __init__(self, name, cmdline):
        self.vsock = f"{WORK}/{name}.vsock"
        self.console = f"{WORK}/{name}.console"
        vhost = f"{WORK}/{name}.vhost.sock"
        self.vdv = subprocess.Popen(
            [VDV, "--vm", f"guest-cid=3,socket={vhost},uds-path={self.vsock}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait(lambda: os.path.exists(vhost), 30, "vhost-device-vsock")
        mem = f"{GUEST_MIB}M"
        self.qemu = subprocess.Popen(
            ["qemu-system-x86_64", "-accel", "tcg", "-cpu", "max", "-m", mem,
             "-nographic", "-no-reboot", "-kernel", f"{IMAGE}/vmlinuz",
             "-initrd", f"{IMAGE}/initrd.gz",
             "-append", f"console=ttyS0 quiet panic=-1 cedana.bench=1 {cmdline}",
             "-object", f"memory-backend-memfd,id=mem,size={mem},share=on",
             "-numa", "node,memdev=mem", "-chardev", f"socket,id=vv,path={vhost}",
             "-device", "vhost-user-vsock-pci,chardev=vv"],
            stdin=subprocess.DEVNULL, stdout=open(self.console, "wb"),
            stderr=subprocess.DEVNULL)
        wait(lambda: b"listening on vsock" in self.text(), STEP_S, "the guest agent")

    def text(self):
        with open(self.console, "rb") as f:
            return f.read()

    def workload_pid(self):
        for line in self.text().decode(errors="replace").splitlines():
            if line.strip().startswith("WORKLOAD memory PID "):
                return int(line.split()[-1])
        raise SystemExit("no memory workload on the guest console")

    def connect(self, port):
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(STEP_S)
        s.connect(self.vsock)
        s.sendall(f"CONNECT {port}\n".encode())
        reply = b""
        while not reply.endswith(b"\n"):
            b = s.recv(1)
            if not b:
                raise SystemExit(f"nothing listens on guest vsock port {port}")
            reply += b
        if not reply.startswith(b"OK"):
            raise SystemExit(f"CONNECT {port}: {reply!r}")
        return s

    def sh(self, script, out=None):
        """Runs `script` (one line) in the guest's shell; its stdout goes to `out` (a
        file) or is returned. No half-close: vhost-device-vsock makes it a full close."""
        s = self.connect(SHELL_PORT)
        s.sendall(script.encode() + b"\n")
        got = b""
        while True:
            b = s.recv(1 << 20)
            if not b:
                break
            if out:
                out.write(b)
            else:
                got += b
        s.close()
        return got.decode(errors="replace")

    def stop(self):
        for p in (self.qemu, self.vdv):
            p.kill()
            p.wait()


def wait(ok, timeout, what):
    end = time.time() + timeout
    while time.time() < end:
        if ok():
            return
        time.sleep(0.5)
    raise SystemExit(f"timed out waiting for {what}")


def cedana(*args):
    t = time.time()
    r = subprocess.run([CEDANA, *args, "--no-server"], capture_output=True, text=True,
                       timeout=STEP_S)
    if r.returncode != 0:
        raise SystemExit(f"cedana {' '.join(args)} failed: {r.stdout}{r.stderr}")
    return time.time() - t


def ready(g, pid):
    """Waits until the workload's heap is all in memory (its RSS)."""
    def rss_mib():
        parts = g.sh(f"grep VmRSS /proc/{pid}/status").split()
        return int(parts[1]) // 1024 if len(parts) >= 2 and parts[1].isdigit() else 0
    wait(lambda: rss_mib() >= MIB, STEP_S, "the workload's heap")


def ours():
    a = Guest("ours-a", f"cedana.run=memory:{MIB}")
    try:
        pid = a.workload_pid()
        ready(a, pid)
        dump_s = cedana("dump", "kata", "--pid", str(pid), "--vm-socket", a.vsock,
                        "--dir", f"{WORK}/ck", "--name", "mem")
    finally:
        a.stop()
    size = sum(os.path.getsize(os.path.join(f"{WORK}/ck/mem", f))
               for f in os.listdir(f"{WORK}/ck/mem"))
    b = Guest("ours-b", "")
    try:
        restore_s = cedana("restore", "kata", "--path", f"{WORK}/ck/mem",
                           "--vm-socket", b.vsock)
        alive = b.sh(f"kill -0 {pid} && echo alive").strip() == "alive"
    finally:
        b.stop()
    return {"dump_s": dump_s, "restore_s": restore_s, "stored_bytes": size, "alive": alive}


def baseline():
    a = Guest("base-a", f"cedana.run=memory:{MIB}")
    tar = f"{WORK}/baseline.tar"
    try:
        pid = a.workload_pid()
        ready(a, pid)
        t = time.time()
        with open(tar, "wb") as out:
            a.sh(f"criu dump -t {pid} -D /tmp/img -o dump.log >/dev/null 2>&1 "
                 f"&& tar -cf - -C /tmp/img .", out)
        dump_s = time.time() - t
    finally:
        a.stop()
    size = os.path.getsize(tar)
    if size < MIB << 20:
        raise SystemExit(f"the baseline's images are {size} bytes: criu dump failed")
    b = Guest("base-b", "")
    try:
        t = time.time()
        # The images go in as the shell's stdin, `head -c` bounding it (no half-close).
        s = b.connect(SHELL_PORT)
        s.sendall(f"head -c {size} | tar -xf - -C /tmp/img\n".encode())
        with open(tar, "rb") as f, s.makefile("wb") as w:
            shutil.copyfileobj(f, w)
        while s.recv(1 << 16):
            pass
        s.close()
        out = b.sh("criu restore -D /tmp/img -d -o restore.log >/dev/null 2>&1 && echo restored")
        restore_s = time.time() - t
        alive = "restored" in out and b.sh(f"kill -0 {pid} && echo alive").strip() == "alive"
    finally:
        b.stop()
    return {"dump_s": dump_s, "restore_s": restore_s, "stored_bytes": size, "alive": alive}


def main():
    os.makedirs(f"{WORK}/ck", exist_ok=True)
    o = ours()
    print(f"ours:     dump {o['dump_s']:.1f} s, restore {o['restore_s']:.1f} s, "
          f"{o['stored_bytes'] >> 20} MiB stored, restored alive: {o['alive']}", flush=True)
    b = baseline()
    print(f"baseline: dump {b['dump_s']:.1f} s, restore {b['restore_s']:.1f} s, "
          f"{b['stored_bytes'] >> 20} MiB stored, restored alive: {b['alive']}", flush=True)
    ratios = {k: o[k] / b[k] for k in ("dump_s", "restore_s") if b[k] > 0}
    print(f"ours/baseline: dump {ratios['dump_s']:.2f}, restore {ratios['restore_s']:.2f}")
    os.makedirs(os.path.dirname(sys.argv[1]) or ".", exist_ok=True)
    with open(sys.argv[1], "w") as f:
        json.dump({"bench": "kata", "workload_mib": MIB, "guest_mib": GUEST_MIB,
                   "accel": "tcg", "host": platform.node(), "cpus": os.cpu_count(),
                   "ours": o, "baseline": b, "ratios": ratios}, f, indent=2)
    print(f"saved {sys.argv[1]}")


if __name__ == "__main__":
    main()
