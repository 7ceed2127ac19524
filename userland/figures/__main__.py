"""`python -m llmos.userland.figures DIR`: draw every course figure into DIR (the docs' go in docs/images).

The layout figure needs a kernel: one is booted in a private folder, with the
cpu and mocktpu drivers and two attached clients, and stopped after.
"""

from __future__ import annotations

import pathlib
import sys
import tempfile

from llmos.userland.figures import blocktables, layout, tick


def main(argv: list[str]) -> int:
    """Draw the figures into the folder argv[0] (default docs/images)."""
    from llmos.kernel import boot
    from llmos.kernel.config import KernelConfig
    from llmos.userland import Client

    out = pathlib.Path(argv[0] if argv else "docs/images")
    out.mkdir(parents=True, exist_ok=True)
    blocktables.draw(out / "memory-block-tables.png")
    tick.draw(out / "scheduler-ticks.png")
    with tempfile.TemporaryDirectory(prefix="llf-") as runtime:
        kp = boot.start(KernelConfig(name="figures", runtime_dir=runtime, drivers=["cpu", "mocktpu"],
                                     log_level="warning"))
        try:
            with Client(kp.address, name="chat"), Client(kp.address, name="train") as c:
                layout.draw(c, out / "process-layout.png")
        finally:
            kp.stop()
    print(f"figures written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
