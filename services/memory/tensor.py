"""Tensor memory accounting: per-device capacity and per-process quotas.

Pure bookkeeping, no I/O: the kernel asks `admit` before it asks a driver to
allocate, `charge`s on success and `release`s on free. Each allocation is
owned by one process; sharing a handle does not charge the receiver, and when
the owner lets go while others still hold the tensor, the kernel `transfer`s
the charge to itself (owner 0).
"""

from dataclasses import dataclass, field

from .admission import Admission


@dataclass
class TensorMemory:
    """Memory of one device: capacity, per-owner usage and quotas, live allocations."""

    capacity: int
    default_quota: int | None = None  # bytes per process; None: the whole device
    used: int = 0
    by_owner: dict[int, int] = field(default_factory=dict)
    quotas: dict[int, int] = field(default_factory=dict)
    allocations: dict[int, tuple[int, int]] = field(default_factory=dict)  # id -> (owner, bytes)

    def quota(self, owner: int) -> int:
        """The owner's quota in bytes on this device."""
        q = self.quotas.get(owner, self.default_quota)
        return self.capacity if q is None else min(q, self.capacity)

    def set_quota(self, owner: int, nbytes: int) -> None:
        """Set one owner's quota (bytes); below its current usage, new allocations wait."""
        if nbytes < 0:
            raise ValueError(f"a quota cannot be negative ({nbytes})")
        self.quotas[owner] = nbytes

    def admit(self, owner: int, nbytes: int) -> Admission:
        """OK if `nbytes` fits now; LATER if it would after frees; NEVER if it cannot."""
        if nbytes > self.capacity or nbytes > self.quota(owner):
            return Admission.NEVER
        if self.used + nbytes > self.capacity or self.by_owner.get(owner, 0) + nbytes > self.quota(owner):
            return Admission.LATER
        return Admission.OK

    def charge(self, alloc_id: int, owner: int, nbytes: int) -> None:
        """Record an admitted allocation. Raises if it was not admissible."""
        if alloc_id in self.allocations:
            raise ValueError(f"allocation {alloc_id} is already recorded")
        verdict = self.admit(owner, nbytes)
        if verdict is not Admission.OK:
            raise ValueError(f"allocation of {nbytes} bytes for {owner} is not admissible now ({verdict.value})")
        self._book(alloc_id, owner, nbytes)

    def _book(self, alloc_id: int, owner: int, nbytes: int) -> None:
        self.allocations[alloc_id] = (owner, nbytes)
        self.used += nbytes
        if nbytes:
            self.by_owner[owner] = self.by_owner.get(owner, 0) + nbytes

    def release(self, alloc_id: int) -> int:
        """Forget an allocation; returns its size."""
        owner, nbytes = self.allocations.pop(alloc_id)
        self.used -= nbytes
        if nbytes:
            left = self.by_owner[owner] - nbytes
            if left:
                self.by_owner[owner] = left
            else:
                del self.by_owner[owner]
        return nbytes

    def transfer(self, alloc_id: int, new_owner: int) -> None:
        """Move an allocation's charge to another owner (quota not re-checked)."""
        self._book(alloc_id, new_owner, self.release(alloc_id))

    def forget_owner(self, owner: int) -> None:
        """Drop an owner's quota entry (after its exit); what it still holds stays charged."""
        self.quotas.pop(owner, None)

    @property
    def free(self) -> int:
        """Bytes not charged to anyone."""
        return self.capacity - self.used
