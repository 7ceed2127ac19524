"""The process lifecycle as the kernel keeps its books: the model behind `llmos sim lifecycle`.

A `World` is one kernel's process table, handle tables, cpu0 memory and one
KV pool, built from the kernel's own parts: its process table and handle
numbering (`kernel/proc.py`), tensor table (`kernel/tensors.py`), the memory
service's byte accounting and quotas (`TensorMemory`) and KV cache
(`KVCache`). Its calls follow the process syscalls (`kernel/sysproc.py`,
`kernel/sysmem.py`, `kernel/syskv.py`) and its ends follow `Kernel.reclaim`,
`Kernel.release_ref` and `Kernel.reap`, errors included;
tests/userland/test_lifecycle_live.py holds some of these rules to a live
kernel.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from llmos.kernel.config import KernelConfig
from llmos.kernel.proc import KERNEL_PID, Process, ProcessTable
from llmos.kernel.tensors import Tensor, TensorTable
from llmos.services.memory.admission import Admission
from llmos.services.memory.kv import KVCache
from llmos.services.memory.tensor import TensorMemory

KIB = 1024
SIGTERM, SIGKILL = 15, 9


def kib(nbytes: int) -> str:
    """Bytes as KiB, the exercise's unit."""
    return f"{nbytes // KIB} KiB"


class Refused(Exception):
    """A call the kernel refuses: the errno's name and why."""

    def __init__(self, errno: str, message: str):
        super().__init__(f"{errno}: {message}")
        self.errno = errno


@dataclass
class Reclaimed:
    """What the end of one process gave back at once, and what it left alive."""

    freed_bytes: int
    freed_blocks: int
    kept: list[str] = field(default_factory=list)  # shared tensors that live on, and who pays for them now
    orphans: list[int] = field(default_factory=list)  # its children, whose parent is now nobody
    removed: list[int] = field(default_factory=list)  # exited processes nobody can wait for any more


