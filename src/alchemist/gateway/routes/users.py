"""Admins manage users; the auth service owns them, so these calls are forwarded with the caller's token."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx
from fastapi import APIRouter, HTTPException, Response

from alchemist.gateway.deps import AdminDep, StateDep
from alchemist.gateway.schemas import NewPassword, NewUser, User, UserList, errors

router = APIRouter(prefix="/api/v1/users", tags=["users"])
ADMIN_ERRORS = errors(401, 403, 422, 503)


@router.get("", responses=ADMIN_ERRORS)
async def list_users(caller: AdminDep, state: StateDep) -> UserList:
    """Every user (admins only)."""
    answer = await _forward(state, caller.token, "GET", "/users")
    return UserList.model_validate(answer.json())


@router.post("", status_code=201, responses={**ADMIN_ERRORS, **errors(400, 409)})
async def add_user(body: NewUser, caller: AdminDep, state: StateDep) -> User:
    """Add a user (admins only)."""
    answer = await _forward(state, caller.token, "POST", "/users", body.model_dump())
    return User.model_validate(answer.json())


@router.delete(
    "/{email}", status_code=204, response_class=Response, responses={**ADMIN_ERRORS, **errors(400, 404)}
)
async def remove_user(email: str, caller: AdminDep, state: StateDep) -> Response:
    """Remove a user (admins only; not yourself, not the last admin)."""
    await _forward(state, caller.token, "DELETE", f"/users/{quote(email, safe='')}")
    return Response(status_code=204)


@router.put(
    "/{email}/password",
    status_code=204,
    response_class=Response,
    responses={**ADMIN_ERRORS, **errors(400, 404)},
)
async def reset_password(email: str, body: NewPassword, caller: AdminDep, state: StateDep) -> Response:
    """Set a user's password (admins only)."""
    await _forward(state, caller.token, "PUT", f"/users/{quote(email, safe='')}/password", body.model_dump())
    return Response(status_code=204)


async def _forward(state: StateDep, token: str, method: str, path: str, body: Any = None) -> httpx.Response:
    """Call auth; its 4xx come back as they are, anything else is a 503."""
    try:
        answer = await state.auth.request(
            method, path, json=body, headers={"Authorization": f"Bearer {token}"}
        )
    except httpx.HTTPError as exc:
        raise HTTPException(
            503, f"the auth service is unreachable: {type(exc).__name__}", headers={"Retry-After": "5"}
        ) from exc
    if 400 <= answer.status_code < 500:
        raise HTTPException(answer.status_code, _detail(answer), headers=_passed(answer))
    if answer.status_code >= 300:
        raise HTTPException(503, "the auth service failed; try again", headers={"Retry-After": "5"})
    return answer


def _detail(answer: httpx.Response) -> str:
    try:
        return str(answer.json()["detail"])
    except (ValueError, KeyError, TypeError):
        return answer.text[:200] or answer.reason_phrase


def _passed(answer: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in answer.headers.items() if k in ("retry-after", "www-authenticate")}
