"""Admins manage users: list, add, remove, set a password (the gateway forwards the caller's token).

Sync handlers on purpose: FastAPI runs them in its thread pool, where argon2 and the database may block.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Response

from alchemist.auth.deps import AdminDep, SessionsDep, VaultDep
from alchemist.auth.schemas import ErrorOut, NewPassword, NewUser, UserList, UserOut
from alchemist.auth.users import (
    UnknownUserError,
    UserError,
    UserExistsError,
    add_user,
    canonical_email,
    list_users,
    remove_user,
    set_password,
)
from alchemist.db.engine import transaction


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ErrorOut} for status in statuses}


router = APIRouter(prefix="/users", tags=["users"], responses=_errors(401, 403, 422))


def _refused(exc: UserError) -> HTTPException:
    if isinstance(exc, UnknownUserError):
        return HTTPException(404, str(exc))
    if isinstance(exc, UserExistsError):
        return HTTPException(409, str(exc))
    return HTTPException(400, str(exc))


@router.get("")
def get_users(_admin: AdminDep, sessions: SessionsDep) -> UserList:
    """Every user, oldest first."""
    with transaction(sessions) as session:
        return UserList(users=[UserOut.of(user) for user in list_users(session)])


@router.post("", status_code=201, responses=_errors(400, 409))
def post_user(body: NewUser, _admin: AdminDep, sessions: SessionsDep, vault: VaultDep) -> UserOut:
    """Add a user; 400 for a bad email or password, 409 when the email is taken."""
    try:
        with transaction(sessions) as session:
            return UserOut.of(add_user(session, vault, body.email, body.password, admin=body.admin))
    except UserError as exc:
        raise _refused(exc) from exc


# `:path` because an email may hold a "/" (sent as %2F, which the server decodes before routing).
@router.delete("/{email:path}", status_code=204, response_class=Response, responses=_errors(400, 404))
def delete_user(email: str, admin: AdminDep, sessions: SessionsDep) -> None:
    """Remove a user; never yourself, never the last admin."""
    if canonical_email(email) == admin.username:
        raise HTTPException(400, "you cannot remove your own account")
    try:
        with transaction(sessions) as session:
            remove_user(session, email, keep_an_admin=True)
    except UserError as exc:
        raise _refused(exc) from exc


@router.put("/{email:path}/password", status_code=204, response_class=Response, responses=_errors(400, 404))
def put_password(
    email: str, body: NewPassword, _admin: AdminDep, sessions: SessionsDep, vault: VaultDep
) -> None:
    """Set a user's password (a forgotten one, say); the user's tokens stop working within seconds."""
    try:
        with transaction(sessions) as session:
            set_password(session, vault, email, body.password)
    except UserError as exc:
        raise _refused(exc) from exc
