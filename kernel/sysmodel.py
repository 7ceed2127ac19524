"""Model syscalls: model_load, model_free, generate, logprobs, model_save, train_step.

A model lives in its device's driver host (weights and a paged KV storage);
the kernel keeps its record, charges its bytes to the loading process (sized
from the config by the architecture's torch-free size function and admitted
before the driver builds anything), and
keeps the books of its KV blocks with a private `KVCache` of the memory
service. `generate` checks the request here and hands it to the model's
`Batcher` (kernel/batcher.py), which batches the generate calls of every
process on the model step by step, preempting when the KV blocks run out.
Text is cut into safe pieces and at stop strings by `StopStream`; it and the
tokenizer need no torch (drivers/models/decoding.py), so the kernel process
stays torch-free.

`train_step` is one `Work` item of the caller's on the device queue, so the
device's scheduling policy places training between generation steps like
any other work. The first step grows the model's memory charge by its
optimizer state (gradients and AdamW's two moments: three times the weights),
which then stays on the device with the model.
"""

from __future__ import annotations

import importlib
import json
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import msgspec

from llmos.services.memory.kv import KVCache
from llmos.syscalls import Errno
from llmos.syscalls import driver as proto
from llmos.syscalls import messages as m

from . import plugins
from .batcher import Batcher, Generation
from .devices import Device, Work
from .errors import SysError
from .proc import KERNEL_PID
from .sysmem import admit, check_dtype

if TYPE_CHECKING:
    from .dispatch import CallCtx
    from .kernel import Kernel
    from .proc import Process

_desc_decoder = msgspec.msgpack.Decoder(proto.ModelDesc)
_floats_decoder = msgspec.msgpack.Decoder(list[float])
_train_decoder = msgspec.msgpack.Decoder(proto.TrainOut)

OPTIMIZER_COPIES = 3
"""Training memory per weight byte: its gradient and AdamW's two moment estimates."""


@dataclass(eq=False)
class Model:
    """A model loaded on a device: who holds it, what it is, its bytes and its KV books."""

    mid: int
    device: str
    owner: int
    arch: str
    config: dict
    params: int
    param_bytes: int
    nbytes: int  # charged: weights, KV storage, and optimizer state once trained
    kv: KVCache
    kv_bytes: int = 0
    step: int = 0  # optimizer steps taken
    training: bool = False  # its optimizer state is charged (a train_step was sent)
    lost: str = ""  # why the model is gone (its device went offline), else ""
    freed: bool = False
    holders: Counter = field(default_factory=Counter)  # pid -> handles open on it (share gives more)
    batcher: Batcher | None = None  # its continuous-batching loop (kernel/batcher.py)

    @property
    def alloc_id(self) -> int:
        """The id its bytes are charged under in the device's memory service (negative: never a tensor id)."""
        return -self.mid


def storage_path(k: Kernel, path: str) -> str:
    """The absolute path of `path` under the kernel's storage directory.

    EINVAL if empty or holding a NUL byte, ENAMETOOLONG past the file system's
    limits (checked before any call walks it), EPERM if it escapes the directory.
    """
    if not path or "\0" in path:
        raise SysError(Errno.EINVAL, f"a checkpoint path must be non-empty and hold no NUL byte, not {path[:80]!r}")
    root = os.path.realpath(k.storage)
    joined = os.path.join(root, path)
    name_max, path_max = os.pathconf(root, "PC_NAME_MAX"), os.pathconf(root, "PC_PATH_MAX")
    if len(os.fsencode(joined)) >= path_max or any(len(os.fsencode(n)) > name_max for n in path.split("/")):
        raise SysError(Errno.ENAMETOOLONG, f"checkpoint path {path[:80]!r}... is longer than the file system allows "
                       f"({path_max} bytes in all, {name_max} per name)")  # fmt: skip
    full = os.path.realpath(joined)
    if os.path.commonpath([root, full]) != root:
        raise SysError(Errno.EPERM, f"{path!r} is outside the kernel's storage directory")
    return full


