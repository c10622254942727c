#!/usr/bin/env bash
# Checks scripts/guest/init on the host, without a VM: runs it with busybox sh in a chroot
# whose /proc, /sys, /dev/hwrng, mount, reboot, devmem, nc, wget and squib-vsock are fakes,
# once per action, and compares what it prints with what the integration tests parse. Then
# builds the real squib-vsock (vsock/squib-vsock.c) and checks it over AF_UNIX (its test
# hook) and, when the host kernel has vsock loopback, over AF_VSOCK to CID 1. Needs root
# (chroot, apt-get for a missing gcc).
# busybox sh runs some applets (ip, dd) itself whatever PATH says, so each run gets its own
# network namespace with a TAP named eth0 for the real `ip` to configure.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
failures=0

make_tree() {
    rm -rf "$root/t"
    mkdir -p "$root/t"/{bin,dev,proc/sys/kernel,sys/block/vda,sys/block/vdb,tmp}
    cp /bin/busybox "$root/t/bin/busybox"
    for applet in sh echo cat setsid cttyhack sleep sha256sum mkfifo; do
        ln -s busybox "$root/t/bin/$applet"
    done
    for fake in mount reboot devmem; do
        printf '#!/bin/sh\necho "FAKE %s $*"\n' "$fake" >"$root/t/bin/$fake"
        chmod +x "$root/t/bin/$fake"
    done
    printf 'processor\t: 0\nflags\t\t: fpu\n\nprocessor\t: 1\nflags\t\t: fpu\n\nprocessor\t: 2\n' \
        >"$root/t/proc/cpuinfo"
    echo "12.07 3.50" >"$root/t/proc/uptime"
    printf 'MemTotal:         123456 kB\nMemFree:          100 kB\n' >"$root/t/proc/meminfo"
    echo 1 >"$root/t/proc/sys/kernel/ctrl-alt-del"
    echo 65536 >"$root/t/sys/block/vda/size"
    echo 1 >"$root/t/sys/block/vda/ro"
    echo squib-root >"$root/t/sys/block/vda/serial"
    echo 2048 >"$root/t/sys/block/vdb/size"
    echo 0 >"$root/t/sys/block/vdb/ro"
    : >"$root/t/dev/vdb"
    mkdir "$root/t/dev/vdc" # a write to it fails, as to a read-only disk
    head -c 2097152 /dev/zero >"$root/t/dev/zero" # busybox sh runs its own dd applet
    if [[ -z "${NO_HWRNG:-}" ]]; then
        mkdir -p "$root/t/sys/class/misc/hw_random"
        echo virtio_rng.0 >"$root/t/sys/class/misc/hw_random/rng_current"
        head -c 100 /dev/urandom >"$root/t/dev/hwrng"
    fi
    fake_network
    fake_vsock
    cp "$here/init" "$root/t/init"
}

# Fake nc, wget and httpd: an MMDS (V2 when the init wrote a token request, token
# `TOKEN123`, hostname `squib-vm`, then `squib-patched` from the third GET on, blob
# `0123456789`) and a host whose /net is `netdata`.
fake_network() {
    cat >"$root/t/bin/nc" <<'EOF_NC'
#!/bin/sh
echo "FAKE nc $*" >&2
case "$*" in
    "") exit 1 ;;
    *" 80") printf 'HTTP/1.1 200 \r\nContent-Length: 8\r\n\r\nTOKEN123' ;;
    *) echo netdata; cat >/dev/null ;;
esac
EOF_NC
    cat >"$root/t/bin/wget" <<'EOF_WGET'
#!/bin/sh
out='' url='' header=''
while [ $# -gt 0 ]; do
    case "$1" in
        -O) out="$2"; shift ;;
        --header) header="$2"; shift ;;
        http://*) url="$1" ;;
    esac
    shift
done
[ -n "$url" ] || exit 1
case "$url" in
    */net) echo netdata >"$out"; exit 0 ;;
esac
if [ -e /tmp/token-request ] && [ "$header" != "X-metadata-token: TOKEN123" ]; then
    echo "wget: server returned error: HTTP/1.1 401 Unauthorized" >&2
    exit 1
fi
echo x >>/tmp/wget-count
case "$url" in
    */blob) printf 0123456789 >"$out" ;;
    *) set -- $(cat /tmp/wget-count); [ $# -ge 3 ] && echo squib-patched >"$out" || echo squib-vm >"$out" ;;
esac
EOF_WGET
    printf '#!/bin/sh\necho "FAKE httpd $*"\n' >"$root/t/bin/httpd"
    chmod +x "$root/t/bin/nc" "$root/t/bin/wget" "$root/t/bin/httpd"
}

# Fake squib-vsock: the echo server prints its line and exits (a process left running would
# keep the output pipe open); `send` to port 9999 is reset, to port 6666 dies without a line,
# and to any other port matches.
fake_vsock() {
    cat >"$root/t/bin/squib-vsock" <<'EOF_VSOCK'
#!/bin/sh
echo "FAKE squib-vsock $*" >&2
case "$1:$3" in
    echo:*) echo "SQUIB vsock echo listening port=$2" ;;
    send:9999) echo "SQUIB vsock send port=9999 error=ECONNRESET"; exit 1 ;;
    send:6666) exit 139 ;;
    send:*) echo "SQUIB vsock send port=$3 sent=$4 received=$4 match=1" ;;
