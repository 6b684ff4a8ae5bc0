#!/usr/bin/env bash
# containerd shim benchmark: containerd-shim-cedana-v2 against containerd-shim-runc-v2,
# measured in the same run against one private containerd (temp dir, own sockets):
#   start latency: `ctr run --rm IMAGE ID /bin/true`, BENCH_SHIM_RUNS times per runtime
#   (median), ours and theirs alternating, each container with its own shim;
#   resident memory: BENCH_SHIM_CONTAINERS detached containers per runtime, VmRSS of each
#   shim process (mean);
#   checkpoint: `ctr task checkpoint` of a container holding BENCH_SHIM_CKPT_MIB MiB
#   (default 270) in a shell variable, BENCH_SHIM_CKPT_RUNS times per runtime (median),
#   ours and theirs alternating, each ending as a tar in containerd's content store,
#   removed after each run.
# Prints the figures and our/theirs ratios, and saves them as JSON under bench/results/. Needs root, containerd, ctr, runc, busybox
# (make deps) and a build of the shim (BIN, default target/release).
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${BENCH_SHIM_RUNS:-20}
CONTAINERS=${BENCH_SHIM_CONTAINERS:-5}
CKPT_MIB=${BENCH_SHIM_CKPT_MIB:-270}
CKPT_RUNS=${BENCH_SHIM_CKPT_RUNS:-3}
RESULTS=${BENCH_RESULTS_DIR:-bench/results}/containerd-shim-$(date -u +%Y%m%dT%H%M%SZ).json
BIN=$(realpath "${BIN:-target/release}")
[ "$(id -u)" -eq 0 ] || { echo "the benchmark needs root (containerd)" >&2; exit 1; }
[ -x "$BIN/containerd-shim-cedana-v2" ] || { echo "missing $BIN/containerd-shim-cedana-v2" >&2; exit 1; }

D=$(mktemp -d /tmp/cedana-shim-bench.XXXXXX)
CTRD_PID=
cleanup() {
    if [ -n "$CTRD_PID" ]; then
        for id in $(ctr --address "$D/c.sock" containers list -q 2>/dev/null); do
            ctr --address "$D/c.sock" task kill -s KILL "$id" >/dev/null 2>&1 || true
        done
        sleep 1
        for id in $(ctr --address "$D/c.sock" containers list -q 2>/dev/null); do
            ctr --address "$D/c.sock" task delete --force "$id" >/dev/null 2>&1 || true
            ctr --address "$D/c.sock" containers delete "$id" >/dev/null 2>&1 || true
        done
        kill "$CTRD_PID" 2>/dev/null || true
        wait "$CTRD_PID" 2>/dev/null || true
    fi
    # No mounts left is the usual case: grep finding none must not fail the script.
    { grep " $D" /proc/self/mounts || true; } | awk '{print $2}' | sort -r | xargs -r -n1 umount -l
    rm -rf "$D"
}
trap cleanup EXIT

# A one-layer busybox OCI image (no registry here).
mkdir -p "$D/rootfs/bin" "$D/rootfs/"{proc,sys,dev,tmp,etc} "$D/oci/blobs/sha256"
cp "$(command -v busybox)" "$D/rootfs/bin/busybox"
for a in $("$D/rootfs/bin/busybox" --list); do [ "$a" = busybox ] || ln -s busybox "$D/rootfs/bin/$a"; done
blob() { local h; h=$(sha256sum "$1" | cut -d' ' -f1); mv "$1" "$D/oci/blobs/sha256/$h"; echo "$h"; }
tar -C "$D/rootfs" -cf "$D/layer" .
LS=$(stat -c%s "$D/layer"); L=$(blob "$D/layer")
printf '{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' "$L" >"$D/cfg"
CS=$(stat -c%s "$D/cfg"); CF=$(blob "$D/cfg")
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}]}' "$CF" "$CS" "$L" "$LS" >"$D/man"
MS=$(stat -c%s "$D/man"); M=$(blob "$D/man")
IMAGE=docker.io/library/cedana-bench:latest
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"io.containerd.image.name":"%s"}}]}' "$M" "$MS" "$IMAGE" >"$D/oci/index.json"
echo '{"imageLayoutVersion":"1.0.0"}' >"$D/oci/oci-layout"
tar -C "$D/oci" -cf "$D/image.tar" .

