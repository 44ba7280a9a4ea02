"""The auth service's HTTP API: POST /login (Basic -> JWT), POST /validate (Bearer -> claims), /users."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from alchemist import __version__
from alchemist.auth.deps import bearer_claims, unauthorized
from alchemist.auth.login_limiter import FailedLoginLimiter
from alchemist.auth.passwords import PasswordVault
from alchemist.auth.routes_users import router as users_router
from alchemist.auth.users import find_user, normalise_email
from alchemist.config import Settings
from alchemist.credentials import CredentialsError, parse_basic
from alchemist.db.engine import build_engine, transaction
from alchemist.db.migrate import current_revision, head_revision, upgrade
from alchemist.db.outage import database_unavailable
from alchemist.tokens import TokenSigner

MAX_DESCRIBED_ERRORS = 3


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
    app.state.signer = signer
    app.state.vault = passwords
    app.include_router(users_router)
    app.add_exception_handler(DBAPIError, database_unavailable)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own 422 is a list that echoes the input back, passwords included.
        return JSONResponse({"detail": describe_errors(exc.errors())}, 422)

    def sessions(request: Request) -> sessionmaker[Session]:
        maker: sessionmaker[Session] = request.app.state.sessions
        return maker

    @app.post("/login", response_class=PlainTextResponse)
    def login(request: Request) -> PlainTextResponse:
        """Trade HTTP Basic credentials for a JWT (the response body)."""
        try:
            credentials = parse_basic(request.headers.get("authorization"))
        except CredentialsError as exc:
            raise unauthorized(str(exc), "Basic") from exc
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
            raise unauthorized("Invalid credentials", "Basic")
        limiter.reset(account)
        assert record is not None  # verify() is False without a record
        user_id, email, admin, _ = record
        return PlainTextResponse(signer.issue(user_id=user_id, username=email, admin=admin))

    @app.post("/validate")
    def validate(request: Request) -> dict[str, Any]:
        """The claims of a valid Bearer token; 401 without one, 403 when it is invalid."""
        return bearer_claims(request, signer)

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
