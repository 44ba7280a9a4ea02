"""POST /login's work: count the attempt, wait for a hashing slot, check the password, issue a token."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from alchemist.auth.login_limiter import Attempt, LoginLimiter
from alchemist.auth.passwords import HashingGate, PasswordVault
from alchemist.auth.users import canonical_email, find_user, renew_hash
from alchemist.db.engine import transaction
from alchemist.tokens import TokenSigner

logger = logging.getLogger(__name__)


class InvalidCredentialsError(Exception):
    """Wrong password or unknown user (the caller is not told which)."""


@dataclass(frozen=True)
class _Account:
    id: int
    email: str
    admin: bool
    password_hash: str
    token_version: int


@dataclass(frozen=True)
class Login:
    """Trades an email and password for a token; every step that blocks runs off the event loop.

    Raises LoginThrottledError (429), HashingBusyError (503) or InvalidCredentialsError (401).
    """

    sessions: sessionmaker[Session]
    limiter: LoginLimiter
    gate: HashingGate
    vault: PasswordVault
    signer: TokenSigner

    async def __call__(self, username: str, password: str, address: str | None) -> str:
        """A signed token for this account, if the password is right."""
        account = canonical_email(username)
        # Counted before the password is checked: parallel guesses cannot outrun the limit.
        attempt = await asyncio.to_thread(self.limiter.begin, account, address)
        checked = False
        try:
            found = await asyncio.to_thread(self._find, account)
            async with self.gate.slot():  # held for argon2 alone
                # verify() runs the full argon2 cost even for an unknown user (no timing oracle).
                stored = found.password_hash if found else None
                right = await self.vault.verify_async(stored, password)
                checked = True
                renewed = None
                if right and found is not None and self.vault.needs_rehash(found.password_hash):
                    renewed = await self.vault.hash_async(password)
        except BaseException:
            if not checked:  # busy, database down, cancelled: no guess was made
                await self._abandon(attempt)
            raise
        if not right or found is None:
            raise InvalidCredentialsError("Invalid credentials")  # the attempt stays counted
        await asyncio.to_thread(self.limiter.succeeded, attempt)
        if renewed is not None:  # ARGON2_* changed since this hash was made
            await asyncio.to_thread(self._renew, found, renewed)
        return self.signer.issue(
            user_id=found.id, username=found.email, admin=found.admin, version=found.token_version
        )

    def _find(self, account: str) -> _Account | None:
        with transaction(self.sessions) as session:
            user = find_user(session, account)
            if user is None:
                return None
            return _Account(user.id, user.email, user.is_admin, user.password_hash, user.token_version)

    def _renew(self, account: _Account, new_hash: str) -> None:
        with transaction(self.sessions) as session:
            renew_hash(session, account.id, account.password_hash, new_hash)

    async def _abandon(self, attempt: Attempt) -> None:
        try:
            await asyncio.to_thread(self.limiter.abandoned, attempt)
        except Exception as exc:  # the database being down is what the caller hears about
            logger.warning("could not give back a login attempt: %s", exc)
