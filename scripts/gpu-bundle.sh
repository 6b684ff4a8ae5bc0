#!/usr/bin/env bash
# Assembles what scripts/gpu-check.sh needs on a GPU machine that has no CRIU and no
# package registry: our release binaries, this host's CRIU with the libraries it links
# (not libc's) and its cuda_plugin, the check script and its PyTorch workload. Usage:
#   scripts/gpu-bundle.sh BIN_DIR OUT_DIR     (`make gpu-bundle` passes the release dir)
# Fails if the bundle is over 64 MiB (what a device run can carry).
set -euo pipefail
bin_dir=${1:?usage: gpu-bundle.sh BIN_DIR OUT_DIR}
out=${2:?usage: gpu-bundle.sh BIN_DIR OUT_DIR}
here=$(cd "$(dirname "$0")" && pwd)
criu=$(command -v criu || true)
[ -n "$criu" ] || { echo "gpu-bundle: criu not found: run \`make deps\` first" >&2; exit 1; }
rm -rf "$out"
mkdir -p "$out/bin" "$out/lib"
for b in cedana cedana-gpu-helper; do
    [ -x "$bin_dir/$b" ] || { echo "gpu-bundle: $bin_dir/$b not built" >&2; exit 1; }
    cp "$bin_dir/$b" "$out/bin/"
done
strip "$out/bin/"* 2>/dev/null || true
cp "$criu" "$out/bin/criu"
# CRIU's libraries, except the C library and loader the GPU host has itself.
ldd "$criu" | awk '/=> \//{print $3}' | while read -r lib; do
    case "$(basename "$lib")" in
        libc.so*|libm.so*|libpthread.so*|libdl.so*|librt.so*|ld-linux*) ;;
        *) cp -L "$lib" "$out/lib/" ;;
    esac
done
# CRIU's own cuda_plugin (scripts/install-deps.sh builds it), for gpu-check.sh's step 3.
plugin=/usr/local/lib/cedana/criu-cuda-plugin/cuda_plugin.so
if [ -f "$plugin" ]; then
    mkdir -p "$out/criu-plugins"
    cp "$plugin" "$out/criu-plugins/"
else
    echo "gpu-bundle: no $plugin (run \`make deps\`): the bundle cannot check CRIU's cuda_plugin" >&2
fi
cp "$here/gpu-check.sh" "$out/"
cp "$here/gpu/workload.py" "$out/"
size=$(du -sm "$out" | cut -f1)
echo "gpu-bundle: $out, ${size} MiB"
if [ "$size" -gt 64 ]; then
    echo "gpu-bundle: over 64 MiB: build it from release binaries (\`make gpu-bundle\`)" >&2
    exit 1
fi
