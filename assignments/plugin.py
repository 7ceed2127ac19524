"""The llmos plugin of the assignments: it provides the `capdev` driver kind of assignment 3.

The kernel loads it with `LLMOS_PLUGINS=assignments.plugin` (the grader
does so); like every driver plugin it names the class as "module:Class"
without importing it, so the kernel never imports torch for it.
"""

from llmos.syscalls.plugin import DriverEntry, hookimpl


@hookimpl
def llmos_drivers() -> list[DriverEntry]:
    """Provide assignment 3's driver."""
    return [DriverEntry("capdev", "assignments.capdriver:CapDriver", "assignment 3: a CPU device with a capacity")]
