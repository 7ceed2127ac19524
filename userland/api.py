"""The syscall API, written once for both clients.

Each method is a small program: a generator that yields calls as
`(request, bulk_frames, on_partial)` and receives each reply as
`(body, bulk_frames)`. The blocking client runs it to the end and returns the
result; the asyncio client runs it in a coroutine. So `c.alloc(...)` is a
value with `Client` and an awaitable with `AsyncClient`, from one definition.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING

from llmos.syscalls import messages as m

from .wire import admin_key, checked_address, curve_keys, dtype_name, from_bytes, kernel_address, tensor_bytes

if TYPE_CHECKING:
    import torch

Step = tuple[m.Call, tuple, Callable | None]
Program = Generator[Step, tuple, object]


def one_call(call: m.Call, bulk: tuple = (), on_partial: Callable | None = None) -> Program:
    body, _ = yield call, bulk, on_partial
    return body


class SyscallApi:
    """Every syscall as a method, and where to attach. Subclasses provide `_run(program)`.

    `address`: the kernel's address (default: $LLMOS_KERNEL or the local kernel
    named `kernel`, $LLMOS_NAME or default). `name`: the process name (default:
    $LLMOS_PROGRAM). `claim`: the token of a spawned program (default:
    $LLMOS_CLAIM). `keys_dir`: CurveZMQ keys for tcp:// (`llmos keygen`).
    `timeout_s`: how long one call may take. `admin`: prove ownership of the
    local kernel with its admin key (may kill any process, load drivers).
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        name: str = "",
        claim: str | None = None,
        keys_dir: str | None = None,
        timeout_s: float = 120.0,
        kernel: str | None = None,
        admin: bool = False,
    ):
        self.address = checked_address(address) if address else kernel_address(kernel)
        self.timeout_s = timeout_s
        self._keys = curve_keys(keys_dir)
        self._attach = m.Attach(
            name=name or os.environ.get("LLMOS_PROGRAM", ""),
            os_pid=os.getpid(),
            claim=os.environ.get("LLMOS_CLAIM", "") if claim is None else claim,
            admin=admin_key(kernel) if admin else "",
        )
        self._rids = itertools.count(1)
        self.token = b""
        self.pid = 0
        self.max_bulk_bytes = 0  # the kernel's bulk limit, from attach: larger tensors travel in pieces

    def _run(self, program: Program):
        raise NotImplementedError

    # ---- misc --------------------------------------------------------------------------

    def null(self):
        """Do nothing, through the kernel: the syscall round trip."""
        return self._run(one_call(m.Null()))

    def yield_(self):
        """Move this process's queued device work behind everyone else's; returns a Yielded."""
        return self._run(one_call(m.Yield()))

    def stat(self):
        """Kernel-wide figures (KernelStat)."""
        return self._run(one_call(m.Stat()))

    def trace_read(self, since: int = 0):
        """The kernel's recent device, scheduling and KV events from number `since` on (TraceLog)."""
        return self._run(one_call(m.TraceRead(since=since)))

    # ---- process -----------------------------------------------------------------------

    def getpid(self):
        """This process's pid, parent and name (PidInfo)."""
        return self._run(one_call(m.GetPid()))

    def ps(self):
        """The process table: a list of ProcInfo."""
        return self._run(_field(m.Ps(), "procs"))

    def programs(self):
        """The programs the kernel can spawn (syscall `prog_list`): a list of ProgramInfo, by name."""
        return self._run(_field(m.ProgList(), "programs"))

    def spawn(
        self, program: str, args: list[str] | None = None, quotas: dict[str, int] | None = None,
        kv_quota: int | None = None, models: list[int] | None = None, rights: list[str] | None = None,
    ):  # fmt: skip
        """Start a registered program as a child process (Spawned: pid, os_pid, log).

        `quotas`: its memory quota in bytes per device name; `kv_quota`: its KV blocks per pool;
        `models`: model handles it inherits under the same numbers (pass them in `args`);
        `rights`: its rights, a subset of this process's (None: all of this process's).
        """
        call = m.Spawn(program=program, args=list(args or []), quotas=dict(quotas or {}), kv_quota=kv_quota,
                       models=list(models or []), rights=None if rights is None else list(rights))  # fmt: skip
        return self._run(one_call(call))

    def rights_drop(self, rights: list[str] | None = None) -> list[str]:
        """Give up `rights` for good (none: only ask); the rights this process holds afterwards."""
        return self._run(_field(m.RightsDrop(rights=list(rights or [])), "rights"))

    def wait(self, pid: int, timeout_s: float | None = None, on_output: Callable[[str], None] | None = None):
        """Wait for a child to end (Exited). `on_output` receives its output as it is written."""
        partial = None if on_output is None else (lambda out: on_output(out.data))
        return self._run(one_call(m.Wait(pid=pid, timeout_s=timeout_s, follow=on_output is not None), (), partial))

    def kill(self, pid: int, signal: int = 15):
        """End this process or one of its children."""
        return self._run(one_call(m.Kill(pid=pid, signal=signal)))

    # ---- device ------------------------------------------------------------------------

    def devices(self):
        """Every device: a list of DeviceInfo."""
        return self._run(_field(m.DevList(), "devices"))

    def device(self, name: str):
        """One device, by name (`cpu0`) or kind (`cpu`)."""
        return self._run(one_call(m.DevInfo(device=name)))

    def drivers(self):
        """Every driver the kernel's plugins provide, and the devices each runs (list of DriverInfo)."""
        return self._run(_field(m.DriverList(), "drivers"))

    def driver_load(self, kind: str):
        """Start a driver's devices on the running kernel (admin); returns the driver list once they are up."""
        return self._run(_field(m.DriverLoad(kind=kind), "drivers"))

    def driver_unload(self, kind: str):
        """Stop a driver's devices (admin): work on them fails with EIO, their tensors are lost."""
        return self._run(_field(m.DriverUnload(kind=kind), "drivers"))

    # ---- memory ------------------------------------------------------------------------

    def alloc(self, device: str, shape: list[int], dtype: str = "float32", wait: bool = False):
        """An uninitialised tensor on `device`; returns its TensorRef (`.handle`).

        With `wait`, memory held by others is waited for instead of failing with EAGAIN.
        """
        return self._run(one_call(m.Alloc(device=device, shape=list(shape), dtype=dtype, wait=wait)))

    def free(self, handle: int):
        """Close a handle."""
        return self._run(one_call(m.Free(handle=handle)))

    def write(self, handle: int, tensor: torch.Tensor):
        """Overwrite the tensor behind `handle` with `tensor`'s bytes (same size).

        A tensor over the kernel's bulk limit goes as several `write` calls, a piece each.
        """
        return self._run(_write(handle, tensor_bytes(tensor), self.max_bulk_bytes))

    def read(self, handle: int) -> torch.Tensor:
        """The tensor behind `handle`, as a torch tensor on the CPU (in pieces, past the kernel's bulk limit)."""
        return self._run(_read(handle, self.max_bulk_bytes))

    def share(self, handle: int, pid: int) -> int:
        """Give process `pid` a handle to the same tensor; returns that handle's number there."""
        return self._run(_field(m.Share(handle=handle, pid=pid), "handle"))

    def handles(self, pid: int = 0):
        """A process's open handles (tensors, models, KV sequences) and who is charged for each: a list of HandleInfo.

        `pid` 0: this process's; another live process's are listed as metadata (ESRCH if there is none).
        """
        return self._run(_field(m.Handles(pid=pid), "handles"))

    def put(self, tensor: torch.Tensor, device: str = "cpu"):
        """Copy a torch tensor to `device`: alloc + write. Returns the TensorRef."""
        return self._run(_put(tensor, device, self.max_bulk_bytes))

    def memstat(self, blocks: bool = False):
        """The memory map of every device (a list of DeviceMem); with `blocks`, each KV block's owner and state."""
        return self._run(_field(m.MemStat(blocks=blocks), "devices"))

    # ---- paged KV cache ----------------------------------------------------------------

    def kv_pool(
        self,
        device: str,
        layers: int,
        kv_heads: int,
        head_dim: int,
        dtype: str = "bfloat16",
        block_size: int = 16,
        blocks: int = 0,
    ):
        """The KV pool of a model layout on a device, created with `blocks` blocks if new (KVPoolInfo)."""
        call = m.KVPool(
            device=device, layers=layers, kv_heads=kv_heads, head_dim=head_dim, dtype=dtype, block_size=block_size, blocks=blocks
        )
        return self._run(one_call(call))

    def kv_alloc(self, device: str, pool: str, tokens: list[int] | int = 0):
        """A new KV sequence for token ids (shares cached prefixes) or a token count (KVSeq)."""
        ids, length = _tokens(tokens)
        return self._run(one_call(m.KVAlloc(device=device, pool=pool, tokens=ids, length=length)))

    def kv_append(self, seq: int, tokens: list[int] | int = 1):
        """Grow a KV sequence; the reply lists the block copies copy-on-write made (KVSeq)."""
        ids, length = _tokens(tokens)
        return self._run(one_call(m.KVAppend(seq=seq, tokens=ids, length=length)))

    def kv_fork(self, seq: int):
        """A new sequence sharing all of `seq`'s blocks (KVSeq)."""
        return self._run(one_call(m.KVFork(seq=seq)))

    def kv_free(self, seq: int):
        """Free a KV sequence."""
        return self._run(one_call(m.KVFree(seq=seq)))

    def kv_table(self, seq: int):
        """A KV sequence's block table and length (KVSeq)."""
        return self._run(one_call(m.KVTable(seq=seq)))

    # ---- scheduling --------------------------------------------------------------------

    def sched(self, device: str):
        """Which policy orders `device`'s work (SchedInfo)."""
        return self._run(one_call(m.SchedGet(device=device)))

    def sched_set(self, device: str, policy: str):
        """Switch `device`'s scheduling policy at run time (SchedInfo)."""
        return self._run(one_call(m.SchedSet(device=device, policy=policy)))

    # ---- compute -----------------------------------------------------------------------

    def compute(self, op: str, *inputs: int, out: int | None = None, **params):
        """Run `op` on tensor handles; the result goes to `out` or a new handle (TensorRef)."""
        return self._run(one_call(m.Compute(op=op, inputs=list(inputs), out=out, params=params)))

    # ---- models ------------------------------------------------------------------------

    def model_load(self, device: str = "", arch: str = "auto", config: dict | None = None, checkpoint: str = "",
                   kv_blocks: int = 256, block_size: int = 16, dtype: str = "", seed: int = 0, path: str = "",
                   cache: bool = True, preempt: str = "recompute", swap_blocks: int = 0,
                   devices: list[str] | None = None):  # fmt: skip
        """Load a model on `device` (ModelInfo): from a Hugging Face-format folder `path` under the kernel's
        models directory, from a checkpoint under its storage, or fresh from `seed`. `dtype` "" keeps the stored one;
        `cache` False turns prefix caching off for the model's generate calls; `preempt` "swap" moves a preempted
        call's KV to `swap_blocks` host blocks (0: as many as `kv_blocks`) instead of computing it again.
        `devices` (two or more): one replica on each, trained data parallel by `train_step`."""
        call = m.ModelLoad(device=device, arch=arch, config=config or {}, checkpoint=checkpoint, kv_blocks=kv_blocks,
                           block_size=block_size, dtype=dtype, seed=seed, path=path, cache=cache, preempt=preempt,
                           swap_blocks=swap_blocks, devices=list(devices or []))  # fmt: skip
        return self._run(one_call(call))

    def model_free(self, model: int):
        """Free a model and its KV memory."""
        return self._run(one_call(m.ModelFree(model=model)))

    def generate(self, model: int, prompt: str | list[int], max_tokens: int = 64, temperature: float = 0.0,
                 top_k: int = 0, top_p: float = 1.0, seed: int = 0, stop: list[str] | None = None,
                 on_text: Callable[[str], None] | None = None, cache: bool = True):  # fmt: skip
        """Continue a prompt (text or token ids); `on_text` receives each streamed piece (Completion).
        `cache` False computes the whole prompt, without the KV other calls left (prefix caching)."""
        text, ids = (prompt, []) if isinstance(prompt, str) else ("", list(prompt))
        call = m.Generate(model=model, prompt=text, tokens=ids, max_tokens=max_tokens, temperature=temperature,
                          top_k=top_k, top_p=top_p, seed=seed, stop=list(stop or []), cache=cache)  # fmt: skip
        partial = None if on_text is None else (lambda piece: on_text(piece.text))
        return self._run(one_call(call, (), partial))

    def logprobs(self, model: int, tokens: list[int]) -> list[float]:
        """Log-probability of each token after the first, given the ones before it."""
        return self._run(_field(m.LogProbs(model=model, tokens=list(tokens)), "logprobs"))

    def model_save(self, model: int, path: str, format: str = ""):
        """Write the model at `path` under the storage directory: "llmos", a checkpoint file with its optimizer
        state; "hf", a Hugging Face-format folder; "" the folder format for a model loaded from a folder."""
        return self._run(one_call(m.ModelSave(model=model, path=path, format=format)))

    def tokenize(self, model: int, text: str, special: bool = False) -> list[int]:
        """The ids of `text` under the model's own tokenizer (`special`: as a prompt, e.g. with BOS)."""
        return self._run(_field(m.Tokenize(model=model, text=text, special=special), "tokens"))

    def detokenize(self, model: int, tokens: list[int]) -> str:
        """The text of token ids under the model's own tokenizer."""
        return self._run(_field(m.Detokenize(model=model, tokens=list(tokens)), "text"))

    def train_step(self, model: int, tokens: list[list[int]], lr: float = 3e-3, weight_decay: float = 0.01,
                   clip: float = 1.0):  # fmt: skip
        """One optimizer step on a batch of equal-length token windows (TrainResult: loss, grad_norm, step)."""
        call = m.TrainStep(model=model, tokens=[list(row) for row in tokens], lr=lr, weight_decay=weight_decay, clip=clip)
        return self._run(one_call(call))

    def model_quantize(self, model: int, scheme: str, group_size: int = 0, windows: list[list[int]] | None = None):
        """Quantize the model's linear layers, weights only: "int8" (per output channel) or "int4" (groups of
        `group_size`, 0: 32). Compressed: bytes, perplexity over the held-out `windows` and decode tokens/s,
        before and after. Only a model no other process holds may be changed (else EPERM)."""
        call = m.ModelQuantize(model=model, scheme=scheme, group_size=group_size, windows=_rows(windows))
        return self._run(one_call(call))

    def model_prune(self, model: int, sparsity: float, pattern: str = "unstructured",
                    windows: list[list[int]] | None = None):  # fmt: skip
        """Prune the model's linear layers by magnitude to `sparsity` ("unstructured", or "2:4" at 0.5);
        Compressed, as `model_quantize`."""
        call = m.ModelPrune(model=model, sparsity=sparsity, pattern=pattern, windows=_rows(windows))
        return self._run(one_call(call))


