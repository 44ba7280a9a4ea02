"""Hardening headers on every HTTP response, as plain ASGI middleware (no task group per request).

JSON-only apps (auth, the workers' health and metrics ports) use JSON_API_HEADERS; the gateway,
which serves a page, passes its own set with a CSP that allows 'self' (gateway/middleware.py).
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Nothing here is ever rendered: no script, style, frame or fetch may come from a response.
JSON_API_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "same-origin",
}


class HardeningHeaders:
    """Sets `headers` on every response (`by_prefix` overrides some for paths under a prefix)."""

    def __init__(
        self,
        app: ASGIApp,
        headers: Mapping[str, str] = JSON_API_HEADERS,
        by_prefix: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        self.app, self.headers, self.by_prefix = app, dict(headers), dict(by_prefix or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        chosen = dict(self.headers)
        for prefix, overrides in self.by_prefix.items():
            if scope["path"].startswith(prefix):
                chosen.update(overrides)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in chosen.items():
                    headers[name] = value
                del headers["server"]  # whichever server runs us, no banner
            await send(message)

        await self.app(scope, receive, send_with_headers)
