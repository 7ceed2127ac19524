"""The Starlette app of `llmos web`: the page, its state as server-sent events, and a few JSON endpoints.

    GET  /                 the page (static files from this package; `?token=` sets the cookie)
    GET  /static/...       its script and style sheet
    GET  /api/state        the latest state (JSON)
    GET  /api/events       the state, pushed after every refresh (server-sent events)
    GET  /api/proc/{pid}   one process: its handles, models, KV blocks, queued work
    POST /api/sched        {"device", "policy"}: sched_set (only with the admin key; JSON only)
    GET  /api/trace.json   the last minute as a Perfetto (Chrome trace-event) file

One background task refreshes the console every `interval` seconds, in a
worker thread (the client blocks), and wakes every open event stream; each
stream sends the newest state it has not sent. Every request passes the
token gate (auth.py) first.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from urllib.parse import urlsplit

import anyio
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from llmos.syscalls import Errno

from ..errors import LlmosError
from .auth import COOKIE, TokenGate
from .console import Console

STATIC = Path(__file__).parent / "static"
KEEPALIVE_S = 15.0
"""An event stream with nothing new sends a comment this often, so proxies and browsers keep it open."""


class Hub:
    """The newest state (encoded once) and its number; streams wait on it for a newer one."""

    def __init__(self) -> None:
        self.version = 0
        self.encoded = ""
        self.changed = asyncio.Condition()

    async def publish(self, state: dict) -> None:
        """Make `state` the newest and wake the waiting streams."""
        async with self.changed:
            self.encoded = json.dumps(state, separators=(",", ":"))
            self.version += 1
            self.changed.notify_all()

    async def newer(self, than: int, timeout: float) -> tuple[int, str] | None:
        """The newest (version, state) once its version is above `than`; None if none came in `timeout` s."""
        async with self.changed:
            try:
                await asyncio.wait_for(self.changed.wait_for(lambda: self.version > than), timeout)
            except TimeoutError:
                return None
            return self.version, self.encoded


def create_app(address: str, *, token: str | None, admin: bool = False, kernel: str | None = None,
               interval: float = 0.5, keys_dir: str | None = None) -> Starlette:  # fmt: skip
    """The console's ASGI app for the kernel at `address`, every request gated by `token` (None: no gate)."""
    hub = Hub()
    box: dict[str, Console] = {}

    async def poll(console: Console) -> None:
        while True:
            try:
                state = await anyio.to_thread.run_sync(console.refresh)
            except LlmosError as exc:
                state = {"error": exc.message, "errno": getattr(exc.errno, "name", str(exc.errno))}
            await hub.publish(state)
            await asyncio.sleep(interval)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        console = await anyio.to_thread.run_sync(
            lambda: Console(address, kernel=kernel, admin=admin, keys_dir=keys_dir)
        )
        box["console"] = console
        task = asyncio.ensure_future(poll(console))
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await anyio.to_thread.run_sync(console.close)

    async def index(request: Request) -> Response:
        response = FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})
        if "token" in request.query_params:  # the gate let it in: keep it for the page's own requests
            response.set_cookie(COOKIE, request.query_params["token"], httponly=True, samesite="strict")
        return response

    async def state(request: Request) -> Response:
        got = await hub.newer(0, timeout=10.0)
        if got is None:
            return JSONResponse({"error": "the console has not read the kernel yet"}, status_code=503)
        return Response(got[1], media_type="application/json")

    async def events(request: Request) -> Response:
        async def stream():
            seen = 0
            while True:
                got = await hub.newer(seen, timeout=KEEPALIVE_S)
                if got is None:
                    yield ": keep-alive\n\n"
                    continue
                seen, encoded = got
                yield f"event: state\nid: {seen}\ndata: {encoded}\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})  # fmt: skip

    async def process(request: Request) -> Response:
        pid = request.path_params["pid"]
        try:
            detail = await anyio.to_thread.run_sync(box["console"].process, pid)
        except LlmosError as exc:
            return _error(exc)
        return JSONResponse(detail)

    async def sched(request: Request) -> Response:
        if not _same_origin(request):
            return JSONResponse({"error": "cross-origin request refused"}, status_code=403)
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return JSONResponse({"error": "send JSON: {\"device\": ..., \"policy\": ...}"}, status_code=415)
        if not admin:
            return JSONResponse({"error": "read-only console: start `llmos web` as the kernel's owner "
                                          "(who can read its admin key) to switch policies"}, status_code=403)  # fmt: skip
        try:
            body = await request.json()
            device, policy = body["device"], body["policy"]
            if not isinstance(device, str) or not isinstance(policy, str):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"error": "send JSON: {\"device\": NAME, \"policy\": NAME}", "errno": "EINVAL"},
                                status_code=400)  # fmt: skip
        try:
            info = await anyio.to_thread.run_sync(box["console"].set_policy, device, policy)
        except LlmosError as exc:
            return _error(exc)
        return JSONResponse(info)

    async def trace(request: Request) -> Response:
        data = await anyio.to_thread.run_sync(box["console"].perfetto)
        return JSONResponse(data, headers={"Content-Disposition": 'attachment; filename="llmos-trace.json"'})

    routes = [
        Route("/", index),
        Route("/api/state", state),
        Route("/api/events", events),
        Route("/api/proc/{pid:int}", process),
        Route("/api/sched", sched, methods=["POST"]),
        Route("/api/trace.json", trace),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    return Starlette(routes=routes, lifespan=lifespan, middleware=[Middleware(TokenGate, token=token)])


def _error(exc: LlmosError) -> JSONResponse:
    """A failed syscall as JSON, with the HTTP status nearest its errno."""
    status = {Errno.ESRCH: 404, Errno.ENODEV: 404, Errno.EINVAL: 400, Errno.EPERM: 403}.get(exc.errno, 502)
    return JSONResponse({"error": exc.message, "errno": getattr(exc.errno, "name", str(exc.errno))}, status_code=status)


def _same_origin(request: Request) -> bool:
    """Whether a browser request came from this console's own page (no Origin header: not from a browser page)."""
    origin = request.headers.get("origin")
    return origin is None or urlsplit(origin).netloc == request.headers.get("host")
