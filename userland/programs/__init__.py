"""The built-in userland programs, registered through the llmos_programs hook."""

from llmos.syscalls.plugin import ProgramEntry, hookimpl


@hookimpl
def llmos_programs() -> list[ProgramEntry]:
    """The programs `llmos run` knows without any plugin installed."""
    return [
        ProgramEntry("matmul", "llmos.userland.examples.matmul:main", "a matmul on a device, checked against torch"),
        ProgramEntry("kvwatch", "llmos.userland.examples.kvwatch:main", "watch a KV sequence grow, fork and shrink"),
    ]