cat >"$D/config.toml" <<CFG
version = 2
root = "$D/root"
state = "$D/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$D/c.sock"
[ttrpc]
  address = "$D/c.sock.ttrpc"
CFG
PATH="$BIN:$PATH" containerd --config "$D/config.toml" >"$D/containerd.log" 2>&1 &
CTRD_PID=$!
CTR=(ctr --address "$D/c.sock")
for _ in $(seq 100); do "${CTR[@]}" version >/dev/null 2>&1 && break; sleep 0.1; done
"${CTR[@]}" image import "$D/image.tar" >/dev/null

# Median of the numbers on stdin.
median() {
    sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'
}

# Seconds of one `ctr run --rm` of /bin/true on a runtime.
run_once() {
    local t0 t1
    t0=$(date +%s.%N)
    "${CTR[@]}" run --rm --runtime "$1" "$IMAGE" "$2" /bin/true
    t1=$(date +%s.%N)
    python3 -c "print($t1 - $t0)"
}

# Median seconds of `ctr run --rm`, ours and theirs alternating RUNS times (after one
# warm-up each): on a shared machine, load then weighs on both alike.
latencies() {
    local ours=() theirs=()
    run_once io.containerd.cedana.v2 warm-cedana >/dev/null
    run_once io.containerd.runc.v2 warm-runc >/dev/null
    for i in $(seq "$RUNS"); do
        ours+=("$(run_once io.containerd.cedana.v2 "lat-cedana-$i")")
        theirs+=("$(run_once io.containerd.runc.v2 "lat-runc-$i")")
    done
    echo "$(printf '%s\n' "${ours[@]}" | median) $(printf '%s\n' "${theirs[@]}" | median)"
}

# Mean shim RSS (KiB) over CONTAINERS detached containers of a runtime.
rss() {
    local rt=$1 tag=$2 shim=$3 total=0 n=0
    for i in $(seq "$CONTAINERS"); do
        "${CTR[@]}" run -d --runtime "$rt" "$IMAGE" "rss-$tag-$i" /bin/sleep 1000
    done
    sleep 1
    for p in $(pgrep -f "$shim.*-address $D/c.sock"); do
        local kb
        kb=$(awk '/VmRSS/ {print $2}' "/proc/$p/status" 2>/dev/null || true)
        [ -n "$kb" ] && { total=$((total + kb)); n=$((n + 1)); }
    done
    for i in $(seq "$CONTAINERS"); do
        "${CTR[@]}" task kill -s KILL "rss-$tag-$i" >/dev/null
    done
    sleep 1
    for i in $(seq "$CONTAINERS"); do
        "${CTR[@]}" task delete "rss-$tag-$i" >/dev/null 2>&1 || true
        "${CTR[@]}" containers delete "rss-$tag-$i" >/dev/null
    done
    echo $((total / (n > 0 ? n : 1)))
}

# Starts container ckpt-TAG on runtime RT holding CKPT_MIB MiB; returns once it is filled.
ckpt_container() {
    local rt=$1 id="ckpt-$2"
    # busybox sh: a variable of CKPT_MIB MiB of text; "ready" once it is filled. The
    # shell stays (no exec) and uses it after the sleep, so the memory is there to dump.
    "${CTR[@]}" run -d --runtime "$rt" "$IMAGE" "$id" /bin/sh -c \
        "x=\$(head -c $((CKPT_MIB * 1048576)) /dev/zero | tr '\\0' a); touch /tmp/ready; sleep 100000; echo \${#x}"
    for _ in $(seq 600); do
        "${CTR[@]}" task exec --exec-id "probe-$RANDOM" "$id" test -e /tmp/ready 2>/dev/null && break
        sleep 0.2
    done
}

