"""The audit trail's format: records, their hash chain, the log's files, and `verify`.

The kernel writes the log (kernel/audit.py); `llmos audit` reads it here,
from the file, so it works when the kernel is gone. A record is one JSON
object per line with
- `seq`: its number, from 1, never reset by rotation;
- `t`: wall-clock time (seconds since the epoch); `event`: what happened;
- the event's own fields (`pid`, `syscall`, `errno`, ...);
- `prev`: the `hash` of the record before it (64 zeros for the first);
- `hash`: SHA-256 (hex) of the record's canonical JSON without `hash`
  (sorted keys, no spaces), so it covers `prev` too.
Editing a record breaks its own hash; removing or reordering records breaks
the next one's `prev`. The files are audit.log.1, audit.log.2, ... (rotated,
oldest first) and audit.log, in the kernel's runtime directory.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass

LOG_FILE = "audit.log"
GENESIS = "0" * 64
"""The `prev` of the very first record."""


def canonical(record: dict) -> bytes:
    """The bytes a record's hash covers: its JSON without `hash`, keys sorted, no spaces."""
    body = {k: v for k, v in record.items() if k != "hash"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), default=str).encode()


def record_hash(record: dict) -> str:
    """SHA-256 (hex) of a record's canonical JSON."""
    return hashlib.sha256(canonical(record)).hexdigest()


def files(folder: str) -> list[str]:
    """The log's files, oldest first: audit.log.1, audit.log.2, ..., audit.log."""
    rotated = sorted(glob.glob(os.path.join(folder, LOG_FILE + ".*")), key=_rotation_number)
    rotated = [p for p in rotated if _rotation_number(p) > 0]
    current = os.path.join(folder, LOG_FILE)
    return rotated + ([current] if os.path.exists(current) else [])


def _rotation_number(path: str) -> int:
    match = re.search(r"\.log\.(\d+)$", path)
    return int(match.group(1)) if match else 0


def last_rotated(folder: str) -> int:
    """The highest N of the rotated files audit.log.N (0: none)."""
    return max((_rotation_number(p) for p in files(folder)), default=0)


@dataclass
class Line:
    """One line of the log as read back: where it is, its text, and its record (None if it is not JSON)."""

    path: str
    number: int  # 1-based, within its file
    text: str
    record: dict | None

    @property
    def where(self) -> str:
        """`audit.log line 12`."""
        return f"{os.path.basename(self.path)} line {self.number}"


def lines(folder: str) -> Iterator[Line]:
    """Every line of every file of the log, oldest first."""
    for path in files(folder):
        with open(path, encoding="utf-8", errors="replace") as f:
            for number, text in enumerate(f, 1):
                text = text.rstrip("\n")
                try:
                    record = json.loads(text)
                except ValueError:
                    record = None
                yield Line(path, number, text, record if isinstance(record, dict) else None)


@dataclass
class Verdict:
    """What `verify` found: ok, records checked, the head, and the first problem (its line and why)."""

    ok: bool
    records: int
    head_seq: int = 0
    head_hash: str = GENESIS
    where: str = ""
    problem: str = ""
    anchored: bool = True  # the first record present is the chain's first (prev = GENESIS)


def verify(folder: str) -> Verdict:
    """Check the chain over every file: each record's hash, its `prev` and its `seq`; stop at the first break."""
    prev, seq, count, anchored = None, None, 0, True
    for line in lines(folder):
        rec = line.record
        if rec is None:
            return Verdict(False, count, seq or 0, prev or GENESIS, line.where, "not a JSON object")
        if not isinstance(rec.get("hash"), str) or record_hash(rec) != rec["hash"]:
            return Verdict(False, count, seq or 0, prev or GENESIS, line.where,
                           "its hash does not match its content: the record was edited")  # fmt: skip
        if prev is None:
            anchored = rec.get("prev") == GENESIS
        elif rec.get("prev") != prev:
            return Verdict(False, count, seq, prev, line.where,
                           "its prev is not the hash of the record before it: a record was removed, reordered "
                           "or rewritten just before this one")  # fmt: skip
        if not isinstance(rec.get("seq"), int):
            return Verdict(False, count, seq or 0, prev or GENESIS, line.where, "its seq is not a number")
        if seq is not None and rec["seq"] != seq + 1:
            return Verdict(False, count, seq, prev, line.where, f"seq {rec.get('seq')} does not follow {seq}")
        prev, seq, count = rec["hash"], rec.get("seq"), count + 1
    return Verdict(True, count, seq or 0, prev or GENESIS, anchored=anchored)


def head(folder: str) -> tuple[int, str]:
    """The last record's seq and hash (0 and GENESIS for an empty log); a torn last line is skipped."""
    last = None
    for line in lines(folder):
        if line.record is not None and "hash" in line.record:
            last = line.record
    return (int(last.get("seq", 0)), str(last["hash"])) if last else (0, GENESIS)
