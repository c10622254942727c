#!/usr/bin/env bash
# Shared by the guest benchmarks (block.sh, net.sh): sourced, not run.
#
# run_guest_bench ARGS_OF_THE_SCRIPT -- CARGO_TEST_ARGS...: finds the guest kit (builds it
# if needed, unless SQUIB_GUEST_DIR is set), then runs `cargo test CARGO_TEST_ARGS...` with
# SQUIB_BENCH_WRITE=1, or 0 when the script got `--no-write`, so the ignored benchmark test
# writes its section of BENCHMARKS.md (or only prints it).
run_guest_bench() {
    local write=1
    while [[ $# -gt 0 && "$1" != -- ]]; do
        [[ "$1" == --no-write ]] && write=0
        shift
    done
    shift
    local here
    here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
    cd "$here/../.." || return
    if [[ -z "${SQUIB_GUEST_DIR:-}" ]]; then
        SQUIB_GUEST_DIR="$("$here/../guest/build.sh" | tail -n 1)"
    fi
    export SQUIB_GUEST_DIR
    SQUIB_BENCH_WRITE=$write cargo test "$@"
}
