"""The auth service's HTTP API: POST /login (Basic -> JWT) and POST /validate (Bearer -> claims)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from alchemist import __version__
from alchemist.auth.login_limiter import FailedLoginLimiter
from alchemist.auth.passwords import PasswordVault
from alchemist.auth.users import find_user, normalise_email
from alchemist.config import Settings
from alchemist.credentials import CredentialsError, parse_basic, parse_bearer
from alchemist.db.engine import build_engine, transaction
from alchemist.db.migrate import current_revision, head_revision, upgrade
from alchemist.tokens import TokenError, TokenSigner


def create_app(
    settings: Settings, engine: Engine | None = None, vault: PasswordVault | None = None
) -> FastAPI:
    """The auth app; the engine is built in the lifespan unless one is handed in."""
    signer = TokenSigner(
        secret=settings.jwt_secret(),
        issuer=settings.JWT_ISSUER,
        ttl=timedelta(seconds=settings.JWT_TTL_SECONDS),
    )
    limiter = FailedLoginLimiter(settings.LOGIN_MAX_FAILURES, settings.LOGIN_FAILURE_WINDOW_SECONDS)
    passwords = vault or PasswordVault()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own_engine = engine is None
        bound = engine if engine is not None else build_engine(settings.database_url)
        if settings.embedded or settings.ALCHEMIST_MIGRATE_ON_START:
            await run_in_threadpool(upgrade, bound)
        app.state.engine = bound
        app.state.sessions = sessionmaker(bound, expire_on_commit=False)
        try:
            yield
        finally:
            if own_engine:
                bound.dispose()

    app = FastAPI(title="Audio Alchemist auth", version=__version__, lifespan=lifespan)

    def sessions(request: Request) -> sessionmaker[Session]:
        maker: sessionmaker[Session] = request.app.state.sessions
        return maker

    @app.post("/login", response_class=PlainTextResponse)
    def login(request: Request) -> PlainTextResponse:
        """Trade HTTP Basic credentials for a JWT (the response body)."""
        try:
            credentials = parse_basic(request.headers.get("authorization"))
        except CredentialsError as exc:
            raise _unauthorized(str(exc), "Basic") from exc
        account = normalise_email(credentials.username)
        wait = limiter.retry_after(account)
        if wait is not None:
            raise HTTPException(
                429,
                f"Too many failed logins for this account; try again in {wait} s",
                headers={"Retry-After": str(wait)},
            )
        with transaction(sessions(request)) as session:
            user = find_user(session, account)
            record = (user.id, user.email, user.is_admin, user.password_hash) if user else None
        # verify() runs the full argon2 cost even for an unknown user (no timing oracle).
        if not passwords.verify(record[3] if record else None, credentials.password):
            limiter.record_failure(account)
            raise _unauthorized("Invalid credentials", "Basic")
        limiter.reset(account)
        assert record is not None  # verify() is False without a record
        user_id, email, admin, _ = record
        return PlainTextResponse(signer.issue(user_id=user_id, username=email, admin=admin))

    @app.post("/validate")
    def validate(request: Request) -> dict[str, Any]:
        """The claims of a valid Bearer token; 401 without one, 403 when it is invalid."""
        try:
            token = parse_bearer(request.headers.get("authorization"))
        except CredentialsError as exc:
            raise _unauthorized(str(exc), "Bearer") from exc
        try:
            return signer.verify(token)
        except TokenError as exc:
            raise HTTPException(403, f"Not authorized: {exc}") from exc

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


def _unauthorized(detail: str, scheme: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": f'{scheme} realm="alchemist"'})
