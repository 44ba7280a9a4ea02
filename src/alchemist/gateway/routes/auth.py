"""Signing in: the seeds' POST /login (forwarded to auth) and the page's cookie session.

Auth counts failed logins per client address, so every call to it says whose address this is
(X-Forwarded-For: the client as the TrustedProxyHeaders middleware resolved it); auth believes
it only from peers in its own TRUSTED_PROXIES.
"""

from __future__ import annotations

import base64

import httpx
from fastapi import APIRouter, HTTPException, Request, Response
from starlette.concurrency import run_in_threadpool

from alchemist.gateway.deps import CallerDep, StateDep
from alchemist.gateway.schemas import SessionOut, SignIn, errors
from alchemist.gateway.security import SESSION_COOKIE, Caller, clear_session_cookie, set_session_cookie
from alchemist.proxies import parse_address
from alchemist.tokens import TokenError

router = APIRouter(tags=["auth"])
FORWARDED_HEADERS = ("www-authenticate", "retry-after")


@router.post(
    "/login",
    # Not PlainTextResponse: that would document the JSON errors below as text/plain too.
    response_class=Response,
    responses={
        200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "The JWT"},
        **errors(401, 429, 503),
    },
)
async def login(request: Request, state: StateDep) -> Response:
    """Trade HTTP Basic credentials for a JWT (the body), as in the seeds; forwarded to auth."""
    # The raw bytes go on untouched: any byte a client sends is auth's to judge, not a 500 here.
    raw = dict(request.scope["headers"]).get(b"authorization")
    upstream = await _auth_login(state, raw, request)
    if upstream.status_code >= 500 and not _busy(upstream):
        # auth's own outage (its database) is ours to report as one
        raise HTTPException(503, "signing in is unavailable; try again shortly", headers={"Retry-After": "5"})
    passed = {k: v for k, v in upstream.headers.items() if k in FORWARDED_HEADERS}
    return Response(
        upstream.content,
        upstream.status_code,
        headers=passed,
        media_type=upstream.headers.get("content-type"),
    )


@router.post("/api/v1/session", responses=errors(400, 401, 422, 429, 503))
async def sign_in(form: SignIn, request: Request, response: Response, state: StateDep) -> SessionOut:
    """Sign in with email and password; the session is an HttpOnly cookie."""
    pair = f"{form.email}:{form.password}".encode()
    upstream = await _auth_login(state, b"Basic " + base64.b64encode(pair), request)
    if upstream.status_code == 429:
        retry = upstream.headers.get("retry-after", "60")
        raise HTTPException(429, _detail(upstream), headers={"Retry-After": retry})
    if _busy(upstream):  # every password-hashing slot of auth is taken: a moment's wait
        detail = _detail(upstream, "too many sign-ins at once; try again shortly")
        raise HTTPException(503, detail, headers={"Retry-After": upstream.headers["retry-after"]})
    if upstream.status_code in (400, 401):
        raise HTTPException(401, "Invalid email or password")
    if upstream.status_code != 200:
        raise HTTPException(503, "the auth service failed; try again", headers={"Retry-After": "5"})
    try:
        caller = state.authenticator.verify(upstream.text.strip())
    except TokenError as exc:
        raise HTTPException(
            503, "the auth service signed with another key", headers={"Retry-After": "5"}
        ) from exc
    set_session_cookie(response, caller, secure=_secure(request, state))
    return _session(state, caller)


@router.get("/api/v1/session", responses=errors(401, 403))
async def read_session(caller: CallerDep, state: StateDep) -> SessionOut:
    """Who is signed in (by cookie or Bearer), with the CSRF token for the page."""
    return _session(state, caller)


@router.delete("/api/v1/session", status_code=204, response_class=Response, responses=errors(403, 503))
async def sign_out(request: Request, state: StateDep) -> Response:
    """Sign out of this browser: the session's token stops working everywhere (needs its X-CSRF-Token).

    A Bearer token is not a session: it ends when it expires, when its user's password is reset
    or when the user is removed.
    """
    if request.cookies.get(SESSION_COOKIE) and "authorization" not in request.headers:
        try:
            caller = await state.authenticator.authenticate(request)  # a live session shows its CSRF token
        except HTTPException as exc:
            if exc.status_code != 401:  # an expired or revoked session simply ends
                raise
        else:
            # On the shared deny list: a copy of the cookie is refused by every gateway within seconds.
            await run_in_threadpool(state.authenticator.revoke, caller)
    response = Response(status_code=204)
    clear_session_cookie(response, secure=_secure(request, state))
    return response


async def _auth_login(state: StateDep, authorization: bytes | None, request: Request) -> httpx.Response:
    headers = {b"Authorization": authorization} if authorization is not None else {}
    client = parse_address(request.client.host if request.client else None)
    if client is not None:  # only ever one address, the one our middleware stands behind
        headers[b"X-Forwarded-For"] = str(client).encode()
    try:
        return await state.auth.post("/login", headers=headers)
    except httpx.HTTPError as exc:
        raise HTTPException(
            503, f"the auth service is unreachable: {type(exc).__name__}", headers={"Retry-After": "5"}
        ) from exc


def _session(state: StateDep, caller: Caller) -> SessionOut:
    return SessionOut(
        username=caller.username,
        admin=caller.admin,
        csrf_token=state.authenticator.csrf_token(caller),
        expires_at=caller.expires_at,
    )


def _secure(request: Request, state: StateDep) -> bool:
    """Secure cookies behind https (the request's scheme, or the public URL's behind a proxy)."""
    return request.url.scheme == "https" or state.settings.PUBLIC_URL.startswith("https://")


def _busy(response: httpx.Response) -> bool:
    """auth's 503 for a full hashing queue (it says when to retry), as opposed to an outage."""
    return response.status_code == 503 and response.headers.get("retry-after", "").isdigit()


def _detail(response: httpx.Response, default: str = "Too many failed logins; try again later") -> str:
    try:
        return str(response.json()["detail"])
    except (ValueError, KeyError, TypeError):
        return default
