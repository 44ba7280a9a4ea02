"""Who is calling: a Bearer JWT (curl, the CLI) or the page's session cookie, both checked locally.

The cookie holds the same JWT, `HttpOnly`; a request that changes state and is authenticated
by the cookie must also carry an X-CSRF-Token derived from that token's id, which a page of
another site cannot read. The signature is checked here, without asking auth; whether the
token was revoked since (user removed, password reset, signed out) comes from the shared
database through a cache of REVOCATION_CACHE_SECONDS (alchemist.revocation).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from fastapi import HTTPException, Request, Response

from alchemist.credentials import CredentialsError, parse_bearer
from alchemist.links import derive_key
from alchemist.revocation import RevocationCheck
from alchemist.tokens import TokenError, TokenSigner

SESSION_COOKIE = "alchemist_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
BEARER_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="alchemist"'}


@dataclass(frozen=True)
class Caller:
    """The authenticated user, and how they proved it."""

    username: str
    admin: bool
    token: str
    token_id: str
    expires_at: datetime
    by_cookie: bool = False


@dataclass(frozen=True)
class Authenticator:
    """Checks Bearer tokens and session cookies, and makes the CSRF token of a session."""

    signer: TokenSigner
    revocations: RevocationCheck | None = None

    def caller(self, request: Request) -> Caller:
        """401 without credentials, 403 for a bad token or a missing CSRF token, else the caller.

        Blocking (a revocation cache miss reads the database); async code calls authenticate().
        """
        caller, claims = self._identify(request)
        if self.revocations is not None:
            try:
                self.revocations.check(claims)
            except TokenError as exc:
                raise _refusal(caller.by_cookie, exc) from exc
        self._check_csrf(request, caller)
        return caller

    async def authenticate(self, request: Request) -> Caller:
        """caller() for the event loop: the database is only asked, in a thread, on a cache miss."""
        caller, claims = self._identify(request)
        if self.revocations is not None:
            try:
                await self.revocations.check_async(claims)
            except TokenError as exc:
                raise _refusal(caller.by_cookie, exc) from exc
        self._check_csrf(request, caller)
        return caller

    def revoke(self, caller: Caller) -> None:
        """Deny the caller's token everywhere from now on (blocking: writes the shared deny list)."""
        if self.revocations is not None:
            self.revocations.revoke(caller.token_id, caller.expires_at)

    def csrf_token(self, caller: Caller) -> str:
        """The session's CSRF token: bound to the token id, so it dies with the session."""
        key = derive_key(self.signer.secret, b"alchemist csrf v1")
        return hmac.new(key, caller.token_id.encode(), hashlib.sha256).hexdigest()

    def verify(self, token: str) -> Caller:
        """The caller a fresh token from auth stands for (raises TokenError)."""
        return self._caller(token, self.signer.verify(token), by_cookie=True)

    def _identify(self, request: Request) -> tuple[Caller, dict[str, Any]]:
        header = request.headers.get("authorization")
        if header is not None:
            try:
                token = parse_bearer(header)
            except CredentialsError as exc:
                raise HTTPException(401, str(exc), headers=BEARER_CHALLENGE) from exc
            by_cookie = False
        else:
            token = request.cookies.get(SESSION_COOKIE, "")
            if not token:
                raise HTTPException(
                    401,
                    "Missing credentials: send an Authorization header or sign in",
                    headers=BEARER_CHALLENGE,
                )
            by_cookie = True
        try:
            claims = self.signer.verify(token)
        except TokenError as exc:
            raise _refusal(by_cookie, exc) from exc
        return self._caller(token, claims, by_cookie=by_cookie), claims

    def _check_csrf(self, request: Request, caller: Caller) -> None:
        if caller.by_cookie and request.method not in SAFE_METHODS:
            sent = request.headers.get(CSRF_HEADER, "")
            if not hmac.compare_digest(sent.encode(), self.csrf_token(caller).encode()):
                raise HTTPException(403, f"missing or wrong {CSRF_HEADER} header for this session")

    def _caller(self, token: str, claims: dict[str, Any], *, by_cookie: bool) -> Caller:
        return Caller(
            username=str(claims["username"]),
            admin=bool(claims["admin"]),
            token=token,
            token_id=str(claims["jti"]),
            expires_at=datetime.fromtimestamp(int(claims["exp"]), timezone.utc),
            by_cookie=by_cookie,
        )


def _refusal(by_cookie: bool, exc: TokenError) -> HTTPException:
    """An ended session is a 401 (sign in again); a bad Bearer token is a 403, as from auth."""
    if by_cookie:
        return HTTPException(401, f"Your session has ended ({exc}); sign in again")
    return HTTPException(403, f"Not authorized: {exc}")


def set_session_cookie(response: Response, caller: Caller, *, secure: bool) -> None:
    """Hold the session in an HttpOnly cookie that lives as long as its token."""
    seconds = max(0, int((caller.expires_at - datetime.now(timezone.utc)).total_seconds()))
    response.set_cookie(
        SESSION_COOKIE, caller.token, max_age=seconds, path="/", secure=secure, httponly=True, samesite="lax"
    )


def clear_session_cookie(response: Response, *, secure: bool) -> None:
    """Forget the session in this browser."""
    response.delete_cookie(SESSION_COOKIE, path="/", secure=secure, httponly=True, samesite="lax")
