#!/usr/bin/env bash
# Lazy restore against a full restore: time until the restored process answers its first
# request, at 1 GiB (and 4 GiB where memory allows; BENCH_LAZY_SIZES overrides), for a
# directory checkpoint and the default streamed one (see bench/lazy.py).
# Needs root, CRIU (make deps) and a release build (make bench does both).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release}
[ "$(id -u)" -eq 0 ] || { echo "the benchmark needs root (CRIU)" >&2; exit 1; }
for b in "$BIN/cedana" "$BIN/cedana-workload"; do [ -x "$b" ] || { echo "missing $b: cargo build --release" >&2; exit 1; }; done
RESULTS=${BENCH_RESULTS_DIR:-bench/results}/lazy-restore-$(date -u +%Y%m%dT%H%M%SZ).json
BIN="$BIN" python3 bench/lazy.py "$RESULTS"
