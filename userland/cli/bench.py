"""`llmos bench NAME`: run one benchmark module of `llmos.benchmarks`.

A benchmark module exposes `add_arguments(parser)`, `run(args) -> dict` (the
measured figures, raw baseline and llmos measured in the same run) and
`report(result) -> str` (a table for people). `--json` prints the dict instead.
"""

import argparse
import importlib
import json

BENCHMARKS = ("syscall", "memory", "sched", "restart", "generate", "load", "hf", "prefix", "remote", "dp", "compress", "web")


def add_parser(sub) -> None:
    """Add `llmos bench` and one sub-parser per benchmark."""
    parser = sub.add_parser(
        "bench",
        help="measure llmos against a raw baseline in the same run",
        description="Measure llmos against a raw baseline in the same run and print the ratio.",
    )
    names = parser.add_subparsers(dest="bench", metavar="NAME", required=True)
    for name in BENCHMARKS:
        module = importlib.import_module(f"llmos.benchmarks.{name}")
        p = names.add_parser(name, help=module.__doc__.strip().splitlines()[0], description=module.__doc__)
        p.add_argument("--json", action="store_true", help="print the figures as one JSON object")
        module.add_arguments(p)
        p.set_defaults(func=_runner(module))


def _runner(module):
    def run(args: argparse.Namespace) -> int:
        result = module.run(args)
        print(json.dumps(result) if args.json else module.report(result))
        return 0

    return run
