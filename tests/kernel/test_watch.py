"""Watching processes costs no liveness check per tick per process: only the ones that ended are touched."""

import math
import os
import subprocess
import sys
import time
from collections import Counter

import psutil
import pytest
import zmq

from llmos.kernel.config import KernelConfig
from llmos.kernel.kernel import Kernel
from llmos.kernel.watch import SWEEP, ProcessWatch
from llmos.syscalls import frames as fr
from llmos.syscalls import messages as m

from conftest import until

ATTACHED = 500


@pytest.fixture
def checks(monkeypatch) -> Counter:
    """Counts psutil's liveness checks (what the tick used to do for every process, every tick)."""
    calls: Counter = Counter()
    for name in ("is_running", "status"):
        real = getattr(psutil.Process, name)

        def counted(self, _real=real, _name=name):
            calls[_name] += 1
            return _real(self)

        monkeypatch.setattr(psutil.Process, name, counted)
    return calls


def sleeper() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def test_a_tick_checks_only_processes_that_ended(runtime_dir, checks):
    config = KernelConfig(name="watch", runtime_dir=runtime_dir, drivers=[], max_procs_per_user=2 * ATTACHED)
    k = Kernel(config)
    k.open()
    doomed = sleeper()
    sock = zmq.Context.instance().socket(zmq.DEALER)
    try:
        sock.connect(k.address)
        for i in range(ATTACHED + 1):
            os_pid = doomed.pid if i == ATTACHED else os.getpid()
            sock.send(fr.encode_call(i + 1, b"", m.Attach(name=f"p{i}", os_pid=os_pid)))
            k.on_message(k.sock.recv_multipart(copy=False))
        assert len(k.procs.live()) == ATTACHED + 1
        checks.clear()
        for _ in range(3):
            k.tick(time.monotonic())
        assert sum(checks.values()) <= 2 * SWEEP  # not two per process per tick
        doomed.kill()
        doomed.wait()
        until(lambda: k.tick(time.monotonic()) or len(k.procs.live()) == ATTACHED)  # reclaimed promptly
    finally:
        sock.close()
        doomed.kill()
        doomed.wait()
        k.close()


def test_without_pidfds_a_bounded_sweep_finds_the_dead(checks):
    watch = ProcessWatch(pidfds=False)
    doomed = sleeper()
    for pid in range(1, ATTACHED + 1):
        assert watch.add(pid, os.getpid())
    assert watch.add(ATTACHED + 1, doomed.pid)
    doomed.kill()
    doomed.wait()
    ended = []
    for _ in range(math.ceil(len(watch) / SWEEP)):
        checks.clear()
        ended += watch.ended()
        assert sum(checks.values()) <= 2 * SWEEP
    assert ended == [ATTACHED + 1] and len(watch) == ATTACHED
    watch.close()


def test_pidfds_watch_and_close():
    watch = ProcessWatch()
    if not watch.pidfds:
        pytest.skip("this OS has no pidfds; the sweep is tested above")
    doomed = sleeper()
    assert watch.add(1, doomed.pid) and watch.add(2, os.getpid())
    assert not watch.add(3, 2**22 + 12345)  # no such OS process
    assert watch.ended() == []
    doomed.kill()
    doomed.wait()
    until(lambda: watch.ended() == [1])
    watch.discard(2)  # it exited through the kernel: its pidfd is closed
    assert len(watch) == 0 and not watch.fds
    watch.close()
