"""The kernel's plugin manager: built-in plugins, entry points, LLMOS_PLUGINS.

Like pytest: DEFAULT_PLUGINS are always loaded; packages add plugins through
the `llmos` entry-point group unless LLMOS_DISABLE_PLUGIN_AUTOLOAD is set;
LLMOS_PLUGINS names extra modules (comma-separated) to load explicitly.
Registration is idempotent: a module named twice (in LLMOS_PLUGINS and by an
entry point, or twice in either) is registered once, under its first name.
"""

import importlib
import importlib.metadata
import os

import pluggy

from llmos.syscalls.plugin import PROJECT, DriverEntry, ProgramEntry

from . import hookspecs

DEFAULT_PLUGINS: tuple[str, ...] = (
    "llmos.kernel.builtin",
    "llmos.services.scheduler.plugin",
    "llmos.drivers.cpu",
    "llmos.drivers.cuda",
    "llmos.drivers.mocktpu",
    "llmos.drivers.archs",
    "llmos.userland.programs",
)

ENTRY_POINT_GROUP = "llmos"
DISABLE_AUTOLOAD_ENV = "LLMOS_DISABLE_PLUGIN_AUTOLOAD"
PLUGINS_ENV = "LLMOS_PLUGINS"


def plugin_manager(extra: tuple[str, ...] = ()) -> pluggy.PluginManager:
    """Build the PluginManager with every hookspec and the plugins in force."""
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    names = list(DEFAULT_PLUGINS) + list(extra)
    names += [n.strip() for n in os.environ.get(PLUGINS_ENV, "").split(",") if n.strip()]
    for name in names:
        if pm.get_plugin(name) is None:
            _register(pm, importlib.import_module(name), name)
    if not os.environ.get(DISABLE_AUTOLOAD_ENV):
        load_entry_points(pm)
    return pm


def load_entry_points(pm: pluggy.PluginManager) -> None:
    """Register the plugins of the `llmos` entry-point group that are not registered yet (under any name)."""
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if pm.get_plugin(ep.name) is None and not pm.is_blocked(ep.name):
            _register(pm, ep.load(), ep.name)


def _register(pm: pluggy.PluginManager, plugin, name: str) -> None:
    """Register `plugin` as `name` unless it is registered already (pluggy refuses a second name)."""
    if not pm.is_registered(plugin):
        pm.register(plugin, name=name)


def drivers(pm: pluggy.PluginManager) -> dict[str, DriverEntry]:
    """Every driver kind the plugins provide (the last registered wins a clash)."""
    return {e.kind: e for entries in reversed(pm.hook.llmos_drivers()) for e in entries}


def programs(pm: pluggy.PluginManager) -> dict[str, ProgramEntry]:
    """Every userland program the plugins provide (the last registered wins a clash)."""
    return {e.name: e for entries in reversed(pm.hook.llmos_programs()) for e in entries}


def policies(pm: pluggy.PluginManager) -> dict[str, type]:
    """Every scheduling policy the plugins provide (the last registered wins a clash)."""
    return {name: cls for answer in reversed(pm.hook.llmos_scheduler_policies()) for name, cls in answer.items()}


def models(pm: pluggy.PluginManager) -> dict[str, str]:
    """Every model architecture the plugins provide, name -> target (the last registered wins a clash)."""
    return {name: target for answer in reversed(pm.hook.llmos_models()) for name, target in answer.items()}


def model_sizes(pm: pluggy.PluginManager) -> dict[str, str]:
    """The torch-free size function of each model architecture, name -> target (the last registered wins a clash)."""
    return {name: target for answer in reversed(pm.hook.llmos_model_sizes()) for name, target in answer.items()}
