"""Helpers the `llmos` subcommands share: the --kernel option, connecting, tables, sizes."""

import argparse
import sys

from ..errors import LlmosError


def add_kernel_option(parser: argparse.ArgumentParser) -> None:
    """--kernel NAME: which local kernel to talk to."""
    parser.add_argument(
        "--kernel", metavar="NAME", default=None, help="name of the local kernel (default: $LLMOS_NAME or 'default')"
    )


def connect(args: argparse.Namespace, name: str, admin: bool = False):
    """Attach to the kernel the command names, or exit with a clear message."""
    from ..client import Client

    try:
        return Client(name=name, kernel=args.kernel, admin=admin, timeout_s=30)
    except LlmosError as exc:
        sys.exit(f"llmos: {exc.message}")


def table(rows: list[list], header: list[str]) -> str:
    """Left-aligned columns."""
    cells = [header] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells)


def size(n: int) -> str:
    """Bytes for people: 1.5 GiB."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)
