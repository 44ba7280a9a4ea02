"""Argon2id password hashing with a constant-cost path for unknown users."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError


class PasswordVault:
    """Hashes and checks passwords; rejecting an unknown user costs one full verify too."""

    def __init__(self, hasher: PasswordHasher | None = None) -> None:
        self._hasher = hasher or PasswordHasher()
        # Same parameters as real hashes: an unknown user costs as much as a wrong password.
        self._decoy = self._hasher.hash("decoy password for unknown users")

    def hash(self, password: str) -> str:
        """An argon2id hash string (salted, with its parameters)."""
        return self._hasher.hash(password)

    def verify(self, password_hash: str | None, password: str) -> bool:
        """True when the password matches; None as the hash checks against the decoy."""
        try:
            self._hasher.verify(password_hash or self._decoy, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
        return password_hash is not None

    @property
    def decoy_hash(self) -> str:
        """The hash used for unknown users (exposed so tests can check its parameters)."""
        return self._decoy
