"""The llmos plugin of this package: it provides the `exampledev` driver kind.

The kernel imports this module (through the `llmos` entry point) and calls
the hook; the hook names the driver class as "module:Class" without importing
it, so the kernel never imports torch. Only the driver host process imports
`llmos_driver_example.driver`.
"""

from llmos.syscalls.plugin import DriverEntry, hookimpl


@hookimpl
def llmos_drivers() -> list[DriverEntry]:
    """Provide the example driver."""
    return [
        DriverEntry(
            "exampledev",
            "llmos_driver_example.driver:ArenaDriver",
            "example: a CPU device with one fixed block of memory",
        )
    ]
