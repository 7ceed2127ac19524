"""The one exception a syscall handler raises to fail its call."""

from llmos.syscalls import Errno


class SysError(Exception):
    """A call that fails with an errno and a message for the caller."""

    def __init__(self, errno: Errno, message: str):
        super().__init__(f"{errno.name}: {message}")
        self.errno = errno
        self.message = message