def make_parents(k: Kernel, full: str) -> None:
    """Create the folders above `full` under the storage directory, one at a time (EINVAL if one is a file)."""
    root = os.path.realpath(k.storage)
    here = root
    for name in os.path.relpath(os.path.dirname(full), root).split(os.sep):
        here = os.path.join(here, name)
        if name != "." and not os.path.isdir(here):
            try:
                os.mkdir(here, 0o700)
            except OSError as exc:
                raise SysError(Errno.EINVAL, f"cannot create {os.path.relpath(here, root)!r}: {exc.strerror}") from None


def model_info(handle: int, model: Model) -> m.ModelInfo:
    """The reply that describes a model by the caller's handle."""
    return m.ModelInfo(
        model=handle, device=model.device, arch=model.arch, config=model.config, params=model.params,
        bytes=model.nbytes, step=model.step,
    )  # fmt: skip


def model_of(k: Kernel, proc: Process, handle: int) -> Model:
    """The live model behind one of the caller's handles; else EBADF or EIO."""
    mid = proc.models.get(handle)
    if mid is None:
        raise SysError(Errno.EBADF, f"handle {handle} is not a model open in process {proc.pid}")
    model = k.models[mid]
    if model.lost:
        raise SysError(Errno.EIO, f"handle {handle}: model lost, {model.lost}")
    return model


def _drop(k: Kernel, model: Model) -> None:
    """Forget a model: give its memory back and free it on its device, in queue order."""
    model.freed = True
    del k.models[model.mid]
    if model.lost:
        return
    dev = k.devices[model.device]
    dev.memory.release(model.alloc_id)
    k.trace_mem("mem.free", dev, model.owner, model.nbytes)
    k.post(dev, proto.DModelFree(seq=dev.next_seq(), model=model.mid))
    k.unpark(dev)
    model.batcher.pump()  # generations in progress fail now


def release_model(k: Kernel, pid: int, model: Model) -> None:
    """One handle on `model` was closed by `pid`: free it when nobody holds it; when its loader
    lets go while others hold it, the kernel takes the charge (pid 0), as for tensors."""
    model.holders[pid] -= 1
    if model.holders[pid] <= 0:
        del model.holders[pid]
    if not model.holders:
        return _drop(k, model)
    if model.owner == pid and pid not in model.holders:
        if not model.lost:
            k.devices[model.device].memory.transfer(model.alloc_id, KERNEL_PID)
        model.owner = KERNEL_PID


def share_model(k: Kernel, proc: Process, handle: int, target: Process, same_number: bool = False) -> int | None:
    """Give `target` a handle on the caller's model `handle`; None if `handle` is not a model.

    With `same_number` (a spawned child inheriting it) the handle keeps its number in `target`'s table.
    """
    mid = proc.models.get(handle)
    if mid is None:
        return None
    model = model_of(k, proc, handle)
    if same_number:
        theirs = handle
        target.next_handle = max(target.next_handle, handle + 1)
    else:
        theirs = target.new_handle()
    target.models[theirs] = mid
    model.holders[target.pid] += 1
    return theirs


def free_models(k: Kernel, proc: Process) -> None:
    """A process is gone: close every model handle it held (a model nobody holds is freed, with its KV)."""
    for mid in proc.models.values():
        release_model(k, proc.pid, k.models[mid])
    proc.models.clear()


def lose_models(k: Kernel, dev: Device, message: str) -> None:
    """A device went offline: its models are lost (their handles answer EIO until freed)."""
    for model in k.models.values():
        if model.device == dev.name:
            model.lost = message
            model.batcher.pump()  # generations in progress fail now


