#!/usr/bin/env bash
# Measures guest networking and MMDS and writes the `## Network and MMDS (guest)` section of
# BENCHMARKS.md between its net markers. It runs the ignored `net_benchmark` test of
# apps/squib/tests/net.rs (release build), which boots one guest on a TAP in a private
# network namespace, times an MMDS V2 fetch of a 4 KiB value, moves 8 MiB each way over
# TCP while sampling squib's per-thread CPU, and pings the guest. Needs root.
#
# Usage: scripts/bench/net.sh [--no-write]
#   SQUIB_GUEST_DIR  guest kit (default: what scripts/guest/build.sh prints)
set -euo pipefail

# shellcheck source=scripts/bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
run_guest_bench "$@" -- --release -p squib --test net -- --ignored net_benchmark \
    --nocapture