def _rows(windows: list[list[int]] | None) -> list[list[int]]:
    """Token windows as lists (none: no windows)."""
    return [list(row) for row in windows or []]


def _tokens(tokens: list[int] | int) -> tuple[list[int], int]:
    return ([], tokens) if isinstance(tokens, int) else (list(tokens), 0)


def _field(call: m.Call, field: str) -> Program:
    body = yield from one_call(call)
    return getattr(body, field)


def _write(handle: int, data: memoryview, piece: int) -> Program:
    """One write call, or (over `piece` bytes, the kernel's bulk limit) one per piece."""
    if not piece or len(data) <= piece:
        return (yield from one_call(m.Write(handle=handle), (data,)))
    for start in range(0, len(data), piece):
        done = yield from one_call(m.Write(handle=handle, offset=start), (data[start : start + piece],))
    return done


def _read(handle: int, piece: int) -> Program:
    """One read call, or (for a tensor over `piece` bytes, the kernel's bulk limit) one per piece."""
    if not piece:
        ref, bulk = yield m.Read(handle=handle), (), None
        return from_bytes(ref, bulk[0].buffer)
    ref, bulk = yield m.Read(handle=handle, offset=0, length=piece), (), None
    if ref.nbytes <= piece:
        return from_bytes(ref, bulk[0].buffer)
    buf = bytearray(ref.nbytes)
    buf[:piece] = bulk[0].buffer
    for start in range(piece, ref.nbytes, piece):
        _, bulk = yield m.Read(handle=handle, offset=start, length=piece), (), None
        buf[start : start + len(bulk[0])] = bulk[0].buffer
    return from_bytes(ref, buf)


def _put(tensor: torch.Tensor, device: str, piece: int) -> Program:
    ref = yield from one_call(m.Alloc(device=device, shape=list(tensor.shape), dtype=dtype_name(tensor)))
    yield from _write(ref.handle, tensor_bytes(tensor), piece)
    return ref
