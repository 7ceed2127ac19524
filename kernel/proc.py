"""The process table: pids, tokens and per-process handle tables.

A process is a userland program known to the kernel: attached (it connected
and asked) or spawned (the kernel started it as a child OS process, which
then attaches with the token it was given). A token is 16 random bytes and
is the only proof of identity a call carries; it dies with the process.
A handle is a small integer in one process's table that names a tensor;
handles are never reused within a process, so a stale one fails cleanly.
"""

import secrets
import subprocess
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass, field

from llmos.syscalls import rights as r
from llmos.syscalls.frames import TOKEN_BYTES

STALE_TOKENS_KEPT = 4096
KERNEL_PID = 0  # the owner of the kernel's own device memory (KV pools); no process has it


@dataclass(eq=False)
class Process:
    """One row of the process table."""

    pid: int
    name: str
    token: bytes
    ppid: int = 0
    os_pid: int = 0
    state: str = "running"  # starting (spawned, not attached yet), running, exited
    started: float = field(default_factory=time.time)
    last_seen: float = field(default_factory=time.monotonic)
    handles: dict[int, int] = field(default_factory=dict)  # handle -> tensor id
    kvseqs: dict[int, tuple[str, str, int]] = field(default_factory=dict)  # handle -> (device, pool, sequence id)
    kv_quota: int | None = None  # KV blocks per pool, set at spawn
    models: dict[int, int] = field(default_factory=dict)  # handle -> the kernel's model id
    next_handle: int = 1
    syscalls: int = 0
    tokens: int = 0  # tokens its generate calls produced
    admin: bool = False  # proved it holds the kernel's admin key
    rights: frozenset[str] = r.DEFAULT  # what it may do (syscalls/rights.py); only ever shrinks
    user: int | None = None  # the OS user it is counted against (attached, not admin); -1: one the kernel cannot see
    popen: subprocess.Popen | None = None  # spawned children only
    log: str = ""
    status: int | None = None
    reason: str = ""

    def new_handle(self) -> int:
        """The next handle number: tensors and KV sequences share one numbering, never reused."""
        handle = self.next_handle
        self.next_handle += 1
        return handle

    def add_handle(self, tid: int) -> int:
        """Open a new handle to tensor `tid`."""
        handle = self.new_handle()
        self.handles[handle] = tid
        return handle


class ProcessTable:
    """All processes, by pid and by token, and the tokens of those that left."""

    def __init__(self) -> None:
        self.by_pid: dict[int, Process] = {}
        self.by_token: dict[bytes, Process] = {}
        self.stale: OrderedDict[bytes, str] = OrderedDict()  # token -> why it is no longer valid
        self.per_user: Counter = Counter()  # OS user -> its live attached processes
        self.next_pid = 1

    def create(self, name: str, ppid: int = 0, state: str = "running", user: int | None = None) -> Process:
        """Add a process with a fresh pid and token (counted against `user`, if given, until revoked)."""
        proc = Process(self.next_pid, name or f"proc{self.next_pid}", secrets.token_bytes(TOKEN_BYTES), ppid, state=state)
        proc.user = user
        if user is not None:
            self.per_user[user] += 1
        self.next_pid += 1
        self.by_pid[proc.pid] = proc
        self.by_token[proc.token] = proc
        return proc

    def revoke(self, proc: Process, why: str) -> None:
        """Make the process's token invalid from now on."""
        if self.by_token.pop(proc.token, None) is not None:
            self.stale[proc.token] = why
            if proc.user is not None:
                self.per_user[proc.user] -= 1
            while len(self.stale) > STALE_TOKENS_KEPT:
                self.stale.popitem(last=False)

    def remove(self, proc: Process) -> None:
        """Drop an exited process from the table."""
        self.by_pid.pop(proc.pid, None)

    def children(self, pid: int) -> list[Process]:
        """The processes whose parent is `pid`."""
        return [p for p in self.by_pid.values() if p.ppid == pid]

    def live(self) -> list[Process]:
        """Processes that have not exited."""
        return [p for p in self.by_pid.values() if p.state != "exited"]
