"""The asyncio client: many calls in flight on one socket, matched by request id.

    async with AsyncClient(name="mine") as c:
        a, b = await asyncio.gather(c.put(x), c.put(y))
        ref = await c.compute("add", a.handle, b.handle)

Every method of the blocking client exists here as a coroutine (both come
from `api.SyscallApi`). A reader task routes replies to their callers; a
heartbeat task keeps the lease alive and fails every pending call if the
kernel stops answering.
"""

import asyncio

import zmq
import zmq.asyncio

from llmos.syscalls import Errno
from llmos.syscalls import frames as fr
from llmos.syscalls import messages as m

from .api import Program, SyscallApi, one_call
from .client import HEARTBEAT_TIMEOUT_S
from .errors import LlmosError
from .wire import decode_reply


class AsyncClient(SyscallApi):
    """A process attached to a kernel, calling it from asyncio. Use `async with` (arguments: see SyscallApi)."""

    def __init__(self, address: str | None = None, **options):
        super().__init__(address, **options)
        self._pending: dict[int, tuple[asyncio.Future, type, object]] = {}
        self._tasks: list[asyncio.Task] = []

    async def open(self) -> "AsyncClient":
        """Connect and attach."""
        self._ctx = zmq.asyncio.Context()
        self._sock = self._ctx.socket(zmq.DEALER)
        self._sock.setsockopt(zmq.LINGER, 0)
        if self._keys:
            self._sock.curve_serverkey, self._sock.curve_publickey, self._sock.curve_secretkey = self._keys
        self._sock.connect(self.address)
        self._tasks.append(asyncio.create_task(self._reader()))
        try:
            attached = await self._run(one_call(self._attach))
        except BaseException:
            await self._shutdown()
            raise
        self.pid, self.token, self.lease_s = attached.pid, attached.token, attached.lease_s
        self.max_bulk_bytes = attached.max_bulk_bytes
        self._tasks.append(asyncio.create_task(self._heartbeat()))
        return self

    async def _run(self, program: Program):
        try:
            step = next(program)
            while True:
                step = program.send(await self._roundtrip(*step))
        except StopIteration as stop:
            return stop.value

    async def _roundtrip(self, call: m.Call, bulk: tuple, on_partial, timeout_s: float | None = None) -> tuple:
        rid = next(self._rids)
        future = asyncio.get_running_loop().create_future()
        self._pending[rid] = (future, type(call), on_partial)
        await self._sock.send_multipart([fr.encode_call(rid, self.token, call), *bulk], copy=not bulk)
        limit = None if isinstance(call, m.Wait) else (timeout_s or self.timeout_s)
        try:
            return await asyncio.wait_for(future, limit)
        except TimeoutError:
            raise LlmosError(Errno.ETIMEDOUT, f"no answer from the kernel at {self.address} in {limit:.0f} s") from None
        finally:
            self._pending.pop(rid, None)

    async def _reader(self) -> None:
        while True:
            frames = await self._sock.recv_multipart(copy=False)
            reply = fr.reply_decoder.decode(frames[0].buffer)
            pending = self._pending.get(reply.rid)
            if pending is None:
                continue
            future, request, on_partial = pending
            try:
                body = decode_reply(request, reply.kind, reply.body)
            except LlmosError as exc:
                if not future.done():
                    future.set_exception(exc)
                continue
            if reply.kind == fr.PARTIAL:
                if on_partial is not None:
                    on_partial(body)
            elif not future.done():
                future.set_result((body, frames[1:]))

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.lease_s / 3)
            try:
                await self._roundtrip(m.Null(), (), None, timeout_s=HEARTBEAT_TIMEOUT_S)
            except LlmosError as exc:
                reason = f"the kernel at {self.address} stopped answering: {exc.message}"
                for future, _, _ in self._pending.values():
                    if not future.done():
                        future.set_exception(LlmosError(Errno.EIO, reason))
                return

    async def exit(self, code: int = 0) -> None:
        """Leave the kernel's process table; every resource is reclaimed."""
        if self.token:
            try:
                await self._run(one_call(m.Exit(code=code)))
            finally:
                self.token = b""

    async def close(self, code: int = 0) -> None:
        """exit() if still attached, then stop the tasks and close the socket."""
        try:
            if self.token:
                await self.exit(code)
        finally:
            await self._shutdown()

    async def _shutdown(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._sock.close()
        self._ctx.term()

    async def __aenter__(self) -> "AsyncClient":
        return await self.open()

    async def __aexit__(self, exc_type, exc, tb) -> None:
        await self.close(0 if exc_type is None else 1)
