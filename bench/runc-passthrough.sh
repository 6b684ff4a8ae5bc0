#!/usr/bin/env bash
# Pass-through overhead of cedana-runc: `cedana-runc state ID` against `runc state ID`
# on the same running container, BENCH_PASSTHROUGH_RUNS times each, interleaved (so
# both see the same machine noise). Prints medians, p90s, the ratio and the difference
# in ms, and saves them as JSON under bench/results/. Needs root, runc and busybox.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${BENCH_PASSTHROUGH_RUNS:-300}
BIN=${BIN:-target/release}
WRAPPER="$BIN/cedana-runc"
RUNC=$(command -v runc || echo /usr/sbin/runc)
RESULTS=${BENCH_RESULTS_DIR:-bench/results}/runc-passthrough-$(date -u +%Y%m%dT%H%M%SZ).json
[ "$(id -u)" -eq 0 ] || { echo "the benchmark needs root (runc)" >&2; exit 1; }
[ -x "$WRAPPER" ] || { echo "missing $WRAPPER: cargo build --release" >&2; exit 1; }

WORK=$(mktemp -d /tmp/cedana-bench-runc.XXXXXX)
ROOT="$WORK/root"
ID=bench-$$
cleanup() { "$RUNC" --root "$ROOT" delete --force "$ID" >/dev/null 2>&1 || true; rm -rf "$WORK"; }
trap cleanup EXIT

# A busybox bundle running `sleep`.
mkdir -p "$WORK/b/rootfs/bin" "$WORK/b/rootfs/proc" "$WORK/b/rootfs/dev" "$WORK/b/rootfs/sys"
cp "$(command -v busybox)" "$WORK/b/rootfs/bin/busybox"
ln -s busybox "$WORK/b/rootfs/bin/sh"
ln -s busybox "$WORK/b/rootfs/bin/sleep"
"$RUNC" spec --bundle "$WORK/b"
python3 - "$WORK/b/config.json" <<'PY'
import json, sys
p = sys.argv[1]
c = json.load(open(p))
c["process"].update(terminal=False, args=["sleep", "100000"])
c["process"].pop("rlimits", None)
json.dump(c, open(p, "w"))
PY
"$RUNC" --root "$ROOT" run -d --bundle "$WORK/b" "$ID" </dev/null >/dev/null 2>&1

CEDANA_RUNTIME_BINARY="$RUNC" python3 - "$RUNC" "$WRAPPER" "$ROOT" "$ID" "$RUNS" "$RESULTS" <<'PY'
import json, statistics, subprocess, sys, time
runc, wrapper, root, cid, runs, out = sys.argv[1:7]
runs = int(runs)
def once(binary):
    t = time.perf_counter()
    r = subprocess.run([binary, "--root", root, "state", cid], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    assert r.returncode == 0, f"{binary} state failed"
    return (time.perf_counter() - t) * 1000
for b in (runc, wrapper):  # warm the page cache
    for _ in range(10):
        once(b)
a, w = [], []
for _ in range(runs):
    a.append(once(runc))
    w.append(once(wrapper))
def p90(x):
    return sorted(x)[int(len(x) * 0.9) - 1]
ma, mw = statistics.median(a), statistics.median(w)
res = {
    "bench": "runc-passthrough", "command": "state", "runs": runs,
    "runc_median_ms": round(ma, 3), "cedana_runc_median_ms": round(mw, 3),
    "runc_p90_ms": round(p90(a), 3), "cedana_runc_p90_ms": round(p90(w), 3),
    "ratio": round(mw / ma, 3), "overhead_ms": round(mw - ma, 3),
}
print(f"runc state          median {ma:7.2f} ms  p90 {p90(a):7.2f} ms")
print(f"cedana-runc state   median {mw:7.2f} ms  p90 {p90(w):7.2f} ms")
print(f"pass-through overhead: {mw - ma:+.2f} ms per call, ratio {mw / ma:.3f} ({runs} runs each)")
json.dump(res, open(out, "w"), indent=1)
print(f"saved {out}")
PY
