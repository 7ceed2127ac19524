"""Exceptions of the paged KV cache, one per kind of misuse or shortage.

Every exception is a `KVError`, itself a `ValueError`, and carries `errno`:
the name of the ABI error (see `llmos.syscalls.errno.Errno`) the kernel should
answer with, so a syscall handler can map any of them without a lookup table.
The shortages (out of blocks, over quota) are also `MemoryError`s, so a caller
that tries first and makes room on failure can catch them as such. Messages
say what was wrong and what to do about it.
"""


class KVError(ValueError):
    """Base of all KV cache errors; `errno` names the ABI error to reply with."""

    errno = "EINVAL"


class KVUnknownSequence(KVError):
    """The sequence id is not allocated in this pool."""

    errno = "EBADF"


class KVDoubleFree(KVUnknownSequence):
    """The sequence id was allocated once and has already been freed."""


class KVSequenceExists(KVError):
    """A sequence with that id is already allocated (allocate or fork target)."""


class KVSwapState(KVError):
    """The sequence is on the host when it must be on the device, or the reverse."""


class KVOutOfBlocks(KVError, MemoryError):
    """The device pool has too few free blocks (evictable cached ones included)."""

    errno = "ENOMEM"


class KVOutOfHostBlocks(KVOutOfBlocks):
    """The host swap pool has too few free blocks."""


class KVQuotaExceeded(KVError, MemoryError):
    """The owner would hold more device blocks than its quota allows."""

    errno = "ENOMEM"


class KVNoPool(KVError):
    """No KV pool exists for that device and model layout."""

    errno = "ENODEV"
