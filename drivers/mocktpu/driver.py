"""The mock TPU driver: a simulated accelerator with real results and simulated time.

Each device is modelled on one Google TPU v4 chip (the `mocktpu` preset of
`llmos.drivers.costmodel`: 2 TensorCores, 275 TFLOP/s bfloat16, 32 GiB of
HBM at 1200 GB/s). Its tensors are torch tensors in this host process's
memory; that memory is not host-visible, so the kernel moves tensor bytes
through this process (DWrite/DRead), as for a real accelerator.

- **Numerics.** Tensors are stored in the dtype they were allocated with.
  Ops on floating tensors compute in bfloat16, like a TPU's matrix units: the
  inputs are rounded to bfloat16, the op runs in bfloat16, and the result is
  stored in the output's dtype (a float32 result holds bfloat16-rounded
  values). Integer and bool ops compute exactly. Supported dtypes are those a
  TPU handles natively (`DTYPES`): no float64, float16 or int64.
- **Memory.** The driver enforces its HBM capacity itself, with a byte
  ledger (drivers/ledger.py): a tensor or model that would take what it
  holds past `hbm_bytes` fails with ENOMEM, whatever the kernel's accounting
  said.
- **Time.** `run_op` returns the op's simulated seconds from the roofline cost
  model (`cost.op_seconds`); the host reports them to the kernel as `sim_s`.

Options (the kernel's `driver_options["mocktpu"]`), defaults from the preset:
`count` devices (1), `cores` per chip (2), `core_flops` per core (137.5e12),
`hbm_bytes` (32 GiB), `hbm_bw_bytes_s` (1.2e12), `overhead_s` per op (50e-6).
"""

from dataclasses import dataclass, fields

import torch

from llmos.syscalls import Errno
from llmos.syscalls.driver import DeviceSpec, TensorDesc
from llmos.syscalls.ops import OPS

from .. import costmodel
from ..base import DriverError, TorchDriver
from ..ledger import MemoryLedger
from .cost import op_seconds

PRESET = costmodel.device("mocktpu")
PRESET_CORES = 2  # a TPU v4 chip has two TensorCores; the preset's peak is the chip's
DTYPES = ["float32", "bfloat16", "int32", "int16", "int8", "uint8", "bool"]


@dataclass(frozen=True)
class TpuConfig:
    """The simulated chip, from the driver options; every figure must be positive."""

    count: int = 1
    cores: int = PRESET_CORES
    core_flops: float = PRESET.peak_flops / PRESET_CORES
    hbm_bytes: int = PRESET.mem_capacity
    hbm_bw_bytes_s: float = PRESET.mem_bandwidth
    overhead_s: float = PRESET.step_overhead

    @classmethod
    def from_options(cls, options: dict | None) -> "TpuConfig":
        """Read the options this driver knows (and the kernel's `shm_dir`, unused); reject others."""
        options = {k: v for k, v in (options or {}).items() if k != "shm_dir"}
        known = {f.name: f.type for f in fields(cls)}
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise ValueError(f"mocktpu: unknown options {unknown}; it takes {sorted(known)}")
        for name, value in options.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"mocktpu: option {name} must be a positive number, not {value!r}")
            if known[name] is int and value != int(value):
                raise ValueError(f"mocktpu: option {name} must be a whole number, not {value!r}")
        return cls(**{k: int(v) if known[k] is int else float(v) for k, v in options.items()})

    @property
    def peak_flops(self) -> float:
        """The chip's peak: every core's matrix units busy."""
        return self.cores * self.core_flops

    def roofline(self) -> costmodel.DeviceSpec:
        """This chip as a device of the shared cost model."""
        return costmodel.DeviceSpec("mocktpu", self.peak_flops, self.hbm_bw_bytes_s, self.hbm_bytes, self.overhead_s)


def on_matrix_units(x: torch.Tensor) -> torch.Tensor:
    """The operand the simulated chip computes with: floating tensors in bfloat16."""
    return x.to(torch.bfloat16) if x.is_floating_point() else x


class MockTpuDriver(TorchDriver):
    """One simulated TPU chip."""

    kind = "mocktpu"
    device = "cpu"

    def __init__(self, index: int, options: dict | None = None):
        super().__init__(index, options)
        self.config = TpuConfig.from_options(options)
        self.cost = self.config.roofline()
        self.ledger = MemoryLedger(self.config.hbm_bytes, "HBM")

    @classmethod
    def count(cls, options: dict | None = None) -> int:
        return TpuConfig.from_options(options).count

    def dtypes(self) -> list[str]:
        return list(DTYPES)

    def spec(self) -> DeviceSpec:
        c = self.config
        return DeviceSpec(
            description=(
                f"mock TPU (simulated, modelled on TPU v4): {c.cores} cores, {c.peak_flops / 1e12:g} TFLOP/s bf16, "
                f"{c.hbm_bytes / costmodel.GIB:g} GiB HBM at {c.hbm_bw_bytes_s / 1e9:g} GB/s"
            ),
            capacity_bytes=c.hbm_bytes,
            dtypes=self.dtypes(),
            ops=sorted(OPS),
            host_visible=False,
            simulated=True,
            peak_flops=c.peak_flops,
            mem_bw_bytes_s=c.hbm_bw_bytes_s,
        )

    def alloc(self, t: TensorDesc) -> None:
        """Allocate in HBM: EINVAL for a dtype the chip lacks, ENOMEM past `hbm_bytes` (the ledger's)."""
        if t.dtype not in DTYPES:
            raise DriverError(Errno.EINVAL, f"mocktpu has no {t.dtype}; it supports {', '.join(DTYPES)}")
        super().alloc(t)

    def operand(self, t: torch.Tensor) -> torch.Tensor:
        """Floating inputs are computed in bfloat16, as the matrix units do."""
        return on_matrix_units(t)

    def op_seconds(self, op: str, inputs: list[TensorDesc], out: TensorDesc) -> float:
        """The op's simulated seconds from the roofline cost model."""
        return op_seconds(self.cost, self.config.overhead_s, op, [t.shape for t in inputs], out.shape, out.dtype)

