"""`DriverError`, the failure a driver reports to the kernel with an errno, torch-free.

It lives apart from drivers/base.py (which imports torch) so that torch-free
pieces a driver uses, such as its memory ledger (drivers/ledger.py), can raise
it and be tested without torch.
"""

from llmos.syscalls import Errno


class DriverError(Exception):
    """A failure the kernel reports to the caller with this errno."""

    def __init__(self, errno: Errno, message: str):
        super().__init__(message)
        self.errno = errno
        self.message = message
