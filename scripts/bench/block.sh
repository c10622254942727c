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

# shellcheck source=scripts/bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
run_guest_bench "$@" -- -p squib --test block -- --ignored block_benchmark --nocapture
