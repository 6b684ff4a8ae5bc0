"""Lazy restore against a full restore: the time from starting `cedana restore` until
the restored process answers its first request (a `ping` on TCP), and until the command
returns (with --lazy --no-server: once every page is in). For each size and each
checkpoint format (`dir`: `--compression none`, images served in place; `streamed`: the
default, decoded into image files before a lazy restore), one dump, then BENCH_RUNS
restores each way. Prints medians and ratios; saves every row as JSON (argv[1])."""
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time

BIN = os.environ.get("BIN", "target/release")
CEDANA, WORKLOAD = f"{BIN}/cedana", f"{BIN}/cedana-workload"
WORK = os.environ.get("BENCH_DIR", "/var/tmp/cedana-bench") + "/lazy"
RUNS = int(os.environ.get("BENCH_RUNS", "3"))
ANSWER_TIMEOUT_S = 120


def mem_available_mib():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) // 1024
    return 0


def sizes():
    given = os.environ.get("BENCH_LAZY_SIZES")
    if given:
        return [int(s) for s in given.split()]
    # The workload, its checkpoint in the page cache and a decoded copy: 4 GiB only
    # where three times that fits.
    return [1024] + ([4096] if mem_available_mib() > 3 * 4096 + 2048 else [])


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def ping(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as c:
            c.settimeout(ANSWER_TIMEOUT_S)
            c.sendall(b"ping\n")
            return c.recv(16).startswith(b"pong")
    except OSError:
        return False


def gone(pid, timeout=10):
    end = time.time() + timeout
    while time.time() < end and os.path.exists(f"/proc/{pid}"):
        time.sleep(0.05)


def start_workload(mib, port, log):
    out = open(log, "w")
    p = subprocess.Popen([WORKLOAD, "memserve", str(mib), f"127.0.0.1:{port}"],
                         stdout=out, stderr=out, stdin=subprocess.DEVNULL,
                         start_new_session=True)
    end = time.time() + 300
    while time.time() < end:
        with open(log) as f:
            if "ready" in f.read().split():
                return p
        time.sleep(0.1)
    sys.exit("the workload did not become ready")


def dump(d, mib, fmt):
    port = free_port()
    w = start_workload(mib, port, f"{d}/{fmt}.log")
    flags = ["--compression", "none"] if fmt == "dir" else []
    out = subprocess.run([CEDANA, "--json", "--set", f"checkpoint.dir={d}", "dump", "process",
                          str(w.pid), "--no-server", "--name", fmt, *flags],
                         check=True, capture_output=True, text=True)
    w.wait()
    log = f"{d}/{fmt}.log"
    return json.loads(out.stdout)["path"], port, w.pid, (log, os.path.getsize(log))


def restore(path, port, pid, log, lazy):
    gone(pid)
    # CRIU checks an open file's size: what the last restored copy wrote goes.
    os.truncate(*log)
    t = time.time()
    p = subprocess.Popen([CEDANA, "--json", "restore", "process", "--path", path, "--no-server",
                          *(["--lazy"] if lazy else [])],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    answered = None
    while time.time() - t < ANSWER_TIMEOUT_S:
        if ping(port):
            answered = time.time() - t
            break
        if p.poll() is not None and p.returncode != 0:
            sys.exit(f"restore failed: {p.stderr.read()}")
        time.sleep(0.002)
    out, err = p.communicate()
    returned = time.time() - t
    if p.returncode != 0 or answered is None:
        sys.exit(f"restore failed or never answered: {err}")
    os.kill(json.loads(out)["pid"], signal.SIGKILL)
    return answered, returned


rows = []
for mib in sizes():
    d = f"{WORK}/{mib}"
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    for fmt in ("dir", "streamed"):
        path, port, pid, log = dump(d, mib, fmt)
        for run in range(1, RUNS + 1):
            for way in ("full", "lazy"):
                answered, returned = restore(path, port, pid, log, way == "lazy")
                rows.append({"size_mib": mib, "format": fmt, "way": way, "run": run,
                             "first_answer_s": round(answered, 3),
                             "returned_s": round(returned, 3)})
        shutil.rmtree(path, ignore_errors=True)
    shutil.rmtree(d, ignore_errors=True)

med = {}
for r in rows:
    med.setdefault((r["size_mib"], r["format"], r["way"]), []).append(r)
medians = {f"{s}/{f}/{w}": {k: statistics.median(x[k] for x in rs)
                             for k in ("first_answer_s", "returned_s")}
           for (s, f, w), rs in med.items()}
print(f"\n{'size':>6} {'checkpoint':<10} {'restore':<6} {'first answer s':>15} {'ratio':>7} {'returned s':>11}")
for (s, f, w) in sorted(med):
    m = medians[f"{s}/{f}/{w}"]
    full = medians[f"{s}/{f}/full"]["first_answer_s"]
    print(f"{s:>5}M {f:<10} {w:<6} {m['first_answer_s']:>15.3f} "
          f"{m['first_answer_s'] / full:>6.2f}x {m['returned_s']:>11.3f}")
print("ratio: time to the first answer against the full restore of the same checkpoint, same run;"
      " returned: when `cedana restore --no-server` returned (lazy: every page in)")
with open(sys.argv[1], "w") as f:
    json.dump({"host": platform.node(), "kernel": platform.release(), "rows": rows,
               "medians": medians}, f, indent=2)
print(f"saved {sys.argv[1]}")
