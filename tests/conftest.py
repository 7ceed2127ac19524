"""Shared fixtures: booted kernels in private runtime dirs, clients, hypothesis profiles."""

import os

# One torch thread in every process of the suite (pytest workers, kernels, driver hosts, programs: they
# inherit it), set before anything imports torch: the suite runs many such processes at once on few cores,
# and OpenMP's spinning threads, oversubscribed, cost a fifth of its time (5 min 36 s against 4 min 30 s
# on 2 cores). A run may still set its own value.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pathlib
import sys
import tempfile
import time

import pytest
from hypothesis import HealthCheck, settings

from llmos.kernel import boot
from llmos.kernel.config import KernelConfig
from llmos.syscalls import runtime

HERE = pathlib.Path(__file__).parent

BULK_LIMIT = 16 << 20  # the shared kernel's largest tensor frame, small enough to test E2BIG

settings.register_profile("ci", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True)
settings.load_profile("ci")

# test kernels (and the programs they spawn), and plugin managers in this process, load the test plugin
sys.path.insert(0, str(HERE / "support"))
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE / "support"), os.environ.get("PYTHONPATH")]))
os.environ["LLMOS_PLUGINS"] = "llmos_testprogs"


@pytest.fixture(scope="session")
def runtime_dir():
    """A short private folder for test kernels (ipc paths must stay under ~100 bytes)."""
    path = tempfile.mkdtemp(prefix="llt-")
    os.chmod(path, 0o700)
    os.environ["LLMOS_RUNTIME_DIR"] = path  # clients and `llmos` commands find test kernels by name
    os.environ["LLMOS_TEST_EVENTS"] = os.path.join(path, "events.jsonl")  # see support/llmos_testprogs.py
    yield path
    runtime.remove(path)  # after the session's kernels have stopped (their fixtures finish first)


def start_kernel(runtime_dir: str, name: str, **options) -> boot.KernelProcess:
    """Boot a kernel for a test; the caller stops it."""
    config = KernelConfig(**{"name": name, "runtime_dir": runtime_dir, "drivers": ["cpu"], "log_level": "warning", **options})
    return boot.start(config)


def until(predicate, timeout: float = 10.0) -> None:
    """Poll until predicate() is true; fail after timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


async def occupy_device(a, size: int = 1200):
    """Send, from AsyncClient `a`, a matmul that keeps cpu0 busy for a while, and return its task.

    Generate calls sent right after it queue behind it, so they are all in
    the model's scheduler by the time its first step runs: they overlap (and
    crowd its KV pool) instead of one finishing before the next arrives.
    """
    import asyncio

    import torch

    x = await a.put(torch.rand(size, size))
    task = asyncio.ensure_future(a.compute("matmul", x.handle, x.handle))
    await asyncio.sleep(0)  # sent
    return task


def shm_files(kp: boot.KernelProcess) -> set[str]:
    """The host-visible tensors of a kernel's devices: one shared-memory file each, under a folder per device."""
    root = runtime.shm_dir(kp.config.name, kp.state["os_pid"])
    return {os.path.relpath(os.path.join(top, f), root) for top, _, files in os.walk(root) for f in files}


def only_spare_slabs(files: set[str]) -> bool:
    """Whether shared-memory files are at most the one empty slab per size class the kernel keeps
    (`kernel/hostmem.py`; a slab file is named slabSLOT-N)."""
    classes = [(os.path.dirname(f), os.path.basename(f).split("-")[0]) for f in files]
    return all(name.startswith("slab") for _, name in classes) and len(set(classes)) == len(classes)


@pytest.fixture(scope="session")
def kernel(runtime_dir):
    """One kernel shared by the tests that do not break it."""
    kp = start_kernel(runtime_dir, "shared", max_bulk_bytes=BULK_LIMIT)
    yield kp
    assert kp.stop() == 0


@pytest.fixture
def client(kernel):
    """A blocking client attached to the shared kernel."""
    from llmos.userland import Client

    with Client(kernel.address, name="test") as c:
        yield c
