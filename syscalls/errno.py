"""Error numbers of the ABI, errno-style.

The numbers are Linux's where Linux has the name, so `os.strerror(e)` reads
well; on the wire an error carries the number and the kernel's message.
"""

import enum


class Errno(enum.IntEnum):
    """Errno-style error codes carried by Error replies."""

    EPERM = 1  # the token is forged or stale, or the caller may not do this
    ENOENT = 2  # no such file (a checkpoint missing from the storage directory)
    ESRCH = 3  # no such process
    EIO = 5  # the device failed while serving the call (driver crash, hang)
    E2BIG = 7  # a frame or a payload is larger than the kernel accepts
    EBADF = 9  # the handle is not open in the caller's handle table
    ECHILD = 10  # wait on a process that is not the caller's child
    EAGAIN = 11  # would succeed later (memory held by others); retry
    ENOMEM = 12  # larger than the device or the caller's quota
    ENODEV = 19  # no such device, or it is offline
    EINVAL = 22  # a field has the wrong type or value
    ENAMETOOLONG = 36  # a path, or one name in it, is longer than the file system allows
    ENOSYS = 38  # no syscall with that number
    EPROTO = 71  # the frames do not follow the protocol (malformed, wrong ABI version)
    ETIMEDOUT = 110  # no answer in time
    ECONNREFUSED = 111  # no kernel at that address
