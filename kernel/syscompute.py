"""Compute syscalls: compute (one op of the op set on tensor handles)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from llmos.syscalls import Errno
from llmos.syscalls import driver as proto
from llmos.syscalls import messages as m
from llmos.syscalls.ops import OpError, infer

from .devices import Work
from .errors import SysError
from .sysmem import created, new_tensor, not_created, tensor_ref

if TYPE_CHECKING:
    from .dispatch import CallCtx
    from .kernel import Kernel


def sys_compute(k: Kernel, c: CallCtx) -> None:
    """Check the op against the op set's rules, then run it on the inputs' device."""
    req: m.Compute = c.req
    if not req.inputs:
        raise SysError(Errno.EINVAL, "compute needs at least one input handle")
    inputs = [k.tensor(c.proc, h) for h in req.inputs]
    devices = sorted({t.device for t in inputs})
    if len(devices) > 1:
        raise SysError(Errno.EINVAL, f"inputs live on different devices ({', '.join(devices)}); copy them to one first")
    dev = k.device(devices[0])
    if req.op not in dev.spec.ops:
        raise SysError(Errno.EINVAL, f"{dev.name} does not run {req.op!r}; it runs {', '.join(dev.spec.ops)}")
    try:
        shape, dtype, params = infer(req.op, [tuple(t.shape) for t in inputs], [t.dtype for t in inputs], req.params)
    except OpError as exc:
        raise SysError(Errno.EINVAL, str(exc)) from None
    descs = [t.desc() for t in inputs]
    if req.out is not None:
        out = k.tensor(c.proc, req.out)
        if (out.device, out.shape, out.dtype) != (dev.name, list(shape), dtype):
            raise SysError(
                Errno.EINVAL,
                f"out handle {req.out} is a {out.dtype} {out.shape} tensor on {out.device}; "
                f"{req.op} gives {dtype} {list(shape)} on {dev.name}",
            )
        msg = proto.DOp(seq=dev.next_seq(), op=req.op, inputs=descs, out=out.desc(), params=params)
        work = Work(
            owner=c.proc.pid,
            msg=msg,
            done=lambda ok, frames: c.reply(tensor_ref(req.out, out, ok)),
            fail=c.fail,
            tensors=(*inputs, out),
        )
    else:
        t = new_tensor(k, dev, c.proc.pid, list(shape), dtype)  # placed already on a host-visible device
        msg = proto.DOp(seq=dev.next_seq(), op=req.op, inputs=descs, out=t.desc(), params=params,
                        new_out=dev.hostmem is None)
        work = Work(
            owner=c.proc.pid,
            msg=msg,
            done=lambda ok, frames: created(k, c, t, ok),
            fail=lambda errno, message: not_created(k, c, t, errno, message),
            tensors=(*inputs, t),
        )
    k.submit(dev, work)
