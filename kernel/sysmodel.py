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

A model loaded with `devices` is replicated: one replica per device, all
loaded by one `Gang` (kernel/gang.py) and charged on every device; the
first serves generate, logprobs and model_save, and kernel/replicas.py
trains them data parallel and keeps the model going when one is lost.
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
from llmos.syscalls.driver import OPTIMIZER_COPIES
from llmos.syscalls import messages as m
from llmos.syscalls.plugin import ModelFolder, Tokenizer

from . import plugins, replicas
from .batcher import Batcher, Generation
from .devices import Device, Work
from .errors import SysError
from .gang import Answer, Gang
from .proc import KERNEL_PID
from .syskv import apply_kv_quota
from .sysmem import admit, check_dtype

if TYPE_CHECKING:
    from .dispatch import CallCtx
    from .kernel import Kernel
    from .proc import Process

_desc_decoder = msgspec.msgpack.Decoder(proto.ModelDesc)
_digest_decoder = msgspec.msgpack.Decoder(str)
_floats_decoder = msgspec.msgpack.Decoder(list[float])
_train_decoder = msgspec.msgpack.Decoder(proto.TrainOut)


@dataclass(eq=False)
class Model:
    """A model loaded on a device, or replicated on several: who holds it, what it is, its bytes and its KV books.

    `devices` lists its replicas' devices in rank order (one for a plain
    model); a replica whose device goes offline leaves the list. The first
    serves generate, logprobs and model_save, with the KV books `kv`.
    """

    mid: int
    devices: list[str]
    owner: int
    arch: str
    config: dict
    params: int
    param_bytes: int
    nbytes: int  # charged on each of its devices: weights, KV storage, and optimizer state once trained
    kv: KVCache | None  # the books of the first replica's KV storage (`new_books`)
    kv_bytes: int = 0
    step: int = 0  # optimizer steps taken
    training: bool = False  # its optimizer state is charged (a train_step was sent)
    lost: str = ""  # why the model is gone (its device went offline), else ""
    freed: bool = False
    dtype: str = "float32"
    folder: str = ""  # the Hugging Face-format folder it came from, or ""
    tokenizer: Tokenizer | None = None  # from the llmos_tokenizer hook; None: token ids only
    holders: Counter = field(default_factory=Counter)  # pid -> handles open on it (share gives more)
    batcher: Batcher | None = None  # its continuous-batching loop (kernel/batcher.py)
    cache: bool = True  # its generate calls share prompt KV blocks (prefix caching)
    preempt: str = "recompute"  # how a generate call gives up its KV blocks: "recompute" or "swap"
    compression: str = ""  # what model_quantize / model_prune made of its weights (syscompress.py), or ""
    kv_blocks: int = 0  # its KV pool, on each replica: blocks of `block_size` tokens
    block_size: int = 16
    swap_blocks: int = 0  # its KV's host swap pool, in blocks
    group: tuple[str, ...] = ()  # replicated: the devices its process group was formed over (() none, or broken)
    groups: int = 0  # process groups formed so far (each under its own store prefix)

    @property
    def device(self) -> str:
        """The device of its first replica, which serves generate, logprobs and model_save."""
        return self.devices[0]

    @property
    def alloc_id(self) -> int:
        """The id its bytes are charged under in the device's memory service (negative: never a tensor id)."""
        return -self.mid


def resolve_under(root: str, path: str, where: str) -> str:
    """The absolute path of `path` under the directory `root` (called `where` in errors).

    EINVAL if empty or holding a NUL byte, ENAMETOOLONG past the file system's
    limits (checked before any call walks it), EPERM if it escapes the directory.
    """
    if not path or "\0" in path:
        raise SysError(Errno.EINVAL, f"a path must be non-empty and hold no NUL byte, not {path[:80]!r}")
    root = os.path.realpath(root)
    joined = os.path.join(root, path)
    name_max, path_max = os.pathconf(root, "PC_NAME_MAX"), os.pathconf(root, "PC_PATH_MAX")
    if len(os.fsencode(joined)) >= path_max or any(len(os.fsencode(n)) > name_max for n in path.split("/")):
        raise SysError(Errno.ENAMETOOLONG, f"path {path[:80]!r}... is longer than the file system allows "
                       f"({path_max} bytes in all, {name_max} per name)")  # fmt: skip
    full = os.path.realpath(joined)
    if os.path.commonpath([root, full]) != root:
        raise SysError(Errno.EPERM, f"{path!r} is outside the kernel's {where}")
    return full


