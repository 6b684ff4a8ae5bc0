#!/usr/bin/env bash
# kata benchmark: dump and restore of a 256 MiB workload in a QEMU guest (software
# emulation here), through cedana-guest-agent (`cedana dump|restore kata`, streamed over
# hybrid vsock) against CRIU run by hand in the guest plus copying the images out (criu
# dump into the guest's tmpfs, then tar over vsock to the host) and back in. One run of
# each; prints ours/baseline ratios and saves them as JSON under bench/results/kata-*.json
# (see bench/kata.py). Not part of CI. Skipped with BENCH_SKIP_KATA=1, or when QEMU, a
# guest kernel or vhost-device-vsock is missing; every step is bounded
# (BENCH_KATA_STEP_S, default 600 s). Needs root and a release build (make bench).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${BENCH_SKIP_KATA:-0}" = 1 ]; then
    echo "kata bench skipped (BENCH_SKIP_KATA=1)"
    exit 0
fi
BIN=${BIN:-target/release}
[ "$(id -u)" -eq 0 ] || { echo "the benchmark needs root (CRIU)" >&2; exit 1; }
for b in "$BIN/cedana" "$BIN/cedana-workload" "$BIN/cedana-guest-agent"; do
    [ -x "$b" ] || { echo "missing $b: cargo build --release" >&2; exit 1; }
done
VDV=$(command -v vhost-device-vsock || echo "$HOME/.cargo/bin/vhost-device-vsock")
for t in qemu-system-x86_64 cpio "$VDV"; do
    command -v "$t" >/dev/null || [ -x "$t" ] || {
        echo "kata bench skipped: $t missing (make deps)" >&2
        exit 0
    }
done
ls /boot/vmlinuz-* >/dev/null 2>&1 || { echo "kata bench skipped: no guest kernel (make deps)" >&2; exit 0; }
WORK=${BENCH_DIR:-/var/tmp/cedana-bench}/kata
rm -rf "$WORK" && mkdir -p "$WORK"
CEDANA_GUEST_EXTRA="$BIN/cedana-workload" \
    bash scripts/guest-image.sh "$WORK/image" "$BIN/cedana-guest-agent" >/dev/null
RESULTS=${BENCH_RESULTS_DIR:-bench/results}/kata-$(date -u +%Y%m%dT%H%M%SZ).json
BIN="$BIN" VDV="$VDV" WORK="$WORK" python3 bench/kata.py "$RESULTS"
