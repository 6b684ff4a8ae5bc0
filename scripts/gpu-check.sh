#!/usr/bin/env bash
# GPU check on a machine with an NVIDIA GPU (driver r570+), PyTorch with CUDA, and root:
# run from a bundle made by `make gpu-bundle` (bin/cedana, bin/cedana-gpu-helper,
# bin/criu + lib/, criu-plugins/cuda_plugin.so, workload.py), e.g.
# `cd dist/gpu-bundle && bash gpu-check.sh`.
#   1. the driver API in place, no CRIU: lock, checkpoint, restore, unlock a PyTorch
#      process holding a known tensor with cedana-gpu-helper; its counter goes on and
#      the tensor's checksum is unchanged;
#   2. cedana dump + restore of the same kind of process with CRIU, cedana moving the
#      GPU state: the same checks;
#   3. the same with CRIU's cuda_plugin moving it (gpu.backend=criu-plugin), where
#      NVIDIA's cuda-checkpoint is on PATH (the plugin runs it).
# Prints PASS/FAIL per step and MISSING for what it cannot run without; exit 0 only if
# every step passed.
set -uo pipefail
B=$(cd "$(dirname "$0")" && pwd)
W=$(mktemp -d /tmp/cedana-gpu-check.XXXXXX)
failed=0
pass() { echo "PASS: $*"; }
fail() { echo "FAIL: $*"; failed=1; }
missing() { echo "MISSING: $*"; exit 2; }

[ "$(id -u)" = 0 ] || missing "root (CRIU and the checkpoint API need it)"
command -v nvidia-smi >/dev/null || missing "nvidia-smi: no NVIDIA driver on this machine"
driver=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -1)
[ -n "$driver" ] || missing "a GPU: nvidia-smi lists none"
[ "${driver%%.*}" -ge 570 ] || missing "driver r570+ for the checkpoint API (this is $driver)"
echo "driver $driver: $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)"
python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null \
    || missing "python3 with torch and CUDA (import torch; torch.cuda.is_available())"
for f in bin/cedana bin/cedana-gpu-helper bin/criu workload.py; do
    [ -e "$B/$f" ] || missing "$B/$f: run from a bundle made by \`make gpu-bundle\`"
done
LD_LIBRARY_PATH="$B/lib" "$B/bin/criu" --version >/dev/null 2>&1 \
    || missing "a CRIU that runs here: LD_LIBRARY_PATH=$B/lib $B/bin/criu --version fails"

# Starts the workload in its own session; sets PID and LOG.
start() {
    LOG=$W/$1.log
    setsid python3 "$B/workload.py" >"$LOG" 2>&1 </dev/null &
    PID=$!
    for _ in $(seq 1 300); do grep -q '^1 ' "$LOG" 2>/dev/null && return 0; sleep 0.2; done
    fail "$1: the workload did not start: $(tail -3 "$LOG")"; return 1
}
last() { grep -E '^[0-9]+ ' "$LOG" | tail -1 | cut -d' ' -f1; }
# After `at`: the counter passes it by 3 and every checksum equals the first one.
goes_on() {
    local at=$1 want got
    want=$(sed -n 's/^checksum //p' "$LOG")
    for _ in $(seq 1 150); do [ "$(last)" -gt $((at + 3)) ] 2>/dev/null && break; sleep 0.2; done
    [ "$(last)" -gt $((at + 3)) ] || { echo "counter stuck at $(last) (was $at)"; return 1; }
    got=$(grep -E '^[0-9]+ ' "$LOG" | cut -d' ' -f2 | sort -u)
    [ "$got" = "$want" ] || { echo "checksum $want became: $got"; return 1; }
}
helper() { "$B/bin/cedana-gpu-helper" "$@"; }

# 1. The driver API in place.
if start inplace; then
    ok=1
    for a in lock checkpoint; do
        out=$(helper --action "$a" --pid "$PID" --timeout 10000) || { fail "helper $a: $out"; ok=0; }
    done
    state=$(helper --get-state --pid "$PID")
    [ "$state" = checkpointed ] || { fail "state after checkpoint: $state"; ok=0; }
    at=$(last); sleep 1
    [ "$(last)" = "$at" ] || { fail "the process ran while checkpointed"; ok=0; }
    for a in restore unlock; do
        out=$(helper --action "$a" --pid "$PID") || { fail "helper $a: $out"; ok=0; }
    done
    if why=$(goes_on "$at"); then [ $ok = 1 ] && pass "driver API in place (lock, checkpoint, restore, unlock)"
    else fail "driver API in place: $why"; fi
    kill -9 "$PID" 2>/dev/null
fi

# 2. and 3. cedana with CRIU.
cedana() {
    LD_LIBRARY_PATH="$B/lib" CRIU_LIBS_DIR="$plugins" "$B/bin/cedana" --config-dir "$W/etc" \
        --set "criu.binary_path=$B/bin/criu" --set "db_path=$W/cedana.db" \
        --set "gpu.backend=$backend" "$@"
}
# Dumps and restores a fresh workload with cedana; GPU state moved by $backend.
round() {
    local what=$1 out at path
    start "$what" || return
    if out=$(cedana --json dump process "$PID" --no-server --dir "$W/ck-$what" --compression none 2>&1); then
        at=$(last)
        path=$(echo "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["path"])')
        echo "recorded: $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["gpu"])' "$path/metadata.json")"
        if out=$(cedana --json restore process --path "$path" --no-server 2>&1); then
            if why=$(goes_on "$at"); then pass "cedana dump + restore with CRIU, $backend (counter and checksum)"
            else fail "$what: after restore: $why"; fi
            kill -9 "$PID" 2>/dev/null
        else fail "$what: cedana restore: $out"; fi
    else
        fail "$what: cedana dump: $out"
        kill -9 "$PID" 2>/dev/null
    fi
}
plugins=$W/no-plugins backend=auto
mkdir -p "$plugins"
round criu
plugins=$B/criu-plugins backend=criu-plugin
if ! command -v cuda-checkpoint >/dev/null; then
    echo "MISSING: cuda-checkpoint on PATH, which CRIU's cuda_plugin runs (step 3 skipped)"
elif [ ! -f "$plugins/cuda_plugin.so" ]; then
    echo "MISSING: $plugins/cuda_plugin.so (step 3 skipped): run \`make deps\` before \`make gpu-bundle\`"
else
    round criu-plugin
fi
echo "logs in $W"
exit $failed
