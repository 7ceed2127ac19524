"""The built-in model architecture plugin: tinygpt.

This module is what the kernel loads; it names the architecture's registry
entry without importing it, so torch is only ever imported in driver hosts.
"""

from llmos.syscalls.plugin import hookimpl


@hookimpl
def llmos_models() -> dict[str, str]:
    """Provide tinygpt."""
    return {"tinygpt": "llmos.drivers.models:tinygpt_architecture"}
