"""Issue and verify the JWTs that auth signs and every service checks (HS256)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import jwt

ALGORITHM = "HS256"
REQUIRED_CLAIMS = ["exp", "iat", "sub", "username", "iss", "jti"]


class TokenError(Exception):
    """The token is invalid: expired, tampered, wrong key, wrong algorithm or malformed."""


@dataclass(frozen=True)
class TokenSigner:
    """Signs and verifies tokens with one secret and issuer."""

    secret: str
    issuer: str
    ttl: timedelta = timedelta(days=1)

    def issue(self, *, user_id: int, username: str, admin: bool, version: int = 0) -> str:
        """A signed token for this user, valid for `ttl` (1 day, as in the seeds).

        `ver` is the user's token version: bumping it in the database revokes the token.
        """
        now = datetime.now(timezone.utc)
        claims: dict[str, Any] = {
            "sub": str(user_id),
            "username": username,
            "admin": admin,
            "ver": version,
            "iat": now,
            "exp": now + self.ttl,
            "iss": self.issuer,
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(claims, self.secret, algorithm=ALGORITHM)

    def verify(self, token: str) -> dict[str, Any]:
        """The claims of a valid token; raises TokenError with the reason otherwise."""
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self.secret,
                algorithms=[ALGORITHM],
                issuer=self.issuer,
                options={"require": REQUIRED_CLAIMS},
            )
        except jwt.ExpiredSignatureError as exc:
            raise TokenError("Token has expired") from exc
        except jwt.InvalidAlgorithmError as exc:
            raise TokenError("Token uses an algorithm other than HS256") from exc
        except jwt.InvalidSignatureError as exc:
            raise TokenError("Token signature is invalid") from exc
        except jwt.PyJWTError as exc:
            raise TokenError(f"Token is invalid: {exc}") from exc
        except (ValueError, TypeError, UnicodeError) as exc:
            raise TokenError("Token is malformed") from exc
        if not isinstance(claims.get("admin"), bool):
            raise TokenError("Token is invalid: claim 'admin' must be a boolean")
        version = claims.get("ver", 0)  # absent in tokens issued before versions: version 0
        if not isinstance(version, int) or isinstance(version, bool) or version < 0:
            raise TokenError("Token is invalid: claim 'ver' must be a whole number")
        return claims
