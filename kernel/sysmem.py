"""Memory syscalls: alloc, free, write, read, share.

Allocation is admitted by the device's memory service first (capacity and
the caller's quota): NEVER is ENOMEM, LATER is EAGAIN. A host-visible
device's tensors are the kernel's own (`hostmem.py`): it places them, so
their allocation is answered at once, and copies their bytes between the
socket and its mapping. Other devices allocate, and get the bytes, through
their driver host. Either way a copy runs in the device's queue order, after
the caller's earlier work on that device.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llmos.services.memory.admission import Admission
from llmos.syscalls import Errno
from llmos.syscalls import driver as proto
from llmos.syscalls import messages as m
from llmos.syscalls.dtypes import ITEMSIZE, nbytes

from .devices import Device, Work
from .errors import SysError
from . import sysmodel

if TYPE_CHECKING:
    from .dispatch import CallCtx
    from .kernel import Kernel
    from .tensors import Tensor

MAX_DIMS = 16


def check_shape(shape: list[int], dtype: str) -> int:
    """Validate a shape and dtype; return the size in bytes."""
    if dtype not in ITEMSIZE:
        raise SysError(Errno.EINVAL, f"unknown dtype {dtype!r}; one of {', '.join(ITEMSIZE)}")
    if len(shape) > MAX_DIMS:
        raise SysError(Errno.EINVAL, f"{len(shape)} dimensions; at most {MAX_DIMS}")
    if any(d < 0 for d in shape):
        raise SysError(Errno.EINVAL, f"negative dimension in shape {shape}")
    return nbytes(shape, dtype)


def admit(dev: Device, pid: int, size: int) -> None:
    """Ask the device's memory service and its waiters' reservations; raise ENOMEM (never fits) or EAGAIN (not now)."""
    verdict = dev.parked.admit(dev.memory, pid, size)
    if verdict is Admission.NEVER:
        raise SysError(
            Errno.ENOMEM,
            f"{size} bytes is more than {dev.name} can ever give process {pid} "
            f"(device capacity {dev.memory.capacity}, quota {dev.memory.quota(pid)})",
        )
    if verdict is Admission.LATER and dev.memory.admit(pid, size) is Admission.OK:
        raise SysError(
            Errno.EAGAIN,
            f"{size} bytes would eat into the {dev.parked.reserved(dev.memory)} bytes {dev.name} keeps for "
            "allocations waiting longest; retry later, or alloc with wait",
        )
    if verdict is Admission.LATER:
        mine = dev.memory.by_owner.get(pid, 0)
        raise SysError(
            Errno.EAGAIN,
            f"{size} bytes does not fit on {dev.name} now ({dev.memory.free} free, you hold {mine} "
            f"of your quota {dev.memory.quota(pid)}); free some memory, retry later, or alloc with wait",
        )


def check_dtype(dev: Device, dtype: str) -> None:
    """EINVAL unless the device supports the dtype."""
    if dtype not in dev.spec.dtypes:
        raise SysError(Errno.EINVAL, f"{dev.name} does not support {dtype}; it supports {', '.join(dev.spec.dtypes)}")


def new_tensor(k: Kernel, dev: Device, pid: int, shape: list[int], dtype: str, admitted: bool = False) -> Tensor:
    """Admit (unless `admitted` already), record and charge a tensor about to be created on `dev` for `pid`;
    on a host-visible device, place its bytes (ENOMEM if the shared-memory folder is full)."""
    check_dtype(dev, dtype)
    size = check_shape(shape, dtype)
    if not admitted:
        admit(dev, pid, size)
    t = k.tensors.create(dev.name, shape, dtype, size, pid)
    if dev.hostmem is not None and size:
        try:
            t.shm, t.shm_offset = dev.hostmem.place(size)
        except OSError as exc:
            k.tensors.drop(t)
            raise SysError(Errno.ENOMEM, f"{dev.name}'s shared memory ({dev.hostmem.folder}) cannot hold "
                           f"{size} more bytes: {exc.strerror}") from None  # fmt: skip
        t.home = dev.hostmem
    dev.memory.charge(t.tid, pid, size)
    k.trace_mem("mem.alloc", dev, pid, size)
    return t


def created(k: Kernel, c: CallCtx, t: Tensor, ok: proto.DOk | None) -> None:
    """A new tensor exists on its device: open a handle for the caller and answer."""
    if t.tid not in k.tensors.by_tid:  # the caller left while the device made it: reclaim freed it already
        return
    t.holders[c.proc.pid] += 1
    c.reply(tensor_ref(c.proc.add_handle(t.tid), t, ok))


def not_created(k: Kernel, c: CallCtx, t: Tensor, errno: Errno, message: str) -> None:
    """A new tensor could not be created: give its memory back (unless reclaim did) and fail the call."""
    if t.tid in k.tensors.by_tid:
        k.tensors.drop(t)
        dev = k.devices.get(t.device)  # None: its driver was unloaded meanwhile
        if dev is not None and dev.memory is not None:
            dev.memory.release(t.tid)
            k.trace_mem("mem.free", dev, t.owner, t.nbytes)
            k.unpark(dev)
    c.fail(errno, message)


def tensor_ref(handle: int, t: Tensor, ok: proto.DOk | None = None) -> m.TensorRef:
    """The reply that names a tensor by the caller's handle (with the op's times, after compute)."""
    wall, sim = (ok.wall_s, ok.sim_s) if ok is not None else (0.0, 0.0)
    return m.TensorRef(handle=handle, device=t.device, shape=t.shape, dtype=t.dtype, nbytes=t.nbytes, wall_s=wall, sim_s=sim)


def sys_alloc(k: Kernel, c: CallCtx) -> None:
    """Allocate an uninitialised tensor; with `wait`, wait for memory others hold."""
    req: m.Alloc = c.req
    dev = k.device(req.device)

    def allocate(admitted: bool = False) -> None:
        t = new_tensor(k, dev, c.proc.pid, req.shape, req.dtype, admitted)
        if dev.hostmem is not None:  # placed already: nothing for the driver host to do
            return created(k, c, t, None)
        work = Work(
            owner=c.proc.pid,
            msg=proto.DAlloc(seq=dev.next_seq(), tensor=t.desc()),
            done=lambda ok, frames: created(k, c, t, ok),
            fail=lambda errno, message: not_created(k, c, t, errno, message),
            posted=True,  # nobody can name the tensor before the answer, so the next item need not wait for it
        )
        k.submit(dev, work)

    if req.wait:  # what fits goes ahead of earlier waiters, unless it eats into their reservation
        check_dtype(dev, req.dtype)
        size = check_shape(req.shape, req.dtype)
        verdict = dev.parked.admit(dev.memory, c.proc.pid, size)
        if verdict is Admission.LATER:
            return k.park(dev, c, size, lambda: allocate(admitted=True))
        return allocate(admitted=verdict is Admission.OK)
    allocate()


def sys_free(k: Kernel, c: CallCtx) -> None:
    """Close a handle (a tensor lost with its device can still be closed)."""
    tid = c.proc.handles.pop(c.req.handle, None)
    if tid is None:
        raise SysError(Errno.EBADF, f"handle {c.req.handle} is not open in process {c.proc.pid}")
    k.release_ref(c.proc.pid, k.tensors.by_tid[tid])
    c.reply(m.Done())


def sys_write(k: Kernel, c: CallCtx) -> None:
    """Overwrite a tensor, or the piece of it from `offset` on, with the call's bulk frame."""
    t = k.tensor(c.proc, c.req.handle)
    frame = c.bulk[0]
    offset = c.req.offset
    if offset is None and len(frame) != t.nbytes:
        raise SysError(
            Errno.EINVAL, f"write of {len(frame)} bytes to handle {c.req.handle}, a {t.dtype} {t.shape} tensor of {t.nbytes} bytes"
        )
    if offset is not None and not (0 <= offset and offset + len(frame) <= t.nbytes):
        raise SysError(Errno.EINVAL, f"a piece of {len(frame)} bytes at offset {offset} does not fit a tensor of {t.nbytes} bytes")
    dev = k.device(t.device)
    if dev.hostmem is not None:
        start = offset or 0

        def copy_in() -> None:
            if len(frame):
                t.view()[start : start + len(frame)] = frame.buffer
            c.reply(m.Done())

        work = Work(owner=c.proc.pid, local=copy_in, fail=c.fail, tensors=(t,))
    else:
        msg = proto.DWrite(seq=dev.next_seq(), tid=t.tid, offset=offset)
        work = Work(owner=c.proc.pid, msg=msg, bulk=(frame,), done=lambda ok, frames: c.reply(m.Done()), fail=c.fail)
    k.submit(dev, work)


