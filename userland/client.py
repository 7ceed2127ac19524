"""The blocking client: one DEALER socket, one call at a time.

    with Client(name="mine") as c:        # attaches; exit() and close on leaving
        ref = c.put(torch.ones(4, 4))
        out = c.read(c.compute("matmul", ref.handle, ref.handle).handle)

A heartbeat thread with its own socket keeps the process's lease alive while
the program computes, and notices when the kernel stops answering.
"""

import itertools
import threading
import time

import zmq

from llmos.syscalls import Errno
from llmos.syscalls import frames as fr
from llmos.syscalls import messages as m

from .api import Program, SyscallApi, one_call
from .errors import LlmosError
from .wire import decode_reply

HEARTBEAT_TIMEOUT_S = 5.0
POLL_MS = 1000  # how often a waiting call looks at the heartbeat's verdict and its deadline


def _socket(ctx: zmq.Context, address: str, keys) -> zmq.Socket:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, POLL_MS)
    if keys:
        sock.curve_serverkey, sock.curve_publickey, sock.curve_secretkey = keys
    sock.connect(address)
    return sock


class Client(SyscallApi):
    """A process attached to a kernel, calling it synchronously (arguments: see SyscallApi)."""

    def __init__(self, address: str | None = None, **options):
        super().__init__(address, **options)
        self._ctx = zmq.Context()
        self._sock = _socket(self._ctx, self.address, self._keys)
        self._lost = ""
        self._stop = threading.Event()
        try:
            attached = self._run(one_call(self._attach))
        except BaseException:
            self._close_sockets()
            raise
        self.pid = attached.pid
        self.token = attached.token
        self.lease_s = attached.lease_s
        self.max_bulk_bytes = attached.max_bulk_bytes
        self._beat = threading.Thread(target=self._heartbeat, name="llmos-heartbeat", daemon=True)
        self._beat.start()

    # ---- the transport ------------------------------------------------------------------

    def _run(self, program: Program):
        try:
            step = next(program)
            while True:
                step = program.send(self._roundtrip(*step))
        except StopIteration as stop:
            return stop.value

    def _roundtrip(self, call: m.Call, bulk: tuple, on_partial) -> tuple:
        rid = next(self._rids)
        head = fr.encode_call(rid, self.token, call)
        if bulk:
            self._sock.send_multipart([head, *bulk], copy=False)
        else:
            self._sock.send(head)
        # a wait may last as long as the child; the kernel times it out, the heartbeat sees a dead kernel
        deadline = None if isinstance(call, m.Wait) else time.monotonic() + self.timeout_s
        while True:
            try:
                frames = fr.recv_frames(self._sock)
            except zmq.Again:
                if self._lost:
                    raise LlmosError(Errno.EIO, self._lost) from None
                if deadline is not None and time.monotonic() > deadline:
                    raise LlmosError(
                        Errno.ETIMEDOUT, f"no answer from the kernel at {self.address} in {self.timeout_s:.0f} s"
                    ) from None
                continue
            reply = fr.reply_decoder.decode(frames[0])
            if reply.rid != rid:
                continue  # the answer to a call that timed out earlier
            body = decode_reply(type(call), reply.kind, reply.body)
            if reply.kind == fr.PARTIAL:
                if on_partial is not None:
                    on_partial(body)
                continue
            return body, frames[1:]

    def _heartbeat(self) -> None:
        """Call null every third of the lease, on a socket of its own."""
        sock = _socket(self._ctx, self.address, self._keys)
        rids = itertools.count(1)
        try:
            while not self._stop.wait(self.lease_s / 3):
                sock.send(fr.encode_call(next(rids), self.token, m.Null()))
                if not sock.poll(int(HEARTBEAT_TIMEOUT_S * 1000)):
                    self._lost = f"the kernel at {self.address} stopped answering heartbeats"
                    return
                reply = fr.reply_decoder.decode(sock.recv())
                if reply.kind == fr.ERROR:
                    self._lost = f"the kernel dropped this process: {fr.error_decoder.decode(reply.body).message}"
                    return
        finally:
            sock.close()

    # ---- life cycle ------------------------------------------------------------------------

    def exit(self, code: int = 0) -> None:
        """Leave the kernel's process table; every resource is reclaimed."""
        if self.token:
            try:
                self._run(one_call(m.Exit(code=code)))
            finally:
                self.token = b""

    def close(self, code: int = 0) -> None:
        """exit() if still attached, then close the sockets."""
        try:
            if self.token and not self._lost:
                self.exit(code)
        finally:
            self._close_sockets()

    def _close_sockets(self) -> None:
        self._stop.set()
        if getattr(self, "_beat", None) is not None:
            self._beat.join()
        self._sock.close()
        self._ctx.term()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(0 if exc_type is None else 1)

