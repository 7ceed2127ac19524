"""A private network link for remote driver hosts: a Linux network namespace joined to this one by a veth pair.

Used by the remote tests and `llmos bench remote`, so that a node's traffic
crosses a real network stack (its own namespace, interfaces, routes) and
stays inside what the caller made. `Link.open()` makes namespace
`llmos-PID-N` holding one end of a veth pair (address .2 of a /30), keeps
the other end here (.1), and brings both up; `prefix` runs a command in the
namespace (`ip netns exec`); `cut()` and `restore()` set this side's end
down and up; `close()` removes the namespace (the pair goes with it).
Where namespaces are not permitted (not root, no `ip`), `Link.open()` falls
back to the loopback: the kernel listens on 127.0.0.2 and the node connects
from this namespace; `namespaced` is False, `why` says why, and `cut` cannot
be done. `start_node` runs `llmos host` over the link.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field

_count = itertools.count()


@dataclass
class Link:
    """Two addresses and, when namespaced, the namespace and this side's interface."""

    kernel_ip: str
    node_ip: str
    namespace: str = ""
    interface: str = ""
    why: str = ""  # why it is not namespaced
    prefix: list[str] = field(default_factory=list)  # run a command on the node's side

    @property
    def namespaced(self) -> bool:
        """Whether the node lives in a namespace of its own (else on the loopback)."""
        return bool(self.namespace)

    @classmethod
    def open(cls) -> Link:
        """A fresh namespace and veth pair, or the loopback fallback when they cannot be made."""
        n = next(_count)
        namespace, here, there = f"llmos-{os.getpid()}-{n}", f"lm{os.getpid() % 100000}h{n}", f"lm{os.getpid() % 100000}n{n}"
        net = f"10.{100 + os.getpid() % 150}.{n % 250}"
        steps = [
            ["ip", "netns", "add", namespace],
            ["ip", "link", "add", here, "type", "veth", "peer", "name", there],
            ["ip", "link", "set", there, "netns", namespace],
            ["ip", "addr", "add", f"{net}.1/30", "dev", here],
            ["ip", "link", "set", here, "up"],
            ["ip", "netns", "exec", namespace, "ip", "addr", "add", f"{net}.2/30", "dev", there],
            ["ip", "netns", "exec", namespace, "ip", "link", "set", there, "up"],
            ["ip", "netns", "exec", namespace, "ip", "link", "set", "lo", "up"],
        ]
        link = cls(f"{net}.1", f"{net}.2", namespace, here, prefix=["ip", "netns", "exec", namespace])
        for step in steps:
            try:
                done = subprocess.run(step, capture_output=True, text=True, timeout=10)
            except (OSError, subprocess.TimeoutExpired) as exc:
                problem = str(exc)
            else:
                problem = done.stderr.strip() if done.returncode else ""
            if problem:
                link.close()
                return cls("127.0.0.2", "127.0.0.1", why=f"no network namespace ({' '.join(step[:3])}: {problem})")
        return link

    def cut(self) -> None:
        """Take this side's end of the pair down: nothing passes (namespaced links only)."""
        self._set("down")

    def restore(self) -> None:
        """Bring this side's end up again."""
        self._set("up")

    def _set(self, state: str) -> None:
        if not self.namespaced:
            raise RuntimeError(f"a loopback link cannot be cut: {self.why}")
        subprocess.run(["ip", "link", "set", self.interface, state], check=True, capture_output=True, timeout=10)

    def close(self) -> None:
        """Remove the namespace and the pair (nothing to do on the loopback)."""
        if self.namespace:
            subprocess.run(["ip", "link", "del", self.interface], capture_output=True, timeout=10)
            subprocess.run(["ip", "netns", "del", self.namespace], capture_output=True, timeout=10)


def start_node(link: Link, kernel: str, keys: str | None, name: str, log: str, threads: int = 1) -> subprocess.Popen:
    """Run `llmos host` for node `name` on the link's far side, its output in the file `log`; stop it with `stop_node`."""
    command = [*link.prefix, sys.executable, "-m", "llmos.userland.cli.main", "host", "--kernel", kernel,
               "--name", name, "--threads", str(threads), *(["--keys", keys] if keys else ["--insecure"])]  # fmt: skip
    with open(log, "ab") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)  # fmt: skip


def stop_node(node: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    """Stop a node started by `start_node`: `llmos host` and its driver hosts (SIGKILL: as a crash would)."""
    try:
        os.killpg(node.pid, sig)
    except ProcessLookupError:
        pass
    node.wait(timeout=30)
