#!/usr/bin/env bash
# README's first command: sets everything up and boots a demo microVM to a shell on this
# terminal. Installs missing Debian packages, builds the guest kit (cached; ~3 min the first
# time) and `cargo build --release`, then runs squib with a --config-file (the API socket
# stays up: the script prints a curl command for it). Exit the guest shell to stop the VM.
#
# Usage: scripts/demo.sh [--ext4]
#   --ext4   boot the ext4 root filesystem on a virtio-block drive instead of the initramfs
# Environment: SQUIB_GUEST_DIR (guest kit cache dir), SQUIB_DEMO_VCPUS (2), SQUIB_DEMO_MEM_MIB (256).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
root=initramfs
case "${1:-}" in
    --ext4) root=ext4 ;;
    "") ;;
    *) echo "usage: scripts/demo.sh [--ext4]" >&2; exit 2 ;;
esac

step() { echo "==> demo.sh: $*" >&2; }

if ! command -v cargo >/dev/null && [[ -x "${HOME:-/root}/.cargo/bin/cargo" ]]; then
    export PATH="${HOME:-/root}/.cargo/bin:$PATH"
fi
command -v cargo >/dev/null || { echo "demo.sh: cargo not found: install Rust 1.85+" >&2; exit 1; }
[[ -w /dev/kvm ]] || { echo "demo.sh: /dev/kvm is missing or not writable" >&2; exit 1; }

step "guest kit (scripts/guest/build.sh)"
guest="$(scripts/guest/build.sh | tail -n 1)"
step "cargo build --release"
cargo build --release -p squib

run="$(mktemp -d /tmp/squib-demo.XXXXXX)"
trap 'rm -rf "$run"' EXIT
args="console=ttyS0 reboot=k panic=1 nomodule i8042.noaux i8042.nomux i8042.dumbkbd squib.action=shell"
if [[ "$root" == ext4 ]]; then
    cp "$guest/rootfs.ext4" "$run/rootfs.ext4"
    boot="{\"kernel_image_path\": \"$guest/vmlinux\", \"boot_args\": \"$args root=/dev/vda rw\"}"
    drives="[{\"drive_id\": \"rootfs\", \"path_on_host\": \"$run/rootfs.ext4\",
              \"is_root_device\": true, \"is_read_only\": false}]"
else
    boot="{\"kernel_image_path\": \"$guest/vmlinux\", \"initrd_path\": \"$guest/initramfs.cpio\",
           \"boot_args\": \"$args\"}"
    drives="[]"
fi
cat >"$run/vm_config.json" <<JSON
{
  "boot-source": $boot,
  "drives": $drives,
  "machine-config": {"vcpu_count": ${SQUIB_DEMO_VCPUS:-2}, "mem_size_mib": ${SQUIB_DEMO_MEM_MIB:-256}}
}
JSON

step "booting ($root root; the guest takes about a minute on kvm_pvm hosts)"
step "API: curl --unix-socket $run/api.sock http://localhost/"
step "exit the guest shell to stop the microVM"
"${CARGO_TARGET_DIR:-target}"/x86_64-unknown-linux-gnu/release/squib --api-sock "$run/api.sock" --id squib-demo --config-file "$run/vm_config.json"
