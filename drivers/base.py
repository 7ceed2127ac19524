"""The driver interface every device driver implements, and a torch-backed base.

A driver instance is one device. It lives in its own driver host process
(`llmos.drivers.host`), which turns the kernel's messages into calls of these
methods. Methods raise `DriverError` with an errno for failures the kernel
should pass on to the caller.
"""

import warnings
from typing import ClassVar

import torch

from llmos.syscalls import Errno
from llmos.syscalls.driver import DeviceSpec, TensorDesc
from llmos.syscalls.dtypes import ITEMSIZE
from llmos.syscalls.ops import OPS

from . import ops


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype of an ABI dtype name (the ABI uses torch's names)."""
    return getattr(torch, name)


class DriverError(Exception):
    """A failure the kernel reports to the caller with this errno."""

    def __init__(self, errno: Errno, message: str):
        super().__init__(message)
        self.errno = errno
        self.message = message


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

    def alloc(self, t: TensorDesc) -> str:
        """Allocate tensor `t.tid`; return a shared-memory path if host-visible, else ""."""
        raise NotImplementedError

    def free(self, tid: int) -> None:
        """Free a tensor."""
        raise NotImplementedError

    def write(self, tid: int, data: memoryview) -> None:
        """Overwrite a tensor with raw bytes."""
        raise NotImplementedError

    def read(self, tid: int) -> memoryview:
        """A tensor's raw bytes."""
        raise NotImplementedError

    def run_op(self, op: str, inputs: list[TensorDesc], out: TensorDesc, params: dict) -> float:
        """Run one op into `out`; return simulated device seconds (0.0 on a real device)."""
        raise NotImplementedError

    def copy_blocks(self, tid: int, block_bytes: int, pairs: list[tuple[int, int]]) -> None:
        """Copy whole blocks (source, destination) inside one tensor of `block_bytes`-byte blocks."""
        raise NotImplementedError

    def close(self) -> None:
        """Release everything (the host is stopping)."""


class TorchDriver(Driver):
    """A driver whose tensors are torch tensors on `self.device`; subclasses add capacity."""

    device: ClassVar[str] = "cpu"

    def __init__(self, index: int, options: dict | None = None):
        super().__init__(index, options)
        self.tensors: dict[int, torch.Tensor] = {}

    def dtypes(self) -> list[str]:
        """The ABI dtypes this device supports."""
        return list(ITEMSIZE)

    def new_tensor(self, t: TensorDesc) -> tuple[torch.Tensor, str]:
        """Create the storage of a tensor; subclasses may return a shared-memory path."""
        return torch.empty(t.shape, dtype=torch_dtype(t.dtype), device=self.device), ""

    def alloc(self, t: TensorDesc) -> str:
        if t.tid in self.tensors:
            raise DriverError(Errno.EINVAL, f"tensor {t.tid} already exists on this device")
        try:
            tensor, shm = self.new_tensor(t)
        except (RuntimeError, OSError) as exc:  # the device's own out-of-memory
            raise DriverError(Errno.ENOMEM, f"the device could not allocate {t.shape} {t.dtype}: {exc}") from exc
        self.tensors[t.tid] = tensor
        return shm

    def tensor(self, tid: int) -> torch.Tensor:
        """The tensor with this id, or EINVAL."""
        try:
            return self.tensors[tid]
        except KeyError:
            raise DriverError(Errno.EINVAL, f"no tensor {tid} on this device") from None

    def free(self, tid: int) -> None:
        self.tensor(tid)
        del self.tensors[tid]

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
            ops.run(op, [self.operand(self.tensor(t.tid)) for t in inputs], self.tensor(out.tid), params)
        except RuntimeError as exc:
            raise DriverError(Errno.EINVAL, f"{op} failed on the device: {exc}") from exc
        return self.op_seconds(op, inputs, out)

    def copy_blocks(self, tid: int, block_bytes: int, pairs: list[tuple[int, int]]) -> None:
        blocks = self.tensor(tid).view(-1).view(torch.uint8).view(-1, block_bytes)
        if any(not (0 <= i < blocks.shape[0]) for pair in pairs for i in pair):
            raise DriverError(Errno.EINVAL, f"block index out of range 0..{blocks.shape[0] - 1} in {pairs}")
        src, dst = zip(*pairs) if pairs else ((), ())
        blocks[list(dst)] = blocks[list(src)]

    def close(self) -> None:
        self.tensors.clear()
