"""Miscellaneous syscalls: null, yield, stat, trace_read."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

from llmos.syscalls import ABI_VERSION, Errno, Sys
from llmos.syscalls import messages as m

from .devices import ABSENT
from .errors import SysError

if TYPE_CHECKING:
    from .dispatch import CallCtx
    from .kernel import Kernel

DONE = m.Done()


def sys_null(k: Kernel, c: CallCtx) -> None:
    """Answer at once: the cost of the syscall path itself."""
    c.reply(DONE)


def sys_yield(k: Kernel, c: CallCtx) -> None:
    """Move the caller's queued device work behind everyone else's."""
    now = time.monotonic()
    moved = sum(dev.queue.requeue_to_tail(c.proc.pid, now) for dev in k.devices.values())
    c.reply(m.Yielded(requeued=moved))


def sys_stat(k: Kernel, c: CallCtx) -> None:
    """Kernel-wide figures."""
    c.reply(
        m.KernelStat(
            name=k.config.name,
            abi=ABI_VERSION,
            os_pid=os.getpid(),
            uptime_s=time.monotonic() - k.started,
            syscalls=sum(k.counts.values()),
            errors=k.errors,
            by_syscall={Sys(nr).name.lower(): n for nr, n in sorted(k.counts.items())},
            processes=len(k.procs.live()),
            devices=sum(1 for d in k.devices.values() if d.state != ABSENT),
        )
    )


def sys_trace_read(k: Kernel, c: CallCtx) -> None:
    """The recent timeline events from number `since` on (kernel/tracering.py)."""
    if c.req.since < 0:
        raise SysError(Errno.EINVAL, f"since must be 0 or more, not {c.req.since}")
    events, lost = k.recent.since(c.req.since)
    rows = [m.TraceEvent(seq=seq, t=t, event=event, fields=fields) for seq, t, event, fields in events]
    c.reply(m.TraceLog(events=rows, next=k.recent.next, now=time.monotonic(), lost=lost))
