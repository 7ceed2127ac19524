"""Watching the OS processes behind the process table, at no cost per tick per process.

Every process the kernel knows an OS pid for (spawned children, and attached
processes that said theirs) is watched for its end. On Linux each gets a
pidfd, registered in one epoll set: a pidfd becomes readable when its process
ends, so a tick asks epoll once and touches only the processes that ended,
however many are watched. Where there are no pidfds, a tick checks a bounded
number of them (`SWEEP`) in turn, so a crash is noticed within
`len / SWEEP` ticks and the cost per tick stays bounded.
"""

import os
import selectors
from collections import OrderedDict

import psutil

SWEEP = 32
"""Without pidfds: processes checked per call of `ProcessWatch.ended`, round robin."""


class ProcessWatch:
    """The OS processes being watched, by the kernel's pid: `add`, `discard`, `ended`."""

    def __init__(self, pidfds: bool | None = None):
        self.pidfds = _have_pidfds() if pidfds is None else pidfds
        self.fds: dict[int, int] = {}  # pid -> pidfd
        self.selector = selectors.DefaultSelector() if self.pidfds else None
        self.polled: OrderedDict[int, psutil.Process] = OrderedDict()  # pid -> its OS process, without pidfds

    def __len__(self) -> int:
        return len(self.fds) + len(self.polled)

    def add(self, pid: int, os_pid: int) -> bool:
        """Watch the OS process `os_pid` for the process `pid`; False if there is no such OS process."""
        try:
            if not self.pidfds:
                self.polled[pid] = psutil.Process(os_pid)
                return True
            fd = os.pidfd_open(os_pid)
        except (OSError, psutil.Error):
            return False
        self.fds[pid] = fd
        self.selector.register(fd, selectors.EVENT_READ, pid)
        return True

    def discard(self, pid: int) -> None:
        """Stop watching `pid` (it exited through the kernel); closes its pidfd."""
        self.polled.pop(pid, None)
        fd = self.fds.pop(pid, None)
        if fd is not None:
            self.selector.unregister(fd)
            os.close(fd)

    def ended(self) -> list[int]:
        """The pids whose OS processes ended since the last call; they are no longer watched."""
        if self.pidfds:
            gone = [key.data for key, _ in self.selector.select(0)] if self.fds else []
        else:
            gone = []
            for _ in range(min(SWEEP, len(self.polled))):
                pid, p = self.polled.popitem(last=False)
                self.polled[pid] = p  # to the back of the round
                if not _alive(p):
                    gone.append(pid)
        for pid in gone:
            self.discard(pid)
        return gone

    def close(self) -> None:
        """Close every pidfd."""
        for pid in list(self.fds):
            self.discard(pid)
        self.polled.clear()
        if self.selector is not None:
            self.selector.close()


def _have_pidfds() -> bool:
    """Whether this OS gives pidfds (Linux 5.3 and later)."""
    try:
        os.close(os.pidfd_open(os.getpid()))
    except (AttributeError, OSError):
        return False
    return True


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
