"""Drivers load and unload on a running kernel; live handles on an unloaded device fail cleanly."""

import subprocess
import sys

import pytest
import torch

from llmos.syscalls import Errno
from llmos.userland import Client, LlmosError

from conftest import start_kernel

LLMOS = [sys.executable, "-m", "llmos.userland.cli.main"]


@pytest.fixture
def swap_kernel(runtime_dir, monkeypatch):
    monkeypatch.setenv("LLMOS_PLUGINS", "llmos_testprogs,llmos.drivers.mocktpu")
    kp = start_kernel(runtime_dir, "swap", drivers=["cpu"])
    yield kp
    assert kp.stop() == 0


def test_load_use_unload_a_driver(swap_kernel):
    with Client(name="user", kernel="swap") as user, Client(name="owner", kernel="swap", admin=True) as owner:
        listed = {d.kind: d for d in user.drivers()}
        assert listed["cpu"].loaded and not listed["mocktpu"].loaded
        with pytest.raises(LlmosError) as err:
            user.driver_load("mocktpu")
        assert err.value.errno == Errno.EPERM
        loaded = {d.kind: d for d in owner.driver_load("mocktpu")}
        assert loaded["mocktpu"].devices == ["mocktpu0"] and user.device("mocktpu0").state == "online"
        x = torch.randn(8, 8)
        ref = user.put(x, "mocktpu")
        torch.testing.assert_close(user.read(ref.handle), x)
        owner.driver_unload("mocktpu")
        with pytest.raises(LlmosError) as err:
            user.read(ref.handle)
        assert err.value.errno == Errno.EIO and "unloaded" in err.value.message
        user.free(ref.handle)  # a lost handle can still be closed
        with pytest.raises(LlmosError) as err:
            user.alloc("mocktpu", [2])
        assert err.value.errno == Errno.ENODEV
        assert user.null() is not None and user.device("cpu").state == "online"  # everyone else goes on
        for bad, errno in [(lambda: owner.driver_load("warp-drive"), Errno.EINVAL), (lambda: owner.driver_unload("mocktpu"), Errno.EINVAL)]:
            with pytest.raises(LlmosError) as err:
                bad()
            assert err.value.errno == errno


def test_llmos_driver_command(swap_kernel):
    out = subprocess.run([*LLMOS, "driver", "--kernel", "swap", "load", "mocktpu"], capture_output=True, text=True, check=True).stdout
    assert "mocktpu0" in out
    out = subprocess.run([*LLMOS, "driver", "--kernel", "swap", "unload", "mocktpu"], capture_output=True, text=True, check=True).stdout
    assert "mocktpu" in out and "mocktpu0" not in out