# Seconds of one `ctr task checkpoint` of ckpt-TAG; the checkpoint is removed after.
checkpoint_once() {
    local id="ckpt-$1" t0 t1
    t0=$(date +%s.%N)
    "${CTR[@]}" task checkpoint "$id" >"$D/ckpt-$1"
    t1=$(date +%s.%N)
    for r in $("${CTR[@]}" image ls -q | grep checkpoint || true); do
        "${CTR[@]}" image rm "$r" >/dev/null 2>&1 || true
    done
    "${CTR[@]}" content prune references >/dev/null 2>&1 || true
    python3 -c "print($t1 - $t0)"
}

# Median seconds of `ctr task checkpoint` on each runtime, CKPT_RUNS times each,
# alternating ours and theirs: on a shared machine, load then weighs on both alike.
checkpoint_times() {
    local ours=() theirs=()
    ckpt_container io.containerd.cedana.v2 cedana >/dev/null
    ckpt_container io.containerd.runc.v2 runc >/dev/null
    for _ in $(seq "$CKPT_RUNS"); do
        ours+=("$(checkpoint_once cedana)")
        theirs+=("$(checkpoint_once runc)")
    done
    for id in ckpt-cedana ckpt-runc; do
        "${CTR[@]}" task kill -s KILL "$id" >/dev/null 2>&1 || true
    done
    sleep 1
    for id in ckpt-cedana ckpt-runc; do
        "${CTR[@]}" task delete "$id" >/dev/null 2>&1 || true
        "${CTR[@]}" containers delete "$id" >/dev/null 2>&1 || true
    done
    echo "$(printf '%s\n' "${ours[@]}" | median) $(printf '%s\n' "${theirs[@]}" | median)"
}

read -r OURS_LAT RUNC_LAT < <(latencies)
OURS_RSS=$(rss io.containerd.cedana.v2 cedana containerd-shim-cedana-v2)
RUNC_RSS=$(rss io.containerd.runc.v2 runc containerd-shim-runc-v2)
read -r OURS_CKPT RUNC_CKPT < <(checkpoint_times)

mkdir -p "$(dirname "$RESULTS")"
python3 - "$OURS_LAT" "$RUNC_LAT" "$OURS_RSS" "$RUNC_RSS" "$RUNS" "$CONTAINERS" \
    "$OURS_CKPT" "$RUNC_CKPT" "$CKPT_MIB" "$CKPT_RUNS" "$RESULTS" <<'PY'
import json, os, sys
ol, rl, orss, rrss, runs, n, oc, rc, mib, cruns, out = sys.argv[1:]
ol, rl, orss, rrss, oc, rc = float(ol), float(rl), int(orss), int(rrss), float(oc), float(rc)
print(f"containerd shim benchmark ({runs} runs, {n} containers per runtime; load {os.getloadavg()[0]:.1f})")
print(f"{'':32}{'cedana':>12}{'runc-v2':>12}{'ratio':>8}")
print(f"{'ctr run --rm latency (s)':32}{ol:>12.3f}{rl:>12.3f}{ol / rl:>8.2f}")
print(f"{'shim RSS (MiB)':32}{orss / 1024:>12.1f}{rrss / 1024:>12.1f}{orss / max(rrss, 1):>8.2f}")
print(f"{f'ctr task checkpoint {mib} MiB (s)':32}{oc:>12.3f}{rc:>12.3f}{oc / rc:>8.2f}")
json.dump({
    "runs": int(runs), "containers": int(n), "checkpoint_mib": int(mib),
    "checkpoint_runs": int(cruns), "load": os.getloadavg()[0],
    "latency_s": {"cedana": ol, "runc_v2": rl, "ratio": ol / rl},
    "shim_rss_kib": {"cedana": orss, "runc_v2": rrss, "ratio": orss / max(rrss, 1)},
    "checkpoint_s": {"cedana": oc, "runc_v2": rc, "ratio": oc / rc},
}, open(out, "w"), indent=1)
print(f"saved {out}")
PY
