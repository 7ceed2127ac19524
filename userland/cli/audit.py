"""`llmos audit`: check and read a kernel's audit trail (RUNTIME/NAME/audit.log).

It reads the log's files directly (the kernel need not run): `verify` walks
the hash chain and names the first line that breaks it; `show` prints the
records, filtered by process, time or refusals. The format is in
syscalls/auditlog.py; what is recorded, in docs/security.md.
"""

import argparse
import json
import sys
import time
from datetime import datetime

from llmos.syscalls import auditlog, runtime

from ..wire import kernel_name
from .common import add_kernel_option

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def add_parser(sub) -> None:
    """Add `llmos audit verify` and `llmos audit show`."""
    p = sub.add_parser(
        "audit",
        help="check (verify) or read (show) a kernel's audit trail",
        description="The kernel appends every security-relevant event (attaches, exits, refusals, spawns, kills, "
        "shares, drivers, policy switches, checkpoints, TCP peers) to a hash-chained JSON-lines log in its "
        "runtime directory. `verify` checks the chain; `show` prints the records.",
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    verify = actions.add_parser("verify", help="check the hash chain; name the first line that breaks it")
    show = actions.add_parser("show", help="print the records (filters combine)")
    for q in (verify, show):
        add_kernel_option(q)
        q.add_argument("--dir", help="the folder holding audit.log (default: the kernel's runtime directory)")
    show.add_argument("--pid", type=int, help="only records about this process: its own, and those naming it (a child spawned, "
                           "a kill's target, a share's receiver, a refused call's pid argument)")
    show.add_argument("--since", type=since, metavar="T",
                      help="only records from T on: seconds since the epoch, an ISO time (2026-12-05T13:00), "
                           "or a time ago (90s, 10m, 2h, 1d)")  # fmt: skip
    show.add_argument("--denied", action="store_true", help="only refused calls (EPERM, EBADF)")
    show.add_argument("--json", action="store_true", help="print the records as JSON lines")
    verify.set_defaults(func=run_verify)
    show.set_defaults(func=run_show)


def since(text: str) -> float:
    """Parse --since: epoch seconds, an ISO time, or a duration ago (`10m`)."""
    try:
        return float(text)
    except ValueError:
        pass
    if text[-1:] in UNITS:
        try:
            return time.time() - float(text[:-1]) * UNITS[text[-1]]
        except ValueError:
            pass
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a time: give epoch seconds, an ISO time or 10m/2h/1d") from None


def folder_of(args: argparse.Namespace) -> str:
    """The folder with the log, or exit with a clear message if it holds none."""
    folder = args.dir or runtime.kernel_dir(kernel_name(args.kernel))
    if not auditlog.files(folder):
        sys.exit(f"llmos: no audit log in {folder} (boot the kernel without --no-audit, or give --dir)")
    return folder


def run_verify(args: argparse.Namespace) -> int:
    """Check the chain: 0 if whole, 1 naming the first bad line."""
    folder = folder_of(args)
    v = auditlog.verify(folder)
    if not v.ok:
        print(f"audit log BROKEN at {v.where}: {v.problem}")
        print(f"  the {v.records} records before it verify; the last good one is seq {v.head_seq}")
        return 1
    files = len(auditlog.files(folder))
    print(f"audit log OK: {v.records} records in {files} file(s), chain unbroken")
    print(f"  head: seq {v.head_seq} hash {v.head_hash}")
    print("  (note the head elsewhere: records cut off the end leave no trace in the chain itself)")
    if not v.anchored:
        print("  the oldest record left is not the chain's first: older rotated files were removed")
    return 0


def matches(rec: dict, args: argparse.Namespace) -> bool:
    """Whether a record passes the --pid, --since and --denied filters."""
    if args.denied and rec.get("event") != "denied":
        return False
    if args.since is not None and float(rec.get("t", 0)) < args.since:
        return False
    call = rec.get("call") if isinstance(rec.get("call"), dict) else {}
    named = (rec.get("pid"), rec.get("child"), rec.get("target"), rec.get("to"), call.get("pid"))
    if args.pid is not None and args.pid not in named:
        return False
    return True


def describe(rec: dict) -> str:
    """One record for people: time, seq, event, pid, then the other fields."""
    when = datetime.fromtimestamp(float(rec.get("t", 0))).isoformat(sep=" ", timespec="milliseconds")
    skip = {"seq", "t", "event", "pid", "prev", "hash"}
    rest = " ".join(f"{k}={json.dumps(v)}" for k, v in rec.items() if k not in skip)
    pid = rec.get("pid")
    return f"{when}  #{rec.get('seq')}  {rec.get('event', '?'):16} pid={'-' if pid is None else pid}  {rest}"


def run_show(args: argparse.Namespace) -> int:
    """Print the records that pass the filters (lines that are not records are reported, not skipped)."""
    folder = folder_of(args)
    for line in auditlog.lines(folder):
        if line.record is None:
            print(f"{line.where}: not a record: {line.text[:120]!r}", file=sys.stderr)
        elif matches(line.record, args):
            print(json.dumps(line.record) if args.json else describe(line.record))
    return 0
