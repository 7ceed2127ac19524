"""llmos.userland: what programs use. Clients, errors, programs and the `llmos` command.

    from llmos.userland import Client
    with Client(name="mine") as c:
        print(c.devices())

The names below load on first use, so the kernel can load the built-in
program plugin (`llmos.userland.programs`) without importing torch.
"""

import importlib

_EXPORTS = {
    "Client": "llmos.userland.client",
    "AsyncClient": "llmos.userland.aclient",
    "LlmosError": "llmos.userland.errors",
    "Errno": "llmos.syscalls.errno",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'llmos.userland' has no attribute {name!r}")
