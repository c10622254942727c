#!/usr/bin/env bash
# Builds the squib guest kernel (vmlinux with the PVH note, and an LZ4 bzImage) from Debian's
# linux-source-6.1 with the patches in patches/ and the options in kernel.config-fragment.
#
# Usage: kernel.sh OUT_DIR KEY
#   Builds in OUT_DIR/kernel-build, installs OUT_DIR/vmlinux and OUT_DIR/bzImage, and
#   writes KEY to OUT_DIR/kernel.key last (build.sh compares it to skip up-to-date builds).
# Runs under `nice -n 10` so that concurrent cargo builds keep most of the CPU.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:?usage: kernel.sh OUT_DIR KEY}"
key="${2:?usage: kernel.sh OUT_DIR KEY}"
fragment="$here/kernel.config-fragment"
source_tar=/usr/src/linux-source-6.1.tar.xz
build="$out/kernel-build"
jobs="$(nproc)"

log() { echo "kernel.sh: $*" >&2; }

# Applies every line of the fragment with scripts/config.
apply_fragment() {
    local line name value
    while IFS= read -r line; do
        if [[ "$line" =~ ^#\ CONFIG_([A-Za-z0-9_]+)\ is\ not\ set$ ]]; then
            ./scripts/config --disable "${BASH_REMATCH[1]}"
        elif [[ "$line" =~ ^CONFIG_([A-Za-z0-9_]+)=(.*)$ ]]; then
            name="${BASH_REMATCH[1]}"
            value="${BASH_REMATCH[2]}"
            case "$value" in
                y) ./scripts/config --enable "$name" ;;
                m) ./scripts/config --module "$name" ;;
                \"*) ./scripts/config --set-str "$name" "${value//\"/}" ;;
                *) ./scripts/config --set-val "$name" "$value" ;;
            esac
        fi
    done <"$fragment"
}

# Fails naming every option that kconfig dropped or changed (missing dependencies).
check_fragment() {
    local line name bad=0
    while IFS= read -r line; do
        if [[ "$line" =~ ^#\ CONFIG_([A-Za-z0-9_]+)\ is\ not\ set$ ]]; then
            name="${BASH_REMATCH[1]}"
            if grep -Eq "^CONFIG_${name}=[ym]$" .config; then
                log "option CONFIG_${name} should be off but is $(grep "^CONFIG_${name}=" .config)"
                bad=1
            fi
        elif [[ "$line" =~ ^CONFIG_[A-Za-z0-9_]+=.*$ ]]; then
            if ! grep -Fxq "$line" .config; then
                log "option ${line} did not keep its value (got: $(grep -E "^(# )?${line%%=*}[= ]" .config || echo 'absent'))"
                bad=1
            fi
        fi
    done <"$fragment"
    return "$bad"
}

# A tree left by an interrupted build with the same key is resumed, not extracted again.
if [[ "$(cat "$build/tree.key" 2>/dev/null)" != "$key" ]]; then
    rm -rf "$build"
    mkdir -p "$build"
    log "extracting $source_tar into $build"
    tar -xf "$source_tar" -C "$build"
    cd "$build"/linux-source-6.1
    for p in "$here"/patches/*.patch; do
        log "applying $(basename "$p")"
        patch -p1 --forward --silent <"$p"
    done
    log "configuring: tinyconfig + $(basename "$fragment")"
    nice -n 10 make -s tinyconfig >/dev/null
    apply_fragment
    nice -n 10 make -s olddefconfig >/dev/null
    check_fragment
    echo "$key" >"$build/tree.key"
fi
cd "$build"/linux-source-6.1

log "building vmlinux and bzImage with $jobs jobs (about 3 min of 2 cores)"
nice -n 10 make -s -j"$jobs" bzImage

if ! readelf -n vmlinux | grep -A1 '^ *Xen' | grep -Eqi '0x0*12\b|PHYS32'; then
    # XEN_ELFNOTE_PHYS32_ENTRY (18) is the PVH entry point the VMM looks for.
    log "vmlinux has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY)"
    exit 1
fi

cp vmlinux "$out/vmlinux.tmp"
cp arch/x86/boot/bzImage "$out/bzImage.tmp"
cp .config "$out/kernel.config.tmp"
mv -f "$out/vmlinux.tmp" "$out/vmlinux"
mv -f "$out/bzImage.tmp" "$out/bzImage"
mv -f "$out/kernel.config.tmp" "$out/kernel.config"
echo "$key" >"$out/kernel.key"
log "installed $out/vmlinux and $out/bzImage"
