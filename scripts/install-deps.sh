#!/usr/bin/env bash
# Installs every system dependency of cedana-rs on Debian 12 (bookworm), idempotently:
# CRIU 4.1.1 and its cuda_plugin built from Debian trixie's source tarball (bookworm's 3.17 fails on new
# kernels), runc, containerd 1.7 (from trixie, pinned low), iptables, busybox-static,
# protobuf compiler; for the kata guest tests QEMU, a guest kernel (linux-image-amd64),
# cpio and vhost-device-vsock (cargo); for the S3 tests a moto server in a venv
# (/opt/cedana/moto-venv, from PyPI). Safe to run again: finished steps are skipped.
set -euo pipefail

CRIU_VERSION=4.1.1
CRIU_SHA256=f80a66cb3726bb2116266d4759ce3bcbfab7abdb6b6d430bf20dd41911717afe
CRIU_BIN=/usr/local/sbin/criu
BUILD_DIR=${CEDANA_DEPS_BUILD_DIR:-/var/cache/cedana-deps}
PATCH_DIR="$(cd "$(dirname "$0")" && pwd)/criu-patches"
# Identifies the exact source we build (version + our patches), so a change rebuilds.
CRIU_BUILD_ID="$CRIU_VERSION-$(cat "$PATCH_DIR"/*.patch 2>/dev/null | sha256sum | cut -c1-16)"
CRIU_BUILD_ID_FILE=/usr/local/share/cedana/criu-build-id
# CRIU's own cuda_plugin, built from the same source. Kept out of CRIU's plugin dir
# (/usr/lib/criu), where CRIU would load it on every run: the GPU tests that exercise it
# point CRIU_LIBS_DIR here.
CRIU_CUDA_PLUGIN=/usr/local/lib/cedana/criu-cuda-plugin/cuda_plugin.so

log() { printf '\033[1;34m[deps]\033[0m %s\n' "$*"; }

if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps.sh must run as root (it installs packages)" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive

# trixie as a low-priority source: only what we name explicitly comes from it.
if [ ! -f /etc/apt/sources.list.d/cedana-trixie.sources ]; then
    log "adding Debian trixie (deb + deb-src) at low pin priority"
    cat >/etc/apt/sources.list.d/cedana-trixie.sources <<'SRC'
Types: deb deb-src
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    cat >/etc/apt/preferences.d/cedana-trixie <<'PIN'
Package: *
Pin: release n=trixie
Pin-Priority: 50
PIN
    rm -f /var/lib/apt/cedana-updated
fi

if [ ! -f /var/lib/apt/cedana-updated ] || [ -n "$(find /var/lib/apt/cedana-updated -mmin +720 2>/dev/null)" ]; then
    log "apt-get update"
    # Third-party sources on some hosts may be unreachable; Debian's own must work.
    apt-get update -q || log "apt-get update reported errors (continuing; Debian sources checked below)"
    touch /var/lib/apt/cedana-updated
fi

PKGS=(patch runc iptables busybox-static protobuf-compiler iproute2 procps psmisc
      build-essential pkgconf libbsd-dev libcap-dev libgnutls28-dev libnet1-dev
      libnftables-dev libnl-3-dev libprotobuf-c-dev libprotobuf-dev protobuf-c-compiler
      uuid-dev python3-protobuf xz-utils zstd lz4 gzip tar sqlite3 curl ca-certificates
      time python3 python3-venv util-linux
      # guest VMs for the kata tests and bench/kata.sh
      qemu-system-x86 linux-image-amd64 cpio
      # the completion tests run the scripts in the shells users have
      zsh fish)
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    log "installing: ${missing[*]}"
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# containerd 1.7 from trixie (bookworm has 1.6, which is fine too, but 1.7 is our target).
if ! command -v containerd >/dev/null || ! containerd --version | grep -q ' v\?1\.7'; then
    log "installing containerd 1.7 from trixie"
    apt-get install -y -q --no-install-recommends containerd/trixie || {
        log "containerd/trixie unavailable; falling back to bookworm's containerd"
        apt-get install -y -q --no-install-recommends containerd
    }
fi
# The package may start a system containerd; tests run their own in temp dirs.

