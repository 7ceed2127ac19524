"""KV cache syscalls: kv_pool, kv_alloc, kv_append, kv_fork, kv_free, kv_table.

The paged KV cache service (`services/memory/kv.py`) keeps the books; the
kernel gives each pool real device memory (one tensor of `blocks x
block_bytes` bytes, charged to the process that created the pool, within its
quota), hands processes handles on their sequences, and has the driver copy
blocks when copy-on-write says so. When its creator leaves, a pool nobody has
a sequence in is freed; one still in use is held by the kernel (pid 0) until
its last sequence is freed (`reap_pools`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llmos.services.memory.admission import Admission
from llmos.services.memory.kv import KVCache
from llmos.services.memory.kv_errors import KVError, KVNoPool
from llmos.services.memory.kv_pools import KVLayout
from llmos.syscalls import Errno
from llmos.syscalls import driver as proto
from llmos.syscalls import messages as m
from llmos.syscalls.dtypes import ITEMSIZE

from .devices import Work
from .errors import SysError
from .proc import KERNEL_PID
from .sysmem import new_tensor, not_created

if TYPE_CHECKING:
    from .dispatch import CallCtx
    from .kernel import Kernel
    from .proc import Process


def kv_errors(exc: KVError) -> SysError:
    """The syscall error for a KV service error (each carries its errno's name)."""
    return SysError(Errno[exc.errno], str(exc))


def pool_info(k: Kernel, device: str, pool: KVCache) -> m.KVPoolInfo:
    """Describe a pool."""
    t = k.kv_tensors[(device, pool.layout)]
    return m.KVPoolInfo(
        pool=pool.layout,
        device=device,
        block_size=pool.block_size,
        block_bytes=t.nbytes // pool.num_blocks,
        num_blocks=pool.num_blocks,
        free_blocks=pool.num_free_blocks,
    )


def sys_kv_pool(k: Kernel, c: CallCtx) -> None:
    """Find the pool of a model layout on a device, or create it with `blocks` blocks."""
    req: m.KVPool = c.req
    dev = k.device(req.device)
    for field in ("layers", "kv_heads", "head_dim", "block_size"):
        if getattr(req, field) < 1:
            raise SysError(Errno.EINVAL, f"{field} must be at least 1, not {getattr(req, field)}")
    if req.dtype not in ITEMSIZE:
        raise SysError(Errno.EINVAL, f"unknown dtype {req.dtype!r}; one of {', '.join(ITEMSIZE)}")
    layout = KVLayout(
        f"L{req.layers}-H{req.kv_heads}-D{req.head_dim}-{req.dtype}-B{req.block_size}",
        req.layers,
        req.kv_heads,
        req.head_dim,
        ITEMSIZE[req.dtype],
    )
    try:
        return c.reply(pool_info(k, dev.name, k.kv.get(dev.name, layout.name)))
    except KVNoPool:
        pass
    if req.blocks < 1:
        raise SysError(Errno.EINVAL, f"no KV pool {layout.name} on {dev.name} yet; pass blocks=N to create one")
    block_bytes = layout.block_bytes(req.block_size)
    t = new_tensor(k, dev, c.proc.pid, [req.blocks, block_bytes], "uint8")

    def created(ok: proto.DOk | None, frames) -> None:
        if t.tid not in k.tensors.by_tid:  # the caller left while the device made it: reclaim freed it already
            return
        if (dev.name, layout.name) in k.kv_tensors:  # someone created it meanwhile
            k.free_tensor(t)
        else:
            k.kv.add(dev.name, layout, req.blocks, block_size=req.block_size, default_quota=k.config.kv_quota)
            k.kv_tensors[(dev.name, layout.name)] = t
        c.reply(pool_info(k, dev.name, k.kv.get(dev.name, layout.name)))

    if dev.hostmem is not None:  # placed already: nothing for the driver host to do
        return created(None, [])
    msg = proto.DAlloc(seq=dev.next_seq(), tensor=t.desc())
    k.submit(dev, Work(owner=c.proc.pid, msg=msg, done=created, fail=lambda errno, message: not_created(k, c, t, errno, message)))


def reap_pools(k: Kernel, gone: int = KERNEL_PID) -> None:
    """Process `gone` left: the kernel takes over the pools it created; free every kernel-held pool with no sequence."""
    for key, t in list(k.kv_tensors.items()):
        if gone != KERNEL_PID and t.owner == gone:
            k.devices[t.device].memory.transfer(t.tid, KERNEL_PID)
            t.owner = KERNEL_PID
        if t.owner == KERNEL_PID and not k.kv.get(*key).sequences():
            k.kv.remove(*key)
            del k.kv_tensors[key]
            k.free_tensor(t)


def _pool(k: Kernel, device: str, name: str) -> KVCache:
    try:
        return k.kv.get(k.device(device).name, name)
    except KVError as exc:
        raise kv_errors(exc) from None


def _seq(k: Kernel, proc: Process, handle: int) -> tuple[KVCache, int]:
    """The pool and sequence id behind a KV handle; else EBADF or EIO."""
    entry = proc.kvseqs.get(handle)
    if entry is None:
        kind = "a tensor, not a KV sequence" if handle in proc.handles else f"not open in process {proc.pid}"
        raise SysError(Errno.EBADF, f"handle {handle} is {kind}")
    device, name, seq_id = entry
    try:
        pool = k.kv.get(device, name)
    except KVNoPool:
        raise SysError(Errno.EIO, f"handle {handle}: KV pool {name} was lost with device {device}") from None
    return pool, seq_id


def _reply_seq(c: CallCtx, handle: int, pool: KVCache, seq_id: int, copies=()) -> None:
    info = pool.sequence_info(seq_id)
    c.reply(
        m.KVSeq(
            seq=handle,
            pool=pool.layout,
            table=info["table"],
            num_tokens=info["num_tokens"],
            shared=info["shared"],
            copies=[tuple(p) for p in copies],
        )
    )


def _tokens(req) -> list[int] | int:
    if req.tokens and req.length:
        raise SysError(Errno.EINVAL, "give tokens (ids) or length (a count), not both")
    if req.length < 0:
        raise SysError(Errno.EINVAL, f"length cannot be negative ({req.length})")
    return list(req.tokens) if req.tokens else req.length


def apply_kv_quota(proc: Process, pool: KVCache) -> None:
    """Give `pool` the spawn-time KV quota of `proc` (if it has one) before it takes blocks there."""
    if proc.kv_quota is not None and pool.quota(proc.pid) != proc.kv_quota:
        pool.set_quota(proc.pid, proc.kv_quota)


def _open_seq(k: Kernel, c: CallCtx, pool: KVCache, create) -> None:
    """Create a sequence under a fresh id with `create(seq_id)` and give the caller a handle on it."""
    seq_id = k.next_kvseq
    k.next_kvseq += 1
    try:
        create(seq_id)
    except KVError as exc:
        raise kv_errors(exc) from None
    handle = c.proc.new_handle()
    c.proc.kvseqs[handle] = (pool.device, pool.layout, seq_id)
    _reply_seq(c, handle, pool, seq_id)


def sys_kv_alloc(k: Kernel, c: CallCtx) -> None:
    """A new KV sequence; token ids let it share cached prefix blocks."""
    req: m.KVAlloc = c.req
    pool = _pool(k, req.device, req.pool)
    tokens = _tokens(req)
    apply_kv_quota(c.proc, pool)
    verdict = pool.can_allocate(tokens, owner=c.proc.pid)
    if verdict is Admission.NEVER:
        raise SysError(Errno.ENOMEM, f"{req.pool} on {req.device} can never hold {tokens if isinstance(tokens, int) else len(tokens)} tokens for process {c.proc.pid} (pool or quota too small)")
    if verdict is Admission.LATER:
        raise SysError(Errno.EAGAIN, f"{req.pool} on {req.device} has {pool.num_free_blocks} free blocks now; retry after others free")
    _open_seq(k, c, pool, lambda seq_id: pool.allocate(seq_id, c.proc.pid, tokens))


def sys_kv_append(k: Kernel, c: CallCtx) -> None:
    """Grow a sequence; blocks shared with a fork are copied on the device first."""
    pool, seq_id = _seq(k, c.proc, c.req.seq)
    tokens = _tokens(c.req)
    try:
        copies = pool.append(seq_id, tokens)
    except KVError as exc:
        raise kv_errors(exc) from None
    if not copies:
        return _reply_seq(c, c.req.seq, pool, seq_id)
    t = k.kv_tensors[(pool.device, pool.layout)]
    dev = k.devices[pool.device]
    msg = proto.DCopyBlocks(seq=dev.next_seq(), tensor=t.desc(), block_bytes=t.shape[1], pairs=copies)

    def copied(ok: proto.DOk, frames) -> None:
        _reply_seq(c, c.req.seq, pool, seq_id, copies)

    k.submit(dev, Work(owner=c.proc.pid, msg=msg, done=copied, fail=c.fail, tensors=(t,)))


def sys_kv_fork(k: Kernel, c: CallCtx) -> None:
    """A new handle on a sequence sharing all the parent's blocks."""
    pool, parent = _seq(k, c.proc, c.req.seq)
    _open_seq(k, c, pool, lambda child: pool.fork(parent, child))


def sys_kv_free(k: Kernel, c: CallCtx) -> None:
    """Close a KV sequence handle and free its blocks."""
    pool, seq_id = _seq(k, c.proc, c.req.seq)
    del c.proc.kvseqs[c.req.seq]
    pool.free(seq_id)
    reap_pools(k)
    c.reply(m.Done())


def sys_kv_table(k: Kernel, c: CallCtx) -> None:
    """A sequence's block table and length."""
    pool, seq_id = _seq(k, c.proc, c.req.seq)
    _reply_seq(c, c.req.seq, pool, seq_id)
