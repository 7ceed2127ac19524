"""The kernel and its driver hosts run at a raised priority when the OS allows it; programs it spawns do not."""

import os
import re

import pytest

from conftest import until

pytestmark = pytest.mark.skipif(not hasattr(os, "setpriority"), reason="no nice values on this OS")


def nice_of_every_thread(os_pid: int) -> set[int]:
    """The nice values of all threads of a process (ZeroMQ's I/O thread included)."""
    return {os.getpriority(os.PRIO_PROCESS, int(tid)) for tid in os.listdir(f"/proc/{os_pid}/task")}


def may_raise_priority() -> bool:
    """Whether a process of ours may lower its nice value to the kernel's default (-5)."""
    pid = os.fork()
    if pid == 0:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, -5)
            os._exit(0)
        except OSError:
            os._exit(1)
    return os.waitpid(pid, 0)[1] == 0


def test_kernel_and_driver_hosts_run_above_the_programs_they_spawn(kernel, client):
    mine = os.getpriority(os.PRIO_PROCESS, 0)
    system = -5 if may_raise_priority() and mine > -5 else mine  # KernelConfig.nice, or unchanged when refused
    assert nice_of_every_thread(kernel.state["os_pid"]) == {system}
    host = next(d for d in client.devices() if d.name == "cpu0").driver_os_pid
    assert nice_of_every_thread(host) == {system}
    child = client.spawn("hold", ["1"])
    try:
        until(lambda: any(p.pid == child.pid and p.state == "running" for p in client.ps()))
        os_pid = next(p.os_pid for p in client.ps() if p.pid == child.pid)
        assert nice_of_every_thread(os_pid) == {mine}  # back to the nice value of whoever booted the kernel
    finally:
        client.kill(child.pid)
        client.wait(child.pid)


def test_a_refused_priority_is_logged_and_changes_nothing(tmp_path):
    from llmos.kernel.priority import raise_priority

    mine = os.getpriority(os.PRIO_PROCESS, 0)
    pid = os.fork()
    if pid == 0:  # in a child, so this test process keeps its own priority
        os.setpriority(os.PRIO_PROCESS, 0, min(mine + 1, 19))
        import resource

        if os.geteuid() == 0:
            os.setuid(65534)  # as nobody, who may not raise a priority
        resource.setrlimit(resource.RLIMIT_NICE, (0, 0))
        before, now, why = raise_priority(-5)
        ok = before == now == min(mine + 1, 19) and re.search("not permitted", why)
        os._exit(0 if ok else 1)
    assert os.waitpid(pid, 0)[1] == 0