def sys_model_load(k: Kernel, c: CallCtx) -> None:
    """Build a model on a device (from a checkpoint under storage, or fresh); charge it to the caller."""
    req: m.ModelLoad = c.req
    dev = k.device(req.device)
    archs = plugins.models(k.pm)
    if req.arch not in archs:
        raise SysError(Errno.EINVAL, f"unknown architecture {req.arch!r}; known: {', '.join(sorted(archs)) or 'none'}")
    check_dtype(dev, req.dtype)
    if req.kv_blocks < 1 or req.block_size < 1:
        raise SysError(Errno.EINVAL, f"kv_blocks and block_size must be at least 1 ({req.kv_blocks}, {req.block_size})")
    path = storage_path(k, req.checkpoint) if req.checkpoint else ""
    if path and not os.path.exists(path):
        raise SysError(Errno.ENOENT, f"no checkpoint {req.checkpoint!r} in the storage directory")
    if path and not os.path.isfile(path):
        raise SysError(Errno.EINVAL, f"checkpoint {req.checkpoint!r} is not a file")
    size = _size(k, req, path)
    mid = k.next_model
    k.next_model += 1
    admit(dev, c.proc.pid, size)  # before anything is built: ENOMEM / EAGAIN cost the driver nothing
    dev.memory.charge(-mid, c.proc.pid, size)  # reserved under the model's alloc_id while the driver builds it
    k.trace_mem("mem.alloc", dev, c.proc.pid, size)
    msg = proto.DModelLoad(
        seq=dev.next_seq(), model=mid, arch=req.arch, target=archs[req.arch], kv_blocks=req.kv_blocks,
        block_size=req.block_size, config=dict(req.config), dtype=req.dtype, checkpoint=path, seed=req.seed,
    )  # fmt: skip

    def unreserve() -> None:
        if dev.memory is not None:
            dev.memory.release(-mid)
            k.trace_mem("mem.free", dev, c.proc.pid, size)
            k.unpark(dev)

    def not_loaded(errno: Errno, message: str) -> None:
        unreserve()
        c.fail(errno, message)

    def loaded(ok: proto.DOk, frames) -> None:
        desc = _desc_decoder.decode(frames[0].buffer)
        if c.proc.state == "exited" or desc.param_bytes + desc.kv_bytes != size:
            unreserve()  # the caller left, or the size function disagrees with the driver: drop it there
            k.post(dev, proto.DModelFree(seq=dev.next_seq(), model=mid))
            if c.proc.state != "exited":
                built = desc.param_bytes + desc.kv_bytes
                k.log.error("model.size_mismatch", arch=req.arch, computed=size, built=built)
                c.fail(Errno.EIO, f"{req.arch}'s size function gave {size} bytes; the driver built {built}")
            return
        kv = KVCache(req.kv_blocks, req.block_size, default_quota=k.config.kv_quota, device=dev.name, layout=f"model{mid}")
        model = Model(
            mid, dev.name, c.proc.pid, req.arch, desc.config, desc.params, desc.param_bytes, size, kv,
            kv_bytes=desc.kv_bytes, step=desc.step,
        )  # fmt: skip
        model.batcher = Batcher(k, model, k.new_policy(dev.queue.policy.name))  # the device's policy
        model.holders[c.proc.pid] = 1
        k.models[mid] = model
        handle = c.proc.new_handle()
        c.proc.models[handle] = mid
        c.reply(model_info(handle, model))

    k.submit(dev, Work(owner=c.proc.pid, msg=msg, done=loaded, fail=not_loaded))


