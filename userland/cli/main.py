"""The `llmos` command: one subcommand per module of this package.

Each command module exposes `add_parser(subparsers)`, which adds its parser
and sets `func` (called with the parsed arguments, returning an exit code).
"""

import argparse
import importlib
import sys

COMMANDS = ("boot", "run", "ps", "kill", "devices", "driver", "keygen", "host", "mem", "sched", "sim", "trace", "top", "web", "bench", "audit", "demo")


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every subcommand of COMMANDS."""
    parser = argparse.ArgumentParser(
        prog="llmos",
        description="llmos: a microkernel-style operating system for LLM work. "
        "Boot a kernel, run programs on it, inspect it.",
        epilog="Start with `llmos demo`, or `llmos boot` in one terminal and "
        "`llmos run matmul` in another. `llmos COMMAND --help` explains each command.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"llmos.userland.cli.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `llmos` console script."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
