"""Traces and plots of what the kernel (or the simulator) did.

A `Timeline` (timeline.py) is the one shape both sources are turned into:
the kernel's JSON event log or its `trace_read` ring (kernellog.py) and a `llmos sim` result
(simtrace.py). From a timeline, chrome.py writes Chrome/Perfetto trace-event
JSON and plot.py a PNG Gantt chart with memory occupancy.
"""

from .chrome import to_chrome, write_chrome
from .kernellog import from_events, from_log
from .simtrace import from_sim
from .timeline import Instant, Slice, Timeline

__all__ = ["Instant", "Slice", "Timeline", "from_events", "from_log", "from_sim", "to_chrome", "write_chrome"]
