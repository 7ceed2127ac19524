"""Work on several devices answered as one: a model's replicas loading, joining their group, stepping.

A `Gang` sends one driver message to each of several devices, each as an
ordinary `Work` item on its device's queue (so each device's policy still
places it among that device's other work), and calls back once every part
has answered.

A *together* gang is gang-scheduled, because its parts are the members of
one collective (a group join, an all-reduce), which wait for each other
inside the driver hosts: a part that reaches the head of its queue holds
its device without being sent (`Gang.arrive`, called by the kernel's
`pump`) until every part has arrived, and then all are sent at once. Sent
one by one, a part would wait in its host, holding the device, while
another waited behind other work on its own device, and the collective
would fail at the group's timeout. A part that fails before the start
(its device went offline, its process...) calls the others off: a held one
frees its device unsent, a queued one is skipped.

Collectives run one at a time, kernel-wide (`CollectiveLine`): two gangs
whose parts met on two devices in opposite orders would each hold one
device and wait for the other until the hang timeout.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from llmos.syscalls import Errno
from llmos.syscalls import driver as proto

from .devices import Device, Work

if TYPE_CHECKING:
    from .kernel import Kernel


@dataclass
class Answer:
    """One part's answer: `ok` and its frames, or `errno` and `message`."""

    device: str
    errno: Errno | None = None
    message: str = ""
    ok: proto.DOk | None = None
    frames: list = field(default_factory=list)


class Gang:
    """One message per device; `done(answers)` (in the parts' order) once every part has answered.

    `failed(answer)` is called at the first failure, before the others have
    answered (a caller can be told at once). With `together`, the parts
    start at the same time (see the module docstring), and run even if
    `owner` exits meanwhile (`Work.always`): a collective cannot lose a member
    halfway. Other parts of an owner that exits are skipped, as its other work
    is, and answer ESRCH.
    """

    def __init__(self, k: Kernel, owner: int, parts: list[tuple[Device, proto.ToDriver]],
                 done: Callable[[list[Answer]], None], failed: Callable[[Answer], None] = lambda a: None,
                 together: bool = False):  # fmt: skip
        self.k = k
        self.devices = [dev for dev, _ in parts]
        self.works = [
            Work(owner=owner, msg=msg, always=together, gang=self if together else None,
                 done=lambda ok, frames, i=i: self._answer(i, Answer(self.devices[i].name, ok=ok, frames=list(frames))),
                 fail=lambda errno, message, i=i: self._answer(i, Answer(self.devices[i].name, errno, message)))
            for i, (dev, msg) in enumerate(parts)
        ]  # fmt: skip
        self.answers: list[Answer | None] = [None] * len(parts)
        self.done = done
        self.failed = failed
        self.arrived = 0
        self.started = not together  # all parts sent (a gang that is not together starts at once)
        self.failing = False  # a part has failed
        self.over = False  # every part has answered and `done` was called

    def submit(self) -> None:
        """Queue every part on its device."""
        for dev, work in zip(self.devices, self.works):
            self.k.submit(dev, work)

    def arrive(self) -> None:
        """A part reached the head of its device's queue and holds the device; the last to arrive sends all."""
        self.arrived += 1
        if self.arrived == len(self.works):
            self.started = True
            for dev, work in zip(self.devices, self.works):
                self.k.start_work(dev, work)

    def _answer(self, i: int, answer: Answer) -> None:
        if self.answers[i] is not None:
            return
        self.answers[i] = answer
        if answer.errno is not None and not self.failing:
            self.failing = True
            self.failed(answer)
            if not self.started:
                self._call_off(f"{answer.device} failed first: {answer.message}")
        if not self.over and all(a is not None for a in self.answers):
            self.over = True
            self.done(self.answers)

    def _call_off(self, reason: str) -> None:
        """Before the start, a part failed: the others never run (a held device is freed, a queued part skipped)."""
        for i, (dev, work) in enumerate(zip(self.devices, self.works)):
            if self.answers[i] is not None:
                continue
            work.cancelled = True
            if dev.inflight is work:
                dev.inflight = None
            self._answer(i, Answer(dev.name, errno=Errno.EIO, message=f"not run: {reason}"))
            self.k.pump(dev)


class CollectiveLine:
    """Collective operations, one at a time kernel-wide (see the module docstring)."""

    def __init__(self):
        self.waiting: deque[Callable[[Callable[[], None]], None]] = deque()
        self.busy = False

    def enter(self, run: Callable[[Callable[[], None]], None]) -> None:
        """Call `run(leave)` once no other collective runs; it calls `leave()` when it is over (once)."""
        self.waiting.append(run)
        self._next()

    def _next(self) -> None:
        if self.busy or not self.waiting:
            return
        self.busy = True
        run = self.waiting.popleft()
        left = []

        def leave() -> None:
            if not left:
                left.append(True)
                self.busy = False
                self._next()

        run(leave)
