#!/usr/bin/env bash
# Checkpoint/restore benchmark: ours against the stock tools, measured in the same run.
#
# For each size (BENCH_SIZES, MiB; default 256 1024, and 4096 where memory allows) a workload holding that much memory (1/4 random,
# 3/8 repetitive text, 3/8 zero-filled touched pages) is checkpointed and restored
# BENCH_RUNS times each way:
#   dump:    ours by default (`cedana dump process --no-server`: streamed, one shard per core)
#            (ours in an order that turns with each run; one untimed round first)
#            ours as a zstd archive (`--compression zstd`)
#            ours streamed (`--streams N`: CRIU --stream into N zstd shards)
#            podman way (`criu dump` to a directory, then `tar | zstd -3`)
#            raw `criu dump` to a directory (no archive: the floor)
#   restore: ours (`cedana restore process --no-server` from the archive / the shards)
#            baseline (`zstd -d | tar x`, then `criu restore`)
#            raw `criu restore` from the raw dump's directory, in the page cache (the floor)
#   before:  with BENCH_COMPARE_BIN (another build's release dir), ours again with its
#            cedana, for before/after ratios in one run
# Prints medians and ratios, and saves everything as JSON under bench/results/.
# Needs root, CRIU (make deps) and a release build (make bench does both).
set -euo pipefail
cd "$(dirname "$0")/.."

# 4 GiB too where the workload, its raw images and the Podman way's unpacked copy fit
# in memory beside each other (else the page cache, not the tools, is measured).
avail_mib=$(awk '/^MemAvailable:/ {print int($2 / 1024)}' /proc/meminfo)
SIZES=${BENCH_SIZES:-"256 1024$([ "$avail_mib" -gt $((3 * 4096 + 2048)) ] && echo " 4096")"}
RUNS=${BENCH_RUNS:-3}
STREAMS=${BENCH_STREAMS:-$(nproc)}
BIN=${BIN:-target/release}
WORK=${BENCH_DIR:-/var/tmp/cedana-bench}
COMPARE_BIN=${BENCH_COMPARE_BIN:-}
CEDANA="$BIN/cedana"
WORKLOAD="$BIN/cedana-workload"
RESULTS=${BENCH_RESULTS_DIR:-bench/results}/checkpoint-$(date -u +%Y%m%dT%H%M%SZ).json
[ "$(id -u)" -eq 0 ] || { echo "the benchmark needs root (CRIU)" >&2; exit 1; }
for b in "$CEDANA" "$WORKLOAD" ${COMPARE_BIN:+"$COMPARE_BIN/cedana"}; do [ -x "$b" ] || { echo "missing $b: cargo build --release" >&2; exit 1; }; done

# A run holds the raw images, the Podman way's archive and unpacked copy and our three
# checkpoints on WORK's disk at once (about 4x its size): a full disk midway would fail
# a step with nothing but CRIU's or tar's error.
mkdir -p "$WORK"
max_mib=$(printf '%s\n' $SIZES | sort -n | tail -1)
need_mib=$((4 * max_mib + 1024))
free_mib=$(df -Pm "$WORK" | awk 'NR == 2 {print $4}')
[ "$free_mib" -ge "$need_mib" ] || {
    echo "the benchmark needs about $need_mib MiB free in $WORK (BENCH_DIR) for $max_mib MiB; it has $free_mib MiB: free some, or set BENCH_DIR or BENCH_SIZES" >&2
    exit 1
}

. bench/lib/common.sh

# Ours: dumps a fresh workload as checkpoint NAME with FLAGS, then restores it; records
# both rows as VARIANT (the checkpoint's size: the archive, or the shard dir less its log).
ours_dump_restore() { # VARIANT NAME FLAGS...
    local variant=$1 name=$2 t s rss_kb out_blocks path size rpid
    shift 2
    start_workload "$mib" "$d/$name.log"
    t=$(now)
    /usr/bin/time -f '%M %O' -o "$d/$name.time" \
        "$CEDANA" --json --set "checkpoint.dir=$d" dump process "$WPID" --no-server \
        --name "$name" "$@" >"$d/$name.json"
    s=$(elapsed "$t"); wait_gone "$WPID"
    read -r rss_kb out_blocks <"$d/$name.time"
    path=$(python3 -c "import json; print(json.load(open('$d/$name.json'))['path'])")
    size=$(du -sb --exclude=dump.log "$path" | cut -f1)
    record dump "$variant" "$mib" "$run" "$s" "{\"archive_bytes\": $size, \"peak_rss_kib\": $rss_kb, \"written_bytes\": $((out_blocks * 512))}"
    t=$(now)
    /usr/bin/time -f '%M %O' -o "$d/$name-restore.time" \
        "$CEDANA" --json restore process --path "$path" --no-server >"$d/$name-restore.json"
    s=$(elapsed "$t")
    read -r rss_kb out_blocks <"$d/$name-restore.time"
    rpid=$(python3 -c "import json; print(json.load(open('$d/$name-restore.json'))['pid'])")
    record restore "$variant" "$mib" "$run" "$s" "{\"peak_rss_kib\": $rss_kb, \"written_bytes\": $((out_blocks * 512))}"
    kill -9 "$rpid" 2>/dev/null || true; wait_gone "$rpid"
}

