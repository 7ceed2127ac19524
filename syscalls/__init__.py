"""llmos.syscalls: the ABI. Message structs, syscall numbers, errno, frames, the op set.

Everything that crosses a process boundary is defined here, and nothing here
does I/O. See docs/abi.md for the spec.
"""

from .errno import Errno
from .frames import ABI_VERSION
from .numbers import Sys

__all__ = ["ABI_VERSION", "Errno", "Sys"]
