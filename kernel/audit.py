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
encoded, hashed, written and made durable (`fdatasync`) by a writer thread
every 50 ms, and at `close`: a kernel killed with SIGKILL, or a machine that
loses power, loses at most the events of the last 50 ms. The thread keeps the
disk's latency off the kernel's loop: `append` only takes a lock that the
writer holds for as long as it takes to swap the queue. When the file passes
`max_bytes` it is renamed `audit.log.N` (N counts up from 1, oldest first) and
a new one starts; its first record's `prev` is the last hash of the old file,
so the chain runs across files. Rotated files are kept; removing old ones is
the owner's call (verify then starts at the oldest left and says so). A
kernel booted again under the same name goes on with the chain.

`append` may be called from any thread (the CurveZMQ authenticator's reports peers).
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

FLUSH_S = 0.05
"""How often the writer thread writes and syncs what was appended."""


class AuditLog:
    """The kernel's writer: chains records, buffers them, writes them from its own thread, rotates by size.

    `on_error(exc)` hears of a write that failed (disk full, ...); those records are lost, and the chain
    goes on from the last record written, so `verify` shows no gap but the records are gone.
    """

    def __init__(self, folder: str, max_bytes: int = MAX_BYTES, convert=str, on_error=None):
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
        self.on_error = on_error
        self.closing = threading.Event()
        self.writer = threading.Thread(target=self._write_loop, name="audit-writer", daemon=True)
        self.writer.start()

    def append(self, event: str, **fields) -> None:
        """Add one record. Only its time is taken now: numbering, encoding and hashing wait for the writer,
        off the syscall path, so the values must not change until then (the kernel passes fresh ones)."""
        with self.lock:
            self.pending.append((time.time(), event, fields))

    def _write_loop(self) -> None:
        while not self.closing.wait(FLUSH_S):
            try:
                self.flush()
            except OSError as exc:
                if self.on_error is not None:
                    self.on_error(exc)

    def flush(self) -> None:
        """Chain, write and sync the queued records; rotate first if the file is full. Only the writer
        thread calls this, and `close` once that thread has ended."""
        with self.lock:
            pending, self.pending = self.pending, []
        if not pending:
            return
        seq, prev, lines = self.seq, self.prev, []
        for t, event, fields in pending:
            seq += 1
            record = {"seq": seq, "t": round(t, 6), "event": event, **fields, "prev": prev}
            body = json.dumps(record, sort_keys=True, separators=(",", ":"), default=self.convert)
            prev = hashlib.sha256(body.encode()).hexdigest()  # = auditlog.record_hash of the line read back
            lines.append(f'{body[:-1]},"hash":"{prev}"}}')
        text = "\n".join(lines) + "\n"
        if self.size and self.size + len(text) > self.max_bytes:
            self._rotate()
        self.file.write(text)
        self.file.flush()
        os.fdatasync(self.file.fileno())
        self.seq, self.prev = seq, prev  # the chain moves on only past records that were written
        self.size += len(text)

    def _rotate(self) -> None:
        self.file.close()
        os.rename(self.path, f"{self.path}.{last_rotated(self.folder) + 1}")
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o600)
        self.file = os.fdopen(fd, "a", encoding="ascii")
        self.size = 0

    def close(self) -> None:
        """Stop the writer, write what is left, and close the file."""
        self.closing.set()
        self.writer.join()
        self.flush()
        self.file.close()
