"""The driver interface every device driver implements, and a torch-backed base.

A driver instance is one device. It lives in its own driver host process
(`llmos.drivers.host`), which turns the kernel's messages into calls of these
methods. Methods raise `DriverError` with an errno for failures the kernel
should pass on to the caller.

The tensors of a host-visible device are the kernel's: it places them in
shared-memory files and names the file and offset in every `TensorDesc`
(`shm`, `offset`); the driver maps those files (`TorchDriver.resolve`) and
drops a mapping when the kernel says the file is gone (`forget`). Other
devices allocate, free, write and read their own tensors by id.
"""

import importlib
import os
import warnings
import zlib
from typing import ClassVar

import torch
import torch.nn.functional as F

from llmos.syscalls import Errno
from llmos.syscalls.driver import (
    OPTIMIZER_COPIES, BlockMove, CompressOut, DeviceSpec, ModelDesc, SeqStep, TensorDesc, TrainOut,
)
from llmos.syscalls.dtypes import ITEMSIZE, nbytes
from llmos.syscalls.ops import OPS

from . import ops
from .errors import DriverError
from .group import GroupError, join, open_store
from .ledger import MemoryLedger


def weights_digest(model: torch.nn.Module) -> str:
    """A CRC-32 of a model's parameters' bytes, in hex: replicas that agree on it hold the same weights.

    Not a cryptographic hash (the replicas are not adversaries): it tells
    replicas that drifted apart from ones that did not, at about 2.5 ms for
    13 MB of weights where BLAKE2 took 12 ms, on every data-parallel step.
    """
    crc = 0
    for p in model.parameters():
        crc = zlib.crc32(p.detach().contiguous().cpu().view(-1).view(torch.uint8).numpy(), crc)
    return f"{crc:08x}"


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype of an ABI dtype name (the ABI uses torch's names)."""
    return getattr(torch, name)


class Driver:
    """One device. Subclasses set `kind` and implement the methods below."""

    kind: ClassVar[str] = ""

    def __init__(self, index: int, options: dict | None = None):
        self.index = index
        self.options = options or {}

    @classmethod
    def count(cls, options: dict | None = None) -> int:
        """How many devices of this kind the machine has (0: the driver has nothing to serve)."""
        raise NotImplementedError

    def spec(self) -> DeviceSpec:
        """Describe the device for the kernel (capacity, dtypes, ops, cost figures)."""
        raise NotImplementedError

    def alloc(self, t: TensorDesc) -> None:
        """Allocate tensor `t.tid`, or raise ENOMEM when the device has no room for it.

        Never called on a host-visible device: the kernel places those tensors itself.
        """
        raise NotImplementedError

    def free(self, tid: int) -> None:
        """Free a tensor (never called on a host-visible device)."""
        raise NotImplementedError

    def write(self, tid: int, data: memoryview) -> None:
        """Overwrite a tensor with raw bytes (never called on a host-visible device)."""
        raise NotImplementedError

    def read(self, tid: int) -> memoryview:
        """A tensor's raw bytes (never called on a host-visible device)."""
        raise NotImplementedError

    def write_at(self, tid: int, offset: int, data: memoryview) -> None:
        """Overwrite `len(data)` bytes of a tensor from byte `offset` on: a piece of a write over the bulk limit."""
        raise DriverError(Errno.EINVAL, f"the {self.kind} driver writes whole tensors only")

    def read_at(self, tid: int, offset: int, length: int) -> memoryview:
        """`length` bytes of a tensor from byte `offset` on: a piece of a read over the bulk limit."""
        raise DriverError(Errno.EINVAL, f"the {self.kind} driver reads whole tensors only")

    def run_op(self, op: str, inputs: list[TensorDesc], out: TensorDesc, params: dict) -> float:
        """Run one op into `out`; return simulated device seconds (0.0 on a real device)."""
        raise NotImplementedError

    def copy_blocks(self, desc: TensorDesc, block_bytes: int, pairs: list[tuple[int, int]]) -> None:
        """Copy whole blocks (source, destination) inside one tensor of `block_bytes`-byte blocks."""
        raise NotImplementedError

    def forget(self, path: str) -> None:
        """The kernel removed the shared-memory file `path`: drop any mapping of it (by default none is held)."""

    def model_load(self, mid: int, target: str, config: dict, dtype: str, checkpoint: str, kv_blocks: int, block_size: int,
                   seed: int = 0, folder: str = "", swap_blocks: int = 0, key: bytes = b"") -> ModelDesc:  # fmt: skip
        """Build (or read from `checkpoint`, or from the Hugging Face-format `folder`) model `mid` of the
        architecture `target` names, with its KV storage. A sealed checkpoint opens with `key`.

        A fresh model's weights are drawn from `seed` (the host's own random state is left alone).
        `swap_blocks` host-memory blocks are set aside for the KV of preempted sequences (see `model_step`).
        """
        raise DriverError(Errno.EINVAL, f"{self.kind} devices do not run models")

    def model_free(self, mid: int) -> None:
        """Drop a model and its KV storage."""
        raise DriverError(Errno.EINVAL, f"{self.kind} devices do not run models")

    def model_step(self, mid: int, seqs: list[SeqStep], steps: int = 1, moves: list[BlockMove] = ()) -> list[int]:
        """`steps` paged-KV generation steps (each later one feeds the tokens just drawn); the draws, step by step.

        First the KV block `moves` between the device pool and the host swap pool, in order.
        """
        raise DriverError(Errno.EINVAL, f"{self.kind} devices do not run models")

    def model_logprobs(self, mid: int, tokens: list[int]) -> list[float]:
        """Log-probability of each token after the first given the ones before it."""
        raise DriverError(Errno.EINVAL, f"{self.kind} devices do not run models")

    def model_save(self, mid: int, path: str, format: str = "llmos", source: str = "", key: bytes = b"") -> str | None:
        """Write the model: "llmos", a safetensors checkpoint (with its optimizer state and step, once trained),
        sealed under `key` if given; "hf", a Hugging Face-format folder with the tokenizer files of the folder
        `source`. Return the SHA-256 (hex) of what was written: the file's, or the folder's manifest digest
        (`models.checkpoint.folder_sha256`)."""
        raise DriverError(Errno.EINVAL, f"{self.kind} devices do not run models")

    def model_train_step(self, mid: int, tokens: list[list[int]], lr: float, weight_decay: float, clip: float,
                         total: int = 0, grouped: bool = False) -> TrainOut:  # fmt: skip
        """One optimizer step on a batch of token windows, the optimizer state kept on the device.

        `grouped`: `tokens` is this replica's shard of a batch of `total`
        windows, and the gradients are summed over the model's process group
        (`group_join`) before the step; the answer carries a digest of the
        weights after it, which every replica must agree on.
        """
        raise DriverError(Errno.EINVAL, f"{self.kind} devices do not run models")

    def group_open(self, mid: int, host: str, timeout_s: float) -> int:
        """As rank 0 of model `mid`'s process group: open its rendezvous store on a free port of `host`; the port."""
        raise DriverError(Errno.EINVAL, f"{self.kind} devices do not run models")

    def group_join(self, mid: int, rank: int, world: int, store: str, host: str, prefix: str, timeout_s: float,
                   backend: str = "gloo") -> None:  # fmt: skip
        """Join model `mid`'s process group as `rank` of `world` through the store at `store` ("HOST:PORT"),
        listening on `host`, over `backend` ("gloo", or "nccl" among CUDA devices); blocks until every rank
        has joined (EIO after `timeout_s`)."""
        raise DriverError(Errno.EINVAL, f"{self.kind} devices do not run models")

    def model_quantize(self, mid: int, scheme: str, group_size: int, windows: list[list[int]]) -> CompressOut:
        """Quantize the model's linear layers in place ("int8" per output channel, "int4" in groups of
        `group_size`), measuring it on the held-out `windows` before and after; its optimizer state is dropped."""
        raise DriverError(Errno.EINVAL, f"{self.kind} devices do not run models")

    def model_prune(self, mid: int, sparsity: float, pattern: str, windows: list[list[int]]) -> CompressOut:
        """Prune the model's linear layers in place to `sparsity` by magnitude ("unstructured" or "2:4"),
        measuring it on the held-out `windows` before and after; its optimizer state is dropped."""
        raise DriverError(Errno.EINVAL, f"{self.kind} devices do not run models")

    def close(self) -> None:
        """Release everything (the host is stopping)."""


class LoadedModel:
    """A model on a torch device: its architecture name, module, paged KV storage and training state.

    The optimizer is made on the first training step, from `optimizer_state`
    when the model came from a checkpoint that held one. A replica of a
    replicated model also holds its process group (`drivers/group.py`), and
    on rank 0 the group's store.
    """

    def __init__(self, arch: str, model: torch.nn.Module, kv, step: int = 0, optimizer_state: dict | None = None):
        self.arch = arch
        self.model = model
        self.kv = kv
        self.step = step
        self.optimizer: torch.optim.Optimizer | None = None
        self.optimizer_state = optimizer_state
        self.store = None  # rank 0's rendezvous store (group_open), until the group is joined
        self.group = None  # its process group (group_join)
        self.graphs = None  # its captured decode steps (drivers/graphs.py), where the driver captures them


class TorchDriver(Driver):
    """A driver whose tensors are torch tensors on `self.device`; subclasses add capacity.

    A subclass that enforces its capacity itself sets `ledger` (drivers/ledger.py):
    every tensor it allocates and every model it loads is then charged there
    first, and released when freed.
    """

    device: ClassVar[str] = "cpu"

    def __init__(self, index: int, options: dict | None = None):
        super().__init__(index, options)
        if self.options.get("threads"):  # torch's intra-op threads in this host (default: torch's choice)
            torch.set_num_threads(int(self.options["threads"]))
        self.tensors: dict[int, torch.Tensor] = {}  # tensors this driver allocated, by id
        self.mapped: dict[str, torch.Tensor] = {}  # shared-memory path -> the whole file, mapped (host-visible)
        self.models: dict[int, LoadedModel] = {}
        self.ledger: MemoryLedger | None = None  # the device's own byte accounting, where it keeps one

    def dtypes(self) -> list[str]:
        """The ABI dtypes this device supports."""
        return list(ITEMSIZE)

    def new_tensor(self, t: TensorDesc) -> torch.Tensor:
        """Create the storage of a tensor (a subclass may carve it from memory of its own)."""
        return torch.empty(t.shape, dtype=torch_dtype(t.dtype), device=self.device)

    def alloc(self, t: TensorDesc) -> None:
        """Allocate with `new_tensor`: EINVAL for an id in use, ENOMEM past the ledger's capacity (where there is
        one) or for torch's own out-of-memory."""
        if t.tid in self.tensors:
            raise DriverError(Errno.EINVAL, f"tensor {t.tid} already exists on this device")
        if self.ledger is not None:
            self.ledger.charge(("tensor", t.tid), nbytes(t.shape, t.dtype), f"tensor {t.tid} ({t.shape} {t.dtype})")
        try:
            self.tensors[t.tid] = self.new_tensor(t)
        except (RuntimeError, OSError) as exc:  # the device's own out-of-memory
            self.release(("tensor", t.tid))
            raise DriverError(Errno.ENOMEM, f"the device could not allocate {t.shape} {t.dtype}: {exc}") from exc

    def release(self, holder: tuple[str, int]) -> None:
        """Drop a tensor's or a model's charge from the ledger (where there is one)."""
        if self.ledger is not None:
            self.ledger.release(holder)

    def tensor(self, tid: int) -> torch.Tensor:
        """The tensor with this id, or EINVAL."""
        try:
            return self.tensors[tid]
        except KeyError:
            raise DriverError(Errno.EINVAL, f"no tensor {tid} on this device") from None

    def resolve(self, desc: TensorDesc) -> torch.Tensor:
        """The tensor `desc` names: a view of its shared-memory file when the kernel placed it there
        (`desc.shm`), else the one this driver holds under `desc.tid` (EINVAL if none).

        A tensor of no bytes has no place: a fresh empty tensor stands for it.
        """
        if desc.shm:
            return self.shared_view(desc)
        if desc.tid not in self.tensors and nbytes(desc.shape, desc.dtype) == 0:
            return torch.empty(desc.shape, dtype=torch_dtype(desc.dtype), device=self.device)
        return self.tensor(desc.tid)

    def shared_view(self, desc: TensorDesc) -> torch.Tensor:
        """`desc`'s bytes in its shared-memory file, as a tensor; each file is mapped once, until `forget`."""
        size = nbytes(desc.shape, desc.dtype)
        try:
            if desc.shm not in self.mapped:
                self.mapped[desc.shm] = torch.from_file(
                    desc.shm, shared=True, size=os.path.getsize(desc.shm), dtype=torch.uint8
                )
            data = self.mapped[desc.shm][desc.offset : desc.offset + size]
            return data.view(torch_dtype(desc.dtype)).view(desc.shape)
        except (RuntimeError, OSError) as exc:  # no such file, too short, or an offset the dtype cannot start at
            raise DriverError(Errno.EINVAL, f"tensor {desc.tid} at {desc.shm}+{desc.offset}: {exc}") from exc

    def forget(self, path: str) -> None:
        """Unmap `path` (the kernel removed it) if it is mapped."""
        self.mapped.pop(path, None)

    def free(self, tid: int) -> None:
        self.tensor(tid)
        del self.tensors[tid]
        self.release(("tensor", tid))

    def write(self, tid: int, data: memoryview) -> None:
        dst = self.tensor(tid)
        if dst.numel():
            with warnings.catch_warnings():  # a read-only buffer is fine: it is only read
                warnings.simplefilter("ignore", UserWarning)
                src = torch.frombuffer(data, dtype=torch.uint8)
            dst.view(-1).view(torch.uint8).copy_(src)

    def read(self, tid: int) -> memoryview:
        t = self.tensor(tid).contiguous().cpu()
        return memoryview(t.view(-1).view(torch.uint8).numpy()) if t.numel() else memoryview(b"")

    def write_at(self, tid: int, offset: int, data: memoryview) -> None:
        if len(data):
            with warnings.catch_warnings():  # a read-only buffer is fine: it is only read
                warnings.simplefilter("ignore", UserWarning)
                src = torch.frombuffer(data, dtype=torch.uint8)
            self.tensor(tid).view(-1).view(torch.uint8)[offset : offset + len(data)].copy_(src)

    def read_at(self, tid: int, offset: int, length: int) -> memoryview:
        t = self.tensor(tid)
        if not t.numel() or not length:
            return memoryview(b"")
        return memoryview(t.contiguous().view(-1).view(torch.uint8)[offset : offset + length].cpu().numpy())

    def operand(self, t: torch.Tensor) -> torch.Tensor:
        """An op's input as the device computes with it (a subclass may convert it)."""
        return t

    def op_seconds(self, op: str, inputs: list[TensorDesc], out: TensorDesc) -> float:
        """Simulated device seconds of one op; 0.0 for a real device."""
        return 0.0

    def run_op(self, op: str, inputs: list[TensorDesc], out: TensorDesc, params: dict) -> float:
        if op not in OPS:
            raise DriverError(Errno.EINVAL, f"unknown op {op!r}")
        try:
            ops.run(op, [self.operand(self.resolve(t)) for t in inputs], self.resolve(out), params)
        except RuntimeError as exc:
            raise DriverError(Errno.EINVAL, f"{op} failed on the device: {exc}") from exc
        return self.op_seconds(op, inputs, out)

    def copy_blocks(self, desc: TensorDesc, block_bytes: int, pairs: list[tuple[int, int]]) -> None:
        blocks = self.resolve(desc).view(-1).view(torch.uint8).view(-1, block_bytes)
        if any(not (0 <= i < blocks.shape[0]) for pair in pairs for i in pair):
            raise DriverError(Errno.EINVAL, f"block index out of range 0..{blocks.shape[0] - 1} in {pairs}")
        src, dst = zip(*pairs) if pairs else ((), ())
        blocks[list(dst)] = blocks[list(src)]

    def model_load(self, mid: int, target: str, config: dict, dtype: str, checkpoint: str, kv_blocks: int, block_size: int,
                   seed: int = 0, folder: str = "", swap_blocks: int = 0, key: bytes = b"") -> ModelDesc:  # fmt: skip
        from .models.checkpoint import file_sha256, folder_sha256, load_checkpoint
        from .models.compress import held_bytes, layout_of, restore
        from .models.compression import describe

        if mid in self.models:
            raise DriverError(Errno.EINVAL, f"model {mid} already exists on this device")
        module, _, name = target.partition(":")
        arch = getattr(importlib.import_module(module), name)()
        ckpt = None
        try:
            if folder:
                from .models.hf_weights import load_pretrained

                built, model = load_pretrained(folder, self.device, dtype)
                if built != arch.name:
                    raise ValueError(f"{folder} holds a {built} model, not {arch.name}")
            elif checkpoint:
                ckpt = load_checkpoint(checkpoint, self.device, key or None)
                if ckpt.arch != arch.name:
                    raise ValueError(f"{checkpoint} holds a {ckpt.arch} model, not {arch.name}")
                if {**ckpt.config, **config} != ckpt.config:
                    raise ValueError(f"config {config} disagrees with the checkpoint's {ckpt.config}")
                config = ckpt.config
            if not folder:
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(seed)
                    model = arch.model_class(arch.config_class.from_dict(config))
            if ckpt is not None:
                restore(model, ckpt.compression)
                model.load_state_dict(ckpt.model_state)
        except (ValueError, TypeError, RuntimeError, OSError) as exc:
            raise DriverError(Errno.EINVAL, f"cannot load {arch.name}: {exc}") from exc
        try:
            model = model.to(device=self.device, dtype=torch_dtype(dtype)).eval()
            kv = model.new_kv(kv_blocks, block_size)
            if swap_blocks:
                kv.add_host(swap_blocks)
        except (RuntimeError, ValueError) as exc:
            raise DriverError(Errno.ENOMEM, f"the device could not hold the model: {exc}") from exc
        step, optimizer_state = (ckpt.step, ckpt.optimizer_state) if ckpt is not None else (0, None)
        kv_bytes = kv.data.numel() * kv.data.element_size()
        if self.ledger is not None:  # (refused: the model and its pool are dropped with this frame)
            self.ledger.charge(("model", mid), held_bytes(model) + kv_bytes, f"model {mid} ({arch.name})")
        self.models[mid] = m = LoadedModel(arch.name, model, kv, step, optimizer_state)
        m.graphs = self.decode_graphs(mid, m)
        layout = layout_of(model)  # a compressed model's matrices are buffers: count their weights too
        params = sum(p.numel() for p in model.parameters()) + sum(s["out"] * s["in"] for s in layout.values())
        digest = file_sha256(checkpoint) if checkpoint else folder_sha256(folder) if folder else ""
        return ModelDesc(
            config=model.config.to_dict(), params=params, param_bytes=held_bytes(model), kv_bytes=kv_bytes, step=step,
            compression=describe(layout), sha256=digest,
        )

    def model(self, mid: int) -> LoadedModel:
        """The loaded model with this id, or EINVAL."""
        try:
            return self.models[mid]
        except KeyError:
            raise DriverError(Errno.EINVAL, f"no model {mid} on this device") from None

    def model_free(self, mid: int) -> None:
        self.model(mid)
        del self.models[mid]
        self.release(("model", mid))

    def model_step(self, mid: int, seqs: list[SeqStep], steps: int = 1, moves: list[BlockMove] = ()) -> list[int]:
        from .models.decoding import SamplingParams
        from .models.sampling import make_generator, sample_batch

        m = self.model(mid)
        for move in moves:
            try:
                m.kv.swap(move.out, move.pairs)
            except IndexError as exc:
                raise DriverError(Errno.EINVAL, f"step failed: {exc}") from exc
        tokens, positions, tables = [s.tokens for s in seqs], [s.position for s in seqs], [s.table for s in seqs]
        drawn: list[int] = []
        try:
            params = [SamplingParams(s.temperature, s.top_k, s.top_p, s.seed) for s in seqs]
        except ValueError as exc:
            raise DriverError(Errno.EINVAL, f"step failed: {exc}") from exc
        greedy = all(p.temperature == 0.0 for p in params)
        for _ in range(steps):
            try:
                logits = self.step_logits(m, tokens, positions, tables)
            except ValueError as exc:
                raise DriverError(Errno.EINVAL, f"step failed: {exc}") from exc
            positions = [p + len(t) for p, t in zip(positions, tokens)]
            if greedy:
                nxt = logits.argmax(-1).tolist()
            else:  # one generator per token drawn, seeded by (seed, position): the same draw whatever the batch
                gens = [
                    None if p.temperature == 0.0 else make_generator(hash((p.seed, at)) & (2**63 - 1), logits.device)
                    for p, at in zip(params, positions)
                ]
                nxt = sample_batch(logits.float(), params, gens)
            drawn += nxt
            tokens = [[t] for t in nxt]
        return drawn

    def graph_backend(self):
        """What captures this device's decode steps (drivers/graphs.py: `CudaGraphs`, `EagerGraphs`), or None:
        every step runs eagerly (the default)."""
        return None

    def decode_graphs(self, mid: int, m: LoadedModel):
        """A fresh `DecodeGraphs` for model `mid`, charging its captures to the model, or None without a backend."""
        backend = self.graph_backend()
        if backend is None:
            return None
        from .graphs import DecodeGraphs

        def charge(nbytes: int) -> None:
            if self.ledger is not None:
                self.ledger.grow(("model", mid), nbytes, f"model {mid}'s decode graph")

        return DecodeGraphs(m.model, m.kv, backend, charge)

    def step_logits(self, m: LoadedModel, tokens: list[list[int]], positions: list[int],
                    tables: list[list[int]]) -> torch.Tensor:  # fmt: skip
        """One paged step (`PagedLM.step`): the logits of each sequence's last fed token; a decode step replays
        its captured graph where the model has them (`LoadedModel.graphs`)."""
        logits = m.graphs.step(tokens, positions, tables) if m.graphs is not None else None
        return m.model.step(m.kv, tokens, positions, tables) if logits is None else logits

    def model_logprobs(self, mid: int, tokens: list[int]) -> list[float]:
        m = self.model(mid)
        if len(tokens) < 2:
            return []
        try:
            with torch.no_grad():
                ids = torch.tensor([tokens], dtype=torch.long, device=self.device)
                logp = F.log_softmax(m.model(ids[:, :-1]).double(), dim=-1)
                return logp.gather(-1, ids[:, 1:, None]).flatten().tolist()
        except (ValueError, IndexError, RuntimeError) as exc:
            raise DriverError(Errno.EINVAL, f"logprobs failed: {exc}") from exc

    def model_save(self, mid: int, path: str, format: str = "llmos", source: str = "", key: bytes = b"") -> str | None:
        from .models.checkpoint import folder_sha256, save_checkpoint

        m = self.model(mid)
        try:
            if format == "hf":
                from .models.hf_weights import save_pretrained

                save_pretrained(m.model, m.arch, path, tokenizer_from=source)
                return folder_sha256(path)
            return save_checkpoint(path, m.model, m.optimizer, step=m.step, arch=m.arch, key=key or None)
        except OSError as exc:
            errno = Errno.ENAMETOOLONG if exc.errno == Errno.ENAMETOOLONG else Errno.EINVAL
            raise DriverError(errno, f"cannot write {path}: {exc}") from exc

    def model_train_step(self, mid: int, tokens: list[list[int]], lr: float, weight_decay: float, clip: float,
                         total: int = 0, grouped: bool = False) -> TrainOut:  # fmt: skip
        from .models.compress import held_bytes, layout_of
        from .models.train import make_optimizer, set_hyperparams, train_step

        m = self.model(mid)
        if grouped and m.group is None:
            raise DriverError(Errno.EINVAL, f"model {mid} has no process group on this device (group_join first)")
        if grouped and total < max(1, len(tokens)):
            raise DriverError(Errno.EINVAL, f"a shard of {len(tokens)} windows of a batch of {total}")
        if layout_of(m.model):  # the kernel refuses it too; this catches a step queued behind the change
            raise DriverError(Errno.EINVAL, "a compressed model does not train")
        if m.optimizer is None:  # its first step: charged for gradients and optimizer state, as the kernel does
            if self.ledger is not None:
                self.ledger.grow(("model", mid), OPTIMIZER_COPIES * held_bytes(m.model), f"training model {mid}")
            m.optimizer = make_optimizer(m.model)
        try:
            batch = torch.tensor(tokens, dtype=torch.long, device=self.device)
            if m.optimizer_state is not None:  # from the checkpoint, once
                m.optimizer.load_state_dict(m.optimizer_state)
                m.optimizer_state = None
            set_hyperparams(m.optimizer, lr, weight_decay)
            share = len(tokens) / total if grouped else 1.0
            loss, norm = train_step(m.model, m.optimizer, batch, clip, share, m.group.sum if grouped else None)
        except GroupError as exc:
            raise DriverError(Errno.EIO, f"model {mid}: {exc}") from exc
        except (ValueError, IndexError, RuntimeError) as exc:
            raise DriverError(Errno.EINVAL, f"training step failed: {exc}") from exc
        m.step += 1
        return TrainOut(loss=loss, grad_norm=norm, step=m.step, digest=weights_digest(m.model) if grouped else "")

    def group_open(self, mid: int, host: str, timeout_s: float) -> int:
        m = self.model(mid)
        try:
            m.store = open_store(host, timeout_s)
        except GroupError as exc:
            raise DriverError(Errno.EIO, f"model {mid}: {exc}") from exc
        return m.store.port

    def group_join(self, mid: int, rank: int, world: int, store: str, host: str, prefix: str, timeout_s: float,
                   backend: str = "gloo") -> None:  # fmt: skip
        m = self.model(mid)
        if rank == 0 and m.store is None:
            raise DriverError(Errno.EINVAL, f"rank 0 of model {mid}'s group has no store (group_open first)")
        m.group = None  # an earlier group of the model is dropped, joined or not
        try:
            m.group = join(m.store if rank == 0 else None, store, host, rank, world, prefix, timeout_s, backend,
                           self.device)  # fmt: skip
        except GroupError as exc:
            raise DriverError(Errno.EIO, f"model {mid}: {exc}") from exc
        finally:
            m.store = None  # the group keeps rank 0's store alive as long as it needs it

    def model_quantize(self, mid: int, scheme: str, group_size: int, windows: list[list[int]]) -> CompressOut:
        from .models.quantize import quantize_model

        return self._compress(mid, lambda model: quantize_model(model, scheme, group_size), windows)

    def model_prune(self, mid: int, sparsity: float, pattern: str, windows: list[list[int]]) -> CompressOut:
        from .models.prune import prune_model

        return self._compress(mid, lambda model: prune_model(model, sparsity, pattern), windows)

    def _compress(self, mid: int, change, windows: list[list[int]]) -> CompressOut:
        """Apply `change` to the model through `compress.compress`; EINVAL for a change or windows it refuses."""
        from .models.compress import compress, layout_of

        m = self.model(mid)
        if layout_of(m.model):
            raise DriverError(Errno.EINVAL, "the model is compressed already")
        try:
            out = compress(m.model, change, windows)
        except (ValueError, IndexError, RuntimeError) as exc:
            raise DriverError(Errno.EINVAL, f"cannot compress the model: {exc}") from exc
        m.optimizer, m.optimizer_state = None, None  # a compressed model does not train: its optimizer state goes
        if self.ledger is not None:  # it now holds fewer bytes: re-charged at what it holds (this always fits)
            self.ledger.release(("model", mid))
            self.ledger.charge(("model", mid), out.bytes_after + m.kv.data.numel() * m.kv.data.element_size())
        m.graphs = self.decode_graphs(mid, m)  # its graphs recorded the replaced layers: they go with their charge
        return out

    def close(self) -> None:
        self.tensors.clear()
        self.mapped.clear()
        self.models.clear()
        if self.ledger is not None:
            self.ledger.clear()
