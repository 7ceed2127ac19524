"""`llmos web`: watch and steer a running kernel from a browser.

Serves a live page (processes, devices, each KV pool's blocks, the
scheduler's queues, a timeline of device work) on 127.0.0.1 unless --host
says otherwise. Every request needs the random token in the URL it prints
(as Jupyter does); --no-token is allowed only on a loopback address. The
policy switch is there only when the admin key of the kernel is readable by
you (you started it); --read-only hides it anyway. Like `llmos top`, it
sees the kernel only through syscalls.
"""

from __future__ import annotations

import argparse
import socket
import sys
import threading

from ..errors import LlmosError
from .common import add_kernel_option

DEFAULT_PORT = 8470


def add_parser(sub) -> None:
    """Add `llmos web`."""
    p = sub.add_parser("web", help="a live console in the browser (prints its URL)", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    add_kernel_option(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: any free one)")
    p.add_argument("--interval", type=float, default=0.5, metavar="S", help="seconds between refreshes (default 0.5)")
    p.add_argument("--no-token", action="store_true", help="let requests in without the token (loopback addresses only)")
    p.add_argument("--read-only", action="store_true", help="no policy switch, even with the admin key")
    p.set_defaults(func=run)


class WebServer:
    """The console's app under uvicorn on a socket bound at once (so the URL is known before it serves)."""

    def __init__(self, address: str, *, host: str = "127.0.0.1", port: int = DEFAULT_PORT, kernel: str | None = None,
                 token: bool = True, admin: bool | None = None, interval: float = 0.5):  # fmt: skip
        import uvicorn

        from ..web.app import create_app
        from ..web.auth import is_loopback, new_token

        if not token and not is_loopback(host):
            raise ValueError(f"refusing to serve {host} without a token: anyone who reaches it could watch and steer the kernel")
        if interval <= 0:
            raise ValueError(f"--interval must be above 0, not {interval}")
        self.token = new_token() if token else None
        self.admin = _admin_readable(kernel) if admin is None else admin
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.sock.bind((host, port))
            self.sock.listen(128)  # from now on a browser's connection waits in the backlog until uvicorn serves
        except OSError as exc:
            self.sock.close()
            raise ValueError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
        self.port = self.sock.getsockname()[1]
        self.host = host
        app = create_app(address, token=self.token, admin=self.admin, kernel=kernel, interval=interval)
        config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=1, lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The page's URL, token included."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/" + (f"?token={self.token}" if self.token else "")

    def serve(self) -> None:
        """Serve in this thread until stopped (Ctrl-C, or `stop` from another thread)."""
        self.server.run(sockets=[self.sock])

    def start(self) -> "WebServer":
        """Serve in a background thread; returns once it accepts requests."""
        self.thread = threading.Thread(target=self.serve, name="llmos-web", daemon=True)
        self.thread.start()
        while not self.server.started and self.thread.is_alive():
            self.thread.join(0.05)
        if not self.server.started:
            raise RuntimeError("llmos web did not start (could it attach to the kernel?)")
        return self

    def stop(self) -> None:
        """Stop serving (and detach from the kernel)."""
        self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(10)
        self.sock.close()


def _admin_readable(kernel: str | None) -> bool:
    """Whether this user can read the local kernel's admin key (the policy switch needs it)."""
    from ..wire import admin_key

    try:
        admin_key(kernel)
        return True
    except LlmosError:
        return False


def run(args: argparse.Namespace) -> int:
    """Serve the console until Ctrl-C."""
    from ..wire import kernel_address

    try:
        address = kernel_address(args.kernel)
        web = WebServer(address, host=args.host, port=args.port, kernel=args.kernel, token=not args.no_token,
                        admin=False if args.read_only else None, interval=args.interval)  # fmt: skip
    except (LlmosError, ValueError) as exc:
        sys.exit(f"llmos web: {getattr(exc, 'message', exc)}")
    print(f"llmos web: console of kernel at {address}", flush=True)
    print(f"llmos web: policy switch {'on (you hold the admin key)' if web.admin else 'off (read-only)'}", flush=True)
    print(f"llmos web: open {web.url}", flush=True)
    web.serve()
    return 0
