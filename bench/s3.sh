#!/usr/bin/env bash
# Object storage benchmark: checkpoints through an S3-compatible server (moto on
# 127.0.0.1, from the venv scripts/install-deps.sh makes), ours against the standard way,
# measured in the same run. For each size (BENCH_SIZES, MiB) and run (BENCH_RUNS):
#   dump:    ours (`cedana dump process --dir s3://... --no-server`, zstd archive)
#            ours streamed (`--streams N` into s3://)
#            baseline: `cedana dump` to a local dir, then uploading the archive with boto3
#   restore: ours (`cedana restore process --path s3://... --no-server`)
#            baseline: downloading the archive with boto3, then `cedana restore` from it
# Prints medians and ours/baseline ratios; saves rows and medians as JSON under
# bench/results/s3-*.json. moto is the server for both sides, so the ratios compare the
# clients, not a cloud's network. Needs root, CRIU and moto (make deps).
set -euo pipefail
cd "$(dirname "$0")/.."

SIZES=${BENCH_SIZES:-"256 1024"}
RUNS=${BENCH_RUNS:-3}
STREAMS=${BENCH_STREAMS:-$(nproc)}
BIN=${BIN:-target/release}
WORK=${BENCH_DIR:-/var/tmp/cedana-bench}/s3
MOTO_VENV=${MOTO_VENV:-/opt/cedana/moto-venv}
CEDANA="$BIN/cedana"
WORKLOAD="$BIN/cedana-workload"
RESULTS=${BENCH_RESULTS_DIR:-bench/results}/s3-$(date -u +%Y%m%dT%H%M%SZ).json
BUCKET=bench
[ "$(id -u)" -eq 0 ] || { echo "the benchmark needs root (CRIU)" >&2; exit 1; }
for b in "$CEDANA" "$WORKLOAD" "$MOTO_VENV/bin/moto_server"; do
    [ -x "$b" ] || { echo "missing $b: cargo build --release; make deps" >&2; exit 1; }
done
PY="$MOTO_VENV/bin/python"

PORT=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export AWS_ENDPOINT_URL="http://127.0.0.1:$PORT" AWS_REGION=us-east-1
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret
"$MOTO_VENV/bin/moto_server" -H 127.0.0.1 -p "$PORT" >/dev/null 2>&1 &
MOTO_PID=$!
WPID=
cleanup() {
    [ -n "$WPID" ] && kill -9 "$WPID" 2>/dev/null || true
    kill "$MOTO_PID" 2>/dev/null || true
    wait "$MOTO_PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
for _ in $(seq 100); do
    "$PY" -c "import socket; socket.create_connection(('127.0.0.1', $PORT))" 2>/dev/null && break
    sleep 0.1
done
# boto3 (moto brings it): the standard client of the baseline.
s3py() { "$PY" -c "import sys, boto3; s3 = boto3.client('s3'); $1" "${@:2}"; }
s3py "s3.create_bucket(Bucket='$BUCKET')"

. bench/lib/common.sh
field() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$1" "$2"; }

# Restores from PATH (a URL or a local archive), records it, kills the restored tree.
restore_and_record() { # VARIANT PATH START
    local variant=$1 path=$2 t=$3 rpid
    "$CEDANA" --json restore process --path "$path" --no-server >"$d/restore.json"
    record restore "$variant" "$mib" "$run" "$(elapsed "$t")" "{}"
    rpid=$(field "$d/restore.json" pid); kill -9 "$rpid" 2>/dev/null || true; wait_gone "$rpid"
}

for mib in $SIZES; do
    for run in $(seq "$RUNS"); do
        d="$WORK/$mib-$run"; rm -rf "$d"; mkdir -p "$d"
        url="s3://$BUCKET/$mib-$run"
        for v in ours "streams-$STREAMS"; do
            flags=(--compression zstd)
            [ "$v" = ours ] || flags=(--streams "$STREAMS")
            start_workload "$mib" "$d/$v.log"
            t=$(now)
            "$CEDANA" --json dump process "$WPID" --no-server --dir "$url" --name "$v" \
                "${flags[@]}" >"$d/dump.json"
            record dump "$v" "$mib" "$run" "$(elapsed "$t")" \
                "{\"stored_bytes\": $(field "$d/dump.json" size_bytes)}"
            wait_gone "$WPID"
            restore_and_record "$v" "$(field "$d/dump.json" path)" "$(now)"
        done

        # --- baseline: dump to a local dir, then upload the archive with boto3 ---
        start_workload "$mib" "$d/base.log"
        t=$(now)
        "$CEDANA" --json dump process "$WPID" --no-server --dir "$d" --name base \
            --compression zstd >"$d/dump.json"
        archive=$(field "$d/dump.json" path)
        s3py "s3.upload_file(sys.argv[1], '$BUCKET', sys.argv[2])" "$archive" "$mib-$run/base.tar.zst"
        record dump baseline "$mib" "$run" "$(elapsed "$t")" "{\"stored_bytes\": $(stat -c %s "$archive")}"
        wait_gone "$WPID"
        rm -f "$archive"
        t=$(now)
        s3py "s3.download_file('$BUCKET', sys.argv[2], sys.argv[1])" "$d/fetched.tar.zst" "$mib-$run/base.tar.zst"
        restore_and_record baseline "$d/fetched.tar.zst" "$t"
        WPID=
        rm -rf "$d"
    done
done

printf '%s\n' "${rows[@]}" | python3 bench/s3_report.py "$RESULTS"
