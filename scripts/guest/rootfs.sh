#!/usr/bin/env bash
# Builds the squib guest root tree (busybox-static + scripts/guest/init + the static
# /bin/squib-vsock built from vsock/squib-vsock.c with the host's gcc) as a 32 MiB ext4
# image and as an uncompressed newc cpio initramfs. Takes about a second.
#
# Usage: rootfs.sh OUT_DIR KEY
#   Installs OUT_DIR/rootfs.ext4 and OUT_DIR/initramfs.cpio, then writes KEY to
#   OUT_DIR/rootfs.key. Needs root for the /dev/console and /dev/null nodes, and gcc with a
#   static libc (packages gcc and libc6-dev, which build.sh installs).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:?usage: rootfs.sh OUT_DIR KEY}"
key="${2:?usage: rootfs.sh OUT_DIR KEY}"
busybox=/bin/busybox

work="$(mktemp -d "$out/rootfs-build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
tree="$work/tree"

mkdir -p "$tree"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,tmp,root,etc,mnt}
chmod 1777 "$tree/tmp"
cp "$busybox" "$tree/bin/busybox"
# --install -s DIR puts every applet link in DIR, pointing at the running binary's path:
# repoint them at the guest's /bin/busybox.
"$tree/bin/busybox" --install -s "$tree/bin"
find "$tree/bin" -type l -exec ln -sfn /bin/busybox {} \;
mknod -m 600 "$tree/dev/console" c 5 1
mknod -m 666 "$tree/dev/null" c 1 3
install -m 755 "$here/init" "$tree/sbin/init"
install -m 755 "$here/init" "$tree/init"
gcc -static -O2 -Wall -Wextra -Werror -o "$work/squib-vsock" "$here/vsock/squib-vsock.c"
install -m 755 "$work/squib-vsock" "$tree/bin/squib-vsock"
echo "root:x:0:0:root:/root:/bin/sh" >"$tree/etc/passwd"
echo "root:x:0:" >"$tree/etc/group"

(cd "$tree" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0) \
    >"$work/initramfs.cpio"
mke2fs -q -F -t ext4 -L squib-root -d "$tree" "$work/rootfs.ext4" 32M >/dev/null

mv -f "$work/initramfs.cpio" "$out/initramfs.cpio"
mv -f "$work/rootfs.ext4" "$out/rootfs.ext4"
echo "$key" >"$out/rootfs.key"
echo "rootfs.sh: installed $out/rootfs.ext4 and $out/initramfs.cpio" >&2