esac
EOF_VSOCK
    chmod +x "$root/t/bin/squib-vsock"
}

# expect CMDLINE EXPECTED_LINE...: every expected line must appear in the output. The init
# gets SIGINT (as from Ctrl-Alt-Del) after $INT_AFTER seconds, and is killed 2 s later.
INT_AFTER=${INT_AFTER:-10}
expect() {
    local cmdline="$1" out line output_line
    shift
    make_tree
    echo "console=ttyS0 $cmdline" >"$root/t/proc/cmdline"
    out="$(unshare -n sh -c 'ip tuntap add dev eth0 mode tap && ip link set eth0 up && exec "$@"' sh \
        timeout -k 2 -s INT "${INT_AFTER}" chroot "$root/t" /bin/sh /init </dev/null 2>&1 || true)"
    for line in "$@"; do
        if ! grep -Fxq -- "$line" <<<"$out"; then
            echo "test-init.sh: [$cmdline] missing line: $line" >&2
            while IFS= read -r output_line; do echo "    | $output_line"; done <<<"$out" >&2
            failures=$((failures + 1))
            return
        fi
    done
    echo "test-init.sh: [$cmdline] ok"
}

common=("SQUIB nproc=3" "SQUIB memtotal_kib=123456" "SQUIB blk name=vda sectors=65536 ro=1 serial=squib-root"
    "SQUIB blk name=vdb sectors=2048 ro=0 serial=" SQUIB-GUEST-READY)
expect "squib.action=reboot" "${common[@]}" "SQUIB action=reboot" "FAKE reboot -f"
expect "squib.action=reboot squib.boot_timer=1" "FAKE devmem 0xc0000000 8 123" SQUIB-GUEST-READY
expect "squib.action=tick squib.ticks=3" "SQUIB tick 1" "SQUIB tick 3" "SQUIB ticks done" "FAKE reboot -f"
expect "squib.action=tick squib.ticks=3 squib.tick_period=0.01" "SQUIB tick-period 0.01" "SQUIB tick 3" \
    "SQUIB ticks done" "FAKE reboot -f"
expect "squib.action=tick squib.ticks=50 squib.tick_period=0" "SQUIB tick-period 0" "SQUIB tick 50" \
    "SQUIB ticks done" "FAKE reboot -f"
expect "squib.action=blk-write squib.blk_tag=abc" "SQUIB blk-write done" "FAKE reboot -f"
grep -Fxq "SQUIB-BLK-PATTERN abc" "$root/t/dev/vdb" || { echo "test-init.sh: blk-write pattern missing" >&2; failures=$((failures + 1)); }
expect "squib.action=blk-write squib.blk_tag=abc squib.blk_ro=vdc" "SQUIB blk-ro-write failed" \
    "SQUIB blk-write done"
expect "squib.action=blk-write squib.blk_tag=abc squib.blk_ro=vdb" "SQUIB blk-ro-write succeeded"
expect "squib.action=blk-rate squib.blk_mib=2" \
    "SQUIB blk-time op=read bytes=2097152 centis=0" "FAKE reboot -f"
expect "squib.action=blk-bench squib.blk_dev=vdb squib.blk_mib=1 squib.blk_ops=16" \
    "SQUIB blk-time op=noop bytes=0 centis=0" \
    "SQUIB blk-time op=seq-write bytes=1048576 centis=0" \
    "SQUIB blk-time op=seq-read bytes=1048576 centis=0" \
    "SQUIB blk-time op=read-4k bytes=65536 centis=0" "SQUIB blk-bench done" "FAKE reboot -f"
expect "squib.action=blk-read squib.blk_dev=vdb" "SQUIB blk-read " "FAKE reboot -f"
expect "squib.action=net squib.ticks=1 squib.mmds=v2 squib.mmds_fetches=2 squib.net_host=10.0.0.1 squib.net_port=7000" \
    "SQUIB mmds token-length=8" \
    "SQUIB mmds no-token wget: server returned error: HTTP/1.1 401 Unauthorized" \
    "SQUIB mmds hostname=squib-vm" "SQUIB mmds waiting-for-patch" \
    "SQUIB mmds patched hostname=squib-patched" "SQUIB mmds-time op=noop bytes=0 centis=0" \
    "SQUIB mmds-time op=fetch bytes=10 centis=0" "SQUIB net-time op=download centis=0" \
    "SQUIB net sha256=$(echo netdata | sha256sum | cut -d' ' -f1)" "FAKE httpd -p 7000 -h /tmp" \
    "SQUIB net serving /tmp on port 7000" "SQUIB net checks done" \
    "SQUIB tick 1" "SQUIB ticks done" "FAKE reboot -f"
expect "squib.action=net squib.ticks=1 squib.net_setup=eth0,172.16.9.2/24 squib.mmds=v1 squib.mmds_polls=1" \
    "SQUIB net setup eth0 done" \
    "SQUIB mmds hostname=squib-vm" "SQUIB mmds patch not seen" "SQUIB net checks done"
