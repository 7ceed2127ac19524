"""The kernel's plugin manager: built-in plugins, entry points, LLMOS_PLUGINS.

Like pytest: DEFAULT_PLUGINS are always loaded; packages add plugins through
the `llmos` entry-point group unless LLMOS_DISABLE_PLUGIN_AUTOLOAD is set;
LLMOS_PLUGINS names extra modules (comma-separated) to load explicitly.
"""

import importlib
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
            pm.register(importlib.import_module(name), name=name)
    if not os.environ.get(DISABLE_AUTOLOAD_ENV):
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    return pm


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