def _size(k: Kernel, req: m.ModelLoad, path: str) -> int:
    """The bytes a model will take (weights and KV storage), from its config or its checkpoint's, built or not."""
    from llmos.drivers.models.safetensors_header import read_metadata

    target = plugins.model_sizes(k.pm).get(req.arch)
    if target is None:
        raise SysError(Errno.EINVAL, f"architecture {req.arch!r} names no size function (llmos_model_sizes), "
                                     "so its memory cannot be admitted before it is built")  # fmt: skip
    config = dict(req.config)
    if path:
        try:
            config = json.loads(read_metadata(path)["config"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SysError(Errno.EINVAL, f"{req.checkpoint!r} is not an llmos checkpoint: {exc}") from None
    module, _, name = target.partition(":")
    try:
        desc = getattr(importlib.import_module(module), name)(config, req.dtype, req.kv_blocks, req.block_size)
    except (ValueError, TypeError) as exc:
        raise SysError(Errno.EINVAL, f"bad {req.arch} config: {exc}") from None
    return desc.param_bytes + desc.kv_bytes


def sys_model_free(k: Kernel, c: CallCtx) -> None:
    """Close a model handle: free the model, its KV, and its memory (a lost model can still be closed)."""
    mid = c.proc.models.pop(c.req.model, None)
    if mid is None:
        raise SysError(Errno.EBADF, f"handle {c.req.model} is not a model open in process {c.proc.pid}")
    release_model(k, c.proc.pid, k.models[mid])
    c.reply(m.Done())


def sys_generate(k: Kernel, c: CallCtx) -> None:
    """Generate from a prompt, one token per batched device step, streaming text as PARTIAL replies."""
    from llmos.drivers.models.decoding import SamplingParams, StopStream
    from llmos.drivers.models.tokenizer import ByteTokenizer

    req: m.Generate = c.req
    model = model_of(k, c.proc, req.model)
    if bool(req.prompt) == bool(req.tokens):
        raise SysError(Errno.EINVAL, "give a prompt (text) or tokens (ids), one of them")
    tok = ByteTokenizer()
    prompt = tok.encode(req.prompt) if req.prompt else list(req.tokens)
    vocab, max_len = model.config["vocab_size"], model.config["max_len"]
    if any(not 0 <= t < vocab for t in prompt):
        raise SysError(Errno.EINVAL, f"token ids must be in 0..{vocab - 1}")
    if len(prompt) >= max_len:
        raise SysError(Errno.EINVAL, f"a prompt of {len(prompt)} tokens leaves no room in max_len {max_len}")
    if req.max_tokens < 1:
        raise SysError(Errno.EINVAL, f"max_tokens must be at least 1, not {req.max_tokens}")
    try:
        SamplingParams(req.temperature, req.top_k, req.top_p, req.seed)
    except ValueError as exc:
        raise SysError(Errno.EINVAL, str(exc)) from None
    room = max_len - len(prompt) + 1  # the last token is never fed back
    max_tokens = min(req.max_tokens, room)
    need = model.kv.blocks_for(len(prompt) + max_tokens - 1)
    if need > min(model.kv.num_blocks, model.kv.quota(c.proc.pid) or model.kv.num_blocks):
        raise SysError(Errno.ENOMEM, f"{need} KV blocks needed; the model's pool can never give {c.proc.pid} that many")
    rid = k.next_kvseq
    k.next_kvseq += 1
    limit = "max_len" if room < req.max_tokens else "length"
    model.batcher.add(Generation(c, rid, prompt, max_tokens, StopStream(req.stop, tok), limit=limit))


def sys_logprobs(k: Kernel, c: CallCtx) -> None:
    """Log-probability of each token given the ones before it (one forward on the device)."""
    model = model_of(k, c.proc, c.req.model)
    vocab, max_len = model.config["vocab_size"], model.config["max_len"]
    bad = next((t for t in c.req.tokens if not 0 <= t < vocab), None)
    if bad is not None:
        raise SysError(Errno.EINVAL, f"token id {bad} is out of range: the model's vocabulary has {vocab} tokens (0..{vocab - 1})")
    if len(c.req.tokens) > max_len + 1:
        raise SysError(Errno.EINVAL, f"{len(c.req.tokens)} tokens are more than max_len {max_len} + 1")
    dev = k.devices[model.device]
    msg = proto.DLogProbs(seq=dev.next_seq(), model=model.mid, tokens=list(c.req.tokens))

    def done(ok: proto.DOk, frames) -> None:
        c.reply(m.TokenLogProbs(logprobs=_floats_decoder.decode(frames[0].buffer)))

    k.submit(dev, Work(owner=c.proc.pid, msg=msg, done=done, fail=c.fail))


def sys_model_save(k: Kernel, c: CallCtx) -> None:
    """Write the model as a safetensors checkpoint under the storage directory."""
    model = model_of(k, c.proc, c.req.model)
    path = storage_path(k, c.req.path)
    make_parents(k, path)
    dev = k.devices[model.device]
    msg = proto.DModelSave(seq=dev.next_seq(), model=model.mid, path=path)
    k.submit(dev, Work(owner=c.proc.pid, msg=msg, done=lambda ok, frames: c.reply(m.Done()), fail=c.fail))


def _check_batch(model: Model, req: m.TrainStep) -> None:
    """EINVAL unless the batch is rectangular token windows the model can read, with sane settings."""
    if not req.tokens:
        raise SysError(Errno.EINVAL, "an empty training batch")
    width = len(req.tokens[0])
    if any(len(row) != width for row in req.tokens):
        raise SysError(Errno.EINVAL, "every window of a training batch must have the same length")
    if not 2 <= width <= model.config["max_len"] + 1:
        raise SysError(Errno.EINVAL, f"windows must hold 2..{model.config['max_len'] + 1} tokens, not {width}")
    vocab = model.config["vocab_size"]
    if any(not 0 <= t < vocab for row in req.tokens for t in row):
        raise SysError(Errno.EINVAL, f"token ids must be in 0..{vocab - 1}")
    if not (math.isfinite(req.lr) and req.lr > 0):
        raise SysError(Errno.EINVAL, f"lr must be a positive number, not {req.lr}")
    if not (math.isfinite(req.weight_decay) and req.weight_decay >= 0 and math.isfinite(req.clip) and req.clip >= 0):
        raise SysError(Errno.EINVAL, "weight_decay and clip must be numbers >= 0")


def _charge_optimizer(k: Kernel, model: Model, pid: int) -> None:
    """Before the first training step: grow the model's charge by its optimizer state (ENOMEM/EAGAIN if it cannot).

    The model's owner pays; a model the kernel holds (its loader left) is taken over, whole, by `pid`,
    who asked to train it.
    """
    dev = k.devices[model.device]
    extra = OPTIMIZER_COPIES * model.param_bytes
    payer = pid if model.owner == KERNEL_PID else model.owner
    admit(dev, payer, extra if payer == model.owner else model.nbytes + extra)
    dev.memory.release(model.alloc_id)
    dev.memory.charge(model.alloc_id, payer, model.nbytes + extra)
    model.owner = payer
    model.nbytes += extra
    model.training = True
    k.trace_mem("mem.alloc", dev, payer, extra)


def sys_train_step(k: Kernel, c: CallCtx) -> None:
    """One optimizer step of the model on the caller's batch: one work item on the device queue."""
    req: m.TrainStep = c.req
    model = model_of(k, c.proc, req.model)
    _check_batch(model, req)
    if not model.training:
        _charge_optimizer(k, model, c.proc.pid)
    dev = k.devices[model.device]
    msg = proto.DTrainStep(
        seq=dev.next_seq(), model=model.mid, tokens=req.tokens, lr=req.lr, weight_decay=req.weight_decay, clip=req.clip
    )

    def done(ok: proto.DOk, frames) -> None:
        out = _train_decoder.decode(frames[0].buffer)
        model.step = out.step
        c.reply(m.TrainResult(loss=out.loss, grad_norm=out.grad_norm, step=out.step, device_s=ok.wall_s))

    k.submit(dev, Work(owner=c.proc.pid, msg=msg, done=done, fail=c.fail))
