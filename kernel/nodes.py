"""Remote driver hosts: the devices of other machines, joined over TCP (`llmos host`).

A node runs `llmos host --kernel tcp://ADDR:PORT --keys DIR`, which starts
one driver host per device of the drivers it names. Each connects to the
kernel's TCP address with the host key pair of `llmos keygen` (CurveZMQ;
the kernel admits only keys in its DIR/hosts/), under a routing identity
that starts with `node-`, and says Hello with its node's name, its driver
kind and its index. The kernel names the device `NODE/KINDINDEX`
(`node2/cpu0`) and serves it as any other, except:

- its tensors are the driver's own (a remote device is never host-visible:
  bytes travel as message frames, not through shared memory files);
- it is not the kernel's to start or restart: the node's `llmos host`
  restarts a driver host that dies, and the new one joins under the same
  name (with none of the old one's tensors);
- each host beats every `NODE_BEAT_S` from a socket of its own, busy or
  not; a node that misses `KernelConfig.node_beats` beats in a row (killed,
  link down) is offline: its work fails with EIO, handles on its tensors
  answer EIO until closed, and every other device goes on.

The idle ping of every device (`DeviceSupervision.heartbeat`) measures each
remote device's round trip (`DeviceInfo.rtt_ms`).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import msgspec
import zmq

from llmos.syscalls import driver as proto
from llmos.syscalls.plugin import DriverEntry

from .devices import OFFLINE, ONLINE, Device

if TYPE_CHECKING:
    from .kernel import Kernel

NODE_PREFIX = b"node-"
"""The routing identities of remote driver hosts start with this."""
BEAT_SUFFIX = b".beat"
"""A remote driver host beats from a second socket: its identity plus this."""


def _peer(frame) -> tuple[str, str | None]:
    """(address, CurveZMQ key) of the connection a frame came in on (key None without CurveZMQ)."""
    meta = {}
    for name in ("Peer-Address", "User-Id"):
        try:
            meta[name] = frame.get(name)
        except zmq.ZMQError:  # the connection carries no such property (no CurveZMQ: no User-Id)
            meta[name] = None
    return meta["Peer-Address"] or "?", meta["User-Id"]


def on_node(k: Kernel, ident: bytes, frames: list) -> None:
    """A message from a remote driver host the device table does not know (yet): a Hello joins it."""
    if len(frames) < 2:
        return
    try:
        msg = proto.from_driver_decoder.decode(frames[1].buffer)
    except (msgspec.DecodeError, msgspec.ValidationError):
        k.log.warning("node.bad_message", ident=ident.decode(errors="replace"))
        return
    if isinstance(msg, proto.DHello):
        join(k, ident, msg, frames)
    # a beat or an answer from a host the kernel has dropped (its device went offline): it will hello again


def join(k: Kernel, ident: bytes, hello: proto.DHello, frames: list) -> None:
    """Admit a remote driver host that said Hello and bring its device `NODE/KINDINDEX` online."""
    address, key = _peer(frames[1])
    problem = _refusal(k, hello, key)
    if problem:
        k.log.warning("node.refused", node=hello.node, address=address, key=key, reason=problem)
        return
    name = f"{hello.node}/{hello.kind}{hello.index}"
    dev = k.devices.get(name)
    if dev is None:
        entry = k.drivers.get(hello.kind) or DriverEntry(hello.kind, "", f"a {hello.kind} driver on a remote node")
        policy = k.new_policy(k.config.policies.get(name, k.config.policy))
        dev = Device(name, hello.kind, hello.index, entry, k.pm.hook.llmos_device_queue(device=name, policy=policy))
        dev.node = hello.node
        k.devices[name] = dev
    elif dev.state == ONLINE:  # its old host is gone (restarted before it was missed): what it held is lost
        k.device_offline(dev, f"node {hello.node} joined again from {address}")
    if dev.state == OFFLINE:
        dev.restarts += 1
    now = time.monotonic()
    k.driver_idents.pop(dev.ident, None)
    k.driver_idents.pop(dev.ident + BEAT_SUFFIX, None)
    dev.ident, dev.address, dev.kernel_address = ident, address, hello.kernel
    k.driver_idents[ident] = dev
    k.driver_idents[ident + BEAT_SUFFIX] = dev
    dev.last_beat = dev.last_heard = dev.started_at = now
    k.device_online(dev, hello.spec, hello.os_pid)
    k.pump(dev)


def _refusal(k: Kernel, hello: proto.DHello, key: str | None) -> str:
    """Why a Hello cannot join ("" when it can)."""
    if k.host_keys is not None and (key is None or key.encode() not in k.host_keys):
        return "its key is not a host key (DIR/hosts/ of the kernel's --keys)"
    if not hello.node or not hello.kind or "/" in hello.node or hello.spec is None:
        return "a remote Hello needs a node name without '/', a driver kind and a device"
    if hello.spec.host_visible:
        return "a remote device cannot be host-visible: it cannot see the kernel's shared memory"
    local = k.devices.get(f"{hello.node}/{hello.kind}{hello.index}")
    if local is not None and not local.node:
        return "the name is a local device's"
    return ""


def watch(k: Kernel, dev: Device, now: float) -> None:
    """One tick of a remote device: offline once its node missed its beats; else the idle ping."""
    if dev.state != ONLINE:
        return  # offline until its node joins again
    silent = now - dev.last_beat
    if silent > k.config.node_beats * proto.NODE_BEAT_S:
        return k.device_offline(dev, f"node {dev.node} missed {k.config.node_beats} heartbeats ({silent:.1f} s silent)")
    k.heartbeat(dev, now)
