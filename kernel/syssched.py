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
    """A device's scheduling state."""
    return m.SchedInfo(device=dev.name, policy=dev.queue.policy.name, policies=sorted(k.policies), queued=len(dev.queue))


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
