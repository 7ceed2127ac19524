"""The CUDA driver: device `cudaN` is torch's `cuda:N`, with real results and real time.

Its memory is not host-visible: the kernel moves tensor bytes through this
process (DWrite/DRead), which copies them to and from the GPU. Capacity is the
GPU memory free when the host starts (`torch.cuda.mem_get_info`), or less when
the option `capacity_bytes` says so. The driver enforces it with its own byte
ledger (drivers/ledger.py): the tensors and models (weights and KV pools,
then optimizer state) it gives out are charged before they are allocated, a
decode graph's memory once it is captured, and past the capacity the answer
is ENOMEM. It does not cap torch's caching allocator: that would count the
blocks torch keeps cached and whatever else the process holds on the GPU,
not what the device gave out. Torch's own out-of-memory error is ENOMEM too.
On a machine without a GPU `count()` is 0: the host of `cuda0` says so in its
Hello and the kernel marks the kind absent. Each op waits for the GPU to
finish, so an op's failure is reported by that op and the host's `wall_s` is
the GPU's time.

Option `graphs` (default false): capture each model's decode steps as CUDA
graphs, one per batch and context bucket, and replay them, so that a decode
step is one launch instead of one per kernel (drivers/graphs.py); prefill
steps and batches past the largest bucket run eagerly.
"""

import torch

from llmos.syscalls.driver import DeviceSpec, TensorDesc
from llmos.syscalls.dtypes import ITEMSIZE
from llmos.syscalls.ops import OPS

from ..base import TorchDriver
from ..graphs import CudaGraphs
from ..ledger import MemoryLedger


class CudaDriver(TorchDriver):
    """One NVIDIA GPU as an llmos device."""

    kind = "cuda"

    def __init__(self, index: int, options: dict | None = None):
        super().__init__(index, options)
        self.device = f"cuda:{index}"
        self.capacity = self.offered_memory() if index < self.count(options) else 0
        self.ledger = MemoryLedger(self.capacity, "GPU memory")

    def offered_memory(self) -> int:
        """The bytes this device offers: free GPU memory, or `capacity_bytes` if less."""
        free, _ = torch.cuda.mem_get_info(self.index)
        return min(free, int(self.options.get("capacity_bytes", free)))

    @classmethod
    def count(cls, options: dict | None = None) -> int:
        return torch.cuda.device_count() if torch.cuda.is_available() else 0

    def dtypes(self) -> list[str]:
        names = list(ITEMSIZE)
        return names if torch.cuda.is_bf16_supported() else [n for n in names if n != "bfloat16"]

    def graph_backend(self) -> CudaGraphs | None:
        """CUDA graphs where the option `graphs` asks for them."""
        return CudaGraphs(self.device) if self.options.get("graphs") else None

    def spec(self) -> DeviceSpec:
        props = torch.cuda.get_device_properties(self.index)
        return DeviceSpec(
            description=(
                f"{props.name} (compute capability {props.major}.{props.minor}, {props.multi_processor_count} SMs, "
                f"{props.total_memory / (1 << 30):.1f} GiB, CUDA {torch.version.cuda}, torch {torch.__version__})"
            ),
            capacity_bytes=self.capacity,
            dtypes=self.dtypes(),
            ops=sorted(OPS),
        )

    def run_op(self, op: str, inputs: list[TensorDesc], out: TensorDesc, params: dict) -> float:
        """Run the op on the GPU and wait for it: real time, so no simulated seconds."""
        seconds = super().run_op(op, inputs, out, params)
        torch.cuda.synchronize(self.device)
        return seconds

    def close(self) -> None:
        super().close()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