# The same three dumps and restores with another build's cedana (BENCH_COMPARE_BIN: its
# release dir, e.g. an older revision's), in the same run: before/after ratios.
compare_dump_restore() {
    local ours=$CEDANA
    CEDANA="$COMPARE_BIN/cedana"
    ours_dump_restore before-default before-default
    ours_dump_restore before-ours before-ours --compression zstd
    ours_dump_restore "before-streams-$STREAMS" before-streams --streams "$STREAMS"
    CEDANA=$ours
}

# One untimed round first (its rows dropped): cedana's, the relay's and CRIU's binaries
# come into the page cache, so no measured variant pays for loading them.
mib=$(printf '%s\n' $SIZES | sort -n | head -1) run=0 d="$WORK/warmup"
rm -rf "$d"; mkdir -p "$d"
ours_dump_restore default warmup
rm -rf "$d"; rows=()

for mib in $SIZES; do
    for run in $(seq "$RUNS"); do
        d="$WORK/$mib-$run"; rm -rf "$d"; mkdir -p "$d"
        # Warm the page cache and the filesystem so the first variant is not penalised.
        sync

        # --- ours: the default, a zstd archive, and streamed (N shards compressed in
        # parallel while CRIU dumps), in an order that turns with each run: the first
        # after the previous run's cleanup measured slower, whichever it was ---
        for k in 0 1 2; do
            case $(((k + run - 1) % 3)) in
            0) ours_dump_restore default default ;;
            1) ours_dump_restore ours ours --compression zstd ;;
            2) ours_dump_restore "streams-$STREAMS" streams --streams "$STREAMS" ;;
            esac
        done
        [ -z "$COMPARE_BIN" ] || compare_dump_restore

        # --- podman way: criu dump to a directory, then tar | zstd -3 ---
        start_workload "$mib" "$d/podman.log"
        mkdir -p "$d/podman"
        t=$(now)
        criu dump -t "$WPID" -D "$d/podman" -o dump.log >/dev/null 2>&1
        tar -C "$d/podman" -cf - . | zstd -3 -q -o "$d/podman.tar.zst"
        s=$(elapsed "$t"); wait_gone "$WPID"
        size=$(stat -c %s "$d/podman.tar.zst")
        record dump podman "$mib" "$run" "$s" "{\"archive_bytes\": $size}"

        # --- baseline restore: zstd -d | tar x, then criu restore ---
        wait_gone "$WPID"
        mkdir -p "$d/podman-restore"
        t=$(now)
        zstd -d -q -c "$d/podman.tar.zst" | tar -C "$d/podman-restore" -xf -
        criu restore -d -D "$d/podman-restore" -o restore.log --pidfile "$d/podman.pid" >/dev/null 2>&1
        s=$(elapsed "$t")
        record restore baseline "$mib" "$run" "$s" "{}"
        rpid=$(cat "$d/podman.pid"); kill -9 "$rpid" 2>/dev/null || true; wait_gone "$rpid"

        # --- raw criu dump to a directory (no archive) ---
        start_workload "$mib" "$d/raw.log"
        mkdir -p "$d/raw"
        t=$(now)
        criu dump -t "$WPID" -D "$d/raw" -o dump.log >/dev/null 2>&1
        s=$(elapsed "$t"); wait_gone "$WPID"
        size=$(du -sb "$d/raw" | cut -f1)
        record dump raw-criu "$mib" "$run" "$s" "{\"image_bytes\": $size}"
        wait_gone "$WPID"
        # --- raw criu restore from that directory, its images in the page cache (the floor)
        cat "$d/raw"/* >/dev/null
        t=$(now)
        criu restore -d -D "$d/raw" -o restore.log --pidfile "$d/raw.pid" >/dev/null 2>&1
        s=$(elapsed "$t")
        record restore raw-criu "$mib" "$run" "$s" "{}"
        rpid=$(cat "$d/raw.pid"); kill -9 "$rpid" 2>/dev/null || true; wait_gone "$rpid"
        rm -rf "$d"
    done
done

printf '%s\n' "${rows[@]}" | python3 bench/report.py "$RESULTS"
