"""A process that exits, crashes, is killed or stops answering leaves nothing behind."""

import os
import random
import signal
import subprocess
import sys
import time

import pytest

from llmos.syscalls import Errno
from llmos.userland import Client, LlmosError

from conftest import only_spare_slabs, shm_files, start_kernel, until

HOLDER = """
import sys, time, torch
from llmos.userland import Client
c = Client(sys.argv[1], name="holder")
ref = c.put(torch.ones(1 << 20), "cpu")
print(c.pid, ref.handle, flush=True)
time.sleep(600)
"""

ALLOCATOR = """
import sys
from llmos.userland import Client
Client(sys.argv[1], name=sys.argv[2]).alloc(sys.argv[3], [int(sys.argv[4]) << 18])
"""


def used(c: Client) -> int:
    return c.device("cpu0").used_bytes


def pids(c: Client) -> set[int]:
    return {p.pid for p in c.ps()}


def start_holder(address: str) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, address], stdout=subprocess.PIPE, text=True)
    pid = int(proc.stdout.readline().split()[0])
    return proc, pid


def test_attached_process_killed_by_the_os_is_reclaimed(kernel, client):
    before = used(client)
    proc, pid = start_holder(kernel.address)
    assert used(client) == before + (4 << 20) and pid in pids(client)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    until(lambda: pid not in pids(client))
    assert used(client) == before


def test_spawned_program_that_crashes_is_reclaimed(client):
    before = used(client)
    child = client.spawn("crash")
    exited = client.wait(child.pid)
    assert exited.status == 3 and "status 3" in exited.reason
    assert used(client) == before and child.pid not in pids(client)


def test_spawned_program_killed_through_the_kernel(client):
    before = used(client)
    child = client.spawn("hold", ["2"])
    until(lambda: used(client) == before + (2 << 20))
    client.kill(child.pid)
    assert used(client) == before  # reclaimed at once, before the OS process is even gone
    assert client.wait(child.pid).status == -15


def test_allocations_still_on_their_way_to_the_device_are_reclaimed_at_once(runtime_dir):
    tpu = {"hbm_bytes": 4 << 20}  # a device that refuses what does not fit
    kp = start_kernel(runtime_dir, "busy", drivers=["mocktpu"], driver_options={"mocktpu": tpu}, ping_s=30.0, hang_s=60.0)
    waiting = {}

    def allocate(name: str, mib: int) -> None:
        waiting[name] = subprocess.Popen([sys.executable, "-c", ALLOCATOR, kp.address, name, "mocktpu0", str(mib)])

    try:
        with Client(kp.address, name="watcher") as watcher, Client(name="admin", kernel="busy", admin=True) as admin:
            tpu_used = lambda: watcher.device("mocktpu0").used_bytes  # noqa: E731
            host = watcher.device("mocktpu0").driver_os_pid
            os.kill(host, signal.SIGSTOP)  # the device takes work but does none (no heartbeat for 30 s)
            try:
                allocate("in-flight", 1)
                until(lambda: tpu_used() == 1 << 20)  # charged when asked for, sent to the device
                allocate("queued", 2)
                until(lambda: tpu_used() == 3 << 20)  # charged, waiting in the device's queue
                by_name = {p.name: p.pid for p in watcher.ps()}
                admin.kill(by_name["queued"])
                assert tpu_used() == 1 << 20  # the queued allocation will never reach the device
                admin.kill(by_name["in-flight"])
                assert tpu_used() == 0  # the device frees it right after making it
                allocate("whole-device", 4)
                until(lambda: tpu_used() == 4 << 20)
            finally:
                os.kill(host, signal.SIGCONT)
            assert waiting["whole-device"].wait(timeout=30) == 0  # it fit: the free went to the device before it
            until(lambda: tpu_used() == 0)  # its process ended
            assert watcher.device("mocktpu0").driver_os_pid == host  # the device never went offline
    finally:
        for proc in waiting.values():
            proc.kill()
            proc.wait()
        assert kp.stop() == 0


def test_spawned_program_killed_by_the_os(client):
    before = used(client)
    child = client.spawn("hold", ["1"])
    until(lambda: used(client) == before + (1 << 20))
    os.kill(child.os_pid, signal.SIGKILL)
    assert client.wait(child.pid).status == -9
    assert used(client) == before


def test_exit_returns_everything_and_shared_tensors_survive(kernel, client):
    before = used(client)
    other = Client(kernel.address, name="leaver")
    ref = other.alloc("cpu", [1 << 18])
    mine = other.share(ref.handle, client.pid)
    other.alloc("cpu", [1 << 18])  # not shared: freed at exit
    other.close()
    assert used(client) == before + (1 << 20)  # the shared tensor lives on, charged to the kernel, not to us
    assert [p for p in client.ps() if p.pid == client.pid][0].mem_bytes == 0
    assert [(row.handle, row.charged) for row in client.handles()] == [(mine, 0)]
    client.free(mine)
    assert used(client) == before


def test_killing_another_process_needs_permission(kernel, client):
    with Client(kernel.address, name="bystander") as other:
        with pytest.raises(LlmosError) as err:
            client.kill(other.pid)
        assert err.value.errno == Errno.EPERM
        with Client(name="admin", kernel="shared", admin=True) as admin:  # the owner, with the admin key
            admin.kill(other.pid)
        assert other.pid not in pids(client)
        other.token = b""  # it was killed: nothing left to exit


def test_process_that_stops_answering_loses_its_lease(runtime_dir):
    kp = start_kernel(runtime_dir, "lease", lease_s=2.0)
    try:
        with Client(kp.address, name="watcher") as watcher:
            proc, pid = start_holder(kp.address)
            before = watcher.device("cpu0").used_bytes
            proc.send_signal(signal.SIGSTOP)  # alive, but its heartbeat stops
            until(lambda: pid not in pids(watcher), timeout=10)
            assert watcher.device("cpu0").used_bytes == before - (4 << 20)
            proc.kill()
            proc.wait()
    finally:
        assert kp.stop() == 0


@pytest.mark.slow
def test_processes_killed_at_random_moments_leave_nothing_behind(runtime_dir, tmp_path):
    """Churning processes are killed (SIGTERM through the kernel, or SIGKILL by the OS) at random moments:
    afterwards the kernel's account and the device's tensors are what they were before."""
    rng = random.Random(20261204)
    log = tmp_path / "kernel.log"
    kp = start_kernel(runtime_dir, "churn", log_file=str(log))
    try:
        with Client(kp.address, name="killer") as c:
            before, files = used(c), shm_files(kp)
            statuses = []
            for round_ in range(2):
                children = [c.spawn("churn", [f"{round_}.{i}"]) for i in range(3)]
                until(lambda: used(c) > before, timeout=30)  # one of them is churning
                time.sleep(rng.uniform(0.0, 1.5))  # the others start meanwhile, or not yet
                for child in children:
                    if rng.random() < 0.5:
                        c.kill(child.pid)
                    else:
                        os.kill(child.os_pid, signal.SIGKILL)
                statuses += [c.wait(child.pid).status for child in children]  # reclaimed by now
            assert set(statuses) <= {-15, -9}  # all were killed: none failed on its own
            assert used(c) == before
            until(lambda: only_spare_slabs(shm_files(kp) - files))  # what is left is one empty slab per class at most
    finally:
        assert kp.stop() == 0
    assert "kernel.bug" not in log.read_text()  # no callback of the cancelled calls raised
