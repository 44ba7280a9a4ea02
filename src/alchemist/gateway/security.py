"""Who is calling: the Bearer JWT, verified locally (no round trip to auth)."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import HTTPException, Request

from alchemist.credentials import CredentialsError, parse_bearer
from alchemist.tokens import TokenError, TokenSigner


@dataclass(frozen=True)
class Caller:
    """The authenticated user."""

    username: str
    admin: bool


def caller_from(request: Request, signer: TokenSigner) -> Caller:
    """401 without a Bearer credential, 403 for an invalid token, else the caller."""
    try:
        token = parse_bearer(request.headers.get("authorization"))
    except CredentialsError as exc:
        raise HTTPException(401, str(exc), headers={"WWW-Authenticate": 'Bearer realm="alchemist"'}) from exc
    try:
        claims = signer.verify(token)
    except TokenError as exc:
        raise HTTPException(403, f"Not authorized: {exc}") from exc
    return Caller(username=str(claims["username"]), admin=bool(claims["admin"]))
