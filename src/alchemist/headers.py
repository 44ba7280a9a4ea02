"""Hardening headers for the JSON-only apps (auth, the workers' health and metrics ports).

The gateway has its own (gateway/middleware.py: it serves a page, so its CSP allows 'self').
"""

from __future__ import annotations

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


class JsonApiHeaders:
    """Adds JSON_API_HEADERS to every HTTP response (plain ASGI: no task group per request)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in JSON_API_HEADERS.items():
                    headers[name] = value
                del headers["server"]  # whichever server runs us, no banner
            await send(message)

        await self.app(scope, receive, send_with_headers)