class World:
    """One kernel's processes, handles, cpu0 memory and a KV pool, under the kernel's rules."""

    def __init__(self, capacity: int, blocks: int, block_size: int, lease_s: float = KernelConfig().lease_s):
        self.procs = ProcessTable()
        self.tensors = TensorTable()
        self.memory = TensorMemory(capacity)
        self.kv = KVCache(blocks, block_size)  # a pool as the kernel makes it (default watermark and quota)
        self.lease_s = lease_s
        self.stopped: set[int] = set()  # stopped by SIGSTOP: running to the kernel, but making no calls
        self.next_seq = 1
        self.main = self.procs.create("main").pid

    # ---- the calls ---------------------------------------------------------------------

    def spawn(self, parent: int, quota: int | None = None, kv_quota: int | None = None) -> int:
        """A child of `parent` (it attaches at once); quotas nest: at most the parent's, the parent's by default."""
        proc = self._running(parent)
        mine = self.memory.quota(parent)
        nbytes = mine if quota is None else quota
        if nbytes > mine:
            raise Refused("EPERM", f"a child's quota ({kib(nbytes)}) cannot exceed its parent's ({kib(mine)})")
        blocks = proc.kv_quota if kv_quota is None else kv_quota
        if proc.kv_quota is not None and blocks > proc.kv_quota:
            raise Refused("EPERM", f"a child's KV quota ({blocks} blocks) cannot exceed its parent's ({proc.kv_quota})")
        child = self.procs.create(f"child of p{parent}", ppid=parent)
        self.memory.set_quota(child.pid, nbytes)
        child.kv_quota = blocks
        return child.pid

    def alloc(self, pid: int, nbytes: int) -> int:
        """A tensor of `nbytes` on cpu0, charged to `pid`: its new handle; EAGAIN (LATER) or ENOMEM (NEVER)."""
        proc = self._running(pid)
        verdict, quota = self.memory.admit(pid, nbytes), self.memory.quota(pid)
        if verdict is Admission.NEVER:
            raise Refused("ENOMEM", f"{kib(nbytes)} is more than cpu0 can ever give p{pid} (quota {kib(quota)})")
        if verdict is Admission.LATER:
            raise Refused("EAGAIN", f"{kib(nbytes)} does not fit now ({kib(self.memory.free)} free, p{pid} "
                                    f"holds {kib(self.memory.by_owner.get(pid, 0))} of its quota {kib(quota)})")
        t = self.tensors.create("cpu0", [nbytes], "uint8", nbytes, pid)
        self.memory.charge(t.tid, pid, nbytes)
        t.holders[pid] += 1
        return proc.add_handle(t.tid)

    def kv_alloc(self, pid: int, tokens: int) -> int:
        """A KV sequence of `tokens` in the pool, within `pid`'s KV quota: its new handle; EAGAIN or ENOMEM."""
        proc = self._running(pid)
        if proc.kv_quota is not None and self.kv.quota(pid) != proc.kv_quota:
            self.kv.set_quota(pid, proc.kv_quota)  # as the kernel's apply_kv_quota
        verdict, need = self.kv.can_allocate(tokens, pid), self.kv.blocks_for(tokens)
        quota = "none" if self.kv.quota(pid) is None else self.kv.quota(pid)
        if verdict is Admission.NEVER:
            raise Refused("ENOMEM", f"{plural(need, 'block')} can never be p{pid}'s (pool {self.kv.num_blocks}, "
                                    f"quota {quota})")
        if verdict is Admission.LATER:
            raise Refused("EAGAIN", f"no room now for {plural(need, 'block')} ({self.kv.num_free_blocks} free, "
                                    f"p{pid} holds {self.kv.usage(pid)}, quota {quota})")
        seq, self.next_seq = self.next_seq, self.next_seq + 1
        self.kv.allocate(seq, pid, tokens)
        handle = proc.new_handle()
        proc.kvseqs[handle] = ("cpu0", self.kv.layout, seq)
        return handle

    def free(self, pid: int, handle: int) -> bool:
        """Close one handle (`free` or `kv_free`): True if that gave memory back."""
        proc = self._running(pid)
        if handle in proc.kvseqs:
            before = self.kv.num_free_blocks
            self.kv.free(proc.kvseqs.pop(handle)[2])
            return self.kv.num_free_blocks > before
        tid = proc.handles.pop(handle, None)
        if tid is None:
            raise Refused("EBADF", f"handle {handle} is not open in process {pid}")
        return self._release(pid, self.tensors.by_tid[tid])

    def share(self, pid: int, handle: int, to: int) -> int:
        """Open `pid`'s tensor `handle` in `to`'s table too: its number there. The allocator still pays."""
        proc = self._running(pid)
        target = self.procs.by_pid.get(to)
        if target is None or target.state != "running":
            raise Refused("ESRCH", f"no running process {to}")
        tid = proc.handles.get(handle)
        if tid is None:
            raise Refused("EBADF", f"handle {handle} is not a tensor open in process {pid}")
        self.tensors.by_tid[tid].holders[to] += 1
        return target.add_handle(tid)

    def exit(self, pid: int, code: int) -> Reclaimed:
        """`pid` calls exit(code) (and its OS process ends with that status)."""
        return self._reclaim(self._running(pid), code, f"exit({code})")

    def kill(self, pid: int, target: int, signal: int = SIGTERM) -> Reclaimed:
        """`pid` kills `target`: itself or one of its children (kill_any is the admin's, not modelled)."""
        self._running(pid)
        victim = self.procs.by_pid.get(target)
        if victim is None or victim.state == "exited":
            raise Refused("ESRCH", f"no running process {target}")
        if target != pid and victim.ppid != pid:
            raise Refused("EPERM", f"process {pid} may only kill itself and its children, not {target}")
        return self._reclaim(victim, -signal, f"killed by process {pid} with signal {signal}")

    def stop(self, pid: int) -> None:
        """`pid` is stopped (SIGSTOP from outside): no calls, no heartbeats; the kernel still counts it running."""
        self._running(pid)
        self.stopped.add(pid)

    def expire(self, pid: int) -> Reclaimed:
        """The kernel finds `pid`'s lease lapsed: it reclaims it and kills its OS process (SIGKILL)."""
        return self._reclaim(self._running(pid), -SIGKILL, f"lease expired: no call for {self.lease_s:.0f} s")

    def wait(self, pid: int, child: int) -> tuple[int, str]:
        """`pid` waits, with timeout 0, for `child`: (status, reason) once it has exited; the child leaves the table."""
        self._running(pid)
        proc = self.procs.by_pid.get(child)
        if proc is None:
            raise Refused("ESRCH", f"no process {child} (it may have been waited for already)")
        if proc.ppid != pid:
            raise Refused("ECHILD", f"process {child} is not a child of process {pid}")
        if proc.state != "exited":
            raise Refused("ETIMEDOUT", f"process {child} is still running")
        self.procs.remove(proc)
        return proc.status, proc.reason

    # ---- the kernel's rules ---------------------------------------------------------------

    def _running(self, pid: int) -> Process:
        proc = self.procs.by_pid.get(pid)
        if proc is None or proc.state != "running":
            raise Refused("ESRCH", f"no running process {pid}")
        return proc

    def _release(self, pid: int, t: Tensor) -> bool:
        """`Kernel.release_ref`: one handle closed; the kernel takes the charge when the allocator lets go of a
        tensor others still hold; the last handle frees it. True if it was freed."""
        match t.let_go(pid):
            case "free":
                self.tensors.drop(t)
                self.memory.release(t.tid)
                return True
            case "kernel":
                self.memory.transfer(t.tid, KERNEL_PID)
        return False

    def _reclaim(self, proc: Process, status: int, reason: str) -> Reclaimed:
        """`Kernel.reclaim`: revoke, free its KV sequences, close its handles, orphan its children, reap."""
        proc.state, proc.status, proc.reason = "exited", status, reason
        self.procs.revoke(proc, f"process {proc.pid} exited: {reason}")
        self.stopped.discard(proc.pid)
        free_bytes, free_blocks = self.memory.free, self.kv.num_free_blocks
        self.kv.free_owner(proc.pid)
        held = [self.tensors.by_tid[tid] for tid in proc.handles.values()]
        for t in held:
            self._release(proc.pid, t)
        proc.handles.clear()
        self.kv.forget_owner(proc.pid)
        proc.kvseqs.clear()
        self.memory.forget_owner(proc.pid)
        out = Reclaimed(self.memory.free - free_bytes, self.kv.num_free_blocks - free_blocks)
        for t in dict.fromkeys(held):
            if t.tid in self.tensors.by_tid:
                out.kept.append(f"t{t.tid} (held by {', '.join(f'p{p}' for p in sorted(t.holders))}; "
                                f"paid by {payer(t.owner)})")
        for child in self.procs.children(proc.pid):
            child.ppid = 0
            out.orphans.append(child.pid)
        out.removed = self._reap()
        return out

    def _reap(self) -> list[int]:
        """`Kernel.reap`: drop exited processes whose parent has gone (nobody can wait for them)."""
        gone = []
        for proc in list(self.procs.by_pid.values()):
            parent = self.procs.by_pid.get(proc.ppid)
            if proc.state == "exited" and (parent is None or parent.state == "exited"):
                self.procs.remove(proc)
                gone.append(proc.pid)
        return gone

    # ---- what it looks like --------------------------------------------------------------

    def holdings(self, proc: Process) -> str:
        """A process's handles, what it pays for on cpu0 and its KV blocks."""
        entries = []
        for handle in sorted([*proc.handles, *proc.kvseqs]):
            if handle in proc.kvseqs:
                blocks = len(self.kv.block_table(proc.kvseqs[handle][2]))
                entries.append(f"h{handle}=kv {plural(blocks, 'block')}")
                continue
            t = self.tensors.by_tid[proc.handles[handle]]
            paid = "" if t.owner == proc.pid else f" (paid by {payer(t.owner)})"
            entries.append(f"h{handle}=t{t.tid} {kib(t.nbytes)}{paid}")
        quota = self.memory.quota(proc.pid)
        kv_quota = "" if proc.kv_quota is None else f" of {proc.kv_quota}"
        return (f"{' '.join(entries) or 'no handles'} | pays {kib(self.memory.by_owner.get(proc.pid, 0))}"
                + ("" if quota == self.memory.capacity else f" of {kib(quota)}")
                + f", KV {self.kv.usage(proc.pid)}{kv_quota}")

    def state(self) -> list[str]:
        """One line per process in the table, then the kernel's share and the free memory."""
        lines = []
        for pid in sorted(self.procs.by_pid):
            proc = self.procs.by_pid[pid]
            parent = "attached" if pid == self.main else (f"child of p{proc.ppid}" if proc.ppid else "orphan")
            if proc.state == "exited":
                lines.append(f"p{pid} ({parent}) zombie: status {proc.status}, {proc.reason}")
            else:
                stopped = ", stopped" if pid in self.stopped else ""
                lines.append(f"p{pid} ({parent}{stopped}): {self.holdings(proc)}")
        kernel = [t for t in self.tensors.by_tid.values() if t.owner == KERNEL_PID]
        if kernel:
            lines.append("the kernel pays for " + ", ".join(f"t{t.tid} {kib(t.nbytes)}" for t in kernel))
        lines.append(f"free: cpu0 {kib(self.memory.free)} of {kib(self.memory.capacity)}, "
                     f"KV {self.kv.num_free_blocks} of {self.kv.num_blocks} blocks")
        return lines


def payer(owner: int) -> str:
    """Who pays for a tensor, in words."""
    return "the kernel" if owner == KERNEL_PID else f"p{owner}"


def plural(n: int, noun: str) -> str:
    """`n` and the noun, with an s unless n is 1."""
    return f"{n} {noun}{'' if n == 1 else 's'}"
