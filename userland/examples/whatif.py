"""What happens if...? Small experiments on a live kernel, for the labs of docs/architecture.md and drivers.md.

Run `llmos run whatif SCENARIO` next to a kernel (`llmos boot`); each
scenario does one thing a careless or hostile program might do and prints
what the kernel answered. The labs give the expected output.

    handle     use another process's handle number, then have it shared properly
    token      call with the token of a process that has exited
    quota      a child with a 1 MiB quota on cpu0 allocates past it
    lease      a child stops answering (SIGSTOP) and its lease runs out
    crash      kill the driver host of cpu0 in the middle of a call
    unload     unload the mocktpu driver while holding a tensor on mocktpu0 (needs the admin key)
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time

import torch

from llmos.userland import Client, LlmosError


def attempt(what: str, call) -> object:
    """Print `what` and the kernel's answer: the result, or the errno and message."""
    try:
        result = call()
    except LlmosError as exc:
        print(f"{what}: {exc.errno.name}: {exc.message}")
        return None
    print(f"{what}: ok")
    return result


def another(c: Client, name: str, admin: bool = False) -> Client:
    """A second process of this program on `c`'s kernel (not the spawned child's claim: a new attach)."""
    return Client(c.address, name=name, claim="", admin=admin, kernel=c.stat().name if admin else None)


def handle(c: Client) -> None:
    """A handle is an index into one process's own table: another process's number names nothing of its own."""
    ref = c.put(torch.arange(4.0), "cpu")
    with another(c, "neighbour") as other:
        print(f"pid {c.pid} holds handle {ref.handle}; pid {other.pid} has no handles")
        attempt(f"pid {other.pid} reads handle {ref.handle}", lambda: other.read(ref.handle))
        theirs = c.share(ref.handle, other.pid)
        print(f"pid {c.pid} shares it: it is handle {theirs} in pid {other.pid}")
        data = attempt(f"pid {other.pid} reads handle {theirs}", lambda: other.read(theirs))
        print(f"  read {data.tolist()}")


def token(c: Client) -> None:
    """A token dies with its process: a call that presents it again is refused."""
    ghost = another(c, "ghost")
    old, pid = ghost.token, ghost.pid
    ghost.exit()
    ghost.token = old  # replay the dead process's token
    attempt(f"a call with the token of pid {pid}, which exited", ghost.null)
    ghost.token = b""  # nothing left to exit
    ghost.close()


def quota(c: Client) -> None:
    """A child's quota is enforced by the kernel's memory service: ENOMEM past it, not LATER."""
    child = c.spawn("whatif", ["quota-child"], quotas={"cpu0": 1 << 20})
    c.wait(child.pid, on_output=lambda text: print(text, end=""))


def quota_child(c: Client) -> None:
    """Allocate half the 1 MiB quota, then as much again and more."""
    attempt("alloc 512 KiB on cpu0 (quota 1 MiB)", lambda: c.alloc("cpu0", [128 << 10], "float32"))
    attempt("alloc 768 KiB more", lambda: c.alloc("cpu0", [192 << 10], "float32"))
    attempt("alloc 2 MiB", lambda: c.alloc("cpu0", [512 << 10], "float32"))


def lease(c: Client) -> None:
    """A process that stops calling (here: stopped by SIGSTOP) is reclaimed when its lease runs out."""
    child = c.spawn("whatif", ["lease-child"])
    start = time.monotonic()
    exited = c.wait(child.pid, on_output=lambda text: print(text, end=""))
    print(f"pid {child.pid} ended after {time.monotonic() - start:.0f} s: status {exited.status}, {exited.reason}")
    held = sum(d.by_process.get(child.pid, 0) for d in c.memstat())
    print(f"memory pid {child.pid} holds now: {held} bytes; `llmos ps` no longer lists it")


def lease_child(c: Client) -> None:
    """Take some memory, then stop: no more calls, no heartbeats."""
    c.put(torch.zeros(1 << 18), "cpu")
    print(f"pid {c.pid} holds 1 MiB on cpu0 and stops (lease {c.lease_s:.0f} s)", flush=True)
    os.kill(os.getpid(), signal.SIGSTOP)


def crash(c: Client) -> None:
    """A driver host killed mid-call: that call fails with EIO, the kernel restarts the host, tensors on it are lost."""
    device = c.device("cpu0")
    a = c.put(torch.randn(1536, 1536), "cpu")
    out = c.alloc("cpu0", [1536, 1536], "float32")
    killer = threading.Timer(0.05, os.kill, (device.driver_os_pid, signal.SIGKILL))
    killer.start()
    for calls in range(1, 201):  # matmuls until one is cut short
        try:
            c.compute("matmul", a.handle, a.handle, out=out.handle)
        except LlmosError as exc:
            print(f"matmul number {calls} on cpu0, its host (OS pid {device.driver_os_pid}) killed during it: "
                  f"{exc.errno.name}: {exc.message}")
            break
    for _ in range(100):
        try:
            now = c.device("cpu0")
        except LlmosError as exc:  # ENODEV while no host serves it
            print(f"  meanwhile dev_info cpu0: {exc.errno.name}") if _ == 0 else None
            time.sleep(0.1)
            continue
        if now.state == "online" and now.driver_os_pid != device.driver_os_pid:
            break
        time.sleep(0.1)
    print(f"cpu0 is {now.state} again, restarts {now.restarts}, new host OS pid differs: "
          f"{now.driver_os_pid != device.driver_os_pid}")
    attempt(f"read handle {a.handle}, made before the crash", lambda: c.read(a.handle))
    attempt("put a new tensor on cpu0", lambda: c.put(torch.ones(2), "cpu"))


def unload(c: Client) -> None:
    """Unloading a driver stops its devices: their tensors are lost (EIO), the handles stay until freed."""
    ref = c.put(torch.ones(4), "mocktpu0")
    with another(c, "admin", admin=True) as admin:
        attempt("driver_unload mocktpu without the admin key", lambda: c.driver_unload("mocktpu"))
        attempt("driver_unload mocktpu as admin", lambda: admin.driver_unload("mocktpu"))
    attempt(f"read handle {ref.handle} on mocktpu0", lambda: c.read(ref.handle))
    attempt(f"free handle {ref.handle}", lambda: c.free(ref.handle))
    with another(c, "admin", admin=True) as admin:
        attempt("driver_load mocktpu as admin", lambda: admin.driver_load("mocktpu"))


SCENARIOS = {"handle": handle, "token": token, "quota": quota, "lease": lease, "crash": crash, "unload": unload,
             "quota-child": quota_child, "lease-child": lease_child}


def main(argv: list[str]) -> int:
    """Run one scenario and print what happened."""
    parser = argparse.ArgumentParser(prog="whatif", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", choices=[s for s in SCENARIOS if not s.endswith("-child")] + ["quota-child", "lease-child"])
    args = parser.parse_args(argv)
    with Client(name=f"whatif-{args.scenario}") as c:
        SCENARIOS[args.scenario](c)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
