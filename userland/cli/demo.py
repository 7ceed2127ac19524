"""`llmos demo`: boot an embedded kernel, run the example program on it, shut down."""

import argparse
import os
import time

from llmos.kernel import boot
from llmos.kernel.config import KernelConfig
from llmos.syscalls import runtime

from ..client import Client


def add_parser(sub) -> None:
    """Add `llmos demo`."""
    p = sub.add_parser(
        "demo",
        help="boot a kernel, run the example program, shut down",
        description="Boot a private kernel with the default drivers, spawn the example program (a matmul "
        "checked against torch) as a child process through syscalls, show its output, and shut down.",
    )
    p.add_argument("--device", default="cpu", help="device for the example (default: cpu)")
    p.add_argument("-n", type=int, default=512, help="matrix size (default: 512)")
    p.set_defaults(func=run)


class Indented:
    """Prints streamed text with every line indented (chunks may end mid-line)."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.at_line_start = True

    def __call__(self, text: str) -> None:
        for piece in text.splitlines(keepends=True):
            print((self.prefix if self.at_line_start else "") + piece, end="", flush=True)
            self.at_line_start = piece.endswith("\n")


def say(text: str) -> None:
    """A progress line."""
    print(f"[llmos demo] {text}", flush=True)


def run(args: argparse.Namespace) -> int:
    """The demo, step by step."""
    name = f"demo-{os.getpid()}"
    say(f"booting kernel {name!r} (drivers start in their own processes)...")
    start = time.monotonic()
    with open(os.devnull, "w") as quiet, boot.start(KernelConfig(name=name, log_level="warning"), stderr=quiet) as kp:
        say(f"kernel up in {time.monotonic() - start:.1f} s at {kp.address}")
        with Client(kp.address, name="demo") as c:
            for d in c.devices():
                say(f"device {d.name}: {d.description}, {d.capacity_bytes / 2**30:.1f} GiB")
            child = c.spawn("matmul", ["--device", args.device, "-n", str(args.n)])
            say(f"spawned program 'matmul' as pid {child.pid} (os pid {child.os_pid}); its output:")
            exited = c.wait(child.pid, on_output=Indented("    "))
            say(f"pid {exited.pid} ended: {exited.reason}")
            stat = c.stat()
            say(f"the kernel served {stat.syscalls} syscalls ({stat.errors} errors)")
        say("shutting down...")
    status = kp.popen.returncode
    runtime.remove(kp.dir)
    say(f"kernel stopped (status {status}); bye")
    return 0 if exited.status == 0 and status == 0 else 1

