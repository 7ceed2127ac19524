"""`llmos host`: serve this machine's devices to a kernel on another machine, over CurveZMQ TCP.

The node side of remote driver hosts (docs/distributed.md). It starts one
driver host process per device of the drivers named (`--drivers cpu`),
each connecting to the kernel at `--kernel tcp://ADDR:PORT` with the host
key pair of `llmos keygen DIR` (DIR/host.key_secret; the kernel must have
DIR/hosts/ from the same keygen). The kernel lists them as `NODE/KINDINDEX`
(`node2/cpu0`). Like the kernel for its own hosts, this command supervises
them: a host that dies, or gives up on a kernel silent for a few seconds
(down, unreachable, or refusing the key), is started again after a backoff
that doubles up to 30 s, and says so; the new one joins under the same
name. Ctrl-C stops them all.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

FIRST_BACKOFF_S, MAX_BACKOFF_S = 1.0, 30.0
STABLE_S = 30.0  # a host that lived this long resets its backoff
GONE_STATUS = 75  # llmos.drivers.host.GONE_STATUS, not imported: that module loads the driver stack


def add_parser(sub) -> None:
    """Add `llmos host`."""
    p = sub.add_parser("host", help="serve this machine's devices to a kernel elsewhere (remote driver hosts)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--kernel", required=True, metavar="tcp://ADDR:PORT", help="the kernel's TCP address (llmos boot --tcp)")
    p.add_argument("--keys", metavar="DIR", help="the folder of `llmos keygen` (its host key pair and the server key)")
    p.add_argument("--insecure", action="store_true", help="connect without keys (the kernel must be --insecure too)")
    p.add_argument("--drivers", default="cpu", help="comma-separated driver kinds to serve (default cpu)")
    p.add_argument("--name", default=socket.gethostname().split(".")[0], help="this node's name (default: host name)")
    p.add_argument("--threads", type=int, default=0, help="torch threads per driver host (default: torch's choice)")
    p.set_defaults(func=run)


@dataclass
class Child:
    """One device's driver host: its process and its restart schedule."""

    kind: str
    index: int
    target: str
    popen: subprocess.Popen | None = None
    started: float = 0.0
    backoff: float = 0.0
    restart_at: float = 0.0

    def schedule_restart(self, now: float) -> float:
        """Plan the next start, the delay doubling from FIRST_BACKOFF_S to MAX_BACKOFF_S; the delay."""
        if now - self.started > STABLE_S:
            self.backoff = 0.0
        self.backoff = FIRST_BACKOFF_S if not self.backoff else min(self.backoff * 2, MAX_BACKOFF_S)
        self.restart_at = now + self.backoff
        return self.backoff


def run(args: argparse.Namespace) -> int:
    """Check the options, start a driver host per device, and keep them running until Ctrl-C."""
    problem, curve = _check(args)
    if problem:
        print(f"llmos host: {problem}", file=sys.stderr)
        return 2
    from llmos.kernel import plugins

    known = plugins.drivers(plugins.plugin_manager())
    kinds = [kind for kind in args.drivers.split(",") if kind]
    if not kinds or any(kind not in known for kind in kinds):
        print(f"llmos host: --drivers names kinds of {', '.join(sorted(known))}", file=sys.stderr)
        return 2
    options = {"remote": True, **({"threads": args.threads} if args.threads else {})}
    children = [Child(kind, i, known[kind].target) for kind in kinds for i in range(_count(known[kind].target, options))]
    if not children:
        print(f"llmos host: this machine has no device of {', '.join(kinds)}", file=sys.stderr)
        return 1
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    try:
        while not stopping:
            now = time.monotonic()
            for child in children:
                _tend(child, args, curve, options, now)
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    for child in children:
        if child.popen is not None and child.popen.poll() is None:
            child.popen.terminate()
    for child in children:
        if child.popen is not None:
            child.popen.wait()
    print(f"llmos host: node {args.name} stopped", flush=True)
    return 0


def _check(args: argparse.Namespace) -> tuple[str, str | None]:
    """(problem, CurveZMQ keys as LLMOS_CURVE JSON): refuse what would not connect, or connect in plain text."""
    if not args.kernel.startswith("tcp://"):
        return "--kernel must be a tcp:// address: a kernel on this machine starts its own driver hosts", None
    if "/" in args.name or not args.name:
        return f"--name {args.name!r}: a node name is not empty and has no '/'", None
    if not args.keys:
        if not args.insecure:
            return ("refusing plain-text TCP: give --keys DIR (from `llmos keygen DIR`, the kernel booted with "
                    "--keys DIR), or --insecure for a kernel booted --insecure"), None  # fmt: skip
        return "", None
    from llmos.userland.wire import curve_keys

    try:
        keys = curve_keys(args.keys, "host")
    except (OSError, ValueError) as exc:
        return f"cannot read the host keys in {args.keys}: {exc} (make them with `llmos keygen {args.keys}`)", None
    return "", json.dumps([key.decode() for key in keys])


def _count(target: str, options: dict) -> int:
    """How many devices of a driver this machine has (the driver class says)."""
    import importlib

    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name).count(options)


def _tend(child: Child, args: argparse.Namespace, curve: str | None, options: dict, now: float) -> None:
    """Start a child that is due; notice one that ended and plan its restart."""
    device = f"{args.name}/{child.kind}{child.index}"
    if child.popen is not None:
        status = child.popen.poll()
        if status is None:
            return
        child.popen = None
        delay = child.schedule_restart(now)
        why = "the kernel is silent" if status == GONE_STATUS else f"its driver host exited with status {status}"
        print(f"llmos host: {device}: {why}; trying again in {delay:.0f} s", flush=True)
        return
    if now < child.restart_at:
        return
    env = dict(os.environ)
    env.update(
        LLMOS_DRIVER_TARGET=child.target, LLMOS_DRIVER_INDEX=str(child.index), LLMOS_DRIVER_OPTIONS=json.dumps(options),
        LLMOS_DRIVER_IDENT=f"node-{args.name}-{child.kind}{child.index}-{secrets.token_hex(4)}", LLMOS_KERNEL=args.kernel,
        LLMOS_NODE=args.name,
    )  # fmt: skip
    env.pop("LLMOS_CURVE", None)
    if curve:
        env["LLMOS_CURVE"] = curve
    child.popen = subprocess.Popen([sys.executable, "-m", "llmos.drivers.host"], env=env, stdin=subprocess.DEVNULL)
    child.started = now
    print(f"llmos host: {device} joins {args.kernel} (driver host os pid {child.popen.pid})", flush=True)
