"""Start a kernel as a child process and wait until it is ready: the embedded kernel.

Used by `llmos demo`, the benchmarks and the tests. `start` returns once the
kernel's state file says every driver has answered; `stop` sends SIGTERM and
waits for the clean shutdown. The kernel runs in its own session (a Ctrl-C
meant for the parent does not reach it), so it watches its parent instead:
when the parent dies, whatever the signal, the kernel shuts down cleanly,
stopping its driver hosts and child programs (`KernelConfig.parent_os_pid`).
"""

import os
import signal
import subprocess
import sys
import time

import msgspec

from llmos.syscalls import runtime
from .config import KernelConfig


class KernelProcess:
    """A kernel running in a child process."""

    def __init__(self, config: KernelConfig, popen: subprocess.Popen):
        self.config = config
        self.popen = popen
        self.dir = runtime.kernel_dir(config.name, config.runtime_dir)
        self.state: dict = {}

    @property
    def address(self) -> str:
        """The kernel's ipc:// address."""
        return self.state["address"]

    def stop(self, timeout: float = 15.0) -> int:
        """Ask the kernel to shut down (SIGTERM) and wait; returns its exit status."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        return self.popen.returncode

    def __enter__(self) -> "KernelProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start(config: KernelConfig, timeout: float = 60.0, stderr=None) -> KernelProcess:
    """Start a kernel process that stops when this process ends; wait until it is ready (or raise RuntimeError)."""
    watched = msgspec.structs.replace(config, parent_os_pid=os.getpid())
    popen = subprocess.Popen(
        [sys.executable, "-m", "llmos.kernel", msgspec.json.encode(watched).decode()],
        stdin=subprocess.DEVNULL,
        stderr=stderr,
        start_new_session=True,
    )
    kp = KernelProcess(config, popen)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = runtime.read_state(kp.dir)
        if state and state.get("os_pid") == popen.pid and state.get("ready"):
            kp.state = state
            return kp
        if popen.poll() is not None:
            raise RuntimeError(f"the kernel exited during boot with status {popen.returncode}")
        time.sleep(0.02)
    kp.stop()
    raise RuntimeError(f"the kernel was not ready within {timeout} s")

