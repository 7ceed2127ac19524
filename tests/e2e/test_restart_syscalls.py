"""Every syscall, issued while driver hosts die and come back, ends in a result or a clear errno, never a kernel bug."""

import os
import random
import signal
import time

import psutil
import pytest
import torch

from llmos.syscalls import Errno
from llmos.syscalls.table import TABLE
from llmos.userland import Client, LlmosError

from conftest import start_kernel

CONFIG = dict(d_model=16, n_layers=1, n_heads=2, max_len=32)
RUN_S = 6.0  # how long the calls and kills go on at least
MAX_S = 30.0  # ... and at most, while a restart has not yet been met both ways (a loaded machine makes fewer calls)


def driver_hosts(kernel_os_pid: int) -> list[psutil.Process]:
    """The kernel's driver host processes (its children running llmos.drivers.host)."""
    hosts = []
    for p in psutil.Process(kernel_os_pid).children():
        try:
            if "llmos.drivers.host" in p.cmdline():
                hosts.append(p)
        except psutil.Error:  # a spawned child that just ended
            pass
    return hosts


class Caller:
    """Issues random syscalls with arguments drawn from what earlier calls returned."""

    def __init__(self, c: Client, admin: Client, rng: random.Random):
        self.c, self.admin, self.rng = c, admin, rng
        self.tensors: list[int] = []
        self.seqs: list[int] = []
        self.models: list[int] = []
        self.children: list[int] = []
        self.pool = ""

    def pick(self, items: list[int]) -> int:
        return self.rng.choice(items) if items else 999

    def calls(self):
        c, r = self.c, self.rng
        return [
            c.null, c.getpid, c.ps, c.stat, c.yield_, c.devices, c.memstat, c.drivers, c.programs, c.handles,
            c.rights_drop,  # with no rights named: only asks, so every other call keeps its rights
            lambda: c.device("cpu0"),
            lambda: c.memstat(blocks=True),
            lambda: c.handles(self.admin.pid),
            lambda: c.trace_read(r.choice([0, 10**6])),
            lambda: c.sched("cpu0"),
            lambda: c.sched_set("cpu0", r.choice(["fcfs", "rr"])),
            lambda: self.tensors.append(c.alloc("cpu", [r.randint(1, 4096)], wait=r.random() < 0.3).handle),
            lambda: self.tensors.append(c.put(torch.ones(64)).handle),
            lambda: c.write(self.pick(self.tensors), torch.ones(64)),
            lambda: c.read(self.pick(self.tensors)),
            lambda: c.share(self.pick(self.tensors), c.pid),
            lambda: self.tensors.append(c.compute("add", self.pick(self.tensors), self.pick(self.tensors)).handle),
            lambda: c.free(self.tensors.pop(0) if self.tensors else 999),
            lambda: setattr(self, "pool", c.kv_pool("cpu", 1, 1, 8, blocks=16).pool),
            lambda: self.seqs.append(c.kv_alloc("cpu", self.pool or "none", 5).seq),
            lambda: c.kv_append(self.pick(self.seqs), 3),
            lambda: self.seqs.append(c.kv_fork(self.pick(self.seqs)).seq),
            lambda: c.kv_table(self.pick(self.seqs)),
            lambda: c.kv_free(self.seqs.pop(0) if self.seqs else 999),
            lambda: self.models.append(c.model_load("cpu", "tinygpt", CONFIG, kv_blocks=8, block_size=4).model),
            lambda: c.generate(self.pick(self.models), "ab", max_tokens=3),
            lambda: c.logprobs(self.pick(self.models), [1, 2, 3]),
            lambda: c.train_step(self.pick(self.models), [[1, 2, 3, 4]]),
            lambda: c.model_save(self.pick(self.models), "m.safetensors"),
            lambda: c.tokenize(self.pick(self.models), "ab"),
            lambda: c.detokenize(self.pick(self.models), [97, 98]),
            lambda: c.model_quantize(self.pick(self.models), r.choice(["int8", "int4"]), windows=[[1, 2, 3]]),
            lambda: c.model_prune(self.pick(self.models), r.choice([0.0, 0.5]), r.choice(["unstructured", "2:4"])),
            lambda: c.model_free(self.models.pop(0) if self.models else 999),
            lambda: self.children.append(c.spawn("echo", ["0"], quotas={"cpu": 1 << 20}).pid),
            lambda: c.wait(self.pick(self.children), timeout_s=0.05),
            lambda: c.kill(self.pick(self.children)),
            lambda: self.admin.driver_unload("cpu") if r.random() < 0.2 else self.admin.driver_load("cpu"),
            lambda: Client(c.address, name="brief").close(),  # attach and exit
        ]


@pytest.mark.slow
def test_every_syscall_while_driver_hosts_die_and_restart(runtime_dir, tmp_path):
    rng = random.Random(20261204)
    log = tmp_path / "kernel.log"
    kp = start_kernel(runtime_dir, "flaky", log_file=str(log), restart_backoff_s=(0.05, 0.2), hang_s=2.0, ping_s=0.2)
    errors: set[Errno] = set()
    try:
        with Client(kp.address, name="caller", timeout_s=30) as c, Client(name="admin", kernel="flaky", admin=True) as admin:
            caller = Caller(c, admin, rng)
            calls = caller.calls()
            kills, start = 0, time.monotonic()

            def seen_enough() -> bool:
                return kills >= 3 and {Errno.EAGAIN, Errno.ENODEV} <= errors and set(c.stat().by_syscall) >= names

            names = {row.name for row in TABLE}
            while time.monotonic() - start < RUN_S or (time.monotonic() - start < MAX_S and not seen_enough()):
                if rng.random() < 0.03:
                    for host in driver_hosts(kp.popen.pid):
                        os.kill(host.pid, signal.SIGKILL)
                        kills += 1
                try:
                    rng.choice(calls)()
                except LlmosError as exc:
                    errors.add(Errno(exc.errno))
                    assert exc.errno != Errno.EIO or "internal kernel error" not in exc.message, exc.message
            assert kills >= 3
            assert {Errno.EAGAIN, Errno.ENODEV} <= errors  # calls did meet a device that was restarting
            assert set(c.stat().by_syscall) == names  # every syscall was issued
    finally:
        assert kp.stop() == 0
    assert "kernel.bug" not in log.read_text()
