"""Structured logging: structlog JSON events, one per line.

Events carry `pid`, `syscall` and `device` where they apply (bound by the
caller). Levels below the configured one cost almost nothing: the filtering
bound logger turns them into no-ops, so per-syscall debug events can stay in
the hot path.
"""

import logging
import sys
from typing import TextIO

import structlog


def configure(level: str = "info", stream: TextIO | None = None) -> structlog.typing.FilteringBoundLogger:
    """Set up JSON logging at `level` to `stream` (stderr by default); return the root logger."""
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stderr),
        cache_logger_on_first_use=True,
    )
    return structlog.get_logger("llmos")
