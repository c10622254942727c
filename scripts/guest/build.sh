#!/usr/bin/env bash
# Builds the squib guest kit into a cache directory and prints that directory as the last line:
#   vmlinux         guest kernel, ELF with the PVH entry note
#   bzImage         the same kernel, LZ4-compressed bzImage
#   rootfs.ext4     32 MiB ext4 busybox root filesystem (init = scripts/guest/init)
#   initramfs.cpio  the same tree as an uncompressed newc cpio
#
# Cache dir: ${SQUIB_GUEST_DIR:-$HOME/.cache/squib-guest}. The kernel is rebuilt only when
# kernel.sh, kernel.config-fragment, patches/ or the linux-source-6.1 package version change;
# the root filesystem only when rootfs.sh, init, vsock/squib-vsock.c or the busybox-static,
# gcc or libc6-dev version change.
# Missing Debian packages are installed with apt-get (needs root). Safe to run concurrently:
# a lock file serialises builds into the same directory.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${SQUIB_GUEST_DIR:-${HOME:-/root}/.cache/squib-guest}"
packages=(linux-source-6.1 busybox-static e2fsprogs flex bison bc libelf-dev libssl-dev
    cpio kmod xz-utils lz4 make gcc libc6-dev patch binutils coreutils)

log() { echo "build.sh: $*" >&2; }

install_missing_packages() {
    local missing=() p
    for p in "${packages[@]}"; do
        if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
            missing+=("$p")
        fi
    done
    if ((${#missing[@]})); then
        log "installing ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q
        apt-get install -y -q --no-install-recommends "${missing[@]}"
    fi
}

# Prints a sha256 over the given files plus the given package versions.
inputs_key() {
    local files=() pkgs=() arg
    for arg in "$@"; do
        if [[ "$arg" == pkg:* ]]; then pkgs+=("${arg#pkg:}"); else files+=("$arg"); fi
    done
    {
        sha256sum "${files[@]}" | sed "s|$here/||"
        dpkg-query -W -f='${Package} ${Version}\n' "${pkgs[@]}"
    } | sha256sum | cut -d' ' -f1
}

install_missing_packages
mkdir -p "$out"
exec 9>"$out/.lock"
flock 9

kernel_key="$(inputs_key "$here/kernel.sh" "$here/kernel.config-fragment" "$here"/patches/*.patch \
    pkg:linux-source-6.1)"
if [[ "$(cat "$out/kernel.key" 2>/dev/null)" != "$kernel_key" || ! -f "$out/vmlinux" ]]; then
    log "building the guest kernel (key $kernel_key)"
    "$here/kernel.sh" "$out" "$kernel_key"
else
    log "guest kernel is up to date"
fi

rootfs_key="$(inputs_key "$here/rootfs.sh" "$here/init" "$here/vsock/squib-vsock.c" \
    pkg:busybox-static pkg:gcc pkg:libc6-dev)"
if [[ "$(cat "$out/rootfs.key" 2>/dev/null)" != "$rootfs_key" || ! -f "$out/rootfs.ext4" ]]; then
    log "building the root filesystem and initramfs (key $rootfs_key)"
    "$here/rootfs.sh" "$out" "$rootfs_key"
else
    log "root filesystem and initramfs are up to date"
fi

for f in vmlinux bzImage rootfs.ext4 initramfs.cpio; do
    [[ -s "$out/$f" ]] || { log "missing $out/$f"; exit 1; }
done
echo "$out"
