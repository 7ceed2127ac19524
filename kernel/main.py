"""Run a kernel in this process until it is told to stop."""

import os
import sys

from . import log
from .config import KernelConfig
from .priority import NICE_ENV, raise_priority
from .kernel import Kernel
from llmos.syscalls.runtime import RuntimeDirError


def run_kernel(config: KernelConfig) -> int:
    """Boot, serve until SIGINT/SIGTERM, shut down cleanly; return an exit status."""
    stream = open(config.log_file, "a", buffering=1) if config.log_file else None
    logger = log.configure(config.log_level, stream)
    before, now, why = raise_priority(config.nice)  # before any thread starts: they inherit it
    os.environ[NICE_ENV] = str(before)  # what the programs it spawns go back to
    if why:
        logger.info("kernel.priority", nice=now, asked=config.nice, unchanged=why)
    kernel = Kernel(config)
    try:
        kernel.open()
    except (RuntimeDirError, ValueError, OSError) as exc:
        print(f"llmos: cannot boot: {exc}", file=sys.stderr)
        kernel.close()
        return 1
    try:
        kernel.serve()
    finally:
        kernel.close()
        if stream is not None:
            stream.close()
    return 0
