#!/usr/bin/env python3
"""Where a snapshot load's time goes: boot the guest kit's tick guest on VMM, pause it, take a
Full snapshot, then load it in new processes (plain, then once under `strace -f -T -tt`) and
print each load's time and the slowest system calls between the load request and the first
KVM_RUN. Works with squib and Firecracker (same API).

usage: scripts/bench/snapshot_load_strace.py VMM WORKDIR [GUEST_KIT_DIR]
(root; strace installed; the kit from scripts/guest/build.sh, default ~/.cache/squib-guest)
"""
import http.client
import json
import os
import socket
import subprocess
import sys
import time

# Firecracker does not add these on kvm_pvm hosts (squib does): guest-kit README.
PVM_ARGS = "pci=off noxsave clearcpuid=popcnt,smap nofsgsbase"
BASE_ARGS = "console=ttyS0 reboot=k panic=1 nomodule i8042.noaux i8042.nomux i8042.dumbkbd"


class UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost")
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(self.path)


def request(sock, method, path, body=None):
    conn = UnixHTTP(sock)
    conn.request(method, path, json.dumps(body) if body is not None else None,
                 {"Content-Type": "application/json"})
    reply = conn.getresponse()
    data = reply.read()
    if reply.status != 204:
        sys.exit(f"{method} {path}: {reply.status} {data!r}")


def spawn(cmd, sock, log):
    if os.path.exists(sock):
        os.unlink(sock)
    proc = subprocess.Popen(cmd + ["--api-sock", sock, "--id", "strace"],
                            stdout=open(log, "w"), stderr=subprocess.STDOUT)
    while not os.path.exists(sock):
        time.sleep(0.01)
    time.sleep(0.3)
    return proc


def snapshot(vmm, work, kit):
    sock, log = f"{work}/origin.sock", f"{work}/origin.log"
    proc = spawn([vmm], sock, log)
    request(sock, "PUT", "/boot-source", {
        "kernel_image_path": f"{kit}/vmlinux", "initrd_path": f"{kit}/initramfs.cpio",
        "boot_args": f"{BASE_ARGS} squib.action=tick squib.tick_period=0 {PVM_ARGS}"})
    request(sock, "PUT", "/machine-config", {"vcpu_count": 1, "mem_size_mib": 128})
    request(sock, "PUT", "/actions", {"action_type": "InstanceStart"})
    while "SQUIB tick 20" not in open(log, errors="replace").read():
        if proc.poll() is not None:
            sys.exit(f"the guest did not get to 20 ticks: see {log}")
        time.sleep(1)
    request(sock, "PATCH", "/vm", {"state": "Paused"})
    request(sock, "PUT", "/snapshot/create", {"snapshot_type": "Full",
            "snapshot_path": f"{work}/vm.snap", "mem_file_path": f"{work}/vm.mem"})
    proc.kill()


def load(vmm, work, prefix=()):
    sock = f"{work}/load.sock"
    proc = spawn(list(prefix) + [vmm], sock, f"{work}/load.log")
    started = time.time()
    request(sock, "PUT", "/snapshot/load", {"snapshot_path": f"{work}/vm.snap",
            "mem_backend": {"backend_type": "File", "backend_path": f"{work}/vm.mem"},
            "resume_vm": True})
    took = (time.time() - started) * 1e3
    time.sleep(0.5)
    proc.kill()
    proc.wait()
    return took


def slow_calls(trace, threshold=0.0001):
    lines = open(trace).read().splitlines()
    start = next(i for i, line in enumerate(lines) if "snapshot/load" in line)
    for line in lines[start:]:
        if "KVM_RUN" in line:
            break
        took = line.rsplit("<", 1)[-1].rstrip(">")
        if took.replace(".", "", 1).isdigit() and float(took) > threshold:
            print("  " + line[:170])


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    vmm, work = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    kit = sys.argv[3] if len(sys.argv) > 3 else os.path.expanduser("~/.cache/squib-guest")
    os.makedirs(work, exist_ok=True)
    snapshot(vmm, work, kit)
    for _ in range(3):
        print(f"load: {load(vmm, work):.1f} ms")
    trace = f"{work}/strace.txt"
    print(f"load under strace: {load(vmm, work, ['strace', '-f', '-T', '-tt', '-o', trace]):.1f} ms")
    print("system calls over 0.1 ms from the load request to the first KVM_RUN:")
    slow_calls(trace)


if __name__ == "__main__":
    main()
