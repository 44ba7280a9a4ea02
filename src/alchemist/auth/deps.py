"""Typed dependencies of the auth app's routes: its state, the caller's token, admins."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import HTTPBearer
from sqlalchemy.orm import Session, sessionmaker

from alchemist.auth.passwords import PasswordVault
from alchemist.auth.users import find_user
from alchemist.credentials import CredentialsError, parse_bearer
from alchemist.db.engine import transaction
from alchemist.revocation import RevocationCheck
from alchemist.tokens import TokenError, TokenSigner

# Declared for the OpenAPI document only; bearer_claims reads the header itself so that
# every failure gets the same status and words as POST /validate.
bearer_scheme = HTTPBearer(auto_error=False, description="The JWT from POST /login")


@dataclass(frozen=True)
class Claims:
    """Who a valid token stands for."""

    username: str
    admin: bool


def unauthorized(detail: str, scheme: str) -> HTTPException:
    """A 401 that names the scheme to use."""
    return HTTPException(401, detail, headers={"WWW-Authenticate": f'{scheme} realm="alchemist"'})


def bearer_claims(
    request: Request, signer: TokenSigner, revocations: RevocationCheck | None = None
) -> dict[str, Any]:
    """The claims of the request's Bearer token; 401 without one, 403 when it is invalid or revoked.

    Blocking (a revocation cache miss reads the database): call it from a sync handler.
    """
    try:
        token = parse_bearer(request.headers.get("authorization"))
    except CredentialsError as exc:
        raise unauthorized(str(exc), "Bearer") from exc
    try:
        claims = signer.verify(token)
        if revocations is not None:
            revocations.check(claims)
    except TokenError as exc:
        raise HTTPException(403, f"Not authorized: {exc}") from exc
    return claims


def get_signer(request: Request) -> TokenSigner:
    """The app's token signer."""
    signer: TokenSigner = request.app.state.signer
    return signer


def get_revocations(request: Request) -> RevocationCheck:
    """The app's revocation check (built in the lifespan)."""
    revocations: RevocationCheck = request.app.state.revocations
    return revocations


def get_sessions(request: Request) -> sessionmaker[Session]:
    """The app's session factory (built in the lifespan)."""
    sessions: sessionmaker[Session] = request.app.state.sessions
    return sessions


def get_vault(request: Request) -> PasswordVault:
    """The app's password hasher."""
    vault: PasswordVault = request.app.state.vault
    return vault


SignerDep = Annotated[TokenSigner, Depends(get_signer)]
SessionsDep = Annotated[sessionmaker[Session], Depends(get_sessions)]
VaultDep = Annotated[PasswordVault, Depends(get_vault)]
RevocationsDep = Annotated[RevocationCheck, Depends(get_revocations)]


def require_claims(
    request: Request,
    signer: SignerDep,
    revocations: RevocationsDep,
    _bearer: Annotated[object, Security(bearer_scheme)] = None,
) -> Claims:
    """The caller of a request with a valid, unrevoked Bearer token."""
    claims = bearer_claims(request, signer, revocations)
    return Claims(username=str(claims["username"]), admin=claims["admin"])


ClaimsDep = Annotated[Claims, Depends(require_claims)]


def require_admin(claims: ClaimsDep, sessions: SessionsDep) -> Claims:
    """The caller, who must be an admin now: a removed admin's token stops working at once."""
    if not claims.admin:
        raise HTTPException(403, "admins only")
    with transaction(sessions) as session:
        user = find_user(session, claims.username)
        still_admin = user is not None and user.is_admin
    if not still_admin:
        raise HTTPException(403, "admins only")
    return claims


AdminDep = Annotated[Claims, Depends(require_admin)]
