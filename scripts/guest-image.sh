#!/usr/bin/env bash
# Builds a small guest initramfs for kata-style checkpoint/restore: busybox, CRIU and its
# libraries, cedana-guest-agent (stripped) and its libraries, the kernel modules the
# agent and CRIU need (virtio_pci, vsock over virtio, nf_tables, socket diagnostics),
# and scripts/guest/init, which mounts the pseudo filesystems, brings lo up, loads the
# modules and starts the agent on vsock.
#
# Usage: guest-image.sh OUT_DIR [AGENT_BINARY]
#   writes OUT_DIR/initrd.gz and OUT_DIR/vmlinuz (a link to the host's Debian kernel).
# Needs (make deps): linux-image-amd64, busybox-static, cpio, CRIU at /usr/local/sbin/criu.
set -euo pipefail
OUT=${1:?usage: guest-image.sh OUT_DIR [AGENT_BINARY]}
HERE=$(cd "$(dirname "$0")" && pwd)
AGENT=${2:-$HERE/../target/debug/cedana-guest-agent}
CRIU=${CEDANA_GUEST_CRIU:-/usr/local/sbin/criu}
BUSYBOX=$(command -v busybox || echo /bin/busybox)
KVER=${CEDANA_GUEST_KVER:-$(ls /lib/modules | sort -V | tail -1)}
KERNEL=/boot/vmlinuz-$KVER

die() { echo "guest-image.sh: $*" >&2; exit 1; }
[ -r "$KERNEL" ] || die "no guest kernel $KERNEL: apt-get install linux-image-amd64"
[ -x "$CRIU" ] || die "no CRIU at $CRIU: make deps"
[ -x "$AGENT" ] || die "no agent binary $AGENT: cargo build -p cedana-runtime"
"$BUSYBOX" --help >/dev/null 2>&1 || die "no busybox: apt-get install busybox-static"
command -v cpio >/dev/null || die "no cpio: apt-get install cpio"

mkdir -p "$OUT"
R=$(mktemp -d "$OUT/root.XXXXXX")
trap 'rm -rf "$R"' EXIT
mkdir -p "$R"/{bin,sbin,proc,sys,dev,tmp,run,mods,usr/bin,usr/sbin,lib64,etc}

cp "$BUSYBOX" "$R/bin/busybox"
for a in $("$BUSYBOX" --list); do
    [ "$a" = busybox ] || ln -sf busybox "$R/bin/$a"
done

# Binaries with their shared libraries (the agent is built against the host's glibc).
copy_with_libs() {
    local src=$1 dst=$2
    cp "$src" "$R$dst"
    for l in $(ldd "$src" | awk '/=>/ {print $3}'); do
        mkdir -p "$R$(dirname "$l")"
        cp -L "$l" "$R$l"
    done
}
copy_with_libs "$CRIU" /usr/sbin/criu
# A debug build carries ~90 MiB of debug info: strip it, the guest's RAM holds the image.
objcopy --strip-debug "$AGENT" "$R/usr/bin/cedana-guest-agent.full" 2>/dev/null \
    || cp "$AGENT" "$R/usr/bin/cedana-guest-agent.full"
copy_with_libs "$R/usr/bin/cedana-guest-agent.full" /usr/bin/cedana-guest-agent
rm "$R/usr/bin/cedana-guest-agent.full"
# Extra programs for tests and demos (CEDANA_GUEST_EXTRA="PATH ..."), into /usr/bin.
for x in ${CEDANA_GUEST_EXTRA:-}; do
    objcopy --strip-debug "$x" "$R/usr/bin/$(basename "$x").full" 2>/dev/null || cp "$x" "$R/usr/bin/$(basename "$x").full"
    copy_with_libs "$R/usr/bin/$(basename "$x").full" "/usr/bin/$(basename "$x")"
    rm "$R/usr/bin/$(basename "$x").full"
done
cp -L /lib64/ld-linux-x86-64.so.2 "$R/lib64/"

# Modules in dependency order (each one's dependencies first), each once.
MODS="virtio_pci vmw_vsock_virtio_transport nf_tables unix_diag inet_diag tcp_diag netlink_diag af_packet_diag"
: > "$R/mods/order"
for m in $MODS; do
    { modprobe --show-depends -S "$KVER" "$m" 2>/dev/null || echo "guest-image.sh: no module $m (built in?)" >&2; } | awk '$1 == "insmod" {print $2}'
done | awk '!seen[$0]++' | while read -r f; do
    b=$(basename "$f")
    case "$b" in
        *.ko.xz) xz -dc "$f" > "$R/mods/${b%.xz}"; b=${b%.xz} ;;
        *.ko.zst) zstd -qdc "$f" > "$R/mods/${b%.zst}"; b=${b%.zst} ;;
        *) cp "$f" "$R/mods/" ;;
    esac
    echo "$b" >> "$R/mods/order"
done

cp "$HERE/guest/init" "$R/init"
chmod +x "$R/init"
(cd "$R" && find . | cpio -o -H newc 2>/dev/null | gzip -1) > "$OUT/initrd.gz.partial"
mv "$OUT/initrd.gz.partial" "$OUT/initrd.gz"
ln -sf "$KERNEL" "$OUT/vmlinuz"
echo "$OUT/initrd.gz ($(du -h "$OUT/initrd.gz" | cut -f1)), kernel $KERNEL"
