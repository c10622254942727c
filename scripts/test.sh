#!/usr/bin/env bash
# THE test command (README; `.ci/run` execs it). From any directory, in a fresh clone, as root,
# with or without a terminal:
#   1. installs missing Debian packages and builds the guest kit (cached; ~3 min the first time),
#   2. shellchecks the scripts and checks the guest init on the host (scripts/guest/test-init.sh),
#   3. cargo fmt --check, cargo clippy -D warnings, cargo test over the whole workspace, with
#      SQUIB_GUEST_DIR exported for the integration tests that boot real guests.
# Environment: SQUIB_GUEST_DIR (guest kit cache dir), SQUIB_SKIP_BOOT_TESTS=1 (no guest boots).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

step() { echo "==> test.sh: $*" >&2; }

if ! command -v cargo >/dev/null; then
    if [[ -x "${HOME:-/root}/.cargo/bin/cargo" ]]; then
        export PATH="${HOME:-/root}/.cargo/bin:$PATH"
    else
        echo "test.sh: cargo not found: install Rust 1.85 or later (https://rustup.rs)" >&2
        exit 1
    fi
fi
if [[ ! -w /dev/kvm && "${SQUIB_SKIP_BOOT_TESTS:-0}" != 1 ]]; then
    echo "test.sh: /dev/kvm is missing or not writable: guest boot tests will fail" \
        "(set SQUIB_SKIP_BOOT_TESTS=1 to skip them)" >&2
fi

step "guest kit (scripts/guest/build.sh)"
SQUIB_GUEST_DIR="$(scripts/guest/build.sh | tail -n 1)"
export SQUIB_GUEST_DIR
step "guest kit in $SQUIB_GUEST_DIR"

step "shell scripts: shellcheck, guest init checks (scripts/guest/test-init.sh)"
if ! command -v shellcheck >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends shellcheck ||
        { apt-get update -q && apt-get install -y -q --no-install-recommends shellcheck; }
fi
# The network tests create their own TAP devices with iproute2's `ip`.
if ! command -v ip >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends iproute2 ||
        { apt-get update -q && apt-get install -y -q --no-install-recommends iproute2; }
fi
# The ACPI tests disassemble squib's DSDT with ACPICA's iasl.
if ! command -v iasl >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends acpica-tools ||
        { apt-get update -q && apt-get install -y -q --no-install-recommends acpica-tools; }
fi
shellcheck scripts/*.sh scripts/guest/*.sh scripts/bench/*.sh .ci/run
shellcheck -s sh scripts/guest/init
scripts/guest/test-init.sh

step "cargo fmt --all -- --check"
cargo fmt --all -- --check

step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo test --workspace"
cargo test --workspace

step "all checks passed"
