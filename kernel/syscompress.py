"""Model compression syscalls: model_quantize and model_prune, compression as memory management.

A model's weights are memory charged to a process like any tensor.
Quantizing them (int8, int4) or pruning them (magnitude, unstructured or
2:4, held as kept weights and a bitmask) is the LLM-OS way of freeing some
of it at a price in quality. The driver changes the weights in place, as one
work item on the device queue (so no generation step sees half a change),
and measures the model before and after: weight bytes, perplexity over the
caller's held-out windows, decode tokens/s (drivers/models/compress.py).
Then the kernel re-charges the model at the bytes it now holds, drops its
optimizer state (a compressed model does not train), and runs the
allocations waiting for memory that now fit.

Changing a model changes it for every process that holds it. So a process
may compress a model only while it is the model's only holder: with another
holder (a `share`d or inherited handle) the call is refused with EPERM,
whoever asks: the other holders never see their model change under them.
The kernel does not copy it instead: a copy would cost the memory that
compressing is meant to free. A holder that wants a compressed model loads
its own copy and compresses that. The check is made when the call arrives:
a handle `share`d while the change is on its way to the device is given
after it was asked for, and sees the compressed model.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import msgspec

from llmos.drivers.models.compression import DEFAULT_GROUP, PATTERNS, QUANT_BITS
from llmos.syscalls import Errno
from llmos.syscalls import driver as proto
from llmos.syscalls import messages as m

from .devices import Work
from .errors import SysError
from .sysmodel import Model, model_of

if TYPE_CHECKING:
    from .dispatch import CallCtx
    from .kernel import Kernel
    from .proc import Process

_out_decoder = msgspec.msgpack.Decoder(proto.CompressOut)


def changeable(k: Kernel, proc: Process, handle: int) -> Model:
    """The caller's model behind `handle`, if it may change it: EBADF / EIO as `model_of`; EPERM while another
    process holds it too; EINVAL if it is compressed already."""
    model = model_of(k, proc, handle)
    others = sorted(pid for pid in model.holders if pid != proc.pid)
    if others:
        raise SysError(Errno.EPERM, f"model handle {handle} is held by process{'es' * (len(others) > 1)} "
                       f"{', '.join(map(str, others))} too: changing it would change it under them; a process "
                       "may compress only a model it alone holds (load a copy of your own and compress that)")  # fmt: skip
    if model.compression:
        raise SysError(Errno.EINVAL, f"the model is {model.compression} already: load the float model to compress "
                                     "it another way")  # fmt: skip
    if len(model.devices) > 1:
        raise SysError(Errno.EINVAL, f"the model has replicas on {', '.join(model.devices)}: compress a model on one "
                                     "device (replicas would have to change together)")  # fmt: skip
    return model


def check_windows(model: Model, windows: list[list[int]]) -> None:
    """EINVAL unless every held-out window is 2..max_len + 1 ids of the model's vocabulary."""
    vocab, max_len = model.config["vocab_size"], model.config["max_len"]
    if any(not 2 <= len(w) <= max_len + 1 for w in windows):
        raise SysError(Errno.EINVAL, f"each window must hold 2..{max_len + 1} token ids")
    if any(not 0 <= t < vocab for w in windows for t in w):
        raise SysError(Errno.EINVAL, f"token ids must be in 0..{vocab - 1}")


def _submit(k: Kernel, c: CallCtx, model: Model, msg: proto.ToDriver) -> None:
    """Send the change to the model's device; when it is done, re-charge the model at what it now holds."""
    dev = k.devices[model.device]
    charged_before = model.nbytes

    def done(ok: proto.DOk, frames) -> None:
        out = _out_decoder.decode(frames[0].buffer)
        if not (model.freed or model.lost):  # (a freed or lost model's charge is gone already)
            model.param_bytes, model.compression, model.training = out.bytes_after, out.compression, False
            model.nbytes = out.bytes_after + model.kv_bytes  # the optimizer state, if any, went with the change
            dev.memory.release(model.alloc_id)
            dev.memory.charge(model.alloc_id, model.owner, model.nbytes)
            k.trace_mem("mem.free", dev, model.owner, charged_before - model.nbytes)
            k.unpark(dev)  # allocations waiting for memory that now fits go ahead
        c.reply(m.Compressed(
            compression=out.compression, layers=out.layers, sparsity=out.sparsity, bytes_before=out.bytes_before,
            bytes_after=out.bytes_after, charged_before=charged_before, charged_after=model.nbytes,
            perplexity_before=out.perplexity_before, perplexity_after=out.perplexity_after,
            tok_s_before=out.tok_s_before, tok_s_after=out.tok_s_after, device_s=ok.wall_s,
        ))  # fmt: skip

    k.submit(dev, Work(owner=c.proc.pid, msg=msg, done=done, fail=c.fail))


def sys_model_quantize(k: Kernel, c: CallCtx) -> None:
    """Quantize a model's linear layers to int8 or int4 (weights only); answer with it measured before and after."""
    req: m.ModelQuantize = c.req
    model = changeable(k, c.proc, req.model)
    if req.scheme not in QUANT_BITS:
        raise SysError(Errno.EINVAL, f"unknown scheme {req.scheme!r}: one of {', '.join(sorted(QUANT_BITS))}")
    if req.scheme == "int8" and req.group_size:
        raise SysError(Errno.EINVAL, "int8 has one scale per output channel: give no group_size (it is int4's)")
    if req.group_size < 0:
        raise SysError(Errno.EINVAL, f"group_size must be positive (0: {DEFAULT_GROUP}), not {req.group_size}")
    check_windows(model, req.windows)
    dev = k.devices[model.device]
    msg = proto.DModelQuantize(seq=dev.next_seq(), model=model.mid, scheme=req.scheme,
                               group_size=req.group_size or DEFAULT_GROUP, windows=req.windows)  # fmt: skip
    _submit(k, c, model, msg)


def sys_model_prune(k: Kernel, c: CallCtx) -> None:
    """Prune a model's linear layers by magnitude; answer with it measured before and after."""
    req: m.ModelPrune = c.req
    model = changeable(k, c.proc, req.model)
    if not (math.isfinite(req.sparsity) and 0.0 <= req.sparsity < 1.0):
        raise SysError(Errno.EINVAL, f"sparsity must be in [0, 1), not {req.sparsity}")
    if req.pattern not in PATTERNS:
        raise SysError(Errno.EINVAL, f"unknown pattern {req.pattern!r}: one of {', '.join(PATTERNS)}")
    if req.pattern == "2:4" and req.sparsity != 0.5:
        raise SysError(Errno.EINVAL, f"2:4 pruning keeps 2 of every 4 weights: sparsity 0.5, not {req.sparsity}")
    check_windows(model, req.windows)
    dev = k.devices[model.device]
    msg = proto.DModelPrune(seq=dev.next_seq(), model=model.mid, sparsity=req.sparsity, pattern=req.pattern,
                            windows=req.windows)  # fmt: skip
    _submit(k, c, model, msg)
