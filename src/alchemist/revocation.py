"""Is a validly signed token still good? Checked by the gateway and auth alike, against the shared database.

A token is revoked when its user is gone (removed), when its `ver` claim is not the user's
current `token_version` (a password reset bumps it; tokens without `ver` count as version 0),
or when its `jti` is on the deny list (signed out). The answer for a token is cached for
REVOCATION_CACHE_SECONDS, so a busy token costs one indexed lookup per that many seconds and
a revocation takes effect everywhere within them.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from alchemist.db.engine import transaction
from alchemist.db.models import RevokedToken, User, utcnow
from alchemist.db.upsert import insert_if_absent
from alchemist.tokens import TokenError

MAX_CACHED_TOKENS = 50_000


class TokenRevokedError(TokenError):
    """The token is signed correctly but no longer stands for anyone: the message says why."""


def token_version(claims: Mapping[str, Any]) -> int:
    """The token version a token carries (0 for tokens issued before versions existed)."""
    version = claims.get("ver", 0)
    return version if isinstance(version, int) and not isinstance(version, bool) else -1


def revoke_token(session: Session, jti: str, expires_at: datetime, now: datetime | None = None) -> None:
    """Deny this token id until it expires; expired entries are pruned on the way."""
    moment = now or utcnow()
    session.execute(delete(RevokedToken).where(RevokedToken.expires_at < moment))
    if expires_at > moment:
        insert_if_absent(session, RevokedToken.__table__, {"jti": jti, "expires_at": expires_at})  # type: ignore[arg-type]


@dataclass(frozen=True)
class _State:
    """What the database said about a token, and when we asked."""

    user_version: int | None  # None: the user is gone
    user_email: str | None
    denied: bool
    fetched_at: float


class RevocationCheck:
    """Checks verified claims against users' token versions and the deny list, through a short cache."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        ttl_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sessions = sessions
        self.ttl_seconds = ttl_seconds
        self._clock = clock
        self._cache: dict[str, _State] = {}
        self._lock = threading.Lock()

    def check(self, claims: Mapping[str, Any]) -> None:
        """Raises TokenRevokedError when the token was revoked (may query the database: blocking)."""
        state = self._cached(claims) or self._load(claims)
        _judge(state, claims)

    async def check_async(self, claims: Mapping[str, Any]) -> None:
        """check() for the event loop: a cache hit answers at once, a miss queries in a thread."""
        state = self._cached(claims)
        if state is None:
            state = await asyncio.to_thread(self._load, claims)
        _judge(state, claims)

    def revoke(self, jti: str, expires_at: datetime) -> None:
        """Put this token id on the deny list (blocking); this process refuses it from now on."""
        with transaction(self._sessions) as session:
            revoke_token(session, jti, expires_at)
        with self._lock:
            self._cache[jti] = _State(None, None, True, self._clock())

    def _cached(self, claims: Mapping[str, Any]) -> _State | None:
        with self._lock:
            state = self._cache.get(str(claims.get("jti")))
        if state is not None and (state.denied or self._clock() - state.fetched_at < self.ttl_seconds):
            return state  # a denied token stays denied: no need to ask again
        return None

    def _load(self, claims: Mapping[str, Any]) -> _State:
        jti, subject = str(claims.get("jti")), str(claims.get("sub"))
        user_id = int(subject) if subject.isdecimal() and len(subject) < 19 else None
        with transaction(self._sessions) as session:
            user = None
            if user_id is not None:
                user = session.execute(
                    select(User.token_version, User.email).where(User.id == user_id)
                ).first()
            denied = session.scalar(select(RevokedToken.jti).where(RevokedToken.jti == jti)) is not None
        state = _State(
            user.token_version if user else None, user.email if user else None, denied, self._clock()
        )
        if self.ttl_seconds > 0:
            with self._lock:
                if len(self._cache) >= MAX_CACHED_TOKENS:
                    self._evict()
                self._cache[jti] = state
        return state

    def _evict(self) -> None:
        now = self._clock()
        stale = [key for key, state in self._cache.items() if now - state.fetched_at >= self.ttl_seconds]
        for key in stale:
            del self._cache[key]
        if len(self._cache) >= MAX_CACHED_TOKENS:  # all fresh: a flood of tokens; start over
            self._cache.clear()


def _judge(state: _State, claims: Mapping[str, Any]) -> None:
    if state.denied:
        raise TokenRevokedError("Token has been revoked (signed out)")
    if state.user_version is None or state.user_email != claims.get("username"):
        raise TokenRevokedError("Token has been revoked (the account no longer exists)")
    if token_version(claims) != state.user_version:
        raise TokenRevokedError("Token has been revoked (the password was changed)")
