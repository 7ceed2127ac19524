"""The token every request to `llmos web` must carry, and which addresses may go without one.

As in Jupyter, a random token is made at start and printed in the URL. The
browser sends it once in the query (`/?token=...`); the page's answer sets
it as a strict same-site, HTTP-only cookie, so the page's own requests
(scripts, the event stream, the trace download) carry it without the token
showing up in them. Scripts may send it in the `X-Llmos-Token` header
instead. A request without it, or with a wrong one, gets 403.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from http.cookies import SimpleCookie
from urllib.parse import parse_qs

COOKIE = "llmos_token"
HEADER = b"x-llmos-token"


def new_token() -> str:
    """A fresh random token (32 bytes, URL-safe)."""
    return secrets.token_urlsafe(32)


def is_loopback(host: str) -> bool:
    """Whether `host` only accepts connections from this machine (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def presented(scope: dict) -> str:
    """The token a request carries: query `token`, header `X-Llmos-Token` or the cookie, in that order."""
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    if query.get("token"):
        return query["token"][0]
    headers = dict(scope.get("headers", []))
    if HEADER in headers:
        return headers[HEADER].decode("latin-1")
    if b"cookie" in headers:
        cookie = SimpleCookie()
        try:
            cookie.load(headers[b"cookie"].decode("latin-1"))
        except Exception:  # a malformed cookie header is no token
            return ""
        if COOKIE in cookie:
            return cookie[COOKIE].value
    return ""


class TokenGate:
    """ASGI middleware: an HTTP request whose token is not `token` gets 403 (a WebSocket is closed);
    `token` None lets every request in."""

    def __init__(self, app, token: str | None):
        self.app = app
        self.token = token

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] in ("http", "websocket") and self.token is not None:
            if not hmac.compare_digest(presented(scope).encode(), self.token.encode()):
                if scope["type"] == "websocket":  # the app has none, but a socket must not slip past either
                    await send({"type": "websocket.close", "code": 1008})
                    return
                body = b"llmos web: missing or wrong token; open the URL `llmos web` printed (it ends in ?token=...)\n"
                await send({"type": "http.response.start", "status": 403,
                            "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                                        (b"content-length", str(len(body)).encode())]})  # fmt: skip
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)