if [ -x "$CRIU_BIN" ] && [ -f "$CRIU_CUDA_PLUGIN" ] \
    && [ "$(cat "$CRIU_BUILD_ID_FILE" 2>/dev/null)" = "$CRIU_BUILD_ID" ]; then
    log "CRIU $CRIU_BUILD_ID already at $CRIU_BIN"
else
    log "building CRIU $CRIU_VERSION from Debian trixie's source tarball"
    mkdir -p "$BUILD_DIR"
    cd "$BUILD_DIR"
    tarball="criu_${CRIU_VERSION}.orig.tar.xz"
    if [ ! -f "$tarball" ]; then
        # The .dsc download 404s so apt exits 100 even when the tarball arrived:
        # judge by the file, not the exit code.
        apt-get source --download-only -q "criu/trixie" || true
    fi
    [ -f "$tarball" ] || { echo "could not download $tarball (is a trixie deb-src reachable?)" >&2; exit 1; }
    echo "$CRIU_SHA256  $tarball" | sha256sum -c - >/dev/null || { echo "$tarball: checksum mismatch" >&2; exit 1; }
    rm -rf "criu-$CRIU_VERSION"
    tar xf "$tarball"
    # Fixes for kernels newer than this CRIU release (see each patch's header).
    for p in "$PATCH_DIR"/*.patch; do
        [ -e "$p" ] || continue
        log "applying $(basename "$p")"
        patch -d "criu-$CRIU_VERSION" -p1 --forward --quiet <"$p"
    done
    make -C "criu-$CRIU_VERSION" -j"$(nproc)" criu cuda_plugin >"$BUILD_DIR/criu-build.log" 2>&1 \
        || { tail -40 "$BUILD_DIR/criu-build.log" >&2; exit 1; }
    install -m 0755 "criu-$CRIU_VERSION/criu/criu" "$CRIU_BIN"
    install -D -m 0755 "criu-$CRIU_VERSION/plugins/cuda/cuda_plugin.so" "$CRIU_CUDA_PLUGIN"
    install -d "$(dirname "$CRIU_BUILD_ID_FILE")"
    echo "$CRIU_BUILD_ID" >"$CRIU_BUILD_ID_FILE"
fi
# vhost-device-vsock gives QEMU guests a vsock device without the host's vhost-vsock
# module, exposed as a hybrid-vsock unix socket (the kata tests' transport).
VDV_VERSION=0.3.0
if command -v vhost-device-vsock >/dev/null \
    || [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/vhost-device-vsock" ]; then
    log "vhost-device-vsock already installed"
elif CARGO=$(command -v cargo || echo "${CARGO_HOME:-$HOME/.cargo}/bin/cargo") && [ -x "$CARGO" ]; then
    log "building vhost-device-vsock $VDV_VERSION (about a minute)"
    "$CARGO" install vhost-device-vsock --version "$VDV_VERSION" --locked --root /usr/local \
        || "$CARGO" install vhost-device-vsock --version "$VDV_VERSION" --root /usr/local
else
    log "warning: no cargo: vhost-device-vsock not installed (the kata guest tests need it)"
fi

# The S3 tests' server: moto from PyPI in its own venv (Debian's Python refuses
# system-wide pip installs). Checked by running it, so a broken venv is rebuilt.
MOTO_VENV=/opt/cedana/moto-venv
MOTO_SPEC='moto[server]>=5,<6'
if "$MOTO_VENV/bin/python" -c 'import moto.server' >/dev/null 2>&1; then
    log "moto server already installed in $MOTO_VENV"
else
    log "installing $MOTO_SPEC into $MOTO_VENV"
    rm -rf "$MOTO_VENV"
    /usr/bin/python3 -m venv "$MOTO_VENV"
    "$MOTO_VENV/bin/pip" install -q "$MOTO_SPEC"
    "$MOTO_VENV/bin/python" -c 'import moto.server'
fi

# Make sure nothing older shadows ours.
if [ -x /usr/sbin/criu ] && ! /usr/sbin/criu --version | grep -q "$CRIU_VERSION"; then
    log "removing Debian's older criu package"
    apt-get remove -y -q criu || true
fi

"$CRIU_BIN" --version | head -1
"$CRIU_BIN" check >/dev/null 2>&1 && log "criu check: looks good" || log "warning: 'criu check' failed; run 'criu check' to see why"
log "done"
