"""The pluggy markers of llmos, importable by every layer.

Plugins (drivers, services, programs, third-party packages) mark their hook
implementations with `hookimpl`; the hook specifications themselves live in
one module, `llmos.kernel.hookspecs`.
"""

from typing import NamedTuple

import pluggy

PROJECT = "llmos"
hookimpl = pluggy.HookimplMarker(PROJECT)
hookspec = pluggy.HookspecMarker(PROJECT)


class DriverEntry(NamedTuple):
    """A driver a plugin provides: its kind (`cpu`), where its class lives, a line of help.

    `target` is "module:Class"; only driver host processes import it, so the
    kernel never loads torch or a device runtime itself.
    """

    kind: str
    target: str
    help: str = ""


class ProgramEntry(NamedTuple):
    """A userland program a plugin provides: `llmos run NAME` and the spawn syscall start it.

    `target` is "module:function"; the function takes the argument list and
    returns an exit status. An `interactive` program reads its user's input:
    the kernel spawns children with no stdin, so `llmos run` calls it in its
    own process instead (attached to the same kernel).
    """

    name: str
    target: str
    help: str = ""
    interactive: bool = False
