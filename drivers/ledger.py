"""A device's byte ledger: what a driver that allocates has given out, by holder, against its capacity.

A driver whose memory is not host-visible (`cuda`, `mocktpu`) enforces its
capacity itself (docs/drivers.md). It does so with this ledger, not with
whatever its runtime reports: a CUDA process's allocator also holds cached
blocks, other users' tensors and its own workspace, which are not the
device's to account. Each holder is charged before its memory is taken and
released when it is freed:

- a tensor, `("tensor", tid)`: the bytes of its shape and dtype;
- a model, `("model", mid)`: its weights and its KV pool (what the kernel
  charges for it, `ModelDesc.param_bytes + kv_bytes`), then, from its first
  training step, `OPTIMIZER_COPIES` times its weights, and any memory its
  captured decode graphs hold (drivers/graphs.py).

A charge that would take the total past the capacity is refused with
ENOMEM, the errno the kernel's memory service gives an allocation that can
never fit, and changes nothing. `OPTIMIZER_COPIES` is the driver
protocol's (syscalls/driver.py): the kernel charges the same.
"""

from collections.abc import Hashable

from llmos.syscalls import Errno

from .errors import DriverError


class MemoryLedger:
    """Bytes charged to each holder of one device, never more in all than `capacity`."""

    def __init__(self, capacity: int, name: str = "the device"):
        if capacity < 0:
            raise ValueError(f"a ledger's capacity must be >= 0, not {capacity}")
        self.capacity = capacity
        self.name = name  # what the memory is called in an ENOMEM message ("HBM", "GPU memory")
        self.used = 0
        self.held: dict[Hashable, int] = {}

    def _fit(self, nbytes: int, what: str) -> None:
        """ENOMEM unless `nbytes` more fit; ValueError for a negative count (a driver bug)."""
        if nbytes < 0:
            raise ValueError(f"cannot charge {nbytes} bytes")
        if self.used + nbytes > self.capacity:
            raise DriverError(Errno.ENOMEM, f"{what}: {nbytes} bytes do not fit in {self.name}, {self.used} of "
                                            f"{self.capacity} bytes in use")  # fmt: skip

    def charge(self, holder: Hashable, nbytes: int, what: str = "") -> None:
        """Charge a new holder `nbytes`; ENOMEM if they do not fit, EINVAL if it is charged already."""
        if holder in self.held:
            raise DriverError(Errno.EINVAL, f"{holder} is charged already")
        self._fit(nbytes, what or str(holder))
        self.held[holder] = nbytes
        self.used += nbytes

    def grow(self, holder: Hashable, nbytes: int, what: str = "") -> None:
        """Charge a holder `nbytes` more (a model's optimizer state, a graph pool); ENOMEM if they do not fit."""
        if holder not in self.held:
            raise DriverError(Errno.EINVAL, f"{holder} is not charged")
        self._fit(nbytes, what or str(holder))
        self.held[holder] += nbytes
        self.used += nbytes

    def release(self, holder: Hashable) -> int:
        """Drop a holder's whole charge; the bytes it held (0 for one not charged)."""
        nbytes = self.held.pop(holder, 0)
        self.used -= nbytes
        return nbytes

    def holding(self, holder: Hashable) -> int:
        """The bytes charged to `holder` (0 for none)."""
        return self.held.get(holder, 0)

    def clear(self) -> None:
        """Release every holder (the driver is closing)."""
        self.held.clear()
        self.used = 0
