#!/usr/bin/env bash
# Container checkpoints: a runc container holding BENCH_RUNC_SIZES MiB (the memory
# workload of checkpoint.sh: 1/4 random, 3/8 text, 3/8 zero pages) is checkpointed and
# restored BENCH_RUNS times each way:
#   dump:    ours (`cedana dump runc`, zstd archive)
#            ours streamed (`--streams N`: runc runs cedana-criu-relay as its CRIU)
#            podman way (`runc checkpoint` to a directory, then `tar | zstd -3`: what
#            `podman container checkpoint --export` does)
#            raw `runc checkpoint` to a directory (no archive: the floor)
#   restore: ours (`cedana restore runc` from the archive / the shards)
#            baseline (`zstd -d | tar x`, then `runc restore`)
# In the table "criu" reads "runc checkpoint/restore" (runc drives CRIU). Prints medians
# and ratios from the same run; saves JSON under bench/results/. Needs root, runc,
# busybox, CRIU (make deps) and a release build (make bench does both).
set -euo pipefail
cd "$(dirname "$0")/.."

SIZES=${BENCH_RUNC_SIZES:-"1024"}
RUNS=${BENCH_RUNS:-3}
STREAMS=${BENCH_STREAMS:-$(nproc)}
BIN=${BIN:-target/release}
CEDANA="$BIN/cedana"
WORKLOAD="$BIN/cedana-workload"
RUNC=$(command -v runc || echo /usr/sbin/runc)
RESULTS=${BENCH_RESULTS_DIR:-bench/results}/runc-checkpoint-$(date -u +%Y%m%dT%H%M%SZ).json
[ "$(id -u)" -eq 0 ] || { echo "the benchmark needs root (runc, CRIU)" >&2; exit 1; }
for b in "$CEDANA" "$WORKLOAD" "$BIN/cedana-criu-relay"; do
    [ -x "$b" ] || { echo "missing $b: cargo build --release" >&2; exit 1; }
done

WORK=${BENCH_DIR:-/var/tmp/cedana-bench}/runc
ROOT="$WORK/state"
B="$WORK/bundle"
IDS=(ours streams podman raw r-ours r-streams r-base)
cleanup() {
    for id in "${IDS[@]}"; do "$RUNC" --root "$ROOT" delete --force "$id" >/dev/null 2>&1 || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
cleanup

# The bundle: busybox, the workload and the libraries it links.
mkdir -p "$B/rootfs/bin" "$B/rootfs/proc" "$B/rootfs/dev" "$B/rootfs/sys" "$B/rootfs/tmp"
cp "$(command -v busybox)" "$B/rootfs/bin/busybox"
ln -s busybox "$B/rootfs/bin/sh"
cp "$WORKLOAD" "$B/rootfs/bin/cedana-workload"
for lib in $(ldd "$WORKLOAD" | grep -o '/[^ ]*'); do
    mkdir -p "$B/rootfs$(dirname "$lib")"
    cp -L "$lib" "$B/rootfs$lib"
done
"$RUNC" spec --bundle "$B"

# Writes the bundle's config for a container holding $1 MiB.
configure() {
    python3 - "$B/config.json" "$1" <<'PY'
import json, sys
path, mib = sys.argv[1], sys.argv[2]
s = json.load(open(path))
s["process"]["terminal"] = False
s["process"]["args"] = ["sh", "-c", f"exec /bin/cedana-workload memory {mib} > /tmp/ready.log"]
s["process"].pop("rlimits", None)
s["root"]["readonly"] = False
json.dump(s, open(path, "w"), indent=1)
PY
}

. bench/lib/common.sh

# Runs container $1 and waits until its memory is touched.
start() {
    rm -f "$B/rootfs/tmp/ready.log"
    "$RUNC" --root "$ROOT" run -d --bundle "$B" "$1" </dev/null >/dev/null 2>&1
    for _ in $(seq 600); do grep -q ready "$B/rootfs/tmp/ready.log" 2>/dev/null && return 0; sleep 0.1; done
    echo "container $1 did not become ready" >&2; exit 1
}
gone() { "$RUNC" --root "$ROOT" delete --force "$1" >/dev/null 2>&1 || true; }

# Ours: dumps container NAME (run fresh) with FLAGS, restores it as r-NAME, records both
# rows as VARIANT (the checkpoint's size: the archive, or the shard dir).
ours_dump_restore() { # VARIANT NAME FLAGS...
    local variant=$1 name=$2 t s path
    shift 2
    start "$name"
    t=$(now)
    /usr/bin/time -f '%M' -o "$d/$name.time" "$CEDANA" --json dump runc "$name" --root "$ROOT" \
        --dir "$d" --name "$name" --no-server "$@" >"$d/$name.json"
    s=$(elapsed "$t"); gone "$name"
    path=$(python3 -c "import json; print(json.load(open('$d/$name.json'))['path'])")
    record dump "$variant" "$mib" "$run" "$s" \
        "{\"archive_bytes\": $(du -sb "$path" | cut -f1), \"peak_rss_kib\": $(cat "$d/$name.time")}"
    t=$(now)
    /usr/bin/time -f '%M' -o "$d/$name-r.time" "$CEDANA" --json restore runc --path "$path" \
        --bundle "$B" --id "r-$name" --root "$ROOT" --detach --no-server >/dev/null
    s=$(elapsed "$t"); gone "r-$name"
    record restore "$variant" "$mib" "$run" "$s" "{\"peak_rss_kib\": $(cat "$d/$name-r.time")}"
}

for mib in $SIZES; do
    configure "$mib"
    for run in $(seq "$RUNS"); do
        d="$WORK/$mib-$run"; rm -rf "$d"; mkdir -p "$d"
        sync

        # --- ours: a zstd archive; then streamed: runc's CRIU streams into N shards ---
        ours_dump_restore ours ours --compression zstd
        ours_dump_restore "streams-$STREAMS" streams --streams "$STREAMS"

        # --- podman way: runc checkpoint to a directory, then tar | zstd -3 ---
        start podman
        t=$(now)
        "$RUNC" --root "$ROOT" checkpoint --image-path "$d/podman" podman
        tar -C "$d/podman" -cf - . | zstd -3 -q -o "$d/podman.tar.zst"
        s=$(elapsed "$t"); gone podman
        record dump podman "$mib" "$run" "$s" "{\"archive_bytes\": $(stat -c %s "$d/podman.tar.zst")}"

        # --- baseline restore: zstd -d | tar x, then runc restore ---
        mkdir -p "$d/podman-restore"
        t=$(now)
        zstd -d -q -c "$d/podman.tar.zst" | tar -C "$d/podman-restore" -xf -
        "$RUNC" --root "$ROOT" restore --detach --image-path "$d/podman-restore" --bundle "$B" r-base \
            </dev/null >/dev/null 2>&1
        s=$(elapsed "$t"); gone r-base
        record restore baseline "$mib" "$run" "$s" "{}"

        # --- raw runc checkpoint to a directory (no archive) ---
        start raw
        t=$(now)
        "$RUNC" --root "$ROOT" checkpoint --image-path "$d/raw" raw
        s=$(elapsed "$t"); gone raw
        record dump raw-criu "$mib" "$run" "$s" "{\"image_bytes\": $(du -sb "$d/raw" | cut -f1)}"
        rm -rf "$d"
    done
done

echo "containers (runc): read 'criu' below as 'runc checkpoint/restore'"
printf '%s\n' "${rows[@]}" | python3 bench/report.py "$RESULTS"
