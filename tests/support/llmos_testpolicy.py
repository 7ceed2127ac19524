"""A scheduling policy from a plugin, for `llmos sim --policy NAME` (loaded with LLMOS_PLUGINS=llmos_testpolicy)."""

from llmos.services.scheduler.policies.fcfs import FCFS
from llmos.syscalls.plugin import hookimpl


class PluginFCFS(FCFS):
    """First come, first served, under the name a plugin gives it."""

    name = "plugin-fcfs"


@hookimpl
def llmos_scheduler_policies() -> dict[str, type]:
    """Provide `plugin-fcfs`."""
    return {"plugin-fcfs": PluginFCFS}
