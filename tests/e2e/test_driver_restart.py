"""A driver host that dies or hangs costs its device for a moment, never the kernel."""

import os
import re
import signal
import time

import pytest
import torch

from llmos.syscalls import Errno
from llmos.userland import Client, LlmosError

from conftest import shm_files, start_kernel


def wait_replaced(c: Client, old_host: int, timeout: float = 15.0) -> float:
    """Seconds until cpu0 is online again with a new driver host."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            info = c.device("cpu0")
            if info.state == "online" and info.driver_os_pid != old_host:
                return time.monotonic() - start
        except LlmosError as exc:
            assert exc.errno == Errno.ENODEV and "offline" in exc.message
        time.sleep(0.02)
    raise AssertionError("cpu0 did not come back")


@pytest.fixture
def restart_kernel(runtime_dir):
    kp = start_kernel(runtime_dir, "restart", hang_s=1.0, ping_s=0.2)
    yield kp
    assert kp.stop() == 0


def test_kill_9_of_the_driver_host(restart_kernel):
    with Client(restart_kernel.address) as c:
        x = torch.randn(64, 64)
        ref = c.put(x)
        host = c.device("cpu0").driver_os_pid
        os.kill(host, signal.SIGKILL)
        wait_replaced(c, host)
        info = c.device("cpu0")
        assert info.restarts == 1 and info.driver_os_pid != host and info.used_bytes == 0
        with pytest.raises(LlmosError) as err:
            c.read(ref.handle)
        assert err.value.errno == Errno.EIO and "offline" in err.value.message
        c.free(ref.handle)  # a lost handle can still be closed
        again = c.put(x)
        torch.testing.assert_close(c.read(c.compute("add", again.handle, again.handle).handle), x + x)


@pytest.mark.slow
def test_an_offline_device_says_when_it_is_expected_back(runtime_dir):
    kp = start_kernel(runtime_dir, "eta", restart_backoff_s=(1.0, 5.0))
    try:
        with Client(kp.address) as c:
            host = c.device("cpu0").driver_os_pid
            os.kill(host, signal.SIGKILL)
            with pytest.raises(LlmosError) as err:
                for _ in range(500):
                    c.device("cpu0")
                    time.sleep(0.01)
            found = re.search(r"starts in ([\d.]+) s; expect the device back in about ([\d.]+) s "
                              r"\(its last start took ([\d.]+) s\)", err.value.message)
            assert err.value.errno == Errno.ENODEV and found, err.value.message
            starts, back, took = map(float, found.groups())
            assert starts <= 1.0 and took > 0 and back == pytest.approx(starts + took, abs=0.11)
            wait_replaced(c, host)
    finally:
        assert kp.stop() == 0


def test_a_hung_driver_host_is_replaced(restart_kernel):
    with Client(restart_kernel.address) as c:
        host = c.device("cpu0").driver_os_pid
        os.kill(host, signal.SIGSTOP)  # it stops answering heartbeats
        wait_replaced(c, host)
        assert c.device("cpu0").restarts == 1
        assert c.null() is not None


def test_tensor_files_of_a_crashed_host_are_unlinked_at_once(restart_kernel):
    """Host-visible tensors lost with a killed host leave no file in /dev/shm, though their handles stay open."""
    with Client(restart_kernel.address) as c:
        before = shm_files(restart_kernel)
        refs = [c.put(torch.ones(1 << 16)) for _ in range(3)]
        c.kv_pool("cpu", 1, 1, 8, blocks=4)
        made = shm_files(restart_kernel) - before
        assert len(made) == 4  # three tensors and the pool
        host = c.device("cpu0").driver_os_pid
        os.kill(host, signal.SIGKILL)
        wait_replaced(c, host)
        assert not made & shm_files(restart_kernel)  # gone while the kernel runs and the handles are open
        with pytest.raises(LlmosError) as err:
            c.read(refs[0].handle)
        assert err.value.errno == Errno.EIO
