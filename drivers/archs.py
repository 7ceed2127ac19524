"""The built-in model architecture plugin: tinygpt.

This module is what the kernel loads; it names the architecture's registry
entry without importing it, so torch is only ever imported in driver hosts,
and the torch-free function the kernel sizes a tinygpt model with.
"""

from llmos.syscalls.plugin import hookimpl


@hookimpl
def llmos_models() -> dict[str, str]:
    """Provide tinygpt."""
    return {"tinygpt": "llmos.drivers.models:tinygpt_architecture"}


@hookimpl
def llmos_model_sizes() -> dict[str, str]:
    """Size tinygpt from its config (torch-free)."""
    return {"tinygpt": "llmos.drivers.models.tinygpt_config:tinygpt_size"}
