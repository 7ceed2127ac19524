"""The pluggy markers of llmos, importable by every layer.

Plugins (drivers, services, programs, third-party packages) mark their hook
implementations with `hookimpl`; the hook specifications themselves live in
one module, `llmos.kernel.hookspecs`.
"""

import pluggy

PROJECT = "llmos"
hookimpl = pluggy.HookimplMarker(PROJECT)
hookspec = pluggy.HookspecMarker(PROJECT)
