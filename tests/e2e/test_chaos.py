"""A standing fault suite, run every time: processes generate from one shared model while driver hosts and clients are
killed and stopped at random moments. Afterwards the kernel serves, every call ended with a result or a
typed errno, no kernel bug was logged, and memory, handles, shared-memory files and the process table
are back where they started. And a short load soak."""

import json
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

CONFIG = {"d_model": 32, "n_layers": 1, "n_heads": 2, "max_len": 64}
# what a call may answer while its device restarts or its handles were lost with a driver host
EXPECTED = {"EIO", "ENODEV", "EAGAIN", "ESRCH"}


def online(c: Client) -> bool:
    try:
        return c.device("cpu0").state == "online"
    except LlmosError as exc:
        assert exc.errno == Errno.ENODEV
        return False


def load_model(c: Client) -> int:
    """Load the shared model, waiting out a restart of the device."""
    deadline = time.monotonic() + 30
    while True:
        try:
            return c.model_load("cpu", "tinygpt", config=CONFIG, kv_blocks=32, block_size=4).model
        except LlmosError as exc:
            if exc.errno not in (Errno.ENODEV, Errno.EAGAIN, Errno.EIO) or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def fault(rng: random.Random, c: Client, children: list) -> str:
    """One random fault: the driver host killed or stopped, or a child killed by the kernel or the OS."""
    roll = rng.random()
    if roll < 0.3:
        os.kill(c.device("cpu0").driver_os_pid, signal.SIGKILL)
        return "driver kill -9"
    if roll < 0.5:
        host = c.device("cpu0").driver_os_pid
        os.kill(host, signal.SIGSTOP)  # it hangs: the kernel replaces it after hang_s
        time.sleep(rng.uniform(0.2, 1.5))
        try:
            os.kill(host, signal.SIGCONT)
        except ProcessLookupError:
            pass
        return "driver stopped"
    child = rng.choice(children)
    if roll < 0.75:
        c.kill(child.pid, 9)
        return "child killed through the kernel"
    os.kill(child.os_pid, signal.SIGKILL)
    return "child killed by the OS"


@pytest.mark.slow
def test_chaos_leaves_the_kernel_serving_and_nothing_behind(runtime_dir, tmp_path):
    rng = random.Random(20261204)
    log, outcomes = tmp_path / "kernel.log", tmp_path / "outcomes"
    kp = start_kernel(runtime_dir, "chaos", log_file=str(log), hang_s=0.5, ping_s=0.1, restart_backoff_s=(0.05, 0.2))
    faults, statuses = [], []
    try:
        with Client(kp.address, name="conductor") as c:
            before = (c.device("cpu0").used_bytes, shm_files(kp), {p.pid for p in c.ps()})
            for round_ in range(4):
                model = load_model(c)
                children = [c.spawn("chaos", [str(model), str(outcomes)], models=[model]) for _ in range(3)]
                until(lambda: outcomes.exists() and "ok generate" in outcomes.read_text(), timeout=30)
                for _ in range(2):
                    time.sleep(rng.uniform(0.1, 1.0))
                    faults.append(fault(rng, c, children))
                for child in children:
                    try:
                        c.kill(child.pid, 15)
                    except LlmosError as exc:
                        assert exc.errno == Errno.ESRCH  # it was killed already
                statuses += [c.wait(child.pid, timeout_s=20).status for child in children]
                c.model_free(model)
                until(lambda: online(c), timeout=30)
            assert c.null() is not None  # the kernel serves
            until(lambda: c.device("cpu0").used_bytes == before[0], timeout=10)
            until(lambda: only_spare_slabs(shm_files(kp) - before[1]), timeout=10)
            assert {p.pid for p in c.ps()} == before[2]
            assert not [p for d in c.memstat() for p in d.kv_pools if p.pool.startswith("model")]
    finally:
        assert kp.stop() == 0
    assert set(statuses) <= {-15, -9}, statuses  # no child died of an untyped failure (status 1)
    lines = outcomes.read_text().splitlines()
    errnos = {line.split()[1] for line in lines if line.startswith("err ")}
    assert errnos <= EXPECTED, [line for line in lines if line.startswith("err ")][:5]
    assert not [line for line in lines if "internal kernel error" in line]
    assert sum(line.startswith("ok ") for line in lines) > 0
    assert "kernel.bug" not in log.read_text(), faults


@pytest.mark.slow
def test_a_short_load_soak_ends_without_errors_or_kernel_growth():
    """`llmos bench load` as a soak: 8 clients in 2 processes pipeline null/alloc/write/read/free for 4 s;
    every call is answered without error and the kernel's resident memory stays flat (a leak per call of
    even a few hundred bytes would show over the ~20k calls)."""
    out = subprocess.run(
        [sys.executable, "-m", "llmos.userland.cli.main", "bench", "load", "--json", "--clients", "8", "--procs", "2",
         "--seconds", "4", "--rounds", "1", "--warmup", "1"],  # fmt: skip
        capture_output=True, text=True, check=True, timeout=120,
    )
    result = json.loads(out.stdout)
    assert result["errors"] == 0
    assert result["llmos_calls_s"] * 4 > 2000  # the soak really ran (a count of calls, not a speed target)
    assert result["kernel_rss_growth_mb"] < 8, result