def _read_span(k: Kernel, req: m.Read, nbytes: int) -> tuple[int, int] | None:
    """The (offset, length) a read asks for, None when that is the whole tensor (so a driver without
    `read_at` still serves the clients, which ask for their first piece); EINVAL or E2BIG past the limits."""
    limit = k.config.max_bulk_bytes
    offset = req.offset or 0
    if not 0 <= offset <= nbytes or (req.length is not None and req.length < 0):
        raise SysError(Errno.EINVAL, f"offset {offset} and length {req.length} do not fit a tensor of {nbytes} bytes")
    length = nbytes - offset if req.length is None else min(req.length, nbytes - offset)
    if length > limit and req.offset is None and req.length is None:
        raise SysError(Errno.E2BIG, f"a tensor of {nbytes} bytes is over the {limit}-byte bulk limit: "
                       "read it in pieces (offset, length)")  # fmt: skip
    if length > limit:
        raise SysError(Errno.E2BIG, f"a piece of {length} bytes is over the {limit}-byte bulk limit")
    return None if length == nbytes else (offset, length)


def sys_read(k: Kernel, c: CallCtx) -> None:
    """Send a tensor's bytes, or the piece asked for, back as the reply's bulk frame."""
    t = k.tensor(c.proc, c.req.handle)
    span = _read_span(k, c.req, t.nbytes)
    dev = k.device(t.device)
    ref = tensor_ref(c.req.handle, t)
    if dev.hostmem is not None:
        start, length = span or (0, t.nbytes)
        work = Work(owner=c.proc.pid, local=lambda: c.reply(ref, (t.view()[start : start + length],)), fail=c.fail,
                    tensors=(t,))  # fmt: skip
    else:
        offset, length = span or (None, None)
        work = Work(
            owner=c.proc.pid,
            msg=proto.DRead(seq=dev.next_seq(), tid=t.tid, offset=offset, length=length),
            done=lambda ok, frames: c.reply(ref, (frames[0],)),
            fail=c.fail,
        )
    k.submit(dev, work)


