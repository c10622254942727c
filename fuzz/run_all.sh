#!/usr/bin/env bash
# Run every fuzz target for RUNS executions (or SECONDS seconds, whichever comes first), JOBS
# targets at a time, cheapest first. Logs go to fuzz/logs/<target>.log; the last line of each
# is libFuzzer's "Done N runs in S second(s)". New corpus entries go to fuzz/corpus/<target>
# (not committed); the seeds in crates/squib-fuzz/corpus/<target> are read, never written.
#
# Usage: fuzz/run_all.sh [RUNS] [SECONDS] [JOBS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")"
runs=${1:-1000000}
seconds=${2:-600}
jobs=${3:-2}
shift $(( $# < 3 ? $# : 3 ))
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(api_request mmds_http kernel_loader mmio_transport virtio_rng virtio_balloon virtio_block virtio_net virtio_vsock)
fi
export RUSTC_BOOTSTRAP=1
# No sanitizer (the targets are safe Rust over the crates' few audited unsafe blocks, and
# twice the executions matter more here); debug assertions on, so overflows panic.
flags=(-s none -a)
cargo fuzz build "${flags[@]}"
mkdir -p logs
run_one() {
    local t=$1 max_len=4096
    [ "$t" = kernel_loader ] && max_len=16384
    mkdir -p "corpus/$t"
    cargo fuzz run "${flags[@]}" "$t" "corpus/$t" "../crates/squib-fuzz/corpus/$t" -- \
        -runs="$runs" -max_total_time="$seconds" -max_len="$max_len" \
        -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"logs/$t.log" 2>&1
    echo "$t: $(grep -E '^Done|^#[0-9]+.*DONE' "logs/$t.log" | tr '\n' ' ')"
}
export -f run_one
export runs seconds
# Arrays do not cross into the `bash -c` children: each sets the same flags again.
printf '%s\n' "${targets[@]}" | xargs -P "$jobs" -I{} bash -c 'flags=(-s none -a); run_one {}'
