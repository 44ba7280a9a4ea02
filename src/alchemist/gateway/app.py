"""The gateway: the only public entry point. `create_app` only assembles; routes live in routes/."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from importlib.resources import files
from pathlib import Path

import httpx
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles

from alchemist import __version__
from alchemist.config import Settings
from alchemist.gateway import errors
from alchemist.gateway.deps import GatewayState
from alchemist.gateway.metrics import JobCollector
from alchemist.gateway.middleware import BY_PREFIX, PAGE_HEADERS, RequestMetrics
from alchemist.gateway.routes import auth, downloads, jobs, ops, pages, uploads, users
from alchemist.gateway.routes.pages import WEB
from alchemist.gateway.security import Authenticator
from alchemist.headers import HardeningHeaders
from alchemist.links import DownloadLinks
from alchemist.outbox import OutboxRelay
from alchemist.proxies import TrustedProxyHeaders
from alchemist.revocation import RevocationCheck
from alchemist.sweeper import Sweeper
from alchemist.telemetry import Telemetry
from alchemist.tokens import TokenSigner
from alchemist.wiring import Backends, build_backends

DESCRIPTION = """Turn videos into MP3s. Sign in with `POST /login` (HTTP Basic → JWT) and use
`Authorization: Bearer <JWT>`, or sign in on the web page (a session cookie; state-changing
requests then need the `X-CSRF-Token` from `GET /api/v1/session`)."""


def operation_id(route: APIRoute) -> str:
    """Readable operation ids: the endpoint's function name (unique across routers)."""
    return route.name


def create_app(
    settings: Settings,
    backends: Backends | None = None,
    auth_transport: httpx.AsyncBaseTransport | None = None,
    relay: OutboxRelay | None = None,
    telemetry: Telemetry | None = None,
) -> FastAPI:
    """The gateway app; backends and the outbox relay are built in the lifespan unless handed in."""
    signer = TokenSigner(
        secret=settings.jwt_secret(),
        issuer=settings.JWT_ISSUER,
        ttl=timedelta(seconds=settings.JWT_TTL_SECONDS),
    )
    links = DownloadLinks(signer.secret, settings.DOWNLOAD_LINK_TTL_SECONDS)
    settings.webhook_key()  # a malformed WEBHOOK_SECRET stops the start, not an upload (ConfigError)
    metrics = telemetry or Telemetry()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        built = backends or await build_backends(settings, name="gateway")
        collector = JobCollector(built.sessions)
        metrics.registry.register(collector)
        relaying = relay or OutboxRelay(built.sessions, built.broker, telemetry=metrics)
        sweeper = Sweeper(settings, built, relaying, telemetry=metrics)
        async with httpx.AsyncClient(
            base_url=settings.auth_url, transport=auth_transport, timeout=30
        ) as client:
            revocations = RevocationCheck(built.sessions, settings.REVOCATION_CACHE_SECONDS)
            authenticator = Authenticator(signer, revocations)
            state = GatewayState(settings, authenticator, links, built, client, metrics, relaying)
            app.state.gateway = state
            relaying.start()
            sweeper.start()
            try:
                yield
            finally:
                await sweeper.stop()
                if relay is None:
                    await relaying.stop()
                metrics.registry.unregister(collector)
                if backends is None:
                    await built.close()

    app = FastAPI(
        title="Audio Alchemist",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # served by routes/pages.py with assets from the package
        redoc_url=None,
        openapi_url="/openapi.json" if settings.API_DOCS else None,
        generate_unique_id_function=operation_id,
    )
    app.add_middleware(RequestMetrics, telemetry=metrics)
    app.add_middleware(HardeningHeaders, headers=PAGE_HEADERS, by_prefix=BY_PREFIX)
    # Outermost: the client address and scheme an ingress in TRUSTED_PROXIES forwarded.
    app.add_middleware(TrustedProxyHeaders, networks=settings.trusted_proxies)
    errors.install(app)
    for module in (auth, uploads, downloads, jobs, users, pages, ops):
        app.include_router(module.router)
    if settings.METRICS_PORT is None:
        app.include_router(ops.metrics_router)
    if settings.API_DOCS:
        app.include_router(pages.docs_router)
    app.state.telemetry = metrics  # `alchemist gateway` serves it on METRICS_PORT when set
    if settings.API_DOCS:
        app.mount(
            "/static/swagger",
            StaticFiles(directory=Path(str(files("fastapi_offline") / "static"))),
            "swagger",
        )
    app.mount("/static", StaticFiles(directory=WEB / "static"), "static")
    return app
