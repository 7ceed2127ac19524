"""Remote driver hosts: the cost of a device on another node, against the same device on the kernel's machine.

A kernel listens on CurveZMQ TCP on this side of a network namespace link
(`llmos.benchmarks.netns.Link`: a veth pair, run as root; the loopback where
namespaces are not permitted, and the output says so), with its own cpu0;
`llmos host` serves node2/cpu0 from the far side (1 torch thread, as cpu0's
host has). One client, attached through the kernel's local socket, times:
  op round trip: `compute("add")` of two 1-element tensors on the device
         (client -> kernel -> driver host -> kernel -> client);
  bandwidth: `write` then `read` of a `--mib` MiB tensor on the device.
Rounds alternate the two devices so both see the same machine; each figure
is the median over rounds.
  remote_rtt_ratio = op round trip on node2/cpu0 / on cpu0   (the link's overhead; 1 = none)
  remote_bw_ratio  = GiB/s to node2/cpu0 / to cpu0           (cpu0 is host-visible: no copy through its host)
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

from llmos.kernel import boot
from llmos.kernel.config import KernelConfig
from llmos.kernel.security import keygen
from llmos.syscalls import runtime
from llmos.userland.client import Client

from .netns import Link, start_node, stop_node

GIB = 1 << 30
DEVICES = ("cpu0", "node2/cpu0")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `llmos bench remote`."""
    parser.add_argument("--calls", type=int, default=300, help="op round trips per device per round (default 300)")
    parser.add_argument("--mib", type=int, default=16, help="tensor size in MiB for bandwidth (default 16)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")


def _round_trips(c: Client, device: str, calls: int) -> float:
    """Median seconds of one `add` of 1-element tensors on `device`."""
    import torch

    a = c.put(torch.ones(1), device=device)
    out = c.compute("add", a.handle, a.handle)
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        c.compute("add", a.handle, a.handle, out=out.handle)
        times.append(time.perf_counter() - start)
    c.free(a.handle)
    c.free(out.handle)
    return statistics.median(times)


def _bandwidth(c: Client, device: str, data) -> float:
    """GiB/s of a write then a read of the torch tensor `data` on `device` (bytes moved both ways)."""
    import torch

    t = c.alloc(device, list(data.shape), "uint8")
    start = time.perf_counter()
    c.write(t.handle, data)
    back = c.read(t.handle)
    took = time.perf_counter() - start
    c.free(t.handle)
    if not torch.equal(back, data):
        raise RuntimeError(f"{device} gave back other bytes than it was given")
    return 2 * data.numel() / GIB / took


def run(args: argparse.Namespace) -> dict:
    """Open the link, boot, join the node, alternate the devices, and report the medians."""
    tmp = tempfile.mkdtemp(prefix="llmos-bench-")
    os.chmod(tmp, 0o700)
    link = Link.open()
    if not link.namespaced:
        print(f"[bench remote] {link.why}; the node connects over the loopback", file=sys.stderr)
    keys = os.path.join(tmp, "keys")
    keygen(keys)
    import socket

    with socket.socket() as s:
        s.bind((link.kernel_ip, 0))
        tcp = f"{link.kernel_ip}:{s.getsockname()[1]}"
    config = KernelConfig(name="bench-remote", runtime_dir=tmp, drivers=["cpu"], log_level="error", tcp=tcp,
                          keys_dir=keys, driver_options={"cpu": {"threads": 1}})  # fmt: skip
    kp = boot.start(config)
    node = start_node(link, f"tcp://{tcp}", keys, "node2", os.path.join(tmp, "node2.log"))
    rtt = {d: [] for d in DEVICES}
    bw = {d: [] for d in DEVICES}
    try:
        with Client(kp.address, name="bench-remote") as c:
            _wait_online(c, "node2/cpu0")
            import torch  # here: `llmos` lists the benchmarks without loading torch

            data = torch.randint(0, 256, (args.mib << 20,), dtype=torch.uint8)
            for r in range(args.rounds):
                print(f"\r[bench remote] round {r + 1}/{args.rounds}", end="", file=sys.stderr, flush=True)
                for device in DEVICES if r % 2 == 0 else DEVICES[::-1]:
                    rtt[device].append(_round_trips(c, device, args.calls))
                    bw[device].append(_bandwidth(c, device, data))
    finally:
        print(file=sys.stderr)
        stop_node(node)
        kp.stop()
        link.close()
        runtime.remove(tmp)
    local, remote = (statistics.median(rtt[d]) for d in DEVICES)
    local_bw, remote_bw = (statistics.median(bw[d]) for d in DEVICES)
    return {
        "namespaced": link.namespaced,
        "link": f"veth {link.kernel_ip} <-> {link.node_ip} (namespace)" if link.namespaced else link.why,
        "local_rtt_us": round(local * 1e6, 1),
        "remote_rtt_us": round(remote * 1e6, 1),
        "remote_rtt_ratio": round(remote / local, 3),
        "local_gib_s": round(local_bw, 3),
        "remote_gib_s": round(remote_bw, 3),
        "remote_bw_ratio": round(remote_bw / local_bw, 3),
        "calls": args.calls,
        "mib": args.mib,
        "rounds": args.rounds,
    }


def _wait_online(c: Client, name: str, timeout: float = 60.0) -> None:
    """Wait for the node's device to join; RuntimeError naming the log otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(d.name == name and d.state == "online" for d in c.devices()):
            return
        time.sleep(0.2)
    raise RuntimeError(f"{name} did not join in {timeout:.0f} s (see node2.log in the run's folder)")
