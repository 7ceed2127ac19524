"""Scheduling syscalls: sched_get, sched_set."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from llmos.syscalls import Errno
from llmos.syscalls import messages as m

from .devices import Device
from .errors import SysError

if TYPE_CHECKING:
    from .dispatch import CallCtx
    from .kernel import Kernel


def sched_info(k: Kernel, dev: Device) -> m.SchedInfo:
    """A device's scheduling state, with who waits in what order."""
    return m.SchedInfo(
        device=dev.name, policy=dev.queue.policy.name, policies=sorted(k.policies), queued=len(dev.queue),
        queue=queue_entries(k, dev),
    )  # fmt: skip


def queue_entries(k: Kernel, dev: Device) -> list[m.QueueEntry]:
    """The device's work queue in its policy's order, then each of its models' sequences in their batcher's order."""
    rows = []
    for owner, items in dev.queue.order():
        head = items[0]
        work = "copy" if head.local is not None else head.msg.__struct_config__.tag
        rows.append(m.QueueEntry(pid=owner, work=work, items=len(items)))
    for model in k.models.values():
        if model.device != dev.name or model.lost or model.batcher is None:
            continue
        sched = model.batcher.sched
        for seq in sorted(sched.sequences(), key=sched.policy.rank):
            work = "train" if seq.is_training else "generate"
            rows.append(m.QueueEntry(pid=seq.pid, work=work, model=model.mid, state=seq.state.value))
    return rows


def sys_sched_get(k: Kernel, c: CallCtx) -> None:
    """The device's policy."""
    c.reply(sched_info(k, k.device(c.req.device, starting=True)))


def sys_sched_set(k: Kernel, c: CallCtx) -> None:
    """Switch the device's policy (its work queue and its models' batching); queued work moves over in order."""
    dev = k.device(c.req.device, starting=True)
    try:
        policy = k.new_policy(c.req.policy)
    except ValueError as exc:
        raise SysError(Errno.EINVAL, str(exc)) from None
    dev.queue.set_policy(policy, time.monotonic())
    for model in k.models.values():  # generate calls on the device's models follow the same policy
        if model.device == dev.name:
            model.batcher.set_policy(k.new_policy(policy.name))
    k.log.info("sched.policy", device=dev.name, policy=policy.name, pid=c.proc.pid)
    k.audit_event("sched_set", pid=c.proc.pid, device=dev.name, policy=policy.name)
    c.reply(sched_info(k, dev))