def sys_share(k: Kernel, c: CallCtx) -> None:
    """Open a handle on the same tensor (or loaded model) in another process's table."""
    target = k.procs.by_pid.get(c.req.pid)
    if target is None or target.state != "running":
        raise SysError(Errno.ESRCH, f"no running process {c.req.pid}")
    theirs = sysmodel.share_model(k, c.proc, c.req.handle, target)
    if theirs is None:
        t = k.tensor(c.proc, c.req.handle)
        t.holders[target.pid] += 1
        theirs = target.add_handle(t.tid)
    k.audit_event("share", pid=c.proc.pid, handle=c.req.handle, to=target.pid, their_handle=theirs)
    c.reply(m.Shared(handle=theirs))


def sys_handles(k: Kernel, c: CallCtx) -> None:
    """A process's handles (the caller's, or another live one's, as metadata): what each names and who pays."""
    proc = c.proc
    if c.req.pid and c.req.pid != proc.pid:
        proc = k.procs.by_pid.get(c.req.pid)
        if proc is None or proc.state != "running":
            raise SysError(Errno.ESRCH, f"no running process {c.req.pid}")
    rows = []
    for handle, tid in proc.handles.items():
        t = k.tensors.by_tid[tid]
        rows.append(m.HandleInfo(
            handle=handle, kind="tensor", device=t.device, nbytes=t.nbytes, charged=t.owner, holders=len(t.holders),
            shape=t.shape, dtype=t.dtype, lost=t.lost,
        ))  # fmt: skip
    for handle, mid in proc.models.items():
        model = k.models[mid]
        rows.append(m.HandleInfo(
            handle=handle, kind="model", device=model.device, nbytes=model.nbytes, charged=model.owner,
            holders=len(model.holders), lost=model.lost,
        ))  # fmt: skip
    for handle, (device, pool, _) in proc.kvseqs.items():
        t = k.kv_tensors.get((device, pool))
        lost = "" if t is not None else f"KV pool {pool} was lost with device {device}"
        charged = t.owner if t is not None else 0
        rows.append(m.HandleInfo(handle=handle, kind="kv", device=device, charged=charged, pool=pool, lost=lost))
    c.reply(m.HandleList(handles=sorted(rows, key=lambda row: row.handle)))


