"""Process syscalls: attach, exit, spawn, wait, kill, getpid, ps.

Also the bookkeeping of pending waits, which the kernel's tick drives:
streaming a child's output to `wait --follow`, timeouts, and the final answer
once the child has exited and its OS process has ended.
"""

from __future__ import annotations

import codecs
import hmac
import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import psutil

from llmos.syscalls import ABI_VERSION, Errno
from llmos.syscalls import rights as r
from llmos.syscalls import messages as m

from . import sysmodel, sysrights
from .errors import SysError

if TYPE_CHECKING:
    from .dispatch import CallCtx
    from .kernel import Kernel
    from .proc import Process

READ_CHUNK = 1 << 16
FDS_PER_PROC = 3  # the kernel's open files per process: its call and heartbeat connections, its pidfd
FD_RESERVE = 64  # open files kept for the kernel itself: driver hosts, logs, tensor files, ZeroMQ


def os_user(os_pid: int) -> int:
    """The OS user (real uid) who owns the process `os_pid`; -1 if the kernel cannot see it (remote, or no pid)."""
    try:
        return psutil.Process(os_pid).uids().real if os_pid > 0 else -1
    except psutil.Error:
        return -1


def check_room(k: Kernel, user: int | None) -> None:
    """EAGAIN unless one more process fits the kernel's open files and, for `user`, its bound."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    most = (soft - FD_RESERVE) // FDS_PER_PROC
    if soft != resource.RLIM_INFINITY and len(k.procs.by_token) >= most:
        raise SysError(
            Errno.EAGAIN,
            f"the kernel runs {len(k.procs.by_token)} processes, all its open-file limit ({soft}) allows "
            f"with {FD_RESERVE} kept for itself; retry when some have exited",
        )
    bound = k.config.max_procs_per_user
    if user is not None and k.procs.per_user[user] >= bound:
        who = "processes the kernel cannot see" if user < 0 else f"user {user}"
        raise SysError(
            Errno.EAGAIN,
            f"{who} already has {bound} attached processes, the bound (max_procs_per_user = {bound}); "
            "exit some first",
        )


def sys_attach(k: Kernel, c: CallCtx) -> None:
    """Join the process table, or claim the entry the kernel made when it spawned the caller."""
    req: m.Attach = c.req
    if req.claim:
        try:
            token = bytes.fromhex(req.claim)
        except ValueError:
            raise SysError(Errno.EINVAL, "claim must be the hex token from LLMOS_CLAIM") from None
        proc = k.procs.by_token.get(token)
        if proc is None or proc.state != "starting":
            raise SysError(Errno.EPERM, "this claim is not a spawned process waiting to attach")
        proc.state = "running"
    else:
        if req.admin and not hmac.compare_digest(req.admin, k.admin_key):
            raise SysError(Errno.EPERM, "wrong admin key")
        user = None if req.admin else os_user(req.os_pid)  # the kernel's owner may always attach
        if user is not None:
            check_room(k, user)
        proc = k.procs.create(req.name, user=user)
        proc.admin = bool(req.admin)
        proc.rights = r.ALL if proc.admin else r.DEFAULT
        if req.os_pid > 0:
            proc.os_pid = req.os_pid
            k.watch.add(proc.pid, req.os_pid)  # reclaimed when it ends (kernel/watch.py)
    proc.last_seen = time.monotonic()
    k.log.info("process.attach", pid=proc.pid, name=proc.name, os_pid=proc.os_pid, t=time.monotonic())
    k.audit_event("attach", pid=proc.pid, name=proc.name, os_pid=proc.os_pid, ppid=proc.ppid, admin=proc.admin,
                  spawned=bool(req.claim), user=proc.user, rights=sorted(proc.rights))  # fmt: skip
    c.reply(m.Attached(pid=proc.pid, token=proc.token, lease_s=k.config.lease_s, abi=ABI_VERSION, kernel=k.config.name,
                       max_bulk_bytes=k.config.max_bulk_bytes))  # fmt: skip


def sys_exit(k: Kernel, c: CallCtx) -> None:
    """Leave: answer, then reclaim everything the caller holds."""
    c.reply(m.Done())
    k.reclaim(c.proc, c.req.code, f"exit({c.req.code})")


def sys_spawn(k: Kernel, c: CallCtx) -> None:
    """Start a registered program as a child OS process that attaches with a pre-issued token."""
    req: m.Spawn = c.req
    entry = k.programs.get(req.program)
    if entry is None:
        raise SysError(Errno.EINVAL, f"no program {req.program!r}; registered: {', '.join(sorted(k.programs)) or 'none'}")
    quotas, kv_quota = child_quotas(k, c.proc, req)
    rights = sysrights.child_rights(c.proc, req.rights)
    if req.models:
        sysrights.need(c.proc, "share", "spawn with models")
    for handle in req.models:
        sysmodel.model_of(k, c.proc, handle)  # EBADF/EIO before anything starts
    live = sum(1 for p in k.procs.children(c.proc.pid) if p.state != "exited")
    if live >= k.config.max_children:
        raise SysError(
            Errno.EAGAIN, f"process {c.proc.pid} has {live} live children, the most allowed; wait for one to end"
        )
    check_room(k, None)
    child = k.procs.create(req.program, ppid=c.proc.pid, state="starting")
    child.kv_quota = kv_quota
    child.rights = rights
    for dev, nbytes in quotas.items():
        dev.memory.set_quota(child.pid, nbytes)
    child.log = os.path.join(k.dir, "procs", f"{child.pid}.log")
    env = dict(os.environ, LLMOS_KERNEL=k.address, LLMOS_CLAIM=child.token.hex(), LLMOS_PROGRAM=req.program)
    env.pop("LLMOS_CURVE", None)  # it attaches through the kernel's ipc socket, which is plain
    try:
        with open(child.log, "wb") as out:
            child.popen = subprocess.Popen(
                [sys.executable, "-m", "llmos.userland.launch", entry.target, *req.args],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
    except OSError as exc:
        k.procs.revoke(child, "never started")
        k.procs.remove(child)
        raise SysError(Errno.EIO, f"could not start {req.program}: {exc}") from exc
    child.os_pid = child.popen.pid
    k.watch.add(child.pid, child.os_pid)
    for handle in set(req.models):
        sysmodel.share_model(k, c.proc, handle, child, same_number=True)
    k.log.info("process.spawn", pid=child.pid, name=child.name, ppid=c.proc.pid, os_pid=child.os_pid, t=time.monotonic())
    k.audit_event("spawn", pid=c.proc.pid, child=child.pid, program=req.program, args=list(req.args),
                  rights=sorted(rights), quotas={dev.name: n for dev, n in quotas.items()}, kv_quota=kv_quota,
                  models=sorted(set(req.models)))  # fmt: skip
    c.reply(m.Spawned(pid=child.pid, os_pid=child.os_pid, log=child.log))


def child_quotas(k: Kernel, parent: Process, req: m.Spawn) -> tuple[dict, int | None]:
    """A child's quotas, nested in its parent's as cgroups nest: at most the parent's, and the parent's by default.

    Returns (device -> bytes, KV blocks or None); EINVAL for a negative quota, EPERM for one above the parent's.
    """
    asked = {k.device(name): nbytes for name, nbytes in req.quotas.items()}
    if any(nbytes < 0 for nbytes in asked.values()) or (req.kv_quota is not None and req.kv_quota < 0):
        raise SysError(Errno.EINVAL, "quotas cannot be negative")
    quotas = {}
    for dev in k.devices.values():
        if dev.memory is None:
            continue
        mine = dev.memory.quota(parent.pid)
        nbytes = asked.get(dev, mine)
        if nbytes > mine:
            raise SysError(Errno.EPERM, f"a child's quota on {dev.name} ({nbytes}) cannot exceed its parent's ({mine})")
        quotas[dev] = nbytes
    mine = parent.kv_quota if parent.kv_quota is not None else k.config.kv_quota
    kv_quota = mine if req.kv_quota is None else req.kv_quota
    if mine is not None and kv_quota > mine:
        raise SysError(Errno.EPERM, f"a child's KV quota ({kv_quota} blocks) cannot exceed its parent's ({mine})")
    return quotas, kv_quota


@dataclass(eq=False)
class Waiter:
    """A pending wait call."""

    ctx: CallCtx
    pid: int
    deadline: float | None
    follow: bool
    offset: int = 0
    decoder: codecs.IncrementalDecoder = field(default_factory=lambda: codecs.getincrementaldecoder("utf-8")("replace"))


def sys_wait(k: Kernel, c: CallCtx) -> None:
    """Wait for a child to end; with follow, stream its output first."""
    req: m.Wait = c.req
    child = k.procs.by_pid.get(req.pid)
    if child is None:
        raise SysError(Errno.ESRCH, f"no process {req.pid} (it may have been waited for already)")
    if child.ppid != c.proc.pid:
        raise SysError(Errno.ECHILD, f"process {req.pid} is not a child of process {c.proc.pid}")
    if req.timeout_s is not None and not 0 <= req.timeout_s < float("inf"):
        raise SysError(Errno.EINVAL, f"timeout_s must be a finite number of seconds >= 0, not {req.timeout_s}")
    deadline = None if req.timeout_s is None else time.monotonic() + req.timeout_s
    k.waiters.append(Waiter(c, req.pid, deadline, req.follow))
    finish_waits(k)


def _stream(w: Waiter, proc: Process, final: bool = False) -> None:
    if not w.follow or not proc.log:
        return
    try:
        with open(proc.log, "rb") as f:
            f.seek(w.offset)
            data = f.read(READ_CHUNK if not final else -1)
    except FileNotFoundError:
        return
    w.offset += len(data)
    text = w.decoder.decode(data, final=final)
    if text:
        w.ctx.partial(m.Output(data=text))


def finish_waits(k: Kernel) -> None:
    """Answer every wait whose child has exited and whose OS process has ended."""
    for w in list(k.waiters):
        waiter = w.ctx.proc
        child = k.procs.by_pid.get(w.pid)
        if waiter.state == "exited":
            k.waiters.remove(w)
        elif child is not None and child.state == "exited" and (child.popen is None or child.popen.poll() is not None):
            _stream(w, child, final=True)
            status, reason = child.status, child.reason
            if child.popen is not None and child.popen.returncode != status:  # the OS process has the last word
                status, reason = child.popen.returncode, os_exit_reason(child.popen.returncode)
            w.ctx.reply(m.Exited(pid=child.pid, status=status, reason=reason))
            k.waiters.remove(w)
            k.procs.remove(child)


def os_exit_reason(returncode: int) -> str:
    """How an OS process ended, in words."""
    return f"exited with status {returncode}" if returncode >= 0 else f"killed by signal {-returncode}"


def tick_waits(k: Kernel, now: float) -> None:
    """Stream followed output and time out waits past their deadline."""
    for w in list(k.waiters):
        child = k.procs.by_pid.get(w.pid)
        if child is not None:
            _stream(w, child)
        if w.deadline is not None and now >= w.deadline:
            k.waiters.remove(w)
            w.ctx.fail(Errno.ETIMEDOUT, f"process {w.pid} is still running")


def cancel_waiters(k: Kernel, errno: Errno, message: str) -> None:
    """Fail every pending wait (the kernel is stopping)."""
    for w in k.waiters:
        w.ctx.fail(errno, message)
    k.waiters.clear()


def sys_kill(k: Kernel, c: CallCtx) -> None:
    """End the caller itself or one of its children: signal the OS process, reclaim now."""
    req: m.Kill = c.req
    target = k.procs.by_pid.get(req.pid)
    if target is None or target.state == "exited":
        raise SysError(Errno.ESRCH, f"no running process {req.pid}")
    if target.pid != c.proc.pid and target.ppid != c.proc.pid and not r.holds(c.proc.rights, "kill_any"):
        raise SysError(Errno.EPERM, f"process {c.proc.pid} may only kill itself and its children, not {req.pid} "
                                    "(that takes the right 'kill_any')")  # fmt: skip
    if not 1 <= req.signal <= 64:
        raise SysError(Errno.EINVAL, f"signal must be 1..64, not {req.signal}")
    if target.popen is not None and target.popen.poll() is None:
        try:
            os.kill(target.popen.pid, req.signal)
        except ProcessLookupError:
            pass
    k.audit_event("kill", pid=c.proc.pid, target=target.pid, signal=req.signal)
    c.reply(m.Done())
    k.reclaim(target, -req.signal, f"killed by process {c.proc.pid} with signal {req.signal}")


def sys_getpid(k: Kernel, c: CallCtx) -> None:
    """The caller's pid, parent and name."""
    c.reply(m.PidInfo(pid=c.proc.pid, ppid=c.proc.ppid, name=c.proc.name, rights=sorted(c.proc.rights)))


def proc_info(k: Kernel, p: Process) -> m.ProcInfo:
    """One row of ps."""
    mem = sum(d.memory.by_owner.get(p.pid, 0) for d in k.devices.values() if d.memory is not None)
    return m.ProcInfo(
        pid=p.pid,
        ppid=p.ppid,
        name=p.name,
        state=p.state,
        os_pid=p.os_pid,
        handles=len(p.handles) + len(p.kvseqs) + len(p.models),  # tensors, KV sequences and models
        mem_bytes=mem,
        syscalls=p.syscalls,
        started=p.started,
        tokens=p.tokens,
        rights=sorted(p.rights),
    )


def sys_ps(k: Kernel, c: CallCtx) -> None:
    """The process table."""
    c.reply(m.ProcList(procs=[proc_info(k, p) for p in k.procs.by_pid.values()]))


def sys_prog_list(k: Kernel, c: CallCtx) -> None:
    """The programs `spawn` can start: the kernel's own plugins' (not the caller's environment's)."""
    entries = sorted(k.programs.values(), key=lambda e: e.name)
    c.reply(m.Programs(programs=[m.ProgramInfo(name=e.name, help=e.help, interactive=e.interactive) for e in entries]))
