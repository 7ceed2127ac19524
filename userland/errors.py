"""The one exception family of the client library."""

from llmos.syscalls import Errno


class LlmosError(Exception):
    """A failed syscall. `errno` is an `Errno` (an int), `message` says what to do."""

    def __init__(self, errno: Errno | int, message: str):
        self.errno = Errno(errno) if errno in Errno._value2member_map_ else errno
        self.message = message
        name = self.errno.name if isinstance(self.errno, Errno) else f"errno {errno}"
        super().__init__(f"[{name}] {message}")