def _pool_stat(name: str, pool, block_bytes: int, blocks: bool = False) -> m.KVPoolStat:
    """One KV pool's row of the memory map (with `blocks`, every block's owner and state too)."""
    row = pool.stats()
    slack = 0
    for seq_id in pool.sequences():
        info = pool.sequence_info(seq_id)
        if not info["swapped"]:
            slack += len(info["table"]) * pool.block_size - info["num_tokens"]
    stat = m.KVPoolStat(
        pool=name, block_size=row["block_size"], block_bytes=block_bytes, total=row["total"], used=row["used"],
        free=row["free"], cached=row["cached"], shared=row["shared"], sequences=row["sequences"],
        by_process=dict(row["owners"]), slack_tokens=slack, evictions=row["evictions"], swapped=row["swapped"],
        host_total=row["host_total"], host_used=row["host_total"] - row["host_free"],
    )  # fmt: skip
    if blocks:
        picture = pool.block_map()
        stat.owners = [owner or 0 for owner in picture["owners"]]
        stat.marks = picture["marks"]
        stat.host_owners = [owner or 0 for owner in picture["host"]]
    return stat


def sys_memstat(k: Kernel, c: CallCtx) -> None:
    """The memory map: per device, who holds how much, quotas, and each KV pool (models' own ones too)."""
    pools = k.kv.memory_map()
    devices = []
    for dev in k.devices.values():
        if dev.memory is None:
            continue
        kv = [
            _pool_stat(row["layout"], k.kv.get(dev.name, row["layout"]), row["block_bytes"], c.req.blocks)
            for row in pools
            if row["device"] == dev.name
        ]
        models = [model for model in k.models.values() if model.device == dev.name and not model.lost]
        for model in models:
            row = _pool_stat(f"model{model.mid}", model.kv, model.kv_bytes // model.kv.num_blocks, c.req.blocks)
            row.prefix_tokens, row.prefix_hits = model.batcher.space.looked_up, model.batcher.space.hit
            kv.append(row)
        mem = dev.memory
        devices.append(
            m.DeviceMem(
                device=dev.name,
                capacity=mem.capacity,
                used=mem.used,
                free=mem.free,
                tensors=len(mem.allocations),
                by_process=dict(mem.by_owner),
                quotas={pid: mem.quota(pid) for pid in mem.quotas if pid},
                kv_pools=kv,
                models=[
                    m.ModelMem(model=model.mid, arch=model.arch, charged=model.owner, weights=model.param_bytes,
                               kv=model.kv_bytes, optimizer=model.nbytes - model.param_bytes - model.kv_bytes,
                               compression=model.compression)  # fmt: skip
                    for model in models
                ],
            )
        )
    c.reply(m.MemMap(devices=devices))
