"""The audit trail's writer: an append-only, hash-chained JSON-lines log of security-relevant events.

The kernel appends one record per event (attach, exit, refusals, spawn,
kill, share, drivers, policy switches, checkpoints, TCP peers; the list is in
docs/security.md) to `audit.log` in its runtime directory (0600). The record
format and the chain (each record carries the previous one's hash, as in
certificate transparency's logs: one writer, read whole) are in
syscalls/auditlog.py, with `verify`. What a chain cannot show is the loss of
the newest records with nothing after them: `llmos audit verify` prints the
head (last seq and hash) so a person can note it elsewhere.

Records are queued by `append` (only their time is taken then) and numbered,
encoded, hashed and written by `flush`, which the kernel's tick calls (every 50 ms), and at
shutdown: a kernel killed with SIGKILL loses at most the events of its last
tick. When the file passes `max_bytes` it is renamed `audit.log.N` (N counts
up from 1, oldest first) and a new one starts; its first record's `prev` is
the last hash of the old file, so the chain runs across files. Rotated files
are kept; removing old ones is the owner's call (verify then starts at the
oldest left and says so). A kernel booted again under the same name goes on
with the chain.

`append` takes a lock: the CurveZMQ authenticator's thread reports peers.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time

from llmos.syscalls.auditlog import LOG_FILE, head, last_rotated

MAX_BYTES = 16 << 20
"""Default size at which the log rotates."""


class AuditLog:
    """The kernel's writer: chains records, buffers them, flushes on `flush`, rotates by size."""

    def __init__(self, folder: str, max_bytes: int = MAX_BYTES, convert=str):
        self.folder = folder
        self.path = os.path.join(folder, LOG_FILE)
        self.max_bytes = max_bytes
        self.convert = convert  # turns a field value JSON cannot hold into one it can (default: its str)
        self.lock = threading.Lock()
        self.pending: list[tuple[float, str, dict]] = []
        self.seq, self.prev = head(folder)  # a kernel booted again under the same name goes on with the chain
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        os.fchmod(fd, 0o600)
        self.file = os.fdopen(fd, "a", encoding="ascii")
        self.size = os.fstat(fd).st_size
        if self.size and os.pread(fd, 1, self.size - 1) != b"\n":  # a torn last line: start on a new one
            self.file.write("\n")
            self.size += 1

    def append(self, event: str, **fields) -> None:
        """Add one record. Only its time is taken now: numbering, encoding and hashing wait for `flush`, off
        the syscall path, so the values must not change until then (the kernel passes fresh ones)."""
        with self.lock:
            self.pending.append((time.time(), event, fields))

    def flush(self) -> None:
        """Chain and write the buffered records (the kernel's tick calls this); rotate first if the file is full."""
        with self.lock:
            if not self.pending:
                return
            lines = []
            for t, event, fields in self.pending:
                self.seq += 1
                record = {"seq": self.seq, "t": round(t, 6), "event": event, **fields, "prev": self.prev}
                body = json.dumps(record, sort_keys=True, separators=(",", ":"), default=self.convert)
                self.prev = hashlib.sha256(body.encode()).hexdigest()  # = auditlog.record_hash of the line read back
                lines.append(f'{body[:-1]},"hash":"{self.prev}"}}')
            self.pending.clear()
            text = "\n".join(lines) + "\n"
            if self.size and self.size + len(text) > self.max_bytes:
                self._rotate()
            self.file.write(text)
            self.file.flush()
            self.size += len(text)

    def _rotate(self) -> None:
        self.file.close()
        os.rename(self.path, f"{self.path}.{last_rotated(self.folder) + 1}")
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o600)
        self.file = os.fdopen(fd, "a", encoding="ascii")
        self.size = 0

    def close(self) -> None:
        """Flush and close the file."""
        self.flush()
        self.file.close()