def storage_path(k: Kernel, path: str) -> str:
    """The absolute path of `path` under the kernel's storage directory (see `resolve_under`)."""
    return resolve_under(k.storage, path, "storage directory")


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
    tok = model.tokenizer
    text = {} if tok is None else {
        "tokenizer": tok.name, "eos": sorted(tok.eos_ids), "chat_template": tok.chat_template,
        "bos_token": tok.bos_token, "eos_token": tok.eos_token,
    }  # fmt: skip
    return m.ModelInfo(
        model=handle, device=model.device, arch=model.arch, config=model.config, params=model.params,
        bytes=model.nbytes, step=model.step, dtype=model.dtype, devices=list(model.devices), compression=model.compression, **text,
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
    for dev in [k.devices[name] for name in model.devices]:
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
            for name in model.devices:
                k.devices[name].memory.transfer(model.alloc_id, KERNEL_PID)
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
    """A process is gone: close every model handle it held (a model nobody holds is freed, with its KV), and
    end its generations on the others now: their KV blocks come back at once, not at the model's next step."""
    held = {k.models[mid] for mid in proc.models.values()}  # each model once, however many handles
    for mid in proc.models.values():
        release_model(k, proc.pid, k.models[mid])
    proc.models.clear()
    for model in held:
        if not model.freed and model.batcher is not None:
            model.batcher.pump()  # drops the gone process's generations unless a step is out (then when it is back)


def lose_models(k: Kernel, dev: Device, message: str) -> None:
    """A device went offline: its models are lost (their handles answer EIO until freed); a replicated
    model only loses its replica there, and goes on with the others (`replicas.lose_on`)."""
    for model in k.models.values():
        replicas.lose_on(k, model, dev.name, message)


@dataclass(frozen=True)
class Source:
    """Where a model_load's weights come from, resolved: architecture, config, dtype, file or folder."""

    arch: str
    config: dict
    dtype: str
    checkpoint: str = ""
    folder: str = ""
    compression: dict = field(default_factory=dict)  # a compressed checkpoint's layout (layer name -> spec)
    sealed: bool = False  # the checkpoint is sealed (drivers/models/sealed.py)


def _source(k: Kernel, req: m.ModelLoad) -> Source:
    """Resolve a model_load's `path` / `checkpoint` / fresh `arch`; EINVAL, ENOENT or EPERM for a bad one."""
    if req.path and req.checkpoint:
        raise SysError(Errno.EINVAL, "give a path (a model folder) or a checkpoint, not both")
    if req.path:
        if k.models_dir is None:
            raise SysError(Errno.EINVAL, "this kernel has no models directory: boot it with `llmos boot --models DIR`")
        folder = resolve_under(k.models_dir, req.path, "models directory")
        if not os.path.isdir(folder):
            raise SysError(Errno.ENOENT, f"no model folder {req.path!r} in the models directory")
        return _folder_source(k, req, folder, req.path)
    if req.checkpoint:
        full = storage_path(k, req.checkpoint)
        if not os.path.exists(full):
            raise SysError(Errno.ENOENT, f"no checkpoint {req.checkpoint!r} in the storage directory")
        if os.path.isdir(full):  # a folder model_save wrote in the Hugging Face layout
            _plain_allowed(k, req.checkpoint)
            return _folder_source(k, req, full, req.checkpoint)
        if not os.path.isfile(full):
            raise SysError(Errno.EINVAL, f"checkpoint {req.checkpoint!r} is not a file")
        meta = _checkpoint_meta(k, req.checkpoint, full)
        arch = meta["arch"] if req.arch == "auto" else req.arch
        return Source(arch, meta["config"], req.dtype or "float32", checkpoint=full, compression=meta["compression"],
                      sealed=meta["sealed"])  # fmt: skip
    if req.arch == "auto":
        raise SysError(Errno.EINVAL, "arch 'auto' takes the architecture from a model folder (path) or a checkpoint; "
                                     "name one for a fresh model")  # fmt: skip
    return Source(req.arch, dict(req.config), req.dtype or "float32")


def _plain_allowed(k: Kernel, name: str) -> None:
    """EPERM if the kernel refuses plain (unsealed) checkpoints (`refuse_plain`)."""
    if k.config.refuse_plain:
        raise SysError(Errno.EPERM, f"checkpoint {name!r} is not sealed, and this kernel refuses plain checkpoints")


def _checkpoint_meta(k: Kernel, name: str, full: str) -> dict:
    """The architecture and config an llmos checkpoint file names (EINVAL for a file that is not one); of a
    sealed one, from its first chunks (EINVAL if they fail authentication or the kernel has no key)."""
    from llmos.drivers.models import sealed
    from llmos.drivers.models.safetensors_header import header_bytes, metadata_of, read_metadata

    try:
        if sealed.is_sealed(full):
            if k.storage_key is None:
                raise SysError(Errno.EINVAL, f"checkpoint {name!r} is sealed and this kernel has no storage key: "
                                             "boot it with --encrypt-storage or --storage-key FILE")  # fmt: skip
            prefix = sealed.read_prefix(full, k.storage_key, 8)
            meta = metadata_of(sealed.read_prefix(full, k.storage_key, header_bytes(prefix)))
        else:
            _plain_allowed(k, name)
            meta = read_metadata(full)
        return {"arch": meta["arch"], "config": json.loads(meta["config"]),
                "compression": json.loads(meta.get("compression", "{}")), "sealed": k.storage_key is not None
                and sealed.is_sealed(full)}  # fmt: skip
    except sealed.AuthError as exc:
        raise SysError(Errno.EINVAL, f"{name!r}: {exc}") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SysError(Errno.EINVAL, f"{name!r} is not an llmos checkpoint: {exc}") from None


def _folder_source(k: Kernel, req: m.ModelLoad, folder: str, name: str) -> Source:
    """A Hugging Face-format folder, read by the first model plugin that knows it (`llmos_model_folder`)."""
    try:
        found: ModelFolder | None = k.pm.hook.llmos_model_folder(folder=folder)
    except FileNotFoundError as exc:
        raise SysError(Errno.ENOENT, f"{name!r}: {exc}") from None
    except (ValueError, OSError) as exc:
        raise SysError(Errno.EINVAL, f"{name!r}: {exc}") from None
    if found is None:
        raise SysError(Errno.EINVAL, f"{name!r}: no model plugin reads this folder (see its config.json's model_type)")
    if req.arch not in ("auto", found.arch):
        raise SysError(Errno.EINVAL, f"{name!r} holds a {found.arch} model, not {req.arch}")
    if {**found.config, **req.config} != found.config:
        raise SysError(Errno.EINVAL, f"config {dict(req.config)} disagrees with the folder's")
    return Source(found.arch, found.config, req.dtype or found.dtype, folder=folder)


def _tokenizer(k: Kernel, src: Source) -> Tokenizer | None:
    """The model's tokenizer from the plugins (`llmos_tokenizer`); EINVAL for a broken tokenizer file."""
    try:
        return k.pm.hook.llmos_tokenizer(arch=src.arch, config=src.config, folder=src.folder)
    except (ValueError, OSError) as exc:
        raise SysError(Errno.EINVAL, f"the model's tokenizer cannot be read: {exc}") from None


def sys_model_load(k: Kernel, c: CallCtx) -> None:
    """Build a model on a device, or a replica on each of several (from a model folder, a checkpoint under
    storage, or fresh, the same source for all); charge it to the caller on every device."""
    req: m.ModelLoad = c.req
    devs = replicas.load_devices(k, req)
    if any(dev.node for dev in devs) and (req.checkpoint or req.path):
        remote = next(dev for dev in devs if dev.node)
        raise SysError(Errno.EINVAL, f"{remote.name} is on node {remote.node}, which cannot read the kernel's storage "
                                     "or models folders: load a fresh model there (arch, config, seed)")  # fmt: skip
    src = _source(k, req)
    archs = plugins.models(k.pm)
    if src.arch not in archs:
        raise SysError(Errno.EINVAL, f"unknown architecture {src.arch!r}; known: {', '.join(sorted(archs)) or 'none'}")
    for dev in devs:
        check_dtype(dev, src.dtype)
    if req.kv_blocks < 1 or req.block_size < 1:
        raise SysError(Errno.EINVAL, f"kv_blocks and block_size must be at least 1 ({req.kv_blocks}, {req.block_size})")
    swap_blocks = _swap_blocks(req)
    size = _size(k, src, req.kv_blocks, req.block_size)
    tokenizer = _tokenizer(k, src)
    for dev in devs:  # every device before any is charged: ENOMEM / EAGAIN cost the drivers nothing
        admit(dev, c.proc.pid, size)
    mid = k.next_model
    k.next_model += 1
    for dev in devs:
        dev.memory.charge(-mid, c.proc.pid, size)  # reserved under the model's alloc_id while the driver builds it
        k.trace_mem("mem.alloc", dev, c.proc.pid, size)
    memories = [dev.memory for dev in devs]  # a device that goes offline meanwhile gets a new one, or none
    parts = [
        (dev, proto.DModelLoad(
            seq=dev.next_seq(), model=mid, arch=src.arch, target=archs[src.arch], kv_blocks=req.kv_blocks,
            block_size=req.block_size, config={} if src.folder else dict(req.config), dtype=src.dtype,
            checkpoint=src.checkpoint, seed=req.seed, folder=src.folder, swap_blocks=swap_blocks,
            key=k.storage_key if src.sealed else b"",
        ))
        for dev in devs
    ]  # fmt: skip

    def undo(answers: list[Answer]) -> None:
        """Give every reservation back, and free the replicas that were built (on devices still up)."""
        for dev, memory, answer in zip(devs, memories, answers):
            if dev.memory is not memory:
                continue  # it went offline: its reservation and its replica went with its host
            dev.memory.release(-mid)
            k.trace_mem("mem.free", dev, c.proc.pid, size)
            k.unpark(dev)
            if answer.ok is not None:
                k.post(dev, proto.DModelFree(seq=dev.next_seq(), model=mid))

    def answered(answers: list[Answer]) -> None:
        failed = next((a for a in answers if a.errno is not None), None) or next(
            (Answer(dev.name, Errno.EIO, f"device {dev.name} went offline while the model loaded")
             for dev, memory in zip(devs, memories) if dev.memory is not memory), None,
        )  # fmt: skip
        descs = [_desc_decoder.decode(a.frames[0].buffer) for a in answers if a.ok is not None]
        built = next((d.param_bytes + d.kv_bytes for d in descs if d.param_bytes + d.kv_bytes != size), size)
        if failed is not None or c.proc.state == "exited" or built != size:
            undo(answers)  # a device failed, the caller left, or the size function disagrees with the driver
            if failed is not None:
                c.fail(failed.errno, failed.message if len(devs) == 1 else f"{failed.device}: {failed.message}")
            elif c.proc.state != "exited":
                k.log.error("model.size_mismatch", arch=src.arch, computed=size, built=built)
                c.fail(Errno.EIO, f"{src.arch}'s size function gave {size} bytes; the driver built {built}")
            return
        desc = descs[0]
        model = Model(
            mid=mid, devices=[dev.name for dev in devs], owner=c.proc.pid, arch=src.arch, config=desc.config,
            params=desc.params, param_bytes=desc.param_bytes, nbytes=size, kv=None, kv_bytes=desc.kv_bytes,
            step=desc.step, dtype=src.dtype, folder=src.folder, tokenizer=tokenizer, cache=req.cache,
            preempt=req.preempt, kv_blocks=req.kv_blocks, block_size=req.block_size, swap_blocks=swap_blocks,
            compression=desc.compression,
        )  # fmt: skip
        new_books(k, model)
        if src.checkpoint or src.folder.startswith(os.path.realpath(k.storage) + os.sep):
            k.audit_event("checkpoint_load", pid=c.proc.pid, path=req.checkpoint, sha256=desc.sha256,
                          sealed=src.sealed)
        model.holders[c.proc.pid] = 1
        k.models[mid] = model
        handle = c.proc.new_handle()
        c.proc.models[handle] = mid
        c.reply(model_info(handle, model))

    Gang(k, c.proc.pid, parts, answered).submit()


def new_books(k: Kernel, model: Model) -> None:
    """Give a model fresh KV books and a batcher on the device of its first replica (at load, and when a
    replicated model loses that replica: the next one's KV storage holds nothing the old books knew)."""
    dev = k.devices[model.device]
    model.kv = KVCache(model.kv_blocks, model.block_size, host_blocks=model.swap_blocks,
                       default_quota=k.config.kv_quota, device=dev.name, layout=f"model{model.mid}")  # fmt: skip
    model.batcher = Batcher(k, model, k.new_policy(dev.queue.policy.name))  # the device's policy


def _swap_blocks(req: m.ModelLoad) -> int:
    """The host blocks a model's preempted generations swap to: 0 under recompute, `kv_blocks` unless told."""
    if req.preempt not in ("recompute", "swap"):
        raise SysError(Errno.EINVAL, f"preempt must be 'recompute' or 'swap', not {req.preempt!r}")
    if req.swap_blocks < 0 or (req.swap_blocks and req.preempt != "swap"):
        raise SysError(Errno.EINVAL, f"swap_blocks ({req.swap_blocks}) must be >= 0, and is only for preempt='swap'")
    return 0 if req.preempt == "recompute" else req.swap_blocks or req.kv_blocks


def _size(k: Kernel, src: Source, kv_blocks: int, block_size: int) -> int:
    """The bytes a model will take (weights and KV storage), from its config, by its architecture's size function
    (and, for a compressed checkpoint, its layout: compression.py)."""
    from llmos.drivers.models.compression import held_bytes

    target = plugins.model_sizes(k.pm).get(src.arch)
    if target is None:
        raise SysError(Errno.EINVAL, f"architecture {src.arch!r} names no size function (llmos_model_sizes), "
                                     "so its memory cannot be admitted before it is built")  # fmt: skip
    module, _, name = target.partition(":")
    try:
        desc = getattr(importlib.import_module(module), name)(src.config, src.dtype, kv_blocks, block_size)
        return held_bytes(desc.param_bytes, src.compression, src.dtype) + desc.kv_bytes
    except (ValueError, TypeError, KeyError) as exc:
        raise SysError(Errno.EINVAL, f"bad {src.arch} config or compression layout: {exc!r}") from None


def sys_model_free(k: Kernel, c: CallCtx) -> None:
    """Close a model handle: free the model, its KV, and its memory (a lost model can still be closed)."""
    mid = c.proc.models.pop(c.req.model, None)
    if mid is None:
        raise SysError(Errno.EBADF, f"handle {c.req.model} is not a model open in process {c.proc.pid}")
    release_model(k, c.proc.pid, k.models[mid])
    c.reply(m.Done())


def sys_generate(k: Kernel, c: CallCtx) -> None:
    """Generate from a prompt, one token per batched device step, streaming text as PARTIAL replies."""
    from llmos.drivers.models.decoding import NO_TEXT, SamplingParams, StopStream

    req: m.Generate = c.req
    model = model_of(k, c.proc, req.model)
    if bool(req.prompt) == bool(req.tokens):
        raise SysError(Errno.EINVAL, "give a prompt (text) or tokens (ids), one of them")
    tok = model.tokenizer
    if tok is None and (req.prompt or req.stop):
        raise SysError(Errno.EINVAL, f"this {model.arch} model has no tokenizer: give token ids, and no stop strings")
    prompt = tok.encode_prompt(req.prompt) if req.prompt else list(req.tokens)
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
    apply_kv_quota(c.proc, model.kv)  # a model's pool is KV memory like any other
    need = model.kv.blocks_for(len(prompt) + max_tokens - 1)
    if need > min(model.kv.num_blocks, model.kv.quota(c.proc.pid) or model.kv.num_blocks):
        raise SysError(Errno.ENOMEM, f"{need} KV blocks needed; the model's pool can never give {c.proc.pid} that many")
    rid = k.next_kvseq
    k.next_kvseq += 1
    limit = "max_len" if room < req.max_tokens else "length"
    stream = StopStream(req.stop, tok or NO_TEXT, prompt)
    model.batcher.add(Generation(c, rid, prompt, max_tokens, stream, limit=limit))


def tokenizer_of(model: Model) -> Tokenizer:
    """The model's tokenizer; EINVAL for a model that has none."""
    if model.tokenizer is None:
        raise SysError(Errno.EINVAL, f"this {model.arch} model has no tokenizer (it was not loaded from a model folder)")
    return model.tokenizer


def sys_tokenize(k: Kernel, c: CallCtx) -> None:
    """The ids of a text under the model's own tokenizer."""
    tok = tokenizer_of(model_of(k, c.proc, c.req.model))
    c.reply(m.TokenIds(tokens=tok.encode_prompt(c.req.text) if c.req.special else tok.encode(c.req.text)))


def sys_detokenize(k: Kernel, c: CallCtx) -> None:
    """The text of token ids under the model's own tokenizer."""
    tok = tokenizer_of(model_of(k, c.proc, c.req.model))
    bad = next((t for t in c.req.tokens if not 0 <= t < tok.vocab_size), None)
    if bad is not None:
        raise SysError(Errno.EINVAL, f"token id {bad} is out of range: the tokenizer has {tok.vocab_size} tokens")
    c.reply(m.Text(text=tok.decode(c.req.tokens)))


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
    """Write the model under the storage directory: an llmos checkpoint file, or a Hugging Face-format folder."""
    model = model_of(k, c.proc, c.req.model)
    if c.req.format not in ("", "llmos", "hf"):
        raise SysError(Errno.EINVAL, f"format {c.req.format!r}: one of 'llmos' (a checkpoint file) or 'hf' (a folder)")
    fmt = c.req.format or ("hf" if model.folder else "llmos")
    if fmt == "hf" and model.compression:
        raise SysError(Errno.EINVAL, f"the model is {model.compression}: only an llmos checkpoint holds that "
                                     "(format 'llmos'); a Hugging Face folder holds float weights")  # fmt: skip
    if fmt == "hf" and k.storage_key is not None:
        raise SysError(Errno.EINVAL, "this kernel seals its storage, and only an llmos checkpoint is sealed "
                                     "(format 'llmos'); a Hugging Face folder is written for other programs to read")  # fmt: skip
    dev = k.devices[model.device]
    if dev.node:
        raise SysError(Errno.EINVAL, f"the model is on {dev.name}, whose node cannot write the kernel's storage")
    path = storage_path(k, c.req.path)
    make_parents(k, path)
    msg = proto.DModelSave(seq=dev.next_seq(), model=model.mid, path=path, format=fmt, source=model.folder,
                           key=k.storage_key or b"")  # fmt: skip

    def done(ok: proto.DOk, frames) -> None:
        digest = _digest_decoder.decode(frames[0].buffer) if frames else ""
        k.audit_event("checkpoint_save", pid=c.proc.pid, path=c.req.path, format=fmt, sha256=digest,
                      sealed=k.storage_key is not None)  # fmt: skip
        c.reply(m.Done())

    k.submit(dev, Work(owner=c.proc.pid, msg=msg, done=done, fail=c.fail))


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
    who asked to train it. A replicated model's every replica keeps its own optimizer state: it is
    admitted on all of its devices before it is charged on any.
    """
    devs = [k.devices[name] for name in model.devices]
    extra = OPTIMIZER_COPIES * model.param_bytes
    payer = pid if model.owner == KERNEL_PID else model.owner
    for dev in devs:
        admit(dev, payer, extra if payer == model.owner else model.nbytes + extra)
    for dev in devs:
        dev.memory.release(model.alloc_id)
        dev.memory.charge(model.alloc_id, payer, model.nbytes + extra)
        k.trace_mem("mem.alloc", dev, payer, extra)
    model.owner = payer
    model.nbytes += extra
    model.training = True


def sys_train_step(k: Kernel, c: CallCtx) -> None:
    """One optimizer step of the model on the caller's batch: one work item on the device queue (a replicated
    model: one per replica, each on its shard of the batch, kernel/replicas.py)."""
    req: m.TrainStep = c.req
    model = model_of(k, c.proc, req.model)
    if model.compression:
        raise SysError(Errno.EINVAL, f"the model is {model.compression}: a compressed model does not train "
                                     "(train the float model, then compress it)")  # fmt: skip
    _check_batch(model, req)
    if not model.training:
        _charge_optimizer(k, model, c.proc.pid)
    if len(model.devices) > 1:
        return replicas.train_step(k, c, model)
    dev = k.devices[model.device]
    msg = proto.DTrainStep(
        seq=dev.next_seq(), model=model.mid, tokens=req.tokens, lr=req.lr, weight_decay=req.weight_decay, clip=req.clip
    )

    def done(ok: proto.DOk, frames) -> None:
        out = train_out(frames)
        model.step = out.step
        c.reply(m.TrainResult(loss=out.loss, grad_norm=out.grad_norm, step=out.step, device_s=ok.wall_s))

    k.submit(dev, Work(owner=c.proc.pid, msg=msg, done=done, fail=c.fail))


def train_out(frames: list) -> proto.TrainOut:
    """The `TrainOut` frame of a train_step's answer."""
    return _train_decoder.decode(frames[0].buffer)
