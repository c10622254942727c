#!/usr/bin/env bash
# Measures guest vs host block I/O (sequential 1 MiB read/write and 4 KiB reads, O_DIRECT)
# and writes the `## Block I/O` section of BENCHMARKS.md between its block markers.
# It runs the ignored `block_benchmark` test of apps/squib/tests/block.rs, which boots one
# guest (about a minute of a host core on kvm_pvm) with a data drive in target/tmp, runs
# the init's `blk-bench` action there, then the same `dd` commands on the host file.
#
# Usage: scripts/bench/block.sh [--no-write]
#   SQUIB_GUEST_DIR  guest kit (default: what scripts/guest/build.sh prints)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/../.."
write=1
[[ "${1:-}" == --no-write ]] && write=0
if [[ -z "${SQUIB_GUEST_DIR:-}" ]]; then
    SQUIB_GUEST_DIR="$("$here/../guest/build.sh" | tail -n 1)"
fi
export SQUIB_GUEST_DIR
SQUIB_BENCH_WRITE=$write cargo test -p squib --test block -- --ignored block_benchmark \
    --nocapture
