"""Typed dependencies of the gateway's routes: its state, the caller, the backends."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import httpx
from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import APIKeyCookie, HTTPBearer

from alchemist.config import Settings
from alchemist.gateway.security import SESSION_COOKIE, Authenticator, Caller
from alchemist.links import DownloadLinks
from alchemist.outbox import OutboxRelay
from alchemist.telemetry import Telemetry
from alchemist.wiring import Backends

# Declared for the OpenAPI document (the Authorize button in /docs); Authenticator reads
# the header and cookie itself so that every failure gets our own status and words.
bearer_scheme = HTTPBearer(auto_error=False, description="The JWT from POST /login")
cookie_scheme = APIKeyCookie(name=SESSION_COOKIE, auto_error=False, description="The page's session")


@dataclass
class GatewayState:
    """What the gateway holds while it runs (built in the lifespan, kept on app.state)."""

    settings: Settings
    authenticator: Authenticator
    links: DownloadLinks
    backends: Backends
    auth: httpx.AsyncClient
    telemetry: Telemetry
    relay: OutboxRelay


def get_state(request: Request) -> GatewayState:
    """The running gateway's state."""
    state: GatewayState = request.app.state.gateway
    return state


StateDep = Annotated[GatewayState, Depends(get_state)]


def get_backends(state: StateDep) -> Backends:
    """Database, blob stores and broker."""
    return state.backends


def get_settings(state: StateDep) -> Settings:
    """This process's settings."""
    return state.settings


async def get_caller(
    request: Request,
    state: StateDep,
    _bearer: Annotated[object, Security(bearer_scheme)] = None,
    _cookie: Annotated[object, Security(cookie_scheme)] = None,
) -> Caller:
    """The signed-in user (Bearer token or session cookie + CSRF token) whose token is not revoked."""
    return await state.authenticator.authenticate(request)


def get_admin(caller: Annotated[Caller, Depends(get_caller)]) -> Caller:
    """The caller, who must be an admin."""
    if not caller.admin:
        raise HTTPException(403, "admins only")
    return caller


BackendsDep = Annotated[Backends, Depends(get_backends)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
CallerDep = Annotated[Caller, Depends(get_caller)]
AdminDep = Annotated[Caller, Depends(get_admin)]
