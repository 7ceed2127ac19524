"""Drivers for testing the conformance kit: a good one, and one per broken rule.

Test modules import them; `wrongsub` is also a plugin (LLMOS_PLUGINS=testdrivers
with this folder on PYTHONPATH) so a booted kernel can serve a broken driver.
"""

import msgspec
import torch

from llmos.drivers.base import Driver, DriverError, TorchDriver
from llmos.syscalls import Errno
from llmos.syscalls.driver import DeviceSpec
from llmos.syscalls.dtypes import ITEMSIZE
from llmos.syscalls.ops import OPS
from llmos.syscalls.plugin import DriverEntry, hookimpl


@hookimpl
def llmos_drivers() -> list[DriverEntry]:
    """Provide the driver that subtracts wrong, for kernel-level checks of the kit, and one that moves whole
    tensors only."""
    return [DriverEntry("wrongsub", "testdrivers:WrongSub", "computes sub as add"),
            DriverEntry("wholeonly", "testdrivers:WholeOnly", "no write_at or read_at")]  # fmt: skip


class GoodDriver(TorchDriver):
    """A plain torch CPU device that is not host-visible, with a capacity it enforces."""

    kind = "good"
    capacity = 1 << 20

    @classmethod
    def count(cls, options=None):
        return 1

    def spec(self):
        return DeviceSpec(description="a test device", capacity_bytes=self.capacity, dtypes=self.dtypes(),
                          ops=sorted(OPS))

    def alloc(self, t):
        used = sum(x.numel() * x.element_size() for x in self.tensors.values())
        if used + ITEMSIZE[t.dtype] * torch.Size(t.shape).numel() > self.capacity:
            raise DriverError(Errno.ENOMEM, "full")
        return super().alloc(t)


class WholeOnly(GoodDriver):
    """Reads and writes whole tensors only, as `Driver`'s defaults do (a driver written before pieces)."""

    kind = "wholeonly"
    write_at = Driver.write_at
    read_at = Driver.read_at


class WrongSub(GoodDriver):
    """Computes sub as add."""

    kind = "wrongsub"

    def run_op(self, op, inputs, out, params):
        return super().run_op("add" if op == "sub" else op, inputs, out, params)


class DropsParams(GoodDriver):
    """Ignores op parameters (uses the defaults)."""

    def run_op(self, op, inputs, out, params):
        return super().run_op(op, inputs, out, dict(OPS[op].params))


class SecretlyBfloat16(GoodDriver):
    """Computes floating ops in bfloat16 without saying so."""

    def run_op(self, op, inputs, out, params):
        for t in inputs:
            x = self.tensor(t.tid)
            if x.is_floating_point():
                x.copy_(x.bfloat16())
        return super().run_op(op, inputs, out, params)


class Unlimited(GoodDriver):
    """Declares a capacity it does not enforce."""

    def alloc(self, t):
        return TorchDriver.alloc(self, t)


class KeepsFreed(GoodDriver):
    """Never forgets a freed tensor."""

    def free(self, tid):
        self.tensor(tid)


class RunsUndeclaredOps(GoodDriver):
    """Declares two ops, runs them all."""

    def spec(self):
        spec = super().spec()
        spec.ops = ["add", "relu"]
        return spec


class TakesAnyDtype(GoodDriver):
    """Declares two dtypes, allocates any."""

    def dtypes(self):
        return ["float32", "int32"]


class ClaimsSimulated(GoodDriver):
    """Says it is simulated, reports no time."""

    def spec(self):
        spec = super().spec()
        spec.simulated, spec.peak_flops, spec.mem_bw_bytes_s = True, 1e12, 1e11
        return spec


class ReportsTimeButReal(GoodDriver):
    """A real device that reports simulated time."""

    def run_op(self, op, inputs, out, params):
        super().run_op(op, inputs, out, params)
        return 1e-3


class NoCapacity(GoodDriver):
    """Declares no memory."""

    capacity = 0


class IgnoresWrites(GoodDriver):
    """Drops written bytes."""

    def new_tensor(self, t):
        return torch.zeros(t.shape, dtype=getattr(torch, t.dtype))

    def write(self, tid, data):
        self.tensor(tid)


class SharedGood(GoodDriver):
    """A good host-visible device: the kernel (here the kit) places its tensors in shared files."""

    def spec(self):
        spec = super().spec()
        spec.host_visible = True
        return spec


class IgnoresOffset(SharedGood):
    """Maps the file a tensor is in, but reads and writes it from byte 0."""

    def resolve(self, desc):
        return super().resolve(msgspec.structs.replace(desc, offset=0))


class KeepsMappings(SharedGood):
    """Never unmaps a file the kernel removed."""

    def forget(self, path):
        pass
