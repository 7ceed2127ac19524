"""Conformance checks through a real kernel: boot one with the driver, then use it as a program would.

`booted` starts a kernel whose only device kind is the driver's, in a private
runtime folder, with the driver's plugin made loadable (through
LLMOS_PLUGINS, or the installed package's entry point). The checks then
attach a `llmos.userland.Client` and hold what comes back through syscalls to
torch; `check_restart` kills the driver host with SIGKILL and expects the
kernel to bring the device back, with the old tensors lost (EIO).

The kit is test code, so like the `llmos` command it imports across layers:
it starts a kernel and attaches a client.
"""

import contextlib
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator

import torch

from llmos.kernel import boot, plugins
from llmos.kernel.config import KernelConfig
from llmos.syscalls import Errno
from llmos.syscalls.driver import DeviceSpec
from llmos.userland import Client, LlmosError

from .cases import compare, op_cases, runnable_cases, sample
from .checks import expect


@contextlib.contextmanager
def plugin_env(plugin: str) -> Iterator[None]:
    """Add `plugin` to LLMOS_PLUGINS for what starts inside (the kernel inherits the environment)."""
    old = os.environ.get(plugins.PLUGINS_ENV)
    if plugin:
        os.environ[plugins.PLUGINS_ENV] = ",".join(filter(None, [old, plugin]))
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(plugins.PLUGINS_ENV, None)
        else:
            os.environ[plugins.PLUGINS_ENV] = old


@contextlib.contextmanager
def booted(kind: str, options: dict, plugin: str = "", **config) -> Iterator[boot.KernelProcess]:
    """A kernel serving only devices of `kind`, in a private runtime folder; stopped and removed after.

    `plugin`: the module providing the driver, loaded through LLMOS_PLUGINS;
    "" means an installed package's `llmos` entry point provides it.
    `config`: more KernelConfig fields.
    """
    runtime_dir = tempfile.mkdtemp(prefix="llc-")  # short: ipc paths must stay under ~100 bytes
    os.chmod(runtime_dir, 0o700)
    try:
        with plugin_env(plugin):
            provided = plugins.drivers(plugins.plugin_manager())
            expect(kind in provided, f"no plugin provides driver kind {kind!r} (kinds: {sorted(provided)}); "
                   "install your package (its `llmos` entry point) or name its plugin module")
            kp = boot.start(KernelConfig(name=f"conformance-{kind}", runtime_dir=runtime_dir, drivers=[kind],
                                         driver_options={kind: dict(options)}, log_level="warning", **config))
        with kp:
            yield kp
    finally:
        shutil.rmtree(runtime_dir, ignore_errors=True)


def check_device(c: Client, name: str, spec: DeviceSpec) -> None:
    """The kernel lists the device online, with the dtypes, ops and memory kind the driver declares."""
    listed = {d.name: d for d in c.devices()}
    expect(name in listed, f"{name} is not among the kernel's devices {sorted(listed)}")
    info = listed[name]
    expect(info.state == "online", f"{name} is {info.state}, not online")
    expect((info.dtypes, info.ops, info.host_visible) == (spec.dtypes, spec.ops, spec.host_visible),
           f"the kernel sees dtypes {info.dtypes}, ops {info.ops}, host_visible {info.host_visible}; the driver "
           f"declares {spec.dtypes}, {spec.ops}, {spec.host_visible}")
    expect(info.capacity_bytes > 0 and info.driver_os_pid > 0, f"{name}: capacity {info.capacity_bytes}, "
           f"driver host pid {info.driver_os_pid}")


def check_ops(c: Client, name: str, spec: DeviceSpec, computes_in: dict[str, str]) -> None:
    """Through syscalls: every dtype round-trips, every declared op agrees with torch or fails with EINVAL."""
    failures = []
    for dtype in spec.dtypes:
        x = sample([3, 5], dtype, torch.Generator().manual_seed(0))
        ref = c.put(x, name)
        got = c.read(ref.handle)
        c.free(ref.handle)
        if not torch.equal(got, x):
            failures.append(f"{dtype}: read back {got.tolist()}, wrote {x.tolist()}")
    for case in op_cases(spec.ops, spec.dtypes):
        handles = [c.put(x, name).handle for x in case.inputs]
        try:
            out = c.compute(case.op, *handles, **case.params)
        except LlmosError as exc:
            if not (case.reference() is None and exc.errno == Errno.EINVAL):
                failures.append(f"{case}: {Errno(exc.errno).name}: {exc.message}")
        else:
            failures.append(compare(case, c.read(out.handle), computes_in) if case.reference() is not None
                            else f"{case}: torch refuses this op; the kernel answered a result, not EINVAL")
            handles.append(out.handle)
        for h in handles:
            c.free(h)
    failures = [f for f in failures if f]
    expect(not failures, f"{len(failures)} results through the kernel are wrong:\n  " + "\n  ".join(failures))


def wait_replaced(c: Client, name: str, old_pid: int, timeout: float = 30.0) -> None:
    """Wait until `name` is online again, served by a driver host other than `old_pid`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            info = c.device(name)
            if info.state == "online" and info.driver_os_pid != old_pid:
                return
        except LlmosError as exc:
            expect(exc.errno == Errno.ENODEV, f"while {name} restarts: {exc}")
        time.sleep(0.02)
    raise AssertionError(f"{name} was not back online within {timeout} s of its driver host's death")


def check_restart(c: Client, name: str, spec: DeviceSpec, computes_in: dict[str, str]) -> None:
    """kill -9 of the driver host: the device comes back, old tensors fail with EIO, new work succeeds."""
    case = runnable_cases(spec.ops, spec.dtypes)[0]
    held = [c.put(x, name).handle for x in case.inputs]
    before = c.device(name)
    os.kill(before.driver_os_pid, signal.SIGKILL)
    wait_replaced(c, name, before.driver_os_pid)
    expect(c.device(name).restarts == before.restarts + 1, f"{name}: restarts did not go up by one")
    for h in held:
        try:
            c.read(h)
        except LlmosError as exc:
            expect(exc.errno == Errno.EIO, f"read of a tensor lost with the old host: {exc}, expected EIO")
        else:
            raise AssertionError("a tensor of the killed driver host could still be read")
        c.free(h)  # a lost handle can still be closed
    handles = [c.put(x, name).handle for x in case.inputs]
    out = c.compute(case.op, *handles, **case.params)
    failure = compare(case, c.read(out.handle), computes_in)
    for h in handles + [out.handle]:
        c.free(h)
    expect(not failure, f"after the restart: {failure}")
