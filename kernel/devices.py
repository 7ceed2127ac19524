"""Devices and their driver hosts: start, watch, restart; the device work queue.

Each device is served by one driver host process (`llmos.drivers.host`),
MINIX-style. The kernel starts it, sends it one work item at a time from the
device's queue, pings it when idle, and when the host dies or stops answering
the device goes offline at once: work in flight and queued fails with EIO,
its tensors are lost, and a new host is started after a capped exponential
backoff. Host-visible devices' reads and writes are done by the kernel
itself, in queue order.
"""

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from llmos.services.memory.waits import WaitQueue
from llmos.syscalls import Errno
from llmos.syscalls import driver as proto
from llmos.syscalls.plugin import DriverEntry

from .hostmem import HostMemory

STARTING, ONLINE, OFFLINE, ABSENT = "starting", "online", "offline", "absent"
LOCAL_NODE = "127.0.0.1"  # the address of the kernel's own machine, as its driver hosts reach each other
STABLE_S = 30.0  # a host that lived this long resets the restart backoff


@dataclass(eq=False)
class Work:
    """One item of device work: a driver message, or a local action of the kernel.

    `done(ok, frames)` runs on success, `fail(errno, message)` on failure.
    Work of a process that has gone is skipped unless `always` (frees).
    `posted` work (frees, allocations) is sent without holding the device: the
    next item may follow it at once, and the host serves its messages in
    order, so whatever is sent next still finds it done. Its answer still
    runs `done` or `fail` when it comes (`Device.posted` keeps it until then).
    Only work nothing else can depend on before its answer may be posted: a
    free, or an allocation whose tensor nobody can name before it is made.
    `pids`: the processes a shared item serves (a batched model step), for traces.
    `tensors`: the host-visible tensors it names; a freed one keeps its place
    until no such work is left (`Kernel.settle`).
    `gang`: the together `Gang` it is a part of (kernel/gang.py): at the head
    of its queue it holds the device unsent until every part has arrived.
    """

    owner: int
    msg: proto.ToDriver | None = None
    bulk: tuple = ()
    local: Callable[[], None] | None = None
    done: Callable[[proto.DOk, list], None] = lambda ok, frames: None
    fail: Callable[[Errno, str], None] = lambda errno, message: None
    always: bool = False
    posted: bool = False
    cancelled: bool = False
    pids: tuple[int, ...] = ()
    tensors: tuple = ()
    gang: object = None  # a together Gang (kernel/gang.py), or None


@dataclass(eq=False)
class Device:
    """One device, its driver host and its queue."""

    name: str
    kind: str
    index: int
    entry: DriverEntry
    queue: object  # from the llmos_device_queue hook
    options: dict = field(default_factory=dict)
    state: str = STARTING
    spec: proto.DeviceSpec | None = None
    memory: object = None  # from the llmos_memory_service hook, once online
    hostmem: HostMemory | None = None  # host-visible devices, once online: where the kernel places tensors
    ident: bytes = b""
    secret: str = ""
    popen: subprocess.Popen | None = None
    os_pid: int = 0
    restarts: int = 0
    backoff: float = 0.0
    restart_at: float = 0.0
    up_since: float = 0.0
    started_at: float = 0.0  # when its current driver host was started
    start_s: float = 0.0  # how long its last host took from start to hello (0: never came up)
    inflight: Work | None = None
    inflight_since: float = 0.0
    posted: dict[int, Work] = field(default_factory=dict)  # posted work sent, by seq, until its answer comes
    last_heard: float = 0.0
    seq: int = 0
    offline_reason: str = ""
    busy_s: float = 0.0  # wall seconds of ops in the driver
    sim_busy_s: float = 0.0  # simulated seconds of those ops
    parked: WaitQueue = field(default_factory=WaitQueue)  # allocations waiting for memory, payload (ctx, run)
    node: str = ""  # the node of a remote driver host (`llmos host`), "" for the kernel's own
    address: str = ""  # where a remote host connects from
    kernel_address: str = ""  # ... and where it reached the kernel: the kernel's machine as its node sees it
    last_beat: float = 0.0  # when a remote host last beat
    rtt_s: float = 0.0  # the last heartbeat's round trip (ping and its answer)

    def start_host(self, kernel_address: str, shm_dir: str) -> None:
        """Start a fresh driver host process for this device."""
        self.ident = b"drv-" + secrets.token_hex(8).encode()
        self.secret = secrets.token_hex(16)
        env = dict(os.environ)
        env.update(
            LLMOS_DRIVER_TARGET=self.entry.target,
            LLMOS_DRIVER_INDEX=str(self.index),
            LLMOS_DRIVER_OPTIONS=json.dumps({**self.options, "shm_dir": shm_dir}),
            LLMOS_DRIVER_IDENT=self.ident.decode(),
            LLMOS_DRIVER_SECRET=self.secret,
            LLMOS_KERNEL=kernel_address,
        )
        env.pop("LLMOS_CURVE", None)  # it connects to the kernel's ipc socket, which is plain
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "llmos.drivers.host"], env=env, start_new_session=True, stdin=subprocess.DEVNULL
        )
        self.os_pid = self.popen.pid
        self.state = STARTING
        self.last_heard = self.started_at = time.monotonic()

    def node_address(self, port: int = 0, local: str = LOCAL_NODE) -> str:
        """Where other driver hosts reach this device's host: its machine's address, with ":PORT" when given.

        The one place a process group's rendezvous address comes from
        (kernel/replicas.py): a remote host (`node` set) is reached at the
        address it connected to the kernel from; hosts the kernel starts
        itself are on its own machine, at `local`: 127.0.0.1 among
        themselves, or the kernel's address as a remote member of the group
        reached it (`kernel_address`).
        """
        host = self.address if self.node else local
        return f"{host}:{port}" if port else host

    def next_seq(self) -> int:
        """A fresh sequence number for a driver message."""
        self.seq += 1
        return self.seq

    def back_in(self) -> str:
        """When an offline device's next host starts and, from its last start, when it should be online."""
        if self.node:
            return f"it comes back when node {self.node} rejoins (its `llmos host` restarts its driver hosts)"
        wait = max(0.0, self.restart_at - time.monotonic())
        if not self.start_s:
            return f"a new driver host starts in {wait:.1f} s"
        return (f"a new driver host starts in {wait:.1f} s; expect the device back in about {wait + self.start_s:.1f} s "
                f"(its last start took {self.start_s:.1f} s)")  # fmt: skip

    def kill_host(self) -> None:
        """Kill the driver host at once (it hangs or the kernel stops)."""
        if self.popen and self.popen.poll() is None:
            try:
                os.kill(self.popen.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.popen.wait()

    def schedule_restart(self, first: float, cap: float) -> None:
        """Set the time of the next restart, doubling the delay up to `cap`."""
        now = time.monotonic()
        if self.up_since and now - self.up_since > STABLE_S:
            self.backoff = 0.0
        self.backoff = first if not self.backoff else min(self.backoff * 2, cap)
        self.restart_at = now + self.backoff
