"""The auth service's HTTP API: POST /login (Basic -> JWT), POST /validate (Bearer -> claims), /users."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import sessionmaker
from starlette.concurrency import run_in_threadpool

from alchemist import __version__
from alchemist.auth.deps import bearer_claims, unauthorized
from alchemist.auth.login import InvalidCredentialsError, Login
from alchemist.auth.login_limiter import LoginLimiter, LoginThrottledError
from alchemist.auth.passwords import HashingBusyError, HashingGate, PasswordVault
from alchemist.auth.routes_users import router as users_router
from alchemist.config import Settings
from alchemist.credentials import CredentialsError, parse_basic
from alchemist.db.engine import build_engine
from alchemist.db.migrate import current_revision, head_revision, upgrade
from alchemist.db.models import utcnow
from alchemist.db.outage import database_unavailable
from alchemist.headers import HardeningHeaders
from alchemist.proxies import TrustedProxyHeaders
from alchemist.revocation import RevocationCheck
from alchemist.tokens import TokenSigner

MAX_DESCRIBED_ERRORS = 3


def create_app(
    settings: Settings,
    engine: Engine | None = None,
    vault: PasswordVault | None = None,
    clock: Callable[[], datetime] = utcnow,
) -> FastAPI:
    """The auth app; the engine is built in the lifespan unless one is handed in.

    `clock` is the login limiter's: tests move it instead of waiting for windows to end.
    """
    signer = TokenSigner(
        secret=settings.jwt_secret(),
        issuer=settings.JWT_ISSUER,
        ttl=timedelta(seconds=settings.JWT_TTL_SECONDS),
    )
    passwords = vault or PasswordVault.from_settings(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own_engine = engine is None
        bound = engine if engine is not None else build_engine(settings.database_url)
        if settings.embedded or settings.ALCHEMIST_MIGRATE_ON_START:
            await run_in_threadpool(upgrade, bound)
        # Made now, not by the first unknown user (whose answer would take two hashes' time).
        await run_in_threadpool(lambda: passwords.decoy_hash)
        sessions = sessionmaker(bound, expire_on_commit=False)
        app.state.engine = bound
        app.state.sessions = sessions
        # Uncached here: auth owns the users and answers for them now; gateways cache its rule briefly.
        app.state.revocations = RevocationCheck(sessions, ttl_seconds=0)
        limiter = LoginLimiter(
            sessions,
            max_failures=settings.LOGIN_MAX_FAILURES,
            max_failures_per_address=settings.LOGIN_MAX_FAILURES_PER_ADDRESS,
            window_seconds=settings.LOGIN_FAILURE_WINDOW_SECONDS,
            clock=clock,
        )
        # Built here, on the serving loop (an asyncio semaphore belongs to one loop).
        gate = HashingGate(
            settings.LOGIN_CONCURRENCY, settings.LOGIN_QUEUE_SECONDS, settings.LOGIN_QUEUE_LIMIT
        )
        app.state.login = Login(sessions, limiter, gate, passwords, signer)
        try:
            yield
        finally:
            if own_engine:
                bound.dispose()

    # JSON only: no Swagger page (FastAPI's loads from a CDN); the document itself per API_DOCS.
    app = FastAPI(
        title="Audio Alchemist auth", version=__version__, lifespan=lifespan, docs_url=None,
        redoc_url=None, openapi_url="/openapi.json" if settings.API_DOCS else None,
    )  # fmt: skip
    app.add_middleware(HardeningHeaders)
    app.state.signer = signer
    app.state.vault = passwords
    app.include_router(users_router)
    app.add_exception_handler(DBAPIError, database_unavailable)
    # The client address the limiter counts: the gateway's X-Forwarded-For, when the gateway is trusted.
    app.add_middleware(TrustedProxyHeaders, networks=settings.trusted_proxies)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own 422 is a list that echoes the input back, passwords included.
        return JSONResponse({"detail": describe_errors(exc.errors())}, 422)

    @app.post("/login", response_class=PlainTextResponse)
    async def login(request: Request) -> PlainTextResponse:
        """Trade HTTP Basic credentials for a JWT (the response body); 429 and 503 carry Retry-After."""
        try:
            credentials = parse_basic(request.headers.get("authorization"))
        except CredentialsError as exc:
            raise unauthorized(str(exc), "Basic") from exc
        sign_in: Login = request.app.state.login
        address = request.client.host if request.client else None
        try:
            token = await sign_in(credentials.username, credentials.password, address)
        except LoginThrottledError as exc:
            raise HTTPException(
                429,
                str(exc),
                headers={"Retry-After": str(exc.retry_after)},
            ) from exc
        except HashingBusyError as exc:
            raise HTTPException(503, str(exc), headers={"Retry-After": str(exc.retry_after)}) from exc
        except InvalidCredentialsError as exc:
            raise unauthorized("Invalid credentials", "Basic") from exc
        return PlainTextResponse(token)

    @app.post("/validate")
    def validate(request: Request) -> dict[str, Any]:
        """The claims of a valid Bearer token; 401 without one, 403 when it is invalid or revoked."""
        return bearer_claims(request, signer, request.app.state.revocations)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        """The process is alive."""
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz(request: Request) -> JSONResponse:
        """The database answers and its schema is current."""
        bound: Engine = request.app.state.engine
        try:
            with bound.connect() as connection:
                connection.execute(text("SELECT 1"))
            current, head = current_revision(bound), head_revision(bound)
        except Exception as exc:  # any failure to reach the database means not ready
            return JSONResponse({"status": "unavailable", "database": str(exc)}, 503)
        if current != head:
            detail = f"schema at {current}, code needs {head}: run alchemist migrate"
            return JSONResponse({"status": "unavailable", "database": detail}, 503)
        return JSONResponse({"status": "ok"})

    return app


def describe_errors(errors: Sequence[Any]) -> str:
    """Validation errors as one sentence, e.g. "body.password: Field required" (never the input)."""
    parts = []
    for error in errors[:MAX_DESCRIBED_ERRORS]:
        location = [str(part) for part in error.get("loc", ())]
        if error.get("type") == "json_invalid":  # its location is ("body", character offset)
            reason = error.get("ctx", {}).get("error", "syntax error")
            parts.append(
                f"the body is not valid JSON: {reason} at character {location[-1] if location else 0}"
            )
        else:
            parts.append(f"{'.'.join(location)}: {error.get('msg', 'invalid')}")
    if len(errors) > MAX_DESCRIBED_ERRORS:
        parts.append(f"and {len(errors) - MAX_DESCRIBED_ERRORS} more")
    return "; ".join(parts) or "the request is not valid"