expect "squib.action=shell" "squib guest shell: exit it to reboot the microVM" "FAKE reboot -f"
INT_AFTER=3 expect "squib.action=wait-ctrlaltdel" "SQUIB waiting ctrl-alt-del" "SQUIB ctrl-alt-del" \
    "FAKE reboot -f"

expect "squib.action=vsock squib.ticks=1 squib.vsock_echo=5000 squib.vsock_send=5001:1000 squib.vsock_reset=9999 squib.vsock_send=6666:7" \
    "SQUIB action=vsock" "SQUIB hwrng current=virtio_rng.0" "SQUIB hwrng bytes=32" \
    "FAKE squib-vsock echo 5000" "SQUIB vsock echo listening port=5000" \
    "FAKE squib-vsock send 2 5001 1000" "SQUIB vsock send port=5001 sent=1000 received=1000 match=1" \
    "FAKE squib-vsock send 2 9999 1" "SQUIB vsock send port=9999 error=ECONNRESET" \
    "SQUIB vsock send port=6666 error=exit-139" "SQUIB vsock done" \
    "SQUIB tick 1" "SQUIB ticks done" "FAKE reboot -f"
NO_HWRNG=1 expect "squib.action=vsock squib.ticks=1" "SQUIB hwrng current=" "SQUIB hwrng bytes=0" \
    "SQUIB vsock done" "SQUIB tick 1"

# check_tool NAME RC EXPECTED_OUTPUT COMMAND...: COMMAND must exit RC and print exactly
# EXPECTED_OUTPUT (stdout and stderr).
check_tool() {
    local name="$1" want_rc="$2" want="$3" got rc=0
    shift 3
    got="$("$@" 2>&1)" || rc=$?
    if [[ "$got" == "$want" && "$rc" == "$want_rc" ]]; then
        echo "test-init.sh: squib-vsock $name ok"
    else
        echo "test-init.sh: squib-vsock $name: got '$got' (exit $rc), want '$want' (exit $want_rc)" >&2
        failures=$((failures + 1))
    fi
}

# check_vsock_tool: builds squib-vsock as rootfs.sh does and runs an echo server and senders
# (one byte, nothing, 4 MiB, three at once, a port nobody listens on) over AF_UNIX; then, if
# the host has vsock loopback, one send over AF_VSOCK to CID 1.
check_vsock_tool() {
    local bin="$root/squib-vsock" sock="$root/sock" server i pids=()
    if ! command -v gcc >/dev/null; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends gcc libc6-dev
    fi
    gcc -static -O2 -Wall -Wextra -Werror -o "$bin" "$here/vsock/squib-vsock.c"
    mkdir "$sock"
    export SQUIB_VSOCK_UNIX_DIR="$sock"
    timeout 60 "$bin" echo 5000 >"$root/echo.out" &
    server=$!
    for ((i = 0; i < 50; i++)); do [[ -S "$sock/5000" ]] && break; sleep 0.1; done
    check_tool listening 0 "SQUIB vsock echo listening port=5000" cat "$root/echo.out"
    check_tool one-byte 0 "SQUIB vsock send port=5000 sent=1 received=1 match=1" \
        "$bin" send 2 5000 1
    check_tool empty 0 "SQUIB vsock send port=5000 sent=0 received=0 match=1" \
        "$bin" send 2 5000 0
    check_tool 4MiB 0 "SQUIB vsock send port=5000 sent=4194304 received=4194304 match=1" \
        "$bin" send 2 5000 4194304
    for i in 1 2 3; do
        "$bin" send 2 5000 1000000 >"$root/send.$i" &
        pids+=($!)
    done
    wait "${pids[@]}" || true
    check_tool concurrent 0 "$(printf 'SQUIB vsock send port=5000 sent=1000000 received=1000000 match=1\n%.0s' 1 2 3)" \
        cat "$root/send.1" "$root/send.2" "$root/send.3"
    check_tool no-listener 1 "SQUIB vsock send port=5001 error=ENOENT" "$bin" send 2 5001 1
    check_tool usage 2 "squib-vsock: bad number '-1'" "$bin" send 2 -1 1
    kill "$server"
    wait "$server" || true
    unset SQUIB_VSOCK_UNIX_DIR
    modprobe vsock_loopback 2>/dev/null || true
    if ! grep -q vsock_loopback /proc/kallsyms 2>/dev/null; then
        echo "test-init.sh: squib-vsock AF_VSOCK check skipped: no vsock loopback on this host" \
            "(the guest boot is the real test)"
        return
    fi
    timeout 30 "$bin" echo 47001 >"$root/echo.out" &
    server=$!
    sleep 0.5
    check_tool vsock-loopback 0 \
        "SQUIB vsock send port=47001 sent=100000 received=100000 match=1" \
        "$bin" send 1 47001 100000
    kill "$server"
    wait "$server" || true
}
check_vsock_tool

if ((failures)); then
    echo "test-init.sh: $failures failure(s)" >&2
    exit 1
fi
echo "test-init.sh: all init checks passed"
