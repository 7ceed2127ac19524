"""Programs for the tests, and a recorder of the kernel's notification hooks.

The test kernels load this module with LLMOS_PLUGINS=llmos_testprogs. The
recorder appends one JSON line per notification to $LLMOS_TEST_EVENTS.
"""

import json
import os
import random
import sys
import time

import torch

from llmos.syscalls.plugin import ProgramEntry, hookimpl
from llmos.userland import Client, LlmosError


@hookimpl
def llmos_programs() -> list[ProgramEntry]:
    """hold, crash, echo, talk, churn, chaos and nest."""
    return [
        ProgramEntry("hold", "llmos_testprogs:hold", "allocate MiB on a device, say ready, sleep"),
        ProgramEntry("crash", "llmos_testprogs:crash", "allocate, then die without exit()"),
        ProgramEntry("echo", "llmos_testprogs:echo", "print the arguments; exit with the first if it is a number"),
        ProgramEntry("talk", "llmos_testprogs:talk", "generate at length from an inherited model handle"),
        ProgramEntry("churn", "llmos_testprogs:churn", "allocate, compute, read and free at random until killed"),
        ProgramEntry("chaos", "llmos_testprogs:chaos", "generate and churn tensors until killed, logging each call's outcome"),
        ProgramEntry("nest", "llmos_testprogs:nest", "spawn a child with the quotas given as JSON, print its quota"),
    ]


def _record(**event) -> None:
    path = os.environ.get("LLMOS_TEST_EVENTS")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(event) + "\n")


@hookimpl
def llmos_kernel_started(name: str, address: str, devices: list[str]) -> None:
    """Record that a kernel is serving."""
    _record(hook="llmos_kernel_started", name=name, devices=devices)


@hookimpl
def llmos_process_exit(pid: int, name: str, status: int, reason: str) -> None:
    """Record a process exit."""
    _record(hook="llmos_process_exit", pid=pid, status=status, reason=reason)


def hold(argv: list[str]) -> int:
    """Allocate argv[0] MiB on cpu, write it, print the handle, then sleep until killed."""
    mib = int(argv[0]) if argv else 1
    c = Client()
    ref = c.put(torch.ones(mib << 18), "cpu")
    print(f"ready pid={c.pid} handle={ref.handle}", flush=True)
    while True:
        time.sleep(1)


def crash(argv: list[str]) -> int:
    """Allocate, then end the OS process at once: no exit syscall, no cleanup."""
    c = Client()
    c.put(torch.ones(1 << 18), "cpu")
    print("crashing", flush=True)
    sys.stdout.flush()
    os._exit(3)


def echo(argv: list[str]) -> int:
    """Print the arguments and exit with the first one if it is a number."""
    with Client():
        print(" ".join(argv), flush=True)
    return int(argv[0]) if argv and argv[0].isdigit() else 0


def talk(argv: list[str]) -> int:
    """Generate without end, four calls at a time, so a step of the model is nearly always on the device:
    from the inherited model handle argv[0], or from its own model loaded from the checkpoint argv[0] names;
    the prompts start with argv[1] if given (so they can share a prefix with others')."""
    import asyncio

    from llmos.userland import AsyncClient

    async def forever() -> None:
        async with AsyncClient() as c:
            model = int(argv[0]) if argv[0].isdigit() else (await c.model_load("cpu", "tinygpt", checkpoint=argv[0])).model
            print("talking", flush=True)
            while True:
                start = argv[1] if len(argv) > 1 else "talk "
                await asyncio.gather(*(c.generate(model, f"{start}{i}: ", max_tokens=40) for i in range(4)))

    asyncio.run(forever())
    return 0


def churn(argv: list[str]) -> int:
    """Three tasks at once put, add, read and free tensors on cpu at random (seed argv[0]) until killed,
    so that a kill finds calls of this process queued on the device and in flight."""
    import asyncio

    from llmos.userland import AsyncClient

    async def task(c: AsyncClient, rng: random.Random) -> None:
        held = []
        while True:
            roll = rng.random()
            if len(held) < 2 or (roll < 0.4 and len(held) < 6):
                held.append((await c.put(torch.ones(rng.randint(1, 64) << 10), "cpu")).handle)
            elif roll < 0.7:
                held.append((await c.compute("add", held[-1], held[-1])).handle)
            elif roll < 0.8:
                await c.read(rng.choice(held))
            else:
                await c.free(held.pop(rng.randrange(len(held))))

    async def tasks() -> None:
        async with AsyncClient() as c:
            print("churning", flush=True)
            await asyncio.gather(*(task(c, random.Random(f"{argv[0]}/{i}")) for i in range(3)))

    asyncio.run(tasks())
    return 0


def chaos(argv: list[str]) -> int:
    """Until killed: two tasks generate from the inherited model handle argv[0] and one puts, adds, reads
    and frees tensors, while the test kills driver hosts and processes around it. Each call's outcome
    is appended to the file argv[1] as `ok NAME` or `err ERRNO NAME MESSAGE`; a failure that is not a
    typed syscall error ends the program with a traceback (exit status 1), which the test looks for."""
    import asyncio

    from llmos.userland import AsyncClient, LlmosError

    model, out = int(argv[0]), open(argv[1], "a", buffering=1)

    async def call(name: str, coro):
        try:
            result = await coro
        except LlmosError as exc:
            out.write(f"err {exc.errno.name if hasattr(exc.errno, 'name') else exc.errno} {name} {exc.message}\n")
            await asyncio.sleep(0.02)  # a lost handle or an offline device answers at once: do not spin
            return None
        out.write(f"ok {name}\n")
        return result

    async def generator(c: AsyncClient, i: int) -> None:
        while True:
            await call("generate", c.generate(model, f"chaos {i}: ", max_tokens=24))

    async def tensors(c: AsyncClient) -> None:
        rng, held = random.Random(argv[1]), []
        while True:
            if len(held) < 3:
                ref = await call("put", c.put(torch.ones(rng.randint(1, 64) << 10), "cpu"))
                held += [ref.handle] if ref is not None else []
            elif rng.random() < 0.5:
                await call("read", c.read(rng.choice(held)))
            else:
                await call("free", c.free(held.pop(rng.randrange(len(held)))))

    async def tasks() -> None:
        async with AsyncClient() as c:
            print("chaos", flush=True)
            await asyncio.gather(generator(c, 0), generator(c, 1), tensors(c))

    asyncio.run(tasks())
    return 0


def nest(argv: list[str]) -> int:
    """For each argument, spawn `hold` with the quotas it gives as JSON ("{}": the default) and print the
    child's quota on cpu0 as the kernel reports it, or the errno the spawn failed with."""
    with Client() as c:
        for quotas in argv:
            try:
                child = c.spawn("hold", ["1"], quotas=json.loads(quotas))
            except LlmosError as exc:
                print(exc.errno.name, flush=True)
                continue
            (cpu,) = c.memstat()
            print(cpu.quotas.get(child.pid), flush=True)
            c.kill(child.pid, 9)
            c.wait(child.pid)
    return 0
